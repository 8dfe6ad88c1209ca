"""Multi-task fine-tuning: one shared encoder, one linear head per task (needs the `train` extra)."""

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from streamsense.models.data import Example, load_split, require_datasets
from streamsense.models.network import BASE_MODEL_NAME, base_model_path, build_model, evaluate, lineage, save_trained
from streamsense.models.tasks import TASKS


@dataclass
class TrainConfig:
    base_model: str
    datasets_dir: str
    output_dir: str
    tasks: tuple[str, ...] = tuple(t.name for t in TASKS)
    epochs: float = 3.0
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128  # the serving length: export takes it from here
    emoji: str = "names"  # models/text.py EMOJI_MODES; export writes it to the card, so serving reads text alike
    train_limit: int | None = None
    val_limit: int | None = None
    eval_every: int = 500
    patience: int = 4
    task_sampling_alpha: float = 0.5
    task_weights: dict[str, float] = field(default_factory=dict)  # multiplies a task's sampling share
    freeze_embeddings: bool = True
    seed: int = 13
    device: str = "auto"
    init_from: str | None = None  # a trained directory to continue from (same tasks)


def task_probabilities(sizes: dict[str, int], alpha: float, weights: dict[str, float]) -> np.ndarray:
    """Chance of drawing each task per step: train size**alpha times its weight (default 1), normalised."""
    unknown = set(weights) - set(sizes)
    if unknown:
        raise ValueError(f"task weights for tasks not being trained: {', '.join(sorted(unknown))}")
    raw = np.array([n**alpha * weights.get(name, 1.0) for name, n in sizes.items()], dtype=np.float64)
    return raw / raw.sum()


def _batches(examples: list[Example], batch_size: int, rng: random.Random):
    """Endless length-bucketed batches: shuffle, sort chunks of 50 batches by length, shuffle batches."""
    while True:
        order = examples[:]
        rng.shuffle(order)
        chunk = batch_size * 50
        batches = []
        for i in range(0, len(order), chunk):
            part = sorted(order[i : i + chunk], key=lambda e: len(e.text))
            batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        yield from batches


def _class_weights(examples: list[Example], n_classes: int) -> torch.Tensor:
    counts = np.bincount([e.label for e in examples], minlength=n_classes).astype(np.float64)
    weights = counts.sum() / (n_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def train(cfg: TrainConfig) -> dict:
    from transformers import AutoTokenizer

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    tasks = [next(t for t in TASKS if t.name == n) for n in cfg.tasks]
    data_dir = Path(cfg.datasets_dir)
    require_datasets(data_dir, [t.dataset for t in tasks], ("train", "validation", "test"))
    train_sets = {t.name: load_split(data_dir, t, "train", cfg.train_limit, cfg.seed, cfg.emoji) for t in tasks}
    val_sets = {t.name: load_split(data_dir, t, "validation", cfg.val_limit, cfg.seed, cfg.emoji) for t in tasks}

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    model = build_model(cfg.base_model, tasks)
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(Path(cfg.init_from) / "model.safetensors"))
    model = model.to(device)
    if cfg.freeze_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": cfg.lr}, {"params": model.heads.parameters(), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    sizes = {t.name: len(train_sets[t.name]) for t in tasks}
    probs = task_probabilities(sizes, cfg.task_sampling_alpha, cfg.task_weights)
    steps_per_epoch = math.ceil(sum(sizes.values()) / cfg.batch_size)
    total = cfg.max_steps or int(cfg.epochs * steps_per_epoch)
    warmup = max(1, int(cfg.warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    rng = random.Random(cfg.seed)
    streams = {t.name: _batches(train_sets[t.name], cfg.batch_size, rng) for t in tasks}
    weights = {t.name: _class_weights(train_sets[t.name], len(t.labels)).to(device) for t in tasks}

    start = time.monotonic()
    best, best_state, history, stale = -1.0, None, [], 0
    bar = tqdm(range(total), desc="train", unit="step")
    for step in bar:
        model.train()
        k = int(np.searchsorted(np.cumsum(probs), rng.random()))
        task = tasks[min(k, len(tasks) - 1)]
        batch = next(streams[task.name])
        enc = tokenizer([e.text for e in batch], padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        labels = torch.tensor([e.label for e in batch], device=device)
        logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))[model.task_names.index(task.name)]
        loss = nn.functional.cross_entropy(logits, labels, weight=weights[task.name])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        bar.set_postfix(task=task.name, loss=f"{loss.item():.3f}")
        out_of_time = cfg.max_minutes is not None and time.monotonic() - start > cfg.max_minutes * 60
        last = step == total - 1 or out_of_time
        if (step + 1) % cfg.eval_every == 0 or last:
            metrics = evaluate(model, tokenizer, val_sets, tasks, cfg.max_length, device)
            metrics["step"] = step + 1
            metrics["minutes"] = round((time.monotonic() - start) / 60, 2)
            history.append(metrics)
            tqdm.write(json.dumps(metrics))
            if metrics["score"] > best:
                best, stale = metrics["score"], 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            if stale >= cfg.patience or out_of_time:
                break
    bar.close()
    # Test metrics of the kept weights, for the record only: selection used validation alone.
    model.load_state_dict(best_state)
    test_sets = {t.name: load_split(data_dir, t, "test", emoji=cfg.emoji) for t in tasks}
    test_metrics = evaluate(model, tokenizer, test_sets, tasks, cfg.max_length, device)

    best_metrics = max(history, key=lambda m: m["score"])
    summary = {
        "base_model": BASE_MODEL_NAME if cfg.base_model == base_model_path() else cfg.base_model,
        "config": asdict(cfg),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "train_examples": {t.name: len(train_sets[t.name]) for t in tasks},
        "steps": history[-1]["step"],
        "minutes": history[-1]["minutes"],
        "validation": best_metrics,
        "test": test_metrics,
        "history": history,
    }
    if cfg.init_from:
        summary["init"] = lineage(Path(cfg.init_from))
    save_trained(Path(cfg.output_dir), model, tokenizer, summary)
    return summary
