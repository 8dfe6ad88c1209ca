"""The pipeline's batch path (streams/pipeline.py, Classifier.decide) against the per-message reference it replaced:
rows, prediction messages (as JSON), alert candidates, dead letters and offsets must be identical. Unit tests run
on a fake runtime (random probabilities, real risk and alert rules); the `classifier` ones on the shipped model."""

import hashlib
import json
import logging
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from streamsense.models.bias import blind_probs
from streamsense.models.classifier import Classifier, Prediction, Sentiment
from streamsense.models.language import identify_one
from streamsense.models.risk import LEVELS, Risk, RiskRules
from streamsense.models.runtime import Encoded, softmax
from streamsense.models.tasks import TASKS
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.contracts import Incoming, Topics, sha256, text_for_storage
from streamsense.streams.pipeline import Processor
from streamsense.streams.stages import Stages

SAMPLES = Path(__file__).resolve().parent.parent / "streams" / "samples"
TOPICS = Topics(kinds={"posts": "post", "tickets": "ticket"}, predictions="out", alerts="alerts", dead_letter="dlq")
BROAD_RULES = '''
[[rules]]
name = "risky"
kind = "risk_level"
min_level = "medium"
[[rules]]
name = "critical"
kind = "risk_level"
min_level = "critical"
severity = "low"
[[rules]]
name = "complaint"
kind = "label_score"
label = "complaint"
threshold = 0.3
[[rules]]
name = "offensive"
kind = "label_score"
label = "offensive"
threshold = 0.6
severity = "high"
[[rules]]
name = "signals"
kind = "signal"
signals = ["legal_threat", "fraud", "churn", "urgency"]
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.5
groups = ["acme-air", "northwind", "electronics", "other"]
[[rules]]
name = "volume"
kind = "volume"
window_seconds = 60
baseline_windows = 10
factor = 3.0
'''


# --- the per-message reference: the pipeline's code before the batch path, kept verbatim -------------------------

def reference_predict(classifier: Classifier, texts, encoded) -> list[Prediction]:
    probs = classifier.runtime.infer(encoded)
    if classifier.rules.identity_blind:  # added with the identity-blind heads (models/bias.py): per text, as decided
        probs = blind_probs(classifier, texts, probs)
    sentiment = probs["sentiment"]
    out = []
    for i, text in enumerate(texts):
        scores = {label: round(float(p), 4) for label, p in zip(classifier.sentiment_labels, sentiment[i])}
        head_probs = {name: float(probs[name][i, positive]) for name, positive in classifier.risk_heads}
        out.append(Prediction(
            sentiment=Sentiment(classifier.sentiment_labels[int(np.argmax(sentiment[i]))], scores),
            risk=classifier.rules.assess(text, head_probs),
            truncated=encoded.truncated[i],
        ))
    return out


def reference_process(processor: Processor, messages: list[Incoming]) -> dict:
    """What Processor.process returned for `messages` (no model failures), as plain values. Language: each text
    identified on its own; unsupported ones flagged, or dead-lettered after the invalid ones."""
    valid, failed = processor.decode(messages)
    classifier = processor.classifier
    langs = [identify_one(r.model_text) for _, r in valid]
    ok = [lang == "und" or lang in classifier.languages for lang in langs]
    if processor.unsupported_language == "dead_letter":
        failed += [(msg, f"unsupported language: {lang}") for (msg, _), lang, good in zip(valid, langs, ok) if not good]
        valid, langs, ok = ([x for x, good in zip(column, ok) if good] for column in (valid, langs, ok))
    texts = [r.model_text for _, r in valid]
    # a routed classifier (models/routing.py): each message by the model of its language, on its own
    models = [classifier.classifier_for(lang) if hasattr(classifier, "classifier_for") else classifier
              for lang in langs]
    results = [reference_predict(model, [text], model.tokenize([text]))[0] for model, text in zip(models, texts)]
    rows, alerts, out = [], [], []
    for (msg, record), p, lang, supported, model in zip(valid, results, langs, ok, models):
        text = record.model_text
        version = model.model_version
        scores = p.sentiment.scores
        if not supported:
            why = (f"unsupported_language: text in '{lang}', the model reads {', '.join(classifier.languages)} only "
                   "(scores unreliable)")
            p = Prediction(p.sentiment, Risk(p.risk.level, p.risk.score, p.risk.labels,
                                             p.risk.signals + ["unsupported_language"],
                                             why if p.risk.explanation == "no risk signal"
                                             else p.risk.explanation + "; " + why), p.truncated)
        declared = getattr(record, "lang", None)
        rows.append({
            "kind": record.kind, "message_id": record.id, "grp": record.group,
            "author": getattr(record, "author", None) or getattr(record, "customer_id", None),
            "priority": getattr(record, "priority", None),
            "text": text_for_storage(text, processor.store_text), "text_sha256": sha256(text),
            "truncated": p.truncated, "sentiment": p.sentiment.label,
            "p_negative": scores["negative"], "p_neutral": scores.get("neutral"), "p_positive": scores["positive"],
            "risk_level": p.risk.level, "risk_score": p.risk.score, "risk_labels": p.risk.labels,
            "risk_signals": p.risk.signals, "risk_explanation": p.risk.explanation,
            "model_version": version,
            "source_topic": msg.topic, "source_partition": msg.partition, "source_offset": msg.offset,
            "created_at": record.created_at, "produced_at": msg.produced_at,
            "lang": lang, "lang_declared": declared[:16] if declared else None, "supported": supported,
        })
        message = {"id": record.id, "kind": record.kind, **p.to_dict(),
                   "lang": lang, "lang_declared": declared[:16] if declared else None, "supported": supported,
                   "model_version": version,
                   "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}}
        out.append(("out", record.id.encode(),
                    json.dumps(message, ensure_ascii=False, default=str, separators=(",", ":")).encode(), []))
        excerpt = text_for_storage(record.model_text, processor.store_text) or ""
        alerts += processor.alert_rules.per_message(record.kind, record.id, record.group, excerpt, p, version,
                                                    record.created_at or msg.produced_at)
    dead = []
    for msg, reason in failed:
        dead.append({"source_topic": msg.topic, "source_partition": msg.partition, "source_offset": msg.offset,
                     "error": reason, "payload": msg.value})
        out.append(("dlq", msg.key, msg.value, [
            ("error", reason.encode()), ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode())]))
    offsets = {}
    for msg in messages:
        offsets[(msg.topic, msg.partition)] = max(offsets.get((msg.topic, msg.partition), 0), msg.offset + 1)
    return {"rows": rows, "alerts": alerts, "dead": dead, "offsets": offsets, "outgoing": out}


def _plain(processed) -> dict:
    b = processed.batch
    return {"rows": b.predictions, "alerts": b.alerts, "dead": b.dead_letters, "offsets": dict(b.offsets),
            "outgoing": [(m.topic, m.key, m.value, m.headers) for m in processed.outgoing]}


def assert_same(new: dict, old: dict) -> None:
    """Equal values and types, key order included; prediction messages compared as decoded JSON."""
    def decoded(outgoing):
        return [(t, k, json.loads(v) if t == "out" else v, h) for t, k, v, h in outgoing]

    for name in ("rows", "alerts", "dead", "offsets"):
        assert new[name] == old[name], name
    assert [list(r) for r in new["rows"]] == [list(r) for r in old["rows"]]
    assert [[type(v) for v in r.values()] for r in new["rows"]] == [[type(v) for v in r.values()] for r in old["rows"]]
    assert decoded(new["outgoing"]) == decoded(old["outgoing"])
    assert [json.dumps(json.loads(v)) for t, _, v, _ in new["outgoing"] if t == "out"] == \
           [json.dumps(json.loads(v)) for t, _, v, _ in old["outgoing"] if t == "out"]  # key order and float repr too


# --- a fake runtime: real tasks and labels, deterministic random probabilities ---------------------------------------

class FakeRuntime:
    label = "fake:1"

    def __init__(self, poison: str | None = None, seed: int = 0):
        self.tasks = list(TASKS)
        self.poison, self.seed, self.infer_calls = poison, seed, []

    def tokenize(self, texts) -> Encoded:
        return Encoded(ids=[[len(t) % 97, *(ord(c) for c in t[:8])] for t in texts],
                       truncated=[len(t) > 120 for t in texts])

    def infer(self, encoded: Encoded) -> dict[str, np.ndarray]:
        self.infer_calls.append(len(encoded))
        if self.poison is not None and any(ids[1:] == [ord(c) for c in self.poison] for ids in encoded.ids):
            raise RuntimeError("forced model failure")
        out = {}
        for task in self.tasks:
            rows = []
            for ids in encoded.ids:
                seed = int(hashlib.sha256(f"{self.seed}|{task.name}|{ids}".encode()).hexdigest()[:8], 16)
                rows.append(np.random.default_rng(seed).normal(0, 3, len(task.labels)))
            out[task.name] = softmax(np.array(rows, dtype=np.float32).reshape(len(rows), len(task.labels)))
        return out


def _lines(name: str) -> list[bytes]:
    return (SAMPLES / name).read_bytes().splitlines()


def sample_messages(n_posts: int = 120, n_tickets: int = 60) -> list[Incoming]:
    """Real posts and tickets, some without a Kafka timestamp or created_at, a few malformed, interleaved."""
    out = [Incoming("posts", i % 3, i, f"k{i}".encode(), line, 1_700_000_000.0 + i)
           for i, line in enumerate(_lines("posts.jsonl")[:n_posts])]
    out += [Incoming("tickets", i % 2, i, None, line, 1_700_001_000.0 + i)
            for i, line in enumerate(_lines("tickets.jsonl")[:n_tickets])]
    extra = [
        {"id": "t-subject", "subject": "Charged twice", "body": "double-charged, refund ASAP or my lawyer calls",
         "product": "northwind", "priority": "urgent", "customer_id": "c1", "created_at": "2026-11-01T10:00:00"},
        {"id": 12345, "subject": " ", "body": "Never flying with you ever again. Scam!", "product": "acme-air"},
    ]
    out += [Incoming("tickets", 0, 500 + i, b"t", json.dumps(r).encode(), 1_700_002_000.0) for i, r in enumerate(extra)]
    out += [Incoming("posts", 4, 900, None, json.dumps({"id": "no-ts", "text": "I will sue you", "channel": "acme-air",
                                                        "created_at": "2026-11-01T09:00:00Z"}).encode(), None)]
    bad = [b"not json", None, b'{"text": "no id"}', b'{"id": "x", "text": "  "}', b'{"id": "x", "text": "\xc3\x28"}']
    out += [Incoming("posts", 5, 1000 + i, b"b", raw, 1_700_003_000.0) for i, raw in enumerate(bad)]
    random.Random(7).shuffle(out)
    return out


def _processor(runtime=None, rules: AlertRules | None = None, store_text: str = "full", **kw) -> Processor:
    return Processor(Classifier(runtime or FakeRuntime(), RiskRules.load()), TOPICS, rules or AlertRules.load(),
                     store_text, **kw)


@pytest.fixture(scope="module")
def broad_rules(tmp_path_factory) -> AlertRules:
    path = tmp_path_factory.mktemp("rules") / "broad.toml"
    path.write_text(BROAD_RULES)
    return AlertRules.load(path)


@pytest.mark.parametrize("store_text", ["full", "redacted", "hash"])
@pytest.mark.parametrize("batch", [1, 16, 64, 200])
def test_batch_path_matches_the_per_message_reference(broad_rules, store_text, batch):
    messages = sample_messages()
    for rules in (AlertRules.load(), broad_rules):
        processor = _processor(rules=rules, store_text=store_text)
        for i in range(0, len(messages), batch):
            part = messages[i : i + batch]
            assert_same(_plain(processor.process(part)), reference_process(processor, part))


def test_reference_comparison_covers_alerts_dead_letters_and_both_kinds(broad_rules):
    out = _plain(_processor(rules=broad_rules).process(sample_messages()))
    # one alert per message and family: every rule that hit is one of its reasons
    assert {r["rule"] for a in out["alerts"] for r in a["evidence"][0].get("reasons", [])} >= {
        "risky", "critical", "complaint", "offensive", "signals", "watched"}
    assert {r["kind"] for r in out["rows"]} == {"post", "ticket"} and len(out["dead"]) == 5
    assert any(r["author"] and r["kind"] == "ticket" for r in out["rows"])
    assert any(r["created_at"] is None for r in out["rows"]) and any(r["produced_at"] is None for r in out["rows"])


def test_predict_and_decide_agree_with_the_reference():
    classifier = Classifier(FakeRuntime(seed=3), RiskRules.load())
    texts = [json.loads(line)["text"] for line in _lines("posts.jsonl")[:100]]
    encoded = classifier.tokenize(texts)
    reference = reference_predict(classifier, texts, encoded)
    assert classifier.predict(texts, encoded) == reference
    assert classifier.decide(texts, encoded).predictions() == reference
    assert Processor(classifier, TOPICS, AlertRules.load()).infer_and_decide(
        Processor(classifier, TOPICS, AlertRules.load()).prepare(
            [Incoming("posts", 0, i, None, json.dumps({"id": str(i), "text": t}).encode(), None)
             for i, t in enumerate(texts)])) == reference


class RecordingStages(Stages):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def add(self, name: str, seconds: float) -> None:
        self.calls.append(name)
        super().add(name, seconds)


def test_each_stage_is_timed_once_per_batch():
    stages = RecordingStages()
    processor = _processor(stages=stages)
    messages = sample_messages()
    processor.process(messages[:64])
    assert sorted(stages.calls) == sorted(["decode", "language", "tokenize", "infer", "decide", "shape"])
    prepared = processor.prepare(messages[64:128])
    processor.finish(prepared)
    assert len(stages.calls) == 12 and set(stages.snapshot()) == {"decode", "language", "tokenize", "infer", "decide",
                                                                  "shape"}
    assert all(v >= 0 for v in stages.snapshot().values())


def test_model_failure_is_narrowed_down_to_the_culprit():
    runtime = FakeRuntime(poison="POISON!!")
    processor = _processor(runtime)
    texts = [f"message {i}" for i in range(16)]
    texts[11] = "POISON!!"
    messages = [Incoming("posts", 0, i, None, json.dumps({"id": f"m{i}", "text": t}).encode(), 1.0e9)
                for i, t in enumerate(texts)]
    out = processor.process(messages)
    assert [r["message_id"] for r in out.batch.predictions] == [f"m{i}" for i in range(16) if i != 11]
    [dead] = out.batch.dead_letters
    assert dead["source_offset"] == 11 and dead["error"] == "model error: RuntimeError: forced model failure"
    assert runtime.infer_calls[:3] == [16, 8, 8] and runtime.infer_calls.count(1) == 2
    assert [m.topic for m in out.outgoing] == ["out"] * 15 + ["dlq"]
    assert out.batch.offsets == {("posts", 0): 16}
    # the 15 that passed are exactly what a batch without the poison gives
    healthy = _processor().process([m for m in messages if m.offset != 11])
    assert out.batch.predictions == healthy.batch.predictions


def test_dead_letters_log_one_line_per_batch(caplog):
    messages = [Incoming("posts", 0, i, None, b"not json" if i % 2 else b'{"id": "a", "text": "hi"}', None)
                for i in range(10)]
    with caplog.at_level(logging.INFO, logger="streamsense.streams.pipeline"):
        out = _processor().process(messages)
    assert len(out.batch.dead_letters) == 5
    [line] = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert line.startswith("dead-lettered 5 of 10 messages; first posts[0]@1: invalid JSON")


def test_json_messages_are_utf8_and_compact():
    [message] = [m for m in _processor().process([Incoming(
        "posts", 0, 0, None, json.dumps({"id": "é-1", "text": "客服太差了"}, ensure_ascii=False).encode(), None)]).outgoing]
    assert message.key == "é-1".encode() and message.value.startswith('{"id":"é-1","kind":"post"'.encode())


# --- the alert rules' pre-check ----------------------------------------------------------------------------------

def _random_prediction(rng: random.Random) -> tuple[str | None, Prediction]:
    negative = rng.choice([0.0, 0.1, 0.5, 0.79, 0.8, 0.85, 0.95, 1.0, rng.random()])
    labels = {name: rng.choice([0.0, 0.3, 0.6, 0.8, 0.9, 1.0, rng.random()])
              for name in rng.sample(["offensive", "hate", "complaint"], rng.randint(0, 3))}
    signals = rng.sample(["legal_threat", "fraud", "churn", "urgency", "other"], rng.randint(0, 2))
    risk = Risk(rng.choice(LEVELS), rng.random(), labels, signals, "why")
    sentiment = Sentiment("negative", {"negative": negative, "neutral": 1 - negative, "positive": 0.0})
    return rng.choice([None, "acme", "acme-air", "northwind", "other"]), Prediction(sentiment, risk, False)


@pytest.mark.parametrize("rules_text", [BROAD_RULES, None, "", '''
[[rules]]
name = "hate"
kind = "label_score"
label = "hate"
threshold = 0.0
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.8
groups = ["acme"]
[[rules]]
name = "watched2"
kind = "negative_sentiment"
min_confidence = 0.95
groups = ["other"]
'''])
def test_may_fire_is_false_only_where_no_rule_fires(tmp_path, rules_text):
    if rules_text is None:
        rules = AlertRules.load()
    else:
        (tmp_path / "r.toml").write_text(rules_text)
        rules = AlertRules.load(tmp_path / "r.toml")
    rng, at, skipped = random.Random(1), datetime(2026, 11, 1, tzinfo=timezone.utc), 0
    for i in range(3000):
        group, p = _random_prediction(rng)
        fired = rules.per_message("post", str(i), group, "text", p, "m:1", at + timedelta(seconds=i))
        if not rules.may_fire(group, p.risk, p.sentiment.scores):
            assert fired == [], (group, p)
            skipped += 1
    if rules_text is not None and "threshold = 0.0" not in rules_text:
        assert skipped > 0


def test_a_calm_message_is_screened_out_by_the_shipped_rules():
    rules = AlertRules.load()
    calm = Risk("high", 0.8, {"offensive": 0.5, "hate": 0.5, "complaint": 0.5}, [], "x")
    assert not rules.may_fire("acme-air", calm, {"negative": 0.33, "neutral": 0.33, "positive": 0.33})
    assert rules.may_fire("acme-air", calm, {"negative": 0.9, "neutral": 0.05, "positive": 0.05})
    assert rules.may_fire(None, Risk("low", 0.1, {}, ["fraud"], "x"), {})


# --- the shipped model ---------------------------------------------------------------------------------------------

def test_real_batch_matches_the_reference_json_included(classifier, broad_rules):
    """A real batch through the shipped model: rows, alerts and the prediction messages' JSON (json.loads of the
    old and new bytes) are equal to what the per-message code produced."""
    messages = sample_messages(n_posts=150, n_tickets=80)
    for rules in (AlertRules.load(), broad_rules):
        processor = Processor(classifier, TOPICS, rules)
        new, old = _plain(processor.process(messages)), reference_process(processor, messages)
        assert_same(new, old)
        assert len(new["rows"]) == 233 and new["alerts"]
        assert [json.loads(v) for t, _, v, _ in new["outgoing"] if t == "out"] == \
               [json.loads(v) for t, _, v, _ in old["outgoing"] if t == "out"]


def test_predictions_can_stay_off_the_topic():
    messages = sample_messages()
    published, quiet = _processor().process(messages), _processor(publish_predictions=False).process(messages)
    assert quiet.batch == published.batch
    assert [m for m in quiet.outgoing] == [m for m in published.outgoing if m.topic != "out"]
    assert {m.topic for m in quiet.outgoing} == {"dlq"}


def test_the_screen_follows_the_rules_of_a_copy():
    rules = AlertRules.load()
    risky = Risk("high", 0.8, {}, [], "x")
    assert not rules.may_fire(None, risky, {})
    high = rules.by_name["high_risk"].model_copy(update={"min_level": "high"})
    copy = rules.model_copy(update={"rules": [r for r in rules.rules if r.name != "high_risk"] + [high]})
    assert copy.may_fire(None, risky, {}) and not rules.may_fire(None, risky, {})
    assert rules == AlertRules.load()  # the cached screen is not part of equality
