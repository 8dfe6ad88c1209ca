"""StarvationWatch: which partitions count as starved (the faust flow-control workaround in streams/app.py)."""

from streamsense.streams.watchdog import StarvationWatch

P0, P1, P2 = ("posts", 0), ("posts", 1), ("posts", 2)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch_at(clock):
    watch = StarvationWatch(after=60, clock=clock)
    watch.assigned({P0: 100, P1: 100, P2: 100})
    return watch


def test_a_partition_left_behind_while_others_progress_is_starved():
    clock = Clock()
    watch = watch_at(clock)
    highwater = {P0: 5000, P1: 5000, P2: 5000}
    for t in range(10, 130, 10):
        clock.now = t
        watch.advanced({P0: 100 + t * 10, P1: 100 + t * 10})
    assert watch.starved(lambda *tp: highwater[tp]) == [P2]


def test_nothing_is_starved_when_the_whole_worker_is_stalled():
    clock = Clock()
    watch = watch_at(clock)
    clock.now = 300  # e.g. the database is down: no partition progresses
    assert watch.starved(lambda *tp: 5000) == []


def test_a_caught_up_or_unknown_partition_is_not_starved():
    clock = Clock()
    watch = watch_at(clock)
    clock.now = 120
    watch.advanced({P0: 4000})
    highwater = {P0: 5000, P1: 100, P2: None}  # P1 has nothing to read; P2's high-water mark is not known yet
    assert watch.starved(lambda *tp: highwater[tp]) == []


def test_reset_gives_a_resumed_partition_another_period():
    clock = Clock()
    watch = watch_at(clock)
    clock.now = 100
    watch.advanced({P0: 200})
    assert watch.starved(lambda *tp: 5000) == [P1, P2]
    watch.reset([P1, P2])
    clock.now = 150
    watch.advanced({P0: 300})
    assert watch.starved(lambda *tp: 5000) == []
    clock.now = 170
    watch.advanced({P0: 400, P1: 150})
    assert watch.starved(lambda *tp: 5000) == [P2]


def test_reassignment_starts_the_clock_again():
    clock = Clock()
    watch = watch_at(clock)
    clock.now = 100
    watch.advanced({P0: 200})
    watch.assigned({P0: 200, P1: 100})
    assert watch.starved(lambda *tp: 5000) == []
