"""Labelled data for the tasks, read from the datasets folder (STREAMSENSE_DATASETS_DIR; JSONL: text, label)."""

import json
import random
from dataclasses import dataclass
from pathlib import Path

from streamsense.models.tasks import Task, canonical_label
from streamsense.models.text import normalize


# Where each dataset comes from, named when one is missing (README.md, "Datasets", has the layout and the splits).
_TWEETEVAL = "TweetEval: github.com/cardiffnlp/tweeteval, or cardiffnlp/tweet_eval on the Hugging Face hub"
_SOPHONPLUS = "github.com/SophonPlus/ChineseNlpCorpus"
SOURCES = {
    "tweeteval_sentiment": _TWEETEVAL, "tweeteval_offensive": _TWEETEVAL, "tweeteval_hate": _TWEETEVAL,
    "complaints_twitter": "Twitter complaints: github.com/danielpreotiuc/complaints-social-media",
    "cold": "COLD: github.com/thu-coai/COLDataset",
    "waimai_10k": _SOPHONPLUS, "online_shopping_10_cats": _SOPHONPLUS,
}


class DatasetsMissingError(FileNotFoundError):
    """Labelled datasets a command needs are not in the datasets folder."""

    def __init__(self, datasets_dir: Path, missing: dict[str, list[str]]):
        self.datasets_dir, self.missing = Path(datasets_dir), missing  # dataset -> its missing splits
        by_source: dict[str, list[str]] = {}
        for name in missing:
            by_source.setdefault(SOURCES.get(name, "source unknown"), []).append(name)
        wanted = "; ".join(f"{', '.join(names)} ({source})" for source, names in by_source.items())
        super().__init__(f"labelled datasets missing from {self.datasets_dir} (STREAMSENSE_DATASETS_DIR): {wanted}")


def require_datasets(datasets_dir: Path, names, splits) -> None:
    """Raises DatasetsMissingError naming every one of `names` that lacks one of `splits` ({split}.jsonl)."""
    missing = {}
    for name in dict.fromkeys(names):
        absent = [s for s in splits if not (Path(datasets_dir) / name / f"{s}.jsonl").is_file()]
        if absent:
            missing[name] = absent
    if missing:
        raise DatasetsMissingError(datasets_dir, missing)


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    domain: str | None = None  # complaints data: the brand domain, or random_* for unrelated tweets; shopping: category


def load_split(datasets_dir: Path, task: Task, split: str, limit: int | None = None, seed: int = 0,
               emoji: str = "keep") -> list[Example]:
    """Rows of one split, normalised as the model reads them (`emoji`: models/text.py), with empty texts dropped;
    `limit` takes a seeded random sample. Labels are matched in one spelling (canonical_label)."""
    require_datasets(datasets_dir, (task.dataset,), (split,))
    path = Path(datasets_dir) / task.dataset / f"{split}.jsonl"
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = normalize(row["text"], emoji)
            if text:
                label = task.labels.index(canonical_label(row["label"]))
                rows.append(Example(text, label, row.get("domain", row.get("category"))))
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows
