"""Start-up waits and sink retries (streams/retry.py): what a cluster that is still starting answers is logged at
info as waiting, for a while; anything else, and the same after that while, as a warning."""

import asyncio
import logging
import threading

from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaConnectionError

from streamsense.settings import Settings
from streamsense.streams import kafka
from streamsense.streams.retry import retry_forever

LOGGER = "streamsense.streams.retry"


def _failing(*errors):
    """An attempt that raises each of `errors` in turn, then returns "ok"."""
    left = list(errors)

    async def attempt():
        if left:
            raise left.pop(0)
        return "ok"
    return attempt


def _run(attempt, caplog, **kwargs):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = asyncio.run(retry_forever(attempt, "reaching Kafka at h:1", max_backoff=0.01, **kwargs))
    assert result == "ok"
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_a_cluster_still_starting_is_waited_for_at_info(caplog):
    starting = (GroupCoordinatorNotAvailableError, KafkaConnectionError)
    lines = _run(_failing(GroupCoordinatorNotAvailableError(), KafkaConnectionError("refused")), caplog,
                 starting=starting, patience=60, waiting="waiting for Kafka at h:1 to finish starting")
    assert lines == [("INFO", "waiting for Kafka at h:1 to finish starting (GroupCoordinatorNotAvailableError); "
                              "next try in 0.2s"),
                     ("INFO", "waiting for Kafka at h:1 to finish starting (KafkaConnectionError); next try in 0.0s")]
    # past the patience, the same answer is a warning
    lines = _run(_failing(GroupCoordinatorNotAvailableError()), caplog, starting=starting, patience=0)
    assert [level for level, _ in lines] == ["WARNING"]
    assert lines[0][1].startswith("reaching Kafka at h:1 failed (GroupCoordinatorNotAvailableError")
    # an answer of another kind is a warning at once; without `starting`, every failure is
    assert [level for level, _ in _run(_failing(ValueError("bad")), caplog, starting=starting, patience=60)] \
        == ["WARNING"]
    assert [level for level, _ in _run(_failing(KafkaConnectionError()), caplog)] == ["WARNING"]


def test_a_worker_started_before_its_broker_waits_calmly(make_broker, monkeypatch, caplog):
    """wait_for_kafka against a port where the broker starts only later: info lines only (no listener, then on
    Apache Kafka possibly metadata before the group coordinator), and it returns once the cluster is ready."""
    monkeypatch.setattr(kafka, "KAFKA_PATIENCE_S", 600.0)  # the default (10 s) is shorter than a loaded test machine
    broker = make_broker()
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (kafka.wait_for_kafka(
        Settings(kafka_bootstrap_servers=broker.bootstrap_servers, app_id="calm")), done.set()), daemon=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        waiter.start()
        assert not done.wait(1.0)  # nothing listens yet
        with broker:
            assert done.wait(120)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert lines and all(level == "INFO" for level, _ in lines), lines
    assert lines[0][1].startswith(f"waiting for Kafka at {broker.bootstrap_servers} to finish starting "
                                  "(KafkaConnectionError)"), lines
