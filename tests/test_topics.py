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
