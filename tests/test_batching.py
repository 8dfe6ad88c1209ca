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
