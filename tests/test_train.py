"""train() for a few steps from the shipped base encoder on generated data: what it saves and what it records."""

import json
import random
from types import SimpleNamespace

import pytest
import torch
import typer
from safetensors.torch import load_file

from streamsense.cli import _task_weights
from streamsense.models.data import load_split
from streamsense.models.tasks import TASKS_BY_NAME
from streamsense.models.network import base_model_path, evaluate, load_trained
from streamsense.models.train import TrainConfig, task_probabilities, train

WORDS = ["late", "refund", "great", "never", "again", "thanks", "broken", "love", "waiting", "@user", "😡", "ok"]


def write_splits(root, task, sizes):
    rng = random.Random(1)
    folder = root / task.dataset
    folder.mkdir(parents=True)
    for split, n in sizes.items():
        rows = [{"text": " ".join(rng.choices(WORDS, k=rng.randint(2, 30))), "label": rng.choice(task.labels)}
                for _ in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    datasets, out = root / "datasets", root / "out"
    write_splits(datasets, TASKS_BY_NAME["complaint"], {"train": 64, "validation": 24, "test": 30})
    summary = train(TrainConfig(base_model=base_model_path(), datasets_dir=str(datasets), output_dir=str(out),
                                tasks=("complaint",), max_steps=6, batch_size=8, eval_every=2, device="cpu"))
    return SimpleNamespace(datasets=datasets, out=out, summary=summary)


def test_train_keeps_the_best_validation_weights_and_records_their_test_metrics(trained):
    summary, out = trained.summary, trained.out
    assert [h["step"] for h in summary["history"]] == [2, 4, 6]
    assert summary["validation"]["score"] == max(h["score"] for h in summary["history"])
    model, tokenizer, tasks = load_trained(out)
    assert summary["config"]["emoji"] == "names"  # the default: emoji read as their names, in training and test alike
    splits = {"complaint": load_split(trained.datasets, TASKS_BY_NAME["complaint"], "test", emoji="names")}
    assert summary["test"] == evaluate(model, tokenizer, splits, tasks, 64, "cpu")
    assert summary["test"]["complaint"]["n"] == 30
    assert json.loads((out / "training.json").read_text())["test"] == summary["test"]
    assert "init" not in summary


def test_init_from_starts_from_the_trained_weights_and_records_them(trained, tmp_path):
    # Learning rates of zero leave the weights where they started: those of the directory continued from.
    summary = train(TrainConfig(base_model=base_model_path(), datasets_dir=str(trained.datasets),
                                output_dir=str(tmp_path / "next"), tasks=("complaint",), max_steps=2, batch_size=8,
                                eval_every=2, lr=0.0, head_lr=0.0, device="cpu", init_from=str(trained.out)))
    started, kept = load_file(trained.out / "model.safetensors"), load_file(tmp_path / "next" / "model.safetensors")
    assert set(kept) == set(started)
    assert all(torch.equal(kept[name], started[name]) for name in started)
    assert summary["init"] == {"from": str(trained.out), "device": "cpu", "minutes": trained.summary["minutes"],
                               "steps": 6, "validation_score": trained.summary["validation"]["score"],
                               "config": json.loads((trained.out / "training.json").read_text())["config"]}


def test_task_weights_scale_a_tasks_share_of_the_steps():
    sizes = {"sentiment": 400, "offensive": 100, "complaint": 25}
    assert task_probabilities(sizes, 0.5, {}) == pytest.approx([20 / 35, 10 / 35, 5 / 35])
    assert task_probabilities(sizes, 0.5, {"offensive": 3.0}) == pytest.approx([20 / 55, 30 / 55, 5 / 55])
    with pytest.raises(ValueError, match="not being trained: hate"):
        task_probabilities(sizes, 0.5, {"hate": 2.0})


def test_task_weights_option_reads_task_equals_weight():
    assert _task_weights("") == {}
    assert _task_weights("offensive=3, hate=1.5") == {"offensive": 3.0, "hate": 1.5}
    for bad in ("offensive", "offensive=0", "offensive=x", "offensive=-1"):
        with pytest.raises(typer.BadParameter, match="task=weight"):
            _task_weights(bad)


def test_missing_datasets_are_named_before_any_training(tmp_path):
    """Every set the tasks need is checked first: the error names each missing one with its source, and no output
    folder is made."""
    from streamsense.errors import explain
    from streamsense.models.data import DatasetsMissingError

    write_splits(tmp_path / "datasets", TASKS_BY_NAME["complaint"], {"train": 4, "validation": 4})  # no test split
    with pytest.raises(DatasetsMissingError) as missing:
        train(TrainConfig(base_model=base_model_path(), datasets_dir=str(tmp_path / "datasets"),
                          output_dir=str(tmp_path / "out"), tasks=("sentiment", "complaint"), device="cpu"))
    assert missing.value.missing == {"tweeteval_sentiment": ["train", "validation", "test"],
                                     "complaints_twitter": ["test"]}
    assert not (tmp_path / "out").exists()
    failure = explain(missing.value)
    assert failure.code == 2 and "tweeteval_sentiment (TweetEval: github.com/cardiffnlp/tweeteval" in failure.what
    assert "complaints_twitter (Twitter complaints: github.com/danielpreotiuc/complaints-social-media)" in failure.what
