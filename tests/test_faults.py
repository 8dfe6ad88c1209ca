"""Fault tests on real parts: each produces messages with unique ids, breaks something, and counts the results.

Every test ends with: every id stored exactly once (0 missing, 0 duplicated) and no alert raised twice.
"""

import asyncio
import json
import re
import os
import signal
import sqlite3
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from streamsense.brokers import free_port
from streamsense.streams.kafka import producer_idempotence
from streamsense.streams.kafka import client_options
from streamsense.streams.schema import alerts, predictions
from streamsense.streams.store import Store
from tests.helpers import as_lines, produce, settings_for, wait_until, worker
from tests.proxy import OutageProxy

pytestmark = pytest.mark.faults


def _posts(prefix: str, n: int) -> list[dict]:
    texts = ["Loving the new release!", "Support never answered me, terrible.", "Meeting moved to 3pm.",
             "I'm cancelling my subscription, this is a scam."]
    return [{"id": f"{prefix}-{i}", "text": f"{texts[i % 4]} ({i})", "channel": "acme"} for i in range(n)]


def _stream(bootstrap: str, tmp_path, unique: str, name: str, n: int, **overrides):
    """Settings on their own topics and SQLite file, `n` unique posts, and the migrated store."""
    settings = settings_for(bootstrap, f"sqlite:///{tmp_path / f'{name}.db'}", unique, **overrides)
    store = Store(settings.database_url, settings.app_id)
    store.migrate()
    return settings, _posts(name, n), store


def stored_ids(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(predictions.c.message_id))]


def assert_exactly_once(store: Store, expected: list[dict], partitions: int | None = None) -> None:
    ids = stored_ids(store)
    missing = {p["id"] for p in expected} - set(ids)
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
    assert len(ids) == len(set(ids)) == len(expected), "duplicated or unexpected rows"
    with store.engine.connect() as conn:
        raised = conn.execute(select(alerts.c.rule, alerts.c.key, alerts.c.window_start)).all()
    assert len(raised) == len(set(raised)), "an alert was raised twice for one (rule, key, window)"
    if partitions is not None:  # every partition of the input topic was consumed
        with store.engine.connect() as conn:
            used = conn.execute(select(func.count(func.distinct(predictions.c.source_partition)))).scalar()
        assert used == partitions


def wait_stored(store: Store, at_least: int, timeout: float = 120) -> None:
    wait_until(lambda: store.count(predictions) >= at_least, timeout, what=f"{at_least} rows stored")


def test_worker_sigkill_mid_stream_then_restart(broker, tmp_path, unique):
    settings, posts, store = _stream(broker.bootstrap_servers, tmp_path, unique, "kill", 800)
    with worker(settings, tmp_path, "first") as first:
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_stored(store, 150)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert store.count(predictions) < len(posts), "killed too late to test anything"
    with worker(settings, tmp_path, "second"):
        wait_stored(store, len(posts))
        time.sleep(2)  # anything replayed after the last row would show up as a duplicate now
    assert_exactly_once(store, posts)


def _kafka_committed(settings, topic: str, partitions) -> dict[int, int | None]:
    """The group's committed offsets in Kafka (what a consumer without the SQL offsets would resume from)."""
    async def run():
        consumer = AIOKafkaConsumer(group_id=settings.app_id, enable_auto_commit=False, **client_options(settings))
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_graceful_restarts_lose_nothing(broker, tmp_path, unique, artifacts):
    """Four runs over one stream, each ended by a graceful stop, lose nothing and repeat nothing.

    After each stop the group's offsets in Kafka are compared with those stored in SQL with the results. Faust's
    per-event agents committed offsets past messages they had not finished (up to 56 of 300 per stop on the
    embedded broker); the batch consumer commits to Kafka only what SQL holds, so Kafka is never ahead.
    """
    settings, posts, store = _stream(broker.bootstrap_servers, tmp_path, unique, "restart", 900)
    produce(settings, settings.topic_posts, as_lines(posts))
    ahead = []
    for round_, target in enumerate((150, 400, 650)):
        with worker(settings, tmp_path, f"run{round_}"):
            wait_stored(store, target)
        stored = {p: o for (_, p), o in store.next_offsets([settings.topic_posts]).items()}
        committed = _kafka_committed(settings, settings.topic_posts, stored)
        ahead.append(sum(max(0, (committed.get(p) or 0) - o) for p, o in stored.items()))
    (artifacts / f"kafka_offsets_ahead_{broker.name}.json").write_text(json.dumps(
        {"broker": broker.name, "messages_committed_in_kafka_but_unstored_per_stop": ahead}))
    assert ahead == [0, 0, 0]
    with worker(settings, tmp_path, "last"):
        wait_stored(store, len(posts))
        time.sleep(2)
    assert_exactly_once(store, posts)


def test_broker_paused_20s(make_broker, tmp_path, unique):
    with make_broker() as own:
        settings = settings_for(own.bootstrap_servers, f"sqlite:///{tmp_path / 'pause.db'}", unique)
        posts = _posts("pause", 600)
        store = Store(settings.database_url, settings.app_id)
        store.migrate()
        with worker(settings, tmp_path):
            produce(settings, settings.topic_posts, as_lines(posts))
            wait_stored(store, 100)
            os.kill(own.process.pid, signal.SIGSTOP)
            time.sleep(20)
            os.kill(own.process.pid, signal.SIGCONT)
            wait_stored(store, len(posts), timeout=180)
            time.sleep(2)
        assert_exactly_once(store, posts)


def test_worker_started_before_broker(make_broker, tmp_path, unique):
    port = free_port()
    settings = settings_for(f"127.0.0.1:{port}", f"sqlite:///{tmp_path / 'early.db'}", unique)
    posts = _posts("early", 200)
    store = Store(settings.database_url, settings.app_id)
    store.migrate()
    with worker(settings, tmp_path) as proc:
        time.sleep(8)
        assert proc.poll() is None, "worker gave up while the broker was away"
        with make_broker(port):
            produce(settings, settings.topic_posts, as_lines(posts))
            wait_stored(store, len(posts), timeout=180)
    assert_exactly_once(store, posts)


def _offsets_total(store: Store, settings) -> int:
    return sum(store.next_offsets([settings.topic_posts]).values())


def test_postgres_outage_30s(broker, tmp_path, unique, postgres_url):
    database_url = postgres_url
    proxy = OutageProxy("127.0.0.1", 5432)
    proxied = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = settings_for(broker.bootstrap_servers, proxied, unique)
    posts = _posts("pg", 600)
    direct = Store(database_url, settings.app_id)
    direct.migrate()
    try:
        with worker(settings, tmp_path):
            produce(settings, settings.topic_posts, as_lines(posts))
            wait_stored(direct, 100)
            proxy.cut()
            during = _offsets_total(direct, settings), direct.count(predictions)
            time.sleep(30)
            assert (_offsets_total(direct, settings), direct.count(predictions)) == during, \
                "offsets or rows moved while the database was unreachable"
            proxy.restore()
            wait_stored(direct, len(posts), timeout=180)
            time.sleep(2)
        assert_exactly_once(direct, posts)
    finally:
        proxy.close()
        direct.dispose()


def test_sqlite_locked_30s(broker, tmp_path, unique):
    settings, posts, store = _stream(broker.bootstrap_servers, tmp_path, unique, "lock", 600)
    db = tmp_path / "lock.db"
    with worker(settings, tmp_path) as proc:
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_stored(store, 100)
        holder = sqlite3.connect(db, timeout=60)
        holder.execute("BEGIN EXCLUSIVE")  # every other reader and writer now waits or fails
        time.sleep(30)
        holder.rollback()
        holder.close()
        assert proc.poll() is None, "worker died while the database was locked"
        wait_stored(store, len(posts), timeout=180)
        time.sleep(2)
    assert_exactly_once(store, posts)


def test_two_workers_one_killed(broker, tmp_path, unique):
    settings, posts, store = _stream(broker.bootstrap_servers, tmp_path, unique, "pair", 1200, topic_partitions=4)
    with worker(settings, tmp_path, "a"), worker(settings, tmp_path, "b") as b:
        time.sleep(12)  # both members join and split the partitions
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_stored(store, 200)
        b.send_signal(signal.SIGKILL)
        b.wait()
        wait_stored(store, len(posts), timeout=180)
        time.sleep(2)
    assert_exactly_once(store, posts, partitions=4)


def test_broker_killed_and_restarted_on_its_data(make_broker, tmp_path, unique):
    """Apache Kafka keeps its log on disk: SIGKILL the broker mid-stream, start it again on the same data, and
    the running worker carries on (Tansu keeps everything in memory, so a restart there is a new empty broker)."""
    own = make_broker()
    if not own.keeps_data:
        pytest.skip(f"{own.name} keeps no data across a restart")
    with own:
        settings, posts, store = _stream(own.bootstrap_servers, tmp_path, unique, "brestart", 900)
        with worker(settings, tmp_path) as proc:
            produce(settings, settings.topic_posts, as_lines(posts))
            wait_stored(store, 100)
            os.kill(own.process.pid, signal.SIGKILL)
            own.process.wait()
            time.sleep(5)
            own.start()
            wait_stored(store, len(posts), timeout=180)
            time.sleep(2)
            assert proc.poll() is None, "worker died while the broker was restarting"
        assert_exactly_once(store, posts)


def test_third_worker_joins_mid_stream(broker, tmp_path, unique):
    """A rebalance while batches are in flight: partitions move to a new member, nothing is lost or doubled."""
    settings, posts, store = _stream(broker.bootstrap_servers, tmp_path, unique, "join", 1800, topic_partitions=6)
    with worker(settings, tmp_path, "a"), worker(settings, tmp_path, "b"):
        time.sleep(10)  # both members join and split the partitions
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_stored(store, 300)
        with worker(settings, tmp_path, "c"):
            wait_stored(store, len(posts), timeout=240)
            time.sleep(2)
    assert_exactly_once(store, posts, partitions=6)


def test_producer_idempotence_where_the_broker_grants_producer_ids(broker, tmp_path, unique):
    """`auto` turns the idempotent producer on for Apache Kafka and off for Tansu, whose InitProducerId fails;
    the worker says which in its start-up line, then which partitions it got and, every second here, its progress:
    in Faust's text format on one broker, as JSON lines on the other (both formats, no extra run)."""
    log_format = "json" if broker.name == "kafka" else "text"
    settings = settings_for(broker.bootstrap_servers, f"sqlite:///{tmp_path / 'idem.db'}", unique) \
        .model_copy(update={"progress_interval": 1.0, "log_format": log_format})
    assert producer_idempotence(settings) is broker.idempotent_producer
    assert producer_idempotence(settings.model_copy(update={"kafka_idempotence": "off"})) is False
    store = Store(settings.database_url, settings.app_id)
    store.migrate()
    posts = _posts("idem", 50)
    with worker(settings, tmp_path, "idem", loglevel="info"):
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_stored(store, len(posts))
        time.sleep(2.5)  # two progress lines after the last batch
    log = (tmp_path / "idem.log").read_text()
    if log_format == "json":  # every line the project logs is a JSON object; check the messages themselves
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        log = "\n".join(r["message"] for r in records)
    assert f"producer idempotence {'on' if broker.idempotent_producer else 'off'}" in log
    assert f"language models: zh streamsense-bge-zh:1 (model.int8.onnx); database {settings.database_url};" in log, log
    assert "+---" not in log, log  # no ASCII tables (Faust draws them for aiokafka's topic and partition sets)
    assert re.search(rf"partitions assigned: {settings.topic_posts}\[[0-9,]+\]", log), log
    assert f"{len(posts)} since start; lag {settings.topic_posts}=0" in log, log
    assert_exactly_once(store, posts)
