"""Starved partitions: a workaround for faust-streaming, which under sustained load was seen to stop fetching one
partition for minutes while the others went on (docs/reliability.md). Nothing is lost then, but results and alerts
for that partition's keys wait; the watch finds such a partition so the app can resume its fetching."""

import time
from collections.abc import Callable, Iterable, Mapping

Partition = tuple[str, int]


class StarvationWatch:
    """Progress per partition, fed with each committed batch's next offsets. A partition is starved when it has
    unread messages (high-water mark past its next offset) and made no progress for `after` seconds while another
    partition of this worker did: a worker that is slow as a whole (database down, model slow) starves nothing."""

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.clock = clock
        self.next_offset: dict[Partition, int] = {}
        self.progressed_at: dict[Partition, float] = {}

    def assigned(self, offsets: Mapping[Partition, int]) -> None:
        """Partitions (re)assigned, with the offsets they resume from: the clock starts now for each."""
        now = self.clock()
        self.next_offset = dict(offsets)
        self.progressed_at = {tp: now for tp in offsets}

    def advanced(self, offsets: Mapping[Partition, int]) -> None:
        now = self.clock()
        for tp, offset in offsets.items():
            if offset > self.next_offset.get(tp, -1):
                self.next_offset[tp] = offset
                self.progressed_at[tp] = now

    def starved(self, highwater: Callable[[str, int], int | None]) -> list[Partition]:
        now = self.clock()
        stale = {tp for tp, at in self.progressed_at.items() if now - at > self.after}
        if len(stale) == len(self.progressed_at):
            return []
        return sorted(tp for tp in stale if (highwater(*tp) or 0) > self.next_offset[tp])

    def reset(self, partitions: Iterable[Partition]) -> None:
        """Give these partitions another `after` seconds (once their fetching has been resumed)."""
        for tp in partitions:
            self.progressed_at[tp] = self.clock()
