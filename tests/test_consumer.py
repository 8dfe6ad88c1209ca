"""The batch consumer's own logic (streams/consumer.py) against a stand-in for aiokafka's consumer: batching,
what a revocation drops and waits for, where assigned partitions resume, what reaches Kafka's committed offsets.
The end-to-end and fault tests run it on both real brokers."""

import asyncio
from collections import namedtuple

from aiokafka import TopicPartition

from streamsense.streams.consumer import BatchConsumer, incoming

Record = namedtuple("Record", "offset key value timestamp")


class FakeConsumer:
    """aiokafka's consumer surface the batch consumer uses; `script` is what successive getmany calls return."""

    def __init__(self, script=(), assignment=()):
        self.script = list(script)
        self.calls = []
        self.seeks = {}
        self.buffered = {}  # tp -> records fetched and waiting, for getmany(tp, ...)
        self.commits = []
        self._assignment = set(assignment)

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        if partitions:  # one partition's buffer (take_fairly)
            (tp,) = partitions
            records = self.buffered.get(tp, [])
            self.buffered[tp] = records[max_records:]
            return {tp: records[:max_records]} if records[:max_records] else {}
        self.calls.append((timeout_ms, max_records))
        step = self.script.pop(0) if self.script else {}
        if not step:
            await asyncio.sleep(timeout_ms / 1000)
        if callable(step):
            step = await step()
        out, left = {}, max_records
        for tp, batch in step.items():  # like aiokafka: at most max_records in all, partition by partition
            if left:
                out[tp], left = batch[:left], left - len(batch[:left])
        return out

    def assignment(self):
        return set(self._assignment)

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    async def commit(self, offsets):
        self.commits.append(dict(offsets))


class FakeBatches:
    def __init__(self):
        self.submitted, self.drains = [], 0

    async def submit(self, batch):
        self.submitted.append(batch)

    async def drain(self):
        self.drains += 1


TP0, TP1 = TopicPartition("posts", 0), TopicPartition("posts", 1)


def records(start, n):
    return [Record(o, b"k", b"v", 1_700_000_000_000) for o in range(start, start + n)]


def make(consumer, batches=None, batch_size=4, wait=0.05, stored=None):
    source = BatchConsumer(lambda: consumer, ["posts"], batches or FakeBatches(), lambda: dict(stored or {}),
                           batch_size, wait, on_fatal=lambda exc: (_ for _ in ()).throw(exc))
    source.consumer = consumer  # what on_start makes
    return source


def test_incoming_keeps_partition_and_offset_order_and_converts_timestamps():
    messages = incoming({TP0: records(5, 2), TP1: [Record(9, None, None, -1)]})
    assert [(m.topic, m.partition, m.offset) for m in messages] == [("posts", 0, 5), ("posts", 0, 6), ("posts", 1, 9)]
    assert messages[0].timestamp == 1_700_000_000.0 and messages[2].timestamp is None


def test_a_batch_is_what_is_buffered_up_to_the_batch_size():
    consumer = FakeConsumer([{TP0: records(0, 3), TP1: records(0, 3)}])
    messages, generation = asyncio.run(make(consumer).fetch())
    assert len(messages) == 4 and generation == 0
    assert consumer.calls == [(50, 4)]


def test_a_partial_batch_waits_for_more_then_goes_within_the_wait():
    consumer = FakeConsumer([{TP0: records(0, 1)}, {}, {TP1: records(0, 1)}])
    messages, _ = asyncio.run(make(consumer, batch_size=10, wait=0.2).fetch())
    assert [(m.partition, m.offset) for m in messages] == [(0, 0), (1, 0)]
    assert [limit for _, limit in consumer.calls[:3]] == [10, 9, 9]  # asks only for what the batch still holds


def test_records_gathered_before_a_revocation_are_dropped():
    holder = {}

    async def revoke_then_more():
        await holder["source"].partitions_revoked({TP0})
        return {TP1: records(7, 1)}

    consumer = FakeConsumer([{TP0: records(0, 2)}, revoke_then_more], assignment={TP0, TP1})
    source = holder["source"] = make(consumer, batch_size=10, wait=0.2)
    messages, generation = asyncio.run(source.fetch())
    # the partition's position is reset to the stored offsets by the assignment, so offsets 0-1 are read again
    assert [(m.partition, m.offset) for m in messages] == [(1, 7)]
    assert generation == 1


def test_a_revocation_finishes_the_batch_in_flight_first():
    batches = FakeBatches()
    source = make(FakeConsumer(assignment={TP0}), batches)

    async def run():
        async with source.lock:  # a batch being handed on
            revoking = asyncio.ensure_future(source.partitions_revoked({TP0}))
            await asyncio.sleep(0.05)
            assert not revoking.done() and batches.drains == 0
        await revoking

    asyncio.run(run())
    assert batches.drains == 1


def test_assigned_partitions_resume_from_the_stored_offsets():
    consumer = FakeConsumer(assignment={TP0, TP1})
    source = make(consumer, stored={("posts", 0): 42, ("other", 0): 7})
    asyncio.run(source.partitions_assigned({TP0, TP1}))
    assert consumer.seeks == {TP0: 42}  # TP1 has nothing stored: Kafka's committed offset or the earliest
    assert consumer.commits == [{TP0: 42}]


def test_kafka_gets_only_stored_offsets_of_partitions_still_assigned():
    consumer = FakeConsumer(assignment={TP0})
    source = make(consumer)
    source.stored({("posts", 0): 10, ("posts", 1): 5})
    asyncio.run(source._commit_kafka())
    assert consumer.commits == [{TP0: 10}]
    asyncio.run(source._commit_kafka())
    assert consumer.commits == [{TP0: 10}]  # nothing new stored: nothing committed


def test_every_partition_with_buffered_records_gets_a_share_of_each_batch():
    """aiokafka's plain getmany drains one partition's buffer before the next: the batch takes from each in turn."""
    consumer = FakeConsumer(assignment={TP0, TP1, TopicPartition("posts", 2)})
    consumer.buffered = {TP0: records(0, 1000), TP1: records(0, 1000)}  # partition 2: nothing fetched yet
    source = make(consumer, batch_size=8)
    batches = [asyncio.run(source.fetch())[0] for _ in range(3)]
    for batch in batches:
        assert len(batch) == 8
        assert {m.partition for m in batch} == {0, 1}
        assert sum(m.partition == 0 for m in batch) in (3, 4, 5)
    served = [m.offset for b in batches for m in b if m.partition == 1]
    assert served == list(range(len(served)))  # each partition in offset order, nothing skipped
    assert consumer.calls == []  # all from the buffers: no waiting fetch


def test_a_lone_partition_fills_the_batch_by_itself():
    consumer = FakeConsumer(assignment={TP0, TP1})
    consumer.buffered = {TP1: records(0, 100)}
    messages, _ = asyncio.run(make(consumer, batch_size=10).fetch())
    assert [(m.partition, m.offset) for m in messages] == [(1, o) for o in range(10)]


# Batches that follow load: handed on as soon as the model stage is free, growing while it is busy


class ModelStage(FakeBatches):
    """Batches whose model stage says when it is free, as streams/batching.py's OverlappedBatches does."""

    def __init__(self, free: bool):
        super().__init__()
        self.model_free = asyncio.Event()
        if free:
            self.model_free.set()


def _timed_fetch(source, before=None):
    async def run():
        helper = asyncio.ensure_future(before()) if before else None
        start = asyncio.get_running_loop().time()
        messages, _ = await source.fetch()
        elapsed = asyncio.get_running_loop().time() - start
        if helper:
            await helper
        return messages, elapsed
    return asyncio.run(run())


def test_with_the_model_free_a_message_is_handed_on_at_once():
    # one record now, more 0.1 s later: a free model takes the one record without waiting for a fill
    async def later():
        await asyncio.sleep(0.1)
        return {TP1: records(0, 5)}

    consumer = FakeConsumer([{TP0: records(0, 1)}, later])
    messages, elapsed = _timed_fetch(make(consumer, ModelStage(free=True), batch_size=10, wait=1.0))
    assert [(m.partition, m.offset) for m in messages] == [(0, 0)]
    assert elapsed < 0.5  # not batch_max_wait
    assert len(consumer.calls) == 1


def test_while_the_model_is_busy_the_batch_grows_until_the_model_is_free():
    stage = ModelStage(free=False)

    async def more_soon():
        await asyncio.sleep(0.05)
        return {TP1: records(0, 2)}

    async def free_later():
        await asyncio.sleep(0.3)
        stage.model_free.set()

    # after the first record: two more arrive while the model is busy, then nothing until the model frees
    consumer = FakeConsumer([{TP0: records(0, 1)}, more_soon, {}, {}])
    messages, elapsed = _timed_fetch(make(consumer, stage, batch_size=10, wait=5.0), free_later)
    assert [(m.partition, m.offset) for m in messages] == [(0, 0), (1, 0), (1, 1)]
    assert 0.25 < elapsed < 2.0  # closed when the model became free, long before batch_max_wait


def test_while_the_model_is_busy_the_batch_closes_at_the_cap_or_after_the_max_wait():
    stage = ModelStage(free=False)
    consumer = FakeConsumer([{TP0: records(0, 3)}, {TP1: records(0, 3)}])
    messages, elapsed = _timed_fetch(make(consumer, stage, batch_size=4, wait=5.0))
    assert len(messages) == 4 and elapsed < 1.0  # full: handed on although the model is busy

    consumer = FakeConsumer([{TP0: records(0, 1)}, {}, {}, {}])
    messages, elapsed = _timed_fetch(make(consumer, stage, batch_size=10, wait=0.2))
    assert [(m.partition, m.offset) for m in messages] == [(0, 0)]
    assert 0.15 < elapsed < 1.0  # the model never freed: batch_max_wait bounds the wait


def test_records_fetched_while_waiting_for_the_model_are_kept_when_the_model_frees():
    """A getmany cut short by the model becoming free returns nothing; what arrives later is read by the next batch."""
    stage = ModelStage(free=False)
    consumer = FakeConsumer(assignment={TP0, TP1})
    consumer.buffered = {TP0: records(0, 1)}

    async def free_soon():
        await asyncio.sleep(0.05)
        stage.model_free.set()
        await asyncio.sleep(0.01)
        consumer.buffered[TP1] = records(0, 2)

    source = make(consumer, stage, batch_size=10, wait=5.0)
    first, _ = _timed_fetch(source, free_soon)
    second, _ = _timed_fetch(source)
    assert [(m.partition, m.offset) for m in first] == [(0, 0)]
    assert [(m.partition, m.offset) for m in second] == [(1, 0), (1, 1)]
