"""A model version's drift reference: the same drift vector the live windows accumulate, made from texts the model
is trusted on (its validation data, or a window of stored traffic), plus what judging needs beyond sums: the
projection's per-dimension spread, a bootstrap threshold for it, and the commonest tokens (for explanations).
Kept as the `drift` section of the model's profile (models/profile.py)."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamsense.models.language import identify
from streamsense.models.profile import section, write_section
from streamsense.models.registry import calibration
from streamsense.streams.drift.compare import DEFAULT_MIN_MESSAGES, Reference
from streamsense.streams.drift.features import facts_of, features, vector

FORMAT = 1
BOOTSTRAP_WINDOWS = 2000
BOOTSTRAP_QUANTILE = 0.999
TOP_TOKENS = 400
CHUNK = 256


def measure_texts(classifier, texts: Sequence[str]) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    """(facts, counts, floats, token counts per id) of `texts` through one model (a models.classifier.Classifier),
    as the pipeline measures a batch: language identified, tokenized, inferred."""
    runtime = classifier.runtime
    facts = facts_of(runtime)
    counts, floats = [], []
    tokens = np.zeros(facts.table.shape[1], dtype=np.int64)
    for i in range(0, len(texts), CHUNK):
        chunk = list(texts[i:i + CHUNK])
        langs = identify(chunk)
        encoded = classifier.tokenize(chunk, langs)
        probs = classifier.infer(encoded)
        c, f = features(facts, encoded.ids, encoded.truncated, probs, langs)
        counts.append(c)
        floats.append(f)
        flat = np.fromiter((t for ids in encoded.ids for t in ids), dtype=np.int64)
        tokens += np.bincount(flat, minlength=len(tokens))[:len(tokens)]
    return facts, np.concatenate(counts), np.concatenate(floats), tokens


def make_reference(classifier, texts: Sequence[str], min_messages: int = DEFAULT_MIN_MESSAGES,
                   seed: int = 0) -> dict:
    """The `drift` section's data for `texts` through `classifier` (at least `min_messages` texts)."""
    if len(texts) < min_messages:
        raise ValueError(f"a reference needs at least {min_messages} texts (a window's minimum); got {len(texts)}")
    facts, counts, floats, tokens = measure_texts(classifier, texts)
    card = getattr(classifier.runtime, "card", {}) or {}
    return reference_of(facts, counts, floats, tokens, classifier.runtime.label, card, min_messages, seed)


def reference_of(facts, counts: np.ndarray, floats: np.ndarray, tokens: np.ndarray, label: str, card: dict,
                 min_messages: int = DEFAULT_MIN_MESSAGES, seed: int = 0) -> dict:
    """The `drift` section's data from measured messages (measure_texts)."""
    layout = facts.layout
    sums = vector(layout, counts, floats)
    a = 2 + len(layout.heads)
    proj = floats[:, a:].astype(np.float64)
    mean, std = proj.mean(axis=0), np.maximum(proj.std(axis=0), 1e-6)
    # the null distribution of T for windows of `min_messages` drawn from the reference (with replacement):
    # its quantile carries the dims' correlation; judging rescales for the window's and the reference's sizes
    rng = np.random.default_rng(seed)
    n = min_messages
    stats = np.empty(BOOTSTRAP_WINDOWS)
    for b in range(BOOTSTRAP_WINDOWS):
        sample = proj[rng.integers(0, len(proj), n)]
        z = (sample.mean(axis=0) - mean) / std
        stats[b] = np.sum(z ** 2) * n
    threshold = float(np.quantile(stats, BOOTSTRAP_QUANTILE))
    top = np.argsort(tokens)[::-1][:TOP_TOKENS]
    calibrated = sorted(set(calibration(card)) & {h for h, _, _ in layout.heads})
    return {"format": FORMAT, "model": label.removesuffix("+null"), "layout": layout.to_dict(),
            "min_messages": int(min_messages),
            "sums": [float(f"{x:.7g}") for x in sums.tolist()],
            "projection": {"mean": [round(x, 6) for x in mean.tolist()], "std": [round(x, 6) for x in std.tolist()],
                           "bootstrap": {"windows": BOOTSTRAP_WINDOWS, "size": n, "quantile": BOOTSTRAP_QUANTILE,
                                         "seed": seed, "threshold": round(threshold, 3)}},
            "calibrated": calibrated,
            "tokens": {"total": int(tokens.sum()), "top": [[int(t), int(tokens[t])] for t in top if tokens[t] > 0]}}


def save_reference(model_dir: Path, data: dict, made_from: dict | str) -> dict:
    return write_section(model_dir, "drift", data, made_from)


def load_reference(model_dir: Path) -> Reference | None:
    found = section(model_dir, "drift")
    return Reference.from_section(found) if found else None


class References:
    """Model version label ("name:version") → its Reference, from the model registry. Looked up when a window closes
    (rarely): a profile made or remade while the worker runs (`streamsense drift reference`) is read at the next close.
    A null model ("...+null") has none; `known` fixes references (tests)."""

    def __init__(self, registry: Path | None = None, known: dict[str, Reference | None] | None = None):
        self.registry = registry
        self.known: dict[str, Reference | None] = dict(known or {})
        self._read: dict[str, tuple[float | None, Reference | None]] = {}  # version -> (profile mtime, reference)

    def get(self, version: str) -> Reference | None:
        if version in self.known:
            return self.known[version]
        if self.registry is None or version.endswith("+null"):
            return None
        from streamsense.models.profile import PROFILE
        from streamsense.models.registry import resolve
        try:
            model_dir = resolve(self.registry, version)
            path = Path(model_dir) / PROFILE
            mtime = path.stat().st_mtime if path.is_file() else None
            cached = self._read.get(version)
            if cached is None or cached[0] != mtime:
                cached = self._read[version] = (mtime, load_reference(model_dir) if mtime is not None else None)
            return cached[1]
        except Exception:  # no such model here, or an unreadable profile: judged "no reference"
            return None
