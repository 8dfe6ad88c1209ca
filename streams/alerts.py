"""Per-message alert rule: a result at or above the configured risk level raises one alert."""

import hashlib
from datetime import datetime

from models.risk import LEVELS

EXCERPT_CHARS = 200


def alert_id(rule: str, key: str, window: str = "") -> str:
    """Deterministic id: the same (rule, key, window) always yields the same alert, so replays dedupe."""
    return hashlib.sha256(f"{rule}|{key}|{window}".encode()).hexdigest()[:32]


class RiskLevelRule:
    name = "risk_level"

    def __init__(self, min_level: str):
        if min_level not in LEVELS:
            raise ValueError(f"unknown risk level {min_level!r}; choose one of {', '.join(LEVELS)}")
        self.min_rank = LEVELS.index(min_level)

    def evaluate(self, kind: str, message_id: str, text: str, prediction, model_version: str,
                 at: datetime) -> dict | None:
        risk = prediction.risk
        if LEVELS.index(risk.level) < self.min_rank:
            return None
        key = f"{kind}:{message_id}"
        return {
            "id": alert_id(self.name, key),
            "rule": self.name,
            "severity": risk.level,
            "key": key,
            "window_start": None,
            "window_end": None,
            "summary": f"{risk.level} risk {kind} {message_id} (score {risk.score:.2f}): {risk.explanation}",
            "evidence": [{"message_id": message_id, "kind": kind, "excerpt": text[:EXCERPT_CHARS],
                          "risk_score": risk.score, "signals": risk.signals}],
            "model_version": model_version,
            "created_at": at,
        }
