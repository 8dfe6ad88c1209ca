"""Sinks: output topics (produce and wait for the broker's acks) and the SQL store, both retried until they land.
The alert outbox is in streams/alerting/outbox.py."""

import asyncio

from streamsense.streams.contracts import Outgoing
from streamsense.streams.retry import retry_forever


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
