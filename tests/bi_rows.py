"""Rows as the worker writes them (streamsense.streams.store.Batch), for the BI and dashboard tests."""

from datetime import datetime

from streamsense.streams.alerting.rules import EXCERPT_CHARS, alert_id
from streamsense.streams.contracts import sha256

PROBABILITIES = {"negative": (0.8, 0.15, 0.05), "neutral": (0.1, 0.8, 0.1), "positive": (0.05, 0.15, 0.8)}


def prediction(kind: str, message_id: str, grp: str | None, sentiment: str, produced_at: datetime | None,
               text: str = "sample text", risk_level: str = "low", risk_score: float = 0.05,
               priority: str | None = None, partition: int = 0, offset: int = 0, lang: str | None = "en",
               lang_declared: str | None = None) -> dict:
    p_negative, p_neutral, p_positive = PROBABILITIES[sentiment]
    return {
        "kind": kind, "message_id": message_id, "grp": grp, "author": f"author-{message_id}", "priority": priority,
        "text": text, "text_sha256": sha256(text), "truncated": False, "sentiment": sentiment,
        "p_negative": p_negative, "p_neutral": p_neutral, "p_positive": p_positive, "risk_level": risk_level,
        "risk_score": risk_score, "risk_labels": {"offensive": 0.02, "hate": 0.01, "complaint": risk_score},
        "risk_signals": [], "risk_explanation": f"{risk_level} risk: complaint {risk_score:.2f}",
        "model_version": "streamsense-minilm:1", "source_topic": f"{kind}s", "source_partition": partition,
        "source_offset": offset, "created_at": produced_at, "produced_at": produced_at,
        "lang": lang, "lang_declared": lang_declared, "supported": None if lang is None else lang in ("en", "und"),
    }


def alert(rule: str, severity: str, rows: list[dict], created_at: datetime, summary: str | None = None,
          window: tuple[datetime, datetime] | None = None) -> dict:
    """An alert with these prediction rows as evidence (per message when one row, per group otherwise)."""
    first = rows[0]
    key = f"{first['kind']}:{first['message_id'] if len(rows) == 1 else first['grp']}"
    return {
        "id": alert_id(rule, key, window[0].isoformat() if window else ""), "rule": rule, "severity": severity,
        "key": key, "window_start": window and window[0], "window_end": window and window[1],
        "summary": summary or f"{severity} risk {key}", "model_version": "streamsense-minilm:1",
        "evidence": [{"message_id": r["message_id"], "kind": r["kind"], "excerpt": r["text"][:EXCERPT_CHARS],
                      "risk_score": r["risk_score"]} for r in rows],
        "created_at": created_at,
    }
