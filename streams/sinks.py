"""Sinks: output topics (produce and wait for the broker's acks) and the SQL store, both retried until they land."""

import asyncio
import logging

from streams.pipeline import Outgoing

log = logging.getLogger(__name__)


async def retry_forever(attempt, what: str, max_backoff: float = 10.0):
    """Await `attempt()` until it succeeds, backing off exponentially; consumption waits meanwhile."""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)


class TopicSink:
    """Produces a batch of messages with one flush and returns once the broker acknowledged all of them."""

    def __init__(self, producer):
        self.producer = producer

    async def _send_all(self, messages: list[Outgoing]) -> None:
        futures = [
            await self.producer.send(m.topic, m.key, m.value, None, None, m.headers or None) for m in messages
        ]
        await asyncio.gather(*futures)

    async def publish(self, messages: list[Outgoing]) -> None:
        if messages:
            await retry_forever(lambda: self._send_all(messages), f"producing {len(messages)} messages")


class SqlSink:
    """Writes a batch's rows and offsets in one transaction, off the event loop."""

    def __init__(self, store, executor=None):
        self.store = store
        self.executor = executor

    async def write(self, batch) -> None:
        loop = asyncio.get_running_loop()
        await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.write, batch), "database write")
