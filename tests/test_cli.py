"""The `streamsense` command: help order, `classify` (posts and tickets, validated as the worker validates them),
the `alerts` group (list, tail, check) and the read-only `query` through the real app."""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

import streamsense.streams.worker as worker
from streamsense.cli import ORDER, app, describe_rule
from streamsense.models.risk import Risk
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.contracts import Batch
from streamsense.streams.store import Store
from tests.bi_rows import alert, prediction


def invoke(args, input=None, **env):
    return CliRunner().invoke(app, args, input=input, env={"COLUMNS": "200", **env})


# --- help ---------------------------------------------------------------------------------------------------------

def test_help_lists_commands_in_the_order_a_newcomer_needs_them():
    result = invoke(["--help"])
    assert result.exit_code == 0, result.output
    found = [re.search(rf"^│ {name} ", result.stdout, re.MULTILINE) for name in ORDER]
    assert all(found), dict(zip(ORDER, found))
    positions = [m.start() for m in found]
    assert positions == sorted(positions), dict(zip(ORDER, positions))
    for panel in ("Start here", "Run", "Inspect", "Models", "Operate"):
        assert panel in result.stdout
    assert "--debug" in result.stdout and "STREAMSENSE_DEBUG" in result.stdout


def test_alerts_is_one_group():
    result = invoke(["alerts", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("list", "tail", "check"):
        assert f" {name} " in result.stdout


# --- classify -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Prediction:
    text: str
    risk: Risk = Risk("low", 0.1, {}, [], "no risk signal")

    def to_dict(self):
        return {"seen": self.text, "signals": self.risk.signals}


class _EchoClassifier:
    """Stands in for the model: each result says which text the model was given (and the risk signals)."""

    languages = ("en",)
    model_version = "echo:1"

    def classify(self, texts):
        return [_Prediction(t) for t in texts]


LANGUAGE_KEYS = ("lang", "lang_declared", "supported", "signals", "model_version")


def _core(result: dict) -> dict:
    """A result without its language fields (test_classify_tells_the_language checks those)."""
    return {k: v for k, v in result.items() if k not in LANGUAGE_KEYS}


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setattr(worker, "load_classifier", lambda settings: _EchoClassifier())


LINES = [
    '{"id": "p1", "text": "I love this", "channel": "acme"}',  # a post
    '{"id": "t1", "subject": "Refund", "body": "charged twice", "priority": "high"}',  # a ticket
    '{"id": "t2", "body": "no subject"}',  # a ticket without a subject
    '{"id": "t3", "subject": "Late", "body": "   "}',  # blank body
    '{"id": "t4", "body": "x", "priority": "whenever"}',  # a value the worker refuses
    '{"id": "p2"}',  # neither text nor body
    '{"id": "", "text": "empty id"}',
    '{"text": "no id"}',
    "{not json",
    "[1, 2]",
    "",
    "just a plain line",
    '{"id": 7, "text": "numeric id"}',
]


def test_classify_accepts_posts_and_tickets_and_reports_invalid_lines(echo):
    result = invoke(["classify", "--batch-size", "4"], input="\n".join(LINES) + "\n")
    assert result.exit_code == 0, result.output
    out = [_core(json.loads(line)) for line in result.stdout.splitlines()]
    assert len(out) == len(LINES)  # one result per line, in order
    assert out[0] == {"id": "p1", "kind": "post", "seen": "I love this"}
    assert out[1] == {"id": "t1", "kind": "ticket", "seen": "Refund. charged twice"}  # what the worker classifies
    assert out[2] == {"id": "t2", "kind": "ticket", "seen": "no subject"}
    errors = {o["line"]: o["error"] for o in out if "error" in o}
    assert errors[4] == "invalid ticket: body: Value error, body is empty"
    assert errors[5].startswith("invalid ticket: priority:")
    assert errors[6] == "invalid post: text: Field required"
    assert errors[7].startswith("invalid post: id:")
    assert errors[8] == "invalid post: id: Field required"
    assert errors[9].startswith("invalid JSON:")
    assert errors[10] == "expected a JSON object, got list"
    assert errors[11] == "empty line"
    # a plain line is not JSON: the worker dead-letters it, so classify refuses it too (--format string reads it)
    assert errors[12] == "invalid JSON: Expecting value at line 1 column 1"
    assert out[3]["id"] == "t3" and out[4]["id"] == "t4"  # the record's id where it has one
    # error lines give the id as a string, always: the line's own, else the line number
    assert [o["id"] for o in out if "error" in o] == ["t3", "t4", "p2", "", "8", "9", "10", "11", "12"]
    assert out[12] == {"id": "7", "kind": "post", "seen": "numeric id"}  # ids are strings, as the worker stores them
    assert "9 of 13 lines invalid" in result.stderr


def test_classify_kind_forces_the_shape(echo):
    lines = '{"id": "a", "text": "post text", "body": "ticket body"}\nplain\n'
    auto = [_core(json.loads(line)) for line in invoke(["classify"], input=lines).stdout.splitlines()]
    assert auto[0] == {"id": "a", "kind": "ticket", "seen": "ticket body"}  # "body" makes it a ticket
    posts = [_core(json.loads(line))
             for line in invoke(["classify", "--kind", "post"], input=lines).stdout.splitlines()]
    assert posts == [{"id": "a", "kind": "post", "seen": "post text"},
                     {"line": 2, "id": "2", "error": "invalid JSON: Expecting value at line 1 column 1"}]
    tickets = invoke(["classify", "--kind", "ticket"], input='{"id": "b", "text": "only text"}\nplain\n')
    out = [_core(json.loads(line)) for line in tickets.stdout.splitlines()]
    assert out[0] == {"line": 1, "id": "b", "error": "invalid ticket: body: Field required"}
    assert out[1]["error"].startswith("invalid JSON")
    text = invoke(["classify", "--kind", "ticket", "--format", "string"], input='plain\n{"id": "b"}\n')
    out = [_core(json.loads(line)) for line in text.stdout.splitlines()]
    assert out == [{"id": "1", "kind": "ticket", "seen": "plain"},  # string: the line is the text, the id its number
                   {"id": "2", "kind": "ticket", "seen": '{"id": "b"}'}]
    bad = invoke(["classify", "--kind", "tweet"], input="")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) <= 2 and "--kind" in bad.stderr


def test_classify_tells_the_language(echo):
    lines = ['{"id": "en", "text": "The flight was delayed for three hours and nobody told us why", "lang": "en"}',
             '{"id": "zh", "text": "这家店的外卖太慢了，等了两个小时", "lang": "zh-CN"}',
             '{"id": "es", "text": "El vuelo llegó tarde y perdieron mi maleta, qué desastre"}',
             '{"id": "t", "subject": "Refund", "body": "I was charged twice for the same order"}',
             '{"id": "short", "text": "ok 👍"}']
    result = invoke(["classify"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = {o["id"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert {k: (o["lang"], o["lang_declared"], o["supported"]) for k, o in out.items()} == {
        "en": ("en", "en", True), "zh": ("zh", "zh-CN", False), "es": ("es", None, False), "t": ("en", None, True),
        "short": ("und", None, True)}
    assert out["zh"]["signals"] == ["unsupported_language"] and out["es"]["signals"] == ["unsupported_language"]
    assert out["en"]["signals"] == [] and out["short"]["signals"] == []


def test_classify_routes_chinese_to_the_chinese_model():
    """The shipped models: Chinese text read by the Chinese model (two-class sentiment: no neutral), the rest by the
    English one; each result names its model."""
    lines = ['{"id": "en", "text": "The flight was delayed for three hours and nobody told us why"}',
             '{"id": "zh", "text": "这家店的外卖太慢了，等了两个小时，菜都凉了"}',
             '{"id": "zh-legal", "text": "你们再不退款我就去法院起诉"}',
             '{"id": "es", "text": "El vuelo llegó tarde y perdieron mi maleta, qué desastre"}']
    result = invoke(["classify"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = {o["id"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert {k: (o["lang"], o["supported"]) for k, o in out.items()} == {
        "en": ("en", True), "zh": ("zh", True), "zh-legal": ("zh", True), "es": ("es", False)}
    assert out["zh"]["model_version"].startswith("streamsense-bge-zh:") and out["zh"]["risk"]["signals"] == []
    assert out["zh"]["sentiment"]["label"] == "negative" and set(out["zh"]["sentiment"]["scores"]) == {
        "negative", "positive"}
    assert (out["zh-legal"]["risk"]["level"], out["zh-legal"]["risk"]["signals"]) == ("critical", ["legal_threat"])
    assert {out[k]["model_version"] for k in ("en", "es")} == {"streamsense-minilm:3"}
    assert out["es"]["risk"]["signals"] == ["unsupported_language"]


def test_classify_reports_invalid_utf8(echo):
    result = CliRunner().invoke(app, ["classify"], input=b'\xff\xfe plain\n{"id": "x", "text": "\xff"}\n')
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["error"] for o in out] == ["invalid UTF-8 at byte 0", "invalid UTF-8 at byte 21"]


@pytest.mark.integration
def test_classify_with_the_shipped_model():
    lines = ['{"id": "p", "text": "I love this airline, best flight ever"}',
             '{"id": "t", "subject": "Fraud", "body": "You charged my card twice, this is fraud, I will sue you"}',
             '{"id": "bad", "subject": "x"}']
    result = invoke(["classify"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    post, ticket, bad = [json.loads(line) for line in result.stdout.splitlines()]
    assert post["kind"] == "post" and post["sentiment"]["label"] == "positive"
    assert ticket["kind"] == "ticket" and ticket["sentiment"]["label"] == "negative"
    assert ticket["risk"]["level"] in ("high", "critical") and "fraud" in ticket["risk"]["signals"]
    assert (post["lang"], post["supported"], ticket["lang"], ticket["supported"]) == ("en", True, "en", True)
    assert bad == {"line": 3, "id": "bad", "error": "invalid ticket: body: Field required"} or \
        bad["error"].startswith("invalid post")  # no body: a post without text


# --- alerts -------------------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url, "streamsense")
    store.migrate()
    ticket = prediction("ticket", "t9", "food", "negative", T0, "this is fraud, I was charged twice", "critical",
                        0.97, "urgent")
    store.write(Batch([ticket], [alert("high_risk", "critical", [ticket], T0)], [], {("tickets", 0): 1}))
    store.dispose()
    return url


def test_alerts_list(stored):
    result = invoke(["alerts", "list"], STREAMSENSE_DATABASE_URL=stored)
    assert result.exit_code == 0, result.output
    assert "CRITICAL" in result.stdout and "high_risk" in result.stdout and "ticket:t9" in result.stdout
    assert "this is fraud, I was charged twice" in result.stdout and "1 alerts" in result.stderr
    rows = json.loads(invoke(["alerts", "list", "--json"], STREAMSENSE_DATABASE_URL=stored).stdout)
    assert [(r["rule"], r["key"]) for r in rows] == [("high_risk", "ticket:t9")]
    later = invoke(["alerts", "list", "--json", "--since", "2026-03-03T00:00"], STREAMSENSE_DATABASE_URL=stored)
    assert json.loads(later.stdout) == []
    bad = invoke(["alerts", "list", "--since", "yesterday"], STREAMSENSE_DATABASE_URL=stored)
    assert bad.exit_code == 2 and "invalid time" in bad.stderr


def test_query_through_the_app(stored):
    result = invoke(["query", "top-risky-tickets", "--json"], STREAMSENSE_DATABASE_URL=stored)
    assert result.exit_code == 0, result.output
    assert [r["ticket_id"] for r in json.loads(result.stdout)] == ["t9"]


def test_query_list_needs_no_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["query", "--list"], STREAMSENSE_DATABASE_URL=f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []


def test_alerts_check_prints_readable_rules():
    result = invoke(["alerts", "check"])
    assert result.exit_code == 0, result.output
    assert "{" not in result.stdout  # no Python dicts
    assert "high_risk (risk_level" in result.stdout
    assert "fires when a message's risk level is critical or above" in result.stdout
    rules = json.loads(invoke(["alerts", "check", "--json"]).stdout)
    assert {r["name"] for r in rules} >= {"high_risk", "volume_spike"}
    assert all("kind" in r for r in rules)


def test_every_rule_kind_is_described():
    rules = AlertRules.model_validate({"rules": [
        {"name": "a", "kind": "risk_level", "min_level": "high"},
        {"name": "b", "kind": "label_score", "label": "hate", "threshold": 0.5},
        {"name": "c", "kind": "signal", "signals": ["fraud"]},
        {"name": "d", "kind": "negative_sentiment", "min_confidence": 0.8, "groups": ["acme"]},
        {"name": "e", "kind": "negative_share", "window_seconds": 60, "baseline_windows": 3, "factor": 2},
        {"name": "f", "kind": "volume", "window_seconds": 60, "baseline_windows": 3, "factor": 2}]})
    texts = [describe_rule(r) for r in rules.rules]
    assert texts[0] == "a message's risk level is high or above"
    assert texts[1] == "a message's hate score is 0.5 or more"
    assert texts[2] == "signal fraud fires on a message"
    assert "acme" in texts[3] and "negative share" in texts[4] and "message count" in texts[5]
