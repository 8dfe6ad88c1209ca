"""The risk rules' pattern signals against the hand-labelled cases (models/risk_rule_cases.jsonl), and the case tools."""

import json
import re
import time
import tomllib
from collections import Counter

import pytest

from streamsense.models.risk import DEFAULT_RULES, RiskRules, Signal
from streamsense.models.rule_cases import (DEFAULT_CASES, Case, CasesError, fired, format_table, load_cases,
                                           load_signals, mistakes, score)

SIGNALS = ("legal_threat", "fraud", "churn", "urgency", "threat_of_harm")
WEIGHTS = {"legal_threat": 0.95, "fraud": 0.9, "churn": 0.8, "urgency": 0.6, "threat_of_harm": 0.95}
SCRATCHY = "your shirt looks really nice but… scratchy"  # the issue's example: no signal at all
CASES = load_cases()
LANGS = ("en", "zh")
MINIMUM = {"en": 15, "zh": 10}  # positives and hard negatives per signal and language


def _tables(signals) -> dict:
    return {(s.name, s.lang): s for s in signals}


@pytest.fixture(scope="module")
def signals():
    return load_signals(DEFAULT_RULES)


# --- the cases file ---------------------------------------------------------------------------------------------------

def test_every_signal_has_enough_positives_and_hard_negatives_in_each_language():
    counts = Counter((c.signal, c.lang, c.expect) for c in CASES)
    assert {(c.signal, c.lang) for c in CASES} == {(n, lang) for n in SIGNALS for lang in LANGS}
    for name in SIGNALS:
        for lang in LANGS:
            pos, neg = counts[name, lang, True], counts[name, lang, False]
            assert pos >= MINIMUM[lang] and neg >= MINIMUM[lang], (name, lang, pos, neg)
    assert len({(c.text, c.signal) for c in CASES}) == len(CASES)  # no case twice
    assert all(c.note for c in CASES)


def test_the_issues_examples_are_negatives():
    expected = {("Interview with lawyer of #Recount2016", "legal_threat"), ("I want a refund", "churn")}
    expected |= {(SCRATCHY, name) for name in SIGNALS}
    labelled = {(c.text, c.signal): c.expect for c in CASES}
    assert all(labelled.get(key) is False for key in expected), [k for k in expected if labelled.get(k) is not False]


# --- the shipped rules on the cases -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[f"{c.signal}-{'pos' if c.expect else 'neg'}-{i}" for i, c in
                                             enumerate(CASES)])
def test_shipped_rules_classify_the_case_as_labelled(signals, case):
    hit = _tables(signals)[case.signal, case.lang].match(case.text)
    assert (hit is not None) == case.expect, f"{case.signal} {'missed' if case.expect else 'fired'} ({hit!r}): " \
                                             f"{case.text!r} — {case.note}"


def test_shipped_rules_score_perfectly_on_the_cases(signals):
    report = score(signals, CASES)
    assert list(report) == list(SIGNALS) + [f"{n}:zh" for n in SIGNALS]
    assert all(row["precision"] == 1.0 and row["recall"] == 1.0 for row in report.values()), format_table(report)
    assert mistakes(signals, CASES) == []


def test_scratchy_shirt_fires_nothing(signals):
    assert fired(signals, SCRATCHY) == []


def test_signal_tables_carry_lang_and_keep_their_weights():
    raw = tomllib.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    assert [(s["name"], s["weight"], s["lang"]) for s in raw["signals"]] == [
        (n, WEIGHTS[n], lang) for lang in LANGS for n in SIGNALS]


def _signals_only(tmp_path):
    """A rules file of a minimal [levels] table and the shipped [[signals]] tables (patterns as TOML basic strings,
    which JSON string syntax is for these patterns): the loader on the signals alone, whatever the shipped file's
    levels and heads look like while they are being redesigned."""
    raw = tomllib.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    lines = ["[levels]", "medium = 0.5", "high = 0.75", "critical = 0.9"]
    for s in raw["signals"]:
        lines += ["", "[[signals]]", f"name = {json.dumps(s['name'])}", f"lang = {json.dumps(s['lang'])}",
                  f"weight = {s['weight']}", "patterns = [" + ", ".join(json.dumps(p) for p in s["patterns"]) + "]"]
    path = tmp_path / "signals.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_loader_takes_the_shipped_signals_and_joins_them(tmp_path, signals):
    rules = RiskRules.load(_signals_only(tmp_path))
    assert [(s.name, s.lang, s.weight, [p.pattern for p in s.patterns]) for s in rules.signals] == \
        [(s.name, s.lang, s.weight, [p.pattern for p in s.patterns]) for s in signals]
    # joinable: one search for all signals (the gate), one per signal
    assert rules._gate is not None and all(s._any is not None for s in rules.signals)
    for case in CASES:
        assert rules.assess(case.text, {}).signals == fired(signals, case.text), case.text


def test_every_english_pattern_opens_with_a_word_boundary(signals):
    """The join of all patterns (RiskRules' gate) then tests \\b once per position instead of once per pattern. (Chinese
    has no spaces, so its patterns have no \\b; they open with a CJK character or group, which re skips to fast.)"""
    assert all(p.pattern.startswith(r"\b") for s in signals if s.lang == "en" for p in s.patterns)


def test_no_pattern_backtracks_badly(signals):
    """Every pattern stays fast on long adversarial texts (repeated keywords and near-misses), so one message cannot
    stall the worker."""
    texts = [" ".join(["i will"] * 3000), " ".join(["still"] * 5000), "a" * 30000, "x " * 15000,
             " ".join(["never buying from"] * 2000), " ".join(["charged me"] * 3000) + " without",
             " ".join(["your staff"] * 3000), "@" * 20000, " ".join(["please fix"] * 3000),
             "I'm going to " + "really " * 5000 + "kill", "my " * 10000 + "account", "been " * 10000]
    for signal in signals:
        for pattern in signal.patterns:
            for text in texts:
                start = time.perf_counter()
                pattern.search(text)
                took = time.perf_counter() - start
                assert took < 1.0, f"{signal.name}: {pattern.pattern[:60]}... took {took:.2f}s on {text[:30]!r}"


# --- the bug the new patterns fix: the old ones fire on the same words out of context --------------------------------

# models/risk_rules.toml before the context-aware patterns (git show HEAD:models/risk_rules.toml at the time)
OLD_PATTERNS = {
    "legal_threat": [r"\blawyers?\b", r"\battorneys?\b", r"\bsu(e|ing)\b", r"\blawsuit", r"\blegal action\b",
                     r"\bsmall claims\b", r"\bsee you in court\b", r"\bombudsman\b"],
    "fraud": [r"\bfraud", r"\bunauthori[sz]ed (charge|transaction|payment|purchase)", r"\bcharged (me )?twice\b",
              r"\bdouble[- ]charged\b", r"\bscam(med)?\b", r"\bstolen (card|account|identity)\b",
              r"\bdidn'?t (authori[sz]e|make) (this|that|these) (charge|purchase|payment)"],
    "churn": [r"\bcancel+(ing|ed)? my (account|subscription|plan|contract|membership|order)\b", r"\bclose my account\b",
              r"\b(switch|switching|moving|going) to (a )?(competitor|another|different)",
              r"\bnever (buying|ordering|using|flying) .{0,40}again\b", r"\b(want|demand) (a |my )?refund\b",
              r"\bunsubscribe me\b"],
    "urgency": [r"\burgent(ly)?\b", r"\basap\b", r"\bemergency\b", r"\bimmediately\b", r"\bright now\b",
                r"\bstill (down|broken|not working)\b", r"\boutage\b"],
}
OLD = tuple(Signal(name, WEIGHTS[name], tuple(re.compile(p, re.IGNORECASE) for p in patterns))
            for name, patterns in OLD_PATTERNS.items())

# news headlines, politics, idioms and plain complaints that the old patterns flagged
OLD_MISFIRES = [
    ("Interview with lawyer of #Recount2016", "legal_threat"),
    ("Kavanaugh's lawyer says he is ready to testify on Thursday", "legal_threat"),
    ("Latest on the lawsuit against Trump University: settlement talks resume", "legal_threat"),
    ("Manafort's attorney asks the judge for more time", "legal_threat"),
    ("Voter fraud claims have been debunked again and again", "fraud"),
    ("Trump University was a scam and everybody knew it", "fraud"),
    ("I want a refund", "churn"),
    ("Please cancel my order, I ordered the wrong size", "churn"),
    ("I'm the happiest person alive right now, thank you @AcmeAir for the upgrade!", "urgency"),
    ("State of emergency declared as the hurricane approaches", "urgency"),
]


@pytest.mark.parametrize("text, signal", OLD_MISFIRES)
def test_old_patterns_misfire_where_the_new_ones_do_not(signals, text, signal):
    assert signal in fired(OLD, text)
    assert fired(signals, text) == []
    assert any(c.text == text and c.signal == signal and not c.expect for c in CASES)  # labelled negative


def test_old_patterns_score_worse_on_the_cases(signals):
    old_cases = [c for c in CASES if c.signal in OLD_PATTERNS and c.lang == "en"]
    old, new = score(OLD, old_cases), score(signals, old_cases)
    assert sum(row["fp"] for row in old.values()) >= 20 and sum(row["fp"] for row in new.values()) == 0
    assert all(old[name]["precision"] < 1.0 for name in OLD_PATTERNS), format_table(old)


# --- score, load_cases, format_table ----------------------------------------------------------------------------------

def _tiny():
    return (Signal("a", 0.5, (re.compile(r"\bfoo\b", re.IGNORECASE),)),
            Signal("b", 0.5, (re.compile(r"\bbar\b", re.IGNORECASE), re.compile(r"\bbaz\b", re.IGNORECASE))))


def test_score_counts_each_case_against_its_own_signal():
    cases = [Case("FOO here", "a", True), Case("nothing", "a", True), Case("foo bar", "a", False),
             Case("bar only", "a", False), Case("baz", "a", False),  # b fires on these two, not a: both tn for a
             Case("baz", "b", True), Case("bar", "b", True), Case("foo", "b", True)]
    report = score(_tiny(), cases)
    assert report == {
        "a": {"tp": 1, "fp": 1, "fn": 1, "tn": 2, "precision": 0.5, "recall": 0.5, "n_pos": 2, "n_neg": 3},
        "b": {"tp": 2, "fp": 0, "fn": 1, "tn": 0, "precision": 1.0, "recall": 0.6667, "n_pos": 3, "n_neg": 0},
    }
    # a RiskRules object scores the same as its signals; what fires is what assess() reports
    rules = RiskRules({"medium": 0.5, "high": 0.75, "critical": 0.9}, {}, _tiny())
    assert score(rules, cases) == report
    for case in cases:
        assert fired(rules, case.text) == rules.assess(case.text, {}).signals


def test_score_leaves_undefined_ratios_empty_and_refuses_unknown_signals():
    report = score(_tiny(), [Case("nothing", "a", False)])
    assert report == {"a": {"tp": 0, "fp": 0, "fn": 0, "tn": 1, "precision": None, "recall": None, "n_pos": 0,
                            "n_neg": 1}}
    assert score(_tiny(), []) == {}
    with pytest.raises(ValueError, match="threat_of_harm"):
        score(_tiny(), [Case("x", "threat_of_harm", True)])


def test_format_table_is_a_markdown_table():
    table = format_table(score(_tiny(), [Case("foo", "a", True), Case("x", "a", False), Case("x", "b", False)]))
    assert table.splitlines() == [
        "| signal | n_pos | n_neg | tp | fp | fn | tn | precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| a | 1 | 1 | 1 | 0 | 0 | 1 | 1.00 | 1.00 |",
        "| b | 0 | 1 | 0 | 0 | 0 | 1 | – | – |",
    ]


@pytest.mark.parametrize("line, error", [
    ("{not json", "line 2: not JSON"),
    ('["a list"]', "line 2: a case is a JSON object, got list"),
    ('{"text": "x", "signal": "a"}', "line 2: field 'expect' is missing"),
    ('{"text": "x", "signal": "a", "expect": "yes"}', """line 2: field 'expect' must be bool, got "yes\""""),
    ('{"text": "x", "signal": "a", "expect": 1}', "line 2: field 'expect' must be bool, got 1"),
    ('{"text": 3, "signal": "a", "expect": true}', "line 2: field 'text' must be str, got 3"),
    ('{"text": "x", "signal": "a", "expect": true, "lable": 1}', "line 2: unknown field"),
    ('{"text": "  ", "signal": "a", "expect": true}', "line 2: text and signal must not be empty"),
])
def test_load_cases_names_the_bad_line(tmp_path, line, error):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"text": "fine", "signal": "a", "expect": false, "note": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CasesError, match=re.escape(f"rule cases {path}, {error}")):
        load_cases(path)


def test_load_cases_skips_blank_lines_and_note_is_optional(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text('\n{"text": "fine", "signal": "a", "expect": false}\n\n', encoding="utf-8")
    assert load_cases(path) == [Case("fine", "a", False, "")]
    with pytest.raises(CasesError, match="No such file"):
        load_cases(tmp_path / "missing.jsonl")
    assert DEFAULT_CASES.name == "risk_rule_cases.jsonl"
