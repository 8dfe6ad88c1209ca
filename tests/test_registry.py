import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamsense.models.registry import (
    ModelIntegrityError,
    ModelNotFoundError,
    file_entries,
    list_models,
    publish,
    resolve,
    verify,
    write_card,
)

NAME = "streamsense-minilm"


@pytest.fixture
def exported(tmp_path) -> Path:
    """An export as `streamsense export` lays it out, with stand-in file contents."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.int8.onnx").write_bytes(bytes(range(256)) * 4)
    (out / "tokenizer.json").write_text('{"model": {}}')
    variants = {"int8": {"file": "model.int8.onnx", "device": "cpu"}}
    metrics = {"macro_recall": 0.7, "macro_f1": 0.69, "accuracy": 0.71, "n": 100}
    write_card(out, {
        "format": 1, "name": "export", "version": None, "base_model": "all-MiniLM-L6-v2", "architecture": "bert",
        "max_length": 128,
        "tasks": [{"name": "sentiment", "labels": ["negative", "neutral", "positive"], "metric": "macro_recall",
                   "positive": None, "dataset": "tweeteval_sentiment"}],
        "inputs": ["input_ids", "attention_mask"], "outputs": ["sentiment_logits"], "variants": variants,
        "files": file_entries(out, ["model.int8.onnx", "tokenizer.json"]),
        "parity": {"texts": 100, "variants": {"int8": {"status": "passed", "provider": "CPUExecutionProvider",
                                                       "max_abs_diff": 0.01, "agreement": {"sentiment": 0.99}}}},
        "metrics": {"validation": {"sentiment": metrics, "score": 0.7}},
        "training": {"device": "cpu", "minutes": 1.0, "steps": 10, "train_examples": {"sentiment": 64}, "config": {}},
        "tools": {"onnxruntime": "1.32.0"}, "created_at": "2026-01-01T00:00:00+00:00",
    })
    return out


@pytest.fixture
def registry(tmp_path, exported) -> Path:
    root = tmp_path / "registry"
    publish(exported, root, NAME)
    publish(exported, root, NAME)
    return root


def test_publish_numbers_versions_and_records_them(registry):
    assert sorted(p.name for p in (registry / NAME).iterdir()) == ["1", "2"]
    card = verify(registry / NAME / "2")
    assert (card["name"], card["version"]) == (NAME, 2)
    assert (registry / NAME / "2" / "MODEL_CARD.md").read_text().startswith(f"# {NAME} v2")


def test_list_models(registry, exported):
    publish(exported, registry, "another")
    models = list_models(registry)
    assert [(m.name, m.version) for m in models] == [("another", 1), (NAME, 1), (NAME, 2)]
    assert models[2].path == registry / NAME / "2" and models[2].card["version"] == 2
    assert list_models(registry / "missing") == []


def test_resolve(registry, exported):
    (registry / NAME / "notes").mkdir()
    (registry / NAME / "01").mkdir()
    assert resolve(registry, NAME) == registry / NAME / "2"
    assert resolve(registry, f"{NAME}:latest") == registry / NAME / "2"
    assert resolve(registry, f"{NAME}:1") == registry / NAME / "1"
    assert resolve(registry, str(exported)) == exported


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("unknown", r"no model named 'unknown' in .*; available: \['streamsense-minilm'\]"),
        (f"{NAME}:7", r"has no version '7' .*versions: \[1, 2\]"),
        (f"{NAME}:new", r"has no version or alias 'new' .*versions: \[1, 2\], aliases: none"),
        ("/no/such/dir", "neither a model directory"),
    ],
)
def test_resolve_errors(registry, ref, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve(registry, ref)


def test_altered_file_is_named(registry):
    model = registry / NAME / "1"
    data = bytearray((model / "model.int8.onnx").read_bytes())
    data[100] ^= 1
    (model / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"{model}: model.int8.onnx has been altered.*re-export"):
        verify(model)
    verify(registry / NAME / "2")


def test_missing_file_is_named(registry):
    model = registry / NAME / "2"
    (model / "tokenizer.json").unlink()
    with pytest.raises(ModelIntegrityError, match=f"{model}: tokenizer.json is missing"):
        verify(model)


def test_publish_skips_an_interrupted_version(registry, exported):
    (registry / NAME / "3").mkdir()  # left by a publish that died before writing model.json
    assert resolve(registry, NAME) == registry / NAME / "2"
    assert publish(exported, registry, NAME) == registry / NAME / "4"
    assert resolve(registry, NAME) == registry / NAME / "4"


def test_card_edits_keep_files_valid(registry):
    model = registry / NAME / "1"
    card = json.loads((model / "model.json").read_text())
    write_card(model, card | {"name": "renamed"})
    assert verify(model)["name"] == "renamed"


def test_not_a_model_and_bad_format(tmp_path, exported):
    with pytest.raises(ModelIntegrityError, match="no model.json"):
        verify(tmp_path)
    card = json.loads((exported / "model.json").read_text())
    (exported / "model.json").write_text(json.dumps(card | {"format": 2}))
    with pytest.raises(ModelIntegrityError, match="format 2 is not 1"):
        verify(exported)


def test_publish_refuses_a_damaged_export_and_bad_names(tmp_path, exported):
    with pytest.raises(ValueError, match="model name"):
        publish(exported, tmp_path / "registry", "../escape")
    (exported / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="tokenizer.json has been altered"):
        publish(exported, tmp_path / "registry", NAME)
    assert not (tmp_path / "registry").exists()


def test_registry_imports_no_ml_frameworks():
    code = ("import sys, streamsense.models.registry; "
            "print([m for m in ('torch', 'transformers', 'onnx') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "[]"
