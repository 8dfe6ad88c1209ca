"""Alert rules: validation, per-message rules and their families (one alert per message and family), windowed rules
over SQL and their window counters, cooldown, rate limit, outbox."""

import asyncio
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from streamsense.models.classifier import Prediction, Sentiment
from streamsense.models.risk import LEVELS, Risk
from streamsense.streams.alerting.outbox import AlertOutbox
from streamsense.streams.alerting.rules import AlertRules, AlertRulesError, alert_id, alert_message, window_index
from streamsense.streams.contracts import Batch
from streamsense.streams.schema import alert_window_lengths, alert_windows, alerts, predictions
from streamsense.streams.store import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def rules_from(text: str, tmp_path) -> AlertRules:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return AlertRules.load(path)


def prediction(sentiment="neutral", negative=0.1, level="low", score=0.1, labels=None, signals=(), explanation="x"):
    scores = {"negative": negative, "neutral": 1 - negative - 0.05, "positive": 0.05}
    return Prediction(Sentiment(sentiment, scores),
                      Risk(level, score, labels or {"offensive": 0.1, "hate": 0.0, "complaint": 0.2}, list(signals),
                           explanation), False)


def row(i: int, at: datetime, sentiment: str, grp="acme", kind="post") -> dict:
    neg = 0.9 if sentiment == "negative" else 0.05
    return {"kind": kind, "message_id": f"{grp}-{i}-{at.timestamp()}", "grp": grp, "author": None, "priority": None,
            "text": f"message {i}", "text_sha256": "0" * 64, "truncated": False, "sentiment": sentiment,
            "p_negative": neg, "p_neutral": 1 - neg - 0.01, "p_positive": 0.01, "risk_level": "low",
            "risk_score": neg / 2, "risk_labels": {}, "risk_signals": [], "risk_explanation": "", "model_version": "m:1",
            "source_topic": "posts", "source_partition": 0, "source_offset": i, "created_at": None, "produced_at": at,
            "lang": "en", "lang_declared": None, "supported": True}


@pytest.mark.parametrize("text, message", [
    ('[[rules]]\nname="a"\nkind="nope"\n', "does not match any of the expected tags"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="huge"\n', "min_level"),
    ('[[rules]]\nname="a"\nkind="label_score"\nlabel="hate"\nthreshold=2\n', "threshold"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\n[[rules]]\nname="a"\nkind="risk_level"\nmin_level="low"\n',
     "rule names must be unique: a"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\ntypo=1\n', "typo"),
    ("[[rules]\n", "alert rules"),
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\nfamily="a b"\n', "family"),
    ('[[rules]]\nname="v"\nkind="volume"\nwindow_seconds=60\nbaseline_windows=1\nfactor=2\nfamily="x"\n',
     "family"),  # windowed rules have no family
    ('[[rules]]\nname="a"\nkind="risk_level"\nmin_level="high"\n[[rules]]\nname="b"\nkind="negative_sentiment"\n'
     'min_confidence=0.5\ngroups=["acme"]\nfamily="message_risk"\n', "family message_risk mixes"),
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
    # one alert for the message's family (three hits of equal severity: the first in file order names it), one for
    # the group's negative_sentiment rule, a family of its own
    assert {a["rule"]: a["severity"] for a in hits} == {"risky": "critical", "watched": "critical"}
    assert [a["key"] for a in hits] == ["post:2", "post:acme"]
    assert [r["rule"] for r in hits[0]["evidence"][0]["reasons"]] == ["risky", "hate", "legal"]
    again = rules.per_message("post", "2", "acme", "see you in court", prediction(
        "negative", 0.9, "critical", 0.97, {"hate": 0.85}, ["legal_threat"]), "m:1", T0)
    assert [a["id"] for a in again] == [a["id"] for a in hits]
    assert rules.per_message("post", "3", "other", "x", prediction("negative", 0.95), "m:1", T0) == []


# --- one alert per message and family ----------------------------------------------------------------------------

def threat(level="critical", hate=0.93, signals=("legal_threat",), negative=0.9):
    return prediction("negative", negative, level, 0.97, {"offensive": 0.1, "hate": hate, "complaint": 0.2}, signals)


def test_one_alert_per_message_and_family_with_every_reason():
    """The shipped rules: high_risk and legal_or_fraud (family message_risk) hit the same message and raise one alert;
    the watched-brand rule, keyed by group, stays an alert of its own."""
    rules = AlertRules.load()
    merged, watched = rules.per_message("post", "123", "acme-air", "see you in court", threat(), "m:1", T0)
    assert (merged["rule"], merged["severity"], merged["key"]) == ("high_risk", "critical", "post:123")
    assert merged["id"] == alert_id("message_risk", "post:123")
    [evidence] = merged["evidence"]
    assert evidence["message_id"] == "123" and evidence["excerpt"] == "see you in court"
    assert evidence["reasons"] == [
        {"rule": "high_risk", "severity": "critical", "reason": "critical risk (score 0.97): x"},
        {"rule": "legal_or_fraud", "severity": "critical", "reason": "signals legal_threat"}]
    assert merged["summary"] == "post 123: critical risk (score 0.97): x; signals legal_threat"
    assert (watched["rule"], watched["key"]) == ("negative_on_watched_brand", "post:acme-air")
    assert [r["rule"] for r in watched["evidence"][0]["reasons"]] == ["negative_on_watched_brand"]
    assert watched["id"] == alert_id("negative_on_watched_brand", "post:acme-air", "123")  # as before families
    assert alert_message(merged)["evidence"][0]["reasons"] == evidence["reasons"]


def test_a_signal_reason_quotes_only_its_own_signals():
    why = "legal_threat: 'my lawyer' (rule); complaint 0.81 (model); churn: 'cancel my account' (rule)"
    p = prediction(level="critical", score=0.95, signals=("legal_threat", "churn"), explanation=why)
    [alert] = AlertRules.load().per_message("post", "1", None, "t", p, "m:1", T0)
    assert [r["reason"] for r in alert["evidence"][0]["reasons"]] == [
        f"critical risk (score 0.95): {why}", "signals legal_threat: 'my lawyer' (rule)"]
    # the summary says it once: the signal rule's quote is already in the risk_level reason
    assert alert["summary"] == f"post 1: critical risk (score 0.95): {why}"


@pytest.mark.parametrize("p, rule, severity, reasons", [
    (threat(), "high_risk", "critical", ["high_risk", "legal_or_fraud"]),  # a tie: the first in the file
    (threat(level="high"), "legal_or_fraud", "critical", ["legal_or_fraud"]),
    (threat(level="low", signals=("threat_of_harm",)), "legal_or_fraud", "critical", ["legal_or_fraud"]),
    (threat(signals=(), hate=0.99), "high_risk", "critical", ["high_risk"]),  # no rule on the hate head
])
def test_the_merged_alert_has_the_highest_severity_and_an_id_whatever_hit(p, rule, severity, reasons):
    [alert] = AlertRules.load().per_message("ticket", "9", None, "text", p, "m:1", T0)
    assert (alert["rule"], alert["severity"]) == (rule, severity)
    assert [r["rule"] for r in alert["evidence"][0]["reasons"]] == reasons
    assert alert["id"] == alert_id("message_risk", "ticket:9")  # the same for every subset of hits


def test_an_explicit_family_splits_the_alert(tmp_path):
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
family = "abuse"
[[rules]]
name = "legal"
kind = "signal"
signals = ["legal_threat"]
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.8
groups = ["acme"]
family = "brands"
[[rules]]
name = "watched_hard"
kind = "negative_sentiment"
min_confidence = 0.5
groups = ["acme"]
severity = "high"
family = "brands"
[[rules]]
name = "vol"
kind = "volume"
window_seconds = 60
baseline_windows = 1
factor = 2
''', tmp_path)
    alerts_ = rules.per_message("post", "1", "acme", "text", threat(), "m:1", T0)
    assert [(a["rule"], a["key"], [r["rule"] for r in a["evidence"][0]["reasons"]]) for a in alerts_] == [
        ("risky", "post:1", ["risky", "legal"]), ("hate", "post:1", ["hate"]),
        ("watched", "post:acme", ["watched", "watched_hard"])]  # critical (the message's level) over high
    assert [a["id"] for a in alerts_] == [alert_id("message_risk", "post:1"), alert_id("abuse", "post:1"),
                                          alert_id("brands", "post:acme", "1")]
    # the family in effect is in the dump (`streamsense alerts check --json`); windowed rules have none
    assert {r.name: r.model_dump().get("family") for r in rules.rules} == {
        "risky": "message_risk", "hate": "abuse", "legal": "message_risk", "watched": "brands",
        "watched_hard": "brands", "vol": None}
    assert AlertRules.model_validate({"rules": [r.model_dump() for r in rules.rules]}) == rules


def test_a_merged_alert_is_gated_by_its_top_rule(tmp_path, database_url):
    rules = rules_from('''
[[rules]]
name = "risky"
kind = "risk_level"
min_level = "high"
max_per_minute = 1
[[rules]]
name = "legal"
kind = "signal"
signals = ["legal_threat"]
severity = "high"
''', tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    candidates = []
    for i, level in enumerate(("critical", "critical", "low")):
        candidates += rules.per_message("post", str(i), None, "text", threat(level), "m:1", T0 + timedelta(seconds=i))
    assert [a["rule"] for a in candidates] == ["risky", "risky", "legal"]
    store.write(Batch([], candidates, [], {}))
    # the second is over risky's rate, though legal, which hit it too, has none; the third is legal's alone
    kept = sorted(store.unpublished_alerts(), key=lambda a: a["key"])
    assert [(a["key"], a["rule"]) for a in kept] == [("post:0", "risky"), ("post:2", "legal")]
    assert [r["rule"] for r in kept[0]["evidence"][0]["reasons"]] == ["risky", "legal"]  # through the JSON column
    store.dispose()


def test_a_replay_raises_no_second_alert_whatever_hits_this_time(tmp_path, database_url):
    rules = AlertRules.load()
    store = Store(database_url, "g", rules)
    store.migrate()
    store.write(Batch([], rules.per_message("post", "5", None, "text", threat(), "m:1", T0), [], {}))
    # the same message again, then as another model sees it (fewer rules hit): the same id, nothing added
    store.write(Batch([], rules.per_message("post", "5", None, "text", threat(), "m:1", T0), [], {}))
    store.write(Batch([], rules.per_message("post", "5", None, "text", threat("medium", 0.1), "m:2", T0), [], {}))
    [alert] = store.unpublished_alerts()
    assert alert["id"] == alert_id("message_risk", "post:5") and alert["severity"] == "critical"
    store.dispose()


POOL = [  # per-message rules to draw rule files from (repeats allowed: two rules alike)
    {"kind": "risk_level", "min_level": "medium"},
    {"kind": "risk_level", "min_level": "critical", "severity": "low"},
    {"kind": "label_score", "label": "hate", "threshold": 0.5},
    {"kind": "label_score", "label": "offensive", "threshold": 0.8, "severity": "high"},
    {"kind": "signal", "signals": ["legal_threat", "fraud"]},
    {"kind": "signal", "signals": ["churn"], "severity": "critical"},
    {"kind": "negative_sentiment", "min_confidence": 0.5, "groups": ["acme"]},
    {"kind": "negative_sentiment", "min_confidence": 0.8, "groups": ["acme", "globex"], "severity": "high"},
]


@st.composite
def rule_files(draw) -> AlertRules:
    rules = []
    for i, j in enumerate(draw(st.lists(st.integers(0, len(POOL) - 1), max_size=8))):
        rule, family = {"name": f"r{i}", **POOL[j]}, draw(st.sampled_from([None, "a", "b"]))
        if family:  # group-keyed rules in families of their own
            rule["family"] = family if rule["kind"] != "negative_sentiment" else f"groups-{family}"
        rules.append(rule)
    return AlertRules.model_validate({"rules": rules})


@settings(max_examples=400, deadline=None)
@given(rule_files(), st.sampled_from([None, "acme", "globex", "other"]), st.sampled_from(LEVELS),
       st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.8, 0.95]),
       st.lists(st.sampled_from(["legal_threat", "fraud", "churn", "urgency"]), max_size=2, unique=True),
       st.sampled_from([0.1, 0.5, 0.8, 0.95]))
def test_merged_alerts_are_the_single_rules_hits_and_the_screen_holds(rules, group, level, hate, offensive, signals,
                                                                      negative):
    """per_message is the hits of each rule on its own, merged per (family, key); may_fire is False only where it
    returns nothing."""
    p = prediction("negative", negative, level, 0.5, {"offensive": offensive, "hate": hate}, signals)
    merged = rules.per_message("post", "7", group, "text", p, "m:1", T0)
    if not rules.may_fire(group, p.risk, p.sentiment.scores):
        assert merged == []
    alone = {}  # (family, key) -> the alert of each rule that hits on its own, in file order
    for rule in rules.rules:
        for a in AlertRules(rules=[rule]).per_message("post", "7", group, "text", p, "m:1", T0):
            alone.setdefault((rule.family, a["key"]), []).append(a)
    assert [(a["key"]) for a in merged] == [key for _, key in alone]  # one per family and key
    for a, ((family, key), singles) in zip(merged, alone.items()):
        assert a["id"] == alert_id(family, key, "" if key == "post:7" else "7")
        assert all(s["id"] == a["id"] for s in singles)  # whichever of the family's rules hit
        assert a["evidence"][0]["reasons"] == [s["evidence"][0]["reasons"][0] for s in singles]
        assert a["severity"] == max((s["severity"] for s in singles), key=LEVELS.index)
        assert a["rule"] == next(s["rule"] for s in singles if s["severity"] == a["severity"])
        # the summary opens with the first hit's reason and says every part of every hit's reason, each once
        reasons = [s["summary"].removeprefix("post 7: ") for s in singles]
        assert a["summary"].startswith("post 7: " + reasons[0])
        assert all(part in a["summary"] for why in reasons for part in why.removeprefix("signals ").split("; "))
        assert len(a["summary"]) <= len("post 7: " + "; ".join(reasons))


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
    assert alert["id"] == alert_id("neg_spike", "post:acme", (T0 + timedelta(minutes=3)).isoformat())  # no family
    assert "reasons" not in alert["evidence"][0]
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


def volume_store(tmp_path, database_url) -> Store:
    """A migrated store with one volume rule: 1-minute windows, 2 baseline windows, factor 3."""
    rules = rules_from('[[rules]]\nname="vol"\nkind="volume"\nwindow_seconds=60\nbaseline_windows=2\nfactor=3\n'
                       'min_messages=5\n', tmp_path)
    store = Store(database_url, "g", rules)
    store.migrate()
    return store


def test_volume_spike(tmp_path, database_url):
    store = volume_store(tmp_path, database_url)
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
    assert json.loads(message.value)["evidence"][0]["reasons"] == [
        {"rule": "risky", "severity": "critical", "reason": "critical risk (score 0.95): x"}]
    store.dispose()


# --- window counters -------------------------------------------------------------------------------------------

COUNTED = WINDOWED + '\n[[rules]]\nname="vol"\nkind="volume"\nwindow_seconds=300\nbaseline_windows=2\nfactor=3\n'


def counters(store) -> dict:
    with store.engine.connect() as conn:
        return {tuple(r[:4]): tuple(r[4:]) for r in conn.execute(alert_windows.select())}


def counted_from_predictions(store) -> dict:
    """What the counters must hold: an aggregate over every stored prediction with a group, per counted length."""
    expected = {}
    with store.engine.connect() as conn:
        lengths = conn.scalars(select(alert_window_lengths.c.window_seconds)).all()
        for kind, grp, sentiment, at in conn.execute(select(predictions.c.kind, predictions.c.grp,
                                                            predictions.c.sentiment, predictions.c.event_at)):
            for seconds in lengths if grp else ():
                n, neg = expected.get((seconds, kind, grp, window_index(at, seconds)), (0, 0))
                expected[seconds, kind, grp, window_index(at, seconds)] = (n + 1, neg + (sentiment == "negative"))
    return expected


def test_window_counters_count_each_stored_message_once(tmp_path, database_url):
    store = Store(database_url, "g", rules_from(COUNTED, tmp_path))
    store.migrate()
    first = [row(i, T0 + timedelta(seconds=40 * i), "negative" if i % 3 else "neutral", grp=g, kind=k)
             for i in range(12) for g, k in (("acme", "post"), ("globex", "post"), ("acme", "ticket"))]
    store.write(Batch(first, [], [], {}))
    store.write(Batch(first[:10], [], [], {}))  # a replay
    changed = {**first[0], "sentiment": "negative" if first[0]["sentiment"] == "neutral" else "neutral"}
    twice = row(50, T0 + timedelta(minutes=3), "negative")
    store.write(Batch([changed, twice, twice, row(51, T0, "negative", grp=None)], [], [], {}))  # first wins
    assert {s for s, *_ in counters(store)} == {60, 300}
    assert counters(store) == counted_from_predictions(store)
    before = counters(store)
    store.write(Batch(first + [twice], [], [], {}))
    assert counters(store) == before
    store.dispose()


def test_window_counters_are_rebuilt_for_messages_stored_before(tmp_path, database_url):
    plain = Store(database_url, "g")  # no rules, as before the counters existed: nothing is counted
    plain.migrate()
    plain.write(Batch([row(i, T0 + timedelta(seconds=25 * i), "negative" if i % 2 else "neutral") for i in range(20)],
                      [], [], {}))
    assert counters(plain) == {}
    rules = rules_from(COUNTED, tmp_path)
    store = Store(database_url, "g", rules)
    store.write(Batch([row(99, T0, "negative")], [], [], {}))  # the first batch counts the stored rows, then its own
    assert counters(store) == counted_from_predictions(store)
    assert counters(store)[60, "post", "acme", window_index(T0, 60)] == (4, 2)
    restarted = Store(database_url, "g", rules)
    restarted.write(Batch([row(100, T0, "neutral")], [], [], {}))
    plain.write(Batch([row(101, T0, "neutral")], [], [], {}))  # every store counts the lengths counted so far
    assert counters(store) == counted_from_predictions(store)
    assert counters(store)[60, "post", "acme", window_index(T0, 60)] == (6, 2)
    for s in (plain, store, restarted):
        s.dispose()


def test_a_burst_into_one_window_reads_counters_not_the_window(tmp_path, database_url):
    store = volume_store(tmp_path, database_url)
    store.write(Batch([row(i, T0, "neutral") for i in range(3)], [], [], {}))
    burst = T0 + timedelta(minutes=1, seconds=10)
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for n in range(30):
        statements.clear()
        store.write(Batch([row(1000 * n + i, burst, "neutral") for i in range(20)], [], [], {}))
        if n == 2:
            early = list(statements)
    last = list(statements)
    [alert] = store.unpublished_alerts()  # raised by the first burst batch, with its evidence
    assert alert["rule"] == "vol" and len(alert["evidence"]) == 5
    # the last batch ran the same statements as an early one, and read nothing from predictions
    assert last == early
    assert [s for s in last if "predictions" in s] == [s for s in last if s.startswith("INSERT INTO predictions")]
    assert counters(store)[60, "post", "acme", window_index(burst, 60)] == (600, 0)
    store.dispose()


def test_window_length_registered_while_another_worker_writes(tmp_path, database_url):
    """A length's counters are rebuilt while batches are in flight: each message counts once, by one or the other."""
    plain = Store(database_url, "g")
    plain.migrate()
    done = threading.Event()

    def write_batches():
        n = 0
        while not done.is_set():
            plain.write(Batch([row(1000 * n + i, T0 + timedelta(seconds=i), "negative") for i in range(200)], [], [], {}))
            n += 1

    writer = threading.Thread(target=write_batches)
    writer.start()
    stores = []
    try:
        for seconds in (60, 120, 180):
            time.sleep(0.3)
            rules = rules_from(f'[[rules]]\nname="v"\nkind="volume"\nwindow_seconds={seconds}\nbaseline_windows=1\n'
                               'factor=3\n', tmp_path)
            stores.append(Store(database_url, "g", rules))
            stores[-1].write(Batch([row(seconds, T0, "neutral", grp="other")], [], [], {}))
        time.sleep(0.3)
    finally:
        done.set()
        writer.join()
    assert {s for s, *_ in counters(plain)} == {60, 120, 180}
    assert counters(plain) == counted_from_predictions(plain)
    for s in (plain, *stores):
        s.dispose()


@settings(max_examples=3000, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
       st.sampled_from([None, 0, 330, -420, 840]), st.sampled_from([1, 60, 300, 3600, 86400]))
def test_window_index_is_whole_utc_seconds_over_the_window_length(at, offset_minutes, seconds):
    """window_index (timestamp() based, for speed) equals the plain definition, for naive (UTC) and aware times."""
    import calendar

    if offset_minutes is not None:
        at = at.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert window_index(at, seconds) == calendar.timegm(at.utctimetuple()) // seconds
