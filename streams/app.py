"""The Faust app that hosts the worker: lifecycle, signals, logging, timers, the web server, and the batch consumer
(streams/consumer.py) as one of its services.

Faust's own Kafka services (consumer, conductor, agents, tables, producer) are not started: per-event agents cost
~300 µs of CPU per message in the framework alone (docs/architecture.md), so the input topics are read in batches by
one aiokafka consumer and the outputs are produced in batches by one aiokafka producer, both owned here.

Offsets: SQL is the source of truth. Each batch's next offsets are written in the same transaction as its results;
on every partition assignment the consumer seeks to the stored offsets, so a restart resumes right after the last
stored batch.
"""

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.app.base import BootStrategy

from streamsense.settings import Settings
from streamsense.streams.alerting.outbox import AlertOutbox
from streamsense.streams.batching import OverlappedBatches
from streamsense.streams.commit import CommitProtocol
from streamsense.streams.consumer import BatchConsumer
from streamsense.streams.inputs.registry import RegistryUnavailable
from streamsense.streams.kafka import client_options
from streamsense.streams.pipeline import InputStopped, Processor
from streamsense.streams.progress import Progress
from streamsense.streams.sinks import SqlSink, TopicSink
from streamsense.streams.stages import Stages
from streamsense.streams.store import Store
from streamsense.streams.telemetry import Metrics, consumer_highwater
from streamsense.streams.web import Health, WebServer

log = logging.getLogger(__name__)

#: the worker's exit status when an input declared with on_error = "stop" meets a message it cannot read (EX_DATAERR)
EXIT_INPUT_STOPPED = 65
PRODUCER_BATCH_BYTES = 512 * 1024  # per partition and request; below Kafka's default message.max.bytes (1 MiB)
# How long the broker may hold a fetch that finds nothing new. Apache Kafka answers as soon as a record arrives
# (produce → getmany 4–5 ms at any value); the embedded Tansu broker answers only when the wait is over (p50 202 ms
# at aiokafka's default 500, 26 ms at 100, 6 ms at 20). At low load that wait was most of a message's latency; the
# price is up to 50 empty fetches a second while idle: 3.7 % of a core for an idle worker (0.5 % at 500 ms).
FETCH_MAX_WAIT_MS = 20


class _HostBoot(BootStrategy):
    """Faust runs the worker's lifecycle, timers and web server; the worker's own clients do the Kafka work."""

    enable_kafka = False


class WorkerApp(faust.App):
    BootStrategy = _HostBoot


def new_producer(settings: Settings, idempotent: bool) -> AIOKafkaProducer:
    # acks=all either way; idempotence adds producer ids and sequence numbers (streams/kafka.py decides)
    # no linger: the sink hands over whole record batches (streams/sinks.py) and waits for their acks
    return AIOKafkaProducer(acks="all", enable_idempotence=idempotent, linger_ms=0,
                            max_batch_size=PRODUCER_BATCH_BYTES, max_request_size=4 * 1024 * 1024,
                            **client_options(settings))


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        group_id=settings.app_id,
        enable_auto_commit=False,  # offsets are stored in SQL with the results (streams/consumer.py)
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.kafka_session_timeout * 1000),
        heartbeat_interval_ms=2000,
        rebalance_timeout_ms=20_000,
        # notice topics and partitions created after the worker subscribed within 30 s (aiokafka's default: 5 min)
        metadata_max_age_ms=30_000,
        max_partition_fetch_bytes=settings.fetch_partition_bytes,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **client_options(settings),
    )


def create_app(settings: Settings, processor: Processor, store: Store, metrics: Metrics,
               health: Health, idempotent: bool = False, stages: Stages | None = None) -> faust.App:
    app = WorkerApp(
        settings.app_id,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_host,
        datadir=Path(tempfile.gettempdir()) / f"streamsense-{settings.app_id}",
    )
    stages = stages or Stages()
    topic_sink = TopicSink(None)  # its producer is made when the batch consumer starts (inside the event loop)
    sql_pool = ThreadPoolExecutor(1, thread_name_prefix="sql")
    outbox = AlertOutbox(store, topic_sink, settings.topic_alerts, sql_pool, encode=processor.output.alert)
    input_topics = list(processor.topics.kinds)

    def fatal(exc: BaseException) -> None:
        if isinstance(exc, InputStopped):  # asked for by the declaration: one line, and an exit code of its own
            log.critical("%s; stopping (nothing after the stored offsets is lost: a restart reads it again)", exc)
            os._exit(EXIT_INPUT_STOPPED)
        if isinstance(exc, RegistryUnavailable):  # a stop while a batch waited for the schema registry
            log.warning("%s", exc)
            os._exit(0)
        # skipping the batch would lose it; exit so the restart resumes from the stored offsets
        log.critical("batch processing failed; exiting so the worker restarts from stored offsets", exc_info=exc)
        os._exit(70)

    progress = Progress()

    def stored(processed, seconds: float) -> None:
        with stages("bookkeeping"):
            source.stored(processed.batch.offsets)
            progress.stored(processed)
            metrics.observe_batch(processed, seconds, consumer_highwater(source.consumer))

    commit = CommitProtocol(topic_sink, SqlSink(store, sql_pool), outbox, on_stored=stored,
                            on_published_alerts=metrics.observe_alerts, stages=stages)
    batches = OverlappedBatches(processor.prepare, processor.finish, commit.commit,
                                ThreadPoolExecutor(1, thread_name_prefix="prepare"),
                                ThreadPoolExecutor(1, thread_name_prefix="model"), fatal)

    def clients(consumer, producer) -> None:
        topic_sink.producer = producer

    source = BatchConsumer(lambda: new_consumer(settings), input_topics, batches,
                           lambda: store.next_offsets(input_topics), settings.batch_size, settings.batch_max_wait,
                           fatal, make_producer=lambda: new_producer(settings, idempotent), on_clients=clients,
                           on_assigned=progress.assigned, stages=stages, loop=app.loop, beacon=app.beacon)
    app.service(source)

    @app.task
    async def publish_left_over_alerts() -> None:
        """Alerts stored before a crash but never acknowledged by the alerts topic."""
        await source.producer_ready.wait()
        await commit.flush_outbox()

    if settings.progress_interval > 0:
        @app.timer(interval=settings.progress_interval)
        async def log_progress() -> None:
            if source.consumer is not None:
                log.info("%s", progress.line(consumer_highwater(source.consumer)))

    if settings.web_port is not None:
        app.web_server(WebServer(settings, metrics, health))

    return app
