"""Risk assessment: learned head probabilities plus pattern rules, combined into one score and level."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Risk:
    level: str
    score: float
    labels: dict[str, float]  # learned head probabilities
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


@dataclass(frozen=True)
class RiskRules:
    thresholds: dict[str, float]
    model_weights: dict[str, float]
    signals: tuple[Signal, ...] = field(default_factory=tuple)
    # Every signal's patterns joined: one search tells whether any signal fires at all (most texts: none).
    _gate: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_gate", _join([p for signal in self.signals for p in signal.patterns]))

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> "RiskRules":
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            thresholds = {level: float(raw["levels"][level]) for level in LEVELS[1:]}
            weights = {name: float(w) for name, w in raw.get("model", {}).items()}
            signals = tuple(
                Signal(s["name"], float(s["weight"]), tuple(_compile(path, s["name"], p) for p in s["patterns"]))
                for s in raw.get("signals", [])
            )
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, re.error) as exc:
            if isinstance(exc, RulesError):
                raise
            raise RulesError(f"risk rules {path}: {exc}") from exc
        if not thresholds["medium"] < thresholds["high"] < thresholds["critical"] <= 1:
            raise RulesError(f"risk rules {path}: levels must rise: medium < high < critical <= 1")
        for name, w in [*weights.items(), *((s.name, s.weight) for s in signals)]:
            if not 0 <= w <= 1:
                raise RulesError(f"risk rules {path}: weight of {name} must be within [0, 1], got {w}")
        return cls(thresholds, weights, signals)

    def level(self, score: float) -> str:
        level = "low"
        thresholds = self.thresholds
        for name in _RISING:
            if score >= thresholds[name]:
                level = name
        return level

    def assess(self, text: str, head_probs: dict[str, float]) -> Risk:
        """The same Risk as _assess_reference (the original), with less work: one regex search for all signals where
        none fires (one per signal, and one per pattern of a signal that fires, where one does), and the
        explanation's parts formatted only for the components it shows."""
        weights = self.model_weights
        remaining = 1.0  # noisy-OR: multiplied in the original's order (model heads, then signals), as floats round
        labels = {}
        shown = []  # (contribution, why) for the components of at least 0.2, as the original sorts them
        for name, p in head_probs.items():
            contribution = weights.get(name, 1.0) * p
            remaining *= 1.0 - contribution
            labels[name] = round(float(p), 4)
            if contribution >= 0.2:
                shown.append((contribution, f"{name} {p:.2f} (model)"))
            elif contribution != contribution:  # NaN: the original's sort order is not defined by values alone
                return self._assess_reference(text, head_probs)
        fired = []
        gate = self._gate
        for signal in self.signals if gate is None or gate.search(text) else ():
            hit = signal.match(text)
            if hit:
                fired.append(signal.name)
                weight = signal.weight
                remaining *= 1.0 - weight
                if weight >= 0.2:
                    shown.append((weight, f"{signal.name}: '{hit}' (rule)"))
                elif weight != weight:
                    return self._assess_reference(text, head_probs)
        score = round(1.0 - remaining, 4)
        if shown:
            # Sorting only the shown components orders them as sorting all and then filtering did: (value, text)
            # pairs without NaN are totally ordered.
            shown.sort(reverse=True)
            explanation = "; ".join([why for _, why in shown])
        else:
            explanation = "no risk signal"
        return Risk(level=self.level(score), score=score, labels=labels, signals=fired, explanation=explanation)

    def _assess_reference(self, text: str, head_probs: dict[str, float]) -> Risk:
        """The original assess(), kept for the inputs assess() hands over (NaN) and as the reference in tests."""
        components: list[tuple[float, str]] = [
            (self.model_weights.get(name, 1.0) * p, f"{name} {p:.2f} (model)") for name, p in head_probs.items()
        ]
        fired = []
        for signal in self.signals:
            hit = signal._match_each(text)
            if hit:
                fired.append(signal.name)
                components.append((signal.weight, f"{signal.name}: '{hit}' (rule)"))
        remaining = 1.0
        for contribution, _ in components:
            remaining *= 1.0 - contribution
        score = round(1.0 - remaining, 4)
        shown = [why for c, why in sorted(components, reverse=True) if c >= 0.2]
        return Risk(
            level=self.level(score),
            score=score,
            labels={k: round(float(v), 4) for k, v in head_probs.items()},
            signals=fired,
            explanation="; ".join(shown) or "no risk signal",
        )
