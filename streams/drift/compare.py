"""Judging a drift window against its model version's reference: one method per kind of quantity, each registered with
its thresholds (a method, its thresholds and its name travel together), and a verdict that says which quantity moved,
from what to what.

- `psi`: population stability index of bin shares (labels per head, score bins, length, languages); the common
  reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major. Shares are floored at 1e-4 so an empty bin is finite.
  A PSI must also clear its sampling noise: under no drift n·N/(n+N)·PSI is about chi-square with (bins - 1)
  degrees of freedom, so a level counts only above max(threshold, chi2 quantile(1 - 1e-4) x (1/n + 1/N)) (ten
  score bins, windows of 500 and a reference of 1,000: 0.10; of 4,665: 0.08).
- `rate`: a rate (messages with an [UNK] token, truncated messages) against the reference's by a two-sample z test:
  moderate when |z| >= 4 and it moved >= 2 points, major when it moved >= 10 points.
- `projection`: the window's mean random projection of the token bags against the reference's: T = sum over the
  dims of z^2, z = (mean_w - mean_r) / (std_r * sqrt(1/n + 1/N)); drift when T is above the reference's bootstrap
  quantile (99.9 % of windows drawn from the reference) and the effect (RMS standardized shift) >= 0.1; major from
  an effect of 0.3.
- `cbpe`: estimated accuracy of a calibrated head without labels (mean of the top probability, CBPE-style); a drop of
  >= 5 points is moderate, >= 10 major. A head without calibration gets no estimate (its probabilities are not
  honest enough to average).
"""

import math
from dataclasses import dataclass

import numpy as np

from streamsense.streams.drift.features import Layout

STABLE, MODERATE, MAJOR = "stable", "moderate", "major"
EPS = 1e-4
DEFAULT_MIN_MESSAGES = 500


@dataclass(frozen=True)
class Method:
    name: str
    moderate: float
    major: float
    about: str


METHODS = {m.name: m for m in (
    Method("psi", 0.1, 0.25, "population stability index of the bin shares"),
    Method("rate", 0.02, 0.10, "change of a rate in points, with |z| >= 4"),
    Method("projection", 0.1, 0.3, "RMS standardized shift of the mean token-bag projection, with T above the "
                                   "reference's bootstrap quantile"),
    Method("cbpe", 0.05, 0.10, "drop of the estimated accuracy (mean top probability of a calibrated head)"),
)}
RATE_Z = 4.0


@dataclass(frozen=True)
class Reference:
    """A model version's drift reference (the `drift` section of its profile, models/profile.py)."""

    model: str
    layout: Layout
    sums: np.ndarray
    proj_mean: np.ndarray
    proj_std: np.ndarray
    bootstrap_quantile: float
    calibrated: tuple[str, ...]
    min_messages: int
    made_from: object
    tokens_total: int
    top_tokens: dict

    @property
    def messages(self) -> int:
        return int(self.sums[0])

    @classmethod
    def from_section(cls, section: dict) -> "Reference":
        layout = Layout.from_dict(section["layout"])
        proj = section["projection"]
        return cls(section.get("model", "?"), layout, np.asarray(section["sums"], dtype=np.float64),
                   np.asarray(proj["mean"], dtype=np.float64), np.asarray(proj["std"], dtype=np.float64),
                   float(proj["bootstrap"]["threshold"]), tuple(section.get("calibrated", ())),
                   int(section.get("min_messages", DEFAULT_MIN_MESSAGES)), section.get("made_from"),
                   int(section["tokens"]["total"]), {int(k): int(v) for k, v in section["tokens"]["top"]})


def psi(reference: np.ndarray, window: np.ndarray) -> float:
    r = np.maximum(reference / max(reference.sum(), 1), EPS)
    w = np.maximum(window / max(window.sum(), 1), EPS)
    return float(np.sum((w - r) * np.log(w / r)))


def _level(method: Method, value: float, floor: float = 0.0) -> str:
    return MAJOR if value >= max(method.major, floor) else MODERATE if value >= max(method.moderate, floor) \
        else STABLE


NOISE_Z = 3.719  # the standard normal's 1 - 1e-4 quantile


def chi2_quantile(df: int, z: float = NOISE_Z) -> float:
    """The chi-square quantile of `df` degrees of freedom at the normal quantile `z` (Wilson-Hilferty: within a few
    percent from 1 degree of freedom up, without scipy)."""
    k = max(df, 1)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.1%}"


def _histogram_name(name: str, layout: Layout) -> str:
    if name.startswith("labels:"):
        return f"{name[7:]} labels"
    if name.startswith("scores:"):
        _, head, label = name.split(":")
        positive = next(p for n, _, p in layout.heads if n == head)
        return f"{head} score" if positive else f"{head} {label} score"
    return {"length": "length (tokens)", "language": "languages"}[name]


def _moved(name: str, layout: Layout, r: np.ndarray, w: np.ndarray) -> tuple[str, list[dict]]:
    """The bin that moved most, in words, and every bin's shares."""
    labels = layout.bin_labels(name)
    rs, ws = r / max(r.sum(), 1), w / max(w.sum(), 1)
    bins = [{"bin": b, "reference": round(float(x), 4), "window": round(float(y), 4)}
            for b, x, y in zip(labels, rs, ws)]
    i = int(np.argmax(np.abs(ws - rs)))
    if name.startswith("labels:"):
        what = f"{labels[i]} share"
    elif name.startswith("scores:"):
        what = f"{_histogram_name(name, layout)} {labels[i]} share"
    elif name == "length":
        what = f"length {labels[i]} tokens share"
    else:
        what = f"'{labels[i]}' share"
    return f"{what} {_pct(rs[i])} → {_pct(ws[i])}", bins


def judge(reference: Reference | None, sums: np.ndarray, min_messages: int | None = None) -> dict:
    """The verdict on one window's drift vector: status ("drift", "stable", "too small", "no reference"), each
    quantity with its method, value, level and what moved, the estimated accuracies, and a one-line summary."""
    n = int(sums[0]) if len(sums) else 0
    if reference is None:
        return {"status": "no reference", "messages": n, "quantities": [], "estimated": {},
                "summary": "no reference profile for this model version (streamsense drift reference)"}
    layout = reference.layout
    minimum = min_messages or reference.min_messages
    if len(sums) != layout.size:
        return {"status": "no reference", "messages": n, "quantities": [], "estimated": {},
                "summary": f"the window's layout ({len(sums)} values) is not the reference's ({layout.size})"}
    if n < minimum:
        return {"status": "too small", "messages": n, "quantities": [], "estimated": estimates(reference, sums),
                "summary": f"too small: {n} < {minimum} messages"}
    ref, quantities = reference.sums, []
    N = reference.messages
    for name, (a, b) in layout.histograms.items():
        if name in ("unknown", "truncated"):
            method = METHODS["rate"]
            p_r, p_w = ref[a + 1] / max(N, 1), sums[a + 1] / n
            pooled = (ref[a + 1] + sums[a + 1]) / (N + n)
            se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / max(N, 1)))
            z = (p_w - p_r) / se
            delta = abs(p_w - p_r)
            level = STABLE if abs(z) < RATE_Z else _level(method, delta)
            label = "messages with an unknown token" if name == "unknown" else "truncated messages"
            quantities.append({"name": label, "method": "rate", "value": round(delta, 4), "level": level,
                               "z": round(z, 1), "thresholds": [method.moderate, method.major],
                               "moved": f"{label} {_pct(p_r)} → {_pct(p_w)}"})
            continue
        method = METHODS["psi"]
        value = psi(ref[a:b], sums[a:b])
        moved, bins = _moved(name, layout, ref[a:b], sums[a:b])
        used = int(np.count_nonzero((ref[a:b] > 0) | (sums[a:b] > 0)))
        noise = chi2_quantile(used - 1) * (1 / n + 1 / max(N, 1))
        quantities.append({"name": _histogram_name(name, layout), "method": "psi", "value": round(value, 4),
                           "level": _level(method, value, noise), "noise": round(noise, 4),
                           "thresholds": [round(max(method.moderate, noise), 4), round(max(method.major, noise), 4)],
                           "moved": moved, "bins": bins})
    quantities.append(projection_quantity(reference, sums))
    estimated = estimates(reference, sums)
    method = METHODS["cbpe"]
    for head, e in estimated.items():
        if e.get("window") is None or e.get("reference") is None:
            continue
        drop = e["reference"] - e["window"]
        quantities.append({"name": f"estimated {head} accuracy", "method": "cbpe", "value": round(drop, 4),
                           "level": _level(method, drop), "thresholds": [method.moderate, method.major],
                           "moved": f"estimated {head} accuracy {_pct(e['reference'])} → {_pct(e['window'])}"})
    quantities.sort(key=lambda q: q["value"] / METHODS[q["method"]].moderate, reverse=True)
    moved = [q for q in quantities if q["level"] != STABLE]
    status = "drift" if moved else "stable"
    if moved:
        top = moved[0]
        summary = f"{top['moved']} ({top['method'].upper() if top['method'] == 'psi' else top['method']} " \
                  f"{top['value']:.2f}, {top['level']})" + (f"; +{len(moved) - 1} more" if len(moved) > 1 else "")
    else:
        top = quantities[0]
        summary = f"stable: largest {top['name']} {top['method']} {top['value']:.3f}"
    return {"status": status, "messages": n, "level": max((q["level"] for q in moved), key=[MODERATE, MAJOR].index)
            if moved else STABLE, "quantities": quantities, "estimated": estimated, "summary": summary}


def projection_quantity(reference: Reference, sums: np.ndarray) -> dict:
    layout = reference.layout
    a, b = layout.floats["projection"]
    n, N = sums[0], reference.messages
    std = np.maximum(reference.proj_std, 1e-6)
    shift = (sums[a:b] / n - reference.proj_mean) / std
    t = float(np.sum(shift ** 2) / (1 / n + 1 / N))
    effect = float(np.sqrt(np.mean(shift ** 2)))
    method = METHODS["projection"]
    threshold = max(method.moderate, math.sqrt(reference.bootstrap_quantile * (1 / n + 1 / N) / layout.dims))
    level = STABLE if t <= reference.bootstrap_quantile else _level(method, effect)
    return {"name": "text representation", "method": "projection", "value": round(effect, 4), "level": level,
            "t": round(t, 1), "t_threshold": round(reference.bootstrap_quantile, 1),
            "thresholds": [round(threshold, 4), method.major],
            "moved": f"token-bag projection shifted {effect:.2f} std (threshold {threshold:.2f})"}


def estimates(reference: Reference, sums: np.ndarray) -> dict:
    """Estimated accuracy per head (CBPE-style: the mean top probability), window and reference, for calibrated
    heads; None where the head is not calibrated."""
    layout, n, N = reference.layout, sums[0], reference.messages
    out = {}
    for head, _, _ in layout.heads:
        a, _ = layout.floats[f"confidence:{head}"]
        calibrated = head in reference.calibrated
        out[head] = {"calibrated": calibrated,
                     "window": round(float(sums[a] / n), 4) if calibrated and n else None,
                     "reference": round(float(reference.sums[a] / N), 4) if calibrated and N else None}
    return out
