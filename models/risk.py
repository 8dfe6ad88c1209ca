"""Risk assessment: learned head probabilities plus pattern rules, each placed on one score scale; the strongest
component is the message's score, and the score's band its level (models/risk_rules.toml says what each level means)."""

import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from streamsense.models.language import HAN, HANGUL, KANA

DEFAULT_RULES = Path(__file__).with_name("risk_rules.toml")
LEVELS = ("low", "medium", "high", "critical")
_RISING = LEVELS[1:]


class RulesError(ValueError):
    pass


# Flags a pattern may carry, as the letters of a scoped group (?aiLmsx:...); str patterns are Unicode by default.
_FLAG_LETTERS = ((re.ASCII, "a"), (re.IGNORECASE, "i"), (re.LOCALE, "L"), (re.MULTILINE, "m"), (re.DOTALL, "s"),
                 (re.VERBOSE, "x"))
_SCOPABLE = re.UNICODE | sum(flag for flag, _ in _FLAG_LETTERS)
_LEADING_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))*(.*)", re.DOTALL)  # global inline flags at the start: (?i)(?x)...
# Numbered backreferences (\1) and conditionals ((?(1)...)) would point at other groups once patterns are joined
# (named ones would not, but "(?(" covers both): such patterns are not joined. Over-cautious is fine.
_NUMBERED_REFS = re.compile(r"\\[1-9]|\(\?\(")


def _alternative(pattern: re.Pattern, scoped: bool) -> str | None:
    """`pattern` as one alternative of a joined regex: (?:source), compiled with the pattern's flags, or where the
    patterns' flags differ (scoped) (?flags:source), compiled without flags. Global inline flags at its start are
    taken out of the source ((?i)abc → (?:abc) or (?i:abc)): they are in `pattern.flags` and, like the flags they
    become, apply to the whole pattern, so it matches exactly what it matched alone. (A global flag anywhere else
    fails to compile in Python 3.11, alone or joined.) None where it cannot be joined safely."""
    source, flags = pattern.pattern, pattern.flags
    if not isinstance(source, str) or flags & ~_SCOPABLE or _NUMBERED_REFS.search(source):
        return None
    rest = _LEADING_FLAGS.fullmatch(source)[1]
    letters = "".join(letter for flag, letter in _FLAG_LETTERS if flags & flag) if scoped else ""
    # In verbose mode a trailing "# comment" runs to the end of the line: end the line before closing the group.
    end = "\n" if flags & re.VERBOSE else ""
    # Non-capturing, and flags scoped only where they must be: capturing groups, or (?i:...) around every
    # alternative instead of one re.IGNORECASE, made the search 3-4x slower (re can no longer skip ahead).
    return f"(?{letters}:{rest}{end})"


def _join(patterns) -> re.Pattern | None:
    """One regex that matches a text iff one of `patterns` does: (?:p1)|(?:p2)|... . An alternation finds a match
    at the leftmost position where any alternative matches, so it finds one iff any pattern alone finds one (where
    each would match is another matter: see Signal.match). None where the patterns cannot be joined (_alternative)."""
    if not patterns:
        return None
    scoped = len({pattern.flags for pattern in patterns}) > 1
    parts = [_alternative(pattern, scoped) for pattern in patterns]
    if None in parts:
        return None
    try:
        joined = re.compile("|".join(parts), 0 if scoped else patterns[0].flags)
    except re.error:  # e.g. two patterns naming a group alike: keep them apart
        return None
    return joined if joined.groups == sum(pattern.groups for pattern in patterns) else None


@dataclass(frozen=True)
class Signal:
    name: str
    weight: float
    patterns: tuple[re.Pattern, ...]
    lang: str = "en"  # the language its patterns are written for (ISO 639-1); one name may have a table per language
    # The patterns joined as alternatives, so a text that none matches (most text) costs one search, not one per
    # pattern; None where they cannot be joined (see _alternative): then one search each.
    _any: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_any", _join(self.patterns))

    def match(self, text: str) -> str | None:
        """What the first pattern (in the rules' order) that matches `text` matched, or None."""
        joined = self._any
        if joined is not None and joined.search(text) is None:
            return None
        # A hit (rare): the joined regex's match is the leftmost one of any pattern, but the excerpt has always been
        # that of the first pattern in the rules' order that matches, so ask them in order as before.
        return self._match_each(text)

    def _match_each(self, text: str) -> str | None:
        for pattern in self.patterns:
            found = pattern.search(text)
            if found:
                return found.group(0)
        return None


# Escapes whose meaning a lower-cased copy of a pattern would not keep for lower-cased text: character codes (\x41 is
# "A", which lower-cased text no longer holds) and names. Patterns with them get no lower-case gate.
_CODE_ESCAPES = re.compile(r"\\[xuUN0-7]")
_FOLDS_TO_ASCII = re.compile("[a-z]", re.IGNORECASE)  # matches the non-ASCII characters that fold to ASCII letters


def _lowered(source: str) -> str | None:
    """`source` with its letters lower-cased and every escape kept as it is (\S stays \S, \B stays \B), or None where
    that could change what it matches on lower-cased text: code escapes, inline flag groups (a case-sensitive
    (?-i:...) part), or a cased non-ASCII character (the long s or the Kelvin sign, which re folds to ASCII letters)."""
    if _CODE_ESCAPES.search(source) or re.search(r"\(\?[aiLmsux-]*[-:)]", source.replace("(?:", "")):
        return None
    if any(not c.isascii() and (c.lower() != c or c.upper() != c) for c in set(source)):
        return None  # a cased non-ASCII character (those that fold to ASCII letters are all cased)
    out, i = [], 0
    while i < len(source):
        if source[i] == "\\":
            out.append(source[i:i + 2])
            i += 2
        else:
            out.append(source[i].lower())
            i += 1
    return "".join(out)


def _lower_gate(patterns) -> re.Pattern | None:
    """A case-sensitive regex that, on `text.lower()`, matches iff one of `patterns` (all compiled case-insensitive, as
    the rules file's are) matches `text`: the same search without re's case-insensitive matching, which made the
    all-signals gate ~3x slower (35 µs a tweet with the contextual patterns). Only for text where lower-casing and re's
    case folding agree: ASCII, or without a character that folds into ASCII (_folds_into_ascii); the gate falls back
    to the case-insensitive regex otherwise. None where any pattern cannot be lowered (_lowered) or joined."""
    if not patterns or any(p.flags & ~(re.IGNORECASE | re.UNICODE) or not p.flags & re.IGNORECASE or
                           not isinstance(p.pattern, str) for p in patterns):
        return None
    lowered = []
    for pattern in patterns:
        source = _lowered(pattern.pattern)
        if source is None:
            return None
        try:
            lowered.append(re.compile(source))
        except re.error:
            return None
    return _join(lowered)


# Languages written in a script of their own: their signal tables are tried only on text holding a character of that
# script (a Chinese pattern cannot match an English tweet, and the Chinese patterns, which cannot open with \b, made the
# one joined search over all tables 2.5x slower). Tables of any other language are tried on every text.
SCRIPTS = {
    "zh": f"[{HAN}]", "ja": f"[{KANA}{HAN}]", "ko": f"[{HANGUL}]",  # as models/language.py tells them apart
    "ru": "[\u0400-\u04ff]", "uk": "[\u0400-\u04ff]", "ar": "[\u0600-\u06ff]", "he": "[\u0590-\u05ff]",
    "th": "[\u0e00-\u0e7f]", "hi": "[\u0900-\u097f]", "el": "[\u0370-\u03ff]",
}


@lru_cache(maxsize=1)
def _folds_into_ascii() -> re.Pattern:
    """The non-ASCII characters (BMP) that re's case-insensitive matching or str.lower() turns into ASCII letters (the
    long s, the Kelvin sign, the dotted capital I, ...): text without any of them may take the lower-case gate too."""
    chars = [chr(c) for c in range(0x80, 0x10000) if not 0xD800 <= c <= 0xDFFF and (
        _FOLDS_TO_ASCII.search(chr(c)) or any(ch.isascii() for ch in chr(c).lower()))]
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


@dataclass(frozen=True)
class _Group:
    """The signal tables of one script: `script` (None: any text) says which texts they are tried on; `gate` is their
    patterns joined, `ascii_gate` the same for lower-cased ASCII text (_lower_gate)."""

    script: re.Pattern | None
    gate: re.Pattern | None
    ascii_gate: re.Pattern | None

    @classmethod
    def of(cls, signals, script: str | None) -> "_Group":
        patterns = [p for signal in signals for p in signal.patterns]
        gate = _join(patterns)
        return cls(None if script is None else re.compile(script), gate,
                   _lower_gate(patterns) if gate is not None and script is None else None)

    def may_signal(self, text: str) -> bool:
        if self.script is not None:
            if text.isascii() or self.script.search(text) is None:
                return False
        elif self.ascii_gate is not None and (text.isascii() or _folds_into_ascii().search(text) is None):
            # lower-casing and re's case folding agree on this text (_lower_gate; the patterns' own non-ASCII
            # characters are caseless)
            return self.ascii_gate.search(text.lower()) is not None
        return self.gate is None or self.gate.search(text) is not None


@dataclass(frozen=True)
class Risk:
    level: str
    score: float
    labels: dict[str, float]  # learned head probabilities (calibrated where the model card carries a calibration)
    signals: list[str]  # names of the rules that fired
    explanation: str

    def to_dict(self) -> dict:
        return {"level": self.level, "score": self.score, "labels": self.labels,
                "signals": self.signals, "explanation": self.explanation}


def _compile(path, name, source) -> re.Pattern:
    try:
        return re.compile(source, re.IGNORECASE)
    except re.error as exc:
        hint = ""
        if "global flags not at the start" in str(exc):
            hint = " (inline flags such as (?i) apply to the whole pattern and must open it; write (?i:...) instead)"
        raise RulesError(f"risk rules {path}: signal {name!r}: bad pattern {source!r}: {exc}{hint}") from exc


_BELOW = 1e-4  # a score capped "below a band" ends this far under the band's lowest score (4 decimals are stored)


@dataclass(frozen=True)
class Head:
    """Where a learned head's probability lands on the score scale: `medium` and `high` are the probabilities at which
    it reaches those levels (fitted on validation: `streamsense models risk-eval --fit`), linear in between; a head
    with no `high` stays below high, and no head alone makes a message critical. `requires`: another head that must
    reach its own `medium` for this one to count above low (the hate head, which reacts to swear words by itself)."""

    name: str
    medium: float
    high: float | None = None
    requires: str | None = None
    ceiling: str = "high"  # "medium": policy, the head never makes a message high (and `--fit` fits no `high`)
    # the head's probability, where it reaches `medium` on a text naming a group of people, is the lower of the text's
    # and its identity-blind counterfactual's (models/bias.py, docs/models.md "Fairness")
    identity_blind: bool = False
    # policy: the share of the head's risky validation rows `--fit` puts at `medium` (None: the fit's default, 0.85)
    recall: float | None = None

    def score(self, p: float, bands: dict[str, float]) -> float:
        medium, high, critical = bands["medium"], bands["high"], bands["critical"]
        if p < self.medium:
            return min(medium * max(p, 0.0) / self.medium, medium - _BELOW)
        if self.high is None or p < self.high:
            top = 1.0 if self.high is None else self.high
            return min(medium + (high - medium) * (p - self.medium) / (top - self.medium), high - _BELOW)
        return min(high + (critical - high) * (p - self.high) / (1.0 - self.high), critical - _BELOW)


def _heads(path, where: str, raw: dict) -> tuple[dict[str, Head], str | None]:
    """One [heads] table (`where` names it in errors): its heads and `fitted_for`."""
    table = dict(raw)
    fitted_for = table.pop("fitted_for", None)
    heads = {}
    for name, h in table.items():
        unknown = set(h) - {"medium", "high", "requires", "ceiling", "identity_blind", "recall"}
        if unknown:
            raise RulesError(f"risk rules {path}: {where}.{name}: unknown option {', '.join(sorted(unknown))}")
        ceiling = h.get("ceiling", "high")
        if ceiling not in ("medium", "high") or (ceiling == "medium" and h.get("high") is not None):
            raise RulesError(f"risk rules {path}: {where}.{name}: ceiling is \"medium\" (then no `high`) or "
                             f"\"high\", got {ceiling!r}")
        heads[name] = Head(name, float(h["medium"]), None if h.get("high") is None else float(h["high"]),
                           h.get("requires"), ceiling, bool(h.get("identity_blind", False)),
                           None if h.get("recall") is None else float(h["recall"]))
    for head in heads.values():
        if head.recall is not None and not 0 < head.recall < 1:
            raise RulesError(f"risk rules {path}: {where}.{head.name}: recall is a share between 0 and 1")
        if not 0 < head.medium < (head.high if head.high is not None else 1.0) <= 1:
            raise RulesError(f"risk rules {path}: {where}.{head.name}: need 0 < medium < high <= 1")
        if head.requires is not None and head.requires not in heads:
            raise RulesError(f"risk rules {path}: {where}.{head.name} requires {head.requires!r}, "
                             f"which has no [{where}.{head.requires}]")
    return heads, fitted_for


@dataclass(frozen=True)
class RiskRules:
    thresholds: dict[str, float]  # lowest score of each level above low
    heads: dict[str, Head] = field(default_factory=dict)
    signals: tuple[Signal, ...] = field(default_factory=tuple)
    fitted_for: str | None = None  # the model the head thresholds were fitted for ("name:version")
    # model name -> (its heads, fitted_for): [models."name".heads] tables, read by for_model
    model_heads: dict[str, tuple[dict[str, Head], str | None]] = field(default_factory=dict)
    # Every signal's patterns joined: one search tells whether any signal fires at all (most texts: none).
    _gate: re.Pattern | None = field(init=False, repr=False, compare=False)  # the tables of every other script
    _groups: tuple[_Group, ...] = field(init=False, repr=False, compare=False)  # per script (SCRIPTS), others first

    def __post_init__(self):
        common = [s for s in self.signals if s.lang not in SCRIPTS]
        groups = [_Group.of(common, None)]
        for lang in dict.fromkeys(s.lang for s in self.signals if s.lang in SCRIPTS):
            groups.append(_Group.of([s for s in self.signals if s.lang == lang], SCRIPTS[lang]))
        object.__setattr__(self, "_groups", tuple(groups))
        object.__setattr__(self, "_gate", groups[0].gate)

    @property
    def _ascii_gate(self) -> re.Pattern | None:
        return self._groups[0].ascii_gate

    def may_signal(self, text: str) -> bool:
        """False only where no signal can fire on `text` (most texts): one search per script group that applies,
        case-sensitive on the lower-cased text where it is ASCII."""
        return any(group.may_signal(text) for group in self._groups)

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> "RiskRules":
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            if "model" in raw:
                raise RulesError(f"risk rules {path}: [model] weights were replaced by [heads.NAME] thresholds "
                                 "(medium, high, requires); see the shipped models/risk_rules.toml")
            thresholds = {level: float(raw["levels"][level]) for level in LEVELS[1:]}
            heads, fitted_for = _heads(path, "heads", raw.get("heads", {}))
            model_heads = {name: _heads(path, f"models.{name}.heads", section.get("heads", {}))
                           for name, section in raw.get("models", {}).items()}
            signals = tuple(
                Signal(s["name"], float(s["weight"]), tuple(_compile(path, s["name"], p) for p in s["patterns"]),
                       str(s.get("lang", "en")))
                for s in raw.get("signals", [])
            )
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, re.error) as exc:
            if isinstance(exc, RulesError):
                raise
            raise RulesError(f"risk rules {path}: {exc}") from exc
        if not 0 < thresholds["medium"] < thresholds["high"] < thresholds["critical"] <= 1:
            raise RulesError(f"risk rules {path}: levels must rise: 0 < medium < high < critical <= 1")
        weights = {}
        for s in signals:
            if not 0 <= s.weight <= 1:
                raise RulesError(f"risk rules {path}: weight of {s.name} must be within [0, 1], got {s.weight}")
            if not re.fullmatch(r"[a-z]{2,3}", s.lang):
                raise RulesError(f"risk rules {path}: signal {s.name}: lang must be a language code such as en or zh, "
                                 f"got {s.lang!r}")
            if weights.setdefault(s.name, s.weight) != s.weight:
                raise RulesError(f"risk rules {path}: signal {s.name} has weights {weights[s.name]} and {s.weight} in "
                                 "different tables: one signal, one weight, whatever the language")
        return cls(thresholds, heads, signals, fitted_for, model_heads)

    def for_model(self, name: str) -> "RiskRules":
        """These rules with the heads fitted for model `name` where the file has a [models."name".heads] table (the
        Chinese model: its heads are other heads, with other probabilities); else these rules as they are."""
        if name not in self.model_heads:
            return self
        heads, fitted_for = self.model_heads[name]
        return replace(self, heads=heads, fitted_for=fitted_for)

    @property
    def identity_blind(self) -> tuple[str, ...]:
        """The heads taken identity-blind (Head.identity_blind)."""
        return tuple(name for name, head in self.heads.items() if head.identity_blind)

    @property
    def signals_by_name(self) -> dict[str, Signal]:
        return {s.name: s for s in self.signals}

    def level(self, score: float) -> str:
        level = "low"
        thresholds = self.thresholds
        for name in _RISING:
            if score >= thresholds[name]:
                level = name
        return level

    def fire(self, text: str) -> tuple[tuple[str, float, str], ...]:
        """The pattern signals that fire on `text`, in the rules' order: (name, weight, what it matched) each, a signal
        with tables in two languages once. The half of `assess` that reads the text alone (not the heads), so rules
        with the same signals (RiskRules.same_signals) may share it: a shadowed challenger takes the champion's."""
        fired = []
        names = []
        for signal in self.signals if self.may_signal(text) else ():
            hit = signal.match(text)
            if hit and signal.name not in names:  # a signal with tables in two languages counts once
                names.append(signal.name)
                fired.append((signal.name, signal.weight, hit))
        return tuple(fired)

    def same_signals(self, other: "RiskRules") -> bool:
        """Whether `other` has these pattern signals (so `fire` says the same on any text)."""
        return other.signals is self.signals or other.signals == self.signals

    def assess(self, text: str, head_probs: dict[str, float],
               fired: tuple[tuple[str, float, str], ...] | None = None) -> Risk:
        """The message's risk: each learned head (Head.score) and each pattern signal that fires (its weight) is a
        component on the score scale; the score is the strongest component's, the level its band. Heads without a
        [heads] table are reported in `labels` but do not count. The explanation lists the components of at least
        0.2, strongest first. `fired`: what `fire(text)` gives, where the caller has it already."""
        bands = self.thresholds
        heads = self.heads
        labels = {}
        score = 0.0
        shown = []  # (contribution, why)
        for name, p in head_probs.items():
            p = float(p)
            labels[name] = round(p, 4)
            head = heads.get(name)
            if head is None or p != p:  # NaN: no evidence either way
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
        if fired is None:
            fired = self.fire(text)
        for name, weight, hit in fired:
            score = max(score, weight)
            if weight >= 0.2:
                shown.append((weight, f"{name}: '{hit}' (rule)"))
        score = round(score, 4)
        if shown:
            shown.sort(key=lambda c: -c[0])
            explanation = "; ".join([why for _, why in shown])
        else:
            explanation = "no risk signal"
        return Risk(level=self.level(score), score=score, labels=labels, signals=[name for name, _, _ in fired],
                    explanation=explanation)
