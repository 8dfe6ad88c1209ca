import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streamsense.models.risk import DEFAULT_RULES, SCRIPTS, RiskRules, RulesError, Signal
from tests.conftest import FIXTURE_DATASETS

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


def test_the_score_is_the_strongest_component(rules):
    complaint = rules.heads["complaint"]
    alone = rules.assess("hello", {"complaint": complaint.high})
    assert (alone.level, alone.score) == ("high", 0.75)  # a head at its `high` probability scores the band's floor
    both = rules.assess("I will sue you", {"complaint": complaint.high})
    assert both.score == rules.signals_by_name["legal_threat"].weight and both.level == "critical"
    assert both.explanation.startswith("legal_threat: 'I will sue' (rule); complaint")
    # two medium components stay medium: no sum of weak evidence makes a message high
    two = rules.assess("hello", {"offensive": rules.heads["offensive"].medium, "complaint": complaint.medium})
    assert (two.level, two.score) == ("medium", 0.5)


def test_a_head_maps_its_probability_onto_the_bands(rules):
    bands = rules.thresholds
    head = rules.heads["complaint"]
    points = [0.0, head.medium / 2, head.medium, (head.medium + head.high) / 2, head.high, (head.high + 1) / 2, 1.0]
    scores = [head.score(p, bands) for p in points]
    assert scores == sorted(scores) and scores[0] == 0.0
    assert [rules.level(round(x, 4)) for x in scores] == ["low", "low", "medium", "medium", "high", "high", "high"]
    assert rules.level(round(head.score(head.medium - 1e-9, bands), 4)) == "low"  # rounding never crosses a band
    assert rules.level(round(head.score(head.high - 1e-9, bands), 4)) == "medium"
    # a head without `high` never leaves medium; no head reaches critical
    offensive = rules.heads["offensive"]
    assert rules.level(round(offensive.score(1.0, bands), 4)) == ("medium" if offensive.high is None else "high")


def test_hate_counts_only_with_offensive(rules):
    hate, offensive = rules.heads["hate"], rules.heads["offensive"]
    assert hate.requires == "offensive"
    alone = rules.assess("x", {"hate": 1.0, "offensive": offensive.medium / 2})
    assert alone.level == "low" and "counts with offensive only" in alone.explanation
    confirmed = rules.assess("x", {"hate": 1.0, "offensive": offensive.medium})
    assert confirmed.level == ("high" if hate.high is not None else "medium")


def test_old_weights_are_refused_with_a_pointer(tmp_path):
    old = tmp_path / "rules.toml"
    old.write_text("[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[model]\noffensive = 0.8\n")
    with pytest.raises(RulesError, match=r"\[model\] weights were replaced by \[heads.NAME\] thresholds"):
        RiskRules.load(old)
    old.write_text("[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[heads.hate]\nmedium = 0.5\nrequires = 'x'\n")
    with pytest.raises(RulesError, match="requires 'x', which has no"):
        RiskRules.load(old)
    old.write_text("[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[heads.hate]\nmedium = 0.6\nhigh = 0.5\n")
    with pytest.raises(RulesError, match="need 0 < medium < high"):
        RiskRules.load(old)
    old.write_text("[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n[heads.hate]\nmedium = 0.5\nrecall = 1.5\n")
    with pytest.raises(RulesError, match="recall is a share between 0 and 1"):
        RiskRules.load(old)


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
TWEETS = FIXTURE_DATASETS / "tweeteval_sentiment" / "test.jsonl"  # 60 real tweets


def _real_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in (ROOT / "streams/samples/posts.jsonl").read_text().splitlines()]
    texts += [json.loads(line)["body"] for line in (ROOT / "streams/samples/tickets.jsonl").read_text().splitlines()]
    texts += [json.loads(line)["text"] for line in TWEETS.read_text(encoding="utf-8").splitlines()]
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


def _reference(rules, text, head_probs):
    """The risk as docs/models.md states it, computed plainly: every pattern searched, every head scored."""
    components = []
    for name, p in head_probs.items():
        head = rules.heads.get(name)
        if head is None or float(p) != float(p):
            continue
        c = head.score(float(p), rules.thresholds)
        needs = rules.heads.get(head.requires) if head.requires else None
        if needs is not None and not float(head_probs.get(needs.name, 0.0)) >= needs.medium:
            c = min(c, rules.thresholds["medium"] - 1e-4)
        components.append(c)
    # each pattern in turn (an empty match fires nothing); a name with tables in two languages counts once
    fired = list(dict.fromkeys(s.name for s in rules.signals if s._match_each(text)))
    components += [s.weight for s in rules.signals if s.name in fired]
    score = round(max(components, default=0.0), 4)
    return rules.level(score), score, fired


def _same_risk(rules, text, head_probs):
    new = rules.assess(text, head_probs)
    assert (new.level, new.score, new.signals) == _reference(rules, text, head_probs), text
    assert repr(new.labels) == repr({k: round(float(v), 4) for k, v in head_probs.items()})  # NaN too
    return new


def test_assess_is_the_plain_reference_on_real_and_hand_written_texts(rules):
    rng = random.Random(7)
    texts = _real_texts() + HITS
    fired = 0
    for text in texts:
        for _ in range(3):
            fired += bool(_same_risk(rules, text, _probs(rng)).signals)
    assert len(texts) > 500 and fired > 30


def test_joined_patterns_match_iff_a_pattern_matches(rules):
    assert rules._gate is not None and all(s._any is not None for s in rules.signals)  # the shipped rules all join
    common = [s for s in rules.signals if s.lang not in SCRIPTS]  # the tables _gate joins (no script of their own)
    for text in _real_texts() + HITS + ["你们再不退款我就去法院起诉", "I will sue you 我要起诉你们"]:
        alone = [any(p.search(text) for p in s.patterns) for s in rules.signals]
        assert [s._any.search(text) is not None for s in rules.signals] == alone, text
        assert (rules._gate.search(text) is not None) == any(any(p.search(text) for p in s.patterns) for s in common)
        assert rules.may_signal(text) == _may_signal_reference(rules, text), text
        assert [s.match(text) for s in rules.signals] == [s._match_each(text) for s in rules.signals], text


def test_excerpt_is_the_first_pattern_in_the_rules_order(rules):
    risk = rules.assess("I will sue, my lawyer said so", QUIET)
    assert risk.explanation == "legal_threat: 'my lawyer' (rule)"  # "I will sue" is further left; its pattern is later


def test_nan_probabilities_count_as_no_evidence(rules):
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
def test_assess_is_the_plain_reference_for_any_text(rules, text, head_probs):
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


# --- the lower-case gate for ASCII text ------------------------------------------------------------------------------

def _may_signal_reference(rules, text):
    """Whether any pattern matches, searched one by one, case-insensitive; a table of a language with a script of its
    own (SCRIPTS) only on text holding a character of that script."""
    return any(p.search(text) for s in rules.signals if s.lang not in SCRIPTS or re.search(SCRIPTS[s.lang], text)
               for p in s.patterns)


def test_the_gates_say_what_each_pattern_says(rules):
    assert rules._ascii_gate is not None  # the shipped patterns all lower safely
    texts = _real_texts() + HITS + [c["text"] for c in map(json.loads, (ROOT / "models/risk_rule_cases.jsonl")
                                                          .read_text(encoding="utf-8").splitlines())]
    texts += ["I’ll sue you", "I’m cancelling my subscription 😡", "ſue you", "I will Kill you", "İ will sue",
              "我要起诉你们 and I will sue", "Café owner: I will sue your company", "ı will sue you"]
    checked = {True: 0, False: 0}
    for text in texts:
        for variant in (text, text.upper(), text.swapcase(), text.title()):
            checked[variant.isascii()] += 1
            assert rules.may_signal(variant) == _may_signal_reference(rules, variant), variant
    assert checked[True] > 2000 and checked[False] > 400


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts, st.sampled_from([str, str.upper, str.title]),
       st.sampled_from(["", "’", "😡", "ſ", "K", "İ", "é", "我要", "起诉", "ı"]))
def test_the_gates_for_any_text(rules, text, case, extra):
    text = case(text) + extra + case(text)
    assert rules.may_signal(text) == _may_signal_reference(rules, text), text


@pytest.mark.parametrize("patterns, lowered", [
    ([r"\bMy LAWYER\b", r"[A-Z]{2}\S+\B"], True),  # letters lowered, escapes kept: \S and \B keep their meaning
    ([r"\x41bc"], False),  # a character code: "A" is not in lower-cased text
    ([r"(?-i:ABC)"], False),  # a case-sensitive part
    (["ſue"], False),  # the long s folds to "s" under re's case-insensitive matching, not under lower()
    (["\u212aelvin"], False),  # the Kelvin sign folds to "k"
])
def test_patterns_the_ascii_gate_cannot_take_keep_the_plain_gate(patterns, lowered):
    rules = RiskRules({"medium": 0.5, "high": 0.7, "critical": 0.9}, {}, (_signal(*patterns),))
    assert (rules._ascii_gate is not None) == lowered
    for text in ["my lawyer", "MY LAWYER said", "ABcd", "abc", "Abc", "sue", "SUE", "kelvin", "KELVIN", "x", "ſue",
                 "\u212aelvin", "my lawyer 😡"]:
        assert rules.may_signal(text) == _may_signal_reference(rules, text), text


def test_one_signal_may_have_a_table_per_language(tmp_path, rules):
    assert {s.lang for s in rules.signals} == {"en", "zh"}
    both = rules.assess("I will sue you. 我要起诉你们", {})
    assert both.signals == ["legal_threat"]  # fired in both tables, counted once
    zh = rules.assess("你们再不退款我就去法院起诉", {})
    assert (zh.level, zh.signals) == ("critical", ["legal_threat"])
    bad = tmp_path / "rules.toml"
    head = "[levels]\nmedium = 0.5\nhigh = 0.7\ncritical = 0.9\n"
    bad.write_text(head + "[[signals]]\nname='x'\nweight=0.5\npatterns=['a']\n[[signals]]\nname='x'\nlang='zh'\n"
                   "weight=0.6\npatterns=['我']\n")
    with pytest.raises(RulesError, match="signal x has weights 0.5 and 0.6"):
        RiskRules.load(bad)
    bad.write_text(head + "[[signals]]\nname='x'\nlang='Chinese'\nweight=0.5\npatterns=['a']\n")
    with pytest.raises(RulesError, match="lang must be a language code"):
        RiskRules.load(bad)


def _assess_before(rules, text, head_probs):
    """`RiskRules.assess` as it was before its pattern half became `fire` (the signals searched inside it)."""
    from streamsense.models.risk import _BELOW

    bands, heads, labels, score, shown = rules.thresholds, rules.heads, {}, 0.0, []
    for name, p in head_probs.items():
        p = float(p)
        labels[name] = round(p, 4)
        head = heads.get(name)
        if head is None or p != p:
            continue
        contribution = head.score(p, bands)
        needs = heads.get(head.requires) if head.requires else None
        gated = needs is not None and not float(head_probs.get(needs.name, 0.0)) >= needs.medium
        if gated:
            contribution = min(contribution, bands["medium"] - _BELOW)
        score = max(score, contribution)
        if contribution >= 0.2:
            shown.append((contribution, f"{name} {p:.2f} (model)" + (f", counts with {needs.name} only" if gated
                                                                     and p >= head.medium else "")))
    fired = []
    for signal in rules.signals if rules.may_signal(text) else ():
        hit = signal.match(text)
        if hit and signal.name not in fired:
            fired.append(signal.name)
            score = max(score, signal.weight)
            if signal.weight >= 0.2:
                shown.append((signal.weight, f"{signal.name}: '{hit}' (rule)"))
    score = round(score, 4)
    shown.sort(key=lambda c: -c[0])
    return (rules.level(score), score, labels, fired, "; ".join(why for _, why in shown) or "no risk signal")


def test_assess_with_the_signals_fired_beforehand_says_what_it_said(rules):
    """`fire` + `assess(..., fired)` (a shadow reusing the champion's signals) and `assess` alone give what the
    assessment gave before it was split, on every rule case and fixture text, with random head probabilities (NaN,
    the thresholds themselves and the hate head's gate included), and a copy of the rules loaded apart shares them."""
    from dataclasses import astuple

    texts = [json.loads(line)["text"] for line in (Path(DEFAULT_RULES).parent / "risk_rule_cases.jsonl")
             .read_text(encoding="utf-8").splitlines()]
    for path in sorted(FIXTURE_DATASETS.glob("*/test.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)
    special = [float("nan"), 0.0, 1.0, *(h.medium for h in rules.heads.values())]
    other = RiskRules.load(DEFAULT_RULES)
    assert other.signals is not rules.signals and rules.same_signals(other)
    fired_any = 0
    for text in texts:
        probs = {h: rng.choice(special) if rng.random() < 0.2 else rng.random() for h in ("offensive", "hate",
                                                                                          "complaint")}
        fired = other.fire(text)
        fired_any += bool(fired)
        before = repr(_assess_before(rules, text, probs))  # repr: NaN labels compare equal
        assert repr(astuple(rules.assess(text, probs))) == before, text
        assert repr(astuple(rules.assess(text, probs, fired))) == before, text
    assert fired_any > 50 and len(texts) > 500
    assert not rules.same_signals(RiskRules(rules.thresholds, rules.heads, rules.signals[:-1]))
