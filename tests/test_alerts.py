"""Alert rules: validation, per-message rules, windowed rules over SQL, cooldown, rate limit, outbox."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from models.risk import Risk
from models.classifier import Prediction, Sentiment
from streams.alerts import AlertRules, AlertRulesError, alert_message
from streams.sinks import AlertOutbox
from streams.store import Batch, Store, alerts

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def rules_from(text: str, tmp_path) -> AlertRules:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return AlertRules.load(path)


def prediction(sentiment="neutral", negative=0.1, level="low", score=0.1, labels=None, signals=()):
    scores = {"negative": negative, "neutral": 1 - negative - 0.05, "positive": 0.05}
    return Prediction(Sentiment(sentiment, scores),
                      Risk(level, score, labels or {"offensive": 0.1, "hate": 0.0, "complaint": 0.2}, list(signals), "x"),
                      False)


def row(i: int, at: datetime, sentiment: str, grp="acme", kind="post") -> dict:
    neg = 0.9 if sentiment == "negative" else 0.05
    return {"kind": kind, "message_id": f"{grp}-{i}-{at.timestamp()}", "grp": grp, "author": None, "priority": None,
            "text": f"message {i}", "text_sha256": "0" * 64, "truncated": False, "sentiment": sentiment,
            "p_negative": neg, "p_neutral": 1 - neg - 0.01, "p_positive": 0.01, "risk_level": "low",
            "risk_score": neg / 2, "risk_labels": {}, "risk_signals": [], "risk_explanation": "", "model_version": "m:1",
            "source_topic": "posts", "source_partition": 0, "source_offset": i, "created_at": None, "produced_at": at}


@pytest.mark.parametrize("text, message", [
    ('[[rules]]\nname="a"\nkind="nope"\n', "does not match any of the expected tags"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="huge"\n', "min_level"),
    ('[[rules]]\nname="a"\nkind="label_score"\nlabel="hate"\nthreshold=2\n', "threshold"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\n[[rules]]\nname="a"\nkind="risk_level"\nmin_level="low"\n',
     "rule names must be unique: a"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\ntypo=1\n', "typo"),
    ("[[rules]\n", "alert rules"),
])
def test_invalid_rules_fail_at_load_with_a_clear_error(tmp_path, text, message):
    with pytest.raises(AlertRulesError, match="alert rules .*") as err:
        rules_from(text, tmp_path)
    assert message in str(err.value)


def test_shipped_rules_load():
    names = {r.name for r in AlertRules.load().rules}
    assert {"high_risk", "negative_share_spike", "volume_spike"} <= names


def test_per_message_rules(tmp_path):
    rules = rules_from('''
[[rules]]
name = "risky"
kind = "risk_level"
min_level = "high"
[[rules]]
name = "hate"
kind = "label_score"
label = "hate"
threshold = 0.8
[[rules]]
name = "legal"
kind = "signal"
signals = ["legal_threat"]
severity = "critical"
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.8
groups = ["acme"]
''', tmp_path)
    calm = rules.per_message("post", "1", "acme", "hi", prediction(), "m:1", T0)
    assert calm == []
    hits = rules.per_message("post", "2", "acme", "see you in court", prediction(
        "negative", 0.9, "critical", 0.97, {"hate": 0.85}, ["legal_threat"]), "m:1", T0)
    assert {a["rule"]: a["severity"] for a in hits} == {"risky": "critical", "hate": "critical", "legal": "critical",
                                                        "watched": "critical"}
    assert {a["key"] for a in hits} == {"post:2", "post:acme"}
    again = rules.per_message("post", "2", "acme", "see you in court", prediction(
        "negative", 0.9, "critical", 0.97, {"hate": 0.85}, ["legal_threat"]), "m:1", T0)
    assert [a["id"] for a in again] == [a["id"] for a in hits]
    assert rules.per_message("post", "3", "other", "x", prediction("negative", 0.95), "m:1", T0) == []


WINDOWED = '''
[[rules]]
name = "neg_spike"
kind = "negative_share"
window_seconds = 60
baseline_windows = 3
factor = 2.0
min_messages = 10
'''


def test_negative_share_spike_fires_once_per_window_and_survives_restart(tmp_path, database_url):
    rules = rules_from(WINDOWED, tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    # three calm minutes: 1 negative in 10
    for minute in range(3):
        at = T0 + timedelta(minutes=minute)
        store.write(Batch([row(i, at, "negative" if i == 0 else "neutral") for i in range(10)], [], [], {}))
    assert store.count(alerts) == 0
    # the fourth minute turns: 6 negative in 10, written in two batches
    spike = T0 + timedelta(minutes=3, seconds=5)
    rows = [row(i, spike, "negative" if i < 6 else "neutral") for i in range(10)]
    store.write(Batch(rows[:5], [], [], {}))  # below min_messages yet
    assert store.count(alerts) == 0
    store.write(Batch(rows[5:], [], [], {}))
    [alert] = store.unpublished_alerts()
    assert alert["rule"] == "neg_spike" and alert["key"] == "post:acme"
    assert alert["window_start"].replace(tzinfo=timezone.utc) == T0 + timedelta(minutes=3)
    assert "60%" in alert["summary"] and len(alert["evidence"]) == 5
    assert all(e["excerpt"] for e in alert["evidence"])
    # a new store (a restarted worker) reading the same window does not raise it again
    again = Store(database_url, "g", rules)
    again.write(Batch([row(99, spike, "negative")], [], [], {}))
    assert again.count(alerts) == 1
    message = alert_message(alert)
    assert message["window"]["start"].startswith("2026-11-01T12:03:00")
    store.dispose()
    again.dispose()


def test_volume_spike(tmp_path, database_url):
    rules = rules_from('[[rules]]\nname="vol"\nkind="volume"\nwindow_seconds=60\nbaseline_windows=2\nfactor=3\n'
                       'min_messages=5\n', tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    for minute in range(2):
        store.write(Batch([row(i, T0 + timedelta(minutes=minute), "neutral") for i in range(3)], [], [], {}))
    store.write(Batch([row(i, T0 + timedelta(minutes=2), "neutral") for i in range(9)], [], [], {}))
    assert store.count(alerts) == 0  # 9 is not > 3 x 3
    store.write(Batch([row(i, T0 + timedelta(minutes=2, seconds=30), "neutral") for i in range(1)], [], [], {}))
    assert [a["rule"] for a in store.unpublished_alerts()] == ["vol"]
    store.dispose()


def test_cooldown_and_rate_limit(tmp_path, database_url):
    rules = rules_from('''
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.5
groups = ["acme"]
cooldown_seconds = 300
[[rules]]
name = "risky"
kind = "risk_level"
min_level = "high"
max_per_minute = 2
''', tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    angry = prediction("negative", 0.9, "high", 0.8)
    candidates = []
    for i, offset in enumerate((0, 10, 20, 400)):
        candidates += rules.per_message("post", str(i), "acme", "bad", angry, "m:1", T0 + timedelta(seconds=offset))
    store.write(Batch([], candidates, [], {}))
    kept = store.unpublished_alerts()
    watched = sorted(a["created_at"].replace(tzinfo=timezone.utc) for a in kept if a["rule"] == "watched")
    assert watched == [T0, T0 + timedelta(seconds=400)]  # 10 s and 20 s fall in the cooldown
    risky = sorted(a["created_at"].replace(tzinfo=timezone.utc) for a in kept if a["rule"] == "risky")
    assert risky == [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=400)]  # the third in a minute is dropped
    store.dispose()


class Recorder:
    def __init__(self):
        self.sent = []

    async def publish(self, messages):
        self.sent += messages


def test_outbox_publishes_each_alert_once(tmp_path, database_url):
    rules = rules_from('[[rules]]\nname="risky"\nkind="risk_level"\nmin_level="high"\n', tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    store.write(Batch([], rules.per_message("ticket", "9", None, "text", prediction(level="critical", score=0.95),
                                            "m:1", T0), [], {}))
    sink = Recorder()
    outbox = AlertOutbox(store, sink, "alerts")
    assert len(asyncio.run(outbox.flush())) == 1
    assert asyncio.run(outbox.flush()) == []
    [message] = sink.sent
    assert message.topic == "alerts" and message.key == b"ticket:9"
    assert b'"severity": "critical"' in message.value
    store.dispose()
