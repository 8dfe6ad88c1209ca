"""Adaptation (models/adapt.py, `streamsense models adapt`): labels → a challenger version with refitted heads,
exported, parity-checked on the labels' texts, published and named challenger."""

import json

import numpy as np
import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models.adapt import AdaptError, LabelRow, read_labels, usable
from streamsense.models.registry import alias_version, init_registry, read_card, resolve
from streamsense.models.runtime import ModelRuntime
from streamsense.settings import SHIPPED_MODELS
from streamsense.streams.feedback.verdicts import Verdict, record
from tests.bi_rows import prediction
from tests.test_feedback import T0, _store

NAME = "streamsense-minilm"
# complaints the shipped model reads as none (a domain it never saw: parcel lockers), and plain remarks
COMPLAINTS = ["locker 14 jammed again with my parcel inside", "the locker app shows collected but the door is shut",
              "third time the parcel locker code expired before I got there", "locker screen frozen, cannot collect"]
REMARKS = ["the locker is near the bakery", "picked up my parcel from the locker at noon",
           "lockers are on the ground floor", "the new locker has a blue screen"]


def test_labels_file_and_what_fits_the_model(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "a", "task": "complaint", "label": "complaint"}\n\n{oops\n'
                    '{"text": "b", "task": "complaint"}\n{"text": "c", "task": "sarcasm", "label": "yes"}\n'
                    '{"text": "d", "task": "hate", "label": "not-hate", "lang": "en"}\n')
    rows, bad = read_labels(path)
    assert [r.label for r in rows] == ["complaint", "yes", "not_hate"]  # one spelling of labels
    assert [n for n, _ in bad] == [3, 4]
    card = read_card(SHIPPED_MODELS / NAME / "3")
    by_task, left_out = usable(card, rows + [LabelRow("e", "sentiment", "furious")])
    assert by_task == {"complaint": [("a", 1)], "hate": [("d", 0)]}
    assert len(left_out) == 2 and "not a head of this model" in left_out[0] and "'furious'" in left_out[1]
    with pytest.raises(AdaptError, match="no label fits a head"):
        usable(card, [LabelRow("x", "sarcasm", "yes")])


def test_adapting_the_shipped_registry_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["models", "adapt", "--from-file", str(tmp_path / "x.jsonl")],
                                env={"STREAMSENSE_MODEL_REGISTRY": str(SHIPPED_MODELS)})
    assert result.exit_code == 2 and "registry-init" in result.output


def test_adapt_from_feedback_makes_a_challenger(tmp_path):
    """Tiny on purpose (24 labels; about a minute on 2 shared cores, most of it the export and its parity)."""
    root = tmp_path / "r"
    init_registry(root, SHIPPED_MODELS)
    texts = {f"c{i}-{n}": (f"{t} ({n})", "complaint") for i, t in enumerate(COMPLAINTS) for n in range(3)}
    texts |= {f"r{i}-{n}": (f"{t} ({n})", "not_complaint") for i, t in enumerate(REMARKS) for n in range(3)}
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _store(url, [prediction("post", ident, "b", "neutral", T0, text=text, offset=i) | {"model_version": f"{NAME}:3"}
                 for i, (ident, (text, _)) in enumerate(texts.items())])
    engine = create_engine(url)
    record(engine, [Verdict("post", ident, "complaint", "ann", label=label) for ident, (_, label) in texts.items()])
    engine.dispose()
    base = ModelRuntime(resolve(root, NAME), "cpu")
    sample = [t for t, _ in texts.values()]
    before, _ = base.predict_proba(sample)

    result = CliRunner().invoke(app, ["models", "adapt", "--from-feedback"], env={
        "STREAMSENSE_MODEL_REGISTRY": str(root), "STREAMSENSE_DATABASE_URL": url, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert alias_version(root, NAME, "challenger") == 4
    assert alias_version(root, NAME, "champion") == 3  # pinned before version 4 became the newest
    card = read_card(root / NAME / "4")
    adaptation = card["training"]["adaptation"]
    assert adaptation["from"] == f"{NAME}:3" and adaptation["source"] == "feedback: 24 labelled verdicts"
    assert adaptation["heads"]["complaint"]["labels"] == 24 and set(adaptation["heads"]) == {"complaint"}
    assert all(v["status"] == "passed" for k, v in card["parity"]["variants"].items() if k != "fp16")
    assert set(card["calibration"]["temperature"]) == {"sentiment", "offensive", "hate"}  # complaint's is refitted
    assert "test" not in card["metrics"]  # to be measured: the gate's test_splits check refuses until then

    after, _ = ModelRuntime(root / NAME / "4", "cpu").predict_proba(sample)
    truth = np.array([label == "complaint" for _, label in texts.values()])
    base_right = np.mean((before["complaint"][:, 1] > 0.5) == truth)
    new_right = np.mean((after["complaint"][:, 1] > 0.5) == truth)
    assert new_right > base_right  # on the labels it learnt from (a learning curve on held-out data: not here)
    for head in ("sentiment", "offensive", "hate"):  # frozen encoder, heads untouched: the same answers
        assert np.array_equal(before[head].argmax(1), after[head].argmax(1)), head
    print(json.dumps({"base_right": base_right, "new_right": new_right}))
