"""Weight averaging ("model soup", Wortsman et al. 2022) of models fine-tuned from the same base encoder.

Models fine-tuned from one pre-trained encoder usually stay in one basin of the loss, so the average of
their weights is itself a good model, often better than each, at the cost of one model at run time.
"""

import json
import time
from pathlib import Path

import torch

from streamsense.models.data import load_split
from streamsense.models.network import MultiTaskModel, evaluate, lineage, load_trained, save_trained


class NoBetterSoupError(ValueError):
    """No average of the ingredients scores higher on validation than the best ingredient alone."""


def _load(trained_dirs: list[Path]) -> tuple[MultiTaskModel, object, list, list[dict]]:
    """The first model (to load averages into), its tokenizer and tasks, and every directory's weights."""
    loaded = [load_trained(d) for d in trained_dirs]
    model, tokenizer, tasks = loaded[0]
    # copies: the first state_dict shares its tensors with `model`, which every average is loaded into
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m, _, _ in loaded]
    shapes = {k: v.shape for k, v in states[0].items()}
    for d, (_, _, other_tasks), state in zip(trained_dirs[1:], loaded[1:], states[1:]):
        if other_tasks != tasks or {k: v.shape for k, v in state.items()} != shapes:
            raise ValueError(f"{d} does not match {trained_dirs[0]}: a soup needs the same tasks and architecture")
    return model, tokenizer, tasks, states


def _max_length(metas: list[dict]) -> int:
    """A soup is scored and served at the longest input any of its ingredients was trained on."""
    return max(m["config"]["max_length"] for m in metas)


def _emoji(metas: list[dict]) -> str:
    """How the ingredients read emoji (models/text.py); an average of models that read text differently reads it
    neither way, so they must agree."""
    modes = {m["config"].get("emoji", "keep") for m in metas}
    if len(modes) > 1:
        raise ValueError(f"these models prepare text differently (emoji: {', '.join(sorted(modes))}): no soup")
    return modes.pop()


def _average(model: MultiTaskModel, states: list[dict], weights: list[float]) -> None:
    with torch.no_grad():
        model.load_state_dict({k: sum(w * s[k].float() for w, s in zip(weights, states)) for k in states[0]})


def soup(trained_dirs: list[Path], out: Path, datasets_dir: Path, weights: list[float] | None = None,
         search: list[dict] | None = None) -> dict:
    """Average the weights of `trained_dirs` (same tasks, same architecture), evaluate, save as a trained directory.

    `weights` (default: equal) are normalised to sum to 1. The result is scored on the validation splits (for
    choosing weights) and the test splits (for the record), like `train`. `search` records how the ingredients
    were chosen (`greedy_soup`).
    """
    trained_dirs = [Path(d) for d in trained_dirs]
    weights = [1.0] * len(trained_dirs) if weights is None else list(weights)
    if len(trained_dirs) < 2:
        raise ValueError("a soup needs at least two trained directories")
    if len(weights) != len(trained_dirs) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights {weights}: one non-negative weight per directory, not all zero")
    weights = [w / sum(weights) for w in weights]

    start = time.monotonic()
    metas = [json.loads((d / "training.json").read_text()) for d in trained_dirs]
    max_length = _max_length(metas)
    emoji = _emoji(metas)
    model, tokenizer, tasks, states = _load(trained_dirs)
    _average(model, states, weights)
    metrics = {
        split: evaluate(model, tokenizer, {t.name: load_split(datasets_dir, t, split, emoji=emoji) for t in tasks}, tasks,
                        max_length, "cpu")
        for split in ("validation", "test")
    }
    summary = {
        "base_model": metas[0]["base_model"],
        "config": metas[0]["config"] | {"max_length": max_length},
        "torch": torch.__version__,
        "train_examples": metas[0]["train_examples"],
        "device": " + ".join(m["device"] for m in metas),
        "minutes": round(sum(m["minutes"] for m in metas), 2),
        "steps": sum(m["steps"] for m in metas),
        "validation": metrics["validation"],
        "test": metrics["test"],
        "history": [],
        "soup": [lineage(d) | {"weight": round(w, 4)} for d, w in zip(trained_dirs, weights)],
        "soup_minutes": round((time.monotonic() - start) / 60, 2),
    }
    if search is not None:
        summary["soup_search"] = search
    save_trained(Path(out), model, tokenizer, summary)
    return summary


def greedy_soup(trained_dirs: list[Path], out: Path, datasets_dir: Path) -> dict:
    """Greedy soup: ingredients best first by their own validation score; each joins the uniform average only if
    that raises the average's validation score. Only validation is read until the kept soup is scored by `soup`."""
    trained_dirs = [Path(d) for d in trained_dirs]
    if len(trained_dirs) < 2:
        raise ValueError("a soup needs at least two trained directories")
    model, tokenizer, tasks, states = _load(trained_dirs)
    origins = [lineage(d) for d in trained_dirs]
    validation = {t.name: load_split(datasets_dir, t, "validation", emoji=_emoji(origins)) for t in tasks}
    max_length = _max_length(origins)

    def score(indices: list[int]) -> float:
        _average(model, [states[i] for i in indices], [1 / len(indices)] * len(indices))
        return evaluate(model, tokenizer, validation, tasks, max_length, "cpu")["score"]

    alone = [score([i]) for i in range(len(trained_dirs))]
    order = sorted(range(len(trained_dirs)), key=lambda i: -alone[i])
    kept, best = [order[0]], alone[order[0]]
    search = [{"from": origins[order[0]]["from"], "alone": best, "soup": best, "kept": True}]
    for i in order[1:]:
        trial = score(kept + [i])
        search.append({"from": origins[i]["from"], "alone": alone[i], "soup": trial,
                       "kept": trial > best})
        if trial > best:
            kept, best = kept + [i], trial
    if len(kept) == 1:
        raise NoBetterSoupError(f"no average beats {trained_dirs[kept[0]]} alone on validation ({best}): "
                                f"tried {json.dumps(search)}")
    return soup([trained_dirs[i] for i in kept], out, datasets_dir, search=search)
