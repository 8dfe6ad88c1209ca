"""Retry with exponential backoff, for sinks and start-up waits alike."""

import asyncio
import logging

log = logging.getLogger(__name__)


async def retry_forever(attempt, what: str, max_backoff: float = 10.0):
    """Await `attempt()` until it succeeds, backing off exponentially (0.2 s doubling up to `max_backoff`)."""
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
