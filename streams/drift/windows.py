"""The drift windows in SQL: each batch's drift sums added to its windows' running sums in the batch's own transaction
(so the window state follows the SQL offsets: a restart or rebalance mid-window neither loses nor double-counts a
message), and each window judged against its reference once a later window of the same model version and scope has
begun; a drifted window proposes an alert that the alert gate keeps or not like any other (id per window)."""

import logging
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer, LargeBinary, String, Table, Text, select

from streamsense.streams.alerting.rules import alert_id
from streamsense.streams.contracts import AlertCandidate, Batch
from streamsense.streams.drift.compare import DEFAULT_MIN_MESSAGES, MAJOR, judge
from streamsense.streams.drift.features import vector
from streamsense.streams.schema import metadata, predictions

log = logging.getLogger(__name__)
ALL = "*"  # the scope of every message of a model version; "topic:NAME" scopes one input topic
RULE = "drift"
EVIDENCE_QUANTITIES = 5

drift_windows = Table(
    "drift_windows", metadata,
    Column("model_version", String(100), primary_key=True),
    Column("scope", String(300), primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),  # by Kafka timestamp (else time stored)
    Column("window_seconds", Integer, nullable=False),
    Column("messages", BigInteger, nullable=False),
    Column("sums", LargeBinary, nullable=False),  # float64 drift vector (streams/drift/features.py Layout)
    Column("status", String(16)),  # NULL until judged: drift, stable, too small, no reference
    Column("summary", Text),  # the verdict in one line ("negative share 31% → 52% (PSI 0.27, major)")
    Column("verdict", JSON),  # each quantity's method, value, level and what moved (streams/drift/compare.py)
    Column("judged_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def window_sums(part, keep: np.ndarray | None, by_topic: bool) -> dict[tuple[str, int], np.ndarray]:
    """(scope, window start) → drift vector of the part's messages that `keep` (by batch row) selects."""
    counts, floats, windows, topics = part.counts, part.floats, part.windows, part.topic_index
    if keep is not None:
        chosen = keep[part.rows]
        counts, floats, windows, topics = counts[chosen], floats[chosen], windows[chosen], topics[chosen]
    out = {}
    if not len(counts):
        return out
    starts = np.unique(windows)
    for start in starts.tolist():
        rows = slice(None) if len(starts) == 1 else windows == start
        out[(ALL, start)] = vector(part.layout, counts[rows], floats[rows])
        if by_topic:
            in_window = topics[rows]
            for k, name in enumerate(part.topics):
                mine = in_window == k
                if mine.any():
                    sub = np.flatnonzero(mine) if isinstance(rows, slice) else np.flatnonzero(rows)[mine]
                    out[(f"topic:{name}", start)] = vector(part.layout, counts[sub], floats[sub])
    return out


class DriftWindows:
    """The store's drift half: `add(conn, insert, batch, keep)` in the batch's transaction, returning the drift alerts
    of the windows it closed. `latest` holds each (model version, scope)'s last verdict (the metrics read it)."""

    def __init__(self, references, window_seconds: int = 3600, min_messages: int = DEFAULT_MIN_MESSAGES,
                 by_topic: bool = False):
        self.references = references
        self.window_seconds = int(window_seconds)
        self.min_messages = int(min_messages)
        self.by_topic = by_topic
        self.latest: dict[tuple[str, str], tuple[datetime, dict]] = {}
        self._checked: dict[tuple[str, str], int] = {}  # (version, scope) -> newest window start it judged before

    def add(self, conn, insert, batch: Batch, keep: np.ndarray | None, now: datetime) -> list[AlertCandidate]:
        newest: dict[tuple[str, str], int] = {}
        for part in batch.drift:
            for (scope, start), vec in sorted(window_sums(part, keep, self.by_topic).items()):
                self._accumulate(conn, insert, part.model_version, scope, start, vec, now)
                key = (part.model_version, scope)
                newest[key] = max(newest.get(key, start), start)
        alerts = []
        for (version, scope), start in sorted(newest.items()):
            if self._checked.get((version, scope)) == start:
                continue  # no window became closable since the last look
            alerts += self._close(conn, version, scope, start, now)
            self._checked[(version, scope)] = start
        return alerts

    def _accumulate(self, conn, insert, version: str, scope: str, start: int, vec: np.ndarray, now: datetime) -> None:
        c = drift_windows.c
        at = datetime.fromtimestamp(start, timezone.utc)
        key = (c.model_version == version, c.scope == scope, c.window_start == at)
        for _ in range(2):
            row = conn.execute(select(c.sums, c.messages).where(*key).with_for_update()).first()
            if row is not None:
                old = np.frombuffer(row.sums, dtype=np.float64)
                if len(old) != len(vec):
                    raise RuntimeError(f"drift window {version} {scope} {at}: stored vector has {len(old)} values, "
                                       f"this batch's {len(vec)} (a model version's heads changed?)")
                conn.execute(drift_windows.update().where(*key).values(
                    sums=(old + vec).tobytes(), messages=row.messages + int(vec[0]), updated_at=now))
                return
            added = conn.execute(insert(drift_windows).on_conflict_do_nothing().values(
                model_version=version, scope=scope, window_start=at, window_seconds=self.window_seconds,
                messages=int(vec[0]), sums=vec.tobytes(), updated_at=now))
            if added.rowcount:
                return
        raise RuntimeError(f"drift window {version} {scope} {at}: neither inserted nor found")

    def _close(self, conn, version: str, scope: str, newest: int, now: datetime) -> list[AlertCandidate]:
        """Judge the windows of (version, scope) before `newest` not judged yet."""
        c = drift_windows.c
        rows = conn.execute(select(c.window_start, c.window_seconds, c.sums).where(
            c.model_version == version, c.scope == scope, c.status.is_(None),
            c.window_start < datetime.fromtimestamp(newest, timezone.utc)).order_by(c.window_start)
            .with_for_update()).all()
        alerts = []
        reference = self.references.get(version) if rows else None
        for row in rows:
            sums = np.frombuffer(row.sums, dtype=np.float64)
            verdict = judge(reference, sums, self.min_messages)
            start = utc(row.window_start)
            conn.execute(drift_windows.update().where(
                c.model_version == version, c.scope == scope, c.window_start == row.window_start)
                .values(status=verdict["status"], summary=verdict["summary"], verdict=stored_verdict(verdict),
                        judged_at=now))
            self.latest[(version, scope)] = (start, verdict)
            if verdict["status"] == "drift":
                alerts.append(drift_alert(version, scope, start, row.window_seconds, verdict))
            log.info("drift window %s %s %s: %s", version, scope, start.isoformat(), verdict["summary"])
        return alerts

    def forget(self) -> None:
        """After a rolled-back transaction: look again for windows to judge at the next batch."""
        self._checked.clear()

    def judge_open(self, conn, version: str, scope: str = ALL) -> list[tuple[datetime, dict]]:
        """Verdicts of (version, scope)'s windows as they stand, the open one included (for a look, not stored)."""
        c = drift_windows.c
        reference = self.references.get(version)
        return [(utc(r.window_start), judge(reference, np.frombuffer(r.sums, dtype=np.float64), self.min_messages))
                for r in conn.execute(select(c.window_start, c.sums).where(
                    c.model_version == version, c.scope == scope).order_by(c.window_start))]


def stored_verdict(verdict: dict) -> dict:
    """The verdict as stored: each quantity without its bins (`streamsense drift explain` recomputes them)."""
    return {**verdict, "quantities": [{k: v for k, v in q.items() if k != "bins"} for q in verdict["quantities"]]}


def drift_alert(version: str, scope: str, start: datetime, seconds: int, verdict: dict) -> AlertCandidate:
    """The alert of a drifted window: one id per (model version, scope, window): a replay proposes it again in vain."""
    key = f"{version}:{scope}"
    end = start + timedelta(seconds=seconds)
    moved = [q for q in verdict["quantities"] if q["level"] != "stable"][:EVIDENCE_QUANTITIES]
    evidence = [{k: q[k] for k in ("name", "method", "value", "level", "thresholds", "moved")} for q in moved]
    where = "" if scope == ALL else f" ({scope})"
    return {"id": alert_id(RULE, key, start.isoformat()), "rule": RULE,
            "severity": "high" if verdict.get("level") == MAJOR else "medium", "key": key,
            "window_start": start, "window_end": end, "summary": f"drift in {version}{where}: {verdict['summary']}",
            "evidence": evidence, "model_version": version, "created_at": end}


def inserted_mask(conn, rows: list[dict], now: datetime) -> np.ndarray:
    """Which of a batch's rows this transaction inserted (stored_at is this transaction's `now`; a message twice in
    the batch counts once, as the first row wins): for a batch that replays part of one stored before."""
    c = predictions.c
    ids = list({r["message_id"] for r in rows})
    found = set()
    for i in range(0, len(ids), 500):
        found.update(tuple(r) for r in conn.execute(select(c.kind, c.message_id).where(
            c.stored_at == now, c.message_id.in_(ids[i:i + 500]))))
    keep = np.zeros(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        key = (r["kind"], r["message_id"])
        if key in found:
            keep[i] = True
            found.discard(key)
    return keep
