"""Wall time per pipeline stage, summed over the worker's life: what `streamsense bench` reports per message and
`/metrics` exposes as `streamsense_stage_seconds_total{stage}`. One timing per batch and stage, never per message."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The stages in pipeline order (a stage not listed here is reported after them).
STAGES = ("fetch", "decode", "language", "tokenize", "infer", "decide", "shape", "produce", "sql", "alerts", "bookkeeping")


class Stages:
    """`with stages("decode"): ...` adds the block's wall time to the stage; safe from several threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)


#: A clock that keeps nothing, for code run outside a worker (tests, `classify`).
class NoStages(Stages):
    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        yield

    def add(self, name: str, seconds: float) -> None:
        pass
