"""The worker's progress line (streams/progress.py): counts per interval, rate, dead letters, lag per topic."""

from types import SimpleNamespace

from streamsense.streams.progress import Progress


def _processed(results: int, dead: int, offsets: dict, skipped: dict | None = None):
    return SimpleNamespace(batch=SimpleNamespace(predictions=[{}] * results, dead_letters=[{}] * dead,
                                                 offsets=offsets), skipped=skipped or {})


def test_a_line_covers_its_interval_and_the_lag_of_assigned_partitions():
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    progress.assigned({("posts", 0): 10, ("posts", 1): None, ("tickets", 0): 0})
    progress.stored(_processed(60, 4, {("posts", 0): 74}))
    progress.stored(_processed(30, 0, {("tickets", 0): 30, ("posts", 1): 5}))
    now[0] = 110.0
    marks = {("posts", 0): 100, ("posts", 1): 7, ("tickets", 0): 30}
    line = progress.line(lambda t, p: marks.get((t, p)))
    assert line == ("progress: 94 messages in 2 batches in the last 10 s (9.4 msg/s): 90 results, 4 dead letters; "
                    "94 since start; lag posts=28, tickets=0")
    now[0] = 130.0
    assert progress.line(lambda t, p: None) == ("progress: 0 messages in 0 batches in the last 20 s (0.0 msg/s): "
                                                "0 results, 0 dead letters; 94 since start; lag unknown")


def test_offsets_only_move_forward_and_a_new_assignment_replaces_the_old():
    progress = Progress(clock=lambda: 0.0)
    progress.assigned({("posts", 0): 50})
    progress.stored(_processed(1, 0, {("posts", 0): 40}))  # a replayed batch from before
    assert progress.next_offsets == {("posts", 0): 50}
    progress.assigned({("posts", 1): 3})
    assert progress.next_offsets == {("posts", 1): 3}


def test_skipped_messages_are_counted_in_the_line():
    clock = iter([0.0, 10.0]).__next__
    progress = Progress(clock=clock)
    progress.stored(_processed(3, 1, {("cdc", 0): 9}, {("cdc", "delete"): 4, ("cdc", "tombstone"): 1}))
    line = progress.line(lambda topic, partition: 9)
    assert "9 messages in 1 batches" in line and "3 results, 1 dead letters, 5 skipped;" in line
    assert "9 since start" in line
