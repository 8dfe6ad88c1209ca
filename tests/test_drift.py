"""Drift monitoring (streams/drift/): replays through the real pipeline and store, in windows of the default size.

Traffic comes from committed fixtures (tests/fixtures/drift/, see its README): tweets with their sentiment label,
customer-support tweets of other domains, Chinese reviews. Most replays use the shipped English model with the null
model (zero logits): the inputs' quantities (lengths, unknown tokens, languages, the token-bag projection) are what
moves there; the negative-share replay runs the shipped model itself."""

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from streamsense.settings import SHIPPED_MODELS, Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.contracts import Incoming, Topics
from streamsense.streams.drift.compare import DEFAULT_MIN_MESSAGES, Reference, judge, psi
from streamsense.streams.drift.features import vector
from streamsense.streams.drift.meter import DriftMeter
from streamsense.streams.drift.reference import References, make_reference, measure_texts, reference_of
from streamsense.streams.drift.windows import DriftWindows, drift_windows
from streamsense.streams.pipeline import Processor
from streamsense.streams.schema import alerts
from streamsense.streams.store import Store
from streamsense.streams.worker import load_classifier

FIXTURES = Path(__file__).parent / "fixtures" / "drift"
TOPICS = Topics({"posts": "post"}, "predictions", "alerts", "dead-letter")
HOUR = 3600
T0 = 1_800_000_000 // HOUR * HOUR  # a window start
N = DEFAULT_MIN_MESSAGES  # the default window's minimum: the size judged, and the noisiest


def fixture(name: str) -> list[dict]:
    with gzip.open(FIXTURES / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


TWEETS = fixture("tweets")
TEXTS = [r["text"] for r in TWEETS]
REFERENCE_TEXTS, HELD_OUT = TEXTS[:1000], TEXTS[1000:]


@pytest.fixture(scope="module")
def null():
    return load_classifier(Settings(device="cpu", null_model=True, language_models=""))


@pytest.fixture(scope="module")
def null_reference(null):
    return Reference.from_section(make_reference(null, REFERENCE_TEXTS))


class Replay:
    """The pipeline (with its drift meter) and a SQLite store (with its drift windows), one window after another."""

    def __init__(self, classifier, reference: Reference, db: Path | str, batch: int = 256):
        self.url = db if isinstance(db, str) else f"sqlite:///{db}"
        self.classifier, self.reference, self.batch = classifier, reference, batch
        self.processor = Processor(classifier, TOPICS, AlertRules.load(), drift=DriftMeter(HOUR))
        self.offset = 0
        self.store = self.new_store(migrate=True)

    def new_store(self, migrate: bool = False) -> Store:
        refs = References(known={self.classifier.model_version: self.reference})
        store = Store(self.url, "drift-test", AlertRules.load(), drift=DriftWindows(refs, HOUR, N))
        if migrate:
            store.migrate()
        return store

    def messages(self, texts: list[str], window: int) -> list[Incoming]:
        out = []
        for i, text in enumerate(texts):
            self.offset += 1
            value = json.dumps({"id": f"m{self.offset}", "text": text}).encode()
            out.append(Incoming("posts", 0, self.offset, None, value, T0 + window * HOUR + i * HOUR / (len(texts) + 1)))
        return out

    def window(self, texts: list[str], window: int) -> None:
        messages = self.messages(texts, window)
        for i in range(0, len(messages), self.batch):
            self.store.write(self.processor.process(messages[i:i + self.batch]).batch)

    def close(self, window: int) -> None:
        """One message in the window after: the windows before it are judged."""
        self.window([HELD_OUT[0]], window)

    def verdicts(self) -> dict[int, tuple]:
        c = drift_windows.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(c.window_start, c.status, c.summary, c.verdict, c.messages)
                                .where(c.scope == "*").order_by(c.window_start)).all()
        return {int((r.window_start.replace(tzinfo=timezone.utc).timestamp() - T0) // HOUR): r for r in rows}

    def sums(self, window: int) -> np.ndarray:
        c = drift_windows.c
        at = datetime.fromtimestamp(T0 + window * HOUR, timezone.utc)
        with self.store.engine.connect() as conn:
            blob = conn.execute(select(c.sums).where(c.window_start == at, c.scope == "*")).scalar_one()
        return np.frombuffer(blob, dtype=np.float64)


def moved(row) -> list[str]:
    return [q["name"] for q in row.verdict["quantities"] if q["level"] != "stable"]


def test_no_false_alarm_in_windows_of_held_out_traffic_through_pipeline_and_store(null, null_reference, tmp_path):
    """30 windows of the default size, each a random half of the held-out tweets (not in the reference), through the
    pipeline and the store: no drift declared (the 1 % bound is counted over 1,000 windows below)."""
    replay = Replay(null, null_reference, tmp_path / "fa.db", batch=512)
    rng = np.random.default_rng(34)
    windows = 30
    for w in range(windows):
        replay.window([HELD_OUT[i] for i in rng.choice(len(HELD_OUT), N, replace=False)], w)
    replay.close(windows)
    verdicts = replay.verdicts()
    judged = [verdicts[w] for w in range(windows)]
    assert all(r.messages == N and r.status in ("stable", "drift") for r in judged)
    alarms = [r.summary for r in judged if r.status == "drift"]
    assert not alarms, alarms


@pytest.fixture(scope="module")
def english(classifier):
    """The shipped English model, and every fixture tweet measured through it once."""
    model = classifier.primary if hasattr(classifier, "primary") else classifier
    return model, measure_texts(model, TEXTS)


def _reference_of(english, rows) -> Reference:
    model, (facts, counts, floats, tokens) = english
    rows = np.asarray(rows)
    return Reference.from_section(reference_of(facts, counts[rows], floats[rows], tokens, model.runtime.label,
                                               model.runtime.card))


def test_false_alarms_at_most_one_percent_of_windows_with_the_shipped_model(english):
    """Every quantity (inputs and the real English model's outputs): 1,000 windows of the default size, each a random
    half of the held-out tweets as the pipeline measures them; drift declared in at most 1 % of them."""
    _, (facts, counts, floats, _) = english
    reference = _reference_of(english, range(len(REFERENCE_TEXTS)))
    held = np.arange(len(REFERENCE_TEXTS), len(TEXTS))
    rng = np.random.default_rng(7)
    verdicts = [judge(reference, vector(facts.layout, counts[idx], floats[idx]))
                for idx in (rng.choice(held, N, replace=False) for _ in range(1000))]
    alarms = [v["summary"] for v in verdicts if v["status"] == "drift"]
    assert len(alarms) <= 10, alarms
    assert {q["method"] for q in verdicts[0]["quantities"]} == {"psi", "rate", "projection", "cbpe"}


def _detected_within_two_windows(replay: Replay, traffic) -> list:
    replay.window(traffic(0), 0)
    replay.window(traffic(1), 1)
    replay.close(2)
    verdicts = replay.verdicts()
    assert verdicts[0].messages == N and verdicts[1].messages == N
    found = [verdicts[w] for w in (0, 1) if verdicts[w].status == "drift"]
    assert found, [verdicts[w].summary for w in (0, 1)]
    return found


def _held_out(w: int, n: int = N) -> list[str]:
    start = (w * n) % len(HELD_OUT)
    return (HELD_OUT + HELD_OUT)[start:start + n]


def test_power_a_language_the_model_does_not_read(null, null_reference, tmp_path):
    reviews = [r["text"] for r in fixture("zh_reviews")]
    replay = Replay(null, null_reference, tmp_path / "lang.db")
    found = _detected_within_two_windows(replay, lambda w: _held_out(w, N - 50) + reviews[w * 50:(w + 1) * 50])
    assert "languages" in moved(found[0])
    assert "'zh' share 0% → 10%" in found[0].summary or any(
        "'zh' share" in q["moved"] for q in found[0].verdict["quantities"])


def test_power_tweets_replaced_by_support_messages_of_other_domains(null, null_reference, tmp_path):
    tickets = [r["text"] for r in fixture("tickets")]
    replay = Replay(null, null_reference, tmp_path / "tickets.db")
    found = _detected_within_two_windows(replay, lambda w: tickets[w * 300:(w + 1) * 300] + _held_out(w, 200))
    assert "text representation" in moved(found[0])


def test_power_html_markup_around_the_text(null, null_reference, tmp_path):
    replay = Replay(null, null_reference, tmp_path / "html.db")
    found = _detected_within_two_windows(
        replay, lambda w: [f'<div class="post"><p>{t}</p></div>' for t in _held_out(w)])
    assert {"length (tokens)", "text representation"} <= set(moved(found[0]))


def test_power_the_same_text_repeated_by_a_bot(null, null_reference, tmp_path):
    bot = "Get 10,000 real followers today, limited offer, click the link in our bio now"
    replay = Replay(null, null_reference, tmp_path / "bot.db")
    found = _detected_within_two_windows(replay, lambda w: _held_out(w, N - 50) + [bot] * 50)
    assert "text representation" in moved(found[0])


def test_power_negative_share_30_to_50_percent_with_the_shipped_model(english, tmp_path):
    """Reference: 30 % of the tweets labelled negative; traffic: 50 %, through the pipeline with the shipped model."""
    model = english[0]
    is_negative = [r["label"] == "negative" for r in TWEETS]
    neg_rows = [i for i, x in enumerate(is_negative) if x]
    other_rows = [i for i, x in enumerate(is_negative) if not x]
    negative, other = [TEXTS[i] for i in neg_rows], [TEXTS[i] for i in other_rows]
    reference = _reference_of(english, neg_rows[:300] + other_rows[:700])
    replay = Replay(model, reference, tmp_path / "neg.db")
    found = _detected_within_two_windows(
        replay, lambda w: negative[300 + w * 250:300 + (w + 1) * 250] + other[700 + w * 250:700 + (w + 1) * 250])
    assert any(name.startswith("sentiment") for name in moved(found[0])), found[0].summary
    with replay.store.engine.connect() as conn:
        alert = conn.execute(select(alerts).where(alerts.c.rule == "drift")).first()
    assert alert is not None and alert.summary.startswith(f"drift in {model.model_version}: ")
    assert "→" in alert.summary and alert.evidence


def test_a_restart_mid_window_neither_loses_nor_double_counts(null, null_reference, tmp_path, database_url):
    texts = _held_out(0)
    one = Replay(null, null_reference, tmp_path / "one.db")
    one.window(texts, 0)
    two = Replay(null, null_reference, database_url)
    messages = two.messages(texts, 0)
    half = len(messages) // 2
    two.store.write(two.processor.process(messages[:half]).batch)
    two.store.dispose()
    # a new worker: new store, new drift windows, new processor; the batch before the restart is read again
    # (its offsets were stored, but a rebalance can hand it over twice), then one overlapping it, then the rest
    two.store = two.new_store()
    two.processor = Processor(null, TOPICS, AlertRules.load(), drift=DriftMeter(HOUR))
    two.store.write(two.processor.process(messages[:half]).batch)
    two.store.write(two.processor.process(messages[half - 20:half + 30]).batch)
    two.store.write(two.processor.process(messages[half + 30:]).batch)
    assert two.sums(0)[0] == len(texts)
    np.testing.assert_allclose(two.sums(0), one.sums(0), rtol=1e-9, atol=1e-9)


def test_a_window_too_small_says_so(null, null_reference, tmp_path):
    replay = Replay(null, null_reference, tmp_path / "small.db")
    replay.window(_held_out(0, 37), 0)
    replay.close(1)
    row = replay.verdicts()[0]
    assert row.status == "too small" and row.summary == f"too small: 37 < {N} messages"


def test_a_drift_alert_is_raised_once_per_window(null, null_reference, tmp_path):
    replay = Replay(null, null_reference, tmp_path / "once.db")
    html = [f"<html><body><div>{t}</div></body></html>" for t in _held_out(0)]
    replay.window(html, 0)
    replay.close(1)
    replay.store.dispose()
    replay.store = replay.new_store()  # forgets what it judged: the window is not judged again
    replay.close(1)
    replay.close(2)
    with replay.store.engine.connect() as conn:
        rows = conn.execute(select(alerts.c.rule, alerts.c.key, alerts.c.severity, alerts.c.summary)
                            .where(alerts.c.rule == "drift")).all()
    assert len(rows) == 1
    assert rows[0].key == f"{null.model_version}:*" and rows[0].severity == "high"
    assert "(PSI " in rows[0].summary and "major" in rows[0].summary


def test_psi_reads_as_documented():
    assert psi(np.array([50.0, 50.0]), np.array([50.0, 50.0])) == 0
    # 30 % → 50 % negative, the rest shrinking in proportion: moderate; 30 % → 60 %: major
    three = np.array([30.0, 40.0, 30.0])
    assert 0.1 <= psi(three, np.array([50.0, 40 * 50 / 70, 30 * 50 / 70])) < 0.25
    assert psi(three, np.array([60.0, 40 * 40 / 70, 30 * 40 / 70])) >= 0.25


def test_the_shipped_models_carry_their_references():
    refs = References(SHIPPED_MODELS)
    for label in ("streamsense-minilm:3", "streamsense-bge-zh:1"):
        reference = refs.get(label)
        assert reference is not None, label
        assert reference.messages >= N and reference.bootstrap_quantile > 0
        assert reference.model == label
    for profile in SHIPPED_MODELS.glob("*/*/profile.json"):
        assert profile.stat().st_size < 100_000
    from streamsense.models.registry import verify
    for card in SHIPPED_MODELS.glob("*/*/model.json"):
        assert "profile.json" in verify(card.parent)["files"]  # the checksum covers it
