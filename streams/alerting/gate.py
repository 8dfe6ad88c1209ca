"""Alert gating, inside the batch's SQL transaction: the windowed rules read the store's window counters (this
transaction's rows included), and every candidate passes cooldown and rate limits against the alerts already
stored. The store inserts what `admit` returns; SQL keeps the window state, so restarts neither lose nor repeat an
alert."""

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import BigInteger, Integer, String, case, cast, func, literal, select, text, type_coerce

from streamsense.streams.alerting.rules import (
    EVIDENCE_MAX,
    AlertRules,
    Counts,
    NegativeShare,
    _alert,
    _evidence,
    _Windowed,
    alert_id,
    window_index,
)
from streamsense.streams.alerting import terms
from streamsense.streams.contracts import AlertCandidate
from streamsense.streams.bulk import add
from streamsense.streams.schema import alert_window_lengths, alert_windows, alerts, predictions

log = logging.getLogger(__name__)
_IDS_PER_QUERY = 500  # candidate ids per "stored already?" query: well under SQLite's bound-parameter limit


def _explain(conn, alert: AlertCandidate, rule, kind: str, group: str, start: datetime, end: datetime) -> None:
    """What a kept windowed alert is about (streams/alerting/terms.py), from the stored rows of its window and of
    its baseline windows (the most recent WINDOW_ROWS and BASELINE_ROWS; a negative-share spike: their negative
    ones): appended to its summary, in full in `evidence[0].about`, and its representative messages put first in
    the evidence. Once per alert, in the transaction that stores it."""
    c = predictions.c
    columns = (c.message_id, c.text, c.text_sha256, c.risk_score)
    negative = (c.sentiment == "negative",) if isinstance(rule, NegativeShare) else ()

    def rows(since, until, cap):
        return [r._asdict() for r in conn.execute(
            select(*columns).where(c.kind == kind, c.grp == group, c.event_at >= since, c.event_at < until, *negative)
            .order_by(c.event_at.desc()).limit(cap))]

    window = rows(start, end, terms.WINDOW_ROWS)
    baseline = rows(start - (end - start) * rule.baseline_windows, start, terms.BASELINE_ROWS)
    try:
        about = terms.explain(window, baseline)
    except Exception as exc:  # noqa: BLE001 - an explanation that fails must not hold back the batch's results
        log.exception("alert %s: what its window is about was not computed", alert["id"])
        alert["evidence"][0:1] = [{**e, "about": {"note": f"terms not computed: {type(exc).__name__}"}}
                                  for e in alert["evidence"][:1]]
        return
    line = terms.describe(about)
    if line:
        alert["summary"] = f"{alert['summary']} — {line}"
    alert["evidence"] = with_about(alert["evidence"], about, kind, window)


def with_about(evidence: list[dict], about: dict, kind: str, window: list[dict]) -> list[dict]:
    """A windowed alert's evidence with what it is about: the representative messages first (then the rest, at most
    EVIDENCE_MAX in all), and `about` on the first item, its `examples` the count of those (docs/alerts.md)."""
    first = {e["message_id"] for e in about["examples"]}
    scores = {r["message_id"]: r.get("risk_score") or 0.0 for r in window}
    out = [_evidence(e["message_id"], kind, e["text"], scores.get(e["message_id"], 0.0)) for e in about["examples"]]
    out = (out + [e for e in evidence if e["message_id"] not in first])[:EVIDENCE_MAX]
    if out:
        out[0]["about"] = {**{k: v for k, v in about.items() if k != "examples"}, "examples": len(first)}
    return out


class AlertGate:
    """What the store asks, in its transaction: which alerts to keep for this batch."""

    def __init__(self, rules: AlertRules):
        self.rules = rules
        self._by_name = rules.by_name

    @property
    def window_lengths(self) -> set[int]:
        return self.rules.window_lengths

    def admit(self, conn, candidates: list[AlertCandidate], events: Iterable[tuple] = (),
              model_version: str | None = None) -> list[AlertCandidate]:
        """The batch's per-message candidates plus the windowed alerts its stored predictions trigger (`events`:
        (kind, grp, event_at) of each of the batch's rows; `model_version`: the batch's), less those stored already,
        in a rule's cooldown for the same key or over its rate per minute; in candidate order.

        Decided per batch, not per candidate: one query for the candidate ids stored already, one per rule with a
        cooldown or rate limit for its stored alerts in the span the batch's candidates look back on; then each
        candidate in turn, in memory, against those and the ones kept before it, as if each kept alert had been
        inserted before the next was checked (three hits in a minute, limit two: the third is held back)."""
        windowed = self._windowed(conn, list(events), model_version) if events else []
        kept = self._keep(conn, list(candidates) + [alert for alert, _ in windowed])
        kept_ids = {id(alert) for alert in kept}
        when = predictions.c.event_at
        for alert, (kind, group, start, end) in windowed:
            if id(alert) in kept_ids:  # evidence only for the alerts kept
                worst = conn.execute(
                    select(predictions.c.message_id, predictions.c.text, predictions.c.risk_score)
                    .where(predictions.c.kind == kind, predictions.c.grp == group, when >= start, when < end)
                    .order_by(case((predictions.c.sentiment == "negative", 0), else_=1), predictions.c.risk_score.desc())
                    .limit(EVIDENCE_MAX)).all()
                alert["evidence"] = [_evidence(r.message_id, kind, r.text or "", r.risk_score) for r in worst]
                _explain(conn, alert, self._by_name[alert["rule"]], kind, group, start, end)
        return kept

    def _windowed(self, conn, events: list[tuple], model_version: str) -> list[tuple[AlertCandidate, tuple]]:
        """Candidate alerts for the windows this batch's rows fall in, from SQL (this transaction's rows included),
        each with what its evidence query needs: (kind, group, window start, window end).

        One query per rule reads the counters of the touched windows and their baselines: a handful of rows,
        however many messages the windows hold."""
        out = []
        c = alert_windows.c
        for rule in (r for r in self.rules.rules if isinstance(r, _Windowed)):
            size = timedelta(seconds=rule.window_seconds)
            touched = {(kind, grp, window_index(at, rule.window_seconds)) for kind, grp, at in events if grp}
            if not touched:
                continue
            found = conn.execute(
                select(c.kind, c.grp, c.window_index, c.messages, c.negatives)
                .where(c.window_seconds == rule.window_seconds,
                       c.kind.in_({k for k, _, _ in touched}),
                       c.grp.in_({g for _, g, _ in touched}),
                       c.window_index.in_({at - i for _, _, at in touched for i in range(rule.baseline_windows + 1)}))
            ).all()
            counts = {(k, g, at): Counts(n, neg) for k, g, at, n, neg in found}
            for kind, group, at in sorted(touched):
                current = counts.get((kind, group, at), Counts(0, 0))
                if current.n < rule.min_messages:
                    continue
                previous = [counts.get((kind, group, at - i), Counts(0, 0)) for i in range(1, rule.baseline_windows + 1)]
                history = [rule.measure(c) for c in previous if rule.counts_in_baseline(c)]
                if not history or not any(c.n for c in previous):  # no baseline yet: nothing to compare with
                    continue
                baseline = sum(history) / len(history)
                value = rule.measure(current)
                if baseline > 0 and value > rule.factor * baseline:
                    key = f"{kind}:{group}"
                    start = datetime.fromtimestamp(at * rule.window_seconds, timezone.utc)
                    alert = _alert(
                        rule, key, rule.severity or "medium", f"{group} ({kind}s): {rule.describe(value, baseline)}", [],
                        model_version, start + size, alert_id(rule.name, key, start.isoformat()), (start, start + size))
                    out.append((alert, (kind, group, start, start + size)))
        return out

    def _keep(self, conn, proposed: list[AlertCandidate]) -> list[AlertCandidate]:
        """The alerts of `proposed` to insert, in order: not stored already (nor kept before in this batch), not
        inside their rule's cooldown for the same key, not over its rate per minute (by message time). The time
        comparisons are SQL's: on SQLite those of the stored text, on PostgreSQL those of timestamptz."""
        if not proposed:
            return []
        ids = sorted({a["id"] for a in proposed})
        seen = set()
        for i in range(0, len(ids), _IDS_PER_QUERY):
            seen.update(conn.scalars(select(alerts.c.id).where(alerts.c.id.in_(ids[i:i + _IDS_PER_QUERY]))))
        instant = _instant(conn)
        limited = {}  # rule name -> (rule, [(key, created_at as compared in SQL)] of its alerts that count)
        for a in proposed:
            rule = self._by_name.get(a["rule"])
            if rule is not None and (rule.cooldown_seconds or rule.max_per_minute) and a["id"] not in seen:
                limited.setdefault(rule.name, (rule, []))[1].append(a)
        history = {}
        for name, (rule, limited_alerts) in limited.items():
            spans = _spans(rule)
            since = min((a["created_at"] - span for a in limited_alerts for span in spans), key=instant)
            until = max((a["created_at"] for a in limited_alerts), key=instant)
            at = alerts.c.created_at
            if conn.dialect.name == "sqlite":  # the stored text, compared as SQL compares it
                at = type_coerce(at, String)
            history[name] = [tuple(r) for r in conn.execute(
                select(alerts.c.key, at).where(alerts.c.rule == name, alerts.c.created_at > since,
                                               alerts.c.created_at <= until))]
        kept = []
        for a in proposed:
            if a["id"] in seen:
                continue
            rule = self._by_name.get(a["rule"])
            if rule is not None and rule.name in history:
                earlier = history[rule.name]
                at = instant(a["created_at"])
                if rule.cooldown_seconds:
                    since = instant(a["created_at"] - _cooldown(rule))
                    if any(key == a["key"] and since < t <= at for key, t in earlier):
                        continue
                if rule.max_per_minute:
                    since = instant(a["created_at"] - _MINUTE)
                    if sum(since < t <= at for _, t in earlier) >= rule.max_per_minute:
                        continue
                earlier.append((a["key"], at))
            seen.add(a["id"])
            kept.append(a)
        return kept


_MINUTE = timedelta(minutes=1)


def _cooldown(rule) -> timedelta:
    return timedelta(seconds=rule.cooldown_seconds)


def _spans(rule) -> list[timedelta]:
    """How far back a candidate of `rule` looks: its cooldown, its rate's minute."""
    return [_cooldown(rule)] * bool(rule.cooldown_seconds) + [_MINUTE] * bool(rule.max_per_minute)


def _instant(conn):
    """A datetime as the alerts' created_at comparisons in SQL see it: on SQLite the text SQLAlchemy binds (wall
    time, the offset dropped); on PostgreSQL an aware time (a naive one in the session's time zone, as the server
    reads it)."""
    if conn.dialect.name == "sqlite":
        return alerts.c.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    zone = conn.connection.driver_connection.info.timezone

    def aware(at: datetime) -> datetime:
        return at if at.tzinfo is not None else at.replace(tzinfo=zone)
    return aware


# The window counters: kept in the batch's transaction by the store, read by the windowed rules above.

def _window_index_sql(dialect: str, column, seconds: int):
    """window_index() in SQL."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer) // seconds
    return cast(func.floor(func.extract("epoch", column) / seconds), BigInteger)


def count_windows(conn, insert, added: Iterable[tuple]) -> None:
    """Add the predictions this batch inserted (not the duplicates it skipped; (kind, grp, sentiment, event_at)
    each, event_at as read back from the store) to the counters of every counted window length, in one upsert.
    Reading the lengths FOR SHARE holds off a registration until this commits."""
    lengths = conn.scalars(select(alert_window_lengths.c.window_seconds).with_for_update(read=True)).all()
    counts: dict[tuple, list[int]] = {}
    for kind, grp, sentiment, event_at in added:
        if grp:
            for seconds in lengths:
                n = counts.setdefault((seconds, kind, grp, window_index(event_at, seconds)), [0, 0])
                n[0] += 1
                n[1] += sentiment == "negative"
    # in key order, so concurrent batches lock shared counter rows in the same order
    add(conn, alert_windows, ("window_seconds", "kind", "grp", "window_index"),
        [(*key, n, neg) for key, (n, neg) in sorted(counts.items())])

def register_window_lengths(engine, dialect: str, insert, window_lengths: set[int]) -> None:
    """Start counting the window lengths of this store's rules: a length not counted yet gets its counters
    rebuilt from the stored predictions (replacing any left from before). The lock (PostgreSQL; on SQLite, the
    write lock the first insert takes) waits for batches in flight and holds off new ones, so each stored
    prediction is counted once, by the rebuild or by its batch."""
    lengths = sorted(window_lengths)
    if lengths:
        with engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(text("LOCK TABLE alert_window_lengths IN EXCLUSIVE MODE"))
            new = conn.scalars(insert(alert_window_lengths).on_conflict_do_nothing()
                               .returning(alert_window_lengths.c.window_seconds),
                               [{"window_seconds": s} for s in lengths]).all()
            for seconds in new:
                index = _window_index_sql(dialect, predictions.c.event_at, seconds).label("window_index")
                conn.execute(alert_windows.delete().where(alert_windows.c.window_seconds == seconds))
                conn.execute(alert_windows.insert().from_select(
                    ["window_seconds", "kind", "grp", "window_index", "messages", "negatives"],
                    select(literal(seconds), predictions.c.kind, predictions.c.grp, index, func.count(),
                           func.sum(case((predictions.c.sentiment == "negative", 1), else_=0)))
                    .where(predictions.c.grp != "")
                    .group_by(predictions.c.kind, predictions.c.grp, index)))
