"""The promotion gate's feedback checks: better on held-out verdicts (exact McNemar test), no original test split
worse by more than a point, alert precision not lower; and the evidence they read, gathered from the store.

Evidence (a JSON object, `streamsense models promote --evidence FILE`, or gathered by `gather_evidence`):
- `verdicts`: [{"champion": bool, "challenger": bool}, …] — on each held-out labelled verdict, whether each model's
  label matched the person's. Paired: both models on the same items, so the test is on the discordant pairs.
- `alpha`: the test's level (default 0.05).
- `test_splits`: {"champion": report, "challenger": report} to use instead of the cards' `metrics.test`.
- `alert_precision`: {"champion": {"n", "right", "source"?}, "challenger": {…}} — verdicts on each model's alerts
  (the challenger's: on the alerts it would have raised while shadowed; `challenger.alert_precision` gathers them
  from the store, falling back to an --evidence file's counts).
"""

import json
import math
from pathlib import Path

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from streamsense.models.gate import CheckResult, gate_check
from streamsense.models.registry import read_card

MAX_TEST_LOSS = 0.01  # one point on the headline metric of any original test split
DEFAULT_ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value: P(X >= b) for X ~ Binomial(b + c, 1/2), where b = pairs only the challenger
    got right and c = pairs only the champion got right (1.0 when there is no discordant pair)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n)


@gate_check("verdicts")
def better_on_verdicts(champion: Path, challenger: Path, evidence: dict) -> CheckResult:
    pairs = evidence.get("verdicts")
    if not pairs:
        return CheckResult("verdicts", False, "no held-out verdicts to compare on: label messages "
                           "(`streamsense feedback queue`, `feedback add`) and gather evidence first")
    alpha = float(evidence.get("alpha", DEFAULT_ALPHA))
    b = sum(1 for p in pairs if p["challenger"] and not p["champion"])
    c = sum(1 for p in pairs if p["champion"] and not p["challenger"])
    n = len(pairs)
    acc_champion = sum(bool(p["champion"]) for p in pairs) / n
    acc_challenger = sum(bool(p["challenger"]) for p in pairs) / n
    p_value = mcnemar_exact(b, c)
    passed = b > c and p_value < alpha
    reason = (f"on {n} held-out verdicts: challenger {acc_challenger:.3f} vs champion {acc_champion:.3f}; right only "
              f"by the challenger {b}, only by the champion {c}: exact McNemar one-sided p = {p_value:.4f} "
              f"{'<' if p_value < alpha else '>='} {alpha}")
    return CheckResult("verdicts", passed, reason, {"n": n, "b": b, "c": c, "p_value": p_value, "alpha": alpha,
                                                    "accuracy": {"champion": acc_champion,
                                                                 "challenger": acc_challenger}})


def _headline(card: dict, key: str) -> str:
    metric = {t["name"]: t.get("metric", "macro_f1") for t in card.get("tasks", [])}
    return metric.get(key.split("/")[0], "macro_f1")  # a sub-split (complaint_brands_only): macro F1


@gate_check("test_splits")
def no_test_split_worse(champion: Path, challenger: Path, evidence: dict) -> CheckResult:
    cards = {"champion": read_card(champion), "challenger": read_card(challenger)}
    given = evidence.get("test_splits")
    reports = given or {role: card["metrics"].get("test") or {} for role, card in cards.items()}
    for role in ("champion", "challenger"):
        if not reports.get(role):
            card = cards[role]
            return CheckResult("test_splits", False, (
                f"the {role} {card.get('name')}:{card.get('version')} has no test-split metrics: run `streamsense "
                f"models eval --model {card.get('name')}:{card.get('version')} --record` (it needs the datasets)"))
    if not given:  # the cards' reports are per variant: compare a variant both have
        common = [v for v in reports["champion"] if v in reports["challenger"]]
        if not common:
            return CheckResult("test_splits", False, "the two models' test metrics share no variant (int8, fp16…): "
                               "evaluate the challenger's like the champion's")
        reports = {role: report[common[0]] for role, report in reports.items()}
    losses, missing = {}, []
    for key, old in reports["champion"].items():
        if not isinstance(old, dict) or "macro_f1" not in old:
            continue
        metric = _headline(cards["champion"], key)
        new = reports["challenger"].get(key)
        if not isinstance(new, dict) or metric not in new:
            missing.append(key)
            continue
        losses[key] = (metric, old[metric], new[metric], round(old[metric] - new[metric], 4))
    if missing:
        return CheckResult("test_splits", False, f"the challenger was not tested on {', '.join(missing)}")
    worse = {k: v for k, v in losses.items() if v[3] > MAX_TEST_LOSS}
    shown = "; ".join(f"{k} {m} {old:.4f} → {new:.4f}" for k, (m, old, new, _) in (worse or losses).items())
    if worse:
        return CheckResult("test_splits", False, f"more than {MAX_TEST_LOSS * 100:g} point lost on {shown}",
                           {"losses": losses})
    return CheckResult("test_splits", True, f"no split loses more than {MAX_TEST_LOSS * 100:g} point: {shown}",
                       {"losses": losses})


@gate_check("alert_precision")
def alert_precision_not_lower(champion: Path, challenger: Path, evidence: dict) -> CheckResult:
    counts = evidence.get("alert_precision") or {}
    sources = "; ".join(f"{role}'s from {counts[role]['source']}" for role in ("challenger", "champion")
                        if (counts.get(role) or {}).get("source"))
    lacking = [role for role in ("champion", "challenger") if not (counts.get(role) or {}).get("n")]
    if lacking:
        how = {"champion": "mark its alerts (`streamsense feedback alert ID --false-alarm` or --confirmed)",
               "challenger": "shadow it and review its would-be alerts (`streamsense feedback queue` lists them, "
                             "`streamsense feedback would-alert`)"}
        return CheckResult("alert_precision", False, (
            f"no verdicts on the {' or the '.join(lacking)}'s alerts: {'; '.join(how[r] for r in lacking)}, or give "
            "the counts with --evidence" + (f" ({sources})" if sources else "")))
    precision = {role: counts[role]["right"] / counts[role]["n"] for role in ("champion", "challenger")}
    reason = (f"alert precision {precision['challenger']:.3f} (n={counts['challenger']['n']}) vs the champion's "
              f"{precision['champion']:.3f} (n={counts['champion']['n']})" + (f"; {sources}" if sources else ""))
    return CheckResult("alert_precision", precision["challenger"] >= precision["champion"], reason,
                       {**precision, "sources": {r: counts[r].get("source") for r in ("champion", "challenger")}})


def alert_counts(engine: Engine, model_version: str) -> dict:
    """Verdicts on the alerts a model version raised: {"n", "right"}."""
    from streamsense.streams.feedback.schema import feedback

    right = func.sum(case((feedback.c.verdict == "right", 1), else_=0))
    with engine.connect() as conn:
        n, k = conn.execute(select(func.count(), right).where(feedback.c.kind == "alert",
                                                              feedback.c.model_version == model_version)).one()
    return {"n": int(n), "right": int(k or 0)}


def load_evidence(path: Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: evidence is a JSON object (see docs/models.md \"Adapting to your domain\")")
    return data
