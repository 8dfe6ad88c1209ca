"""Shadowing: a challenger model run beside the champion on the same batches in the worker, its results stored apart
(`shadow_predictions`), never published, never alerting (the alerts it would have raised are kept as rule names).

A share of the messages (STREAMSENSE_SHADOW_SHARE), chosen by a hash of kind and id so a replay shadows the same
ones. The challenger runs after the champion's results are shaped, in the same stage thread, on the champion's token
ids where both tokenize alike (an adapted challenger and its base do), else on its own tokenization of the same
texts; a challenger failure costs its rows for that batch, never the champion's.
"""

import hashlib
import logging
from datetime import datetime, timezone

from streamsense.models.classifier import Classifier
from streamsense.models.runtime import Encoded, tokens_key

log = logging.getLogger(__name__)

# Pure: no database or Kafka client here (the pipeline imports it); the store writes the rows (`shadow_predictions`,
# streams/feedback/schema.py).


def sampled(kind: str, ident: str, share: float) -> bool:
    """Whether a message is in the shadowed share: the first 8 bytes of sha256("kind:id") below share × 2^64."""
    if share >= 1:
        return True
    digest = hashlib.sha256(f"{kind}:{ident}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < share * 2 ** 64


def same_tokens(champion, shadow) -> bool:
    """Whether the two models turn text into the same token ids (one tokenizer file, length and emoji handling, as
    an adapted challenger and the model it came from do), so the champion's tokens can serve the challenger."""
    if not (isinstance(champion, Classifier) and isinstance(shadow, Classifier)):
        return False  # a routed champion tokenizes per language
    key = tokens_key(champion.runtime)
    return key is not None and key == tokens_key(shadow.runtime)


def champion_tokens(champion, shadow, encoded, picked: list[int], texts: list[str]) -> Encoded:
    """The challenger's tokens of valid[picked] (`texts`): the champion's where its model (or, routed, the route that
    tokenized the message) tokenizes like the challenger (same_tokens), the challenger's own for the rest (each text
    is tokenized alone either way: the same ids)."""
    found: list = [None] * len(picked)
    if isinstance(champion, Classifier):
        if same_tokens(champion, shadow):
            found = [(encoded, i) for i in picked]
    elif hasattr(encoded, "parts") and hasattr(champion, "routes"):  # routed (models/routing.py)
        where = {}
        for route, positions, part in encoded.parts:
            if same_tokens(champion.routes[route], shadow):
                where.update(zip(positions, ((part, k) for k in range(len(positions)))))
        found = [where.get(i) for i in picked]
    missing = [k for k, f in enumerate(found) if f is None]
    own = shadow.tokenize([texts[k] for k in missing]) if missing else None
    for j, k in enumerate(missing):
        found[k] = (own, j)
    return Encoded([part.ids[i] for part, i in found], [part.truncated[i] for part, i in found])


def shadow_rows(shadow, valid: list, stored_ids: set, share: float, alert_rules, encoded: Encoded | None = None,
                champion=None, fired: list | None = None, blinded=()) -> list[dict]:
    """The challenger's rows for the batch's messages that the champion stored (`stored_ids`: (kind, id)) and the
    share samples. `encoded`: the champion's tokens of `valid`, reused where both tokenize alike; `fired`: the pattern
    signals that fired on each of `valid` (BatchResult.fired), reused where the challenger's risk rules have the
    champion's signals (its heads and everything else are its own); `blinded`: what the champion's identity-blind
    second look found (BatchResult.blinded), reused where the challenger looks at the same texts in the same language
    (which name a group) and, with the same tokens, for their counterfactuals' token ids."""
    picked = [i for i, (_, record) in enumerate(valid)
              if (record.kind, record.id) in stored_ids and sampled(record.kind, record.id, share)]
    if not picked:
        return []
    chosen = [valid[i][1] for i in picked]
    texts = [record.model_text for record in chosen]
    try:
        if encoded is not None and len(encoded) == len(valid):
            tokens = champion_tokens(champion, shadow, encoded, picked, texts)
        else:
            tokens = shadow.tokenize(texts)
        champion_rules, shadow_rules = getattr(champion, "rules", None), getattr(shadow, "rules", None)
        if fired is not None and len(fired) == len(valid) and champion_rules is not None \
                and shadow_rules is not None and champion_rules.same_signals(shadow_rules):
            result = shadow.decide(texts, tokens, fired=[fired[i] for i in picked], blinded=blinded)
        else:
            result = shadow.decide(texts, tokens, blinded=blinded)
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
