"""ONNX runtime for an exported model directory: tokenize once, pad to the longest, return probabilities."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from streamsense.models.decision import offsets, probabilities
from streamsense.models.registry import calibration, text_options, verify
from streamsense.models.tasks import Task, canonical_label
from streamsense.models.text import normalize

CHARS_PER_TOKEN_CAP = 16  # texts are cut to max_length * this many characters before tokenizing


@dataclass(frozen=True)
class Encoded:
    """Token ids per text (unpadded) and whether the text was cut to the model's maximum length."""

    ids: list[list[int]]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def tokens_key(runtime) -> tuple | None:
    """What decides a runtime's token ids: its tokenizer file's sha256, maximum length and emoji handling (None without
    a tokenizer file in its card). Two runtimes with the same key turn any text into the same ids (an adapted model
    and its base), so one's tokens may serve the other (a shadowed challenger)."""
    entry = (getattr(runtime, "card", None) or {}).get("files", {}).get("tokenizer.json")
    if entry is None or entry.get("sha256") is None:
        return None
    return entry["sha256"], runtime.max_length, runtime.emoji


def pad(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest member: (input_ids, attention_mask), both int64 [batch, longest]."""
    longest = max(len(x) for x in ids)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def length_groups(lengths: Sequence[int], group_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into groups of `group_size`: similar lengths pad together."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + group_size] for i in range(0, len(order), group_size)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def providers_for(device: str, available: Sequence[str], tensorrt: bool = False) -> list[str]:
    """Execution providers in preference order; TensorRT only when asked for and present."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    chosen = ["TensorrtExecutionProvider"] if tensorrt and "TensorrtExecutionProvider" in available else []
    return chosen + ["CUDAExecutionProvider", "CPUExecutionProvider"]


def choose_device(requested: str, available: Sequence[str]) -> str:
    if requested == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError("device=cuda but onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    if requested == "auto":
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    return requested


class ModelRuntime:
    """One ONNX session over a verified model directory; `device` picks the fp16 (cuda) or int8 (cpu) variant.

    `null_model=True` (benchmarks only): the model is loaded and verified as usual (card, labels, tokenizer, session),
    but `infer` never runs the session and returns what zero logits give: uniform probabilities per head. Its
    `variant` is "null" and its `label` ends in "+null", so every row and message it yields says so."""

    NULL_VARIANT = "null"

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto", threads: int = 0, group_size: int = 64,
                 variant: str | None = None, tensorrt: bool = False, null_model: bool = False,
                 spinning: bool = True):
        self.path = Path(model_dir)
        self.card = verify(self.path)
        self.name = self.card.get("name") or self.path.name
        self.version = str(self.card.get("version") or "dev")
        self.tasks = [Task(t["name"], tuple(map(canonical_label, t["labels"])), "", t["metric"],
                           t.get("positive") and canonical_label(t["positive"])) for t in self.card["tasks"]]
        self.emoji = text_options(self.card)["emoji"]
        # Temperature scaling fitted on validation (`streamsense models calibrate`): probability = softmax(logits / T)
        self.temperature = calibration(self.card)
        # The decision policy (models/decision.py): the training mix's class prior swapped for the stated one,
        # probability = softmax(logits / T + offset); heads without a policy in the card are not moved
        self.offsets = offsets(self.card)
        self.max_length = int(self.card["max_length"])
        self.group_size = group_size
        available = ort.get_available_providers()
        self.device = choose_device(device, available)
        if self.device == "cuda":
            ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels (e.g. torch's), if the system has none
        variants = self.card["variants"]
        if variant is not None and variant not in variants:
            raise ValueError(f"model {self.path} has no variant {variant!r}; it has {', '.join(variants)}")
        loaded = variant or next(name for name, v in variants.items() if v["device"] == self.device)
        self.variant_file = variants[loaded]["file"]
        self._null_model = bool(null_model)
        self.variant = self.NULL_VARIANT if self._null_model else loaded
        # a null model's row for each task: softmax of zero logits (every row of a batch is this one)
        self._null_rows = {t.name: softmax(np.zeros((1, len(t.labels)), dtype=np.float32)) for t in self.tasks}
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:
            # onnxruntime's intra-op threads spin for work after each run: with two sessions (models/routing.py) the
            # idle session's threads take the cores from the busy one's, and the worker's own threads lose them too
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path / self.variant_file), options,
                                            providers=providers_for(self.device, available, tensorrt))
        self.outputs = list(self.card["outputs"])
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    @property
    def null_model(self) -> bool:
        """True when inference is replaced by zero logits (benchmarks): no prediction of this runtime means anything."""
        return self._null_model

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}" + ("+null" if self._null_model else "")

    def tokenize(self, texts: Sequence[str]) -> Encoded:
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        emoji = self.emoji
        cleaned = [normalize(t[:cap], emoji) for t in texts]
        # encode_batch_fast: the same ids and truncation, without character offsets (~20 % less CPU here)
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(cleaned)
        return Encoded(
            ids=[e.ids for e in encodings],
            truncated=[len(t) > cap or bool(e.overflowing) for t, e in zip(texts, encodings)],
        )

    def infer(self, encoded: Encoded) -> dict[str, np.ndarray]:
        """Probabilities per task, [batch, labels], float32, in input order; sub-batches group similar lengths.
        A null model returns softmax(0): 1 / labels everywhere, without running the session."""
        n = len(encoded)
        if self._null_model:
            return {name: np.repeat(row, n, axis=0) for name, row in self._null_rows.items()}
        probs = {t.name: np.zeros((n, len(t.labels)), dtype=np.float32) for t in self.tasks}
        for group in length_groups([len(x) for x in encoded.ids], self.group_size):
            input_ids, mask = pad([encoded.ids[i] for i in group])
            temperature, shifts = self.temperature, self.offsets
            for task, out in zip(self.tasks, self._run(input_ids, mask)):
                probs[task.name][group] = probabilities(out, temperature.get(task.name), shifts.get(task.name))
        return probs

    def _run(self, input_ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """One session run through IO binding: on CUDA the inputs are copied to the device once and the outputs
        are allocated there, then copied back together; on CPU it is the same path without copies."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        for name in self.outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def predict_proba(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], list[bool]]:
        encoded = self.tokenize(texts)
        return self.infer(encoded), encoded.truncated
