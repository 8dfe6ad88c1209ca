import pytest

from streamsense.models.risk import DEFAULT_RULES, RiskRules, RulesError

QUIET = {"offensive": 0.02, "hate": 0.01, "complaint": 0.05}


@pytest.fixture(scope="module")
def rules():
    return RiskRules.load(DEFAULT_RULES)


@pytest.mark.parametrize(
    "text, signal",
    [
        ("My lawyer will be in touch about this", "legal_threat"),
        ("I will sue your company", "legal_threat"),
        ("There is an unauthorized charge on my card", "fraud"),
        ("You charged me twice for one order", "fraud"),
        ("I'm cancelling my subscription today", "churn"),
        ("Switching to another provider after this", "churn"),
        ("This is urgent, the site is still down", "urgency"),
    ],
)
def test_signals_fire(rules, text, signal):
    assert signal in rules.assess(text, QUIET).signals


def test_calm_text_is_low_risk(rules):
    risk = rules.assess("Thanks, the new app looks great", QUIET)
    assert (risk.level, risk.signals, risk.explanation) == ("low", [], "no risk signal")


def test_scores_combine_as_noisy_or(rules):
    alone = rules.assess("hello", {"complaint": 0.9})
    both = rules.assess("I want a refund", {"complaint": 0.9})
    weight = rules.model_weights["complaint"]
    assert alone.score == pytest.approx(weight * 0.9, abs=1e-4)
    assert both.score == pytest.approx(1 - (1 - weight * 0.9) * (1 - 0.8), abs=1e-4)
    assert both.level == "critical"
    assert both.explanation.startswith("churn: 'want a refund' (rule)")


def test_levels_follow_thresholds(rules):
    assert [rules.level(s) for s in (0.1, 0.5, 0.8, 0.95)] == ["low", "medium", "high", "critical"]


def test_bad_rules_file_is_rejected(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text('[levels]\nmedium = 0.9\nhigh = 0.5\ncritical = 0.95\n')
    with pytest.raises(RulesError, match="levels must rise"):
        RiskRules.load(bad)
    bad.write_text('[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[[signals]]\nname="x"\nweight=0.5\npatterns=["(unclosed"]\n')
    with pytest.raises(RulesError, match="rules"):
        RiskRules.load(bad)
    with pytest.raises(RulesError, match="No such file"):
        RiskRules.load(tmp_path / "missing.toml")
