"""What a windowed alert is about (streams/alerting/terms.py): the staged spikes of the demo's samples and of a Chinese
fixture name the words they were written around; replays of ordinary traffic name none; bot-like bursts are said."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streamsense.settings import STREAMS_DIR, Settings
from streamsense.streams.alerting import terms
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.bi import connect, run_report
from streamsense.streams.contracts import Batch, sha256
from streamsense.streams.schema import alerts
from streamsense.streams.store import Store
from tests.bi_rows import prediction

FIXTURES = Path(__file__).parent / "fixtures" / "terms"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _quiet_share(rows: list[dict], size: int, baseline_windows: int = 6) -> tuple[float, int]:
    """Replay `rows` cut into windows of `size`, each against its previous `baseline_windows`: the share of windows
    in which no term passes the noise test, and how many windows were tested."""
    windows = [[terms.terms_of(r["text"]) for r in rows[i:i + size]] for i in range(0, len(rows) - size + 1, size)]
    tested = range(baseline_windows, len(windows))
    named = [terms.distinctive(windows[k], [d for w in windows[k - baseline_windows:k] for d in w]) for k in tested]
    return sum(not n for n in named) / len(named), len(named)


def test_tokens_are_words_a_person_would_use():
    got = terms.terms_of("@AcmeAir my flight is DELAYED 3 hours!! https://t.co/x1 #delayed www.x.com/y "
                         "it's the gate's fault")
    assert {"flight", "delayed", "hours", "gate", "fault", "gate fault"} <= got
    assert not got & {"flight delayed", "hours delayed",  # a stop word or punctuation between: no pair
                      "acmeair", "my", "is", "the", "3", "https", "t", "co", "x1", "www", "it", "its", "gates"}
    zh = terms.terms_of("吃完拉肚子了，食物中毒")
    assert {"拉肚", "肚子", "食物", "中毒"} <= zh and "子了" not in zh  # bigrams within Han runs, particles out
    assert terms.normalised("@a  Win FREE tickets https://x.example/1 ") == terms.normalised("win free  tickets!")


@pytest.mark.parametrize("size", [20, 40])
def test_ordinary_english_traffic_names_no_term(size):
    rows = _jsonl(FIXTURES / "ordinary_en.jsonl")
    quiet, tested = _quiet_share(rows, size)
    assert tested >= 30 and quiet >= 0.95, (quiet, tested)


def test_ordinary_negative_messages_name_no_term():
    """As a negative-share spike reads a window: its negative messages against the baseline's."""
    negative = [r for r in _jsonl(FIXTURES / "ordinary_en.jsonl") if r["sentiment"] == "negative"]
    quiet, tested = _quiet_share(negative, 10)
    assert tested >= 15 and quiet >= 0.95, (quiet, tested)


@pytest.mark.parametrize("size", [20, 40])
def test_ordinary_chinese_traffic_names_no_term(size):
    rows = _jsonl(FIXTURES / "ordinary_zh.jsonl")
    quiet, tested = _quiet_share(rows, size)
    assert tested >= 15 and quiet >= 0.95, (quiet, tested)


def test_a_staged_chinese_spike_names_its_words():
    ordinary, staged = _jsonl(FIXTURES / "ordinary_zh.jsonl"), _jsonl(FIXTURES / "staged_zh.jsonl")
    baseline = [{"text": r["text"]} for r in ordinary[:240]]
    for written in (12, 25):  # the written food-poisoning reviews among 20 ordinary ones
        window = [{"message_id": f"m{i}", "text": r["text"]} for i, r in enumerate(staged[:written] + ordinary[-20:])]
        about = terms.explain(window, baseline)
        named = [t["term"] for t in about["terms"]]
        assert named[:2] == ["拉肚子", "食物中毒"], named
        assert all(t["z"] > terms.threshold(1) and t["count"] >= terms.MIN_MESSAGES for t in about["terms"])
        assert all("拉肚子" in e["text"] or "食物中毒" in e["text"] for e in about["examples"])
        assert "about: '拉肚子'" in terms.describe(about)


def test_bursts_of_one_text_are_said_even_from_hashes():
    text = "Northwind is giving away 500 free tickets! Claim yours"
    burst = [f"{'@user ' * (i % 2)}{text.upper() if i % 3 else text} https://x.example/{i}" for i in range(30)]
    others = [f"ordinary message number {w}" for w in ("one", "two", "three", "four", "five", "six", "seven")]
    window = [{"message_id": str(i), "text": t, "text_sha256": sha256(t)} for i, t in enumerate(burst + others)]
    about = terms.explain(window, [{"text": t} for t in others * 3])
    assert about["duplicates"] == {"messages": 37, "distinct": 8, "top_count": 30, "bot_like": True}
    assert "30 of 37 messages are one text (bot-like; 8 distinct)" in terms.describe(about)
    assert [e["text"] for e in about["examples"]].count(burst[0]) <= 1  # one example per distinct text
    # a hashed store keeps no text: no terms, and duplicates only where the texts are byte-equal
    hashed = [{"message_id": str(i), "text": None, "text_sha256": sha256(t)} for i, t in enumerate([text] * 6 + others)]
    about = terms.explain(hashed, [])
    assert about["terms"] == [] and about["examples"] == [] and about["duplicates"]["bot_like"] is False  # 6 of 13
    assert terms.describe(about) == "no terms: the store keeps no text"
    about = terms.explain(hashed[:10], [])
    assert about["duplicates"]["top_count"] == 6 and about["duplicates"]["bot_like"] is True
    assert not terms.duplicates([f"text {i}" for i in range(40)])["bot_like"]


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory):
    """The demo's English posts, classified by the shipped model and written through the store with the shipped
    alert rules in batches of 32 in file order (as the worker stores them): the windowed alerts it keeps."""
    from streamsense.streams.worker import load_classifier

    posts = [r for r in _jsonl(STREAMS_DIR / "samples" / "posts.jsonl") if r["lang"] == "en"]
    predicted = load_classifier(Settings()).classify([r["text"] for r in posts])
    url = f"sqlite:///{tmp_path_factory.mktemp('terms') / 'demo.db'}"
    store = Store(url, "terms", AlertRules.load())
    store.migrate()
    rows = [prediction("post", r["id"], r["channel"], p.sentiment.label, datetime.fromisoformat(r["created_at"]),
                       r["text"], offset=i) for i, (r, p) in enumerate(zip(posts, predicted))]
    for i in range(0, len(rows), 32):
        store.write(Batch(rows[i:i + 32], [], [], {}))
    with store.engine.connect() as conn:
        found = {(a.rule, a.key): a._asdict() for a in conn.execute(
            alerts.select().where(alerts.c.window_start.is_not(None)))}
    store.dispose()
    return found, url


def test_the_demo_negative_share_spike_names_the_delayed_flights(demo_alerts):
    alert = demo_alerts[0][("negative_share_spike", "post:acme-air")]
    about = alert["evidence"][0]["about"]
    named = [t["term"] for t in about["terms"]]
    # the written posts complain of delayed flights at the gate; the 40 real tweets around them share no topic
    assert {"delayed", "gate"} <= set(named[:3]) and set(named) <= {"delayed", "flight", "gate", "flight delayed",
                                                                    "connection", "hours", "delayed gate"}, named
    assert f"'{named[0]}' (" in alert["summary"] and " — about: " in alert["summary"]
    assert not about["duplicates"]["bot_like"]
    # the evidence opens with the representative messages: those holding the terms
    assert all("delayed" in e["excerpt"].lower() for e in alert["evidence"][:about["examples"]])


def test_the_demo_volume_spike_is_a_bot_like_burst(demo_alerts):
    alert = demo_alerts[0][("volume_spike", "post:northwind")]
    about = alert["evidence"][0]["about"]
    assert about["duplicates"]["bot_like"] and about["duplicates"]["top_count"] > about["messages"] / 2
    assert any("giving away free tickets" in t["term"] for t in about["terms"]), about["terms"]
    assert "messages are one text (bot-like" in alert["summary"]
    assert terms.normalised(alert["evidence"][0]["excerpt"]).startswith("northwind is giving away")
    assert about["examples"] == 1  # one distinct text holds the terms: one example


def test_the_top_terms_report(demo_alerts):
    """`streamsense query top-terms`: per group and 5-minute window, the terms against the previous 30 minutes."""
    engine = connect(demo_alerts[1])
    try:
        result = run_report(engine, "top-terms")
        late = run_report(engine, "top-terms", since=datetime(2026, 11, 1, 9, 29, tzinfo=timezone.utc))
        early = run_report(engine, "top-terms", since=datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc), limit=2)
    finally:
        engine.dispose()
    rows = result.records()
    assert result.columns[:5] == ["kind", "grp", "window_start", "window_end", "term"]
    by_group = {}
    for r in rows:
        by_group.setdefault((r["grp"], r["window_start"]), []).append(r["term"])
    # only the two staged windows stand out; every other window of the half hour names nothing
    assert set(by_group) == {("acme-air", "2026-11-01T09:25:00Z"), ("northwind", "2026-11-01T09:25:00Z")}, by_group
    assert "delayed" in by_group["acme-air", "2026-11-01T09:25:00Z"]
    assert any("giving away free tickets" in t for t in by_group["northwind", "2026-11-01T09:25:00Z"])
    assert all(r["z"] >= terms.threshold(1) and r["messages"] >= terms.MIN_MESSAGES for r in rows)
    assert late.rows == []  # since 09:29: the windows' baselines are cut away, so nothing to compare with
    assert len(early.rows) == 2


@pytest.mark.parametrize("stored", ["full", "hash"])
def test_the_gate_explains_a_windowed_alert_on_both_databases(database_url, stored):
    """Through Store.write on SQLite and PostgreSQL: six quiet minutes of ordinary tweets, then a minute holding 30
    complaints about a delayed flight and 20 copies of one text among ordinary ones. A hashed store (no text) says
    so and still counts the copies."""
    ordinary = _jsonl(FIXTURES / "ordinary_en.jsonl")
    written = [f"my flight is delayed again, stuck at gate {g} for hours" if i % 2 else
               f"delayed flight number {i}, nobody at the gate {g} tells us anything" for i, g in
               zip(range(30), "ABCDEF" * 5)]
    copies = ["Win a FREE cruise, reply YES"] * 20
    start = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    rows, n = [], 0
    for minute in range(7):
        texts = [r["text"] for r in ordinary[minute * 12:(minute + 1) * 12]]
        if minute == 6:
            texts = written + copies + texts
        for i, text in enumerate(texts):
            at = start + timedelta(minutes=minute, seconds=i * 59 / len(texts))
            row = prediction("post", f"m{n}", "acme-air", "negative" if i % 2 else "neutral", at, text, offset=n)
            if stored == "hash":
                row["text"] = None
            rows.append(row)
            n += 1
    rules = AlertRules.model_validate({"rules": [{"name": "burst", "kind": "volume", "window_seconds": 60,
                                                  "baseline_windows": 6, "factor": 3.0, "min_messages": 50}]})
    store = Store(database_url, "terms", rules)
    store.migrate()
    store.write(Batch(rows, [], [], {}))  # one batch: the alert sees the whole window
    with store.engine.connect() as conn:
        (alert,) = conn.execute(alerts.select()).all()
    store.dispose()
    about = alert.evidence[0]["about"]
    assert about["messages"] == 62 and about["baseline_messages"] == 72
    distinct = len(set(written + copies + [r["text"] for r in ordinary[72:84]]))  # 18 + 1 + 12: byte-equal ones
    assert about["duplicates"] == {"messages": 62, "distinct": distinct, "top_count": 20, "bot_like": False}
    if stored == "hash":
        assert about["terms"] == [] and about["examples"] == 0 and "keeps no message text" in about["note"]
        assert alert.summary.endswith(" — no terms: the store keeps no text")
        return
    named = [t["term"] for t in about["terms"]]
    assert {"delayed", "gate", "flight"} <= set(named), named
    assert "about: 'delayed' (30, z " in alert.summary or "about: 'gate' (30, z " in alert.summary, alert.summary
    assert all("delayed" in e["excerpt"] for e in alert.evidence[:about["examples"]]) and about["examples"] == 3


def test_an_explanation_that_fails_holds_back_nothing(tmp_path, monkeypatch, caplog):
    """A bug in the terms must not stall the pipeline: the alert and the batch are stored, the alert says so."""
    def broken(window, baseline):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(terms, "explain", broken)
    start = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    rows = [prediction("post", f"m{i}", "acme", "neutral", start + timedelta(minutes=i // 5 if i < 30 else 6),
                       f"text {i}", offset=i) for i in range(60)]
    rules = AlertRules.model_validate({"rules": [{"name": "burst", "kind": "volume", "window_seconds": 60,
                                                  "baseline_windows": 6, "factor": 3.0, "min_messages": 20}]})
    store = Store(f"sqlite:///{tmp_path / 'broken.db'}", "terms", rules)
    store.migrate()
    assert store.write(Batch(rows, [], [], {})) == 1
    with store.engine.connect() as conn:
        (alert,) = conn.execute(alerts.select()).all()
    store.dispose()
    assert alert.evidence[0]["about"] == {"note": "terms not computed: ZeroDivisionError"}
    assert " — " not in alert.summary and store.count(alerts) == 1
    assert "was not computed" in caplog.text
