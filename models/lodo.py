"""Leave-one-dataset-out check of the Chinese sentiment decision: heads on frozen encoder vectors trained on some
Chinese sets and scored on a set they never saw, deciding with the training mix's class prior (before) and without
it (after, models/decision.py); plus the shipped head on its own test splits under both policies.

`python -m streamsense.models.lodo [--encoder embeddings|cls] [--model NAME|DIR] [--per-category N] [--cache DIR]
[--out DIR]` (needs the `train` extra for onnx, and the labelled datasets in STREAMSENSE_DATASETS_DIR); writes
lodo-ENCODER.json and lodo-ENCODER.md.

Only two Chinese sentiment sets exist (waimai_10k; online_shopping_10_cats, whose rows name one of 9 product
categories), so the folds are: each set → the other, and waimai + 8 categories → the 9th. Every fold's head is a
weighted logistic regression on the encoder's pooled vectors, its rows weighted as models/zh_train.py draws them
(each dataset ∝ full train size ** alpha × its weight from the card's training config; inside online_shopping each
category in proportion to its full size), so it learns the same class prior the shipped head learned from its mix.
"""

import argparse
import hashlib
import json
import platform
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from streamsense.models.data import Example, load_split, require_datasets
from streamsense.models.decision import mix_prior, mix_shares, offset, probabilities, target_prior
from streamsense.models.metrics import classification_metrics
from streamsense.models.tasks import ZH_TASKS

WAIMAI, SHOPPING = "waimai_10k", "online_shopping_10_cats"
LABELS = ZH_TASKS["sentiment"][0].labels  # negative, positive
L2 = 1e-3  # ridge penalty of the fold heads (features standardised, row weights summing to 1)

ENCODERS = {
    "embeddings": ("the mean of {name}:{version}'s word embeddings, which its fine-tuning left frozen: the base "
                   "bge-small-zh-v1.5's own, untouched by any label (a weak encoder, so the head's prior shows)"),
    "cls": ("{name}:{version} int8, its pooled [CLS] vector (fine-tuned on both sets' train splits: the vectors "
            "have seen every domain and both labels, so the cross-domain figures are optimistic)"),
}

# texts -> (pooled vectors [n, d], the shipped sentiment head's raw logits [n, 2] or None)
Encode = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Part:
    """One set's rows of one split (a dataset, or one category of online_shopping), encoded."""

    dataset: str
    category: str | None
    labels: np.ndarray
    vectors: np.ndarray
    logits: np.ndarray | None
    full_counts: dict[str, int]  # the full train split's class counts of this part (for the mix), else {}


def load_parts(datasets_dir: Path, encode: Encode, per_category: int | None, seed: int = 0) -> dict[str, list[Part]]:
    """"train" and "test" parts: waimai_10k whole, online_shopping per category (train capped at `per_category`
    rows per category, a seeded sample; full class counts kept for the mix)."""
    require_datasets(datasets_dir, (WAIMAI, SHOPPING), ("train", "test"))
    views = {t.dataset: t for t in ZH_TASKS["sentiment"]}
    out: dict[str, list[Part]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for dataset in (WAIMAI, SHOPPING):
            rows = load_split(datasets_dir, views[dataset], split)
            groups: dict[str | None, list[Example]] = {}
            for row in rows:
                groups.setdefault(row.domain if dataset == SHOPPING else None, []).append(row)
            for category, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
                counts = {name: sum(e.label == i for e in members) for i, name in enumerate(LABELS)}
                if split == "train" and category is not None and per_category and len(members) > per_category:
                    members = random.Random(f"{seed}/{category}").sample(members, per_category)
                vectors, logits = encode([e.text for e in members])
                out[split].append(Part(dataset, category, np.array([e.label for e in members]), vectors, logits,
                                       counts if split == "train" else {}))
    return out


def fold_weights(parts: Sequence[Part], alpha: float, weights: dict[str, float]) -> tuple[np.ndarray, dict]:
    """Row weights (summing to 1) giving each dataset its draw share and, inside it, each part its full size's
    share; and the class prior that mix carries (models/decision.py mix_prior, from the full counts)."""
    counts: dict[str, dict[str, int]] = {}
    for p in parts:
        c = counts.setdefault(p.dataset, dict.fromkeys(LABELS, 0))
        for label in LABELS:
            c[label] += p.full_counts[label]
    shares = mix_shares({d: sum(c.values()) for d, c in counts.items()}, alpha, weights)
    w = []
    for p in parts:
        within = sum(p.full_counts.values()) / sum(counts[p.dataset].values())
        w.append(np.full(len(p.labels), shares[p.dataset] * within / len(p.labels)))
    prior = mix_prior(counts, LABELS, alpha, {d: x for d, x in weights.items() if d in counts})
    return np.concatenate(w), prior


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = L2, iters: int = 30):
    """Weighted L2 logistic regression by Newton's method on standardised features; returns score(x) -> the
    positive-minus-negative logit."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xb = np.hstack([(x - mean) / std, np.ones((len(x), 1))]).astype(np.float64)
    beta = np.zeros(xb.shape[1])
    ridge = np.full(xb.shape[1], l2)
    ridge[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ beta, -30, 30)))
        grad = xb.T @ (w * (p - y)) + ridge * beta
        hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return lambda v: np.hstack([(v - mean) / std, np.ones((len(v), 1))]) @ beta


def scores(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, macro-F1, macro recall, each class's recall, and the negative share predicted vs true."""
    m = classification_metrics(labels, predicted, len(LABELS))
    for i, name in enumerate(LABELS):
        support = labels == i
        m[f"recall_{name}"] = round(float((predicted[support] == i).mean()), 4) if support.any() else None
    m["negative_share"] = round(float((labels == 0).mean()), 4)
    m["predicted_negative_share"] = round(float((predicted == 0).mean()), 4)
    return m


def decide(logits: np.ndarray, temperature: float | None, prior: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels under the training prior (argmax) and under the balanced policy, through the runtime's formula."""
    shift = offset(LABELS, prior, target_prior("balanced", LABELS, prior))
    before = probabilities(logits, temperature).argmax(axis=1)
    return before, probabilities(logits, temperature, shift).argmax(axis=1)


def balanced_within(parts: Sequence[Part], w: np.ndarray) -> np.ndarray:
    """The same draw shares, each dataset's mass split evenly between its classes (a per-dataset class-balanced
    loss: no dataset brings its class ratio into the head)."""
    out = w.copy()
    datasets = np.concatenate([[p.dataset] * len(p.labels) for p in parts])
    y = np.concatenate([p.labels for p in parts])
    for d in set(datasets.tolist()):
        inside = datasets == d
        for c in range(len(LABELS)):
            rows = inside & (y == c)
            if rows.any():
                out[rows] *= w[inside].sum() / len(LABELS) / w[rows].sum()
    return out


def run_fold(name: str, train: Sequence[Part], test: Sequence[Part], alpha: float, weights: dict) -> dict:
    """One fold: the head as the mix trains it, deciding with its prior (before) and balanced (after); and a head
    trained with each dataset's classes balanced (what a retrained model could do instead)."""
    w, prior = fold_weights(train, alpha, weights)
    x_train, y_train = np.concatenate([p.vectors for p in train]), np.concatenate([p.labels for p in train])
    x, y = np.concatenate([p.vectors for p in test]), np.concatenate([p.labels for p in test])
    s = fit_logistic(x_train, y_train, w)(x)
    before, after = decide(np.stack([np.zeros_like(s), s], axis=1), None, prior)
    balanced = (fit_logistic(x_train, y_train, balanced_within(train, w))(x) > 0).astype(int)
    return {"fold": name, "train": sorted({_name(p) for p in train}), "test": sorted({_name(p) for p in test}),
            "training_prior": prior, "before": scores(y, before), "after": scores(y, after),
            "balanced_training": scores(y, balanced)}


def _name(p: Part) -> str:
    return p.dataset if p.category is None else f"{p.dataset}/{p.category}"


def lodo(parts: dict[str, list[Part]], alpha: float, weights: dict) -> list[dict]:
    """The folds: waimai → online_shopping, online_shopping → waimai, then waimai + 8 categories → the 9th."""
    train, test = parts["train"], parts["test"]

    def of(ps, dataset, category=None, keep=True):
        return [p for p in ps if (p.dataset == dataset and (category is None or p.category == category)) == keep]

    folds = [run_fold(f"{WAIMAI} → {SHOPPING}", of(train, WAIMAI), of(test, SHOPPING), alpha, weights),
             run_fold(f"{SHOPPING} → {WAIMAI}", of(train, SHOPPING), of(test, WAIMAI), alpha, weights)]
    for category in sorted({p.category for p in test if p.dataset == SHOPPING}):
        held = [p for p in test if p.dataset == SHOPPING and p.category == category]
        kept = [p for p in train if not (p.dataset == SHOPPING and p.category == category)]
        folds.append(run_fold(f"category {category}", kept, held, alpha, weights))
    return folds


def shipped(parts: dict[str, list[Part]], card: dict, prior: dict[str, float]) -> list[dict]:
    """The shipped head on its own test splits (and each online_shopping category) under both policies."""
    temperature = (card.get("calibration") or {}).get("temperature", {}).get("sentiment")
    rows = []
    groups = [(d, [p for p in parts["test"] if p.dataset == d]) for d in (WAIMAI, SHOPPING)]
    groups += [(_name(p), [p]) for p in parts["test"] if p.category is not None]
    for name, ps in groups:
        y = np.concatenate([p.labels for p in ps])
        before, after = decide(np.concatenate([p.logits for p in ps]), temperature, prior)
        rows.append({"test": name, "before": scores(y, before), "after": scores(y, after)})
    return rows


def markdown(report: dict) -> str:
    def num(x):
        return "–" if x is None else f"{x:.2f}"

    def cells(m):
        return [f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{num(m['recall_negative'])} / "
                f"{num(m['recall_positive'])}", f"{m['predicted_negative_share']:.2f}"]

    head = ["accuracy", "macro-F1", "recall neg / pos", "called negative"]
    sides = (("before", "mix prior"), ("after", "balanced decision"), ("balanced_training", "balanced training"))
    lines = [f"Encoder: {report['encoder']}. {report['machine']}, {report['date']}.", "",
             "| fold (train → test) | test n | negative share | training prior (neg) | "
             + " | ".join(f"{title}: {h}" for _, title in sides for h in head) + " |",
             "|" + "---|" * (4 + len(sides) * len(head))]
    for f in report["lodo"]:
        b = f["before"]
        lines.append(f"| {f['fold']} | {b['n']} | {b['negative_share']:.2f} | {f['training_prior']['negative']:.3f} | "
                     + " | ".join(c for side, _ in sides for c in cells(f[side])) + " |")
    p = report["pooled_categories"]
    lines.append(f"| all 9 category folds pooled | {p['before']['n']} | {p['before']['negative_share']:.2f} | – | "
                 + " | ".join(c for side, _ in sides for c in cells(p[side])) + " |")
    if report.get("shipped"):
        s = report["shipped_policy"]
        lines += ["", f"Shipped head (int8, temperature {s['temperature']}; training prior negative "
                      f"{s['training_prior']['negative']}, offset {s['logit_offset']}) on its own test splits:", "",
                  "| test split | n | negative share | " + " | ".join(f"before: {h}" for h in head) + " | "
                  + " | ".join(f"after: {h}" for h in head) + " |", "|" + "---|" * (3 + 2 * len(head))]
        for r in report["shipped"]:
            b = r["before"]
            lines.append(f"| {r['test']} | {b['n']} | {b['negative_share']:.2f} | " + " | ".join(cells(b)) + " | "
                         + " | ".join(cells(r["after"])) + " |")
    return "\n".join(lines) + "\n"


def pooled(folds: list[dict]) -> dict:
    """The category folds' test rows pooled: counts summed back from each fold's figures (accuracy and recalls)."""
    cats = [f for f in folds if f["fold"].startswith("category ")]
    out = {}
    for side in ("before", "after", "balanced_training"):
        n = sum(f[side]["n"] for f in cats)
        neg = sum(f[side]["negative_share"] * f[side]["n"] for f in cats)
        hit_neg = sum((f[side]["recall_negative"] or 0) * f[side]["negative_share"] * f[side]["n"] for f in cats)
        hit_pos = sum((f[side]["recall_positive"] or 0) * (1 - f[side]["negative_share"]) * f[side]["n"] for f in cats)
        called_neg = sum(f[side]["predicted_negative_share"] * f[side]["n"] for f in cats)
        rn, rp = hit_neg / max(neg, 1e-9), hit_pos / max(n - neg, 1e-9)
        pn, pp = hit_neg / max(called_neg, 1e-9), hit_pos / max(n - called_neg, 1e-9)
        f1 = [2 * a * b / (a + b) if a + b else 0.0 for a, b in ((rn, pn), (rp, pp))]
        out[side] = {"n": n, "accuracy": round((hit_neg + hit_pos) / n, 4), "macro_f1": round(sum(f1) / 2, 4),
                     "macro_recall": round((rn + rp) / 2, 4), "recall_negative": round(rn, 4),
                     "recall_positive": round(rp, 4), "negative_share": round(neg / n, 4),
                     "predicted_negative_share": round(called_neg / n, 4)}
    return out


def onnx_encoder(model_dir: Path, cache_dir: Path | None, threads: int = 0) -> tuple[Encode, dict]:
    """An Encode over the model's int8 graph with its pooled vector exposed as an extra output (one ONNX pass gives
    the vectors and the shipped logits); results cached per text list under `cache_dir`."""
    import onnx
    import onnxruntime as ort

    from streamsense.models.runtime import ModelRuntime, length_groups, pad

    runtime = ModelRuntime(model_dir, "cpu", threads, variant="int8")
    graph_model = onnx.load(str(runtime.path / runtime.variant_file))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    graph = graph_model.graph
    base_outputs = list(graph.output)

    def session_with(names: list[str]):
        del graph.output[:]
        graph.output.extend(base_outputs + [onnx.helper.make_empty_tensor_value_info(n) for n in names])
        return ort.InferenceSession(graph_model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    sample = runtime.tokenize(["好", "不好吃"])

    def probe(names: list[str]) -> dict[str, np.ndarray]:
        ids, mask = pad(sample.ids)
        return dict(zip(names, session_with(names).run(names, {"input_ids": ids, "attention_mask": mask})))

    pooled_name = pooled_tensor(graph, probe, len(sample))
    session = session_with([pooled_name])
    head = runtime.outputs[[t.name for t in runtime.tasks].index("sentiment")]
    model_sha = runtime.card["files"][runtime.variant_file]["sha256"]

    def encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        key = hashlib.sha256("\n".join([model_sha, *texts]).encode()).hexdigest()[:16]
        path = cache_dir / f"vectors-{key}.npz" if cache_dir else None
        if path and path.is_file():
            data = np.load(path)
            return data["vectors"], data["logits"]
        encoded = runtime.tokenize(texts)
        vectors, logits = [None] * len(texts), [None] * len(texts)
        for group in length_groups([len(x) for x in encoded.ids], 64):
            ids, mask = pad([encoded.ids[i] for i in group])
            z, v = session.run([head, pooled_name], {"input_ids": ids, "attention_mask": mask})
            for row, i in enumerate(group):
                vectors[i], logits[i] = v[row], z[row]
        out = np.stack(vectors).astype(np.float32), np.stack(logits).astype(np.float32)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, vectors=out[0], logits=out[1])
        return out

    return encode, runtime.card


def embedding_encoder(model_dir: Path) -> tuple[Encode, dict]:
    """An Encode giving the mean of the text's word embeddings (special tokens left out) from the model's fp16 graph,
    and no logits. The Chinese model was fine-tuned with its word embeddings frozen (`freeze_embeddings` in both
    stages of its training config), so these are the base encoder's own: vectors no sentiment label has touched."""
    import onnx
    from onnx import numpy_helper

    from streamsense.models.runtime import ModelRuntime

    runtime = ModelRuntime(model_dir, "cpu", variant="int8")
    vocab = runtime.tokenizer.get_vocab_size()
    fp16 = next(v["file"] for v in runtime.card["variants"].values() if "fp16" in v["file"])
    table = next(numpy_helper.to_array(i) for i in onnx.load(str(runtime.path / fp16)).graph.initializer
                 if len(i.dims) == 2 and i.dims[0] == vocab).astype(np.float32)
    special = [runtime.tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")]

    def encode(texts: Sequence[str]) -> tuple[np.ndarray, None]:
        out = np.zeros((len(texts), table.shape[1]), np.float32)
        for i, ids in enumerate(runtime.tokenize(texts).ids):
            ids = [t for t in ids if t not in special]
            if ids:
                out[i] = table[ids].mean(axis=0)
        return out, None

    return encode, runtime.card


def pooled_tensor(graph, probe: Callable[[list[str]], dict[str, np.ndarray]], batch: int) -> str:
    """The pooled sentence vector every head reads: of the tensors all the graph's outputs depend on (computed, not
    initializers), the nearest to the outputs that a probe run shows as one float vector per text."""
    producers = {o: n for n in graph.node for o in n.output}
    constants = {i.name for i in graph.initializer}
    reach = []
    for output in graph.output:
        dist, frontier = {output.name: 0}, [output.name]
        while frontier:
            nxt = []
            for t in frontier:
                for i in producers[t].input if t in producers else ():
                    if i and i not in dist:
                        dist[i] = dist[t] + 1
                        nxt.append(i)
            frontier = nxt
        reach.append(dist)
    shared = sorted((t for t in set(reach[0]).intersection(*reach[1:]) if t in producers and t not in constants),
                    key=lambda t: max(d[t] for d in reach))[:24]
    values = probe(shared)
    for t in shared:
        v = values[t]
        if v.dtype.kind == "f" and v.ndim == 2 and v.shape[0] == batch and v.shape[1] >= 16:
            return t
    raise ValueError("no pooled vector found among the tensors the graph's heads share")


def run(datasets_dir: Path, encode: Encode, card: dict, per_category: int | None, encoder: str) -> dict:
    """The whole check: folds with the card's training mix (alpha, dataset weights), the pooled category folds,
    and the shipped head under the card's training prior (from the full train splits)."""
    from streamsense.models.decision import card_training_prior

    config = card["training"]["config"]
    alpha, weights = float(config.get("task_sampling_alpha", 0.5)), dict(config.get("dataset_weights") or {})
    parts = load_parts(datasets_dir, encode, per_category)
    folds = lodo(parts, alpha, weights)
    report = {"encoder": encoder, "machine": f"{platform.machine()}, {_cores()} CPU cores",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "per_category": per_category,
              "mix": {"task_sampling_alpha": alpha, "dataset_weights": weights}, "l2": L2,
              "lodo": folds, "pooled_categories": pooled(folds)}
    if all(p.logits is not None for p in parts["test"]):
        prior, _ = card_training_prior(card, "sentiment", datasets_dir)
        temperature = (card.get("calibration") or {}).get("temperature", {}).get("sentiment")
        shift = offset(LABELS, prior, target_prior("balanced", LABELS, prior))
        report["shipped_policy"] = {"temperature": temperature, "training_prior": prior,
                                    "logit_offset": {label: round(float(x), 4) for label, x in zip(LABELS, shift)}}
        report["shipped"] = shipped(parts, card, prior)
    return report


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def main(argv: Sequence[str] | None = None) -> None:
    from streamsense.models.data import DatasetsMissingError
    from streamsense.models.registry import ModelNotFoundError, resolve
    from streamsense.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m streamsense.models.lodo", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="streamsense-bge-zh",
                        help="the Chinese model: name[:version] in the registry, or a model directory")
    parser.add_argument("--per-category", type=int, default=1000, help="online_shopping train rows per category")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the encoded vectors (reused)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for lodo.json and lodo.md")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--encoder", choices=ENCODERS, default="embeddings",
                        help="embeddings: the mean of the base's frozen word embeddings (no label has touched them); "
                             "cls: the fine-tuned model's pooled vector (saw both sets), which also scores the "
                             "shipped head before / after")
    args = parser.parse_args(argv)
    settings = Settings()
    datasets_dir = settings.datasets_dir
    try:
        require_datasets(datasets_dir, (WAIMAI, SHOPPING), ("train", "test"))
        model = resolve(settings.model_registry, args.model)
        if args.encoder == "cls":
            encode, card = onnx_encoder(model, args.cache, args.threads)
        else:
            encode, card = embedding_encoder(model)
        report = run(datasets_dir, encode, card, args.per_category, ENCODERS[args.encoder].format(**card))
    except (DatasetsMissingError, ModelNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"lodo-{args.encoder}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
