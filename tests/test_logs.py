"""The service log's text format (streamsense/logs.py): aiokafka's topic and partition sets on one line, where Faust
would draw ASCII tables."""

import logging

import pytest
from aiokafka.structs import TopicPartition
from faust import worker as faust_worker
from mode.utils import logging as mode_logging

from streamsense.logs import one_line_kafka_arguments


@pytest.fixture(autouse=True)
def _registry():
    """Faust's and mode's formatter registry as it was before the test (the change is process-wide)."""
    saved = set(mode_logging._formatter_registry2)
    yield
    mode_logging._formatter_registry2.clear()
    mode_logging._formatter_registry2.update(saved)


def _format(name: str, msg: str, *args) -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    return mode_logging.ExtensionFormatter(fmt="%(message)s").format(record)


def test_kafka_sets_stay_on_one_line():
    partitions = {TopicPartition("tickets", 1), TopicPartition("posts", 2), TopicPartition("posts", 0)}
    assert "\n" in _format("aiokafka.consumer.group_coordinator", "Setting newly assigned partitions %s for group %s",
                           partitions, "g")  # Faust's table
    one_line_kafka_arguments()
    assert faust_worker.format_log_arguments not in mode_logging._formatter_registry2
    assert _format("aiokafka.consumer.group_coordinator", "Setting newly assigned partitions %s for group %s",
                   partitions, "g") == "Setting newly assigned partitions posts[0,2] tickets[1] for group g"
    assert _format("aiokafka.consumer.subscription_state", "Subscribed to topic(s): %s",
                   frozenset({"tickets", "posts"})) == "Subscribed to topic(s): posts, tickets"
    assert _format("streamsense.x", "names %s", {"a"}) == "names {'a'}"  # only aiokafka's lines are touched
    assert _format("aiokafka.x", "empty %s", set()) == "empty set()"
