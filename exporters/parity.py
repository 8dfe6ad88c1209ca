"""Parity of exported ONNX variants against the PyTorch model on labelled validation texts."""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from streamsense.models.data import Example
from streamsense.models.metrics import classification_metrics
from streamsense.models.tasks import Task


@dataclass(frozen=True)
class Tolerance:
    max_abs: float  # largest |onnx - torch| over every logit of every text
    min_agreement: float  # per task: least share of its texts whose predicted label matches torch


# Measured on frozen all-MiniLM-L6-v2 with fitted heads, 200 validation texts per task (max abs / min agreement):
# fp32 optimized 4e-6 / 1.0, fp16 3e-3 / 0.995, int8 0.68 / 0.97 (per-tensor int8: 1.1 / 0.86).
# Trained v2 / v3, 500 texts per task, int8 with activations per token: 0.63 / 0.974 and 1.1 / 0.972.
# fp32: fusions only reorder float arithmetic; 1e-3 still fails a wrong fusion or mask handling.
# fp16: 15x headroom for larger logits of longer-trained heads; labels flip only at near-ties.
# int8: label agreement is the guard (0.95 is 2 standard errors under 0.97 on 200 texts and catches
#   per-tensor damage); the abs bound only catches garbage, as per-text maxima are a noisy tail.
TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-3, min_agreement=0.99),
    "fp16": Tolerance(max_abs=5e-2, min_agreement=0.98),
    "int8": Tolerance(max_abs=2.0, min_agreement=0.95),
}


class ParityError(RuntimeError):
    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def providers(device: str) -> list[str]:
    """onnxruntime providers for a variant's device; CUDA variants fall back to CPU where CUDA is absent."""
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_parity(
    model: torch.nn.Module,
    tokenizer,
    tasks: list[Task],
    samples: dict[str, list[Example]],
    variants: dict[str, tuple[Path, str]],
    max_length: int,
    tolerances: dict[str, Tolerance] = TOLERANCES,
    optional: tuple[str, ...] = (),
    batch_size: int = 32,
) -> dict:
    """Compare each variant (name -> (onnx file, device)) with `model` and return the report.

    Every text goes through every head; a task's agreement and metric use its own texts.
    Variants in `optional` that onnxruntime cannot run here are reported as skipped, with the reason.
    Raises ParityError, carrying the report, when a variant is beyond its tolerance or cannot run.
    """
    sessions, skipped = {}, {}
    for name, (path, device) in variants.items():
        try:
            sessions[name] = ort.InferenceSession(str(path), providers=providers(device))
        except Exception as error:  # noqa: BLE001 - onnxruntime raises untyped errors
            skipped[name] = f"onnxruntime cannot load it: {error}"
    texts = [e.text for t in tasks for e in samples[t.name]]
    logits = _logits(model, tokenizer, sessions, skipped, texts, max_length, batch_size)
    owner = np.repeat(np.arange(len(tasks)), [len(samples[t.name]) for t in tasks])

    def compare(name: str) -> tuple[dict, dict]:
        """Per task: share of its texts whose label matches torch, and the headline metric on them."""
        agreement, metrics = {}, {}
        for k, task in enumerate(tasks):
            predicted = logits[name][k][owner == k].argmax(1)
            agreement[task.name] = round(float(np.mean(predicted == logits["torch"][k][owner == k].argmax(1))), 4)
            labels = [e.label for e in samples[task.name]]
            metrics[task.name] = classification_metrics(labels, predicted, len(task.labels))[task.metric]
        return agreement, metrics

    results, failures = {}, []
    for name in variants:
        if name in skipped:
            results[name] = {"status": "skipped", "reason": skipped[name]}
            if name not in optional:
                failures.append(f"{name}: {skipped[name]}")
            continue
        diff = max(float(np.abs(ours - theirs).max()) for ours, theirs in zip(logits[name], logits["torch"]))
        agreement, metrics = compare(name)
        tolerance = tolerances[name]
        problems = [f"max abs logit diff {diff:.3g} > {tolerance.max_abs}"] if diff > tolerance.max_abs else []
        problems += [
            f"{task} label agreement {value} < {tolerance.min_agreement}"
            for task, value in agreement.items()
            if value < tolerance.min_agreement
        ]
        failures += [f"{name}: {problem}" for problem in problems]
        results[name] = {
            "status": "failed" if problems else "passed",
            "provider": sessions[name].get_providers()[0],
            "max_abs_diff": diff,
            "agreement": agreement,
            "metrics": metrics,
        }
    report = {
        "texts": len(texts),
        "max_length": max_length,
        "tolerances": {name: asdict(tolerances[name]) for name in variants},
        "torch_metrics": compare("torch")[1],
        "variants": results,
    }
    if failures:
        raise ParityError("ONNX parity check failed: " + "; ".join(failures), report)
    return report


def _logits(model, tokenizer, sessions: dict, skipped: dict, texts: list[str], max_length: int, batch_size: int):
    """Logits per head of torch and each session on the same batches, in text order.

    A session that fails to run moves from `sessions` to `skipped`.
    """
    logits = {name: [] for name in ["torch", *sessions]}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="parity", unit="batch"):
        batch = [texts[i] for i in order[start : start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        with torch.no_grad():
            logits["torch"].append([o.numpy() for o in model(*map(torch.from_numpy, feed.values()))])
        for name, session in list(sessions.items()):
            try:
                logits[name].append(session.run(None, feed))
            except Exception as error:  # noqa: BLE001
                skipped[name] = f"onnxruntime cannot run it: {error}"
                del sessions[name]
    inverse = np.argsort(order)
    return {
        name: [np.concatenate(heads)[inverse] for heads in zip(*batches)]
        for name, batches in logits.items()
        if name not in skipped
    }
