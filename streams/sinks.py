"""Sinks: output topics (produce and wait for the broker's acks) and the SQL store, both retried until they land."""

import asyncio
import json

from streamsense.streams.alerts import alert_message
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


class AlertOutbox:
    """Publishes alerts the store kept but the alerts topic has not acknowledged yet (also those left by a crash)."""

    def __init__(self, store, topic_sink: TopicSink, topic: str, executor=None):
        self.store, self.topic_sink, self.topic, self.executor = store, topic_sink, topic, executor
        self.lock = asyncio.Lock()  # agents share one outbox: publish each pending alert once

    async def flush(self) -> list[dict]:
        """Publish what is pending; returns the alerts published."""
        async with self.lock:
            return await self._flush()

    async def _flush(self) -> list[dict]:
        loop = asyncio.get_running_loop()
        pending = await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.unpublished_alerts),
                                      "reading the alert outbox")
        if pending:
            await self.topic_sink.publish([
                Outgoing(self.topic, row["key"].encode(), json.dumps(alert_message(row)).encode()) for row in pending])
            ids = [row["id"] for row in pending]
            await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.mark_published, ids),
                                "marking alerts published")
        return pending


class SqlSink:
    """Writes a batch's rows and offsets in one transaction, off the event loop."""

    def __init__(self, store, executor=None):
        self.store = store
        self.executor = executor

    async def write(self, batch) -> None:
        loop = asyncio.get_running_loop()
        await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.write, batch), "database write")
