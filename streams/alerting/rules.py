"""Alert rules from a TOML file, evaluated without I/O: per-message rules on each classified message, and the
definitions of the windowed rules (their evaluation over the store's window counters is in gate.py). The hits of
one message merge into one alert per rule family. Ids are deterministic per (family or windowed rule, key, window):
a replay cannot raise an alert twice, whichever of a family's rules hit."""

import hashlib
import math
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, ClassVar, Literal, NamedTuple, Union


from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamsense.models.risk import LEVELS
from streamsense.streams.contracts import AlertCandidate

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "alert_rules.toml"
EXCERPT_CHARS = 200
EVIDENCE_MAX = 5
Level = Literal["low", "medium", "high", "critical"]
NAME = r"^[A-Za-z0-9_.-]+$"  # rule and family names
MESSAGE_RISK = "message_risk"  # the default family of the rules keyed by message (kind:id)


class AlertRulesError(ValueError):
    pass


def window_index(at: datetime, seconds: int) -> int:
    """The window a time falls in: whole seconds since the epoch // window length (a time without a zone is UTC).

    The same as `calendar.timegm(at.utctimetuple()) // seconds`, 8x faster (it runs for every stored row and
    window length: tests/test_alerts.py holds the two equal)."""
    return math.floor((at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()) // seconds


def alert_id(rule: str, key: str, window: str = "") -> str:
    """Deterministic id: the same (rule, key, window) always yields the same alert (`rule`: a per-message rule's
    family, a windowed rule's name)."""
    return hashlib.sha256(f"{rule}|{key}|{window}".encode()).hexdigest()[:32]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    severity: Level | None = None  # None: the message's risk level
    cooldown_seconds: float = Field(0, ge=0)
    max_per_minute: int | None = Field(None, ge=1)


class _PerMessage(_Rule):
    """A rule evaluated on each message. The hits of one message whose rules share a `family` make one alert."""

    family: str | None = Field(None, min_length=1, max_length=100, pattern=NAME)  # None only before validation
    default_family: ClassVar[str | None] = MESSAGE_RISK  # None: the rule's own name

    @model_validator(mode="before")
    @classmethod
    def _family(cls, data):
        # filled in here, not at use, so that a dump (`streamsense alerts check --json`) shows the family in effect
        if isinstance(data, dict) and data.get("family") is None:
            family = cls.default_family or data.get("name")
            if family is not None:
                data = {**data, "family": family}
        return data


class RiskLevel(_PerMessage):
    kind: Literal["risk_level"]
    min_level: Level

    def hit(self, p) -> str | None:
        if LEVELS.index(p.risk.level) >= LEVELS.index(self.min_level):
            return f"{p.risk.level} risk (score {p.risk.score:.2f}): {p.risk.explanation}"
        return None


class LabelScore(_PerMessage):
    kind: Literal["label_score"]
    label: Literal["offensive", "hate", "complaint"]
    threshold: float = Field(ge=0, le=1)

    def hit(self, p) -> str | None:
        score = p.risk.labels.get(self.label, 0.0)
        return f"{self.label} score {score:.2f} >= {self.threshold}" if score >= self.threshold else None


class SignalFired(_PerMessage):
    """Kind `signal`: any of `signals` (the risk rules' pattern signals, models/risk.py) fired on the message."""

    kind: Literal["signal"]
    signals: list[str] = Field(min_length=1)

    def hit(self, p) -> str | None:
        fired = [s for s in p.risk.signals if s in self.signals]
        if not fired:
            return None
        # the fired signals' own parts of the explanation ("fraud: 'charged me twice' (rule)"), not all of it: a
        # merged alert's risk_level reason already carries the whole explanation
        parts = [part for part in p.risk.explanation.split("; ") if part.split(":", 1)[0] in fired]
        return "signals " + ("; ".join(parts) if parts else ", ".join(fired))


class NegativeSentiment(_PerMessage):
    """Keyed by group (kind:group) with the message as the window: a family of its own unless told otherwise."""

    default_family: ClassVar[str | None] = None
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
    def _names_and_families(self):
        names = [r.name for r in self.rules]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"rule names must be unique: {', '.join(duplicated)}")
        keyed_by_group = {}  # family -> {keyed by group?}: one alert is about one message or one group, not both
        for r in self.rules:
            if isinstance(r, PER_MESSAGE):
                keyed_by_group.setdefault(r.family, set()).add(isinstance(r, NegativeSentiment))
        mixed = sorted(f for f, keyed in keyed_by_group.items() if len(keyed) > 1)
        if mixed:
            raise ValueError(f"family {', '.join(mixed)} mixes negative_sentiment rules (keyed by group) with rules "
                             "keyed by message: give them different families")
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
        """Candidate alerts for one classified message (gated later, in the store's transaction): one per family
        whose rules hit, carrying every hit's reason. Its severity is the highest of the hits', its `rule` that hit's
        rule (the first in file order of a tie: the rule whose cooldown and rate limit gate it), its id that of the
        family and key alone, so a replay whose hits differ (another model) still yields the same alert."""
        hits: dict[tuple, list] = {}  # (family, key, window) -> [(rule, severity, reason)] of its hits, in file order
        for rule in self.rules:
            if not isinstance(rule, PER_MESSAGE):
                continue
            if isinstance(rule, NegativeSentiment):
                why, key, window = rule.hit(prediction, group), f"{kind}:{group}", message_id
            else:
                why, key, window = rule.hit(prediction), f"{kind}:{message_id}", ""
            if why:
                severity = rule.severity or prediction.risk.level
                hits.setdefault((rule.family, key, window), []).append((rule, severity, why))
        out = []
        for (family, key, window), found in hits.items():
            top, severity, _ = max(found, key=lambda h: _LEVEL_INDEX.get(h[1], -1))  # max: the first of equals
            # the reasons ride in the evidence (a JSON column): the alerts table and topic keep their shape
            evidence = {**_evidence(message_id, kind, text, prediction.risk.score),
                        "reasons": [{"rule": r.name, "severity": s, "reason": why} for r, s, why in found]}
            out.append(_alert(top, key, severity, f"{kind} {message_id}: {_summary(why for _, _, why in found)}",
                              [evidence], model_version, at, alert_id(family, key, window)))
        return out


def _summary(reasons) -> str:
    """The reasons joined, leaving out a reason whose every part an earlier one already says (a signal rule's
    quotes repeat the risk_level reason's explanation); the evidence keeps every reason whole."""
    kept: list[str] = []
    for why in reasons:
        said = "; ".join(kept)
        parts = why.removeprefix("signals ").split("; ")
        if kept and all(part in said for part in parts):
            continue
        kept.append(why)
    return "; ".join(kept)


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
