"""SQL store: results, alerts, dead letters, processed offsets and alert window counters, written in one transaction
per batch."""

from datetime import datetime, timezone
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Float, Integer, LargeBinary, MetaData, String, Table, Text,
    UniqueConstraint, case, cast, create_engine, event, func, literal, select, text,
)
from sqlalchemy.engine import Engine

from streamsense.streams.alerting.rules import window_index
from streamsense.streams.contracts import Batch

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("grp", String(200)),  # channel/brand for posts, product for tickets
    Column("author", String(200)),  # author for posts, customer_id for tickets
    Column("priority", String(16)),
    Column("text", Text),  # full, redacted or empty, per STREAMSENSE_STORE_TEXT
    Column("text_sha256", String(64), nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("sentiment", String(16), nullable=False),
    Column("p_negative", Float, nullable=False),
    Column("p_neutral", Float, nullable=False),
    Column("p_positive", Float, nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("risk_score", Float, nullable=False),
    Column("risk_labels", JSON, nullable=False),
    Column("risk_signals", JSON, nullable=False),
    Column("risk_explanation", Text, nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("source_topic", String(255), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True)),  # from the message
    Column("produced_at", DateTime(timezone=True)),  # Kafka timestamp
    Column("stored_at", DateTime(timezone=True), nullable=False),  # set at write time (UTC)
    Column("event_at", DateTime(timezone=True), nullable=False),  # created_at, else produced_at, else stored_at
    UniqueConstraint("kind", "message_id", name="uq_predictions_kind_message"),
)

alerts = Table(
    "alerts", metadata,
    Column("id", String(64), primary_key=True),  # deterministic: a replay cannot raise it twice
    Column("rule", String(100), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("key", String(300), nullable=False),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("summary", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("model_version", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),  # outbox: set once the alerts topic acknowledged it
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("source_topic", String(255), primary_key=True),
    Column("source_partition", Integer, primary_key=True),
    Column("source_offset", BigInteger, primary_key=True),
    Column("error", Text, nullable=False),
    Column("payload", LargeBinary),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

consumer_offsets = Table(
    "consumer_offsets", metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Messages and negative ones per (window length, kind, group, window) for the windowed alert rules, counted once per
# stored prediction; only the lengths in alert_window_lengths are counted.
alert_windows = Table(
    "alert_windows", metadata,
    Column("window_seconds", Integer, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("grp", String(200), primary_key=True),
    Column("window_index", BigInteger, primary_key=True),  # whole seconds since the epoch // window_seconds
    Column("messages", Integer, nullable=False),
    Column("negatives", Integer, nullable=False),
)

alert_window_lengths = Table(
    "alert_window_lengths", metadata,
    Column("window_seconds", Integer, primary_key=True),
)


def _window_index_sql(dialect: str, column, seconds: int):
    """window_index() in SQL."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer) // seconds
    return cast(func.floor(func.extract("epoch", column) / seconds), BigInteger)


class Store:
    def __init__(self, url: str, group_id: str, alert_rules=None):
        self.url = url
        self.group_id = group_id
        self.alert_rules = alert_rules
        if alert_rules is not None:
            from streamsense.streams.alerting.gate import AlertGate  # the gate reads this module's tables

            self.alert_gate = AlertGate(alert_rules)
        else:
            self.alert_gate = None
        self._lengths_registered = False
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **_engine_options(url))
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_wal)

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

    def write(self, batch: Batch) -> None:
        """One transaction: rows are inserted if absent (first wins), offsets only move forward."""
        now = datetime.now(timezone.utc)
        rows = [{**row, "stored_at": now, "event_at": row["created_at"] or row["produced_at"] or now}
                for row in batch.predictions]
        if self.alert_rules and not self._lengths_registered:
            self._register_window_lengths()
        with self.engine.begin() as conn:
            if rows:
                added = conn.execute(
                    self._insert(predictions).on_conflict_do_nothing(index_elements=["kind", "message_id"])
                    .returning(predictions.c.kind, predictions.c.grp, predictions.c.sentiment, predictions.c.event_at),
                    rows).all()
                self._count_windows(conn, added)
            kept = self.alert_gate.admit(conn, batch.alerts, rows) if self.alert_gate else batch.alerts
            for alert in kept:  # inserted one by one: the gate checks the next against those inserted
                conn.execute(self._insert(alerts).on_conflict_do_nothing(index_elements=["id"]), alert)
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

    def _count_windows(self, conn, added) -> None:
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
            stmt = self._insert(alert_windows)
            conn.execute(  # in key order, so concurrent batches lock shared counter rows in the same order
                stmt.on_conflict_do_update(
                    index_elements=["window_seconds", "kind", "grp", "window_index"],
                    set_={"messages": alert_windows.c.messages + stmt.excluded.messages,
                          "negatives": alert_windows.c.negatives + stmt.excluded.negatives}),
                [{"window_seconds": s, "kind": k, "grp": g, "window_index": i, "messages": n, "negatives": neg}
                 for (s, k, g, i), (n, neg) in sorted(counts.items())])

    def _register_window_lengths(self) -> None:
        """Start counting the window lengths of this store's rules: a length not counted yet gets its counters
        rebuilt from the stored predictions (replacing any left from before). The lock (PostgreSQL; on SQLite, the
        write lock the first insert takes) waits for batches in flight and holds off new ones, so each stored
        prediction is counted once, by the rebuild or by its batch."""
        lengths = sorted(self.alert_rules.window_lengths)
        if lengths:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("LOCK TABLE alert_window_lengths IN EXCLUSIVE MODE"))
                new = conn.scalars(self._insert(alert_window_lengths).on_conflict_do_nothing()
                                   .returning(alert_window_lengths.c.window_seconds),
                                   [{"window_seconds": s} for s in lengths]).all()
                for seconds in new:
                    index = _window_index_sql(self.dialect, predictions.c.event_at, seconds).label("window_index")
                    conn.execute(alert_windows.delete().where(alert_windows.c.window_seconds == seconds))
                    conn.execute(alert_windows.insert().from_select(
                        ["window_seconds", "kind", "grp", "window_index", "messages", "negatives"],
                        select(literal(seconds), predictions.c.kind, predictions.c.grp, index, func.count(),
                               func.sum(case((predictions.c.sentiment == "negative", 1), else_=0)))
                        .where(predictions.c.grp != "")
                        .group_by(predictions.c.kind, predictions.c.grp, index)))
        self._lengths_registered = True

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


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # wait up to 30 s for a lock, then fail (and the sink retries)
    return {"pool_size": 5, "max_overflow": 5}


def _sqlite_wal(dbapi_connection, _record) -> None:
    """WAL lets readers (queries, the dashboard) run while the worker writes."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
