"""The worker's commit protocol: how one processed batch becomes durable, in the order that keeps the guarantees.

1. **publish**: the batch's output messages (predictions, dead letters) are produced and acknowledged by the broker;
2. **store**: its result rows, dead-letter rows, alert rows and the next offsets of its partitions are written in
   **one** SQL transaction (the offsets are what a restart resumes from, so a batch counts as done only here);
3. **outbox**: alerts stored in step 2 and not yet acknowledged by the alerts topic are published, then marked.

A crash before 2 replays the batch (its outputs are produced again: at-least-once topics, consumers dedupe on id;
SQL ignores rows it already has). A crash between 2 and 3 leaves alerts in the outbox, published by the next flush
or the next worker's start. Each sink retries until it lands (database or broker outages wait); anything else
propagates to the caller, which ends the worker so that it restarts from the stored offsets.
"""

import time
from collections.abc import Callable

from streamsense.streams.stages import NoStages, Stages


class CommitProtocol:
    """`await commit(processed)` runs publish → store → outbox for one batch; `on_stored(processed, seconds)` is
    called once the SQL transaction committed (metrics, the starvation watch), before the outbox is flushed."""

    def __init__(self, topic_sink, sql_sink, outbox, on_stored: Callable[[object, float], None] | None = None,
                 on_published_alerts: Callable[[list[dict]], None] | None = None, stages: Stages | None = None):
        self.topic_sink, self.sql_sink, self.outbox = topic_sink, sql_sink, outbox
        self.stages = stages or NoStages()
        self.on_stored = on_stored or (lambda processed, seconds: None)
        self.on_published_alerts = on_published_alerts or (lambda alerts: None)

    async def commit(self, processed) -> list[dict]:
        """Make one batch durable; returns the alerts the outbox published."""
        started = time.perf_counter()
        with self.stages("produce"):
            await self.topic_sink.publish(processed.outgoing)
        with self.stages("sql"):
            stored_alerts = await self.sql_sink.write(processed.batch)
        self.on_stored(processed, time.perf_counter() - started)
        with self.stages("alerts"):
            return await self.flush_outbox(stored_alerts)

    async def flush_outbox(self, stored_alerts: int | None = None) -> list[dict]:
        """Publish alerts left in the outbox (also those a crashed worker stored but never published);
        `stored_alerts`: how many the batch just stored, if known (none: the outbox is not queried)."""
        published = await self.outbox.flush(stored_alerts)
        self.on_published_alerts(published)
        return published
