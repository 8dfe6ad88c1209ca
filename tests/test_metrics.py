"""Worker metrics and the /metrics, /health and /live endpoints, over real HTTP and a real broker."""

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.brokers import free_port
from streamsense.streams.kafka import client_options
from streamsense.streams.contracts import Batch, Incoming, Outgoing, Processed, Topics
from streamsense.streams.pipeline import Processor
from streamsense.streams.telemetry import Metrics, consumer_highwater, model_labels
from streamsense.streams.web import Health, WebServer

ROOT = Path(__file__).resolve().parent.parent
TOPICS = Topics(kinds={"posts": "post", "tickets": "ticket"}, predictions="predictions", alerts="alerts",
                dead_letter="dead-letter")
MODEL = {"name": "streamsense-minilm", "version": "3", "device": "cpu", "variant": "int8"}


def _value(metrics: Metrics, sample: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(f"streamsense_{sample}", labels)


def _row(topic: str, produced_at: float | None) -> dict:
    """The fields of a result row that metrics read (the Processor fills all the others too)."""
    return {"source_topic": topic, "produced_at": datetime.fromtimestamp(produced_at, timezone.utc)
            if produced_at else None}


def test_observe_batch_counts_messages_latency_and_lag():
    now = time.time()
    rows = [_row("posts", now - 2.0), _row("posts", now - 1.0), _row("tickets", None)]
    outgoing = [Outgoing("predictions", key, b"{}") for key in (b"p1", b"p2", b"t1")]
    processed = Processed(Batch(rows, [], [], {("posts", 0): 12, ("tickets", 1): 6}), outgoing)
    highwaters = {("posts", 0): 20, ("tickets", 1): 6}
    metrics = Metrics()
    metrics.observe_batch(processed, seconds=0.3, highwater=lambda t, p: highwaters.get((t, p)))

    assert _value(metrics, "messages_in_total", topic="posts") == 2
    assert _value(metrics, "messages_in_total", topic="tickets") == 1
    assert _value(metrics, "messages_out_total", topic="predictions") == 3
    assert _value(metrics, "batch_size_count") == 1 and _value(metrics, "batch_size_sum") == 3
    assert _value(metrics, "batch_seconds_sum") == pytest.approx(0.3)
    # only the two messages with a Kafka timestamp, produced 2 s and 1 s before the commit
    assert _value(metrics, "end_to_end_seconds_count") == 2
    assert 3.0 <= _value(metrics, "end_to_end_seconds_sum") < 4.0
    assert _value(metrics, "end_to_end_seconds_bucket", le="1.0") == 0
    assert _value(metrics, "end_to_end_seconds_bucket", le="2.5") == 2
    assert _value(metrics, "consumer_lag", topic="posts", partition="0") == 8
    assert _value(metrics, "consumer_lag", topic="tickets", partition="1") == 0

    metrics.observe_batch(processed, seconds=0.1)  # no high-water marks known: lag keeps its value
    assert _value(metrics, "messages_in_total", topic="posts") == 4
    assert _value(metrics, "batch_size_count") == 2
    assert _value(metrics, "consumer_lag", topic="posts", partition="0") == 8


def test_a_batch_through_the_real_processor_and_model(classifier):
    lines = (ROOT / "streams" / "samples" / "posts.jsonl").read_bytes().splitlines()[:6]
    sent = time.time() - 1.5
    messages = [Incoming("posts", 0, offset, None, line, sent) for offset, line in enumerate(lines)]
    messages += [Incoming("tickets", 1, 40, b"k", b"not json", sent), Incoming("tickets", 1, 41, None, None, None)]
    metrics = Metrics()
    metrics.instrument(classifier.runtime)
    processed = Processor(classifier, TOPICS, AlertRules.load()).process(messages)
    metrics.observe_batch(processed, seconds=0.05)

    assert _value(metrics, "messages_in_total", topic="posts") == 6
    assert _value(metrics, "messages_in_total", topic="tickets") == 2
    assert _value(metrics, "dead_letters_total", topic="tickets") == 2
    assert _value(metrics, "messages_out_total", topic="predictions") == 6
    assert _value(metrics, "messages_out_total", topic="dead-letter") == 2
    assert _value(metrics, "batch_size_sum") == 8
    assert _value(metrics, "end_to_end_seconds_count") == 6 and _value(metrics, "end_to_end_seconds_sum") >= 6 * 1.5
    assert _value(metrics, "tokenize_seconds_count") >= 1 and _value(metrics, "inference_seconds_count") >= 1
    assert _value(metrics, "consumer_lag", topic="posts", partition="0") is None  # no high-water lookup given


def test_lag_from_a_real_consumer_high_water_mark(broker, unique):
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers)
    topic, metrics = f"lag-{unique}", Metrics()

    async def consume_two_of_five() -> int | None:
        producer = AIOKafkaProducer(**client_options(settings))
        await producer.start()
        for _ in range(5):
            await producer.send_and_wait(topic, b"x", partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer(enable_auto_commit=False, max_poll_records=2, **client_options(settings))
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_beginning()
            records = (await consumer.getmany(timeout_ms=5000))[TopicPartition(topic, 0)]
            batch = Batch([_row(topic, r.timestamp / 1000) for r in records], [], [], {(topic, 0): records[-1].offset + 1})
            metrics.observe_batch(Processed(batch, []), 0.1, highwater=consumer_highwater(consumer))
            return consumer_highwater(consumer)(topic, 1)  # not assigned to this consumer
        finally:
            await consumer.stop()

    assert asyncio.run(consume_two_of_five()) is None
    assert _value(metrics, "batch_size_sum") == 2
    assert _value(metrics, "consumer_lag", topic=topic, partition="0") == 3


def test_high_water_marks_after_multi_record_batches(broker, unique):
    """Two produce requests of 5 and 3 records. The fetch high-water mark, which the lag metric uses, is 8 on both
    brokers. The "latest" offset from ListOffsets (`end_offsets`, `seek_to_end`, auto_offset_reset=latest) is 8
    on Apache Kafka and 6 on Tansu (the last batch's first offset + 1): code and tests here never rely on it.
    If the Tansu branch starts failing, its bug is fixed."""
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers)
    topic = f"hw-{unique}"
    tp = TopicPartition(topic, 0)

    async def offsets() -> tuple[int, int | None, int]:
        producer = AIOKafkaProducer(**client_options(settings))
        await producer.start()
        try:
            for size in (5, 3):
                batch = producer.create_batch()
                for i in range(size):
                    batch.append(key=None, value=f"m{i}".encode(), timestamp=None)
                batch.close()
                await (await producer.send_batch(batch, topic, partition=0))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning()
            read = []
            while len(read) < 8:
                read += (await consumer.getmany(timeout_ms=5000)).get(tp, [])
            return len(read), consumer_highwater(consumer)(topic, 0), (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()

    read, highwater, latest = asyncio.run(offsets())
    assert (read, highwater) == (8, 8)
    assert latest == (8 if broker.name == "kafka" else 6)


def test_published_alerts_are_counted_by_rule_and_severity():
    metrics = Metrics()
    metrics.observe_alerts([{"id": "a", "rule": "risk_level", "severity": "critical"},
                            {"id": "b", "rule": "risk_level", "severity": "critical"},
                            {"id": "c", "rule": "negative_share", "severity": "medium"}])
    assert _value(metrics, "alerts_total", rule="risk_level", severity="critical") == 2
    assert _value(metrics, "alerts_total", rule="negative_share", severity="medium") == 1


def test_instrument_times_tokenize_and_infer_and_keeps_results():
    class Runtime:  # the two ModelRuntime methods the classifier calls
        def tokenize(self, texts):
            time.sleep(0.01)
            return [len(t) for t in texts]

        def infer(self, encoded):
            return {"sentiment": encoded}

    runtime, metrics = Runtime(), Metrics()
    metrics.instrument(runtime)
    assert runtime.infer(runtime.tokenize(["ab", "c"])) == {"sentiment": [2, 1]}
    runtime.tokenize(["d"])
    assert _value(metrics, "tokenize_seconds_count") == 2
    assert _value(metrics, "tokenize_seconds_sum") >= 0.02
    assert _value(metrics, "inference_seconds_count") == 1


def test_model_info_and_registries_are_separate():
    first, second = Metrics(), Metrics()
    first.set_model(model_labels(SimpleNamespace(**MODEL, path="/models/x")))  # a ModelRuntime's attributes
    assert _value(first, "model_info", **MODEL) == 1
    assert _value(second, "model_info", **MODEL) is None
    assert b'streamsense_model_info{device="cpu",name="streamsense-minilm",variant="int8",version="3"} 1.0' \
        in first.render()


def test_health_needs_the_model_and_a_recent_broker_answer():
    now = [100.0]
    health = Health(max_silence=30, clock=lambda: now[0])
    assert health.check()[1]["problems"] == ["model not loaded", "broker not answering"]
    health.model_loaded(MODEL)
    health.broker_answered()
    now[0] += 30
    ready, body = health.check()
    assert ready and body == {"status": "ready", "model": MODEL, "broker_seconds_ago": 30.0, "problems": []}
    now[0] += 0.5
    assert health.check() == (False, {"status": "unavailable", "model": MODEL, "broker_seconds_ago": 30.5,
                                      "problems": ["broker not answering"]})


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def _poll_health(session, url: str, expected, timeout: float = 10.0) -> tuple[int, dict]:
    """GET url until `expected(status, body)` holds (the broker probe runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(url) as response:
            status, body = response.status, await response.json()
        if expected(status, body) or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.1)


def test_endpoints_over_http_with_the_real_broker(broker):
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, web_port=0)
    metrics, health = Metrics(), Health(max_silence=5)
    metrics.observe_batch(Processed(Batch([_row("posts", time.time()), _row("posts", None)], [], [], {}), []), 0.2)

    async def scenario():
        server = WebServer(settings, metrics, health, probe_interval=0.2)
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            async with aiohttp.ClientSession() as session:
                # the broker answers, but no model yet: not ready
                status, body = await _poll_health(session, f"{base}/health",
                                                  lambda status, body: body["broker_seconds_ago"] is not None)
                assert status == 503 and body["status"] == "unavailable" and body["problems"] == ["model not loaded"]
                assert (await _get(session, f"{base}/live"))[0] == 200

                health.model_loaded(MODEL)
                metrics.set_model(MODEL)
                status, body = await _poll_health(session, f"{base}/health", lambda status, body: status == 200)
                assert status == 200 and body["status"] == "ready" and body["model"] == MODEL and body["broker_seconds_ago"] < 5

                status, content_type, text = await _get(session, f"{base}/metrics")
                assert status == 200 and content_type.startswith("text/plain")
                assert 'streamsense_messages_in_total{topic="posts"} 2.0' in text
                assert 'streamsense_model_info{device="cpu"' in text
                assert "streamsense_end_to_end_seconds_bucket" in text
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_health_is_unavailable_while_the_broker_does_not_answer():
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", web_port=0)
    health = Health(max_silence=5)
    health.model_loaded(MODEL)

    async def scenario():
        server = WebServer(settings, Metrics(), health, probe_interval=0.2)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                await asyncio.sleep(0.5)  # a few failed probes
                status, _, text = await _get(session, f"http://127.0.0.1:{server.port}/health")
                assert status == 503 and "broker not answering" in text
        finally:
            await server.stop()

    asyncio.run(scenario())
