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
RISK_TASKS = tuple(t for t in TASKS if t.positive)
