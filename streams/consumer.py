"""Batch-native consumption: the worker's input topics are read by one aiokafka consumer whose `getmany` returns
raw records in batches, hosted as a service of the Faust app (docs/architecture.md says why and what it keeps).

Guarantees, as with the per-event Faust agents this replaces:
- **offsets live in SQL**: a batch's next offsets are stored in the transaction that stores its results
  (streams/commit.py); on every assignment each partition is sought to its stored offset, so a restart, a crash
  or a rebalance resumes right after the last stored batch. Kafka's committed offsets follow (at most once a
  second, never past SQL) so that lag tools see the group's progress; they are never read back when SQL has one;
- **revocation**: before partitions are given up, the batch in flight finishes (produce, SQL commit); records
  fetched before a rebalance and not yet handed on are dropped and read again from the stored offsets;
- **backpressure**: one batch is prepared while one is inferred and delivered (streams/batching.py); nothing more
  is fetched until the batch ahead was handed on, so memory is bounded by aiokafka's fetch buffer;
- **batch size follows load** (`fetch`): a batch is handed on as soon as the model stage is free, and grows toward
  `batch_size` (at most `batch_max_wait` after its first message) while the model stage is busy;
- **fairness**: each batch takes what is buffered from every assigned partition in turn, an equal share each
  (a partition with little buffered leaves its share to the others), so a partition with unread records is served
  in every batch once its records are fetched; aiokafka fetches a partition again as soon as its buffer is drained,
  at most `fetch_partition_bytes` at a time. (aiokafka's own `getmany` drains one partition's buffer before the
  next one's: a broker that returns large fetch responses, like the embedded one, then starves the others for
  seconds — 7.9 s in a 200,000-message burst on 4 partitions.)
- **graceful stop**: the fetch loop ends, the batch in flight is finished, then the consumer leaves the group.
"""

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.registry import stop_waiting
from streamsense.streams.retry import retry_forever
from streamsense.streams.stages import NoStages, Stages

log = logging.getLogger(__name__)

KAFKA_COMMIT_INTERVAL_S = 1.0


def incoming(records: dict) -> list[Incoming]:
    """aiokafka's `getmany` result → the pipeline's messages, partition by partition in offset order."""
    return [Incoming(tp.topic, tp.partition, r.offset, r.key, r.value,
                     r.timestamp / 1000 if r.timestamp and r.timestamp > 0 else None)
            for tp, batch in records.items() for r in batch]


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these during a rebalance: nothing is fetched until they return."""

    def __init__(self, owner: "BatchConsumer"):
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.owner.partitions_assigned(assigned)


class BatchConsumer(Service):
    """Fetch → `batches.submit` (prepare, infer, deliver: streams/batching.py) until stopped.

    `stored_offsets()` reads the next offsets stored in SQL (blocking; run in a thread); `on_assigned(offsets)` is
    told the partitions assigned and where they resume; `on_fatal(exc)` ends the worker (a batch that cannot be
    processed or stored must not be skipped)."""

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer], topics: list[str], batches,
                 stored_offsets: Callable[[], dict], batch_size: int, batch_max_wait: float,
                 on_fatal: Callable[[BaseException], None], make_producer: Callable[[], object] | None = None,
                 on_clients: Callable[[object, object], None] | None = None,
                 on_assigned: Callable[[dict], None] | None = None, stages: Stages | None = None, **kwargs):
        super().__init__(**kwargs)
        self.make_consumer, self.make_producer = make_consumer, make_producer
        self.consumer: AIOKafkaConsumer | None = None  # aiokafka clients are made inside the running loop
        self.producer = None
        self.on_clients = on_clients or (lambda consumer, producer: None)
        self.topics, self.batches = topics, batches
        self.producer_ready = asyncio.Event()  # the outputs' producer (started first, stopped last), if any
        self.stored_offsets, self.on_fatal = stored_offsets, on_fatal
        self.on_assigned = on_assigned or (lambda offsets: None)
        self.batch_size, self.batch_max_wait = batch_size, batch_max_wait
        self.stages = stages or NoStages()
        self.generation = 0  # bumped by every revocation: records fetched before it are dropped
        self.turn = 0  # which partition is served first in the next take
        self.lock = asyncio.Lock()  # held while a fetched batch is handed on, and by a revocation
        self.to_commit: dict[TopicPartition, int] = {}
        self._loop_task: asyncio.Task | None = None
        self._stopping = False

    # lifecycle

    async def on_start(self) -> None:
        self.consumer = self.make_consumer()
        self.producer = self.make_producer() if self.make_producer else None
        self.on_clients(self.consumer, self.producer)
        if self.producer is not None:
            await retry_forever(self.producer.start, "starting the Kafka producer")
            self.producer_ready.set()
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        await retry_forever(self.consumer.start, "starting the Kafka consumer")
        self._loop_task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        self._stopping = True
        stop_waiting()  # a batch waiting for the schema registry gives up: not stored, it is read again on restart
        if self._loop_task is not None:
            await asyncio.shield(self._loop_task)  # finishes the batch in flight
        await self._commit_kafka()
        await self.consumer.stop()  # leaves the group: the partitions move on at once
        if self.producer is not None:
            await self.producer.stop()

    async def _run(self) -> None:
        last_commit = time.monotonic()
        try:
            while not self._stopping:
                with self.stages("fetch"):
                    messages, generation = await self.fetch()
                if messages:
                    async with self.lock:
                        if generation == self.generation:  # else: a rebalance came between; re-read from SQL offsets
                            await self.batches.submit(messages)
                if time.monotonic() - last_commit >= KAFKA_COMMIT_INTERVAL_S:
                    last_commit = time.monotonic()
                    await self._commit_kafka()
            await self.batches.drain()
        except asyncio.CancelledError:
            await self.batches.drain()
            raise
        except Exception as exc:
            self.on_fatal(exc)

    async def fetch(self) -> tuple[list[Incoming], int]:
        """A batch, with the generation it was fetched in. It closes as soon as the model stage can take it:

        - it waits for a first message (polling every `batch_max_wait`, to notice a stop);
        - then, while the model stage is free (`batches.model_free` set), it is handed over at once with what is
          buffered (up to `batch_size`): at low load a message goes to the model without waiting for others;
        - while the model stage is busy it keeps gathering, and closes when the model stage becomes free, when it
          holds `batch_size` messages, or `batch_max_wait` seconds after its first message, whichever comes
          first: under load the batch grows toward `batch_size` by itself. (Batches that do not say when their
          model stage is free are treated as always busy: the batch closes when full or after `batch_max_wait`.)

        aiokafka drops its buffered records when the assignment changes and returns nothing during a rebalance, so
        what one `getmany` returns belongs to the current assignment; what was gathered before a revocation is
        dropped here (the partitions' positions were reset to the stored offsets, so it is read again)."""
        messages: list[Incoming] = []
        generation = self.generation
        deadline = None
        free: asyncio.Event | None = getattr(self.batches, "model_free", None)
        while not self._stopping:
            wait = self.batch_max_wait if deadline is None else max(0.0, deadline - time.monotonic())
            want = self.batch_size - len(messages)
            got = await self.take_fairly(want)
            if not got:  # nothing buffered: wait for the next fetch response (or, with a batch, for the model)
                if messages and free is not None:
                    got = await self._records_or_free(free, wait, want)
                else:
                    got = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=want)
            if self.generation != generation:
                messages, generation, deadline = [], self.generation, None
            if got:
                messages += incoming(got)
                if deadline is None:
                    deadline = time.monotonic() + self.batch_max_wait
            if len(messages) >= self.batch_size:
                break
            if deadline is not None and time.monotonic() >= deadline:
                # the wait is over: what is buffered already still goes along (a busy event loop wakes late)
                want = self.batch_size - len(messages)
                last = await self.take_fairly(want) or await self.consumer.getmany(timeout_ms=0, max_records=want)
                if self.generation != generation:
                    messages, generation = [], self.generation
                messages += incoming(last)
                break
            if messages and free is not None and free.is_set():
                break
        return messages, generation

    async def _records_or_free(self, free: asyncio.Event, wait: float, want: int) -> dict:
        """`getmany` for up to `wait` seconds, cut short when the model stage becomes free (then: {}). A `getmany`
        cancelled while it waits has taken no record from aiokafka's buffer (it drains only before it waits)."""
        getting = asyncio.ensure_future(self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=want))
        freed = asyncio.ensure_future(free.wait())
        try:
            await asyncio.wait((getting, freed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            if not getting.done():
                getting.cancel()
            await asyncio.wait((getting,))
        return {} if getting.cancelled() else getting.result()

    async def take_fairly(self, want: int) -> dict:
        """Up to `want` buffered records, an equal share from each assigned partition in turn (the first partition
        changes with every call); returns at once, empty when nothing is buffered."""
        partitions = sorted(self.consumer.assignment())
        if len(partitions) < 2:
            return {}
        self.turn = (self.turn + 1) % len(partitions)
        partitions = partitions[self.turn:] + partitions[:self.turn]
        share = -(-want // len(partitions))
        got = {}
        for tp in partitions:
            if want <= 0:
                break
            records = (await self.consumer.getmany(tp, timeout_ms=0, max_records=min(share, want))).get(tp)
            if records:
                got[tp] = records
                want -= len(records)
        return got

    # offsets

    def stored(self, offsets: dict[tuple[str, int], int]) -> None:
        """A batch's next offsets are in SQL: Kafka's committed offsets may follow (see `_commit_kafka`)."""
        for (topic, partition), offset in offsets.items():
            self.to_commit[TopicPartition(topic, partition)] = offset

    async def _commit_kafka(self) -> None:
        """Commit to Kafka what SQL holds already, for the partitions still assigned (lag tools read these)."""
        assigned = self.consumer.assignment()
        pending = {tp: o for tp, o in self.to_commit.items() if tp in assigned}
        self.to_commit = {}
        if pending:
            try:
                await self.consumer.commit(pending)
            except KafkaError as exc:  # a rebalance is under way: SQL holds the offsets, the next commit catches up
                log.debug("committing offsets to Kafka failed (%s); SQL holds them", exc)

    async def partitions_revoked(self, revoked) -> None:
        self.generation += 1
        async with self.lock:
            await self.batches.drain()  # the batch in flight is stored before its partitions move
        await self._commit_kafka()

    async def partitions_assigned(self, assigned) -> None:
        loop = asyncio.get_running_loop()
        # a database outage is waited out here: the consumer fetches nothing until the partitions are positioned
        stored = await retry_forever(lambda: loop.run_in_executor(None, self.stored_offsets),
                                     "reading stored offsets after a rebalance")
        resume = {}
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)
                resume[tp] = offset
        log.info("partitions assigned: %s; %d resume from stored offsets", _describe(assigned) or "none", len(resume))
        if resume:
            try:
                await self.consumer.commit(resume)
            except KafkaError as exc:
                log.debug("committing stored offsets to Kafka failed (%s)", exc)
        self.on_assigned({(tp.topic, tp.partition): stored.get((tp.topic, tp.partition)) for tp in assigned})


def _describe(partitions) -> str:
    """posts[0,1] tickets[2]: partitions grouped by topic, for a log line."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{topic}[{','.join(map(str, sorted(ps)))}]" for topic, ps in sorted(by_topic.items()))
