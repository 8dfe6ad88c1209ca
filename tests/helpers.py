"""Shared helpers for tests that run real worker processes against the real broker."""

import asyncio
import json
import time
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from streamsense.localstack import start_worker, stop_worker
from streamsense.settings import Settings
from streamsense.streams.kafka import client_options, ensure_topics
from streamsense.streams.produce import produce_lines


def settings_for(bootstrap: str, database_url: str, unique: str, **overrides) -> Settings:
    """Settings with an app id and topics of their own (Tansu can keep a departed group leader: docs/reliability.md)."""
    values = dict(
        kafka_bootstrap_servers=bootstrap, database_url=database_url, app_id=f"t-{unique}",
        topic_posts=f"posts-{unique}", topic_tickets=f"tickets-{unique}", topic_predictions=f"predictions-{unique}",
        topic_alerts=f"alerts-{unique}", topic_dead_letter=f"dead-letter-{unique}", topic_partitions=2,
        batch_size=32, batch_max_wait=0.3, kafka_session_timeout=6.0,
    )
    values.update(overrides)
    return Settings(**values)


def produce(settings: Settings, topic: str, values: list[bytes]) -> int:
    """Produce to `topic`, created first with the settings' partition count as the worker would (a topic that a
    producer auto-creates gets the broker's default: 1 partition on a stock Apache Kafka)."""
    ensure_topics(settings)
    return asyncio.run(produce_lines(values, topic, client_options(settings)))


def as_lines(records: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def consume_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Read a topic from the beginning until `expected` messages arrived or the timeout passed."""

    async def run():
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                    group_id=None, **client_options(settings))
        await consumer.start()
        out = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    out.extend(records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


@contextmanager
def worker(settings: Settings, log_dir: Path, name: str = "worker", loglevel: str = "warning"):
    process = start_worker(settings, log_dir / f"{name}.log", loglevel)
    try:
        yield process
    finally:
        stop_worker(process)
