"""What to review next: the alerts, the predictions the model is least sure of, and a random share.

Only the random share estimates quality without bias: the least-sure items are, by construction, where the model is
wrong most often, and the alerts are what it flagged; precision measured on those alone is lower than on the
stream. The BI report (`streamsense query feedback-precision`) shows both estimates. Items reviewed already (any
verdict on that message or alert) are left out. The random share is drawn from every unreviewed stored prediction
(their ids are read, one integer each); the least-sure part looks at the newest `scan` of them.

Order of a queue of `limit` items: `round(limit * random_share)` random ones (uniform over unreviewed stored
predictions), spread evenly through the queue; of the other slots, at most half go to unreviewed alerts (newest
first), the rest to the least sure predictions (smallest margin first). Margin of a head: its top probability minus
the second (calibrated heads, as stored); of a message: its smallest over the heads. Entropy (`by="entropy"`): the
largest normalised entropy over the heads, largest first.

With a shadowed challenger (`challenger`: its NAME:VERSION), the alerts' slots are shared with the alerts it would
have raised (streams/feedback/challenger.py), alternating, newest first: verdicts on those give its alert precision
for the promotion gate. Their items are {kind: would_alert, message_id: "post:123", head: the rule, score: the
version}.
"""

import math
import random
from collections.abc import Sequence

from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Engine

from streamsense.streams.feedback.challenger import unreviewed as would_alerts
from streamsense.streams.feedback.schema import feedback
from streamsense.streams.feedback.verdicts import heads_of
from streamsense.streams.schema import alerts, predictions

DEFAULT_RANDOM_SHARE = 0.2
ORDERS = ("margin", "entropy")


def head_probabilities(row) -> dict[str, list[float]]:
    """Each head's probabilities of a stored prediction (sentiment's two or three, a risk head's two)."""
    probs = {"sentiment": [p for p in (row.p_negative, row.p_neutral, row.p_positive) if p is not None]}
    for head in heads_of(row)[1:]:
        p = float(row.risk_labels[head])
        probs[head] = [1 - p, p]
    return probs


def margin(probs: Sequence[float]) -> float:
    top = sorted(probs, reverse=True)
    return top[0] - top[1]


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy divided by its maximum (log of the number of labels): 0 sure … 1 no idea."""
    return -sum(p * math.log(p) for p in probs if p > 0) / math.log(len(probs))


def uncertainty(row, by: str = "margin") -> tuple[float, str]:
    """(sort key: smaller = less sure, the head that makes it)."""
    probs = head_probabilities(row)
    if by == "entropy":
        head = max(probs, key=lambda h: entropy(probs[h]))
        return -entropy(probs[head]), head
    head = min(probs, key=lambda h: margin(probs[h]))
    return margin(probs[head]), head


def _unreviewed(kind_col, id_col):
    return ~exists().where(and_(feedback.c.kind == kind_col, feedback.c.message_id == id_col))


def review_queue(engine: Engine, limit: int = 20, random_share: float = DEFAULT_RANDOM_SHARE, by: str = "margin",
                 scan: int = 5000, seed: int | None = None, challenger: str | None = None) -> list[dict]:
    """The next `limit` items to review: [{kind, message_id, reason (random / alert / uncertain), head, score}]
    (`score`: the margin or normalised entropy of `head`; for alerts, the rule). `scan`: how many of the newest
    unreviewed predictions the least-sure part looks at."""
    if not 0 <= random_share <= 1:
        raise ValueError(f"random share {random_share} is not within [0, 1]")
    if by not in ORDERS:
        raise ValueError(f"order {by!r} is not one of {', '.join(ORDERS)}")
    n_random = round(limit * random_share)
    rng = random.Random(seed)
    with engine.connect() as conn:
        unreviewed = _unreviewed(predictions.c.kind, predictions.c.message_id)
        pks = list(conn.execute(select(predictions.c.pk).where(unreviewed)).scalars())
        picked = set(rng.sample(pks, min(n_random, len(pks))))
        columns = (predictions.c.pk, predictions.c.kind, predictions.c.message_id, predictions.c.p_negative,
                   predictions.c.p_neutral, predictions.c.p_positive, predictions.c.risk_labels)
        random_rows = list(conn.execute(select(*columns).where(predictions.c.pk.in_(picked)))) if picked else []
        n_alerts = (limit - len(random_rows)) // 2
        alert_rows = list(conn.execute(
            select(alerts.c.id, alerts.c.rule).where(_unreviewed("alert", alerts.c.id))
            .order_by(alerts.c.created_at.desc(), alerts.c.id).limit(n_alerts))) if n_alerts else []
        real = [{"kind": "alert", "message_id": row.id, "reason": "alert", "head": "alert", "score": row.rule}
                for row in alert_rows]
        would = would_alerts(conn, challenger, n_alerts) if challenger and n_alerts else []
        alert_items = _alternate(real, would)[:n_alerts]
        n_uncertain = limit - len(random_rows) - len(alert_items)
        newest = list(conn.execute(select(*columns).where(unreviewed, predictions.c.pk.notin_(picked))
                                   .order_by(predictions.c.pk.desc()).limit(scan))) if n_uncertain > 0 else []
    randoms = [_item(row, "random", by) for row in sorted(random_rows, key=lambda r: rng.random())]
    uncertain = sorted((_item(row, "uncertain", by) | {"_pk": row.pk} for row in newest),
                       key=lambda item: (item["_sort"], item["_pk"]))[:max(n_uncertain, 0)]
    rest = alert_items + uncertain
    return [{k: v for k, v in item.items() if not k.startswith("_")} for item in _spread(randoms, rest)]


def _item(row, reason: str, by: str) -> dict:
    key, head = uncertainty(row, by)
    return {"kind": row.kind, "message_id": row.message_id, "reason": reason, "head": head,
            "score": round(abs(key), 4), "_sort": key}


def _alternate(a: list, b: list) -> list:
    """a[0], b[0], a[1], b[1], …, then the longer one's rest."""
    out = [x for pair in zip(a, b) for x in pair]
    n = min(len(a), len(b))
    return out + a[n:] + b[n:]


def _spread(randoms: list, rest: list) -> list:
    """`randoms` placed evenly among `rest` (the first at position 0), each list keeping its order."""
    total = len(randoms) + len(rest)
    out, r, o = [], 0, 0
    for i in range(total):
        due = r < len(randoms) and (o >= len(rest) or r * total <= i * len(randoms))
        if due:
            out.append(randoms[r])
            r += 1
        else:
            out.append(rest[o])
            o += 1
    return out
