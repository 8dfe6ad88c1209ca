"""The alert outbox: alerts the store kept in a batch's transaction are published to the alerts topic afterwards and
marked once acknowledged; those a crashed worker stored but never published go out at the next flush."""

import asyncio

from streamsense.streams.alerting.rules import alert_message
from streamsense.streams.contracts import Outgoing
from streamsense.streams.outputs import JSON_OUTPUT
from streamsense.streams.retry import retry_forever


class AlertOutbox:
    """Publishes alerts the store kept but the alerts topic has not acknowledged yet (also those left by a crash)."""

    def __init__(self, store, topic_sink, topic: str, executor=None, encode=None):
        self.store, self.topic_sink, self.topic, self.executor = store, topic_sink, topic, executor
        self.encode = encode or JSON_OUTPUT.alert  # an alert's value format (streams/outputs.py)
        self.lock = asyncio.Lock()  # the left-over flush at start and the batches share one outbox
        self.may_hold = True  # until a flush succeeds: a crashed worker may have left alerts

    async def flush(self, stored: int | None = None) -> list[dict]:
        """Publish what is pending; returns the alerts published. `stored`: how many alerts the batch just stored
        (None: unknown); with 0 after a successful flush the outbox is known to be empty and is not queried."""
        async with self.lock:
            if stored == 0 and not self.may_hold:
                return []
            self.may_hold = False
            try:
                return await self._flush()
            except BaseException:
                self.may_hold = True
                raise

    async def _flush(self) -> list[dict]:
        loop = asyncio.get_running_loop()
        pending = await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.unpublished_alerts),
                                      "reading the alert outbox")
        if pending:
            await self.topic_sink.publish([
                Outgoing(self.topic, row["key"].encode(), self.encode(alert_message(row))) for row in pending])
            ids = [row["id"] for row in pending]
            await retry_forever(lambda: loop.run_in_executor(self.executor, self.store.mark_published, ids),
                                "marking alerts published")
        return pending
