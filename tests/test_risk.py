import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streamsense.models.risk import DEFAULT_RULES, RiskRules, RulesError, Signal

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



# --- the joined regexes and the cheaper assess() against the original -----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TWEETS = ROOT.parent / "shared" / "datasets" / "tweeteval_sentiment" / "test.jsonl"  # used where present


def _real_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in (ROOT / "streams/samples/posts.jsonl").read_text().splitlines()]
    texts += [json.loads(line)["body"] for line in (ROOT / "streams/samples/tickets.jsonl").read_text().splitlines()]
    if TWEETS.exists():
        texts += [json.loads(line)["text"] for line in TWEETS.read_text(encoding="utf-8").splitlines()[:600]]
    return texts


# Several patterns of one signal in one text, in and out of the rules' order: the excerpt must still be the first
# pattern's (in the rules' order), not the leftmost match.
HITS = [
    "I will sue, my lawyer said so", "See you in court, I am calling my attorney and my lawyers",
    "Taking legal action: my lawyer", "SUING you. LAWSUIT incoming", "small claims then the ombudsman",
    "Scammed! fraud! charged me twice", "I didn't authorize this charge, it is an unauthorised payment, a scam",
    "double-charged and double charged, stolen card", "my stolen identity, then fraudulent charges",
    "refund? I want a refund, cancelling my subscription, then switching to a competitor",
    "never flying with you again, close my account, unsubscribe me", "Going to another bank; cancelled my plan",
    "immediately! urgent! asap! emergency! right now, still down, outage", "URGENTLY: outage, still not working",
    "an urgent lawyer fraud refund: cancel my order right now", "ſue", "SUE", "Sue\u0130", "\u212aelvin lawyer",
    "lawyer\nsue", "", " ", "sued suing sues", "lawyers' attorneys'", "do not want a refund", "demand my refund!",
]


def _probs(rng: random.Random) -> dict:
    heads = {}
    for name in rng.sample(["offensive", "hate", "complaint", "spam"], rng.randint(0, 4)):
        heads[name] = rng.choice([0.0, 1.0, 0.25, 0.2 / 0.7, 0.2 / 0.8, 0.2 / 0.9, rng.random(), rng.random(),
                                  np.float32(rng.random()), np.float64(rng.random()), 1.5, -0.1, 0.2])
    return heads


def _same_risk(rules, text, head_probs):
    new, old = rules.assess(text, head_probs), rules._assess_reference(text, head_probs)
    # repr shows every float exactly (and NaN, which == would not call equal)
    assert repr(new) == repr(old) and repr(new.to_dict()) == repr(old.to_dict()), text
    assert type(new.score) is type(old.score) and [type(v) for v in new.labels.values()] == [
        type(v) for v in old.labels.values()]
    return new


def test_assess_is_the_original_on_real_and_hand_written_texts(rules):
    rng = random.Random(7)
    texts = _real_texts() + HITS
    fired = 0
    for text in texts:
        for _ in range(3):
            fired += bool(_same_risk(rules, text, _probs(rng)).signals)
    assert len(texts) > 500 and fired > 50


def test_joined_patterns_match_iff_a_pattern_matches(rules):
    assert rules._gate is not None and all(s._any is not None for s in rules.signals)  # the shipped rules all join
    for text in _real_texts() + HITS:
        alone = [any(p.search(text) for p in s.patterns) for s in rules.signals]
        assert [s._any.search(text) is not None for s in rules.signals] == alone, text
        assert (rules._gate.search(text) is not None) == any(alone), text
        assert [s.match(text) for s in rules.signals] == [s._match_each(text) for s in rules.signals], text


def test_excerpt_is_the_first_pattern_in_the_rules_order(rules):
    risk = rules.assess("I will sue, my lawyer said so", QUIET)
    assert risk.explanation == "legal_threat: 'lawyer' (rule)"  # "sue" is further left, but its pattern comes later


def test_nan_probabilities_give_the_original_result(rules):
    for head_probs in ({"offensive": math.nan, "hate": 0.9, "complaint": 0.5}, {"hate": math.nan},
                       {"offensive": 0.3, "hate": math.nan, "complaint": 0.9}):
        for text in ("hello", "urgent: my lawyer will sue", ""):
            _same_risk(rules, text, head_probs)


_words = st.sampled_from(["lawyer", "sue", "su", "ing", "fraud", "charged", "me", "twice", "cancel", "my", "account",
                          "refund", "want", "a", "urgent", "ly", "asap", "never", "buying", "again", "switch", "to",
                          "another", "still", "down", "didn't", "authorize", "this", "charge", "LAWSUIT", "Scam"])
_texts = st.lists(st.one_of(_words, st.text(max_size=3), st.sampled_from([" ", "-", "'", "\n", ".", ""])),
                  max_size=25).map("".join)
_head = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.2 / 0.7, 0.25, 0.2 / 0.9]), st.floats())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts, st.dictionaries(st.sampled_from(["offensive", "hate", "complaint", "other"]), _head, max_size=4))
def test_assess_is_the_original_for_any_text(rules, text, head_probs):
    _same_risk(rules, text, head_probs)


def _signal(*patterns, flags=re.IGNORECASE) -> Signal:
    return Signal("s", 0.5, tuple(re.compile(p, flags) if isinstance(p, str) else p for p in patterns))


@pytest.mark.parametrize("patterns, joined", [
    (["(?x) law yer  # a comment", r"\bsue\b"], True),  # global flag at the start: scoped; the comment ends
    (["(?x)(?s) a . b  # c", "(?m)^x$"], True),
    (["(?i)abc", "ABD"], True),
    ([re.compile(r"caf\w"), re.compile(r"(?a)ba\w"), re.compile("ZZ", re.I)], True),  # flags differ: scoped
    ([r"(lawyer)(s)?", r"(?:su)(e|ing)", r"(?P<who>attorney)"], True),  # groups of their own
    ([r"(?P<w>a)", r"(?P<w>b)"], False),  # the same group name twice: kept apart
    ([r"(a)\1", "b"], False),  # a numbered backreference: kept apart
    ([r"(a)?(?(1)b|c)", "d"], False),
    ([r"\\1", "b"], False),  # over-cautious: an escaped backslash before 1 looks like a reference
    ([r"x*", "abc"], True),  # may match the empty string
])
def test_joining_keeps_what_each_pattern_matches(patterns, joined):
    signal = _signal(*patterns)
    assert (signal._any is not None) == joined
    rules = RiskRules({"medium": 0.5, "high": 0.7, "critical": 0.9}, {}, (signal, _signal("a.c", "q")))
    for text in ["lawyer", "LAWYERS", "I will sue", "suing", "attorney", "a\nb", "a b", "x", "abc", "abd", "ABD",
                 "caf\xe9", "ba\xe9", "baz", "zz", "aa", "ab", "b", "c", "d", "\\1", "", "nothing here", "a.c q"]:
        alone = any(p.search(text) for p in signal.patterns)
        if signal._any is not None:
            assert (signal._any.search(text) is not None) == alone, text
        assert signal.match(text) == signal._match_each(text), text
        assert rules._gate is None or (rules._gate.search(text) is not None) == (
            alone or any(p.search(text) for p in rules.signals[1].patterns))
        _same_risk(rules, text, {"complaint": 0.3})


def test_global_flags_inside_a_pattern_are_refused(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text('[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[[signals]]\nname = "x"\nweight = 0.5\n'
                   "patterns = ['refund', 'money (?i)back']\n")
    with pytest.raises(RulesError, match=r"signal 'x': bad pattern 'money \(\?i\)back': global flags not at the "
                                         r"start.*write \(\?i:\.\.\.\) instead"):
        RiskRules.load(bad)
    bad.write_text(bad.read_text().replace("'money (?i)back'", "'(?s)money.back'"))  # at the start: fine
    rules = RiskRules.load(bad)
    assert rules.assess("MONEY\nBACK", {}).signals == ["x"] and rules.signals[0]._any is not None
