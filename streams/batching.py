"""Overlap: tokenize batch k+1 while batch k is in inference, and deliver batches strictly in arrival order."""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor


class OverlappedBatches:
    """`submit(batch)` runs `prepare` on one executor while the previous batch's `finish` (another executor) and
    `deliver` (async: produce, commit) are still running; `deliver` sees batches in the order they were submitted,
    one at a time. At most one batch is in flight, so memory stays bounded.

    `model_free` is set while no batch is in `finish` (the model stage): the batch consumer closes the batch it is
    gathering as soon as it is set, and lets the batch grow while it is clear (streams/consumer.py)."""

    def __init__(self, prepare: Callable, finish: Callable, deliver: Callable[[object], Awaitable[None]],
                 prepare_pool: Executor, finish_pool: Executor, on_error: Callable[[BaseException], None]):
        self.prepare, self.finish, self.deliver = prepare, finish, deliver
        self.prepare_pool, self.finish_pool, self.on_error = prepare_pool, finish_pool, on_error
        self.inflight: asyncio.Future | None = None
        self.model_free = asyncio.Event()  # binds to the running loop on first use
        self.model_free.set()

    async def submit(self, batch) -> None:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.prepare_pool, self.prepare, batch)
        await self.drain()
        self.model_free.clear()
        self.inflight = asyncio.ensure_future(self._complete(prepared))
        self.inflight.add_done_callback(self._check)

    async def _complete(self, prepared) -> None:
        try:
            processed = await asyncio.get_running_loop().run_in_executor(self.finish_pool, self.finish, prepared)
        finally:
            self.model_free.set()  # the next batch may close now; its preparation overlaps this one's delivery
        await self.deliver(processed)

    def _check(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.on_error(future.exception())

    async def drain(self) -> None:
        """Wait for the batch in flight, if any."""
        if self.inflight is not None:
            inflight, self.inflight = self.inflight, None
            await inflight
