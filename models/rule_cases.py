"""Hand-labelled cases for the risk rules' pattern signals (models/risk_rule_cases.jsonl) and how the rules fare on them.

One JSON object a line: {"text": ..., "signal": NAME, "expect": true|false, "note": ..., "lang": "zh"} ("lang"
optional, default "en": the case is checked against the signal's table for that language). `expect` says whether the
signal NAME should fire on the text: positives are messages to a company where the writer threatens to sue, reports
fraud on their own account, leaves, has an urgent problem or threatens violence; negatives are hard ones, the same
words out of that context (news, politics, idioms, third parties, questions about policy, the brand itself talking).
A case is predicted positive iff its signal fires on its text (Signal.match), whatever other signals do.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from streamsense.models.risk import DEFAULT_RULES, RiskRules, Signal

DEFAULT_CASES = Path(__file__).with_name("risk_rule_cases.jsonl")
_FIELDS = {"text": str, "signal": str, "expect": bool, "note": str, "lang": str}
_OPTIONAL = {"note", "lang"}


class CasesError(ValueError):
    pass


@dataclass(frozen=True)
class Case:
    text: str
    signal: str
    expect: bool
    note: str = ""
    lang: str = "en"

    @property
    def key(self) -> str:
        """The signal table it is checked against, as reports name it: "fraud", "fraud:zh"."""
        return _key(self.signal, self.lang)


def _key(name: str, lang: str) -> str:
    return name if lang == "en" else f"{name}:{lang}"


def load_cases(path: Path = DEFAULT_CASES) -> list[Case]:
    """The cases of a JSON-lines file; blank lines are skipped. CasesError names the file and line of a bad case: not
    JSON, not an object, a field missing, of the wrong type or unknown, or an empty text or signal."""
    cases = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CasesError(f"rule cases {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"rule cases {path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CasesError(f"{where}: not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise CasesError(f"{where}: a case is a JSON object, got {type(row).__name__}")
        unknown = set(row) - set(_FIELDS)
        if unknown:
            raise CasesError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for name, kind in _FIELDS.items():
            if name not in row:
                if name in _OPTIONAL:
                    continue
                raise CasesError(f"{where}: field {name!r} is missing")
            if type(row[name]) is not kind:  # not isinstance: true/false only for expect, and no 0/1 for it
                raise CasesError(f"{where}: field {name!r} must be {kind.__name__}, got {json.dumps(row[name])}")
        if not row["text"].strip() or not row["signal"].strip():
            raise CasesError(f"{where}: text and signal must not be empty")
        cases.append(Case(row["text"], row["signal"], row["expect"], row.get("note", ""), row.get("lang", "en")))
    return cases


def load_signals(path: Path = DEFAULT_RULES) -> tuple[Signal, ...]:
    """The [[signals]] tables of a risk rules file, as RiskRules.load reads them (the cases check the patterns)."""
    return RiskRules.load(path).signals


def _signals(rules) -> tuple[Signal, ...]:
    """RiskRules (or anything with .signals), or the signals themselves."""
    return tuple(getattr(rules, "signals", rules))


def fired(rules, text: str) -> list[str]:
    """Names of the signals that fire on `text`, in the rules' order (what RiskRules.assess reports as signals)."""
    return list(dict.fromkeys(s.name for s in _signals(rules) if s.match(text) is not None))  # a name counts once


def score(rules, cases) -> dict[str, dict]:
    """Per signal table named by a case (in the rules' order; "fraud" for English, "fraud:zh" for another language):
    tp, fp, fn, tn, precision, recall (None where undefined: nothing predicted, or no positives), n_pos and n_neg.
    ValueError where a case names a signal the rules lack."""
    signals = {_key(s.name, s.lang): s for s in _signals(rules)}
    cases = list(cases)
    missing = sorted({c.key for c in cases} - set(signals))
    if missing:
        raise ValueError(f"rule cases name signals the rules do not have: {', '.join(missing)}")
    counts = {name: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for name in signals if any(c.key == name for c in cases)}
    for case in cases:
        predicted = signals[case.key].match(case.text) is not None
        key = ("tp" if case.expect else "fp") if predicted else ("fn" if case.expect else "tn")
        counts[case.key][key] += 1
    report = {}
    for name, c in counts.items():
        tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
        report[name] = {**c, "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                        "recall": round(tp / (tp + fn), 4) if tp + fn else None, "n_pos": tp + fn, "n_neg": fp + tn}
    return report


def mistakes(rules, cases) -> list[Case]:
    """The cases the rules get wrong (their signal fires where it should not, or stays silent where it should fire)."""
    signals = {_key(s.name, s.lang): s for s in _signals(rules)}
    return [c for c in cases if c.key in signals and (signals[c.key].match(c.text) is not None) != c.expect]


def format_table(report: dict[str, dict]) -> str:
    """`score`'s report as a markdown table, one row per signal."""
    def show(value):
        return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    columns = ("n_pos", "n_neg", "tp", "fp", "fn", "tn", "precision", "recall")
    lines = ["| signal | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(show(row[c]) for c in columns) + " |" for name, row in report.items()]
    return "\n".join(lines)
