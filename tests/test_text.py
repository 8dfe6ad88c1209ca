"""Text preparation shared by training and serving (models/text.py): emoji as names, and the card option that
selects it."""

import json
import shutil

import numpy as np
import pytest

from streamsense.models.registry import ModelIntegrityError, text_options
from streamsense.models.runtime import ModelRuntime
from streamsense.models.text import emoji_to_names, normalize


def test_emoji_become_their_names():
    assert normalize("😡😡😡", "names") == "enraged face enraged face enraged face"
    assert normalize("so slow 😡 @bob http://x.y", "names") == "so slow enraged face @user http"
    assert normalize("😍👍", "names") == "smiling face with heart-eyes thumbs up"


def test_sequences_and_modifiers_are_one_emoji():
    # a skin tone, a variation selector and a ZWJ family are one emoji each, named once
    assert normalize("👍🏽", "names") == "thumbs up medium skin tone"
    assert normalize("❤️ you", "names") == "red heart you"
    assert normalize("👨‍👩‍👧", "names") == "family man woman girl"


def test_text_without_emoji_is_unchanged():
    for text in ("plain ascii text", "我要投诉你们的客服，太差了", "café, naïve — “quotes”", "#tag_with_underscores"):
        assert emoji_to_names(text) == text
    assert normalize("  a   b ", "names") == normalize("  a   b ", "keep") == "a b"


def test_keep_leaves_emoji_and_an_unknown_mode_is_refused():
    assert normalize("ok 😡", "keep") == "ok 😡"
    with pytest.raises(ValueError, match="emoji must be one of"):
        normalize("ok", "emojis")


def test_card_text_options():
    assert text_options({}) == {"emoji": "keep"}  # v3 and older cards
    assert text_options({"text": {"emoji": "names"}}) == {"emoji": "names"}
    with pytest.raises(ModelIntegrityError, match="text.emoji"):
        text_options({"text": {"emoji": "drop"}})


def test_the_runtime_reads_emoji_as_its_card_says(tmp_path, classifier):
    model = tmp_path / "m"
    shutil.copytree(classifier.runtime.path, model)
    card = json.loads((model / "model.json").read_text())
    keep = ModelRuntime(model, "cpu")
    card["text"] = {"emoji": "names"}
    (model / "model.json").write_text(json.dumps(card))
    names = ModelRuntime(model, "cpu")
    angry, love = "😡😡😡", "😍👍"
    # kept, both are [UNK] runs to the English vocabulary: identical inputs, identical scores (the bug)
    assert keep.tokenize([angry]).ids == keep.tokenize([love]).ids
    assert np.allclose(keep.predict_proba([angry])[0]["sentiment"], keep.predict_proba([love])[0]["sentiment"])
    # named, they differ, and the sentiment head reads them the right way round
    assert names.tokenize([angry]).ids != names.tokenize([love]).ids
    probs, _ = names.predict_proba([angry, love, "🤬 worst service ever 👎", "thank you so much 🥰🙏"])
    sentiment = probs["sentiment"]  # columns: negative, neutral, positive
    assert sentiment[0, 0] > sentiment[1, 0] and sentiment[1, 2] > sentiment[0, 2]
    assert sentiment[2].argmax() == 0 and sentiment[3].argmax() == 2
