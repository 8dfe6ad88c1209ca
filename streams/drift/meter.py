"""The hot-path half of drift monitoring: a classified batch's drift sums (contracts.DriftSums), one per model
version, from the token ids and head probabilities the pipeline already holds."""

import time
from dataclasses import replace

import numpy as np

from streamsense.streams.contracts import DriftSums, Processed
from streamsense.streams.drift.features import facts_of, features


class DriftMeter:
    """`attach(processed, prepared, probs)`: the batch's Processed with its drift sums in `batch.drift`."""

    def __init__(self, window_seconds: int = 3600):
        if window_seconds < 1:
            raise ValueError("drift window_seconds must be >= 1")
        self.window_seconds = int(window_seconds)

    def attach(self, processed: Processed, prepared, probs) -> Processed:
        parts = self.measure(prepared, probs)
        return replace(processed, batch=replace(processed.batch, drift=parts)) if parts else processed

    def measure(self, prepared, probs) -> list[DriftSums]:
        """One DriftSums per model that classified part of the batch (every valid message was classified: the
        pipeline calls this only on its one-pass path)."""
        valid, encoded, classifier = prepared.valid, prepared.encoded, prepared.classifier
        n = len(valid)
        if not n or encoded is None:
            return []
        now = time.time()
        stamps = np.fromiter((msg.timestamp or now for msg, _ in valid), dtype=np.float64, count=n)
        w = self.window_seconds
        windows = (stamps // w).astype(np.int64) * w
        seen: dict[str, int] = {}
        topic_index = np.fromiter((seen.setdefault(msg.topic, len(seen)) for msg, _ in valid), dtype=np.int32,
                                  count=n)
        topics = tuple(seen)
        langs = prepared.langs
        if hasattr(encoded, "parts"):  # routed (models/routing.py): each model's messages
            routes = [(classifier.routes[route], np.asarray(positions, dtype=np.int64), part, p)
                      for (route, positions, part), p in zip(encoded.parts, probs)]
        else:
            routes = [(classifier, None, encoded, probs)]
        out = []
        for model, positions, part, p in routes:
            runtime = getattr(model, "runtime", None)
            if runtime is None or not hasattr(runtime, "tokenizer"):
                continue  # a stand-in classifier without a model runtime (tests): nothing to measure with
            facts = facts_of(runtime)
            sub_langs = langs if positions is None else [langs[i] for i in positions.tolist()]
            counts, floats = features(facts, part.ids, part.truncated, p, sub_langs)
            rows = np.arange(n, dtype=np.int64) if positions is None else positions
            out.append(DriftSums(facts.version, facts.layout, rows, windows[rows], topics,
                                 topic_index[rows], counts, floats))
        return out
