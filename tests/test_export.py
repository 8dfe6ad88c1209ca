import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from streamsense.exporters import (
    ParityError,
    Tolerance,
    UnsupportedArchitectureError,
    check_parity,
    export,
    export_config_for,
)
from streamsense.exporters.convert import quantize_rows, to_onnx
from streamsense.exporters.parity import TOLERANCES
from streamsense.exporters.recover import UnrecoverableGraphError, read_weights, recover
from streamsense.models.data import load_split
from streamsense.models.registry import verify
from streamsense.models.soup import NoBetterSoupError, greedy_soup, soup
from streamsense.models.tasks import TASKS
from streamsense.models.network import MultiTaskModel, base_model_path, evaluate, lineage, load_trained
from streamsense.models.train import TrainConfig

WORDS = ["the", "service", "was", "great", "awful", "slow", "thanks", "never", "again", "love", "hate", "delayed",
         "refund", "why", "ok", "support", "help", "@user", "http", "!!", "😡", "Ünïcödé"]


def write_datasets(root: Path) -> None:
    """Validation (and test) splits of random texts from 1 to 120 words, so some run past max_length."""
    rng = random.Random(0)
    for task in TASKS:
        folder = root / task.dataset
        folder.mkdir(parents=True)
        rows = [
            {"text": " ".join(rng.choices(WORDS, k=rng.randint(1, 120))), "label": rng.choice(task.labels)}
            for _ in range(40)
        ]
        for split in ("validation", "test"):
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


TRAINED_LENGTH = 96  # not the default, so a test sees export serve the length the model was trained at


def write_trained(out: Path, datasets: Path) -> None:
    """A tiny random BERT under the real heads and MiniLM tokenizer, in train()'s directory layout."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        initializer_range=0.2)
    model = MultiTaskModel(BertModel(config), list(TASKS)).eval()
    out.mkdir()
    save_file(model.state_dict(), out / "model.safetensors")
    config.save_pretrained(out)
    shutil.copy2(Path(base_model_path()) / "tokenizer.json", out / "tokenizer.json")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    splits = {t.name: load_split(datasets, t, "validation") for t in TASKS}
    validation = evaluate(model, tokenizer, splits, list(TASKS), TRAINED_LENGTH, "cpu")
    cfg = TrainConfig(base_model=base_model_path(), datasets_dir=str(datasets), output_dir=str(out), max_steps=0,
                      max_length=TRAINED_LENGTH)
    summary = {"base_model": "tiny-random-bert", "config": asdict(cfg), "device": "cpu", "torch": torch.__version__,
               "steps": 0, "minutes": 0.0,
               "train_examples": {t.name: 0 for t in TASKS}, "validation": validation, "history": []}
    (out / "training.json").write_text(json.dumps(summary))


# A random tiny encoder gives every text nearly the same features, so its labels are near-ties that int8 noise
# flips together, and how many flip is arbitrary: with BERT's default init range (0.02) per-tensor int8 agreed on
# 0.78 of texts and per-row int8 on 0.41 of complaint texts. An init range of 0.1 spread the features enough on an
# AVX2 machine (per-row agreement 0.78-1.0) but not on an AVX-512 VNNI one, whose int8 kernels round differently:
# hate agreed on 0.53 of texts there (max probability diff 0.16, within tolerance), all near-ties of a head that
# predicts one class for everything. At 0.2 the same VNNI machine agrees on 0.91-1.0 (max diff 0.17). Negating a
# head (test_perturbed_weights_fail_parity) falls far below 0.6. TOLERANCES are set from a trained MiniLM (see
# exporters/parity.py).
TINY_TOLERANCES = TOLERANCES | {"int8": Tolerance(max_abs=0.5, min_agreement=0.6)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_datasets(root / "datasets")
    write_trained(root / "trained", root / "datasets")
    card = export(root / "trained", root / "out", root / "datasets", parity_limit=32, tolerances=TINY_TOLERANCES)
    return SimpleNamespace(root=root, out=root / "out", card=card)


def test_shipped_files_and_card(exported):
    out, card = exported.out, exported.card
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md", "model.fp16.onnx", "model.int8.onnx", "model.json", "tokenizer.json"
    ]
    assert json.loads((out / "model.json").read_text()) == card
    assert verify(out) == card
    assert card["format"] == 1 and card["version"] is None and card["architecture"] == "bert"
    assert card["outputs"] == [f"{t.name}_logits" for t in TASKS]
    assert set(card["files"]) == {"model.int8.onnx", "model.fp16.onnx", "tokenizer.json"}
    markdown = (out / "MODEL_CARD.md").read_text()
    assert card["files"]["model.int8.onnx"]["sha256"] in markdown
    assert all(t.name in markdown for t in TASKS)


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_dynamic_batch_and_sequence(exported, variant):
    session = ort.InferenceSession(str(exported.out / f"model.{variant}.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)"), ("attention_mask", "tensor(int64)")
    ]
    for batch, sequence in [(1, 1), (3, 17), (8, 128)]:
        ids = np.random.default_rng(batch).integers(0, 30522, (batch, sequence), dtype=np.int64)
        outputs = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert [o.shape for o in outputs] == [(batch, len(t.labels)) for t in TASKS]
        assert all(o.dtype == np.float32 for o in outputs)


def test_int8_results_do_not_depend_on_batch_company(exported):
    """int8 activations are scaled per token (`quantize_rows`), so a text padded among longer and shorter ones
    scores as it does alone; onnxruntime's per-tensor scales moved it with its company."""
    session = ort.InferenceSession(str(exported.out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    lengths = [5, 30, 9, 17]
    ids, mask = np.zeros((len(lengths), max(lengths)), np.int64), np.zeros((len(lengths), max(lengths)), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n], mask[row, :n] = rng.integers(1000, 30000, n), 1
    together = session.run(None, {"input_ids": ids, "attention_mask": mask})
    for row, n in enumerate(lengths):
        alone = session.run(None, {"input_ids": ids[row:row + 1, :n], "attention_mask": mask[row:row + 1, :n]})
        for head_together, head_alone in zip(together, alone):
            np.testing.assert_allclose(head_together[row], head_alone[0], atol=1e-5)


def test_row_quantization_refuses_a_graph_it_does_not_know():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dq"),
         helper.make_node("Identity", ["q"], ["y"])],
        "g", [x], [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 4])],
    )
    with pytest.raises(ValueError, match=r"dq: per-row quantization cannot feed \['Identity'\]"):
        quantize_rows(graph)


def test_parity_recorded_within_tolerances(exported):
    parity = exported.card["parity"]
    assert parity["texts"] == 32 * len(TASKS)
    assert parity["max_length"] == exported.card["max_length"] == TRAINED_LENGTH
    for name, result in parity["variants"].items():
        if result["status"] == "skipped":  # fp16 where onnxruntime cannot run it: said so, with the reason
            assert name == "fp16" and result["reason"]
            continue
        assert result["status"] == "passed"
        assert result["max_abs_diff"] <= TINY_TOLERANCES[name].max_abs
        assert min(result["agreement"].values()) >= TINY_TOLERANCES[name].min_agreement
        assert parity["tolerances"][name] == asdict(TINY_TOLERANCES[name])


def _parity(exported, variants, tolerances=TINY_TOLERANCES, **kwargs):
    model, tokenizer, tasks = load_trained(exported.root / "trained")
    samples = {t.name: load_split(exported.root / "datasets", t, "validation", 16) for t in tasks}
    return check_parity(model, tokenizer, tasks, samples, variants, 128, tolerances, **kwargs)


def test_perturbed_weights_fail_parity(exported, tmp_path):
    graph = onnx.load(exported.out / "model.int8.onnx")
    head = next(w for w in graph.graph.initializer if "sentiment" in w.name and len(w.dims) == 2)
    head.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(head), head.name))
    onnx.save(graph, tmp_path / "broken.onnx")
    with pytest.raises(ParityError, match="int8: .*sentiment label agreement") as error:
        _parity(exported, {"int8": (tmp_path / "broken.onnx", "cpu")})
    assert error.value.report["variants"]["int8"]["status"] == "failed"


def test_impossible_tolerance_fails_with_numbers(exported):
    with pytest.raises(ParityError, match=r"int8: max abs logit diff [0-9.e-]+ > 0\.0") as error:
        _parity(exported, {"int8": (exported.out / "model.int8.onnx", "cpu")}, tolerances={"int8": Tolerance(0.0, 1.0)})
    assert error.value.report["variants"]["int8"]["max_abs_diff"] > 0


def test_unloadable_variant_is_skipped_only_when_optional(exported, tmp_path):
    (tmp_path / "model.fp16.onnx").write_bytes(b"not a model")
    variants = {"fp16": (tmp_path / "model.fp16.onnx", "cuda")}
    report = _parity(exported, variants, optional=("fp16",))
    assert report["variants"]["fp16"]["status"] == "skipped"
    assert "cannot load" in report["variants"]["fp16"]["reason"]
    with pytest.raises(ParityError, match="fp16: onnxruntime cannot load it"):
        _parity(exported, variants)


def test_unsupported_architecture():
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'.*supported: \\['bert'\\]"):
        export_config_for(SimpleNamespace(model_type="gpt2"), ["sentiment"])


def test_recover_reads_back_the_trained_weights(exported, tmp_path):
    summary = recover(exported.out, tmp_path / "recovered", exported.root / "datasets", parity_limit=16)
    original = load_file(exported.root / "trained" / "model.safetensors")
    recovered = load_file(tmp_path / "recovered" / "model.safetensors")
    assert set(recovered) == set(original)
    for name, weight in original.items():
        if name.startswith("encoder.pooler."):  # not in the graph: the heads read mean-pooled tokens
            assert not recovered[name].any()
            continue
        assert torch.allclose(recovered[name], weight, atol=1e-3, rtol=1e-3), name  # fp16 rounding only
    assert summary["recovered_from"]["sha256"] == exported.card["files"]["model.fp16.onnx"]["sha256"]
    assert summary["recovered_from"]["parity"]["status"] == "passed"
    model, _, tasks = load_trained(tmp_path / "recovered")
    assert [t.name for t in tasks] == [t.name for t in TASKS]
    assert (model.encoder.config.hidden_size, model.encoder.config.num_hidden_layers) == (32, 2)


def test_recover_needs_the_optimized_layout(exported, tmp_path):
    model, _, _ = load_trained(exported.root / "trained")
    to_onnx(model, export_config_for(model.encoder.config, model.task_names), tmp_path / "raw.onnx")
    with pytest.raises(UnrecoverableGraphError, match="expected the fused BERT layout"):
        read_weights(tmp_path / "raw.onnx", model.task_names)


def test_soup_averages_weights_and_scores_the_result(exported, tmp_path):
    first = exported.root / "trained"
    second = tmp_path / "second"
    shutil.copytree(first, second)
    noisy = {k: v + torch.randn_like(v) * 0.05 for k, v in load_file(first / "model.safetensors").items()}
    save_file(noisy, second / "model.safetensors")
    meta = json.loads((second / "training.json").read_text())
    meta["config"]["max_length"] = TRAINED_LENGTH + 16
    (second / "training.json").write_text(json.dumps(meta))

    summary = soup([first, second], tmp_path / "soup", exported.root / "datasets", weights=[1, 3])
    averaged = load_file(tmp_path / "soup" / "model.safetensors")
    for name, weight in load_file(first / "model.safetensors").items():
        assert torch.allclose(averaged[name], 0.25 * weight + 0.75 * noisy[name], atol=1e-6), name
    assert [part["weight"] for part in summary["soup"]] == [0.25, 0.75]
    model, tokenizer, tasks = load_trained(tmp_path / "soup")
    splits = {t.name: load_split(exported.root / "datasets", t, "test", emoji=summary["config"]["emoji"]) for t in tasks}
    # scored, and served, at the longest length an ingredient was trained at
    assert summary["config"]["max_length"] == TRAINED_LENGTH + 16
    assert summary["test"] == evaluate(model, tokenizer, splits, tasks, TRAINED_LENGTH + 16, "cpu")

    card = export(tmp_path / "soup", tmp_path / "out", exported.root / "datasets", parity_limit=16,
                  tolerances=TINY_TOLERANCES)
    assert card["max_length"] == TRAINED_LENGTH + 16
    assert card["training"]["soup"] == summary["soup"]
    assert "Weight average (`models soup`) of these models" in (tmp_path / "out" / "MODEL_CARD.md").read_text()


def test_card_names_what_a_continued_model_started_from(exported, tmp_path):
    first = exported.root / "trained"
    soup([first, first], tmp_path / "soup", exported.root / "datasets")
    continued = tmp_path / "continued"  # what `train --init-from soup` leaves, its weights aside
    shutil.copytree(first, continued)
    meta = json.loads((continued / "training.json").read_text())
    (continued / "training.json").write_text(json.dumps(meta | {"init": lineage(tmp_path / "soup")}))

    card = export(continued, tmp_path / "out", exported.root / "datasets", parity_limit=16, tolerances=TINY_TOLERANCES)
    init = card["training"]["init"]
    assert init["from"] == f"soup of {first} + {first}"
    assert [part["weight"] for part in init["soup"]] == [0.5, 0.5]
    markdown = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert f"Continued (`train --init-from`, or `init_from` of models/zh_train.py) from soup of {first} + {first}: " \
           "validation score" in markdown
    assert "Weight average (`models soup`) of these models" in markdown

    soup([continued, first], tmp_path / "soup-2", exported.root / "datasets")
    export(tmp_path / "soup-2", tmp_path / "out-2", exported.root / "datasets", parity_limit=16,
           tolerances=TINY_TOLERANCES)
    assert f"| {continued} (continued from soup of {first} + {first}) | 0.5 |" in (
        tmp_path / "out-2" / "MODEL_CARD.md").read_text()


def test_greedy_soup_keeps_only_what_raises_validation(exported, tmp_path, monkeypatch):
    # Scored by closeness to the original weights: two near-mirrored perturbations average back close to them,
    # a large perturbation only pulls the average away.
    first = exported.root / "trained"
    target = load_file(first / "model.safetensors")
    noise = {k: torch.randn_like(v) * 0.05 for k, v in target.items()}
    # multiples of the noise; "near" comes first: averages are loaded into the first model, and its weights must
    # stay its own while others are scored (they once did not, and the search scored mixes of what it had loaded)
    ingredients = {"near": 0.1, "far": 1.0, "mirror": -0.12}
    for name, scale in ingredients.items():
        shutil.copytree(first, tmp_path / name)
        save_file({k: v + scale * noise[k] for k, v in target.items()}, tmp_path / name / "model.safetensors")

    def closeness(model, *_):
        return {"score": -sum(float((v - target[k]).abs().sum()) for k, v in model.state_dict().items())}

    monkeypatch.setattr("streamsense.models.soup.evaluate", closeness)
    summary = greedy_soup([tmp_path / name for name in ingredients], tmp_path / "soup", exported.root / "datasets")
    search = summary["soup_search"]
    assert [t["from"] for t in search] == [str(tmp_path / name) for name in ("near", "mirror", "far")]
    assert [t["kept"] for t in search] == [True, True, False]
    assert search[1]["soup"] == summary["validation"]["score"] > search[0]["alone"]
    assert [part["from"] for part in summary["soup"]] == [str(tmp_path / "near"), str(tmp_path / "mirror")]
    averaged = load_file(tmp_path / "soup" / "model.safetensors")
    assert all(torch.allclose(averaged[k], v - 0.01 * noise[k], atol=1e-6) for k, v in target.items())

    with pytest.raises(NoBetterSoupError, match="no average beats .*near alone"):
        greedy_soup([tmp_path / "far", tmp_path / "near"], tmp_path / "none", exported.root / "datasets")


def test_soup_rejects_mismatched_models(exported, tmp_path):
    first = exported.root / "trained"
    with pytest.raises(ValueError, match="one non-negative weight per directory"):
        soup([first, first], tmp_path / "soup", exported.root / "datasets", weights=[1.0])
    other = tmp_path / "other"
    shutil.copytree(first, other)
    meta = json.loads((other / "training.json").read_text())
    meta["config"]["tasks"] = ["complaint", "hate", "offensive", "sentiment"]
    (other / "training.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="same tasks and architecture"):
        soup([first, other], tmp_path / "soup", exported.root / "datasets")


# --- a Chinese model: [CLS] pooling, two-class sentiment read from two datasets, card languages zh -------------------

ZH_WORDS = ["外卖", "太慢", "了", "好吃", "差评", "客服", "退款", "味道", "不错", "！", "😡", "的", "我", "下次", "还", "点"]
ZH_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "shipped" / "streamsense-bge-zh" / "1" / "tokenizer.json"


def write_zh_trained(root: Path) -> tuple[Path, Path]:
    """Chinese splits of random words and a tiny random BERT under the Chinese tasks, as models/zh_train.py leaves it."""
    from streamsense.models.tasks import ZH_TASKS, task_entry

    datasets, out = root / "datasets", root / "trained"
    rng = random.Random(1)
    for views in ZH_TASKS.values():
        for task in views:
            (datasets / task.dataset).mkdir(parents=True)
            rows = [{"text": "".join(rng.choices(ZH_WORDS, k=rng.randint(1, 60))), "label": rng.choice(task.labels)}
                    for _ in range(30)]
            for split in ("validation", "test"):
                (datasets / task.dataset / f"{split}.jsonl").write_text(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, initializer_range=0.2)
    tasks = [views[0] for views in ZH_TASKS.values()]
    model = MultiTaskModel(BertModel(config, add_pooling_layer=False), tasks, "cls").eval()
    out.mkdir()
    save_file(model.state_dict(), out / "model.safetensors")
    config.save_pretrained(out)
    shutil.copy2(ZH_TOKENIZER, out / "tokenizer.json")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    validation = {}
    for name, views in ZH_TASKS.items():
        for view in views:
            validation[f"{name}/{view.dataset}"] = evaluate(model, tokenizer, {name: load_split(datasets, view,
                                                            "validation")}, [view], 64, "cpu")[name]
    summary = {"base_model": "tiny-random-bert-zh", "pooling": "cls", "languages": ["zh"],
               "tasks": [task_entry(views) for views in ZH_TASKS.values()],
               "config": {"tasks": list(ZH_TASKS), "max_length": 64}, "device": "cpu", "steps": 0, "minutes": 0.0,
               "train_examples": {}, "validation": validation | {"score": 0.5}}
    (out / "training.json").write_text(json.dumps(summary, ensure_ascii=False))
    return datasets, out


def test_a_chinese_model_exports_with_cls_pooling_and_its_datasets(tmp_path):
    from streamsense.models.evaluate import evaluate as evaluate_test
    from streamsense.models.runtime import ModelRuntime

    datasets, trained = write_zh_trained(tmp_path)
    card = export(trained, tmp_path / "out", datasets, parity_limit=16, tolerances=TINY_TOLERANCES)
    assert (card["languages"], card["pooling"]) == (["zh"], "cls")
    assert [(t["name"], t["labels"], t["datasets"]) for t in card["tasks"]] == [
        ("sentiment", ["negative", "positive"], ["waimai_10k", "online_shopping_10_cats"]),
        ("offensive", ["not_offensive", "offensive"], ["cold"])]
    assert all(v["status"] == "passed" for k, v in card["parity"]["variants"].items() if k != "fp16")
    markdown = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "Languages: zh" in markdown and "never says neutral" in markdown and "online_shopping_10_cats" in markdown

    # the graph pools [CLS]: its logits are the heads applied to the first token, not to the mean of the tokens
    model, _, _ = load_trained(trained)
    assert model.pooling == "cls"
    runtime = ModelRuntime(tmp_path / "out", "cpu", variant="fp16")
    texts = ["外卖太慢了差评", "味道不错下次还点！"]
    probs = runtime.infer(runtime.tokenize(texts))
    assert probs["sentiment"].shape == (2, 2)
    ids = torch.tensor([runtime.tokenize([t]).ids[0] for t in texts[:1]])
    with torch.no_grad():
        hidden = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        cls = torch.softmax(model.heads["sentiment"](hidden[:, 0]), -1).numpy()
        mean = torch.softmax(model.heads["sentiment"](hidden.mean(1)), -1).numpy()
    np.testing.assert_allclose(probs["sentiment"][:1], cls, atol=2e-3)
    assert np.abs(cls - mean).max() > 1e-2  # the two poolings differ on this model, so the check above means something

    # models eval: one report per dataset of a task read from several
    report = evaluate_test(tmp_path / "out", datasets, limit=10)
    assert {"sentiment/waimai_10k", "sentiment/online_shopping_10_cats", "offensive"} <= set(report)
    assert report["sentiment/waimai_10k"]["n"] == 10


def test_chinese_training_writes_what_export_reads_and_continues_from_a_checkpoint(tmp_path):
    """models/zh_train.py on a tiny encoder: a stage's directory carries its tasks, pooling and languages (what
    load_trained and export read), each dataset is its own weighted stream, and `init_from` starts from a stage's
    weights exactly (0 steps: the kept weights are the loaded ones)."""
    from streamsense.models.tasks import ZH_TASKS
    from streamsense.models.zh_train import ZhTrainConfig, train_zh

    datasets, _ = write_zh_trained(tmp_path)
    for views in ZH_TASKS.values():
        for task in views:  # the training split too
            shutil.copy2(datasets / task.dataset / "validation.jsonl", datasets / task.dataset / "train.jsonl")
    base = tmp_path / "base"
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(base)
    logged = []
    common = dict(base_dir=str(base), tokenizer=str(ZH_TOKENIZER), datasets_dir=str(datasets), max_length=32,
                  batch_size=4, eval_every=3, eval_sample=8, warmup_steps=1, max_minutes=5)
    first = train_zh(ZhTrainConfig(output_dir=str(tmp_path / "s1"), max_steps=6,
                                   dataset_weights={"waimai_10k": 3.0}, class_weighted=("offensive",), **common),
                     log=logged.append)
    sampling = json.loads(logged[0])["sampling"]
    assert list(sampling) == ["sentiment/waimai_10k", "sentiment/online_shopping_10_cats", "offensive/cold"]
    assert sampling["sentiment/waimai_10k"] == pytest.approx(3 * sampling["sentiment/online_shopping_10_cats"],
                                                             abs=0.002)  # same sizes here, weight 3
    assert (first["pooling"], first["languages"]) == ("cls", ["zh"])
    model, _, tasks = load_trained(tmp_path / "s1")
    assert model.pooling == "cls" and [(t.name, t.labels) for t in tasks] == [
        ("sentiment", ("negative", "positive")), ("offensive", ("not_offensive", "offensive"))]

    second = train_zh(ZhTrainConfig(output_dir=str(tmp_path / "s2"), max_steps=0, init_from=str(tmp_path / "s1"),
                                    **common), log=lambda _: None)
    assert second["init"]["from"] == str(tmp_path / "s1") and second["init"]["steps"] == 6
    before, after = load_file(tmp_path / "s1" / "model.safetensors"), load_file(tmp_path / "s2" / "model.safetensors")
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
