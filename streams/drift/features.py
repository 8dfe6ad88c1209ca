"""What one batch adds to a drift window: per message, the bins it falls in and a few sums, computed with numpy over the
batch (no per-message Python work beyond reading the columns the pipeline already has).

A model version's `Layout` fixes the vector a window accumulates: one count per bin of every histogram (label per
head, score bins per head, length in tokens, any unknown token, truncated, language) then float sums (tokens,
unknown tokens, the confidence per head, the random projection of the bag of token ids). The same layout is used
for the reference (streams/drift/reference.py) and the live windows (streams/drift/windows.py).

The text's representation: the ONNX graphs output head logits only, so there is no sentence vector to watch. Each
message's bag of token ids (already computed by the tokenizer stage) is projected onto `dims` (16) fixed random
directions (a seeded Gaussian vector per vocabulary id, averaged over the message's tokens): a hashing-trick summary
that moves when the vocabulary moves (another domain, markup, a language, one text repeated), costs one gather
per token, and needs no new model output. A pooled-embedding output would watch meaning more closely but would
need a new model version (a new ONNX export); this needs none.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain

import numpy as np

SCORE_BINS = 10
LENGTH_EDGES = (8, 16, 24, 32, 48, 64, 96, 127)  # tokens, [CLS]/[SEP] included: bin i holds lengths <= edge i
DIMS = 16
SEED = 20261206
#: languages with a bin of their own (the rest share "other"): as the worker's language metric labels them
LANGUAGES = ("en", "zh", "es", "pt", "fr", "de", "it", "nl", "ru", "ja", "ko", "ar", "hi", "tr", "id", "pl", "vi",
             "th", "und")


@dataclass(frozen=True)
class Layout:
    """The shape of a model version's drift vector: [messages, counts..., floats...]."""

    heads: tuple[tuple[str, tuple[str, ...], str | None], ...]  # (name, labels, positive label or None)
    dims: int = DIMS
    seed: int = SEED
    score_bins: int = SCORE_BINS
    length_edges: tuple[int, ...] = LENGTH_EDGES
    languages: tuple[str, ...] = LANGUAGES
    histograms: dict = field(init=False, compare=False)  # name -> (start, stop) in the vector
    floats: dict = field(init=False, compare=False)
    size: int = field(init=False, compare=False)

    def __post_init__(self):
        hist, at = {}, 1
        def add(name, n):
            nonlocal at
            hist[name] = (at, at + n)
            at += n
        for name, labels, positive in self.heads:
            add(f"labels:{name}", len(labels))
        for name, labels, positive in self.heads:
            for label in self.binned(labels, positive):
                add(f"scores:{name}:{label}", self.score_bins)
        add("length", len(self.length_edges) + 1)
        add("unknown", 2)
        add("truncated", 2)
        add("language", len(self.languages) + 1)
        floats = {}
        def addf(name, n):
            nonlocal at
            floats[name] = (at, at + n)
            at += n
        addf("tokens", 1)
        addf("unknown_tokens", 1)
        for name, _, _ in self.heads:
            addf(f"confidence:{name}", 1)
        addf("projection", self.dims)
        object.__setattr__(self, "histograms", hist)
        object.__setattr__(self, "floats", floats)
        object.__setattr__(self, "size", at)

    @staticmethod
    def binned(labels, positive) -> tuple[str, ...]:
        """The labels whose probability is binned: a head's positive label, else every label."""
        return (positive,) if positive else tuple(labels)

    @property
    def counts_end(self) -> int:
        return max(stop for _, stop in self.histograms.values())

    def to_dict(self) -> dict:
        return {"heads": [[n, list(l), p] for n, l, p in self.heads], "dims": self.dims, "seed": self.seed,
                "score_bins": self.score_bins, "length_edges": list(self.length_edges),
                "languages": list(self.languages)}

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(tuple((n, tuple(l), p) for n, l, p in d["heads"]), d["dims"], d["seed"], d["score_bins"],
                   tuple(d["length_edges"]), tuple(d["languages"]))

    def length_labels(self) -> list[str]:
        edges = self.length_edges
        return [f"<={edges[0]}"] + [f"{a + 1}-{b}" for a, b in zip(edges, edges[1:])] + [f">{edges[-1]}"]

    def bin_labels(self, histogram: str) -> list[str]:
        if histogram.startswith("labels:"):
            return list(next(l for n, l, _ in self.heads if n == histogram[7:]))
        if histogram.startswith("scores:"):
            w = 1 / self.score_bins
            return [f"{i * w:.1f}-{(i + 1) * w:.1f}" for i in range(self.score_bins)]
        if histogram == "length":
            return self.length_labels()
        if histogram == "unknown":
            return ["no [UNK]", "some [UNK]"]
        if histogram == "truncated":
            return ["whole", "truncated"]
        if histogram == "language":
            return [*self.languages, "other"]
        raise KeyError(histogram)


def layout_of(runtime) -> Layout:
    """The layout for a models.runtime.ModelRuntime (its heads in card order)."""
    return Layout(tuple((t.name, tuple(t.labels), t.positive) for t in runtime.tasks))


@lru_cache(maxsize=8)
def projection_table(vocab: int, dims: int = DIMS, seed: int = SEED) -> np.ndarray:
    """One fixed Gaussian column per token id (float32, dims x vocab: a gather along the vocabulary and a sum along
    the tokens both run over contiguous rows, 3x faster than the row-per-token layout): the same for a seed
    everywhere."""
    return np.ascontiguousarray(np.random.default_rng(seed).standard_normal((vocab, dims), dtype=np.float32).T)


@dataclass(frozen=True)
class ModelFacts:
    """What measuring needs from a model, found once per model version."""

    version: str
    layout: Layout
    unk_id: int
    table: np.ndarray  # dims x vocab
    heads: tuple  # ((name, labels, positive index or None), ...)
    lang_index: dict


@lru_cache(maxsize=16)
def _facts(runtime_id: int, runtime) -> ModelFacts:
    layout = layout_of(runtime)
    tokenizer = runtime.tokenizer
    unk = tokenizer.token_to_id("[UNK]")
    vocab = tokenizer.get_vocab_size()
    heads = tuple((n, l, (l.index(p) if p else None)) for n, l, p in layout.heads)
    return ModelFacts(runtime.label, layout, -1 if unk is None else unk, projection_table(vocab, layout.dims,
                      layout.seed), heads, {lang: i for i, lang in enumerate(layout.languages)})


def facts_of(runtime) -> ModelFacts:
    return _facts(id(runtime), runtime)


def features(facts: ModelFacts, ids: list[list[int]], truncated: list[bool], probs: dict[str, np.ndarray],
             langs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per message: the histogram indices it adds one to (int32, n x histograms) and its float sums (float32,
    n x floats), in the layout's order."""
    layout = facts.layout
    n = len(ids)
    hist = layout.histograms
    counts = np.empty((n, len(hist)), dtype=np.int32)
    col = 0
    for name, labels, positive in facts.heads:
        p = probs[name]
        counts[:, col] = np.argmax(p, axis=1) + hist[f"labels:{name}"][0]
        col += 1
    bins = layout.score_bins
    for name, labels, positive in facts.heads:
        p = probs[name]
        for j in ([positive] if positive is not None else range(len(labels))):
            b = np.minimum((p[:, j] * bins).astype(np.int32), bins - 1)
            counts[:, col] = b + hist[f"scores:{name}:{labels[j]}"][0]
            col += 1
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
    counts[:, col] = np.searchsorted(np.asarray(layout.length_edges), lengths, side="left") + hist["length"][0]
    col += 1
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    safe = np.maximum(lengths, 1)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    if flat.size:
        at = np.minimum(starts, flat.size - 1)
        unk = np.add.reduceat((flat == facts.unk_id).astype(np.float32), at) * (lengths > 0)
        proj = np.add.reduceat(np.take(facts.table, flat, axis=1), at, axis=1)  # dims x n
        proj *= ((lengths > 0) / safe).astype(np.float32)
    else:
        unk = np.zeros(n, dtype=np.float32)
        proj = np.zeros((layout.dims, n), dtype=np.float32)
    counts[:, col] = (unk > 0) + hist["unknown"][0]
    col += 1
    counts[:, col] = np.fromiter(truncated, dtype=bool, count=n) + hist["truncated"][0]
    col += 1
    other = len(layout.languages)
    index = facts.lang_index
    counts[:, col] = np.fromiter((index.get(lang, other) for lang in langs), dtype=np.int32, count=n) \
        + hist["language"][0]
    floats = np.empty((n, 2 + len(facts.heads) + layout.dims), dtype=np.float32)
    floats[:, 0] = lengths
    floats[:, 1] = unk
    for k, (name, _, _) in enumerate(facts.heads):
        floats[:, 2 + k] = probs[name].max(axis=1)
    floats[:, 2 + len(facts.heads):] = proj.T
    return counts, floats


def vector(layout: Layout, counts: np.ndarray, floats: np.ndarray) -> np.ndarray:
    """The drift vector (float64) of the messages in `counts`/`floats`: [messages, bin counts..., float sums...]."""
    out = np.zeros(layout.size, dtype=np.float64)
    out[0] = len(counts)
    end = layout.counts_end
    if len(counts):
        out[:end] = np.bincount(counts.ravel(), minlength=end)[:end]
        out[0] = len(counts)
        out[end:] = floats.sum(axis=0, dtype=np.float64)
    return out
