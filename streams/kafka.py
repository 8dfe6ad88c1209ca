"""Kafka connection options from settings, for Faust and for plain aiokafka clients alike."""

import asyncio
import ssl

import faust
from aiokafka import AIOKafkaClient
from faust.types.auth import CredentialsT

from streams.retry import retry_forever
from streamsense.settings import Settings


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


def faust_credentials(settings: Settings) -> CredentialsT | None:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    mechanism, user, password = _sasl(settings)
    return faust.SASLCredentials(username=user, password=password, mechanism=mechanism,
                                 ssl_context=ssl_context(settings))


def faust_broker_url(settings: Settings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")]


def wait_for_kafka(settings: Settings) -> None:
    """Block until the cluster answers a metadata request: Faust exits at start-up when it cannot bootstrap."""

    async def probe() -> None:
        client = AIOKafkaClient(**client_options(settings))
        try:
            await client.bootstrap()
        finally:
            await client.close()

    asyncio.run(retry_forever(probe, f"reaching Kafka at {settings.kafka_bootstrap_servers}"))
