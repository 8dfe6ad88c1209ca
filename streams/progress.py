"""The worker's progress line, logged at a fixed interval so an operator can tell it is working: results and
batches stored since the last line, the rate, dead letters, messages skipped (declared inputs: Debezium deletes,
tombstones, on_error = "skip"), and the lag per input topic."""

import time
from collections.abc import Callable, Mapping

from streamsense.streams.contracts import Processed


class Progress:
    """Fed with each stored batch (`stored`); `line(highwater)` gives the text for the interval since the last line
    and starts a new interval. `highwater(topic, partition)` is the consumer's high-water mark, if known."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.since = clock()
        self.results = self.dead = self.skipped = self.batches = 0
        self.total = 0
        self.next_offsets: dict[tuple[str, int], int] = {}

    def stored(self, processed: Processed) -> None:
        batch = processed.batch
        self.results += len(batch.predictions)
        self.dead += len(batch.dead_letters)
        skipped = sum(processed.skipped.values())
        self.skipped += skipped
        self.total += skipped
        self.batches += 1
        self.total += len(batch.predictions) + len(batch.dead_letters)
        for tp, offset in batch.offsets.items():
            if offset > self.next_offsets.get(tp, -1):
                self.next_offsets[tp] = offset

    def assigned(self, offsets: Mapping[tuple[str, int], int | None]) -> None:
        """Partitions assigned now, with their stored offsets (None: nothing stored yet, so no lag is reported for
        that partition until its first batch is stored)."""
        self.next_offsets = {tp: o for tp, o in offsets.items() if o is not None}

    def line(self, highwater: Callable[[str, int], int | None]) -> str:
        now = self.clock()
        seconds = max(now - self.since, 1e-9)
        lag: dict[str, int] = {}
        for (topic, partition), offset in sorted(self.next_offsets.items()):
            mark = highwater(topic, partition)
            if mark is not None:
                lag[topic] = lag.get(topic, 0) + max(mark - offset, 0)
        handled = self.results + self.dead + self.skipped
        text = (f"progress: {handled} messages in {self.batches} batches in the last {seconds:.0f} s "
                f"({handled / seconds:.1f} msg/s): {self.results} results, {self.dead} dead letters"
                + (f", {self.skipped} skipped" if self.skipped else "") + "; "
                f"{self.total} since start; lag " + (", ".join(f"{t}={n}" for t, n in lag.items()) or "unknown"))
        self.since, self.results, self.dead, self.skipped, self.batches = now, 0, 0, 0, 0
        return text
