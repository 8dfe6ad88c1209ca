"""train() for a few steps from the shipped base encoder on generated data: what it saves and what it records."""

import json
import random

from models.data import load_split
from models.tasks import TASKS_BY_NAME
from models.train import TrainConfig, base_model_path, evaluate, load_trained, train

WORDS = ["late", "refund", "great", "never", "again", "thanks", "broken", "love", "waiting", "@user", "😡", "ok"]


def write_splits(root, task, sizes):
    rng = random.Random(1)
    folder = root / task.dataset
    folder.mkdir(parents=True)
    for split, n in sizes.items():
        rows = [{"text": " ".join(rng.choices(WORDS, k=rng.randint(2, 30))), "label": rng.choice(task.labels)}
                for _ in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_train_keeps_the_best_validation_weights_and_records_their_test_metrics(tmp_path):
    task = TASKS_BY_NAME["complaint"]
    datasets, out = tmp_path / "datasets", tmp_path / "out"
    write_splits(datasets, task, {"train": 64, "validation": 24, "test": 30})
    summary = train(TrainConfig(base_model=base_model_path(), datasets_dir=str(datasets), output_dir=str(out),
                                tasks=("complaint",), max_steps=6, batch_size=8, eval_every=2, device="cpu"))

    assert [h["step"] for h in summary["history"]] == [2, 4, 6]
    assert summary["validation"]["score"] == max(h["score"] for h in summary["history"])
    model, tokenizer, tasks = load_trained(out)
    splits = {"complaint": load_split(datasets, task, "test")}
    assert summary["test"] == evaluate(model, tokenizer, splits, tasks, 64, "cpu")
    assert summary["test"]["complaint"]["n"] == 30
    assert json.loads((out / "training.json").read_text())["test"] == summary["test"]
