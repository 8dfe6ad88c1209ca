"""Feedback (streams/feedback/): the migration, verdicts stored once, the CLI, Argilla and Label Studio round trips,
the review queue and precision with Wilson intervals."""

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.streams.bi import run_report
from streamsense.streams.contracts import Batch
from streamsense.streams.feedback import formats
from streamsense.streams.feedback.quality import wilson
from streamsense.streams.feedback.queue import margin, review_queue
from streamsense.streams.feedback.verdicts import Verdict, VerdictError, from_dict, record, stored
from streamsense.streams.schema import alerts
from streamsense.streams.store import Store, migrate
from tests.bi_rows import alert, prediction
from tests.test_language import _alembic

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)


def _store(url: str, preds: list[dict], alerts_: list[dict] = ()) -> None:
    migrate(url)
    store = Store(url, "g")
    store.write(Batch(preds, list(alerts_), [], {}))
    store.dispose()


def _preds(n: int = 4) -> list[dict]:
    sentiments = ["negative", "neutral", "positive", "negative"]
    return [prediction("post", f"p{i}", "brand", sentiments[i % 4], T0 + timedelta(minutes=i), text=f"text {i}",
                       risk_score=0.9 if i == 0 else 0.1, offset=i) for i in range(n)]


def _alert_id(engine) -> str:
    with engine.connect() as conn:  # closed at once: an open one would hold PostgreSQL's schema drop
        return conn.execute(select(alerts.c.id)).scalar_one()


@pytest.fixture
def db(database_url):
    preds = _preds()
    _store(database_url, preds, [alert("high_risk_message", "high", [preds[0]], T0)])
    engine = create_engine(database_url)
    yield database_url, engine, preds
    engine.dispose()


def test_migration_up_and_down(database_url):
    command.upgrade(_alembic(database_url), "0005")
    engine = create_engine(database_url)
    assert "feedback" not in inspect(engine).get_table_names()
    command.upgrade(_alembic(database_url), "0006")
    columns = {c["name"] for c in inspect(engine).get_columns("feedback")}
    assert {"kind", "message_id", "head", "by", "verdict", "label", "predicted", "model_version", "sample",
            "created_at"} <= columns
    assert {"model_version", "sentiment", "alerts"} <= {c["name"] for c in inspect(engine).get_columns(
        "shadow_predictions")}
    command.downgrade(_alembic(database_url), "0005")
    assert not {"feedback", "shadow_predictions"} & set(inspect(create_engine(database_url)).get_table_names())
    engine.dispose()


def test_a_verdict_twice_counts_once_and_a_changed_one_replaces_it(db):
    url, engine, _ = db
    v = Verdict("post", "p0", "sentiment", "alice", label="negative")  # p0 was predicted negative
    first = record(engine, [v, v])  # repeated within one call too
    assert (first.added, first.unchanged, first.replaced) == (1, 1, 0)
    again = record(engine, [v])
    assert (again.added, again.unchanged) == (0, 1)
    changed = record(engine, [Verdict("post", "p0", "sentiment", "alice", label="neutral")])
    assert changed.replaced == 1
    rows = stored(engine)
    assert len(rows) == 1
    assert (rows[0]["verdict"], rows[0]["label"], rows[0]["predicted"], rows[0]["model_version"]) == (
        "wrong", "neutral", "negative", "streamsense-minilm:1")
    record(engine, [Verdict("post", "p0", "sentiment", "bob", verdict="right")])  # another person: another row
    assert len(stored(engine)) == 2


def test_the_missing_half_of_a_verdict_comes_from_the_prediction(db):
    _, engine, _ = db
    outcome = record(engine, [
        Verdict("post", "p0", "complaint", "a", verdict="wrong"),  # p0 complaint 0.9 → predicted complaint
        Verdict("post", "p1", "complaint", "a", verdict="right"),  # 0.1 → not_complaint
        Verdict("post", "p1", "sentiment", "a", verdict="wrong"),  # three labels: which one is unknown
        Verdict("post", "p2", "sentiment", "a", verdict="right", label="negative"),  # contradiction
        Verdict("post", "nope", "sentiment", "a", label="negative"),
        Verdict("post", "p2", "sarcasm", "a", label="yes"),
        Verdict("post", "p2", "sentiment", "a", label="furious"),
    ])
    got = {(r["message_id"], r["head"]): (r["verdict"], r["label"]) for r in stored(engine)}
    assert got == {("p0", "complaint"): ("wrong", "not_complaint"), ("p1", "complaint"): ("right", "not_complaint"),
                   ("p1", "sentiment"): ("wrong", None)}
    reasons = [reason for _, reason in outcome.rejected]
    assert len(reasons) == 4
    assert "contradicts" in reasons[0] and "no stored prediction post:nope" in reasons[1]
    assert "no head 'sarcasm'" in reasons[2] and "not one of negative, neutral, positive" in reasons[3]


def test_malformed_verdicts_say_why():
    for obj, needle in [({"target": "tweet:1", "head": "sentiment", "label": "x", "by": "a"}, "KIND:ID"),
                        ({"target": "post:1", "head": "sentiment", "by": "a"}, "give a label or a verdict"),
                        ({"target": "post:1", "label": "x"}, "'head'"),
                        ({"target": "post:1", "head": "sentiment", "label": "x"}, "'by'"),
                        ({"target": "post:1", "head": "hate", "label": "x", "by": "a", "colour": 1},
                         "unknown field colour"),
                        ({"target": "post:1", "head": "hate", "verdict": "maybe", "by": "a"}, "not right or wrong"),
                        ({"target": "post:1", "head": "hate", "label": "x", "by": "a", "at": "yesterday"}, "ISO 8601"),
                        ([1, 2], "JSON object")]:
        with pytest.raises(VerdictError, match=needle):
            from_dict(obj, "jsonl")
    assert from_dict({"target": "alert:abc", "verdict": "wrong", "by": "a"}, "kafka").head == "alert"


def test_a_hashed_store_takes_verdicts_and_says_they_cannot_train(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    row = prediction("post", "h1", "b", "negative", T0) | {"text": None}  # STREAMSENSE_STORE_TEXT=hash
    _store(url, [row])
    outcome = record(create_engine(url), [Verdict("post", "h1", "sentiment", "a", label="negative")])
    assert outcome.added == 1 and outcome.without_text == 1
    assert "not for training" in outcome.summary()


def invoke(args, url, input=None):
    return CliRunner().invoke(app, args, input=input, env={"COLUMNS": "200", "STREAMSENSE_DATABASE_URL": url})


def test_cli_one_bulk_and_a_false_alarm(db, tmp_path):
    url, engine, preds = db
    one = invoke(["feedback", "add", "post:p1", "--head", "sentiment", "--label", "negative", "--by", "alice"], url)
    assert one.exit_code == 0, one.output
    assert "1 added" in one.output
    lines = [{"target": "post:p2", "head": "sentiment", "label": "positive", "by": "bob", "at": "2026-11-02T10:00:00Z"},
             {"target": "post:p3", "head": "complaint", "verdict": "right", "by": "bob"},
             {"target": "post:p3", "head": "complaint", "verdict": "right", "by": "bob"}]
    bulk_file = tmp_path / "v.jsonl"
    unknown = {"target": "post:zz", "head": "sentiment", "label": "negative", "by": "bob"}
    bulk_file.write_text("\n".join(map(json.dumps, lines)) + "\n{not json\n" + json.dumps(unknown) + "\n")
    bulk = invoke(["feedback", "import", str(bulk_file)], url)
    assert bulk.exit_code == 0, bulk.output
    assert "malformed line 4: not JSON" in bulk.output and "rejected post:zz" in bulk.output
    assert "2 added" in bulk.output
    alert_id = _alert_id(engine)
    fa = invoke(["feedback", "alert", alert_id, "--false-alarm", "--by", "bob"], url)
    assert fa.exit_code == 0, fa.output
    rows = {(r["kind"], r["message_id"], r["head"]): r for r in stored(engine)}
    assert rows[("alert", alert_id, "alert")]["verdict"] == "wrong"
    assert rows[("alert", alert_id, "alert")]["label"] == "false_alarm"
    assert rows[("post", "p2", "sentiment")]["created_at"].replace(tzinfo=timezone.utc) == datetime(
        2026, 11, 2, 10, tzinfo=timezone.utc)
    assert len(rows) == 4
    bad = invoke(["feedback", "add", "post:p1", "--label", "furious", "--by", "alice"], url)
    assert bad.exit_code == 2 and "rejected" in bad.output
    unknown = invoke(["feedback", "alert", "nope", "--confirmed", "--by", "bob"], url)
    assert unknown.exit_code == 2 and "no stored alert" in unknown.output


def _verdict_set(engine) -> set:
    return {(r["kind"], r["message_id"], r["head"], r["by"], r["verdict"], r["label"], r["predicted"],
             r["model_version"], r["sample"], r["created_at"].replace(tzinfo=timezone.utc)) for r in stored(engine)}


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_export_import_round_trip(fmt, tmp_path):
    """Verdicts exported, imported into another store holding the same predictions, exported again: the same."""
    preds = _preds()
    urls = [f"sqlite:///{tmp_path / n}" for n in ("a.db", "b.db")]
    for url in urls:
        _store(url, preds, [alert("high_risk_message", "high", [preds[0]], T0)])
    a, b = (create_engine(u) for u in urls)
    alert_id = _alert_id(a)
    at = T0 + timedelta(hours=1)
    record(a, [Verdict("post", "p0", "sentiment", "alice", label="neutral", created_at=at, sample="random"),
               Verdict("post", "p0", "complaint", "alice", verdict="right", created_at=at + timedelta(minutes=1)),
               Verdict("post", "p0", "sentiment", "bob", verdict="right", created_at=at),
               Verdict("post", "p1", "sentiment", "bob", verdict="wrong", created_at=at, sample="uncertain"),
               Verdict("alert", alert_id, "alert", "carol", verdict="wrong", created_at=at)])
    refs = [("post", "p0"), ("post", "p1"), ("alert", alert_id)]
    samples = {("post", "p0"): "random", ("post", "p1"): "uncertain"}
    exported = formats.export(a, fmt, refs, samples)
    parsed = formats.parse(fmt, json.loads(json.dumps(exported)))
    assert not parsed.malformed
    outcome = record(b, parsed.verdicts)
    assert outcome.added == 5 and not outcome.rejected
    assert _verdict_set(b) == _verdict_set(a)
    assert formats.export(b, fmt, refs, samples) == exported
    first = exported[0]
    if fmt == "argilla":
        assert {s["question_name"]: (s["value"], s["type"]) for s in first["suggestions"]}["sentiment"] == (
            "negative", "model")
        assert {r["user_id"] for r in first["responses"]} == {"alice", "bob"}
        assert exported[1]["responses"][0]["values"] == {"sentiment_verdict": {"value": "wrong"}}
    else:
        assert first["predictions"][0]["model_version"] == "streamsense-minilm:1"
        assert {a_["completed_by"] for a_ in first["annotations"]} == {"alice", "bob"}


def test_import_skips_drafts_cancelled_and_takes_human_suggestions(db):
    _, engine, _ = db
    argilla = [{"external_id": "post:p1", "fields": {"text": "x"},
                "suggestions": [{"question_name": "sentiment", "value": "positive", "agent": "dana", "type": "human"},
                                {"question_name": "sentiment", "value": "neutral", "agent": "m:1", "type": "model"}],
                "responses": [{"user_id": "eve", "values": {"sentiment": {"value": "negative"}}, "status": "draft"},
                              {"user_id": "fay", "values": {"sentiment": {"value": "neutral"}},
                               "status": "discarded"}]},
               {"fields": {}}]
    parsed = formats.parse("argilla", argilla)
    assert [(v.by, v.label) for v in parsed.verdicts] == [("dana", "positive")]
    assert dict(parsed.skipped) == {"draft response": 1, "discarded response": 1, "model suggestion": 1}
    assert len(parsed.malformed) == 1
    ls = [{"data": {"ref": "post:p2"}, "annotations": [
        {"completed_by": {"email": "gus@x"}, "result": [{"from_name": "sentiment", "value": {"choices": ["neutral"]}}]},
        {"completed_by": 3, "was_cancelled": True, "result": []}]}]
    parsed = formats.parse("label-studio", ls)
    assert [(v.by, v.label, v.source) for v in parsed.verdicts] == [("gus@x", "neutral", "label-studio")]
    assert dict(parsed.skipped) == {"cancelled annotation": 1}


def _uncertain_preds(n: int) -> list[dict]:
    """Predictions whose sentiment margin falls with i (i = n-1 the least sure), risk heads sure."""
    rows = []
    for i in range(n):
        top = 0.95 - 0.6 * i / (n - 1)  # 0.95 … 0.35
        second = (1 - top) * 0.7
        row = prediction("post", f"u{i}", "b", "negative", T0 + timedelta(seconds=i), offset=i)
        row |= {"p_negative": top, "p_neutral": second, "p_positive": 1 - top - second,
                "risk_labels": {"offensive": 0.01, "hate": 0.01, "complaint": 0.01}}
        rows.append(row)
    return rows


def test_the_queue_orders_least_sure_first_with_alerts_and_a_random_share(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    preds = _uncertain_preds(50)
    _store(url, preds, [alert("high_risk_message", "high", [preds[0]], T0)])
    engine = create_engine(url)
    items = review_queue(engine, limit=10, random_share=0.2, seed=7)
    reasons = [i["reason"] for i in items]
    assert reasons.count("random") == 2 and reasons.count("alert") == 1 and reasons.count("uncertain") == 7
    assert reasons[0] == "random" and reasons[5] == "random"  # spread through the queue
    uncertain = [i for i in items if i["reason"] == "uncertain"]
    margins = [i["score"] for i in uncertain]
    assert margins == sorted(margins)
    chosen_random = {i["message_id"] for i in items if i["reason"] == "random"}
    expected = sorted(preds, key=lambda r: margin([r["p_negative"], r["p_neutral"], r["p_positive"]]))
    assert [i["message_id"] for i in uncertain] == [r["message_id"] for r in expected
                                                    if r["message_id"] not in chosen_random][:7]
    assert review_queue(engine, limit=10, random_share=0.2, seed=7) == items  # a seed repeats it
    # over many draws the random share reaches the sure end the least-sure order never would
    drawn = set()
    for seed in range(30):
        drawn |= {i["message_id"] for i in review_queue(engine, 10, 0.2, seed=seed) if i["reason"] == "random"}
    assert drawn & {f"u{i}" for i in range(10)}
    # reviewed items leave the queue
    record(engine, [Verdict("post", uncertain[0]["message_id"], "sentiment", "a", verdict="right")])
    assert uncertain[0]["message_id"] not in {i["message_id"] for i in review_queue(engine, 10, 0.0)}
    only_random = review_queue(engine, 5, 1.0, seed=1)
    assert [i["reason"] for i in only_random] == ["random"] * 5
    entropy = review_queue(engine, 3, 0.0, by="entropy")
    assert [i["reason"] for i in entropy] == ["alert", "uncertain", "uncertain"]
    engine.dispose()


def test_wilson_against_a_hand_computation():
    # k=8, n=10, z=1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716827; half 1.96 * sqrt(0.016 + 0.009604) / 1.38416
    z = 1.96
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    low, high = wilson(8, 10, z)
    assert (round(low, 6), round(high, 6)) == (round(centre - half, 6), round(centre + half, 6))
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # the textbook interval for 8 of 10
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


def test_precision_report_per_head_and_alert_rule(db):
    url, engine, _ = db
    alert_id = _alert_id(engine)
    # sentiment predicted negative on p0 and p3: three right, one wrong (one of the right ones from the random share)
    record(engine, [Verdict("post", "p0", "sentiment", "a", verdict="right", sample="random"),
                    Verdict("post", "p0", "sentiment", "b", verdict="right"),
                    Verdict("post", "p3", "sentiment", "a", verdict="right"),
                    Verdict("post", "p3", "sentiment", "b", verdict="wrong", sample="random"),
                    Verdict("alert", alert_id, "alert", "c", verdict="wrong")])
    result = run_report(engine, "feedback-precision")
    rows = {(r["scope"], r["name"], r["predicted"]): r for r in result.records()}
    neg = rows[("head", "sentiment", "negative")]
    low, high = wilson(3, 4)
    assert (neg["n"], neg["right"], neg["precision"], neg["low"], neg["high"]) == (4, 3, 0.75, round(low, 4),
                                                                                  round(high, 4))
    assert (neg["n_random"], neg["right_random"], neg["precision_random"]) == (2, 1, 0.5)
    rule = rows[("alert rule", "high_risk_message", "alarm")]
    assert (rule["n"], rule["right"], rule["precision"], rule["n_random"], rule["precision_random"]) == (
        1, 0, 0.0, 0, None)
    labels = {(r["head"], r["verdict"]): r["n"] for r in run_report(engine, "feedback-labels").records()}
    assert labels == {("sentiment", "right"): 3, ("sentiment", "wrong"): 1, ("alert", "wrong"): 1}
