"""Risk assessment: learned head probabilities plus pattern rules, combined into one score and level."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RULES = Path(__file__).with_name("risk_rules.toml")
LEVELS = ("low", "medium", "high", "critical")


class RulesError(ValueError):
    pass


@dataclass(frozen=True)
class Signal:
    name: str
    weight: float
    patterns: tuple[re.Pattern, ...]

    def match(self, text: str) -> str | None:
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


@dataclass(frozen=True)
class RiskRules:
    thresholds: dict[str, float]
    model_weights: dict[str, float]
    signals: tuple[Signal, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> "RiskRules":
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            thresholds = {level: float(raw["levels"][level]) for level in LEVELS[1:]}
            weights = {name: float(w) for name, w in raw.get("model", {}).items()}
            signals = tuple(
                Signal(s["name"], float(s["weight"]), tuple(re.compile(p, re.IGNORECASE) for p in s["patterns"]))
                for s in raw.get("signals", [])
            )
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError, re.error) as exc:
            raise RulesError(f"risk rules {path}: {exc}") from exc
        if not thresholds["medium"] < thresholds["high"] < thresholds["critical"] <= 1:
            raise RulesError(f"risk rules {path}: levels must rise: medium < high < critical <= 1")
        for name, w in [*weights.items(), *((s.name, s.weight) for s in signals)]:
            if not 0 <= w <= 1:
                raise RulesError(f"risk rules {path}: weight of {name} must be within [0, 1], got {w}")
        return cls(thresholds, weights, signals)

    def level(self, score: float) -> str:
        level = "low"
        for name in LEVELS[1:]:
            if score >= self.thresholds[name]:
                level = name
        return level

    def assess(self, text: str, head_probs: dict[str, float]) -> Risk:
        components: list[tuple[float, str]] = [
            (self.model_weights.get(name, 1.0) * p, f"{name} {p:.2f} (model)") for name, p in head_probs.items()
        ]
        fired = []
        for signal in self.signals:
            hit = signal.match(text)
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
