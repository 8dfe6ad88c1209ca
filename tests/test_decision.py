"""Decision policies (models/decision.py): the training mix's class prior, the logit offset that removes it, and that
the card, the runtime (serving) and `models eval` apply the same one; the English heads are left as they were."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models.decision import (mix_prior, mix_shares, offset, offsets, probabilities, state,
                                         card_training_prior, target_prior)
from streamsense.models.evaluate import evaluate
from streamsense.models.registry import ModelIntegrityError, read_card, verify
from streamsense.models.runtime import ModelRuntime
from tests.conftest import FIXTURE_DATASETS

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "shipped"
ZH, EN = SHIPPED / "streamsense-bge-zh" / "1", SHIPPED / "streamsense-minilm" / "3"
TEXTS = ["很好吃，送得也快", "太难吃了，再也不点了", "一般般吧，价格还行", "包装破了，但是味道不错", "客服态度很差"]


def _copy(model: Path, dest: Path) -> Path:
    """A model directory of our own: small files copied, ONNX files linked."""
    dest.mkdir()
    for item in model.iterdir():
        if item.suffix == ".onnx":
            (dest / item.name).symlink_to(item.resolve())
        else:
            shutil.copy2(item, dest / item.name)
    return dest


def test_the_mix_prior_of_the_chinese_recipe():
    """zh_train draws each dataset ∝ size ** 0.5 × weight: waimai (9589 rows, 2:1 negative, ×1.5) and online_shopping
    (42214, near even) give 0.417 / 0.583 of the draws and a 0.566 negative prior."""
    counts = {"waimai_10k": {"negative": 6389, "positive": 3200},
              "online_shopping_10_cats": {"negative": 20833, "positive": 21381}}
    shares = mix_shares({d: sum(c.values()) for d, c in counts.items()}, 0.5, {"waimai_10k": 1.5})
    w = 1.5 * math.sqrt(9589)
    assert shares["waimai_10k"] == pytest.approx(w / (w + math.sqrt(42214)))
    prior = mix_prior(counts, ("negative", "positive"), 0.5, {"waimai_10k": 1.5})
    expected = shares["waimai_10k"] * 6389 / 9589 + shares["online_shopping_10_cats"] * 20833 / 42214
    assert prior["negative"] == pytest.approx(expected, abs=1e-6)
    assert prior["negative"] == pytest.approx(0.5655, abs=1e-3)
    # a class-weighted loss over one dataset balances it exactly (models/train.py weighs every task so)
    one = {"tweeteval_sentiment": {"negative": 7393, "neutral": 21230, "positive": 18759}}
    assert mix_prior(one, ("negative", "neutral", "positive"), 0.5, class_weighted=True) == pytest.approx(
        dict.fromkeys(("negative", "neutral", "positive"), 1 / 3), abs=1e-6)


def test_the_offset_is_bayes_rule_from_the_training_prior_to_the_target():
    labels = ("negative", "positive")
    training = {"negative": 2 / 3, "positive": 1 / 3}
    balanced = target_prior("balanced", labels, training)
    assert balanced == {"negative": 0.5, "positive": 0.5}
    stated = target_prior("prior", labels, training, {"negative": 1, "positive": 3})
    assert stated == {"negative": 0.25, "positive": 0.75}
    with pytest.raises(ValueError, match="positive share"):
        target_prior("prior", labels, training, {"negative": 1})
    shift = offset(labels, training, balanced)
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (200, 2)).astype(np.float32)
    t = 1.3
    calibrated = probabilities(logits, t)
    adjusted = probabilities(logits, t, shift)
    by_bayes = calibrated * np.array([0.5 / (2 / 3), 0.5 / (1 / 3)])
    assert np.allclose(adjusted, by_bayes / by_bayes.sum(axis=1, keepdims=True), atol=1e-6)
    # the boundary moves from score 0 to −log 2: exactly the texts in between change label, to positive
    score = logits[:, 1] / t - logits[:, 0] / t
    moved = calibrated.argmax(1) != adjusted.argmax(1)
    assert moved.any() and (moved == ((score > -math.log(2)) & (score <= 0))).all()
    assert (adjusted.argmax(1)[moved] == 1).all()
    assert np.allclose(probabilities(logits, None), probabilities(logits, 1.0))


def test_the_card_section_is_checked():
    card = {"tasks": [{"name": "sentiment", "labels": ["negative", "positive"]}]}
    assert offsets(card) == {}
    entry = {"policy": "balanced", "training_prior": {"negative": 0.6, "positive": 0.4},
             "target_prior": {"negative": 0.5, "positive": 0.5}}
    assert np.allclose(offsets(card | {"decision": {"sentiment": entry}})["sentiment"],
                       [math.log(0.5 / 0.6), math.log(0.5 / 0.4)])
    assert offsets(card | {"decision": {"sentiment": entry | {"policy": "training"}}}) == {}
    for bad, match in ((entry | {"policy": "lucky"}, "not one of"),
                       (entry | {"training_prior": {"negative": 0.6, "neutral": 0.4}}, "share in"),
                       (entry | {"target_prior": {"negative": 0.7, "positive": 0.7}}, "summing to 1")):
        with pytest.raises(ModelIntegrityError, match=match):
            offsets(card | {"decision": {"sentiment": bad}})
    with pytest.raises(ModelIntegrityError, match="not a head"):
        offsets(card | {"decision": {"hate": entry}})


def test_the_english_heads_carry_no_training_prior():
    """Every English head's loss was class-weighted (models/train.py), so its training prior is uniform: the balanced
    policy moves nothing, and the shipped card states none."""
    card = read_card(EN)
    assert "decision" not in card
    for head in ("sentiment", "offensive", "hate", "complaint"):
        prior, derived = card_training_prior(card, head, FIXTURE_DATASETS)
        assert derived["class_weighted"] is True
        entry = state(card, head, "balanced", prior, derived)
        assert max(abs(x) for x in entry["logit_offset"].values()) < 1e-3
    assert ModelRuntime(EN, "cpu").offsets == {}


def test_the_shipped_chinese_card_states_the_balanced_policy():
    """The shipped card's sentiment policy: its training prior is the recipe's (0.566 negative), it decides as if
    balanced, and the runtime's offset is the card's; the offensive head (class-weighted) is not moved."""
    card = verify(ZH)
    entry = card["decision"]["sentiment"]
    assert entry["policy"] == "balanced" and set(card["decision"]) == {"sentiment"}
    d = entry["derived_from"]
    assert mix_prior(d["train_counts"], ("negative", "positive"), d["task_sampling_alpha"], d["dataset_weights"],
                     d["class_weighted"]) == entry["training_prior"]
    assert entry["training_prior"]["negative"] == pytest.approx(0.5655, abs=1e-3)
    assert d["dataset_weights"] == card["training"]["config"]["dataset_weights"]
    runtime = ModelRuntime(ZH, "cpu")
    assert set(runtime.offsets) == {"sentiment"}
    assert np.allclose(runtime.offsets["sentiment"], [entry["logit_offset"]["negative"],
                                                      entry["logit_offset"]["positive"]], atol=1e-4)
    assert "## Decision policy" in (ZH / "MODEL_CARD.md").read_text()


def test_serving_eval_and_the_card_decide_alike(tmp_path):
    """`models decide --record` on a copy of the Chinese model: the card stays verified, the runtime's probabilities
    are the raw ones moved by the card's offset (Bayes rule), and `models eval` scores exactly the runtime's labels."""
    model = _copy(ZH, tmp_path / "zh")
    card = read_card(model)
    card.pop("decision", None)
    (model / "model.json").write_text(json.dumps(card))
    raw = ModelRuntime(model, "cpu")
    result = CliRunner().invoke(app, ["models", "decide", "--model", str(model), "--policy", "prior",
                                      "--prior", "negative=0.2", "--prior", "positive=0.8", "--record"])
    assert result.exit_code == 0, result.output
    assert "recorded in" in result.output
    card = verify(model)
    entry = card["decision"]["sentiment"]
    assert entry["target_prior"] == {"negative": 0.2, "positive": 0.8}
    decided = ModelRuntime(model, "cpu")
    p0, p1 = raw.predict_proba(TEXTS)[0], decided.predict_proba(TEXTS)[0]
    ratio = np.array([0.2 / entry["training_prior"]["negative"], 0.8 / entry["training_prior"]["positive"]])
    expected = p0["sentiment"] * ratio
    assert np.allclose(p1["sentiment"], expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    assert np.allclose(p1["offensive"], p0["offensive"])  # no policy for it: left alone
    report = evaluate(model, FIXTURE_DATASETS, limit=40)
    assert report["decision"] == {"sentiment": "prior"}
    from streamsense.models.data import load_split
    from streamsense.models.metrics import classification_metrics
    from streamsense.models.tasks import ZH_TASKS

    for view in ZH_TASKS["sentiment"]:
        rows = load_split(FIXTURE_DATASETS, view, "test", 40, emoji=decided.emoji)
        labels = decided.predict_proba([r.text for r in rows])[0]["sentiment"].argmax(1)
        assert report[f"sentiment/{view.dataset}"] == classification_metrics([r.label for r in rows], labels, 2)
    assert "## Decision policy" in (model / "MODEL_CARD.md").read_text()


def test_the_decide_command_refuses_what_it_cannot_state(tmp_path):
    runner = CliRunner()
    for args, said in ((["--policy", "lucky"], "one of"), (["--head", "hate"], "no head"),
                       (["--policy", "prior", "--prior", "positive"], "LABEL=SHARE"),
                       (["--policy", "prior", "--prior", "positive=0.5"], "positive share")):
        result = runner.invoke(app, ["models", "decide", "--model", str(ZH), *args])
        assert result.exit_code == 2 and said in result.output, result.output
    model = _copy(ZH, tmp_path / "zh")
    card = read_card(model)
    del card["training"]["config"]
    (model / "model.json").write_text(json.dumps(card))
    result = runner.invoke(app, ["models", "decide", "--model", str(model)])
    assert result.exit_code == 2 and "no training config" in result.output, result.output


def test_the_decide_command_names_the_missing_datasets(tmp_path):
    """The training prior comes from the train splits: without them, one clear line and no traceback."""
    result = CliRunner().invoke(app, ["models", "decide", "--model", str(ZH)],
                                env={"STREAMSENSE_DATASETS_DIR": str(tmp_path)})
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "waimai_10k" in result.output and "online_shopping_10_cats" in result.output, result.output


def test_per_dataset_class_weights_leave_no_prior():
    """models/zh_train.py `class_weighted_per_dataset`: each dataset's classes weigh alike in the loss, so the mix
    carries an even prior whatever the sets' ratios and draw shares (and the card's derivation says so)."""
    pytest.importorskip("torch")
    from streamsense.models.data import Example
    from streamsense.models.zh_train import ZhTrainConfig, loss_class_weights

    counts = {"waimai_10k": {"negative": 6389, "positive": 3200},
              "online_shopping_10_cats": {"negative": 20833, "positive": 21381}}
    labels = ("negative", "positive")
    assert mix_prior(counts, labels, 0.5, {"waimai_10k": 1.5}, "dataset") == {"negative": 0.5, "positive": 0.5}
    assert mix_prior(counts, labels, 0.5, {"waimai_10k": 1.5}, True)["negative"] != 0.5  # pooled weights: not even
    data = {"sentiment": {d: [Example("x", i) for i, label in enumerate(labels) for _ in range(c[label] // 100)]
                          for d, c in counts.items()}}
    cfg = ZhTrainConfig("", "", "", "", class_weighted=(), class_weighted_per_dataset=("sentiment",))
    w = loss_class_weights(cfg, data)
    assert np.allclose(w[("sentiment", "waimai_10k")], [95 / (2 * 63), 95 / (2 * 32)])
    assert np.allclose(w[("sentiment", "online_shopping_10_cats")], [421 / (2 * 208), 421 / (2 * 213)])
    pooled = loss_class_weights(ZhTrainConfig("", "", "", "", class_weighted=("sentiment",)), data)
    assert np.allclose(pooled[("sentiment", "waimai_10k")], pooled[("sentiment", "online_shopping_10_cats")])
    assert np.allclose(loss_class_weights(ZhTrainConfig("", "", "", "", class_weighted=()), data)[
        ("sentiment", "waimai_10k")], [1, 1])


def test_temperatures_are_fitted_on_the_heads_own_logits():
    """`models calibrate` reads the raw logits (risk_eval.head_logits sets temperature and offset aside), so the
    temperature never absorbs the decision offset; the runtime's own settings come back afterwards."""
    from streamsense.models.data import load_split
    from streamsense.models.risk_eval import head_logits
    from streamsense.models.tasks import ZH_TASKS

    decided = ModelRuntime(ZH, "cpu")
    assert decided.offsets and decided.temperature
    logits = head_logits(decided, FIXTURE_DATASETS, "validation", limit=8)
    assert set(decided.offsets) == {"sentiment"} and decided.temperature["sentiment"] > 1
    plain = ModelRuntime(ZH, "cpu")
    plain.offsets, plain.temperature = {}, {}
    texts = [r.text for view in ZH_TASKS["sentiment"]
             for r in load_split(FIXTURE_DATASETS, view, "validation", 8, emoji=plain.emoji)]
    raw = plain.predict_proba(texts)[0]["sentiment"]
    assert np.allclose(np.exp(logits["sentiment"][0]), raw, atol=1e-5)
