"""The classification tasks one model serves: one head per task over a shared encoder."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    dataset: str  # folder under the datasets directory
    metric: str  # the headline metric used for model selection and targets
    positive: str | None = None  # for binary risk heads: the label whose probability is the risk score


TASKS: tuple[Task, ...] = (
    Task("sentiment", ("negative", "neutral", "positive"), "tweeteval_sentiment", "macro_recall"),
    Task("offensive", ("not_offensive", "offensive"), "tweeteval_offensive", "macro_f1", "offensive"),
    Task("hate", ("not_hate", "hate"), "tweeteval_hate", "macro_f1", "hate"),
    Task("complaint", ("not_complaint", "complaint"), "complaints_twitter", "macro_f1", "complaint"),
)


def canonical_label(label: str) -> str:
    """One spelling for labels everywhere (snake_case, like every other name on the wire): the datasets and model
    cards up to v3 wrote "not-offensive" and "not-hate" beside "not_complaint"."""
    return label.replace("-", "_")


TASKS_BY_NAME = {t.name: t for t in TASKS}

# Chinese heads (models/zh_train.py, docs/models.md "Chinese"): one task can read several datasets, so each dataset is
# its own Task view with the task's name and labels. Sentiment has no neutral: no Chinese set here labels it.
ZH_TASKS: dict[str, tuple[Task, ...]] = {
    "sentiment": (
        Task("sentiment", ("negative", "positive"), "waimai_10k", "accuracy"),
        Task("sentiment", ("negative", "positive"), "online_shopping_10_cats", "accuracy"),
    ),
    "offensive": (Task("offensive", ("not_offensive", "offensive"), "cold", "macro_f1", "offensive"),),
}


def task_entry(views: tuple[Task, ...]) -> dict:
    """A task as a model card and training.json write it: name, labels, metric, positive, its first dataset and
    every dataset it was trained and is evaluated on."""
    t = views[0]
    return {"name": t.name, "labels": list(t.labels), "metric": t.metric, "positive": t.positive, "dataset": t.dataset,
            "datasets": [v.dataset for v in views]}


def task_views(entry: dict) -> tuple[Task, ...]:
    """The per-dataset Task views of a card's (or training.json's) task entry; entries without `datasets` (cards up
    to v3) have one dataset."""
    labels = tuple(canonical_label(label) for label in entry["labels"])
    positive = canonical_label(entry["positive"]) if entry.get("positive") else None
    datasets = entry.get("datasets") or [entry["dataset"]]
    return tuple(Task(entry["name"], labels, d, entry["metric"], positive) for d in datasets)
RISK_TASKS = tuple(t for t in TASKS if t.positive)
