"""Retry with exponential backoff, for sinks and start-up waits alike."""

import asyncio
import logging
import time

log = logging.getLogger(__name__)


async def retry_forever(attempt, what: str, max_backoff: float = 10.0, starting: tuple[type, ...] = (),
                        patience: float = 0.0, waiting: str | None = None):
    """Await `attempt()` until it succeeds, backing off exponentially (0.2 s doubling up to `max_backoff`).

    A failure logs a warning, `WHAT failed (ERROR); retrying in Ns`, except one of the `starting` kinds (what a
    service that is still starting answers) within the first `patience` seconds: that is the normal course of a
    start-up and logs at info, `WAITING (ERROR); next try in Ns`."""
    delay = 0.2
    began = time.monotonic()
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, starting) and time.monotonic() - began < patience:
                log.info("%s (%s); next try in %.1fs", waiting or f"waiting: {what}", type(exc).__name__, delay)
            else:
                log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
