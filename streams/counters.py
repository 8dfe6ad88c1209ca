"""Dashboard counters: messages per (minute, kind, group, language, sentiment, risk level), by event time (also per
hour) and by stored time, added in the batch's own SQL transaction from the rows it inserted (so once per message), and
rebuilt from the stored predictions by migration 0008. The dashboard's panels read these, not the raw rows."""

from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Column, DateTime, Float, Integer, String, Table

from streamsense.streams.bulk import add
from streamsense.streams.schema import metadata

# What a counter row's bucket is: a minute of the messages' event time, an hour of it (so that a range of days reads
# hours, not minutes), or a minute of when they were stored
EVENT, HOUR, STORED = "e", "h", "s"
KEY = ("basis", "bucket_start", "kind", "grp", "lang", "sentiment", "risk_level")

dashboard_counts = Table(
    "dashboard_counts", metadata,
    Column("basis", String(1), primary_key=True),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),  # UTC minute, as migration 0002's buckets
    Column("kind", String(16), primary_key=True),
    Column("grp", String(200), primary_key=True),  # '' for a NULL group
    Column("lang", String(16), primary_key=True),  # '' for NULL (stored before language identification)
    Column("sentiment", String(16), primary_key=True),
    Column("risk_level", String(16), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("supported", Integer, nullable=False),  # of them, in a language the model supports
    Column("risk_score_sum", Float, nullable=False),
)


def _minute(at: datetime) -> datetime:
    """The minute `at` falls in: in UTC when aware (PostgreSQL); a naive time (SQLite) is the wall time the store
    holds, which migration 0002's strftime buckets too."""
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc)
    return at.replace(second=0, microsecond=0)


def count(conn, insert, added: Iterable[tuple], stored_at: datetime) -> None:
    """Add the predictions a batch inserted ((kind, grp, sentiment, event_at, lang, risk_level, risk_score,
    supported) each, as the store read them back) to the counters, in one upsert in key order (`add`).

    Per batch with numpy: each message gets the index of its (event minute, kind, grp, lang, sentiment, level), and
    the hour's and stored minute's counters are looked up once per such key; `np.bincount` then adds each counter's
    messages in the batch's order, one after the other from 0.0, so every sum is the float that adding them one by
    one gives (as this did before, message by message)."""
    added = list(added)
    if not added:
        return
    kinds, grps, sentiments, events, langs, levels, scores, supported = zip(*added)
    minute_of = {at: _minute(at) for at in set(events)}
    index: dict[tuple, int] = {}
    rows = np.fromiter((index.setdefault(key, len(index)) for key in zip(
        map(minute_of.__getitem__, events), kinds, [g or "" for g in grps], [g or "" for g in langs], sentiments,
        levels)), dtype=np.intp, count=len(added))
    scores = np.fromiter(scores, dtype=np.float64, count=len(added))
    supported = np.fromiter(map(bool, supported), dtype=np.float64, count=len(added))
    stored = _minute(stored_at)
    counts: dict[tuple, tuple] = {}
    for basis, key_of in ((EVENT, lambda minute, rest: (minute, *rest)),
                          (HOUR, lambda minute, rest: (minute.replace(minute=0), *rest)),
                          (STORED, lambda minute, rest: (stored, *rest))):
        keys: dict[tuple, int] = {}
        mapped = np.fromiter((keys.setdefault(key_of(key[0], key[1:]), len(keys)) for key in index),
                             dtype=np.intp, count=len(index))[rows]
        n = np.bincount(mapped, minlength=len(keys)).tolist()
        s = np.bincount(mapped, weights=supported, minlength=len(keys)).astype(np.int64).tolist()
        r = np.bincount(mapped, weights=scores, minlength=len(keys)).tolist()
        for key, i in keys.items():
            counts[(basis, *key)] = (n[i], s[i], r[i])
    add(conn, dashboard_counts, KEY, [(*key, *sums) for key, sums in sorted(counts.items())])


def present(conn) -> bool:
    """Whether the schema has the counters (migration 0008)."""
    return conn.dialect.has_table(conn, "dashboard_counts")


def rebuild_sql(dialect: str, bucket) -> list[str]:
    """SQL that replaces every counter with the aggregate of the stored predictions; `bucket(unit, expr, dialect)`
    is migration 0002's bucket expression, so the minutes are the views' minutes."""
    supported = "SUM(CASE WHEN supported THEN 1 ELSE 0 END)" if dialect == "postgresql" else \
        "SUM(CASE WHEN supported = 1 THEN 1 ELSE 0 END)"
    out = ["DELETE FROM dashboard_counts"]
    for basis, unit, column in ((EVENT, "minute", "event_at"), (HOUR, "hour", "event_at"),
                                (STORED, "minute", "stored_at")):
        minute = bucket(unit, column, dialect)
        out.append(f"""
            INSERT INTO dashboard_counts (basis, bucket_start, kind, grp, lang, sentiment, risk_level, n, supported,
                                          risk_score_sum)
            SELECT '{basis}', {minute}, kind, COALESCE(grp, ''), COALESCE(lang, ''), sentiment, risk_level, COUNT(*),
                   {supported}, SUM(risk_score)
            FROM predictions
            GROUP BY {minute}, kind, COALESCE(grp, ''), COALESCE(lang, ''), sentiment, risk_level""")
    return out


def rebuild(conn) -> None:
    """Replace every counter with the aggregate of the stored predictions (what migration 0008 does)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("migrations") / "versions" / "0002_bi.py"
    spec = importlib.util.spec_from_file_location("streamsense_migration_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for sql in rebuild_sql(conn.dialect.name, module.bucket):
        conn.exec_driver_sql(sql)
