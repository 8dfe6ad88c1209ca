"""Drift monitoring in a real worker: broker, worker process, SQL store, the shipped model and its shipped reference."""

import asyncio
import json
import time

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from streamsense.streams.drift.windows import drift_windows
from streamsense.streams.kafka import client_options, ensure_topics
from streamsense.streams.schema import alerts, predictions
from streamsense.streams.store import Store
from tests.helpers import consume_all, settings_for, wait_until, worker

BOT = "Get 10,000 real followers today, limited offer, click the link in our bio now"


def _produce_at(settings, topic: str, values: list[bytes], at: float) -> None:
    """Send with Kafka timestamps from `at` (seconds) on, one millisecond apart: the time drift windows go by."""
    async def run():
        producer = AIOKafkaProducer(**client_options(settings))
        await producer.start()
        try:
            for i, value in enumerate(values):
                await producer.send_and_wait(topic, value, timestamp_ms=int(at * 1000) + i)
        finally:
            await producer.stop()
    ensure_topics(settings)
    asyncio.run(run())


def test_a_worker_keeps_drift_windows_and_alerts_on_a_bot(broker, unique, tmp_path):
    db = f"sqlite:///{tmp_path / 'drift.db'}"
    settings = settings_for(broker.bootstrap_servers, db, unique, drift_window_seconds=60, drift_min_messages=50,
                            drift_by_topic=True, language_models="")
    store = Store(db, settings.app_id)
    store.migrate()
    start = (time.time() - 3600) // 60 * 60  # a window an hour ago, then the next one
    bot = [json.dumps({"id": f"b{i}", "text": BOT}).encode() for i in range(120)]
    later = [json.dumps({"id": f"n{i}", "text": f"lunch was fine today {i}"}).encode() for i in range(10)]
    with worker(settings, tmp_path):
        _produce_at(settings, settings.topic_posts, bot, start)
        wait_until(lambda: store.count(predictions) >= len(bot), 120, what="the first window stored")
        _produce_at(settings, settings.topic_posts, later, start + 60)
        wait_until(lambda: store.count(predictions) >= len(bot) + len(later), 60, what="the second window stored")
        c = drift_windows.c
        with store.engine.connect() as conn:
            rows = conn.execute(select(c.scope, c.messages, c.status, c.summary, c.model_version)
                                .order_by(c.window_start)).all()
        assert {r.model_version for r in rows} == {"streamsense-minilm:3"}
        first = [r for r in rows if r.scope == "*"]
        assert [r.messages for r in first] == [len(bot), len(later)]
        assert [r.messages for r in rows if r.scope == f"topic:{settings.topic_posts}"] == [len(bot), len(later)]
        assert first[0].status == "drift" and first[1].status is None  # judged when the next one began
        wait_until(lambda: not store.unpublished_alerts(), 30, what="alerts published")
        published = [json.loads(m.value) for m in consume_all(settings, settings.topic_alerts, store.count(alerts))]
        drift = [a for a in published if a["rule"] == "drift"]
        assert {a["key"] for a in drift} == {"streamsense-minilm:3:*",
                                             f"streamsense-minilm:3:topic:{settings.topic_posts}"}
        assert all(a["summary"].startswith("drift in streamsense-minilm:3") and a["evidence"] for a in drift)
