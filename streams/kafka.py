"""Kafka connection options from settings for aiokafka clients, and what the worker asks the cluster at start."""

import asyncio
import logging
import ssl

from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError, KafkaConnectionError,
                             LeaderNotAvailableError, NodeNotReadyError, NotCoordinatorError, TopicAlreadyExistsError,
                             UnknownError, UnsupportedVersionError)

from streamsense.settings import Settings
from streamsense.streams.retry import retry_forever

log = logging.getLogger(__name__)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None)
    return context


def _sasl(settings: Settings) -> tuple[str, str, str]:
    if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password):
        raise ValueError(f"{settings.kafka_security_protocol} needs STREAMSENSE_KAFKA_SASL_MECHANISM, "
                         "STREAMSENSE_KAFKA_SASL_USERNAME and STREAMSENSE_KAFKA_SASL_PASSWORD")
    return settings.kafka_sasl_mechanism, settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()


def client_options(settings: Settings) -> dict:
    """Keyword arguments for aiokafka producers, consumers and admin clients."""
    options: dict = {"bootstrap_servers": settings.kafka_bootstrap_servers,
                     "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        mechanism, user, password = _sasl(settings)
        options.update(sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
    return options


# What a cluster that is still starting answers (no listener yet, metadata before the group coordinator, a
# coordinator loading its state): logged at info, as waiting, for the first KAFKA_PATIENCE_S seconds, then as warnings.
KAFKA_STARTING = (KafkaConnectionError, NodeNotReadyError, GroupCoordinatorNotAvailableError,
                  CoordinatorLoadInProgressError, NotCoordinatorError, LeaderNotAvailableError)
KAFKA_PATIENCE_S = 10.0


def wait_for_kafka(settings: Settings) -> None:
    """Block until the cluster answers a metadata request and the group coordinator is up."""

    async def probe() -> None:
        client = AIOKafkaClient(**client_options(settings))
        try:
            await client.bootstrap()
            # A cluster that has just started answers metadata before its group coordinator is up (seen on Apache
            # Kafka 4.4: docs/reliability.md); joining the group then fails.
            await client.coordinator_lookup(0, settings.app_id)
        finally:
            await client.close()

    where = settings.kafka_bootstrap_servers
    asyncio.run(retry_forever(probe, f"reaching Kafka at {where}", starting=KAFKA_STARTING, patience=KAFKA_PATIENCE_S,
                              waiting=f"waiting for Kafka at {where} to finish starting"))


async def _idempotence_supported(settings: Settings) -> bool:
    """Whether the cluster grants producer ids (InitProducerId): Apache Kafka does, Tansu answers UnknownError."""
    producer = AIOKafkaProducer(enable_idempotence=True, acks="all", **client_options(settings))
    sender_log = logging.getLogger("aiokafka.producer.sender")
    level = sender_log.level
    sender_log.setLevel(logging.CRITICAL)  # the refusal is the answer here, not an error to print
    try:
        await producer.start()
        return True
    except (UnknownError, UnsupportedVersionError):
        return False
    finally:
        sender_log.setLevel(level)
        await producer.stop()


def producer_idempotence(settings: Settings) -> bool:
    """Whether the worker's producer runs idempotent: the setting, with `auto` asking the cluster (once, at start)."""
    if settings.kafka_idempotence != "auto":
        return settings.kafka_idempotence == "on"
    supported = asyncio.run(retry_forever(lambda: _idempotence_supported(settings),
                                          f"asking {settings.kafka_bootstrap_servers} for a producer id"))
    if not supported:
        log.warning("the Kafka cluster at %s does not grant producer ids (InitProducerId): producing without "
                    "idempotence (retried sends may duplicate output messages; results in SQL are unaffected)",
                    settings.kafka_bootstrap_servers)
    return supported


def worker_topics(settings: Settings) -> list[str]:
    """Every declared input topic (STREAMSENSE_INPUTS, else posts and tickets), then the output topics."""
    from streamsense.streams.inputs.declare import input_topics

    return [*input_topics(settings), settings.topic_predictions, settings.topic_alerts, settings.topic_dead_letter]


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create the worker's input and output topics (or `topics`) that do not exist yet, with the configured
    partitions.

    Faust declares only its internal topics; a topic that a producer auto-creates gets the cluster's default
    partition count instead (`num.partitions`, 1 on a stock Apache Kafka). Returns the topics created."""

    async def create() -> list[str]:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in dict.fromkeys(topics or worker_topics(settings)) if t not in existing]
            if not missing:
                return []
            response = await admin.create_topics([NewTopic(t, settings.topic_partitions,
                                                           settings.topic_replication_factor) for t in missing])
            created = []
            for topic, code, message in ((e[0], e[1], e[2]) for e in response.topic_errors):
                if code == 0:
                    created.append(topic)
                elif code != TopicAlreadyExistsError.errno:  # exists: another worker or a producer was first
                    log.warning("could not create topic %s (%s): it will be created with the cluster's defaults "
                                "on first use", topic, message or f"error {code}")
            return created
        finally:
            await admin.close()

    created = asyncio.run(retry_forever(create, f"creating topics on {settings.kafka_bootstrap_servers}"))
    if created:
        log.info("created topics %s with %d partitions", created, settings.topic_partitions)
    return created
