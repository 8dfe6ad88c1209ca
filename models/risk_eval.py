"""Risk evaluation: what the risk levels and alerts do on labelled data, and the fits behind them.

Sets (models/tasks.py, the datasets' own splits): the three risk heads' sets, where a row labelled with the head's
positive label is *risky* and any other row *benign*; the sentiment set as a stream of ordinary traffic (nothing in it
is labelled risky: it says how often everyday posts reach each level); and the hand-labelled rule cases
(models/risk_rule_cases.jsonl), where a case expected to fire its signal is risky.

Every figure comes from the serving path: the model's runtime (its text preparation and calibration), the Classifier's
risk decision and the alert rules' per-message evaluation, as the worker runs them.

Fits, on validation only:
- `fit_temperatures`: one temperature per head, minimising the negative log-likelihood of the head's validation set
  (temperature scaling, Guo et al. 2017); written into the model card by `streamsense models calibrate`.
- `fit_heads`: each risk head's `medium` probability is the highest at which it still reaches `recall` of its set's
  risky rows; its `high` probability the lowest at which at most `benign_budget` of every set's benign rows (the
  ordinary stream's rows too) reach it, or none where that needs more than `max_high`.
"""

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from streamsense.models.classifier import Classifier
from streamsense.models.data import load_split, require_datasets
from streamsense.models.risk import LEVELS, Head, RiskRules
from streamsense.models.runtime import Encoded, softmax
from streamsense.models.tasks import RISK_TASKS, TASKS, task_entry, task_views

ORDINARY = "ordinary"  # the sentiment set read as everyday traffic
RULE_CASES = "rule_cases"
CHUNK = 256


@dataclass
class Scored:
    """One set, classified: per row its risky flag (None for the ordinary stream), calibrated head probabilities,
    level, signals and how many alerts the per-message rules raise."""

    name: str
    risky: np.ndarray | None
    probs: dict[str, np.ndarray]
    levels: np.ndarray  # index into LEVELS
    signals: list[list[str]]
    alerts: int
    texts: list[str] = field(repr=False, default_factory=list)


def _classify(classifier: Classifier, texts: list[str], alert_rules=None) -> tuple[dict, list, int]:
    runtime = classifier.runtime
    probs: dict[str, list] = {}
    risks, alerts = [], 0
    at = datetime.now(timezone.utc)
    for start in range(0, len(texts), CHUNK):
        part = texts[start:start + CHUNK]
        encoded = runtime.tokenize(part)
        inferred = runtime.infer(encoded)
        result = classifier.decide(part, encoded, inferred)
        for name, p in inferred.items():
            probs.setdefault(name, []).append(p)
        risks += result.risks
        if alert_rules is not None:
            for i in range(len(result)):
                alerts += len(alert_rules.per_message("post", str(start + i), None, part[i], result.prediction(i),
                                                      classifier.model_version, at))
    return {name: np.concatenate(p) for name, p in probs.items()}, risks, alerts


def _positive(classifier: Classifier, probs: dict) -> dict[str, np.ndarray]:
    out = {}
    for task in classifier.runtime.tasks:
        if task.positive and task.name in probs:
            out[task.name] = probs[task.name][:, task.labels.index(task.positive)]
    return out


def score_set(classifier: Classifier, name: str, texts: list[str], risky, alert_rules=None) -> Scored:
    probs, risks, alerts = _classify(classifier, texts, alert_rules)
    return Scored(name, None if risky is None else np.asarray(risky, dtype=bool), _positive(classifier, probs),
                  np.array([LEVELS.index(r.level) for r in risks], dtype=np.int64), [r.signals for r in risks], alerts,
                  list(texts))


def _entries(card: dict | None) -> list[dict]:
    """The model card's tasks, else the English ones."""
    return (card or {}).get("tasks") or [task_entry((t,)) for t in TASKS]


def require_sets(datasets_dir: Path, card: dict | None, splits) -> None:
    """Every dataset the card's tasks read has `splits`, else DatasetsMissingError names all that do not."""
    require_datasets(datasets_dir, [v.dataset for entry in _entries(card) for v in task_views(entry)], splits)


def load_sets(datasets_dir: Path, split: str, emoji: str, limit: int | None = None,
              cases_path: Path | None = None, card: dict | None = None) -> dict[str, tuple[list[str], list[bool] | None]]:
    """Texts and risky flags of every set (rule cases only where `cases_path` is given; they have no split). The sets
    are the model card's tasks (every dataset of a task: the Chinese sentiment head reads two), else the English
    ones."""
    require_sets(datasets_dir, card, (split,))
    sets = {}
    for entry in _entries(card):
        views = task_views(entry)
        rows = [r for view in views for r in load_split(datasets_dir, view, split, limit, emoji=emoji)]
        if entry["name"] == "sentiment":
            sets[ORDINARY] = ([r.text for r in rows], None)
        elif views[0].positive:
            positive = views[0].labels.index(views[0].positive)
            sets[entry["name"]] = ([r.text for r in rows], [r.label == positive for r in rows])
    if ORDINARY in sets:  # last, as before
        sets[ORDINARY] = sets.pop(ORDINARY)
    if cases_path is not None:
        from streamsense.models.rule_cases import load_cases

        cases = load_cases(cases_path)
        sets[RULE_CASES] = ([c.text for c in cases], [c.expect for c in cases])
    return sets


def score_sets(classifier: Classifier, sets: dict, alert_rules=None) -> dict[str, Scored]:
    return {name: score_set(classifier, name, texts, risky, alert_rules) for name, (texts, risky) in sets.items()}


def _share(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def summarize(scored: dict[str, Scored]) -> dict:
    """Per set: benign rows reaching high or critical, risky rows reaching at least medium, rows per level (benign
    and risky apart) and alerts per 10,000 messages."""
    out = {}
    for name, s in scored.items():
        high = s.levels >= LEVELS.index("high")
        medium = s.levels >= LEVELS.index("medium")
        row = {"n": int(s.levels.size), "alerts_per_10k": round(s.alerts * 10_000 / max(s.levels.size, 1), 1)}
        if s.risky is None:
            row |= {"high_or_critical": _share(high),
                    "levels": {lv: int((s.levels == i).sum()) for i, lv in enumerate(LEVELS)}}
        else:
            benign, risky = ~s.risky, s.risky
            row |= {"benign": int(benign.sum()), "risky": int(risky.sum()),
                    "benign_high_or_critical": _share(high[benign]), "risky_medium_or_above": _share(medium[risky]),
                    "levels_benign": {lv: int((s.levels[benign] == i).sum()) for i, lv in enumerate(LEVELS)},
                    "levels_risky": {lv: int((s.levels[risky] == i).sum()) for i, lv in enumerate(LEVELS)}}
        out[name] = row
    return out


def evaluate_risk(classifier: Classifier, datasets_dir: Path, splits=("validation", "test"), limit=None,
                  alert_rules=None, cases_path: Path | None = None) -> dict:
    report = {"model": classifier.model_version, "rules_fitted_for": classifier.rules.fitted_for, "splits": {}}
    require_sets(datasets_dir, getattr(classifier.runtime, "card", None), splits)
    for split in splits:
        sets = load_sets(datasets_dir, split, classifier.runtime.emoji, limit, cases_path,
                         getattr(classifier.runtime, "card", None))
        report["splits"][split] = summarize(score_sets(classifier, sets, alert_rules))
    if cases_path is not None:
        from streamsense.models.rule_cases import load_cases, score

        report["rule_cases"] = score(classifier.rules, load_cases(cases_path))
    return report


# -- fits (validation only) ---------------------------------------------------------------------------------------

def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the mean negative log-likelihood: a coarse log-scale grid, then golden section."""
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 121))
    best = min(grid, key=lambda t: _nll(logits, labels, t))
    lo, hi = best / 1.12, best * 1.12
    g = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _nll(logits, labels, a) < _nll(logits, labels, b):
            hi = b
        else:
            lo = a
    return round((lo + hi) / 2, 4)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the predicted class's probability (equal-width bins)."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return round(float(total), 4)


def head_logits(runtime, datasets_dir: Path, split: str, limit: int | None = None) -> dict:
    """Per head, its own set's (uncalibrated, no decision offset) logits up to a constant (log-probabilities) and
    labels."""
    saved, runtime.temperature = runtime.temperature, {}
    shifts, runtime.offsets = runtime.offsets, {}
    try:
        out = {}
        for task, entry in zip(runtime.tasks, runtime.card["tasks"]):
            rows = [r for view in task_views(entry)
                    for r in load_split(datasets_dir, view, split, limit, emoji=runtime.emoji)]
            encoded = runtime.tokenize([r.text for r in rows])
            parts = [runtime.infer(Encoded(encoded.ids[i:i + CHUNK], encoded.truncated[i:i + CHUNK]))[task.name]
                     for i in range(0, len(rows), CHUNK)]
            out[task.name] = (np.log(np.clip(np.concatenate(parts), 1e-30, 1.0)).astype(np.float64),
                              np.array([r.label for r in rows]))
        return out
    finally:
        runtime.temperature, runtime.offsets = saved, shifts


def fit_temperatures(runtime, datasets_dir: Path, limit: int | None = None) -> dict:
    """Temperatures fitted on validation, with each head's NLL and ECE before and after on validation and test."""
    fitted = {"method": "temperature", "fitted_on": "validation", "temperature": {}, "validation": {}, "test": {}}
    require_sets(datasets_dir, runtime.card, ("validation", "test"))
    val = head_logits(runtime, datasets_dir, "validation", limit)
    test = head_logits(runtime, datasets_dir, "test", limit)
    for name, (logits, labels) in val.items():
        t = fit_temperature(logits, labels)
        fitted["temperature"][name] = t
        for split, data in (("validation", val), ("test", test)):
            z, y = data[name]
            fitted[split][name] = {"nll": [round(_nll(z, y, 1.0), 4), round(_nll(z, y, t), 4)],
                                   "ece": [ece(softmax(z), y), ece(softmax(z / t), y)]}
    return fitted


def fit_heads(scored: dict[str, Scored], rules: RiskRules, recall: float = 0.85, benign_budget: float = 0.01,
              max_high: float = 0.995) -> dict[str, Head]:
    """Each risk head's `medium` and `high` probabilities from scored validation sets (see the module's doc); a
    head's `requires` is kept from `rules` (policy, not a fit)."""
    heads = {}
    for name in (t.name for t in RISK_TASKS):
        own = scored.get(name)
        if own is None or name not in own.probs:
            continue
        positives = own.probs[name][own.risky]
        medium = math.floor(float(np.quantile(positives, 1 - recall)) * 1000) / 1000 if positives.size else 0.5
        high = 0.0
        for s in scored.values():
            if name not in s.probs:
                continue
            benign = s.probs[name] if s.risky is None else s.probs[name][~s.risky]
            if benign.size:
                high = max(high, float(np.quantile(benign, 1 - benign_budget, method="higher")))
        high = math.ceil(high * 1000 + 1e-9) / 1000
        old = rules.heads.get(name)
        ceiling = old.ceiling if old else "high"
        keep_high = ceiling == "high" and medium < high <= max_high
        heads[name] = Head(name, max(medium, 0.001), high if keep_high else None, old.requires if old else None,
                           ceiling, old.identity_blind if old else False)
    return heads


def heads_toml(heads: dict[str, Head], fitted_for: str, model: str | None = None) -> str:
    """The [heads] tables of the risk rules file; `model`: a model's own tables ([models."name".heads])."""
    where = f'models."{model}".heads' if model else "heads"
    lines = [f"[{where}]", f'fitted_for = "{fitted_for}"']
    for head in heads.values():
        lines += ["", f"[{where}.{head.name}]", f"medium = {head.medium}"]
        if head.high is not None:
            lines.append(f"high = {head.high}")
        if head.requires:
            lines.append(f'requires = "{head.requires}"')
        if head.ceiling != "high":
            lines.append(f'ceiling = "{head.ceiling}"')
        if head.identity_blind:
            lines.append("identity_blind = true")
    return "\n".join(lines) + "\n"


def format_report(report: dict) -> str:
    """Markdown tables: one row per set and split."""
    lines = [f"Risk evaluation of {report['model']} (head thresholds fitted for {report['rules_fitted_for']})", "",
             "| split | set | n | benign → high/critical | risky → ≥ medium | levels low/medium/high/critical "
             "(benign; risky) | alerts per 10k |", "|---|---|---|---|---|---|---|"]
    for split, sets in report["splits"].items():
        for name, r in sets.items():
            if "benign" in r:
                lv = (" / ".join(str(v) for v in r["levels_benign"].values()) + "; "
                      + " / ".join(str(v) for v in r["levels_risky"].values()))
                lines.append(f"| {split} | {name} | {r['n']} | {_pct(r['benign_high_or_critical'])} | "
                             f"{_pct(r['risky_medium_or_above'])} | {lv} | {r['alerts_per_10k']} |")
            else:
                lv = " / ".join(str(v) for v in r["levels"].values())
                lines.append(f"| {split} | {name} (all benign) | {r['n']} | {_pct(r['high_or_critical'])} | – | "
                             f"{lv} | {r['alerts_per_10k']} |")
    return "\n".join(lines)


def _pct(x) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
