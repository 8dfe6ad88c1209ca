"""The worker creates its topics with the configured partitions (Faust declares only its internal topics, and a
topic a producer auto-creates gets the cluster's default: 1 partition on a stock Apache Kafka)."""

import asyncio

from aiokafka import AIOKafkaConsumer

from streamsense.settings import Settings
from streamsense.streams.kafka import client_options, ensure_topics, worker_topics


def _partitions(settings: Settings, topic: str) -> int:
    async def read() -> int:
        consumer = AIOKafkaConsumer(topic, **client_options(settings))  # subscribed: its metadata is fetched
        await consumer.start()
        try:
            return len(consumer.partitions_for_topic(topic) or ())
        finally:
            await consumer.stop()
    return asyncio.run(read())


def test_worker_topics_are_created_once_with_the_configured_partitions(broker, unique):
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_partitions=3,
                        **{f"topic_{name}": f"{name}-{unique}"
                           for name in ("posts", "tickets", "predictions", "alerts", "dead_letter")})
    assert sorted(ensure_topics(settings)) == sorted(worker_topics(settings))
    assert {t: _partitions(settings, t) for t in worker_topics(settings)} == {t: 3 for t in worker_topics(settings)}
    assert ensure_topics(settings) == []  # all there now: nothing created, nothing raised


def test_the_sink_produces_record_batches_where_send_would(broker, unique):
    """TopicSink appends a batch's messages to one record batch per partition (send_batch): every message arrives
    once, on the partition Kafka's default partitioner (murmur2 of the key) gives it, with its headers and in
    order per key; a message larger than a record batch goes on its own."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    from streamsense.streams.app import PRODUCER_BATCH_BYTES
    from streamsense.streams.contracts import Outgoing
    from streamsense.streams.sinks import TopicSink

    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_partitions=4,
                        topic_predictions=f"sink-{unique}", topic_posts=f"p-{unique}", topic_tickets=f"t-{unique}",
                        topic_alerts=f"a-{unique}", topic_dead_letter=f"d-{unique}")
    ensure_topics(settings)
    topic = settings.topic_predictions
    messages = [Outgoing(topic, f"id-{i % 50}".encode(), f'{{"n": {i}}}'.encode(), [("n", str(i).encode())])
                for i in range(600)]
    messages.append(Outgoing(topic, b"big", b"x" * (PRODUCER_BATCH_BYTES + 1000), []))

    async def run() -> list:
        producer = AIOKafkaProducer(acks="all", max_batch_size=PRODUCER_BATCH_BYTES, max_request_size=4 * 1024 * 1024,
                                    **client_options(settings))
        await producer.start()
        try:
            await TopicSink(producer).publish(messages)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", fetch_max_bytes=8 * 1024 * 1024,
                                    max_partition_fetch_bytes=4 * 1024 * 1024, **client_options(settings))
        await consumer.start()
        got = []
        try:
            while len(got) < len(messages):
                batch = await consumer.getmany(timeout_ms=10_000)
                assert batch, f"only {len(got)} of {len(messages)} arrived"
                got += [record for records in batch.values() for record in records]
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(run())
    assert len(got) == len(messages)
    for record in got:
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 4
    small = [r for r in got if r.key != b"big"]
    assert sorted(int(dict(r.headers)["n"]) for r in small) == list(range(600))
    for key in {r.key for r in small}:
        ns = [int(dict(r.headers)["n"]) for r in sorted((r for r in small if r.key == key), key=lambda r: r.offset)]
        assert ns == sorted(ns)
    assert [len(r.value) for r in got if r.key == b"big"] == [PRODUCER_BATCH_BYTES + 1000]
