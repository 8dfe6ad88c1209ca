"""The leave-one-dataset-out runner (models/lodo.py) on the committed dataset fixtures: its folds, the mix weights
and the prior they carry, the head fit, the before / after decisions, the report, and its error without data."""

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamsense.models import lodo
from streamsense.models.decision import mix_shares
from tests.conftest import FIXTURE_DATASETS

ZH = Path(__file__).resolve().parents[1] / "models" / "shipped" / "streamsense-bge-zh" / "1"
CARD = {"name": "zh", "version": 1, "tasks": [{"name": "sentiment", "labels": ["negative", "positive"],
                                               "datasets": [lodo.WAIMAI, lodo.SHOPPING], "dataset": lodo.WAIMAI,
                                               "metric": "accuracy", "positive": None}],
        "training": {"config": {"task_sampling_alpha": 0.5, "dataset_weights": {lodo.WAIMAI: 1.5},
                                "class_weighted": []}},
        "calibration": {"temperature": {"sentiment": 1.2}}}


def _encode(texts):
    """Character-hash vectors (32 dims) and fake logits: deterministic, enough to exercise the runner."""
    vectors = np.zeros((len(texts), 32), np.float32)
    for i, text in enumerate(texts):
        for ch in text:
            vectors[i, int(hashlib.md5(ch.encode()).hexdigest(), 16) % 32] += 1
    logits = np.stack([vectors[:, 0] - vectors[:, 1], vectors[:, 1] - vectors[:, 0]], axis=1)
    return vectors, logits


@pytest.fixture(scope="module")
def parts():
    return lodo.load_parts(FIXTURE_DATASETS, _encode, per_category=3)


def test_parts_keep_full_counts_and_cap_the_categories(parts):
    train = parts["train"]
    waimai = [p for p in train if p.dataset == lodo.WAIMAI]
    assert len(waimai) == 1 and waimai[0].category is None and len(waimai[0].labels) == 30
    assert waimai[0].full_counts == {"negative": 19, "positive": 11}
    fruit = next(p for p in train if p.category == "水果")
    assert len(fruit.labels) == 3 and fruit.full_counts == {"negative": 2, "positive": 6}  # sampled, counts kept
    assert all(p.full_counts == {} for p in parts["test"])
    assert sum(len(p.labels) for p in parts["test"] if p.dataset == lodo.SHOPPING) == 60


def test_fold_weights_give_each_dataset_its_draw_share_and_carry_the_mix_prior(parts):
    train = parts["train"]
    w, prior = lodo.fold_weights(train, 0.5, {lodo.WAIMAI: 1.5})
    assert w.sum() == pytest.approx(1.0)
    shares = mix_shares({lodo.WAIMAI: 30, lodo.SHOPPING: 30}, 0.5, {lodo.WAIMAI: 1.5})
    offsets = np.cumsum([0] + [len(p.labels) for p in train])
    mass = {d: sum(w[offsets[i]:offsets[i + 1]].sum() for i, p in enumerate(train) if p.dataset == d)
            for d in shares}
    assert mass == pytest.approx(shares)
    # inside online_shopping each category weighs its full size, however few rows were sampled
    fruit = next(i for i, p in enumerate(train) if p.category == "水果")
    assert w[offsets[fruit]:offsets[fruit + 1]].sum() == pytest.approx(shares[lodo.SHOPPING] * 8 / 30)
    # the prior the fold reports is the weighted class share of its rows when the samples keep their class shares
    whole = lodo.load_parts(FIXTURE_DATASETS, _encode, per_category=None)["train"]
    w, prior = lodo.fold_weights(whole, 0.5, {lodo.WAIMAI: 1.5})
    y = np.concatenate([p.labels for p in whole])
    assert prior["negative"] == pytest.approx(w[y == 0].sum(), abs=1e-6)
    assert prior["negative"] == pytest.approx(shares[lodo.WAIMAI] * 19 / 30 + shares[lodo.SHOPPING] * 12 / 30,
                                              abs=1e-6)
    # balanced training: each dataset keeps its draw share, split evenly between its classes
    b = lodo.balanced_within(whole, w)
    datasets = np.concatenate([[p.dataset] * len(p.labels) for p in whole])
    for d, share in shares.items():
        assert b[datasets == d].sum() == pytest.approx(share)
        assert b[(datasets == d) & (y == 0)].sum() == pytest.approx(share / 2)


def test_the_logistic_head_learns_a_separable_direction_and_its_class_prior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
    score = lodo.fit_logistic(x, y, np.full(400, 1 / 400))
    assert ((score(x) > 0) == y).mean() > 0.9
    # pure noise: the head learns the weighted class share as its bias, log(3) for 3 positives to 1 negative
    noise = rng.normal(size=(4000, 3))
    labels = (rng.random(4000) < 0.75).astype(int)
    assert lodo.fit_logistic(noise, labels, np.full(4000, 1 / 4000))(np.zeros((1, 3)))[0] == pytest.approx(
        math.log(labels.mean() / (1 - labels.mean())), abs=0.1)


def test_removing_a_negative_prior_moves_exactly_the_margin_between(parts):
    score = np.linspace(-1.5, 1.5, 31)
    before, after = lodo.decide(np.stack([np.zeros_like(score), score], 1), None,
                                {"negative": 2 / 3, "positive": 1 / 3})
    assert ((before == 1) == (score > 0)).all()
    assert ((after == 1) == (score > -math.log(2))).all()


def test_the_folds_and_the_report(parts):
    folds = lodo.lodo(parts, 0.5, {lodo.WAIMAI: 1.5})
    names = [f["fold"] for f in folds]
    categories = sorted({p.category for p in parts["test"] if p.dataset == lodo.SHOPPING})
    assert names == [f"{lodo.WAIMAI} → {lodo.SHOPPING}", f"{lodo.SHOPPING} → {lodo.WAIMAI}",
                     *[f"category {c}" for c in categories]]
    assert folds[0]["train"] == [lodo.WAIMAI] and folds[0]["training_prior"]["negative"] == pytest.approx(19 / 30,
                                                                                                          abs=1e-6)
    assert folds[0]["before"]["n"] == 60 and folds[1]["before"]["n"] == 60
    for f in folds[2:]:
        held = f["fold"].removeprefix("category ")
        assert f["test"] == [f"{lodo.SHOPPING}/{held}"]
        assert f"{lodo.SHOPPING}/{held}" not in f["train"] and lodo.WAIMAI in f["train"]
        assert f["after"]["n"] == f["before"]["n"] == sum(len(p.labels) for p in parts["test"] if p.category == held)
    # a prior leaning negative: removing it never calls more texts negative
    for f in folds:
        if f["training_prior"]["negative"] > 0.5:
            assert f["after"]["predicted_negative_share"] <= f["before"]["predicted_negative_share"]
    pooled = lodo.pooled(folds)
    assert pooled["before"]["n"] == 60
    hits = sum(f["before"]["accuracy"] * f["before"]["n"] for f in folds[2:])
    assert pooled["before"]["accuracy"] == pytest.approx(hits / 60, abs=1e-3)
    report = lodo.run(FIXTURE_DATASETS, _encode, CARD, 3, "fake")
    assert [f["fold"] for f in report["lodo"]] == names
    assert report["shipped_policy"]["temperature"] == 1.2
    assert {r["test"] for r in report["shipped"]} >= {lodo.WAIMAI, lodo.SHOPPING}
    md = lodo.markdown(report)
    assert md.count("\n| ") == len(folds) + 1 + len(report["shipped"]) + 2 and "pooled" in md


def test_the_onnx_encoder_reads_the_serving_logits_and_a_pooled_vector():
    pytest.importorskip("onnx")
    from streamsense.models.runtime import ModelRuntime

    encode, card = lodo.onnx_encoder(ZH, None)
    texts = ["很好吃，送得也快", "太难吃了，再也不点了", "还行"]
    vectors, logits = encode(texts)
    assert vectors.shape == (3, 512) and card["name"] == "streamsense-bge-zh"
    runtime = ModelRuntime(ZH, "cpu")
    runtime.temperature, runtime.offsets = {}, {}
    raw = runtime.predict_proba(texts)[0]["sentiment"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    assert np.allclose(np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True), raw, atol=1e-5)


def test_the_runner_says_which_datasets_are_missing(tmp_path):
    env = {"STREAMSENSE_DATASETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "streamsense.models.lodo", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: labelled datasets missing") and "Traceback" not in result.stderr
    assert "waimai_10k" in result.stderr and "online_shopping_10_cats" in result.stderr


def test_the_runner_end_to_end_on_the_fixtures(tmp_path):
    """The command as documented, on the committed fixtures: the base's word embeddings, every fold, JSON and
    Markdown written."""
    pytest.importorskip("onnx")
    import json

    lodo.main(["--out", str(tmp_path), "--per-category", "5"])
    report = json.loads((tmp_path / "lodo-embeddings.json").read_text(encoding="utf-8"))
    assert report["encoder"].startswith("the mean of streamsense-bge-zh:1's word embeddings")
    assert report["mix"] == {"task_sampling_alpha": 0.5, "dataset_weights": {lodo.WAIMAI: 1.5}}
    assert len(report["lodo"]) == 2 + 8 and "shipped" not in report  # 8 categories in the fixture's test split
    assert report["lodo"][0]["training_prior"]["negative"] == pytest.approx(19 / 30, abs=1e-6)
    assert (tmp_path / "lodo-embeddings.md").read_text(encoding="utf-8").count("| category ") == 8
