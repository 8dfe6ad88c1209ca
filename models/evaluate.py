"""Test-split metrics of an exported model, through the same runtime the worker uses."""

import time
from pathlib import Path

import numpy as np

from streamsense.models.data import load_split, require_datasets
from streamsense.models.metrics import classification_metrics
from streamsense.models.runtime import ModelRuntime
from streamsense.models.tasks import Task, task_views

UNRELATED_DOMAINS = {"random_reply", "random_tweet"}  # complaints data rows that never contain a complaint


def _views(card: dict) -> list[tuple[Task, str]]:
    """(task view, report key) per test set: the task's name, or "task/dataset" for a task read from several datasets
    (the Chinese sentiment head: waimai_10k and online_shopping_10_cats)."""
    out = []
    for entry in card["tasks"]:
        views = task_views(entry)
        out += [(v, v.name if len(views) == 1 else f"{v.name}/{v.dataset}") for v in views]
    return out


def evaluate(model_dir: Path, datasets_dir: Path, device: str = "cpu", variant: str | None = None,
             batch_size: int = 64, limit: int | None = None, threads: int = 0) -> dict:
    runtime = ModelRuntime(model_dir, device, threads=threads, variant=variant)
    report: dict = {"model": runtime.label, "variant": runtime.variant, "device": runtime.device}
    if runtime.card.get("decision"):  # the policy each head decided under (models/decision.py)
        report["decision"] = {head: entry["policy"] for head, entry in runtime.card["decision"].items()}
    batch_seconds: list[float] = []
    messages = 0
    require_datasets(datasets_dir, [view.dataset for view, _ in _views(runtime.card)], ("test",))
    for view, key in _views(runtime.card):
        name = view.name
        examples = load_split(datasets_dir, view, "test", limit, emoji=runtime.emoji)
        predicted = []
        for i in range(0, len(examples), batch_size):
            start = time.perf_counter()
            probs, _ = runtime.predict_proba([e.text for e in examples[i : i + batch_size]])
            batch_seconds.append(time.perf_counter() - start)
            messages += len(probs[name])
            predicted.extend(probs[name].argmax(axis=1).tolist())
        labels = [e.label for e in examples]
        report[key] = classification_metrics(labels, predicted, len(view.labels))
        if name == "complaint":
            keep = [i for i, e in enumerate(examples) if e.domain not in UNRELATED_DOMAINS]
            report["complaint_brands_only"] = classification_metrics(
                [labels[i] for i in keep], [predicted[i] for i in keep], len(view.labels))
    ms = np.array(batch_seconds) * 1000
    report["latency"] = {"batch_size": batch_size, "batches": len(ms), "mean_ms_per_batch": round(float(ms.mean()), 2),
                         "p95_ms_per_batch": round(float(np.percentile(ms, 95)), 2),
                         "msgs_per_s": round(messages / float(ms.sum() / 1000), 1)}
    return report
