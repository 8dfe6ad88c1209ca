"""Sentence vectors cached per text: each distinct text encoded once, across runs (the CPU is the cost), for the
hand-started runs that refit heads on a frozen encoder (models/learning_curve.py, models/debias.py)."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np


class CachedEncoder:
    """`encode(texts)` through `fn`, each distinct text once: vectors are kept per text (by hash) in
    `cache_dir/NAME.npz` (none kept without a `cache_dir`), so runs over the same texts share their encoder passes."""

    def __init__(self, name: str, fn: Callable[[list[str]], np.ndarray], cache_dir: Path | None,
                 announce: Callable[[int], None] | None = None):
        self.name, self.fn, self.announce = name, fn, announce  # announce(n): n texts about to be encoded
        self.path = Path(cache_dir) / f"{name}.npz" if cache_dir else None
        self.vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as f:
                self.vectors = dict(zip(map(str, f["keys"]), f["vectors"]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        todo = list({k: t for k, t in zip(keys, texts) if k not in self.vectors}.items())
        if todo:
            if self.announce is not None:
                self.announce(len(todo))
            new = _by_length(self.fn, [t for _, t in todo])
            self.vectors.update(zip((k for k, _ in todo), new))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                ks = list(self.vectors)
                tmp = self.path.with_suffix(".tmp.npz")  # a run stopped mid-write leaves the old file whole
                np.savez(tmp, keys=np.array(ks), vectors=np.stack([self.vectors[k] for k in ks]))
                tmp.replace(self.path)
        if not texts:
            return np.zeros((0, 0), np.float32)
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)


def _by_length(fn, texts: list[str], batch: int = 64) -> np.ndarray:
    """`fn` over `texts` in batches of similar length (less padding), the vectors back in the texts' order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = [fn([texts[i] for i in order[s:s + batch]]) for s in range(0, len(order), batch)]
    out = np.zeros((len(texts), parts[0].shape[1]) if parts else (0, 0), np.float32)
    if parts:
        out[order] = np.concatenate(parts)
    return out
