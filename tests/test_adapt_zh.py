"""Chinese adaptation (models/adapt.py on streamsense-bge-zh, [CLS]-pooled) and the routing of a labels file's rows to
the model that reads their language; class weights; the learning-curve runner's protocol on the fixtures
(models/learning_curve.py)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models import learning_curve as lc
from streamsense.models.adapt import AdaptError, LabelRow, class_weights, route
from streamsense.models.registry import alias_version, init_registry, read_card, resolve
from streamsense.models.runtime import ModelRuntime
from streamsense.settings import SHIPPED_MODELS
from tests.conftest import FIXTURE_DATASETS

ZH = "streamsense-bge-zh"
# hotel reviews (a business none of the Chinese sets covers): positive ones that name a flaw first ("…, but …"),
# which the shipped head reads as less positive, some as negative; and plainly negative ones
MIXED_POSITIVE = [
    "房间不大，但是很干净，前台态度也好，下次还会住", "位置有点偏，不过早餐丰富，床很舒服", "虽然隔音一般，但性价比很高，推荐",
    "酒店比较旧，可是服务员很热情，帮我们叫了车", "停车不太方便，房间却很宽敞，总体满意", "价格稍贵，但是环境安静，睡得很好",
    "卫生间小了点，其他都不错，交通方便", "窗外有点吵，不过床品很舒服，会推荐给朋友", "走廊灯光暗了点，但房间设施新，满意",
    "电梯要等很久，不过前台小姐姐很耐心，给个好评", "早上有点冷，但是热水很足，洗得舒服", "装修不新，但打扫得一尘不染，赞",
    "没有电梯有点累，但老板人很好，还送了水果", "网速不快，可是景色太美了，值得", "空调声音有点大，但整体干净整洁，会再来",
    "房间有点旧，不过服务周到，早餐好吃", "离地铁远了点，但是安静舒适，下次还来", "淋浴水压小，不过床很大很软，好评",
]
NEGATIVE = [
    "房间很小而且有异味，前台态度冷淡", "床单有污渍，投诉了也没人管", "隔音太差，一晚上没睡着，不会再来",
    "照片和实际差很多，设施老旧", "热水时有时无，洗澡洗到一半就凉了", "服务员爱理不理，退房还多收了钱",
    "空调坏了没人修，热得要命", "早餐难吃，价格还贵，失望", "网络连不上，打电话也没人接", "马桶堵了，换房还要加钱",
    "楼下施工吵得要死，酒店也不提醒", "订好的大床房到了说没了，太坑了",
    "墙皮脱落，地毯很脏，不推荐", "半夜有人敲门，安全太差", "押金退了一个星期还没到账", "窗户关不上，冷风一直吹",
    "浴室发霉，毛巾发黄", "前台办入住等了一个小时，没人道歉",
]
TRAIN, HELD = 12, 6  # per label: the first 12 teach, the last 6 are held out


def test_route_sends_each_label_to_the_model_reading_its_language():
    rows = [LabelRow("房间很干净，下次还来", "sentiment", "positive"),  # identified zh
            LabelRow("the locker jammed again", "complaint", "complaint"),  # identified en
            LabelRow("ok", "sentiment", "neutral"),  # too short to tell: und
            LabelRow("the room was clean", "sentiment", "positive", lang="zh")]  # a stated lang wins
    by_model, left = route(rows, {"zh-model": ("zh",)}, "en-model")
    assert left == 0
    assert [r.text for r in by_model["zh-model"]] == ["房间很干净，下次还来", "the room was clean"]
    assert [r.text for r in by_model["en-model"]] == ["the locker jammed again", "ok"]
    only_zh, left = route(rows, {"zh-model": ("zh",)}, None)  # one model asked for: the rest is left out
    assert list(only_zh) == ["zh-model"] and len(only_zh["zh-model"]) == 2 and left == 2


def test_class_weights_balance_the_labels_or_keep_their_ratio():
    y = np.array([0, 0, 0, 1])
    assert class_weights(y, 2).tolist() == pytest.approx([4 / 6, 2.0])  # n / (classes × count)
    assert class_weights(y, 3).tolist() == pytest.approx([4 / 6, 2.0, 1.0])  # a class without labels: 1
    assert class_weights(y, 2, "labels").tolist() == [1.0, 1.0]
    with pytest.raises(AdaptError, match="not balanced or labels"):
        class_weights(y, 2, "inverse")


def test_adapting_the_chinese_model_from_a_mixed_file(tmp_path):
    """One file, Chinese and English rows: the Chinese ones adapt streamsense-bge-zh; the English ones go to the
    English model, whose heads they do not fit, and it says so. About a minute on 2 shared cores (the export and
    its parity check)."""
    root = tmp_path / "r"
    init_registry(root, SHIPPED_MODELS)
    labels = tmp_path / "labels.jsonl"
    lines = [{"text": t, "task": "sentiment", "label": "positive"} for t in MIXED_POSITIVE[:TRAIN]]
    lines += [{"text": t, "task": "sentiment", "label": "negative"} for t in NEGATIVE[:TRAIN]]
    lines += [{"text": "is this sarcasm or not, I cannot tell", "task": "sarcasm", "label": "yes", "lang": "en"}]
    labels.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    held = MIXED_POSITIVE[TRAIN:] + NEGATIVE[TRAIN:]
    truth = np.array([1] * HELD + [0] * HELD)
    base = ModelRuntime(resolve(root, ZH), "cpu")
    before, _ = base.predict_proba(held)

    result = CliRunner().invoke(app, ["models", "adapt", "--from-file", str(labels)], env={
        "STREAMSENSE_MODEL_REGISTRY": str(root), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "streamsense-minilm:3: not adapted: no label fits a head" in result.output
    assert alias_version(root, ZH, "challenger") == 2 and alias_version(root, ZH, "champion") == 1
    assert not (root / "streamsense-minilm" / "4").exists()
    card = read_card(root / ZH / "2")
    assert card["pooling"] == "cls" and card["languages"] == ["zh"] and card["base_model"] == "BAAI/bge-small-zh-v1.5"
    adaptation = card["training"]["adaptation"]
    assert adaptation["from"] == f"{ZH}:1" and adaptation["source"] == "file labels.jsonl (24 of its 25 labels)"
    head = adaptation["heads"]["sentiment"]
    assert set(adaptation["heads"]) == {"sentiment"} and head["per_label"] == {"negative": 12, "positive": 12}
    assert head["class_weight"] == "balanced" and head["class_weights"] == {"negative": 1.0, "positive": 1.0}
    assert all(v["status"] == "passed" for k, v in card["parity"]["variants"].items() if k != "fp16")
    assert set(card["calibration"]["temperature"]) == {"offensive"}  # sentiment's was for the replaced head
    assert "sentiment" in read_card(root / ZH / "1").get("decision", {})  # the base's policy offset …
    assert "sentiment" not in card.get("decision", {})  # … is not the refitted head's (fit balanced)
    assert [t["datasets"] for t in card["tasks"]] == [["waimai_10k", "online_shopping_10_cats"], ["cold"]]

    after, _ = ModelRuntime(root / ZH / "2", "cpu").predict_proba(held)
    # on reviews it did not learn from: the flawed-but-positive ones move towards positive, negatives stay negative
    assert after["sentiment"][:HELD, 1].mean() > before["sentiment"][:HELD, 1].mean() + 0.05
    assert (after["sentiment"].argmax(1) == truth).mean() >= (before["sentiment"].argmax(1) == truth).mean()
    assert (after["sentiment"][HELD:].argmax(1) == 0).all()
    # frozen encoder, the offensive head untouched: the same answers
    assert np.array_equal(before["offensive"].argmax(1), after["offensive"].argmax(1))
    assert np.abs(before["offensive"] - after["offensive"]).max() < 0.05
    print(json.dumps({"positive_before": float(before["sentiment"][:HELD, 1].mean()),
                      "positive_after": float(after["sentiment"][:HELD, 1].mean())}))


# --- the learning-curve runner's protocol, on the fixtures and a stand-in encoder ---------------------------------

def _chars(texts):
    """A stand-in encoder for the protocol's logic (the real ones are the frozen base encoders): character counts
    hashed into 64 buckets."""
    out = np.zeros((len(texts), 64), np.float32)
    for i, t in enumerate(texts):
        for ch in t:
            out[i, hash(ch) % 64] += 1.0
    return out / np.maximum(1.0, np.linalg.norm(out, axis=1, keepdims=True))


def test_learning_curve_domains_leave_their_rows_out():
    clothes = lc.DOMAINS["zh-clothes"]
    sets = lc.build(clothes, FIXTURE_DATASETS, "keep")
    assert sets["domain_train"] and all(r.dataset == "online_shopping_10_cats" and r.group == "衣服"
                                        for r in sets["domain_train"] + sets["domain_eval"])
    assert not any(r.group == "衣服" for r in sets["rest_train"] + sets["rest_test"])
    assert {r.dataset for r in sets["rest_train"]} == {"waimai_10k", "online_shopping_10_cats"}
    texts = {name: {r.text for r in rows} for name, rows in sets.items()}
    assert not texts["domain_train"] & (texts["rest_train"] | texts["domain_eval"])
    food = lc.build(lc.DOMAINS["zh-food-delivery"], FIXTURE_DATASETS, "keep", rest_cap=10)
    assert {r.dataset for r in food["domain_train"]} == {"waimai_10k"} and len(food["rest_train"]) == 10
    assert {r.dataset for r in food["rest_test"]} == {"online_shopping_10_cats"}
    services = lc.build(lc.DOMAINS["en-services-travel"], FIXTURE_DATASETS, "names")
    assert {r.group for r in services["domain_eval"]} <= {"services", "transport", "cars"}
    assert len(services["domain_eval"]) == 15 + 15  # its validation and test rows in the fixtures
    # a capped rest draws mostly the same rows for two domains cut from one dataset
    assert lc.draw(30, 10, 1) == lc.draw(30, 10, 1) != lc.draw(30, 10, 2) and len(lc.draw(5, 10, 0)) == 5


def test_learning_curve_runs_the_protocol_and_writes_its_table(tmp_path):
    domain = lc.DOMAINS["zh-food-delivery"]
    sets = lc.build(domain, FIXTURE_DATASETS, "keep")
    seen = []

    def encode(texts):
        seen.extend(texts)
        return _chars(texts)

    cached = lc.CachedEncoder("chars", encode, tmp_path / "cache")
    report = lc.curve(domain, sets, cached, ks=(10, 20), seeds=3, shipped=lambda texts: np.ones(len(texts), int))
    assert len(seen) == len(set(seen))  # each text encoded once
    again = lc.CachedEncoder("chars", lambda texts: pytest.fail("encoded twice"), tmp_path / "cache")
    assert np.array_equal(again([r.text for r in sets["domain_eval"]]), _chars([r.text for r in sets["domain_eval"]]))
    a10 = report["adapted"]["10"]
    draws = a10["runs"] + report["adapted"]["20"]["runs"]
    assert [r["labels"] for r in a10["runs"]] == [10, 10, 10] and len({json.dumps(r["per_label"]) for r in draws}) > 1
    assert a10["min"] <= a10["mean"] <= a10["max"] and a10["sd"] >= 0
    y = np.array([r.label for r in sets["domain_eval"]])
    assert report["shipped"] == pytest.approx(float(np.mean(y == 1)), abs=1e-4)  # an all-positive "model"
    assert set(report["base_rest_test"]) == {"online_shopping_10_cats"}
    assert set(report["targets"]) >= {"quality_met", "rest_test_within_1"} and report["targets"]["labels"] == 20
    table = lc.markdown([report])
    assert table.count("\n| zh-food-delivery (accuracy) |") == 2 and f"{report['full']:.3f}" in table


def test_learning_curve_names_missing_datasets(tmp_path, capsys):
    code = lc.main(["--domains", "zh-clothes", "--datasets-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "waimai_10k" in err[0] and "online_shopping_10_cats" in err[0]
    assert not (tmp_path / "o.json").exists()


def test_an_anchor_on_the_original_vectors_moves_the_head_only_where_they_do_not_reach():
    """fit_head's `moments` anchor: the change of the logits on the vectors the head was trained on. With M = I and
    μ = 0 it is the plain distance in weights; where those vectors span only some directions, the head learns labels
    along the others and answers the originals as before."""
    from streamsense.models.adapt import fit_head

    rng = np.random.default_rng(3)
    original = np.concatenate([rng.normal(size=(400, 4)), np.zeros((400, 4))], axis=1).astype(np.float32)
    w0 = np.concatenate([rng.normal(size=(2, 4)), np.zeros((2, 4))], axis=1).astype(np.float32)
    b0 = np.zeros(2, np.float32)
    y = rng.integers(0, 2, 60)
    x = np.concatenate([rng.normal(size=(60, 4)), np.where(y[:, None] == 1, 1.0, -1.0) * np.ones((60, 4))],
                       axis=1).astype(np.float32)  # the labels ride on the directions the originals never use
    plain = fit_head(x, y, w0, b0, 0.3)
    same = fit_head(x, y, w0, b0, 0.3, moments=(np.eye(8, dtype=np.float32), np.zeros(8, np.float32)))
    assert np.allclose(plain[0], same[0], atol=1e-4) and np.allclose(plain[1], same[1], atol=1e-4)
    m = original.T @ original / len(original)
    w, b = fit_head(x, y, w0, b0, 10.0, moments=(m, original.mean(0)))
    assert ((x @ w.T + b).argmax(1) == y).mean() == 1.0  # learnt the labels, despite a strong anchor
    assert np.abs((original @ w.T + b) - (original @ w0.T + b0)).max() < 0.05  # the originals' logits kept
    w_plain, b_plain = fit_head(x, y, w0, b0, 10.0)
    assert np.abs((original @ w_plain.T + b_plain) - (original @ w0.T + b0)).max() > 0.05
