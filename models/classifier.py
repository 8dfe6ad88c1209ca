"""Texts → typed predictions: sentiment from the model, risk from the model's risk heads plus rules."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamsense.models.risk import Risk, RiskRules
from streamsense.models.runtime import Encoded, ModelRuntime
from streamsense.models.tasks import RISK_TASKS


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

    @property
    def model_version(self) -> str:
        return self.runtime.label

    def tokenize(self, texts: Sequence[str]) -> Encoded:
        return self.runtime.tokenize(texts)

    def predict(self, texts: Sequence[str], encoded: Encoded) -> list[Prediction]:
        """Predictions for `texts`, already tokenized into `encoded` (tokenize once per batch)."""
        probs = self.runtime.infer(encoded)
        sentiment = probs["sentiment"]
        out = []
        for i, text in enumerate(texts):
            scores = {label: round(float(p), 4) for label, p in zip(self.sentiment_labels, sentiment[i])}
            head_probs = {name: float(probs[name][i, positive]) for name, positive in self.risk_heads}
            out.append(Prediction(
                sentiment=Sentiment(self.sentiment_labels[int(np.argmax(sentiment[i]))], scores),
                risk=self.rules.assess(text, head_probs),
                truncated=encoded.truncated[i],
            ))
        return out

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predict(texts, self.tokenize(texts))
