"""Alert rules from a TOML file, evaluated without I/O: per-message rules on each classified message, and the
definitions of the windowed rules (their evaluation over the store's window counters is in gate.py). Ids are
deterministic per (rule, key, window): a replay cannot raise an alert twice."""

import hashlib
import math
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, Union


from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamsense.models.risk import LEVELS
from streamsense.streams.contracts import AlertCandidate

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "alert_rules.toml"
EXCERPT_CHARS = 200
EVIDENCE_MAX = 5
Level = Literal["low", "medium", "high", "critical"]


class AlertRulesError(ValueError):
    pass


def window_index(at: datetime, seconds: int) -> int:
    """The window a time falls in: whole seconds since the epoch // window length (a time without a zone is UTC).

    The same as `calendar.timegm(at.utctimetuple()) // seconds`, 8x faster (it runs for every stored row and
    window length: tests/test_alerts.py holds the two equal)."""
    return math.floor((at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()) // seconds


def alert_id(rule: str, key: str, window: str = "") -> str:
    """Deterministic id: the same (rule, key, window) always yields the same alert."""
    return hashlib.sha256(f"{rule}|{key}|{window}".encode()).hexdigest()[:32]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    severity: Level | None = None  # None: the message's risk level
    cooldown_seconds: float = Field(0, ge=0)
    max_per_minute: int | None = Field(None, ge=1)


class RiskLevel(_Rule):
    kind: Literal["risk_level"]
    min_level: Level

    def hit(self, p) -> str | None:
        if LEVELS.index(p.risk.level) >= LEVELS.index(self.min_level):
            return f"{p.risk.level} risk (score {p.risk.score:.2f}): {p.risk.explanation}"
        return None


class LabelScore(_Rule):
    kind: Literal["label_score"]
    label: Literal["offensive", "hate", "complaint"]
    threshold: float = Field(ge=0, le=1)

    def hit(self, p) -> str | None:
        score = p.risk.labels.get(self.label, 0.0)
        return f"{self.label} score {score:.2f} >= {self.threshold}" if score >= self.threshold else None


class SignalFired(_Rule):
    """Kind `signal`: any of `signals` (the risk rules' pattern signals, models/risk.py) fired on the message."""

    kind: Literal["signal"]
    signals: list[str] = Field(min_length=1)

    def hit(self, p) -> str | None:
        fired = [s for s in p.risk.signals if s in self.signals]
        return f"signals {', '.join(fired)}: {p.risk.explanation}" if fired else None


class NegativeSentiment(_Rule):
    kind: Literal["negative_sentiment"]
    min_confidence: float = Field(ge=0, le=1)
    groups: list[str] = Field(min_length=1)

    def hit(self, p, group: str | None = None) -> str | None:
        negative = p.sentiment.scores.get("negative", 0.0)
        if group in self.groups and negative >= self.min_confidence:
            return f"negative ({negative:.2f}) on watched {group}"
        return None


class Counts(NamedTuple):
    """Messages in one (kind, group, window), and how many of them are negative."""

    n: int
    negative: int


class _Windowed(_Rule):
    window_seconds: int = Field(ge=1)
    baseline_windows: int = Field(ge=1)
    factor: float = Field(gt=0)
    min_messages: int = Field(1, ge=1)


class NegativeShare(_Windowed):
    kind: Literal["negative_share"]

    def measure(self, counts: "Counts") -> float:
        return counts.negative / counts.n if counts.n else 0.0

    def counts_in_baseline(self, counts: "Counts") -> bool:
        return counts.n >= self.min_messages  # a share of a handful of messages is noise

    def describe(self, value: float, baseline: float) -> str:
        return f"negative share {value:.0%} vs baseline {baseline:.0%} (x{self.factor} threshold)"


class Volume(_Windowed):
    kind: Literal["volume"]

    def measure(self, counts: "Counts") -> float:
        return float(counts.n)

    def counts_in_baseline(self, counts: "Counts") -> bool:
        return True  # quiet windows are the baseline a volume spike stands out from

    def describe(self, value: float, baseline: float) -> str:
        return f"{value:.0f} messages vs baseline {baseline:.1f} per window (x{self.factor} threshold)"


PER_MESSAGE = (RiskLevel, LabelScore, SignalFired, NegativeSentiment)
AnyRule = Annotated[Union[RiskLevel, LabelScore, SignalFired, NegativeSentiment, NegativeShare, Volume],
                    Field(discriminator="kind")]


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[AnyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [r.name for r in self.rules]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"rule names must be unique: {', '.join(duplicated)}")
        return self

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> "AlertRules":
        try:
            return cls.model_validate(tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AlertRulesError(f"alert rules {path}: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise AlertRulesError(f"alert rules {path}: {problems}") from None

    @property
    def by_name(self) -> dict:
        return {r.name: r for r in self.rules}

    @property
    def window_lengths(self) -> set[int]:
        return {r.window_seconds for r in self.rules if isinstance(r, _Windowed)}

    def _screen(self) -> "_Screen":
        """The per-message rules' screen, computed once for this rule list (kept in __dict__ like a cached property:
        out of equality and dumps; a model_copy with other rules computes its own)."""
        cached = self.__dict__.get("_per_message_screen")
        if cached is None or cached[0] is not self.rules:
            cached = self.__dict__["_per_message_screen"] = (
                self.rules, _Screen.of(r for r in self.rules if isinstance(r, PER_MESSAGE)))
        return cached[1]

    def may_fire(self, group: str | None, risk, sentiment_scores: dict[str, float]) -> bool:
        """False when no per-message rule can fire for a message with this group, risk (`level`, `labels`,
        `signals`) and sentiment scores: `per_message` would return [] for it. A cheap pre-check, one per message on
        the pipeline's hot path; True means "evaluate the rules", not that one fires."""
        screen = self._screen()
        if screen.everything:
            return True
        level = _LEVEL_INDEX.get(risk.level)
        if level is None or level >= screen.min_level:
            return True
        if screen.signals and risk.signals and not screen.signals.isdisjoint(risk.signals):
            return True
        if screen.labels:
            labels = risk.labels
            for label, threshold in screen.labels:
                if labels.get(label, 0.0) >= threshold:
                    return True
        return screen.groups is not None and group in screen.groups and \
            sentiment_scores.get("negative", 0.0) >= screen.min_negative

    def per_message(self, kind: str, message_id: str, group: str | None, text: str, prediction,
                    model_version: str, at: datetime) -> list[AlertCandidate]:
        """Candidate alerts for one classified message (gated later, in the store's transaction)."""
        out = []
        for rule in self.rules:
            if not isinstance(rule, PER_MESSAGE):
                continue
            why = rule.hit(prediction, group) if isinstance(rule, NegativeSentiment) else rule.hit(prediction)
            if why:
                key = f"{kind}:{message_id}" if not isinstance(rule, NegativeSentiment) else f"{kind}:{group}"
                window = "" if not isinstance(rule, NegativeSentiment) else message_id
                out.append(_alert(rule, key, rule.severity or prediction.risk.level, f"{kind} {message_id}: {why}",
                                  [_evidence(message_id, kind, text, prediction.risk.score)], model_version, at,
                                  alert_id(rule.name, key, window)))
        return out


_LEVEL_INDEX = {level: i for i, level in enumerate(LEVELS)}


class _Screen(NamedTuple):
    """What any per-message rule needs to fire, merged over the rules (the loosest bound of each kind)."""

    min_level: int  # lowest risk level index of a risk_level rule (len(LEVELS): none)
    labels: tuple[tuple[str, float], ...]  # (label, lowest threshold) of the label_score rules
    signals: frozenset[str]  # signals of the signal rules
    groups: frozenset | None  # watched groups of the negative_sentiment rules (None: none)
    min_negative: float  # lowest min_confidence of a negative_sentiment rule
    everything: bool = False  # a rule this screen does not know: always evaluate

    @classmethod
    def of(cls, rules) -> "_Screen":
        min_level, labels, signals, groups, min_negative, everything = len(LEVELS), {}, set(), None, 1.0, False
        for rule in rules:
            if isinstance(rule, RiskLevel):
                min_level = min(min_level, LEVELS.index(rule.min_level))
            elif isinstance(rule, LabelScore):
                labels[rule.label] = min(labels.get(rule.label, rule.threshold), rule.threshold)
            elif isinstance(rule, SignalFired):
                signals.update(rule.signals)
            elif isinstance(rule, NegativeSentiment):
                groups = (groups or frozenset()) | frozenset(rule.groups)
                min_negative = min(min_negative, rule.min_confidence)
            else:
                everything = True
        return cls(min_level, tuple(labels.items()), frozenset(signals), groups, min_negative, everything)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _evidence(message_id: str, kind: str, text: str, risk_score: float) -> dict:
    return {"message_id": message_id, "kind": kind, "excerpt": text[:EXCERPT_CHARS], "risk_score": risk_score}


def _alert(rule, key, severity, summary, evidence, model_version, at, ident, window=(None, None)) -> AlertCandidate:
    return {"id": ident, "rule": rule.name, "severity": severity, "key": key, "window_start": window[0],
            "window_end": window[1], "summary": summary, "evidence": evidence, "model_version": model_version,
            "created_at": at}


def alert_message(row) -> dict:
    """The documented JSON shape of an alert on the alerts topic (docs/alerts.md)."""
    return {
        "id": row["id"], "rule": row["rule"], "severity": row["severity"], "key": row["key"],
        "window": {"start": _iso(row["window_start"]), "end": _iso(row["window_end"])} if row["window_start"] else None,
        "summary": row["summary"], "evidence": row["evidence"], "model_version": row["model_version"],
        "created_at": _iso(row["created_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value else None
