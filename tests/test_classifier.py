"""The shipped model through the runtime: label mapping, probabilities, truncation, order."""

import json
from pathlib import Path

import numpy as np
import pytest

from streamsense.models.runtime import ModelRuntime


def test_obvious_sentiment_maps_to_the_right_labels(classifier):
    texts = ["I love this, best purchase I have ever made! Thank you so much",
             "This is the worst service ever. I hate it, absolutely awful.",
             "The store opens at 9am on Monday."]
    labels = [p.sentiment.label for p in classifier.classify(texts)]
    assert labels == ["positive", "negative", "neutral"]


def test_scores_are_probabilities_over_the_card_labels(classifier):
    [p] = classifier.classify(["ok"])
    card_labels = next(t["labels"] for t in classifier.runtime.card["tasks"] if t["name"] == "sentiment")
    assert list(p.sentiment.scores) == card_labels
    assert abs(sum(p.sentiment.scores.values()) - 1) < 2e-3
    assert set(p.risk.labels) == {"offensive", "hate", "complaint"}
    assert all(0 <= v <= 1 for v in p.risk.labels.values())


def _together_and_alone(runtime, texts, batch: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: probabilities with `texts` run in batches of `batch`, and with each text run alone."""
    together = [runtime.infer(runtime.tokenize(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    alone = [runtime.infer(runtime.tokenize([t])) for t in texts]
    return {task: (np.concatenate([t[task] for t in together]), np.concatenate([a[task] for a in alone]))
            for task in together[0]}


def _sample_texts() -> list[str]:
    path = Path(__file__).resolve().parent.parent / "streams" / "samples" / "posts.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_results_do_not_depend_on_batch_company(classifier, variant):
    """A message scores the same in a batch of 64 as alone, over all 420 sample posts. int8 activations are scaled
    per token (exporters/convert.quantize_rows); per tensor, v2's labels moved on 1-4 % of posts with their
    company and probabilities by up to 0.22."""
    runtime = ModelRuntime(classifier.runtime.path, "cpu", variant=variant)
    for together, alone in _together_and_alone(runtime, _sample_texts()).values():
        np.testing.assert_allclose(together, alone, atol=2e-3)


def test_long_text_is_truncated_to_max_length(classifier):
    english = classifier.classifier_for("en")
    encoded = english.tokenize(["word " * 1000, "two words"])
    assert len(encoded.ids[0]) == english.runtime.max_length
    assert encoded.truncated == [True, False]


def test_runtime_refuses_unknown_variant(classifier):
    with pytest.raises(ValueError, match="no variant 'fp8'"):
        ModelRuntime(classifier.runtime.path, "cpu", variant="fp8")


def test_rounding_once_per_batch_is_pythons_round():
    """`rounded_rows` (numpy, once per batch) gives what `round(float(p), 4)` per value gave, for float32
    probabilities: random ones, exact ties of the 5th decimal (k/32, k/2**n) and their neighbours."""
    from streamsense.models.classifier import rounded_rows

    rng = np.random.default_rng(0)
    ties = np.array([k / 2 ** e for e in range(5, 20) for k in range(1, 2 ** e, max(1, 2 ** e // 4096))])
    values = np.concatenate([rng.random(300_000), ties, np.nextafter(ties, 0), np.nextafter(ties, 1), [0.0, 1.0]])
    probs = values.astype(np.float32).reshape(-1, 1)
    probs = np.concatenate([probs, np.nextafter(probs, np.float32(1)), np.nextafter(probs, np.float32(0))], axis=1)
    assert rounded_rows(probs) == [[round(float(p), 4) for p in row] for row in probs]
    wide = rng.random((1000, 3))  # float64 in: Python's round, value by value
    assert rounded_rows(wide) == [[round(float(p), 4) for p in row] for row in wide]


def test_null_model_returns_uniform_probabilities_without_running_the_session(classifier):
    from streamsense.models.classifier import Classifier
    from streamsense.models.runtime import softmax

    runtime = ModelRuntime(classifier.runtime.path, "cpu", null_model=True)
    real = classifier.runtime
    assert runtime.null_model and not real.null_model
    assert runtime.variant == "null" and runtime.label == f"{real.label}+null"
    assert runtime.variant_file == real.variant_file and runtime.tasks == real.tasks  # the real model, loaded

    class NoSession:
        def __getattr__(self, name):
            raise AssertionError("a null model must not run the ONNX session")

    runtime.session = NoSession()
    texts = ["I love it", "word " * 1000, "the worst service ever, I will sue"]
    encoded = runtime.tokenize(texts)
    assert encoded == real.tokenize(texts)  # tokenizing stays real
    probs, expected = runtime.infer(encoded), real.infer(encoded)
    assert list(probs) == list(expected)
    for name, p in probs.items():
        assert p.shape == expected[name].shape and p.dtype == expected[name].dtype == np.float32
        np.testing.assert_array_equal(p, softmax(np.zeros_like(p)))
    assert {name: p.shape for name, p in runtime.infer(runtime.tokenize([])).items()} == \
           {t.name: (0, len(t.labels)) for t in runtime.tasks}
    [p, *_] = Classifier(runtime, classifier.rules).classify(texts)
    assert p.sentiment.label == "negative"  # argmax of a tie: the first label
    assert p.sentiment.scores == {"negative": 0.3333, "neutral": 0.3333, "positive": 0.3333}
    assert p.risk.labels == {"offensive": 0.5, "hate": 0.5, "complaint": 0.5}
