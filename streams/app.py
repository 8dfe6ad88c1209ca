"""The Faust app: one agent per input topic, batching with take_events, results to topics then SQL.

Offsets: SQL is the source of truth. Each batch's next offsets are written in the same transaction as
its results; on every partition assignment the stored offsets are committed to Kafka before Faust seeks,
so a restart resumes right after the last stored batch. (Faust on the embedded broker was seen to
commit offsets past unprocessed messages across a restart: see docs/reliability.md.)
"""

import asyncio
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faust
from faust.types import TP

from streamsense.settings import Settings
from streamsense.streams.alerting.outbox import AlertOutbox
from streamsense.streams.batching import OverlappedBatches
from streamsense.streams.commit import CommitProtocol
from streamsense.streams.contracts import Incoming
from streamsense.streams.kafka import IdempotentTransport, faust_broker_url, faust_credentials
from streamsense.streams.pipeline import Processor
from streamsense.streams.retry import retry_forever
from streamsense.streams.sinks import SqlSink, TopicSink
from streamsense.streams.store import Store
from streamsense.streams.telemetry import Metrics, consumer_highwater
from streamsense.streams.watchdog import StarvationWatch
from streamsense.streams.web import Health, WebServer

log = logging.getLogger(__name__)


class IdempotentApp(faust.App):
    """A Faust app whose producer is idempotent (acks=all, producer ids): see streams/kafka.py."""

    def _new_transport(self):
        return IdempotentTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self):
        return IdempotentTransport(self.conf.broker_producer, self)


def create_app(settings: Settings, processor: Processor, store: Store, metrics: Metrics,
               health: Health, idempotent: bool = False) -> faust.App:
    app = (IdempotentApp if idempotent else faust.App)(
        settings.app_id,
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=2.0,
        broker_rebalance_timeout=20.0,
        broker_commit_interval=1.0,
        # notice topics and partitions created after the worker subscribed within 30 s (aiokafka's default: 5 min)
        consumer_metadata_max_age_ms=30_000,
        table_standby_replicas=0,
        stream_wait_empty=False,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_host,
        datadir=Path(tempfile.gettempdir()) / f"streamsense-{settings.app_id}",
    )
    topic_sink = TopicSink(app.producer)
    sql_pool = ThreadPoolExecutor(1, thread_name_prefix="sql")
    sql_sink = SqlSink(store, sql_pool)
    outbox = AlertOutbox(store, topic_sink, settings.topic_alerts, sql_pool)
    input_topics = list(processor.topics.kinds)
    watch = StarvationWatch(settings.partition_stall_seconds)

    def stored(processed, seconds: float) -> None:
        watch.advanced(processed.batch.offsets)
        metrics.observe_batch(processed, seconds, consumer_highwater(app.consumer))

    commit = CommitProtocol(topic_sink, sql_sink, outbox, on_stored=stored,
                            on_published_alerts=metrics.observe_alerts)

    def fatal(exc: BaseException) -> None:
        # Faust would restart the agent past this batch; exit so the restart resumes from SQL offsets.
        log.critical("agent failed; exiting so the worker restarts from stored offsets", exc_info=exc)
        os._exit(70)

    async def handle(stream) -> None:
        batches = OverlappedBatches(processor.prepare, processor.finish, commit.commit,
                                    ThreadPoolExecutor(1, thread_name_prefix="prepare"),
                                    ThreadPoolExecutor(1, thread_name_prefix="model"), fatal)
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_max_wait):
                await batches.submit([
                    Incoming(e.message.topic, e.message.partition, e.message.offset,
                             e.message.key, e.message.value, e.message.timestamp)
                    for e in events
                ])
            await batches.drain()
        except asyncio.CancelledError:
            await batches.drain()  # shutting down: finish the batch in flight (produce, commit), then stop
            raise
        except Exception as exc:
            fatal(exc)

    for topic_name in input_topics:
        app.agent(app.topic(topic_name), name=f"classify-{topic_name}")(handle)

    @app.on_rebalance_complete.connect
    async def restore_offsets(sender, **kwargs) -> None:
        assigned = app.consumer.assignment()
        loop = asyncio.get_running_loop()
        # Streams stay paused until this returns, so waiting out a database outage here keeps the no-loss promise
        # (an exception would crash the worker: seen on Apache Kafka, whose metadata refresh can rebalance mid-outage).
        stored = await retry_forever(lambda: loop.run_in_executor(None, store.next_offsets, input_topics),
                                     "reading stored offsets after a rebalance")
        commit = {tp: stored[(tp.topic, tp.partition)] for tp in assigned if (tp.topic, tp.partition) in stored}
        watch.assigned({(tp.topic, tp.partition): offset for tp, offset in commit.items()})
        if commit:
            log.info("resuming %d partitions from stored offsets", len(commit))
            await app.consumer._commit(commit)

    @app.timer(interval=max(1.0, settings.partition_stall_seconds / 4))
    async def resume_starved_partitions() -> None:
        starved = watch.starved(consumer_highwater(app.consumer))
        if starved:
            tps = [TP(topic, partition) for topic, partition in starved]
            consumer = app.consumer
            log.warning("partitions %s have unread messages and no progress for %.0f s while others progress: "
                        "resuming their fetching (faust flow-control workaround; active %s, buffered %s)",
                        starved, settings.partition_stall_seconds,
                        [tp in (consumer._active_partitions or ()) for tp in tps],
                        [tp in consumer._buffered_partitions for tp in tps])
            consumer.resume_partitions(tps)
            watch.reset(starved)
            metrics.partition_resumes.inc(len(tps))

    @app.task
    async def publish_left_over_alerts() -> None:
        """Alerts stored before a crash but never acknowledged by the alerts topic."""
        await commit.flush_outbox()

    if settings.web_port is not None:
        app.web_server(WebServer(settings, metrics, health))

    return app
