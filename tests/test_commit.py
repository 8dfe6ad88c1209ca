"""The commit protocol without a broker or a database: publish → one SQL transaction → outbox, in that order."""

import ast
import asyncio
from types import SimpleNamespace

import pytest

from streamsense.streams.commit import CommitProtocol


class Recorder:
    """Stands in for the three sinks and records what reached them, in order; `fail` names a step that raises."""

    def __init__(self, fail: str | None = None):
        self.calls, self.fail = [], fail
        self.topic_sink = SimpleNamespace(publish=self._step("publish"))
        self.sql_sink = SimpleNamespace(write=self._step("write"))
        self.outbox = SimpleNamespace(flush=self._step("flush", result=[{"id": "alert-1"}]))

    def _step(self, name: str, result=None):
        async def step(*args):
            if self.fail == name:
                raise RuntimeError(f"{name} failed")
            self.calls.append((name, *args))
            return result
        return step


def _batch():
    return SimpleNamespace(outgoing=["prediction-1", "dead-letter-1"], batch=SimpleNamespace(offsets={("t", 0): 2}))


def test_publish_then_one_transaction_then_outbox():
    sinks, stored, published = Recorder(), [], []
    protocol = CommitProtocol(sinks.topic_sink, sinks.sql_sink, sinks.outbox,
                              on_stored=lambda p, seconds: stored.append((p, seconds)),
                              on_published_alerts=published.append)
    processed = _batch()
    assert asyncio.run(protocol.commit(processed)) == [{"id": "alert-1"}]
    assert sinks.calls == [("publish", processed.outgoing), ("write", processed.batch), ("flush", None)]
    assert stored[0][0] is processed and stored[0][1] >= 0
    assert published == [[{"id": "alert-1"}]]


@pytest.mark.parametrize("failing, reached", [("publish", []), ("write", ["publish"]), ("flush", ["publish", "write"])])
def test_a_failing_step_stops_the_ones_after_it(failing, reached):
    """Offsets are stored in `write`: if publishing fails nothing is stored (the batch is replayed), and the outbox
    runs only after the transaction committed."""
    sinks, stored = Recorder(fail=failing), []
    protocol = CommitProtocol(sinks.topic_sink, sinks.sql_sink, sinks.outbox,
                              on_stored=lambda p, seconds: stored.append(p))
    with pytest.raises(RuntimeError, match=failing):
        asyncio.run(protocol.commit(_batch()))
    assert [call[0] for call in sinks.calls] == reached
    assert bool(stored) == ("write" in reached)


@pytest.mark.parametrize("module, allowed", [
    ("streamsense.streams.contracts", set()),
    ("streamsense.streams.alerting.rules", set()),
    ("streamsense.streams.pipeline", {"onnxruntime"}),  # the model runtime; no database, no Kafka client
])
def test_pure_layers_import_no_io_framework(module, allowed):
    """Contracts and alert rules are pure; the pipeline adds only the model runtime: importing them loads no
    SQLAlchemy, Faust or aiokafka."""
    import subprocess
    import sys

    code = (f"import sys, {module}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'faust', 'aiokafka', 'onnxruntime'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(ast.literal_eval(out.stdout)) <= allowed
