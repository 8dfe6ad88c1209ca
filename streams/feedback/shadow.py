"""Shadowing: a challenger model run beside the champion on the same batches in the worker, its results stored apart
(`shadow_predictions`), never published, never alerting (the alerts it would have raised are kept as rule names).

A share of the messages (STREAMSENSE_SHADOW_SHARE), chosen by a hash of kind and id so a replay shadows the same
ones. The challenger runs after the champion's results are shaped, on its own tokenization of the same texts, in the
same stage thread; a challenger failure costs its rows for that batch, never the champion's.
"""

import hashlib
import logging
from datetime import datetime, timezone

log = logging.getLogger(__name__)

# Pure: no database or Kafka client here (the pipeline imports it); the store writes the rows (`shadow_predictions`,
# streams/feedback/schema.py).


def sampled(kind: str, ident: str, share: float) -> bool:
    """Whether a message is in the shadowed share: the first 8 bytes of sha256("kind:id") below share × 2^64."""
    if share >= 1:
        return True
    digest = hashlib.sha256(f"{kind}:{ident}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < share * 2 ** 64


def shadow_rows(shadow, valid: list, stored_ids: set, share: float, alert_rules) -> list[dict]:
    """The challenger's rows for the batch's messages that the champion stored (`stored_ids`: (kind, id)) and the
    share samples."""
    chosen = [record for _, record in valid
              if (record.kind, record.id) in stored_ids and sampled(record.kind, record.id, share)]
    if not chosen:
        return []
    texts = [record.model_text for record in chosen]
    try:
        result = shadow.decide(texts, shadow.tokenize(texts))
    except Exception as exc:  # the challenger's failure costs its own rows only
        log.warning("shadow model %s failed on a batch of %d (%s: %s): no shadow rows for it",
                    shadow.model_version, len(texts), type(exc).__name__, exc)
        return []
    now = datetime.now(timezone.utc)
    version = shadow.model_version
    rows = []
    for i, (record, label, scores, risk) in enumerate(zip(chosen, result.labels, result.scores, result.risks)):
        would = alert_rules.per_message(record.kind, record.id, record.group, "", result.prediction(i), version,
                                        record.created_at or now) if alert_rules.may_fire(record.group, risk,
                                                                                          scores) else []
        rows.append({"kind": record.kind, "message_id": record.id, "model_version": version, "sentiment": label,
                     "p_negative": scores["negative"], "p_neutral": scores.get("neutral"),
                     "p_positive": scores["positive"], "risk_level": risk.level, "risk_score": risk.score,
                     "risk_labels": risk.labels, "alerts": sorted({a["rule"] for a in would}), "stored_at": now})
    return rows
