"""SQL store: results, alerts, dead letters, processed offsets and alert window counters, written in one transaction
per batch (tables: streams/schema.py; which alerts to keep and the window counters: streams/alerting/gate.py)."""

from datetime import datetime, timezone
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Table, create_engine, event, func, select
from sqlalchemy.engine import Engine

from streamsense.streams.alerting.gate import AlertGate, count_windows, register_window_lengths
from streamsense.streams.contracts import Batch
from streamsense.streams.schema import alerts, consumer_offsets, dead_letters, predictions

class Store:
    def __init__(self, url: str, group_id: str, alert_rules=None):
        self.url = url
        self.group_id = group_id
        self.alert_rules = alert_rules
        self.alert_gate = AlertGate(alert_rules) if alert_rules is not None else None
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
        if self.alert_gate and not self._lengths_registered:
            register_window_lengths(self.engine, self.dialect, self._insert, self.alert_gate.window_lengths)
            self._lengths_registered = True
        with self.engine.begin() as conn:
            if rows:
                added = conn.execute(
                    self._insert(predictions).on_conflict_do_nothing(index_elements=["kind", "message_id"])
                    .returning(predictions.c.kind, predictions.c.grp, predictions.c.sentiment, predictions.c.event_at),
                    rows).all()
                count_windows(conn, self._insert, added)
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
