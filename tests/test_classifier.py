"""The shipped model through the runtime: label mapping, probabilities, truncation, order."""

import numpy as np

from models.runtime import ModelRuntime


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


def test_batch_results_do_not_depend_on_batch_company_or_order(classifier):
    texts = ["short", "a much longer text about the delivery that never arrived at my house", "meh", "great!"]
    together = classifier.runtime.infer(classifier.tokenize(texts))["sentiment"]
    alone = np.concatenate([classifier.runtime.infer(classifier.tokenize([t]))["sentiment"] for t in texts])
    assert np.allclose(together, alone, atol=2e-3)


def test_long_text_is_truncated_to_max_length(classifier):
    encoded = classifier.tokenize(["word " * 1000, "two words"])
    assert len(encoded.ids[0]) == classifier.runtime.max_length
    assert encoded.truncated == [True, False]


def test_runtime_refuses_unknown_variant(classifier):
    import pytest

    with pytest.raises(ValueError, match="no variant 'fp8'"):
        ModelRuntime(classifier.runtime.path, "cpu", variant="fp8")
