"""SQL store: results, alerts, dead letters, processed offsets and alert window counters, written in one transaction
per batch (tables: streams/schema.py; which alerts to keep and the window counters: streams/alerting/gate.py).

The predictions, most of a batch's rows, take each database's fast path: on PostgreSQL a binary COPY into a
temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING; on SQLite one DBAPI executemany of
INSERT … ON CONFLICT DO NOTHING. Both store the values the SQLAlchemy types would (`_PredictionRows`)."""

from collections.abc import Iterable
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, Table, create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine

from streamsense.streams.alerting.gate import AlertGate, count_windows, register_window_lengths
from streamsense.streams.contracts import Batch
from streamsense.streams.bulk import insert_new
from streamsense.streams.counters import count as count_dashboard
from streamsense.streams.counters import present as counters_present
from streamsense.streams.drift.windows import inserted_mask
from streamsense.streams.feedback.schema import shadow_predictions
from streamsense.streams.schema import alerts, consumer_offsets, dead_letters, predictions

#: The temporary table the PostgreSQL fast path copies a batch's predictions into: one per session, emptied at
#: each commit (ON COMMIT DELETE ROWS truncates in place: no catalog rows written per batch, unlike ON COMMIT DROP).
BATCH_TABLE = "streamsense_batch_rows"


class Store:
    def __init__(self, url: str, group_id: str, alert_rules=None, drift=None):
        self.url = url
        self.drift = drift  # streams/drift/windows.py DriftWindows: the batch's drift sums, in its transaction
        self.group_id = group_id
        self.alert_rules = alert_rules
        self.alert_gate = AlertGate(alert_rules) if alert_rules is not None else None
        self._lengths_registered = False
        self._counters = False  # whether dashboard_counts exists (a schema before migration 0008 has none)
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **_engine_options(url))
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_wal)
        self._rows = _PredictionRows(self.engine.dialect)

    def migrate(self) -> None:
        migrate(self.url)

    def _insert(self, table: Table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise RuntimeError(f"unsupported database dialect {self.dialect}: use SQLite or PostgreSQL")
        return insert(table)

    def write(self, batch: Batch) -> int:
        """One transaction: rows are inserted if absent (first wins), offsets only move forward. Returns how many
        alerts it stored (never fewer: with no alert rules, or one a concurrent writer stored first, it may say
        more), so the outbox knows when it has nothing new to publish."""
        now = datetime.now(timezone.utc)
        if self.alert_gate and not self._lengths_registered:
            register_window_lengths(self.engine, self.dialect, self._insert, self.alert_gate.window_lengths)
            self._lengths_registered = True
        session = {}
        try:
            with self.engine.begin() as conn:
                session = conn.connection.info
                stored_alerts = self._write(conn, batch, now)
        except BaseException:
            session.pop(BATCH_TABLE, None)  # if this transaction made the temporary table, it went with it
            if self.drift is not None:
                self.drift.forget()  # the windows it judged were not judged after all
            raise
        return stored_alerts

    def _write(self, conn: Connection, batch: Batch, now: datetime) -> int:
        added = []
        if batch.predictions:
            added = self._rows.insert(conn, batch.predictions, now)
            count_windows(conn, self._insert, (a[:4] for a in added))
            if not self._counters:  # before migration 0008, whose backfill counts these rows: not here
                self._counters = counters_present(conn)
            if self._counters:
                count_dashboard(conn, self._insert, added, now)
        candidates = batch.alerts
        if batch.drift and self.drift is not None and added:
            keep = None if len(added) == len(batch.predictions) else inserted_mask(conn, batch.predictions, now)
            drifted = self.drift.add(conn, self._insert, batch, keep, now)
            candidates = candidates + drifted if drifted else candidates
        if self.alert_gate:
            rows = batch.predictions
            events = [(r["kind"], r["grp"], event_time(r, now)) for r in rows]
            kept = self.alert_gate.admit(conn, candidates, events, rows[0]["model_version"] if rows else None)
        else:
            kept = candidates
        if kept:
            conn.execute(self._insert(alerts).on_conflict_do_nothing(index_elements=["id"]), kept)
        stored_alerts = len(kept)
        if batch.shadow:  # a shadowed challenger's rows (streams/feedback/shadow.py): first write wins, like results
            insert_new(conn, shadow_predictions, ("kind", "message_id", "model_version"), batch.shadow)
        if batch.dead_letters:
            conn.execute(self._insert(dead_letters).on_conflict_do_nothing(
                index_elements=["source_topic", "source_partition", "source_offset"]), batch.dead_letters)
        if batch.offsets:
            stmt = self._insert(consumer_offsets)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["group_id", "topic", "partition"],
                    set_={"next_offset": stmt.excluded.next_offset},
                    where=consumer_offsets.c.next_offset < stmt.excluded.next_offset,
                ),
                [{"group_id": self.group_id, "topic": t, "partition": p, "next_offset": o}
                 for (t, p), o in batch.offsets.items()],
            )
        return stored_alerts

    def unpublished_alerts(self, limit: int = 500) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(alerts.select().where(alerts.c.published_at.is_(None))
                                .order_by(alerts.c.created_at).limit(limit))
            return [dict(r._mapping) for r in rows]

    def mark_published(self, ids: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(alerts.update().where(alerts.c.id.in_(ids)).values(published_at=datetime.now(timezone.utc)))

    def next_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset)
                .where(consumer_offsets.c.group_id == self.group_id)
                .where(consumer_offsets.c.topic.in_(list(topics)))
            )
            return {(t, p): o for t, p, o in rows}

    def count(self, table: Table, **where) -> int:
        stmt = select(func.count()).select_from(table)
        for column, value in where.items():
            stmt = stmt.where(table.c[column] == value)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def dispose(self) -> None:
        self.engine.dispose()


def event_time(row: dict, now: datetime) -> datetime:
    """A result's `event_at`: its own created_at, else the Kafka timestamp, else when it is stored (docs/bi.md)."""
    return row["created_at"] or row["produced_at"] or now


class _PredictionRows:
    """Inserts a batch's predictions if absent (first wins, in the batch's order too) and says which it inserted:
    (kind, grp, sentiment, event_at, lang, risk_level, risk_score, supported) each, as the old SQLAlchemy
    executemany … RETURNING read them back.

    The values stored are the ones SQLAlchemy would bind: its own bind processors turn each value into what the
    DBAPI gets (SQLite: datetimes as "YYYY-MM-DD HH:MM:SS.ffffff" wall time, JSON as json.dumps text, booleans as
    0/1; PostgreSQL: JSON wrapped for psycopg), and psycopg dumps those as it dumps bound parameters."""

    def __init__(self, dialect):
        self.dialect = dialect.name
        columns = [c for c in predictions.c if c.name != "pk"]
        assert [c.name for c in columns[-2:]] == ["stored_at", "event_at"]  # set here, not in the row
        self.names = [c.name for c in columns]
        self.given = itemgetter(*self.names[:-2])
        self.created, self.produced = self.names.index("created_at"), self.names.index("produced_at")
        self.processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        self.convert = [(i, p) for i, p in enumerate(self.processors[:-2]) if p is not None]
        self.stamp = self.processors[-1] or _same  # stored_at, event_at
        quote = dialect.identifier_preparer.quote
        listed = ", ".join(quote(n) for n in self.names)
        conflict = "ON CONFLICT (kind, message_id) DO NOTHING"
        if self.dialect == "sqlite":
            self.sql = f"INSERT INTO predictions ({listed}) VALUES ({', '.join('?' * len(self.names))}) {conflict}"
        elif self.dialect == "postgresql":
            typed = ", ".join(f"{quote(c.name)} {c.type.compile(dialect=dialect)}" for c in columns)
            self.create = f"CREATE TEMP TABLE IF NOT EXISTS {BATCH_TABLE} (ord integer NOT NULL, {typed}) " \
                          "ON COMMIT DELETE ROWS"
            self.copy = f"COPY {BATCH_TABLE} (ord, {listed}) FROM STDIN"
            self.copy_types = ["int4"] + [_pg_binary_type(c.type) for c in columns]
            self.sql = (f"INSERT INTO predictions ({listed}) SELECT {listed} FROM {BATCH_TABLE} ORDER BY ord "
                        f"{conflict} RETURNING kind, grp, sentiment, event_at, lang, risk_level, risk_score, "
                        "supported")
        else:
            raise RuntimeError(f"unsupported database dialect {self.dialect}: use SQLite or PostgreSQL")

    def insert(self, conn: Connection, rows: list[dict], now: datetime) -> list[tuple]:
        return (self._sqlite if self.dialect == "sqlite" else self._postgresql)(conn, rows, now)

    def _values(self, rows: list[dict], now: datetime):
        """Each row's column values as the DBAPI gets them, with stored_at and event_at (created_at, else
        produced_at, else now)."""
        convert, stamp, created, produced = self.convert, self.stamp, self.created, self.produced
        stored = stamp(now)
        for row in rows:
            given = self.given(row)
            values = list(given)
            for i, process in convert:
                values[i] = process(values[i])
            values.append(stored)
            values.append(values[created] if given[created] else values[produced] if given[produced] else stored)
            yield values

    def _sqlite(self, conn: Connection, rows: list[dict], now: datetime) -> list[tuple]:
        result = conn.exec_driver_sql(self.sql, [tuple(v) for v in self._values(rows, now)])
        if result.rowcount == len(rows):  # all new: what was stored is what was given (event_at: the wall time
            # the text holds, as SQLAlchemy reads it back)
            return [(r["kind"], r["grp"], r["sentiment"], event_time(r, now).replace(tzinfo=None), r["lang"],
                     r["risk_level"], r["risk_score"], r["supported"]) for r in rows]
        if result.rowcount <= 0:
            return []
        # A replay, or a message twice in the batch: the rows inserted took the rowids just after the largest
        # (SQLite's rowid rule; the write lock keeps other writers out), so they are the last `rowcount` rowids.
        last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
        c = predictions.c
        added = conn.execute(select(c.kind, c.grp, c.sentiment, c.event_at, c.lang, c.risk_level, c.risk_score,
                                    c.supported)
                             .where(c.pk > last - result.rowcount, c.pk <= last).order_by(c.pk)).all()
        if len(added) != result.rowcount:
            raise RuntimeError(f"predictions: {result.rowcount} rows inserted, {len(added)} found by rowid")
        return [tuple(r) for r in added]

    def _postgresql(self, conn: Connection, rows: list[dict], now: datetime) -> list[tuple]:
        info = conn.connection.info  # per DBAPI connection: cleared when SQLAlchemy replaces it
        if not info.get(BATCH_TABLE):
            conn.exec_driver_sql(self.create)
        raw = conn.connection.driver_connection
        values = list(self._values(rows, now))
        # Binary COPY wants aware datetimes; a naive one (which the server reads in the session's time zone) sends
        # the batch as text instead, so the server reads it as it read the bound parameter before.
        binary = all(r["created_at"] is None or r["created_at"].tzinfo is not None for r in rows) and \
            all(r["produced_at"] is None or r["produced_at"].tzinfo is not None for r in rows)
        info[BATCH_TABLE] = True  # the session keeps it once this transaction commits (Store.write forgets it if not)
        with raw.cursor() as cursor:
            with cursor.copy(self.copy + (" (FORMAT BINARY)" if binary else "")) as copy:
                if binary:
                    copy.set_types(self.copy_types)
                for i, v in enumerate(values):
                    v.insert(0, i)
                    copy.write_row(v)
        return [tuple(r) for r in conn.exec_driver_sql(self.sql)]


def _same(value):
    return value


def _pg_binary_type(type_) -> str:
    """The type name psycopg dumps a column's values as in a binary COPY."""
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, Float):
        return "float8"
    if isinstance(type_, BigInteger):
        return "int8"
    if isinstance(type_, Integer):
        return "int4"
    if isinstance(type_, JSON):
        return "json"
    if isinstance(type_, DateTime):
        return "timestamptz" if type_.timezone else "timestamp"
    return "text"


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # wait up to 30 s for a lock, then fail (and the sink retries)
    return {"pool_size": 5, "max_overflow": 5}


def _sqlite_wal(dbapi_connection, _record) -> None:
    """WAL lets readers (queries, the dashboard) run while the worker writes. synchronous=NORMAL syncs the WAL at
    checkpoints instead of at every commit: the database stays consistent, and what a power cut can take back is
    the last committed batches, results and offsets together, which the worker then reads again from Kafka. It is
    the fsync per batch that made small batches slow on SQLite."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
