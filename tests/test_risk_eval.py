"""The risk evaluation and its fits (models/risk_eval.py), and the calibration the runtime applies."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models.registry import ModelIntegrityError, calibration
from streamsense.models.risk import LEVELS, Head, RiskRules
from streamsense.models.risk_eval import (ORDINARY, RULE_CASES, Scored, _nll, evaluate_risk, fit_heads,
                                          fit_temperature, format_report, heads_toml)
from streamsense.models.rule_cases import DEFAULT_CASES
from streamsense.models.runtime import ModelRuntime
from streamsense.streams.alerting.rules import AlertRules
from tests.conftest import FIXTURE_DATASETS


def test_the_temperature_fit_finds_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(20_000, 3))
    true_t = 2.5  # labels drawn from softmax(logits / 2.5): the model is over-confident by that much
    p = np.exp(logits / true_t)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.06)
    assert _nll(logits, labels, t) < _nll(logits, labels, 1.0)


def test_calibration_from_the_card():
    assert calibration({}) == {}
    assert calibration({"calibration": {"temperature": {"hate": 2.19}}}) == {"hate": 2.19}
    with pytest.raises(ModelIntegrityError, match="temperature of hate"):
        calibration({"calibration": {"temperature": {"hate": 0}}})


def test_the_runtime_divides_logits_by_the_temperature(tmp_path, classifier):
    model = tmp_path / "m"
    shutil.copytree(classifier.runtime.path, model)
    card = json.loads((model / "model.json").read_text())
    card["calibration"] = {"temperature": {}}
    (model / "model.json").write_text(json.dumps(card))
    raw = ModelRuntime(model, "cpu")
    card["calibration"] = {"temperature": {"sentiment": 2.0, "hate": 0.5}}
    (model / "model.json").write_text(json.dumps(card))
    scaled = ModelRuntime(model, "cpu")
    texts = ["I hate waiting on hold", "great flight, thanks!", "what time does the store open"]
    p1, p2 = raw.predict_proba(texts)[0], scaled.predict_proba(texts)[0]
    for name, t in (("sentiment", 2.0), ("hate", 0.5)):
        expected = np.exp(np.log(p1[name]) / t)
        expected /= expected.sum(axis=1, keepdims=True)
        assert np.allclose(p2[name], expected, atol=1e-5)
        assert (p2[name].argmax(1) == p1[name].argmax(1)).all()  # labels never change
    assert np.allclose(p2["offensive"], p1["offensive"])  # a head without a temperature is left alone


def _scored(name, probs, risky):
    return Scored(name, None if risky is None else np.asarray(risky, bool), probs,
                  np.zeros(len(next(iter(probs.values()))), np.int64), [], 0)


def test_fitted_thresholds_meet_the_recall_and_the_benign_budget_on_what_they_were_fitted_on():
    rng = np.random.default_rng(5)
    n = 4000
    risky = rng.random(n) < 0.4
    complaint = np.clip(np.where(risky, rng.beta(5, 2, n), rng.beta(2, 5, n)), 0, 1)
    offensive = rng.beta(2, 5, n)
    sets = {"complaint": _scored("complaint", {"complaint": complaint, "offensive": offensive, "hate": offensive},
                                 risky),
            "offensive": _scored("offensive", {"complaint": rng.beta(2, 6, n), "offensive": offensive,
                                               "hate": offensive}, rng.random(n) < 0.3),
            "hate": _scored("hate", {"complaint": rng.beta(2, 6, n), "offensive": offensive, "hate": rng.beta(3, 3, n)},
                            rng.random(n) < 0.4),
            ORDINARY: _scored(ORDINARY, {"complaint": rng.beta(2, 4, n), "offensive": rng.beta(1, 5, n),
                                         "hate": rng.beta(1, 5, n)}, None)}
    rules = RiskRules.load()
    heads = fit_heads(sets, rules, recall=0.85, benign_budget=0.01)
    c = heads["complaint"]
    assert (complaint[risky] >= c.medium).mean() >= 0.85
    for s in sets.values():
        benign = s.probs["complaint"] if s.risky is None else s.probs["complaint"][~s.risky]
        assert (benign >= c.high).mean() <= 0.01
    # policy from the rules file is kept: offensive and hate never get a `high`, hate still needs offensive
    assert heads["offensive"].high is None and heads["hate"].high is None
    assert heads["hate"].requires == "offensive" and heads["hate"].ceiling == "medium"
    text = heads_toml(heads, "m:1")
    assert 'fitted_for = "m:1"' in text and f"high = {c.high}" in text and 'requires = "offensive"' in text


def test_a_heads_own_recall_in_the_rules_is_what_the_fit_aims_for():
    """The Chinese offensive head's policy (`recall = 0.9`): its medium is fitted lower than by the default 0.85, and
    the recall is kept in the tables the fit prints."""
    import dataclasses

    rng = np.random.default_rng(7)
    n = 3000
    risky = rng.random(n) < 0.4
    offensive = np.clip(np.where(risky, rng.beta(5, 2, n), rng.beta(2, 5, n)), 0, 1)
    sets = {"offensive": _scored("offensive", {"offensive": offensive}, risky)}
    zh = RiskRules.load().for_model("streamsense-bge-zh")
    assert zh.heads["offensive"].recall == 0.9
    aimed = fit_heads(sets, zh)["offensive"]
    default = fit_heads(sets, dataclasses.replace(zh, heads={"offensive": dataclasses.replace(
        zh.heads["offensive"], recall=None)}))["offensive"]
    # (the quantile interpolates: up to a row short of the share)
    assert (offensive[risky] >= aimed.medium).mean() >= 0.899 > 0.9 - 0.02 > (offensive[risky] >= default.medium).mean()
    assert aimed.recall == 0.9 and "recall = 0.9" in heads_toml({"offensive": aimed}, "m:1", "m")


def test_the_shipped_rules_are_fitted_for_the_shipped_model(classifier):
    assert classifier.rules.fitted_for == classifier.model_version


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_risk_evaluation_on_a_small_fixture(classifier, lang):
    """Per model: the English one on its three risk sets and tweets; the Chinese one on COLD and its two review sets
    (the sets come from the model card's tasks; 40 of each fixture's 60 validation rows)."""
    classifier = classifier.classifier_for(lang)
    report = evaluate_risk(classifier, FIXTURE_DATASETS, ("validation",), limit=40,
                           alert_rules=AlertRules.load(), cases_path=DEFAULT_CASES)
    assert report["rules_fitted_for"] == classifier.model_version
    sets = report["splits"]["validation"]
    heads = {"en": {"offensive", "hate", "complaint"}, "zh": {"offensive"}}[lang]
    assert set(sets) == heads | {ORDINARY, RULE_CASES}
    for name, r in sets.items():
        if name == ORDINARY:
            n = {"en": 40, "zh": 80}[lang]  # zh: 40 per review set
            assert r["n"] == n and sum(r["levels"].values()) == n
            continue
        assert sum(r["levels_benign"].values()) == r["benign"] and sum(r["levels_risky"].values()) == r["risky"]
        assert r["benign"] + r["risky"] == r["n"]
        assert 0 <= r["benign_high_or_critical"] <= 1 and 0 <= r["risky_medium_or_above"] <= 1
    # every hand-labelled rule case that should fire reaches at least medium (a signal's weight is its level)
    assert sets[RULE_CASES]["risky_medium_or_above"] == 1.0
    assert sets[RULE_CASES]["alerts_per_10k"] > 0  # the legal / fraud / harm cases page
    assert set(report["rule_cases"]) == {s.name if s.lang == "en" else f"{s.name}:{s.lang}"
                                         for s in classifier.rules.signals}
    table = format_report(report)
    assert "| validation | rule_cases |" in table and "benign → high/critical" in table


def test_the_risk_eval_command(classifier):
    result = CliRunner().invoke(app, ["models", "risk-eval", "--split", "validation", "--limit", "20", "--json"],
                                env={"STREAMSENSE_DATASETS_DIR": str(FIXTURE_DATASETS)})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == classifier.model_version and list(report["splits"]) == ["validation"]
