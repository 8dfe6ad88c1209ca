from datetime import datetime, timezone

from streamsense.streams.contracts import Batch
from streamsense.streams.schema import alerts, dead_letters, predictions
from streamsense.streams.store import Store


def _row(message_id: str, sentiment: str = "neutral") -> dict:
    return {
        "kind": "post", "message_id": message_id, "grp": "acme", "author": "a", "priority": None, "text": "t",
        "text_sha256": "0" * 64, "truncated": False, "sentiment": sentiment, "p_negative": 0.1, "p_neutral": 0.8,
        "p_positive": 0.1, "risk_level": "low", "risk_score": 0.1, "risk_labels": {"offensive": 0.1},
        "risk_signals": [], "risk_explanation": "no risk signal", "model_version": "m:1", "source_topic": "posts",
        "source_partition": 0, "source_offset": 1, "created_at": None,
        "produced_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "lang": "en", "lang_declared": "en", "supported": True,
    }


def test_replayed_batch_adds_nothing_and_first_write_wins(database_url):
    store = Store(database_url, "group-a")
    store.migrate()
    alert = {"id": "a" * 32, "rule": "risk_level", "severity": "high", "key": "post:1", "window_start": None,
             "window_end": None, "summary": "s", "evidence": [], "model_version": "m:1",
             "created_at": datetime.now(timezone.utc)}
    dead = {"source_topic": "posts", "source_partition": 0, "source_offset": 9, "error": "bad", "payload": b"\xff"}
    batch = Batch([_row("1"), _row("2")], [alert], [dead], {("posts", 0): 10})
    store.write(batch)
    store.write(batch)
    store.write(Batch([_row("1", sentiment="negative")], [], [], {}))
    assert store.count(predictions) == 2
    assert store.count(alerts) == 1
    assert store.count(dead_letters) == 1
    with store.engine.connect() as conn:
        assert conn.execute(predictions.select().where(predictions.c.message_id == "1")).one().sentiment == "neutral"
    store.dispose()


def test_offsets_only_move_forward_and_are_per_group(database_url):
    store = Store(database_url, "group-a")
    store.migrate()
    store.write(Batch([], [], [], {("posts", 0): 10, ("posts", 1): 4}))
    store.write(Batch([], [], [], {("posts", 0): 7, ("tickets", 0): 3}))
    assert store.next_offsets(["posts", "tickets"]) == {("posts", 0): 10, ("posts", 1): 4, ("tickets", 0): 3}
    assert Store(database_url, "group-b").next_offsets(["posts"]) == {}
    store.dispose()


def test_migrate_is_repeatable(database_url):
    store = Store(database_url, "g")
    store.migrate()
    store.migrate()
    assert store.count(predictions) == 0
    store.dispose()


def test_a_half_stored_batch_adds_and_counts_only_its_new_half(database_url):
    from streamsense.streams.alerting.rules import AlertRules, window_index
    from streamsense.streams.schema import alert_windows

    rules = AlertRules.model_validate({"rules": [{"name": "v", "kind": "volume", "window_seconds": 60,
                                                  "baseline_windows": 1, "factor": 3}]})
    store = Store(database_url, "group-a", rules)
    store.migrate()
    rows = [{**_row(str(i), "negative" if i % 2 else "neutral"), "source_offset": i} for i in range(8)]
    store.write(Batch(rows[:4], [], [], {}))
    store.write(Batch(rows, [], [], {}))  # the first half is stored already
    store.write(Batch(rows, [], [], {}))  # a replay
    assert store.count(predictions) == 8
    with store.engine.connect() as conn:
        [counter] = conn.execute(alert_windows.select()).all()
    assert (counter.window_index, counter.messages, counter.negatives) == (
        window_index(rows[0]["produced_at"], 60), 8, 4)
    store.dispose()


def test_write_says_how_many_alerts_it_stored(database_url):
    from streamsense.streams.alerting.rules import AlertRules

    store = Store(database_url, "group-a", AlertRules.model_validate(
        {"rules": [{"name": "risk_level", "kind": "risk_level", "min_level": "high"}]}))
    store.migrate()
    alert = {"id": "a" * 32, "rule": "risk_level", "severity": "high", "key": "post:1", "window_start": None,
             "window_end": None, "summary": "s", "evidence": [], "model_version": "m:1",
             "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    assert store.write(Batch([_row("1")], [alert, {**alert, "id": "b" * 32}], [], {})) == 2
    assert store.write(Batch([_row("1")], [alert], [], {})) == 0  # stored already
    assert store.count(alerts) == 2
    store.dispose()
