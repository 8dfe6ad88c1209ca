"""Kafka security settings reach the clients; secrets stay out of logs."""

import ssl

import asyncio

import pytest

from streamsense.settings import Settings
from streamsense.streams.app import new_consumer, new_producer
from streamsense.streams.kafka import client_options


def test_plaintext_by_default():
    settings = Settings(kafka_bootstrap_servers="k1:9092,k2:9092")
    assert client_options(settings) == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_reaches_the_clients(mechanism):
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="svc", kafka_sasl_password="s3cret")
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == \
        (mechanism, "svc", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)

    async def worker_clients():  # the worker's own consumer and producer (streams/app.py) carry them
        consumer, producer = new_consumer(settings), new_producer(settings, idempotent=False)
        return [(c._sasl_mechanism, c._sasl_plain_username, c._security_protocol)
                for c in (consumer._client, producer.client)]

    assert asyncio.run(worker_clients()) == [(mechanism, "svc", "SASL_SSL")] * 2


def test_sasl_plaintext_has_no_tls():
    options = client_options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                                      kafka_sasl_username="u", kafka_sasl_password="p"))
    assert "ssl_context" not in options


def test_ssl_uses_the_configured_ca(tmp_path):
    ca = tmp_path / "missing-ca.pem"
    with pytest.raises(FileNotFoundError):  # the CA file is really read, not ignored
        client_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca))
    settings = Settings(kafka_security_protocol="SSL")
    assert client_options(settings)["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_sasl_without_credentials_is_a_clear_error():
    with pytest.raises(ValueError, match="STREAMSENSE_KAFKA_SASL_USERNAME"):
        client_options(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN"))
