"""The overlap of tokenization and inference (streams/batching.py), with real threads and an event loop."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from streamsense.streams.batching import OverlappedBatches


def test_next_batch_is_prepared_while_the_current_one_is_in_inference_and_order_is_kept():
    started = {k: threading.Event() for k in range(5)}
    overlapped, delivered = [], []

    def prepare(k):
        started[k].set()
        return k

    def finish(k):
        # Inference of batch k waits (bounded) for batch k+1's preparation to start: it only does if they overlap.
        overlapped.append(started[k + 1].wait(timeout=2) if k + 1 < 5 else True)
        return k

    async def deliver(k):
        await asyncio.sleep(0.01)
        delivered.append(k)

    async def run():
        errors = []
        batches = OverlappedBatches(prepare, finish, deliver, ThreadPoolExecutor(1), ThreadPoolExecutor(1),
                                    errors.append)
        for k in range(5):
            await batches.submit(k)
        await batches.drain()
        return errors

    assert asyncio.run(run()) == []
    assert delivered == [0, 1, 2, 3, 4]
    assert all(overlapped)


def test_failure_in_flight_is_reported_even_when_no_batch_follows():
    def finish(k):
        raise RuntimeError("boom")

    async def run():
        errors = []
        batches = OverlappedBatches(lambda k: k, finish, lambda k: asyncio.sleep(0), ThreadPoolExecutor(1),
                                    ThreadPoolExecutor(1), errors.append)
        await batches.submit(1)
        await asyncio.sleep(0.2)
        return errors

    [error] = asyncio.run(run())
    assert str(error) == "boom"


def test_the_model_stage_says_when_it_is_free_before_the_batch_is_delivered():
    """`model_free` clears when a batch enters `finish` and is set once `finish` returns, while `deliver` may
    still run: the batch consumer closes the next batch then (streams/consumer.py)."""
    in_finish, release_finish, release_deliver = threading.Event(), threading.Event(), asyncio.Event()
    seen = {}

    def finish(k):
        in_finish.set()
        release_finish.wait(timeout=5)
        return k

    async def deliver(k):
        await release_deliver.wait()

    async def run():
        batches = OverlappedBatches(lambda k: k, finish, deliver, ThreadPoolExecutor(1), ThreadPoolExecutor(1),
                                    lambda exc: None)
        seen["before"] = batches.model_free.is_set()
        await batches.submit(1)
        await asyncio.get_running_loop().run_in_executor(None, in_finish.wait, 5)
        seen["in finish"] = batches.model_free.is_set()
        release_finish.set()
        await asyncio.wait_for(batches.model_free.wait(), timeout=5)
        seen["delivering"] = not batches.inflight.done()
        release_deliver.set()
        await batches.drain()
        seen["after"] = batches.model_free.is_set()

    asyncio.run(run())
    assert seen == {"before": True, "in finish": False, "delivering": True, "after": True}


def test_the_model_stage_is_free_again_after_a_failure():
    def finish(k):
        raise RuntimeError("boom")

    async def run():
        errors = []
        batches = OverlappedBatches(lambda k: k, finish, lambda k: asyncio.sleep(0), ThreadPoolExecutor(1),
                                    ThreadPoolExecutor(1), errors.append)
        await batches.submit(1)
        await asyncio.wait_for(batches.model_free.wait(), timeout=5)
        await asyncio.sleep(0.05)
        return errors

    [error] = asyncio.run(run())
    assert str(error) == "boom"
