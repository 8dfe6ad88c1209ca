"""Alert gating, inside the batch's SQL transaction: the windowed rules read the store's window counters (this
transaction's rows included), and every candidate passes cooldown and rate limits against the alerts already
stored. The store inserts what `admit` returns; SQL keeps the window state, so restarts neither lose nor repeat an
alert."""

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, literal, select, text

from streamsense.streams.alerting.rules import (
    EVIDENCE_MAX,
    AlertRules,
    Counts,
    _alert,
    _evidence,
    _Windowed,
    alert_id,
    window_index,
)
from streamsense.streams.contracts import AlertCandidate
from streamsense.streams.schema import alert_window_lengths, alert_windows, alerts, predictions


class AlertGate:
    """What the store asks, in its transaction: which alerts to keep for this batch."""

    def __init__(self, rules: AlertRules):
        self.rules = rules

    @property
    def window_lengths(self) -> set[int]:
        return self.rules.window_lengths

    def admit(self, conn, candidates: list[AlertCandidate], rows: list[dict]) -> Iterator[AlertCandidate]:
        """The batch's per-message candidates plus the windowed alerts its stored `rows` (with `event_at`) trigger,
        less those stored already, in a rule's cooldown for the same key or over its rate per minute.

        Lazy: the store inserts each alert it is given before the next one is checked, so alerts of one batch count
        against each other's cooldown and rate (three hits in a minute, limit two: the third is held back)."""
        proposed = list(candidates)
        if rows:
            proposed += self._windowed(conn, rows, rows[0]["model_version"])
        return (alert for alert in proposed if self.allows(conn, alert))

    def _windowed(self, conn, rows: list[dict], model_version: str) -> list[AlertCandidate]:
        """Candidate alerts for the windows this batch's rows (with `event_at`) fall in, from SQL (this
        transaction's rows included).

        One query per rule reads the counters of the touched windows and their baselines: a handful of rows,
        however many messages the windows hold."""
        out = []
        c = alert_windows.c
        when = predictions.c.event_at
        for rule in (r for r in self.rules.rules if isinstance(r, _Windowed)):
            size = timedelta(seconds=rule.window_seconds)
            touched = {(r["kind"], r["grp"], window_index(r["event_at"], rule.window_seconds))
                       for r in rows if r["grp"]}
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
                    if not self.allows(conn, alert):  # stored already, or held back: spare the evidence query
                        continue
                    worst = conn.execute(
                        select(predictions.c.message_id, predictions.c.text, predictions.c.risk_score)
                        .where(predictions.c.kind == kind, predictions.c.grp == group, when >= start, when < start + size)
                        .order_by(case((predictions.c.sentiment == "negative", 0), else_=1), predictions.c.risk_score.desc())
                        .limit(EVIDENCE_MAX)).all()
                    alert["evidence"] = [_evidence(r.message_id, kind, r.text or "", r.risk_score) for r in worst]
                    out.append(alert)
        return out

    def allows(self, conn, alert: AlertCandidate) -> bool:
        """False when the alert is stored already, inside the rule's cooldown for the same key, or over its rate per
        minute (by message time)."""
        if conn.execute(select(alerts.c.id).where(alerts.c.id == alert["id"])).first():
            return False
        rule = self.rules.by_name.get(alert["rule"])
        if rule is None:
            return True
        at = alert["created_at"]
        earlier = and_(alerts.c.rule == rule.name, alerts.c.id != alert["id"], alerts.c.created_at <= at)
        if rule.cooldown_seconds:
            since = at - timedelta(seconds=rule.cooldown_seconds)
            if conn.execute(select(func.count()).select_from(alerts).where(
                    earlier, alerts.c.key == alert["key"], alerts.c.created_at > since)).scalar_one():
                return False
        if rule.max_per_minute:
            since = at - timedelta(minutes=1)
            if conn.execute(select(func.count()).select_from(alerts).where(
                    earlier, alerts.c.created_at > since)).scalar_one() >= rule.max_per_minute:
                return False
        return True


# The window counters: kept in the batch's transaction by the store, read by the windowed rules above.

def _window_index_sql(dialect: str, column, seconds: int):
    """window_index() in SQL."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer) // seconds
    return cast(func.floor(func.extract("epoch", column) / seconds), BigInteger)


def count_windows(conn, insert, added) -> None:
    """Add the predictions this batch inserted (not the duplicates it skipped) to the counters of every counted
    window length, in one upsert. Reading the lengths FOR SHARE holds off a registration until this commits."""
    lengths = conn.scalars(select(alert_window_lengths.c.window_seconds).with_for_update(read=True)).all()
    counts: dict[tuple, list[int]] = {}
    for row in added:
        if row.grp:
            for seconds in lengths:
                n = counts.setdefault((seconds, row.kind, row.grp, window_index(row.event_at, seconds)), [0, 0])
                n[0] += 1
                n[1] += row.sentiment == "negative"
    if counts:
        stmt = insert(alert_windows)
        conn.execute(  # in key order, so concurrent batches lock shared counter rows in the same order
            stmt.on_conflict_do_update(
                index_elements=["window_seconds", "kind", "grp", "window_index"],
                set_={"messages": alert_windows.c.messages + stmt.excluded.messages,
                      "negatives": alert_windows.c.negatives + stmt.excluded.negatives}),
            [{"window_seconds": s, "kind": k, "grp": g, "window_index": i, "messages": n, "negatives": neg}
             for (s, k, g, i), (n, neg) in sorted(counts.items())])

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
