"""Labelled data for the tasks, read from the shared datasets (JSONL: text, label, label_id)."""

import json
import random
from dataclasses import dataclass
from pathlib import Path

from streamsense.models.tasks import Task, canonical_label
from streamsense.models.text import normalize


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    domain: str | None = None  # complaints data: the brand domain, or random_* for unrelated tweets


def load_split(datasets_dir: Path, task: Task, split: str, limit: int | None = None, seed: int = 0,
               emoji: str = "keep") -> list[Example]:
    """Rows of one split, normalised as the model reads them (`emoji`: models/text.py), with empty texts dropped;
    `limit` takes a seeded random sample. Labels are matched in one spelling (canonical_label)."""
    path = Path(datasets_dir) / task.dataset / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set STREAMSENSE_DATASETS_DIR to the datasets folder")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = normalize(row["text"], emoji)
            if text:
                rows.append(Example(text, task.labels.index(canonical_label(row["label"])), row.get("domain")))
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows
