"""One batch, several models: each language's messages go to the model that reads that language.

The worker identifies every message's language before tokenizing (models/language.py). `RoutedClassifier` holds the
primary model (English: it also takes `und` and every language no other model reads, which the pipeline then flags)
and one model per further language (Chinese: `zh`). Within a batch it splits the texts by route, tokenizes and infers
each route's sub-batch with its own tokenizer and ONNX session, decides each with that model's risk heads, and puts
the decisions back in input order, with the model that made each one. The pipeline stores the whole batch in one SQL
transaction as before; it sees one classifier with the same four steps (tokenize, infer, decide, classify).

A batch of one language costs one `identify` list walk more than a lone Classifier (no copy of the texts).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamsense.models.classifier import BatchResult, Classifier, Prediction
from streamsense.models.language import identify


@dataclass(frozen=True)
class RoutedEncoded:
    """Token ids of a batch, per route: (route index, the batch positions it holds, its Encoded)."""

    parts: list[tuple[int, list[int], object]]
    size: int

    def __len__(self) -> int:
        return self.size

    @property
    def truncated(self) -> list[bool]:
        out = [False] * self.size
        for _, positions, encoded in self.parts:
            for position, cut in zip(positions, encoded.truncated):
                out[position] = cut
        return out


class RoutedClassifier:
    """`primary` plus one Classifier per language in `by_language` (a model listed for a language it does not read
    is refused, so routing never hides an unsupported language)."""

    def __init__(self, primary: Classifier, by_language: Mapping[str, Classifier]):
        for lang, classifier in by_language.items():
            if lang not in classifier.languages:
                raise ValueError(f"model {classifier.model_version} is routed {lang!r} text but reads "
                                 f"{', '.join(classifier.languages)} only (its card's languages)")
        self.primary = primary
        self.routes: list[Classifier] = [primary, *dict.fromkeys(by_language.values())]
        self._route_of = {lang: self.routes.index(c) for lang, c in by_language.items()}
        # every route's pattern signals are the primary's (risk rules for_model changes heads only): the batch's
        # fired signals (BatchResult.fired) then mean the same whichever route found them
        self._same_signals = all(primary.rules.same_signals(c.rules) for c in self.routes[1:])
        self.languages: tuple[str, ...] = tuple(dict.fromkeys(
            [*primary.languages, *(lang for c in self.routes[1:] for lang in c.languages)]))

    # what the worker and its metrics read from a classifier: the primary model's
    @property
    def runtime(self):
        return self.primary.runtime

    @property
    def rules(self):
        return self.primary.rules

    @property
    def model_version(self) -> str:
        """The primary model's label; each row carries the label of the model that classified it."""
        return self.primary.model_version

    @property
    def model_versions(self) -> list[str]:
        return [c.model_version for c in self.routes]

    def classifier_for(self, lang: str) -> Classifier:
        """The model that classifies text in `lang`: its own where one is routed, else the primary."""
        return self.routes[self._route_of.get(lang, 0)]

    def route(self, langs: Sequence[str]) -> list[tuple[int, list[int]]]:
        """(route index, positions) per route that has messages, in route order; positions ascend."""
        route_of = self._route_of
        if not any(lang in route_of for lang in langs):  # the usual batch: one language, the primary model's
            return [(0, list(range(len(langs))))] if langs else []
        positions: dict[int, list[int]] = {}
        for i, lang in enumerate(langs):
            positions.setdefault(route_of.get(lang, 0), []).append(i)
        return sorted(positions.items())

    def tokenize(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> RoutedEncoded:
        """Each route's texts through its own tokenizer; `langs` (one per text, as the pipeline identified them) is
        computed here when not given."""
        if langs is None:
            langs = identify(texts)
        if len(langs) != len(texts):
            raise ValueError(f"{len(langs)} languages for {len(texts)} texts")
        parts = []
        for route, positions in self.route(langs):
            chunk = texts if len(positions) == len(texts) else [texts[i] for i in positions]
            parts.append((route, positions, self.routes[route].tokenize(chunk)))
        return RoutedEncoded(parts, len(texts))

    def infer(self, encoded: RoutedEncoded) -> list[dict[str, np.ndarray]]:
        """Each route's probabilities (its own heads and labels), in the order of `encoded.parts`."""
        return [self.routes[route].infer(part) for route, _, part in encoded.parts]

    def decide(self, texts: Sequence[str], encoded: RoutedEncoded,
               probs: Sequence[Mapping[str, np.ndarray]] | None = None) -> BatchResult:
        """Each route's decisions by its own model and risk rules, merged back into input order; `versions` says
        which model decided each text."""
        if probs is None:
            probs = self.infer(encoded)
        if len(encoded) != len(texts):
            raise ValueError(f"{len(encoded)} encoded texts for {len(texts)} texts")
        if len(encoded.parts) == 1 and len(encoded.parts[0][1]) == len(texts):  # one route: nothing to merge
            route, _, part = encoded.parts[0]
            result = self.routes[route].decide(texts, part, probs[0])
            return BatchResult(result.labels, result.scores, result.risks, result.truncated,
                               [self.routes[route].model_version] * len(texts),
                               result.fired if self._same_signals else None, result.blinded)
        n = len(texts)
        labels, scores, risks, truncated, versions = [None] * n, [None] * n, [None] * n, [False] * n, [None] * n
        fired = [()] * n if self._same_signals else None
        blinded: tuple = ()
        for (route, positions, part), route_probs in zip(encoded.parts, probs):
            classifier = self.routes[route]
            result = classifier.decide([texts[i] for i in positions], part, route_probs)
            version = classifier.model_version
            blinded += result.blinded
            if result.fired is None:
                fired = None
            for k, i in enumerate(positions):
                labels[i], scores[i], risks[i], truncated[i] = (result.labels[k], result.scores[k], result.risks[k],
                                                                result.truncated[k])
                versions[i] = version
                if fired is not None:
                    fired[i] = result.fired[k]
        return BatchResult(labels, scores, risks, truncated, versions, fired, blinded)

    def predict(self, texts: Sequence[str], encoded: RoutedEncoded) -> list[Prediction]:
        return self.decide(texts, encoded).predictions()

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predict(texts, self.tokenize(texts))
