"""Adaptation to a domain: a new model version from people's labels, the encoder frozen and each labelled head refitted
on its sentence vectors, anchored to the head it replaces; exported and parity-checked like every model (needs the
`train` extra; `streamsense models adapt`). Any shipped model: English (MiniLM, mean-pooled) and Chinese (bge-small-zh,
[CLS]-pooled); `route` sends each label to the model that reads its language.

Head-only on purpose: it runs on a 2-core CPU in about a minute (one encoder pass over the labels, then a few
hundred steps of a linear model), it cannot move what the other heads say (they read the same frozen vectors), and
with a few hundred labels a pull towards the old weights (`anchor`) keeps the original test splits close — which the
promotion gate then checks. Classes weigh equally in the fit (`balanced`): a head's decision does not take on the
class ratio of whatever labels people happened to give (a stated policy, recorded per head in the card). Labels:
`{"text", "task", "label", "lang"?}` per line (a file), or people's labelled verdicts on stored messages
(streams/feedback/evidence.py `labelled`).
"""

import json
import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamsense.models.registry import read_card, text_options, verify
from streamsense.models.tasks import canonical_label, task_views
from streamsense.models.text import normalize

CLASS_WEIGHT = "balanced"  # each class weighs n / (classes × its count) in the loss; "labels": as they come
HOLDOUT = 0.2  # share of each task's labels held out to report before / after (then the final fit takes them all)
ANCHOR = 0.3  # weight of the squared distance to the replaced head's weights in the loss (docs/models.md: measured)
STEPS = 300


class AdaptError(ValueError):
    """Labels that cannot make a challenger: none, or none for any head of the model."""


@dataclass(frozen=True)
class LabelRow:
    text: str
    task: str
    label: str
    lang: str | None = None


def read_labels(path: Path) -> tuple[list[LabelRow], list[tuple[int, str]]]:
    """Rows of a labels file and its malformed lines (line number, why)."""
    rows, bad = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((n, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) and obj[k] for k in ("text", "task",
                                                                                              "label")):
            bad.append((n, 'needs "text", "task" and "label" (non-empty strings)'))
            continue
        rows.append(LabelRow(obj["text"], obj["task"], canonical_label(obj["label"]), obj.get("lang")))
    return rows, bad


def usable(card: dict, rows: list[LabelRow]) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """{task: [(text, label index)]} for the model's heads, and why each other row was left out."""
    labels = {t["name"]: task_views(t)[0].labels for t in card["tasks"]}
    by_task, left_out = defaultdict(list), []
    for row in rows:
        if row.task not in labels:
            left_out.append(f"{row.task}: not a head of this model ({', '.join(labels)})")
        elif row.label not in labels[row.task]:
            left_out.append(f"{row.task}: label {row.label!r} is not one of {', '.join(labels[row.task])}")
        else:
            by_task[row.task].append((row.text, labels[row.task].index(row.label)))
    if not by_task:
        raise AdaptError("no label fits a head of the model" + (f" (e.g. {left_out[0]})" if left_out else ""))
    return dict(by_task), left_out


def route(rows: list[LabelRow], languages: dict[str, tuple[str, ...]], primary: str
          ) -> tuple[dict[str, list[LabelRow]], int]:
    """Labels per model, as the worker routes messages (models/routing.py): a row's `lang`, else its text's identified
    language (models/language.py), picks the model in `languages` ({model: the languages it is routed}) that reads
    it; every other row goes to `primary`, unless `primary` is None (one model asked for), where they are left out.
    Returns {model: rows} for the models that got any, and how many rows were left out."""
    from streamsense.models.language import identify_one

    by_model: dict[str, list[LabelRow]] = defaultdict(list)
    left_out = 0
    for row in rows:
        lang = (row.lang or identify_one(row.text)).strip().lower()
        model = next((m for m, langs in languages.items() if lang in langs), primary)
        if model is None:
            left_out += 1
        else:
            by_model[model].append(row)
    return dict(by_model), left_out


def _features(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out.append(model.pooled(enc["input_ids"], enc["attention_mask"]).float().numpy())
    return np.concatenate(out)


def class_weights(y: np.ndarray, classes: int, policy: str = CLASS_WEIGHT) -> np.ndarray:
    """Per-class loss weights: `balanced` (n / (classes × count); a class without labels gets 1) or `labels` (all 1:
    the labels' own class ratio becomes the head's prior)."""
    if policy == "labels":
        return np.ones(classes, dtype=np.float32)
    if policy != "balanced":
        raise AdaptError(f"class weights: {policy!r} is not balanced or labels")
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def fit_head(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, anchor: float = ANCHOR,
             steps: int = STEPS, weights: np.ndarray | None = None,
             moments: tuple[np.ndarray, np.ndarray] | None = None,
             sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A linear head on vectors `x`: cross-entropy on the labels `y` (per-class `weights`, default balanced; with
    per-row `sample_weight` and no `weights` the rows' own weights only, a weighted mean: models/debias.py) plus
    `anchor` × the squared distance to the replaced head (w0, b0), from which it starts; full-batch L-BFGS.
    `moments` (M = E[v vᵀ], μ = E[v] over the vectors the replaced head was trained on) measure that distance where
    it matters: the mean squared change of the head's logits on those vectors, tr(ΔW M ΔWᵀ) + 2 Δb·ΔW μ + |Δb|²
    (measured in the learning curve, docs/models.md; the shipped models do not carry their moments yet)."""
    import torch

    x, w0, b0 = (np.asarray(a, dtype=np.float32) for a in (x, w0, b0))
    if weights is None:
        weights = class_weights(y, len(w0), "balanced" if sample_weight is None else "labels")
    xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y).long(), torch.from_numpy(np.asarray(weights, np.float32))
    # each row's weight in the mean: its class's weight times its own (cross_entropy's weighted mean when all are 1)
    rw = wt[yt] * (1.0 if sample_weight is None else torch.from_numpy(np.asarray(sample_weight, np.float32)))
    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    w0t, b0t = torch.tensor(w0), torch.tensor(b0)
    if moments is not None:
        mt, mut = (torch.from_numpy(np.asarray(m, dtype=np.float32)) for m in moments)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(xt @ w.T + b, yt, reduction="none") * rw).sum() / rw.sum()
        dw, db = w - w0t, b - b0t
        if moments is None:
            loss = loss + anchor * ((dw ** 2).sum() + (db ** 2).sum())
        else:
            loss = loss + anchor * ((dw @ mt * dw).sum() + 2 * (db * (dw @ mut)).sum() + (db ** 2).sum())
        loss.backward()
        return loss

    # one thread: a few hundred small steps, where a second thread's hand-offs cost more than they save (13.5 s
    # against 0.2 s for 30 labels on 2 busy cores; 0.7 s for 9,000 × 512 on one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.detach().numpy(), b.detach().numpy()


def _accuracy(x, y, w, b) -> float:
    return round(float(np.mean((x @ w.T + b).argmax(1) == y)), 4)


def _split(n: int, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = int(n * HOLDOUT) if n >= 10 else 0  # too few to hold any out: reported as such
    return order[k:], order[:k]


def refit(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, labels: tuple[str, ...],
          anchor: float = ANCHOR, seed: int = 0, class_weight: str = CLASS_WEIGHT,
          moments: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """One head refitted from its labels' vectors: 20 % held out for the before / after accuracy (with 10 labels or
    more), then the final fit on all of them. Returns the new weights, bias and the card's entry for the head.
    (`streamsense models adapt` and the learning curve, models/learning_curve.py, both fit heads through here.)"""
    weights = class_weights(y, len(w0), class_weight)
    counts = np.bincount(y, minlength=len(w0))
    entry = {"labels": len(y), "per_label": {labels[i]: int(c) for i, c in enumerate(counts)},
             "class_weight": class_weight,
             "class_weights": {labels[i]: round(float(v), 4) for i, v in enumerate(weights)}}
    train, held = _split(len(y), seed)
    if held:
        w, b = fit_head(x[train], y[train], w0, b0, anchor, weights=class_weights(y[train], len(w0), class_weight),
                        moments=moments)
        entry |= {"held_out": len(held), "held_out_accuracy_before": _accuracy(x[held], y[held], w0, b0),
                  "held_out_accuracy_after": _accuracy(x[held], y[held], w, b)}
    w, b = fit_head(x, y, w0, b0, anchor, weights=weights, moments=moments)  # the final head learns from every label
    entry["train_accuracy_before"], entry["train_accuracy_after"] = _accuracy(x, y, w0, b0), _accuracy(x, y, w, b)
    return w, b, entry


def load_encoder(base_dir: Path, card: dict):
    """The model of a verified directory as PyTorch (weights read back from its fp16 graph), and its tokenizer."""
    from transformers import BertModel, PreTrainedTokenizerFast

    from streamsense.exporters.recover import SOURCE_VARIANT, read_weights
    from streamsense.models.network import POOLINGS, MultiTaskModel

    pooling = card.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise AdaptError(f"{card['name']}: pooling {pooling!r} cannot be adapted (only {', '.join(POOLINGS)})")
    if SOURCE_VARIANT not in card["variants"]:
        raise AdaptError(f"{base_dir} has no {SOURCE_VARIANT} variant to read its weights from")
    tasks = [task_views(t)[0] for t in card["tasks"]]
    config, state = read_weights(base_dir / card["variants"][SOURCE_VARIANT]["file"], [t.name for t in tasks])
    # the state has BERT's pooler (zeros: no head reads it) so every model loads alike; [CLS] or the mean is pooled
    model = MultiTaskModel(BertModel(config, add_pooling_layer=True), tasks, pooling)
    model.load_state_dict(state)
    model.eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(base_dir / "tokenizer.json"))
    return model, tokenizer, tasks


def load_base(base_dir: Path):
    """(card, PyTorch model, tokenizer, tasks) of a verified model directory (models/debias.py)."""
    base_dir = Path(base_dir)
    card = verify(base_dir)
    model, tokenizer, tasks = load_encoder(base_dir, card)
    return card, model, tokenizer, tasks


def adapt(base_dir: Path, rows: list[LabelRow], trained_out: Path, source: str, anchor: float = ANCHOR,
          seed: int = 0, class_weight: str = CLASS_WEIGHT) -> dict:
    """Write a trained directory (models/network.py layout) whose labelled heads are refitted; returns its
    training.json, with `adaptation`: per head the labels used, and the held-out accuracy before and after."""
    import torch

    from streamsense.models.network import save_trained

    started = time.monotonic()
    torch.manual_seed(seed)
    base_dir = Path(base_dir)
    card = verify(base_dir)
    by_task, left_out = usable(card, rows)
    model, tokenizer, tasks = load_encoder(base_dir, card)
    labels = {t.name: t.labels for t in tasks}
    emoji = text_options(card)["emoji"]
    report = {}
    for task, pairs in by_task.items():
        texts = [normalize(text, emoji) for text, _ in pairs]
        x = _features(model, tokenizer, texts, card["max_length"])
        y = np.array([label for _, label in pairs])
        head = model.heads[task]
        w0, b0 = head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()
        w, b, report[task] = refit(x, y, w0, b0, labels[task], anchor, seed, class_weight)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w))
            head.bias.copy_(torch.from_numpy(b))
    training = card["training"]
    summary = {
        "base_model": card["base_model"], "torch": torch.__version__, "device": "cpu",
        "minutes": round((time.monotonic() - started) / 60, 2), "steps": STEPS * 2 * len(by_task),
        "train_examples": {task: len(pairs) for task, pairs in by_task.items()},
        "config": {**training.get("config", {}), "emoji": emoji, "max_length": card["max_length"]},
        # the unchanged heads keep their validation metrics; the refitted ones' are the base model's until
        # `streamsense models eval --record` measures the test splits (the gate reads those)
        "validation": card["metrics"]["validation"],
        "history": [],
        "pooling": model.pooling,
        "tasks": card["tasks"],
        "languages": card.get("languages", ["en"]),
        "adaptation": {"from": f"{card['name']}:{card['version']}", "source": source, "anchor": anchor,
                       "class_weight": class_weight, "heads": report, "left_out": len(left_out),
                       "frozen": "encoder and every other head"},
    }
    save_trained(Path(trained_out), model, tokenizer, summary)
    return summary


def parity_datasets(card: dict, by_task: dict[str, list[tuple[str, int]]], root: Path, limit: int = 200) -> None:
    """Validation files of the adaptation texts under `root`, one per task's dataset name, so the export's parity
    check runs on the domain the challenger is for (every head on every text; a head without labels is scored
    against the base model's labels, which only the report's metric reads)."""
    texts = [(text, task, label) for task, pairs in by_task.items() for text, label in pairs][:limit]
    for t in card["tasks"]:
        view = task_views(t)[0]
        folder = root / view.dataset
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "validation.jsonl").open("w", encoding="utf-8") as f:
            for text, task, label in texts:
                value = view.labels[label] if task == t["name"] else view.labels[0]
                f.write(json.dumps({"text": text, "label": value}) + "\n")


def adapt_and_export(base_dir: Path, rows: list[LabelRow], registry: Path, source: str, anchor: float = ANCHOR,
                     name: str | None = None, class_weight: str = CLASS_WEIGHT) -> tuple[Path, dict]:
    """Adapt, export with parity on the adaptation texts, publish as the next version of the base's name (or
    `name`). Returns the new version's directory and its card."""
    from streamsense.exporters.onnx import export
    from streamsense.models.registry import publish, write_card

    card = read_card(base_dir)
    by_task, _ = usable(card, rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = adapt(base_dir, rows, tmp / "trained", source, anchor, class_weight=class_weight)
        parity_datasets(card, by_task, tmp / "datasets")
        exported = export(tmp / "trained", tmp / "exported", tmp / "datasets", parity_limit=200,
                          name=name or card["name"])
        exported["training"]["adaptation"] = summary["adaptation"]
        exported["parity"]["texts_from"] = "the adaptation labels' texts"
        for section in PER_HEAD_SECTIONS:
            kept = _calibration_kept(card, set(by_task), section)
            if kept:
                exported[section] = kept
        write_card(tmp / "exported", exported)
        target = publish(tmp / "exported", registry, name or card["name"])
    return target, read_card(target)


# card sections that hold something per head, fitted on the base's logits: kept for the heads left as they were,
# dropped for a refitted head — its temperature, and its decision policy's logit offset (models/decision.py: the
# training mix's prior swapped for a stated one), since the refitted head is fit with its own class weights
PER_HEAD_SECTIONS = ("calibration", "decision")


def _calibration_kept(card: dict, refitted: set[str], section_name: str = "calibration") -> dict | None:
    """The base card's `section_name` (calibration: temperatures) for the heads left as they were (their logits are
    the base's); a refitted head's entries no longer apply (`streamsense models calibrate` fits a temperature
    again). None where no head keeps anything."""
    section = card.get(section_name)
    heads = {t["name"] for t in card["tasks"]}
    if not isinstance(section, dict):
        return None
    if section and set(section) <= heads:  # keyed by head itself (decision)
        return {h: v for h, v in section.items() if h not in refitted} or None
    per_head = {key: value for key, value in section.items() if isinstance(value, dict) and set(value) & heads}
    kept = {key: {h: v for h, v in value.items() if h not in refitted} for key, value in per_head.items()}
    if not any(kept.values()):
        return None
    return {key: kept.get(key, value) for key, value in section.items()}
