"""The feedback topic's consumer (`streamsense feedback consume`): verdicts that other tools write to
STREAMSENSE_TOPIC_FEEDBACK, stored with the topic's offsets in one SQL transaction; a malformed verdict, or one that
names no stored prediction or alert, goes to the dead letters (table and topic) with the reason.

A service of its own rather than a part of the worker: verdicts are few and never on the stream's hot path, and a
worker restart (a model reload, a deploy) should not stall them. Like the worker, its offsets live in SQL
(`consumer_offsets`, group `<app id>-feedback`): each partition is sought to its stored offset when assigned, so a
crash between the SQL commit and Kafka's offset commit re-reads nothing twice into the table (and a verdict read twice
would count once anyway: the table's key). Dead letters are produced before the SQL transaction commits, as the
worker does: the dead-letter topic is at least once, the table exactly once.

Message value: one JSON object, {"target": "post:123", "head", "label" and/or "verdict", "by", "at"?, "sample"?}
(docs/models.md, "Adapting to your domain").
"""

import asyncio
import json
import logging
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from streamsense.settings import Settings
from streamsense.streams.consumer import incoming
from streamsense.streams.contracts import Batch, DeadLetterRow, Incoming, Outgoing
from streamsense.streams.feedback.verdicts import Outcome, VerdictError, from_dict, resolve, write
from streamsense.streams.kafka import client_options, ensure_topics
from streamsense.streams.retry import retry_forever
from streamsense.streams.sinks import TopicSink
from streamsense.streams.store import Store

log = logging.getLogger(__name__)

REASON = "malformed verdict: "  # the dead-letter reason's start, then what is wrong


def group_id(settings: Settings) -> str:
    return f"{settings.app_id}-feedback"


def parse(messages: list[Incoming]) -> tuple[list, list[tuple[Incoming, str]]]:
    """[(message, verdict)], [(message, reason)] for the malformed ones."""
    good, bad = [], []
    for msg in messages:
        try:
            obj = json.loads(msg.value) if msg.value is not None else None
            good.append((msg, from_dict(obj, "kafka")))
        except (ValueError, VerdictError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reason = str(exc) if isinstance(exc, VerdictError) else f"not JSON ({type(exc).__name__}: {exc})"
            bad.append((msg, REASON + reason))
    return good, bad


def dead_letter(msg: Incoming, reason: str, topic: str) -> tuple[DeadLetterRow, Outgoing]:
    row = DeadLetterRow(source_topic=msg.topic, source_partition=msg.partition, source_offset=msg.offset,
                        error=reason, payload=msg.value)
    return row, Outgoing(topic, msg.key, msg.value, [
        ("error", reason.encode()), ("source_topic", msg.topic.encode()),
        ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode())])


class FeedbackBatch:
    """One batch of feedback messages: what to produce to the dead-letter topic, then one SQL transaction."""

    def __init__(self, store: Store, messages: list[Incoming], dead_letter_topic: str):
        self.store = store
        self.messages = messages
        self.topic = dead_letter_topic
        self.outcome = Outcome()
        good, bad = parse(messages)
        with store.engine.connect() as conn:  # which targets exist: checked before producing the dead letters
            self.rows, rejected, self.outcome.without_text = resolve(conn, [v for _, v in good])
        bad += [(good[i][0], REASON + why) for i, _, why in rejected]
        self.outcome.rejected = [(f"{m.topic}[{m.partition}]@{m.offset}", why) for m, why in bad]
        pairs = [dead_letter(m, why, dead_letter_topic) for m, why in bad]
        self.dead = [row for row, _ in pairs]
        self.outgoing = [out for _, out in pairs]
        self.offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic, msg.partition)
            self.offsets[key] = max(self.offsets.get(key, 0), msg.offset + 1)

    def store_all(self) -> Outcome:
        """Verdicts, dead letters and offsets in one transaction (the store's own writer for the latter two)."""
        now = datetime.now(timezone.utc)
        self.outcome.added = self.outcome.unchanged = self.outcome.replaced = 0  # a retried transaction counts anew
        with self.store.engine.begin() as conn:
            write(conn, self.rows, self.outcome)
            self.store._write(conn, Batch([], [], self.dead, self.offsets), now)
        return self.outcome


class _SeekToStored(ConsumerRebalanceListener):
    def __init__(self, consumer: AIOKafkaConsumer, store: Store, topic: str):
        self.consumer, self.store, self.topic = consumer, store, topic

    async def on_partitions_revoked(self, revoked) -> None:  # batches are handled whole between fetches
        return None

    async def on_partitions_assigned(self, assigned) -> None:
        stored = await asyncio.get_running_loop().run_in_executor(None, self.store.next_offsets, [self.topic])
        for tp in assigned:
            if (tp.topic, tp.partition) in stored:
                self.consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await self.consumer.seek_to_beginning(tp)


async def consume(settings: Settings, stop: asyncio.Event, max_records: int = 500) -> Outcome:
    """Read the feedback topic until `stop` is set; returns the totals."""
    topic = settings.topic_feedback
    store = Store(settings.database_url, group_id(settings))
    totals = Outcome()
    consumer = AIOKafkaConsumer(group_id=group_id(settings), enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=int(settings.kafka_session_timeout * 1000),
                                **client_options(settings))
    producer = AIOKafkaProducer(acks="all", **client_options(settings))
    sink = TopicSink(producer)
    loop = asyncio.get_running_loop()
    await producer.start()
    consumer.subscribe([topic], listener=_SeekToStored(consumer, store, topic))
    await consumer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=500, max_records=max_records)
            messages = incoming(fetched)
            if not messages:
                continue
            batch = await retry_forever(lambda: loop.run_in_executor(
                None, FeedbackBatch, store, messages, settings.topic_dead_letter), "reading stored targets")
            await sink.publish(batch.outgoing)
            outcome = await retry_forever(lambda: loop.run_in_executor(None, batch.store_all), "storing verdicts")
            for name in ("added", "unchanged", "replaced", "without_text"):
                setattr(totals, name, getattr(totals, name) + getattr(outcome, name))
            totals.rejected += outcome.rejected
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in batch.offsets.items()})
            log.info("feedback: %s", outcome.summary())
            for where, why in outcome.rejected[:3]:
                log.info("dead-lettered %s: %s", where, why)
    finally:
        await consumer.stop()
        await producer.stop()
        store.dispose()
    return totals


def run(settings: Settings, stop: asyncio.Event | None = None, migrate: bool = True) -> Outcome:
    """The service: schema upgraded, the topic made if missing, then `consume` until SIGINT / SIGTERM."""
    import signal

    if migrate:
        Store(settings.database_url, group_id(settings)).migrate()
    ensure_topics(settings, [settings.topic_feedback, settings.topic_dead_letter])

    async def main() -> Outcome:
        event = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, event.set)
        return await consume(settings, event)

    return asyncio.run(main())
