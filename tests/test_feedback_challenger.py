"""Reviewing a shadowed challenger's would-be alerts (streams/feedback/challenger.py): they enter the review queue,
a verdict on one is stored like any verdict, and the promotion gate's alert precision is computed from them."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models import gate
from streamsense.models.registry import set_alias
from streamsense.streams.bi import run_report
from streamsense.streams.contracts import Batch
from streamsense.streams.feedback.challenger import (
    agreement, alert_precision, newest_shadowed, would_alert_counts,
)
from streamsense.streams.feedback.queue import review_queue
from streamsense.streams.feedback.verdicts import Verdict, record, stored
from streamsense.streams.store import Store, migrate
from tests.bi_rows import alert, prediction
from tests.test_feedback import T0, _alert_id, _preds
from tests.test_feedback_registry import NAME, _pairs, _version

CHAMPION, CHALLENGER = f"{NAME}:1", f"{NAME}:2"  # bi_rows' predictions name version 1


def shadow_row(pred: dict, version: str, alerts: list[str], sentiment: str | None = None) -> dict:
    """What a shadowed challenger stores beside the champion's prediction `pred`."""
    return {"kind": pred["kind"], "message_id": pred["message_id"], "model_version": version,
            "sentiment": sentiment or pred["sentiment"], "p_negative": pred["p_negative"],
            "p_neutral": pred["p_neutral"], "p_positive": pred["p_positive"], "risk_level": pred["risk_level"],
            "risk_score": pred["risk_score"], "risk_labels": pred["risk_labels"], "alerts": alerts,
            "stored_at": T0 + timedelta(hours=1)}


def fill(url: str, preds: list[dict], real_alerts: list[dict], shadow: list[dict]) -> None:
    migrate(url)
    store = Store(url, "g")
    store.write(Batch(preds, real_alerts, [], {}, shadow=shadow))
    store.dispose()


@pytest.fixture
def shadowed(database_url):
    """Six posts served by version 1 (a real alert on p0), shadowed by version 2, which would have raised
    `high_risk_message` on p1, p2, p3 (and `complaint_spike` on p3 too) and agrees on sentiment except on p5."""
    preds = _preds(6)
    would = {"p1": ["high_risk_message"], "p2": ["high_risk_message"], "p3": ["complaint_spike", "high_risk_message"]}
    shadow = [shadow_row(p, CHALLENGER, would.get(p["message_id"], []),
                         "positive" if p["message_id"] == "p5" else None) for p in preds]
    fill(database_url, preds, [alert("high_risk_message", "high", [preds[0]], T0)], shadow)
    engine = create_engine(database_url)
    yield database_url, engine, preds
    engine.dispose()


def test_would_be_alerts_enter_the_queue_and_verdicts_on_them_count_for_the_challenger(shadowed):
    url, engine, preds = shadowed
    assert newest_shadowed(engine) == CHALLENGER  # the version 1 predictions serve; version 2 is shadowed
    items = review_queue(engine, limit=10, random_share=0.0, challenger=CHALLENGER)
    # the alerts' half of the slots (5): the one real alert, then the challenger's four would-be alerts, newest first
    assert [(i["kind"], i["message_id"], i["head"]) for i in items[:5]] == [
        ("alert", _alert_id(engine), "alert"), ("would_alert", "post:p3", "complaint_spike"),
        ("would_alert", "post:p3", "high_risk_message"), ("would_alert", "post:p2", "high_risk_message"),
        ("would_alert", "post:p1", "high_risk_message")]
    assert {i["score"] for i in items[1:5]} == {CHALLENGER} and {i["reason"] for i in items[1:5]} == {"would_alert"}
    assert [i["reason"] for i in items[5:]] == ["uncertain"] * 5
    assert not [i for i in review_queue(engine, 10, 0.0) if i["kind"] == "would_alert"]  # not asked for: none

    outcome = record(engine, [
        Verdict("would_alert", "post:p1", "high_risk_message", "ann", verdict="right", sample="would_alert"),
        Verdict("would_alert", "post:p2", "high_risk_message", "ann", label="false_alarm"),
        Verdict("would_alert", "post:p3", "high_risk_message", "bob", verdict="right"),
        Verdict("would_alert", "post:p4", "high_risk_message", "ann", verdict="right"),  # it would not have
        Verdict("would_alert", "post:p3", "high_risk_message", "bob", verdict="right")])  # the same twice
    assert (outcome.added, outcome.unchanged) == (3, 1)
    assert [why for _, why in outcome.rejected] == [
        "no shadowed challenger would have raised 'high_risk_message' on 'post:p4'"]
    rows = {(r["message_id"], r["by"]): r for r in stored(engine) if r["kind"] == "would_alert"}
    assert {(k, r["verdict"], r["label"], r["predicted"], r["model_version"]) for k, r in rows.items()} == {
        (("post:p1", "ann"), "right", "alarm", "alarm", CHALLENGER),
        (("post:p2", "ann"), "wrong", "false_alarm", "alarm", CHALLENGER),
        (("post:p3", "bob"), "right", "alarm", "alarm", CHALLENGER)}
    # reviewed ones leave the queue; the rule nobody judged on p3 stays
    left = [(i["message_id"], i["head"]) for i in review_queue(engine, 10, 0.0, challenger=CHALLENGER)
            if i["kind"] == "would_alert"]
    assert left == [("post:p3", "complaint_spike")]

    assert would_alert_counts(engine, CHALLENGER) == {"n": 3, "right": 2}
    assert would_alert_counts(engine, f"{NAME}:9") == {"n": 0, "right": 0}
    record(engine, [Verdict("alert", _alert_id(engine), "alert", "cy", verdict="right")])
    evidence = alert_precision(engine, {"champion": CHAMPION, "challenger": CHALLENGER})
    assert evidence == {"champion": {"n": 1, "right": 1, "source": "the store: 1 on its alerts"},
                        "challenger": {"n": 3, "right": 2, "source": "the store: 3 on its would-be alerts"}}
    precision = {(r["scope"], r["name"], r["model_version"]): (r["n"], r["right"], r["precision"])
                 for r in run_report(engine, "feedback-precision").records()}
    assert precision[("would-be alert rule", "high_risk_message", CHALLENGER)] == (3, 2, round(2 / 3, 4))
    assert ("head", "high_risk_message", CHALLENGER) not in precision  # not mistaken for a head
    # live agreement, in SQL on both databases: p5's sentiment differs, four messages would have alerted
    assert [(a["champion"], a["challenger"], a["messages"], a["sentiment_agreement"], a["challenger_alerts"])
            for a in agreement(engine)] == [(CHAMPION, CHALLENGER, 6, round(5 / 6, 4), 3)]


def test_a_verdict_on_a_would_be_alert_counts_for_every_version_that_would_have_raised_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    preds = _preds(2)
    fill(url, preds, [], [shadow_row(preds[0], CHALLENGER, ["high_risk_message"]),
                          shadow_row(preds[1], CHALLENGER, ["high_risk_message"])])
    engine = create_engine(url)
    record(engine, [Verdict("would_alert", "post:p0", "high_risk_message", "ann", verdict="wrong")])
    Store(url, "g").write(Batch([], [], [], {}, shadow=[shadow_row(preds[0], f"{NAME}:3", ["high_risk_message"]),
                                                       shadow_row(preds[1], f"{NAME}:3", [])]))
    assert would_alert_counts(engine, f"{NAME}:3") == {"n": 1, "right": 0}  # judged once, on version 2's
    assert newest_shadowed(engine) == f"{NAME}:3"
    engine.dispose()


def _registry(tmp_path):
    root = tmp_path / "registry"
    for v in (1, 2):
        _version(root, v)
    set_alias(root, NAME, "champion", 1, "promote")
    return root


def test_the_gate_reads_the_challengers_would_be_alert_verdicts(shadowed, tmp_path):
    url, engine, _ = shadowed
    root = _registry(tmp_path)
    alert_id = _alert_id(engine)
    record(engine, [Verdict("alert", alert_id, "alert", "cy", verdict="right"),
                    Verdict("alert", alert_id, "alert", "dee", verdict="right"),
                    Verdict("would_alert", "post:p1", "high_risk_message", "ann", verdict="right"),
                    Verdict("would_alert", "post:p2", "high_risk_message", "ann", verdict="wrong"),
                    Verdict("would_alert", "post:p3", "high_risk_message", "ann", verdict="wrong")])
    evidence_file = tmp_path / "evidence.json"  # the paired verdicts given, and alert counts the store overrides
    evidence_file.write_text(json.dumps({"verdicts": _pairs(12, 2), "alert_precision": {
        "champion": {"n": 10, "right": 1}, "challenger": {"n": 10, "right": 9}}}))
    env = {"STREAMSENSE_MODEL_REGISTRY": str(root), "STREAMSENSE_DATABASE_URL": url, "COLUMNS": "250"}
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "promote", CHALLENGER, "--evidence", str(evidence_file)], env=env)
    assert refused.exit_code == 1, refused.output
    assert ("failed alert_precision: alert precision 0.333 (n=3) vs the champion's 1.000 (n=2); challenger's from "
            "the store: 3 on its would-be alerts; champion's from the store: 2 on its alerts") in refused.output
    assert "refused by the gate (1 of" in refused.output

    # two more would-be alerts judged real alarms (by the CLI, as the queue says): 3 of 5 is still below 2 of 2
    for who in ("bob", "cy"):
        done = runner.invoke(app, ["feedback", "would-alert", "post:p2", "--rule", "high_risk_message", "--confirmed",
                                   "--by", who], env=env)
        assert done.exit_code == 0 and "1 added" in done.output, done.output
    wrong = runner.invoke(app, ["feedback", "would-alert", "post:p5", "--rule", "high_risk_message", "--confirmed",
                                "--by", "bob"], env=env)
    assert wrong.exit_code == 2 and "no shadowed challenger would have raised" in wrong.output
    result = gate.run_gate(root / NAME / "1", root / NAME / "2", {"alert_precision": alert_precision(
        engine, {"champion": CHAMPION, "challenger": CHALLENGER})}, only=["alert_precision"])
    assert not result.passed and "0.600 (n=5)" in result.reasons()[0]
    # the champion's second alert verdict turned: 1 of 2 = 0.5 ≤ 0.6
    record(engine, [Verdict("alert", alert_id, "alert", "dee", verdict="wrong")])
    passed = runner.invoke(app, ["models", "promote", CHALLENGER, "--evidence", str(evidence_file), "--by", "ops"],
                           env=env)
    assert passed.exit_code == 0, passed.output
    assert ("passed alert_precision: alert precision 0.600 (n=5) vs the champion's 0.500 (n=2); challenger's from "
            "the store: 5 on its would-be alerts; champion's from the store: 2 on its alerts") in passed.output
    assert f"{NAME}:champion is now version 2" in passed.output


def test_without_would_be_alert_verdicts_the_gate_falls_back_to_the_evidence_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    preds = _preds(2)
    fill(url, preds, [], [shadow_row(p, CHALLENGER, ["high_risk_message"]) for p in preds])
    root = _registry(tmp_path)
    env = {"STREAMSENSE_MODEL_REGISTRY": str(root), "STREAMSENSE_DATABASE_URL": url, "COLUMNS": "250"}
    evidence_file = tmp_path / "evidence.json"
    evidence_file.write_text(json.dumps({"verdicts": _pairs(12, 2)}))
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "promote", CHALLENGER, "--evidence", str(evidence_file)], env=env)
    assert refused.exit_code == 1
    assert ("failed alert_precision: no verdicts on the champion or the challenger's alerts: mark its alerts "
            "(`streamsense feedback alert ID --false-alarm` or --confirmed); shadow it and review its would-be alerts "
            "(`streamsense feedback queue` lists them") in refused.output
    queue = runner.invoke(app, ["feedback", "queue", "--random-share", "0", "--json"], env=env)  # auto: version 2
    assert queue.exit_code == 0, queue.output
    assert [json.loads(line)["message_id"] for line in queue.stdout.splitlines()
            if json.loads(line)["kind"] == "would_alert"] == ["post:p1", "post:p0"]
    evidence_file.write_text(json.dumps({"verdicts": _pairs(12, 2), "alert_precision": {
        "champion": {"n": 10, "right": 6}, "challenger": {"n": 10, "right": 7}}}))
    passed = runner.invoke(app, ["models", "promote", CHALLENGER, "--evidence", str(evidence_file)], env=env)
    assert passed.exit_code == 0, passed.output
    assert ("alert precision 0.700 (n=10) vs the champion's 0.600 (n=10); challenger's from the --evidence file; "
            "champion's from the --evidence file") in passed.output
