"""Texts → typed predictions: sentiment from the model, risk from the model's risk heads plus rules.

Two shapes of the same decisions: `predict`/`classify` return one `Prediction` object per text (the CLI, the
evaluation, tests); `decide` returns a `BatchResult`, the batch's decisions column by column, which the worker's
pipeline turns into rows and messages without building per-message objects. Both come from the same code."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamsense.models.language import model_languages
from streamsense.models.risk import Risk, RiskRules
from streamsense.models.runtime import Encoded, ModelRuntime
from streamsense.models.tasks import RISK_TASKS

SCORE_DIGITS = 4


@dataclass(frozen=True)
class Sentiment:
    label: str
    scores: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "scores": self.scores}


@dataclass(frozen=True)
class Prediction:
    sentiment: Sentiment
    risk: Risk
    truncated: bool

    def to_dict(self) -> dict:
        return {"sentiment": self.sentiment.to_dict(), "risk": self.risk.to_dict(), "truncated": self.truncated}


def rounded_rows(probs: np.ndarray, digits: int = SCORE_DIGITS) -> list[list[float]]:
    """`[[round(float(p), digits) for p in row] for row in probs]`, computed once per batch.

    For float32 (or narrower) probabilities numpy's rounding (x * 10**d, round half to even, / 10**d, in float64) is
    exactly Python's `round`: the product of a 24-bit mantissa and 10**4 is exact in float64, so the half-even step
    sees the exact decimal value, and the division gives the double nearest the rounded decimal, as `round` does.
    Wider inputs have no such guarantee and take Python's `round`."""
    if probs.dtype.itemsize <= 4 and np.issubdtype(probs.dtype, np.floating):
        return np.round(probs.astype(np.float64), digits).tolist()
    return [[round(p, digits) for p in row] for row in probs.astype(np.float64).tolist()]


@dataclass(frozen=True)
class BatchResult:
    """A batch's decisions, one entry per text, in input order."""

    labels: list[str]  # the sentiment label (argmax)
    scores: list[dict[str, float]]  # sentiment probabilities rounded to 4 places, keyed by the card's labels
    risks: list[Risk]
    truncated: list[bool]
    versions: list[str] | None = None  # the model that decided each text, where a batch is routed to several
    # the pattern signals that fired on each text (RiskRules.fire), for a model with the same signals (a shadow)
    fired: list[tuple] | None = None
    # what the identity-blind second look found (models/bias.py Blinding), one per model that looked, for a model
    # with the same lexicon (a shadow) to take instead of looking again
    blinded: tuple = ()

    def __len__(self) -> int:
        return len(self.labels)

    def prediction(self, i: int) -> Prediction:
        return Prediction(Sentiment(self.labels[i], self.scores[i]), self.risks[i], self.truncated[i])

    def predictions(self) -> list[Prediction]:
        return [Prediction(Sentiment(label, scores), risk, truncated)
                for label, scores, risk, truncated in zip(self.labels, self.scores, self.risks, self.truncated)]


class Classifier:
    def __init__(self, runtime: ModelRuntime, rules: RiskRules):
        self.runtime = runtime
        self.rules = rules
        names = {t.name for t in runtime.tasks}
        missing = {"sentiment"} - names
        if missing:
            raise ValueError(f"model {runtime.label} lacks the {', '.join(sorted(missing))} head")
        self.sentiment_labels = next(t.labels for t in runtime.tasks if t.name == "sentiment")
        self.risk_heads = [(t.name, t.labels.index(t.positive)) for t in RISK_TASKS if t.name in names]
        # the languages the model reads (its card's `languages`, else English): the pipeline flags the others
        self.languages: tuple[str, ...] = model_languages(getattr(runtime, "card", None))

    @property
    def model_version(self) -> str:
        return self.runtime.label

    def tokenize(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> Encoded:
        """Token ids of `texts`; `langs` is for routing (models/routing.py) and unused by one model."""
        return self.runtime.tokenize(texts)

    def infer(self, encoded: Encoded) -> dict[str, np.ndarray]:
        """Probabilities per head, [batch, labels] (one ONNX pass over the batch)."""
        return self.runtime.infer(encoded)

    def decide(self, texts: Sequence[str], encoded: Encoded,
               probs: Mapping[str, np.ndarray] | None = None, fired: Sequence[tuple] | None = None,
               blinded: Sequence = ()) -> BatchResult:
        """Decisions for `texts`, already tokenized into `encoded`, from the heads' probabilities `probs` (inferred
        here when not given): argmax, rounding and the head columns once per batch with numpy, then the risk rules
        per text. `fired`: the pattern signals of each text (RiskRules.fire) where another model with the same
        signals found them already (the champion, for a shadow); `blinded`: what another model's identity-blind second
        look found on the same texts (BatchResult.blinded: the champion's, for a shadow), taken where it applies."""
        if probs is None:
            probs = self.infer(encoded)
        found = ()
        if self.rules.identity_blind:  # a second look, without the identity terms, at the texts those heads flag
            from streamsense.models.bias import blinded_probs

            probs, blinding = blinded_probs(self, texts, probs, blinded)
            found = (blinding,) if blinding is not None else ()
        n = len(texts)
        sentiment = probs["sentiment"]
        if sentiment.shape[0] != n or len(encoded.truncated) < n:
            raise ValueError(f"the model gave {sentiment.shape[0]} rows for {n} texts ({len(encoded.truncated)} encoded)")
        names = self.sentiment_labels
        labels = [names[i] for i in np.argmax(sentiment, axis=1).tolist()]
        scores = [dict(zip(names, row)) for row in rounded_rows(sentiment)]
        heads = [name for name, _ in self.risk_heads]
        if heads:
            columns = np.stack([probs[name][:, positive] for name, positive in self.risk_heads], axis=1).tolist()
        else:
            columns = [[]] * n
        rules = self.rules
        if fired is None or len(fired) != n:
            fire = rules.fire
            fired = [fire(text) for text in texts]
        assess = rules.assess
        risks = [assess(text, dict(zip(heads, row)), signals) for text, row, signals in zip(texts, columns, fired)]
        return BatchResult(labels, scores, risks, list(encoded.truncated[:n]), fired=list(fired), blinded=found)

    def predict(self, texts: Sequence[str], encoded: Encoded) -> list[Prediction]:
        """Predictions for `texts`, already tokenized into `encoded` (tokenize once per batch)."""
        return self.decide(texts, encoded).predictions()

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predict(texts, self.tokenize(texts))
