"""Verdicts in: parse a person's verdict or label, check it against the stored prediction or alert, store it once.

A verdict names its target (`post:ID`, `ticket:ID`, `alert:ID`, or `would_alert:post:ID`: an alert a shadowed
challenger would have raised on that message), the head judged (sentiment, offensive, hate, complaint, …, `alert`,
or for a would-be alert the rule), who said it, and either `right` / `wrong` or the label the person gives. Against the
stored row it gains what was predicted and by which model version, and its missing half: a label equal to the
prediction is `right`, another is `wrong`; `right` confirms the predicted label, `wrong` on a two-label head names
the other one (on sentiment's three labels a bare `wrong` leaves the label unknown: it counts for quality, not for
training). An alert's labels are `alarm` and `false_alarm`; its prediction is always `alarm`; so are a would-be
alert's.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection, Engine

from streamsense.streams.feedback.challenger import WOULD_ALERT, shadow_rows_of
from streamsense.streams.feedback.schema import feedback
from streamsense.streams.schema import alerts, predictions

VERDICTS = ("right", "wrong")
SOURCES = ("cli", "jsonl", "kafka", "argilla", "label-studio")
SAMPLES = ("random", "uncertain", "alert", WOULD_ALERT)
KINDS = ("post", "ticket", "alert", WOULD_ALERT)
ALERT_HEAD, ALARM, FALSE_ALARM = "alert", "alarm", "false_alarm"


class VerdictError(ValueError):
    """A verdict that cannot be stored: malformed, or not matching a stored prediction or alert."""


@dataclass(frozen=True)
class Verdict:
    kind: str
    message_id: str
    head: str
    by: str
    verdict: str | None = None  # right / wrong; None: implied by the label
    label: str | None = None
    created_at: datetime | None = None  # when the person said it; None: now
    source: str = "cli"
    sample: str | None = None  # how the item was chosen for review (queue reason)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.message_id}"


@dataclass
class Outcome:
    """What `record` did: rows added, already there unchanged, replaced (a changed mind), and rejected with why."""
    added: int = 0
    unchanged: int = 0
    replaced: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (what, reason)
    without_text: int = 0  # stored verdicts on messages kept without text (STREAMSENSE_STORE_TEXT=hash)

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.unchanged} already there", f"{self.replaced} replaced"]
        if self.rejected:
            parts.append(f"{len(self.rejected)} rejected")
        line = ", ".join(parts)
        if self.without_text:
            line += (f"; {self.without_text} on messages stored without text (STREAMSENSE_STORE_TEXT=hash): they "
                     "count for quality, not for training")
        return line


def parse_ref(ref: str) -> tuple[str, str]:
    """`post:123` → ("post", "123")."""
    kind, sep, ident = str(ref).partition(":")
    if not sep or kind not in KINDS or not ident:
        raise VerdictError(f"{ref!r} is not KIND:ID with KIND one of {', '.join(KINDS)} (e.g. post:123)")
    return kind, ident


def parse_at(value) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise VerdictError(f"'at' {value!r} is not an ISO 8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def from_dict(obj, source: str) -> Verdict:
    """A verdict from a JSON object (a JSONL line, a Kafka message):
    {"target": "post:123" | "kind"+"message_id", "head", "label" and/or "verdict", "by", "at"?, "sample"?}."""
    if not isinstance(obj, dict):
        raise VerdictError(f"a verdict is a JSON object, not {type(obj).__name__}")
    if "target" in obj:
        kind, ident = parse_ref(obj["target"])
    else:
        kind, ident = obj.get("kind"), obj.get("message_id")
        if kind not in KINDS or not isinstance(ident, (str, int)) or ident == "":
            raise VerdictError("a verdict needs 'target' (e.g. \"post:123\") or 'kind' and 'message_id'")
    unknown = set(obj) - {"target", "kind", "message_id", "head", "label", "verdict", "by", "at", "sample"}
    if unknown:
        raise VerdictError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))}")
    head = obj.get("head") or (ALERT_HEAD if kind == "alert" else None)
    for name, value in (("head", head), ("by", obj.get("by"))):
        if not isinstance(value, str) or not value.strip():
            raise VerdictError(f"a verdict needs '{name}' (a non-empty string)")
    return check(Verdict(kind, str(ident), head, obj["by"].strip(), obj.get("verdict"), obj.get("label"),
                         parse_at(obj.get("at")), source, obj.get("sample")))


def check(v: Verdict) -> Verdict:
    """The verdict's own fields, before the store is asked."""
    if v.verdict is None and v.label is None:
        raise VerdictError(f"{v.ref} {v.head}: give a label or a verdict (right / wrong)")
    if v.verdict is not None and v.verdict not in VERDICTS:
        raise VerdictError(f"{v.ref} {v.head}: verdict {v.verdict!r} is not right or wrong")
    if v.label is not None and (not isinstance(v.label, str) or not v.label):
        raise VerdictError(f"{v.ref} {v.head}: label {v.label!r} is not a non-empty string")
    if (v.kind == "alert") != (v.head == ALERT_HEAD):
        raise VerdictError(f"{v.ref}: head {v.head!r}: an alert's head is 'alert', and only an alert's")
    if v.source not in SOURCES:
        raise VerdictError(f"source {v.source!r} is not one of {', '.join(SOURCES)}")
    if v.sample is not None and v.sample not in SAMPLES:
        raise VerdictError(f"{v.ref}: sample {v.sample!r} is not one of {', '.join(SAMPLES)}")
    if len(v.by) > 200 or len(v.head) > 64 or len(v.message_id) > 200:
        raise VerdictError(f"{v.ref}: an id, head or 'by' is too long (200, 64 and 200 characters at most)")
    return v


def head_labels(row, head: str) -> tuple[tuple[str, ...], str] | None:
    """(the head's labels, the label it predicted) for a stored prediction row, or None where the row has no such
    head. Risk heads are two-label (`not_<head>` / `<head>`), decided at probability 0.5 as the model's argmax."""
    if head == "sentiment":
        labels = ("negative", "positive") if row.p_neutral is None else ("negative", "neutral", "positive")
        return labels, row.sentiment
    p = (row.risk_labels or {}).get(head)
    if p is None:
        return None
    return (f"not_{head}", head), head if p >= 0.5 else f"not_{head}"


def heads_of(row) -> list[str]:
    return ["sentiment", *sorted(row.risk_labels or {})]


def complete(v: Verdict, labels: tuple[str, ...], predicted: str) -> tuple[str, str | None]:
    """(verdict, label) with the missing half filled in from the prediction, or VerdictError."""
    if v.label is not None and v.label not in labels:
        raise VerdictError(f"{v.ref} {v.head}: label {v.label!r} is not one of {', '.join(labels)}")
    if v.label is not None:
        verdict = "right" if v.label == predicted else "wrong"
        if v.verdict is not None and v.verdict != verdict:
            raise VerdictError(f"{v.ref} {v.head}: verdict {v.verdict!r} contradicts label {v.label!r} "
                               f"(the model said {predicted!r})")
        return verdict, v.label
    if v.verdict == "right":
        return "right", predicted
    others = [label for label in labels if label != predicted]
    return "wrong", others[0] if len(others) == 1 else None


def _targets(conn: Connection, verdicts: list[Verdict]) -> tuple[dict, dict, dict]:
    """The stored predictions, alerts and shadow rows the verdicts name: {(kind, id): row}, {alert id: row},
    {"post:id": [shadow rows, newest first]}."""
    found, found_alerts = {}, {}
    pairs = sorted({(v.kind, v.message_id) for v in verdicts if v.kind not in ("alert", WOULD_ALERT)})
    for start in range(0, len(pairs), 500):
        chunk = pairs[start:start + 500]
        stmt = select(predictions.c.kind, predictions.c.message_id, predictions.c.sentiment, predictions.c.p_neutral,
                      predictions.c.risk_labels, predictions.c.model_version, predictions.c.text)
        stmt = stmt.where(or_(*(and_(predictions.c.kind == k, predictions.c.message_id == i) for k, i in chunk)))
        found.update({(r.kind, r.message_id): r for r in conn.execute(stmt)})
    ids = sorted({v.message_id for v in verdicts if v.kind == "alert"})
    for start in range(0, len(ids), 500):
        stmt = select(alerts.c.id, alerts.c.rule, alerts.c.model_version).where(alerts.c.id.in_(ids[start:start + 500]))
        found_alerts.update({r.id: r for r in conn.execute(stmt)})
    return found, found_alerts, shadow_rows_of(conn, [v.message_id for v in verdicts if v.kind == WOULD_ALERT])


def resolve(conn: Connection, verdicts: list[Verdict]) -> tuple[list[dict], list[tuple[int, str, str]], int]:
    """Rows for the feedback table, the rejected verdicts (their index in `verdicts`, what, why), and how many rows
    name a message stored without text."""
    found, found_alerts, shadowed = _targets(conn, verdicts)
    rows, rejected, without_text = [], [], 0
    now = datetime.now(timezone.utc)
    for i, v in enumerate(verdicts):
        try:
            if v.kind == "alert":
                alert = found_alerts.get(v.message_id)
                if alert is None:
                    raise VerdictError(f"no stored alert {v.message_id!r}")
                labels, predicted, version, text = (ALARM, FALSE_ALARM), ALARM, alert.model_version, ""
            elif v.kind == WOULD_ALERT:
                would = [r for r in shadowed.get(v.message_id, []) if v.head in (r.alerts or [])]
                if not would:
                    raise VerdictError(f"no shadowed challenger would have raised {v.head!r} on {v.message_id!r}")
                labels, predicted, version, text = (ALARM, FALSE_ALARM), ALARM, would[0].model_version, ""
            else:
                row = found.get((v.kind, v.message_id))
                if row is None:
                    raise VerdictError(f"no stored prediction {v.ref}")
                judged = head_labels(row, v.head)
                if judged is None:
                    raise VerdictError(f"{v.ref}: the prediction has no head {v.head!r} "
                                       f"(heads: {', '.join(heads_of(row))})")
                (labels, predicted), version, text = judged, row.model_version, row.text
            verdict, label = complete(v, labels, predicted)
        except VerdictError as exc:
            rejected.append((i, f"{v.ref} {v.head} by {v.by}", str(exc)))
            continue
        without_text += text is None
        rows.append({"kind": v.kind, "message_id": v.message_id, "head": v.head, "by": v.by, "verdict": verdict,
                     "label": label, "predicted": predicted, "model_version": version, "source": v.source,
                     "sample": v.sample, "created_at": v.created_at or now, "updated_at": now})
    return rows, rejected, without_text


def _insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(feedback)


KEY = ("kind", "message_id", "head", "by")
SAID = ("verdict", "label", "sample")  # what makes a verdict the same or a changed one


def write(conn: Connection, rows: list[dict], outcome: Outcome) -> None:
    """Store `rows` in the caller's transaction: a new key is added, the same verdict again changes nothing, a
    changed one replaces the earlier (its created_at too: the latest word counts)."""
    last = {}
    for row in rows:  # within one call the last verdict per key counts; the earlier ones count as if stored first
        key = tuple(row[c] for c in KEY)
        if key in last:
            same = all(last[key][c] == row[c] for c in SAID)
            outcome.unchanged += same
            outcome.replaced += not same
        last[key] = row
    for row in last.values():
        inserted = _insert(conn).on_conflict_do_nothing(index_elements=list(KEY)).returning(feedback.c.pk)
        if conn.execute(inserted, row).first() is not None:
            outcome.added += 1
            continue
        key = and_(*(feedback.c[c] == row[c] for c in KEY))
        old = conn.execute(select(*(feedback.c[c] for c in SAID)).where(key)).one()
        if tuple(old) == tuple(row[c] for c in SAID):
            outcome.unchanged += 1
        else:
            conn.execute(feedback.update().where(key).values(**{c: row[c] for c in row if c not in KEY}))
            outcome.replaced += 1


def record(engine: Engine, verdicts: Iterable[Verdict]) -> Outcome:
    """Check `verdicts` against the store and keep the good ones, in one transaction; the rest are rejected with
    their reasons (nothing is half-stored)."""
    verdicts = list(verdicts)
    outcome = Outcome()
    with engine.begin() as conn:
        rows, rejected, outcome.without_text = resolve(conn, verdicts)
        outcome.rejected = [(what, why) for _, what, why in rejected]
        write(conn, rows, outcome)
    return outcome


def stored(engine: Engine, *where) -> list[dict]:
    """Feedback rows (all, or those matching `where`), oldest key first."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(feedback).where(*where).order_by(feedback.c.pk))]
