"""Debiasing by a head refit: the English risk heads refitted on the frozen encoder's sentence vectors with
counterfactual copies of their training rows (identity terms swapped for other groups') and benign identity sentences
written for training, anchored to the heads they replace (models/adapt.py); measured on validation and the bias
templates' dev half, reported on their held-out half and the test splits (`streamsense models debias`).

What it changes and what it cannot: the heads are linear on vectors the encoder makes, so a refit can move where the
boundary sits, not what the encoder puts into a vector; where a group's word is, in the vector, close to the abuse the
head learned, a linear head trades that group's false alarms against recall (docs/models.md, "Fairness").

The benign training sentences (BENIGN_TRAINING) are not the evaluation templates (models/bias_templates/): a test
checks that no training pattern shares five consecutive words with a template, so the held-out figures measure
sentences the refit never saw (the groups are the same: the swap list is the templates' group lexicon).
"""

import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from streamsense.models.adapt import AdaptError, fit_head
from streamsense.models.vectors import CachedEncoder
from streamsense.models.bias import BIAS_HEADS, THRESHOLD, load_suite

# Benign sentences for training, crossed with every group; written for training only, apart from the evaluation
# templates (no five consecutive words in common with them: tests/test_debias.py).
BENIGN_TRAINING = (
    "{a_one} at the front desk sorted out my booking in minutes",
    "Just moved in next to a family of {people}, they brought us cookies",
    "I work with {people} every day at the hospital",
    "My sister is {a_one} and she flies with you all the time",
    "Can {a_one} get a discount on the annual plan?",
    "I read an interesting article about {people} in history",
    "The {one} who served us at lunch was very friendly",
    "Our team includes {people} from all walks of life",
    "We celebrate {people} in our community every year",
    "Writing as {a_one}: could I change my seat to the aisle?",
    "As a proud {one} I appreciate the accessible website",
    "Many {people} use your app to stay in touch with family",
    "My grandfather was {a_one} and he loved travelling",
    "Had a nice chat with {a_one} in the queue this morning",
    "My roommate is {a_one} and a great cook",
    "A documentary about {people} is on tonight",
    "The conference had several speakers who are {people}",
    "Met {a_one} on the train and we talked about football",
    "Where do I find the returns form? Asking as {a_one}",
    "Shout out to the {one} who found my lost wallet",
    "{people} are welcome to join our running club",
    "The survey asked whether I am {a_one}",
    "Is there a support group for {people} in this city?",
    "Our landlord is {a_one} and fixes things quickly",
    "Ordered a new phone from you yesterday, signed {a_one}",
    "The new menu looks great, says this {one}",
    "My partner and I are {people} and we loved the hotel",
    "The charity supports {people} and their families",
    "I volunteer at a centre for {people} on weekends",
    "{a_one} runs the bakery on our corner and the bread is amazing",
)

# identity words too common in other senses to swap ("oh man", "American Airlines", "trans fats")
BROAD = frozenset({"man", "men", "american", "americans", "trans", "old man", "old woman", "youth", "straight person",
                   "straight people", "conservative", "conservatives", "liberal", "liberals"})
SWAPS = 2  # counterfactual copies of each training row naming a group
SEED = 0


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def benign_training_rows(language: str = "en") -> list[str]:
    """Every BENIGN_TRAINING pattern with every group of the language's suite."""
    out = []
    for pattern in BENIGN_TRAINING:
        for g in load_suite(language).groups:
            text = pattern.format(one=g.one, people=g.people, a_one=_article(g.one))
            out.append(text[:1].upper() + text[1:])
    return out


@dataclass(frozen=True)
class _Form:
    group: str
    plural: bool


@lru_cache(maxsize=4)
def _forms(language: str = "en") -> dict[str, _Form]:
    out = {}
    for g in _groups(language).values():
        for term in (*g.terms, g.one, g.people):
            t = term.lower()
            plural = t == g.people.lower() or (t != g.one.lower() and t.endswith(("s", "men")))
            out.setdefault(t, _Form(g.name, plural))
    return out


@lru_cache(maxsize=4)
def _groups(language: str = "en") -> dict:
    return {g.name: g for g in load_suite(language).groups}


@lru_cache(maxsize=4)
def _terms(language: str = "en") -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in sorted(_forms(language), key=len, reverse=True))
                      + r")\b", re.IGNORECASE)


def counterfactuals(text: str, k: int = SWAPS, rng: random.Random | None = None, language: str = "en") -> list[str]:
    """Up to `k` copies of `text` with every identity term (the suite's group lexicon, broad words left out) replaced
    by one other group's word in the same number ("gay people" → "Hindus", "a muslim" → "a deaf person"); none where
    the text names no group."""
    forms, pattern = _forms(language), _terms(language)
    found = [m for m in pattern.finditer(text) if m.group(0).lower() not in BROAD]
    if not found:
        return []
    rng = rng or random.Random(SEED)
    groups = _groups(language)
    own = {forms[m.group(0).lower()].group for m in found}
    others = [name for name in groups if name not in own]
    out = []
    for target in rng.sample(others, min(k, len(others))):
        g = groups[target]

        def swap(m, g=g):
            if m.group(0).lower() in BROAD:
                return m.group(0)
            return g.people if forms[m.group(0).lower()].plural else g.one
        out.append(pattern.sub(swap, text))
    return out


# -- the data of one head ----------------------------------------------------------------------------------------------

@dataclass
class HeadData:
    """One head's sets as vectors: its training rows (with counterfactual copies and benign identity rows), validation
    and test, and the bias templates' halves."""

    name: str
    train: tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, kind (0 original, 1 counterfactual, 2 benign identity)
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    templates: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # part -> x, abusive, group


def head_data(head: str, card: dict, datasets_dir: Path, vectors, swaps: int = SWAPS) -> HeadData:
    """Texts of `head` (its dataset's splits, normalised as served), their counterfactuals and the benign identity
    rows, as vectors (`vectors(texts) -> array`)."""
    from streamsense.models.data import load_split
    from streamsense.models.registry import text_options
    from streamsense.models.tasks import task_views

    entry = next(t for t in card["tasks"] if t["name"] == head)
    view = task_views(entry)[0]
    emoji = text_options(card)["emoji"]
    negative = 1 - view.labels.index(view.positive)
    split = {s: load_split(datasets_dir, view, s, emoji=emoji) for s in ("train", "validation", "test")}
    rng = random.Random(SEED)
    texts = [e.text for e in split["train"]]
    labels = [e.label for e in split["train"]]
    kinds = [0] * len(texts)
    for e in split["train"]:
        for copy in counterfactuals(e.text, swaps, rng):
            texts.append(copy)
            labels.append(e.label)
            kinds.append(1)
    for text in benign_training_rows():
        texts.append(text)
        labels.append(negative)
        kinds.append(2)
    train = (vectors(texts), np.array(labels), np.array(kinds))
    sets = {s: (vectors([e.text for e in split[s]]), np.array([e.label for e in split[s]]))
            for s in ("validation", "test")}
    suite = load_suite("en")
    templates = {}
    for part in ("dev", "heldout"):
        rows = [r for r in suite.rows if r.part == part]
        templates[part] = (vectors([r.text for r in rows]), np.array([r.abusive for r in rows]),
                           np.array([r.group for r in rows]))
    return HeadData(head, train, sets["validation"], sets["test"], templates)


# -- fit and measure ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How a head is refitted: the anchor to the old weights, the weight of counterfactual and benign identity rows
    (relative to an original row; 0 leaves them out) and whether the classes are balanced as in training."""

    anchor: float = 0.3
    counterfactual: float = 1.0
    benign: float = 1.0
    balanced: bool = True

    def label(self) -> str:
        return (f"anchor {self.anchor}, counterfactual x{self.counterfactual}, benign identity x{self.benign}"
                + (", balanced" if self.balanced else ""))


def refit(data: HeadData, w0: np.ndarray, b0: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    x, y, kind = data.train
    weight = np.select([kind == 1, kind == 2], [recipe.counterfactual, recipe.benign], 1.0).astype(np.float32)
    if recipe.balanced:
        original = y[kind == 0]
        counts = np.bincount(original, minlength=w0.shape[0]).astype(np.float64)
        weight = weight * (len(original) / (len(counts) * counts))[y].astype(np.float32)
    keep = weight > 0
    return fit_head(x[keep], y[keep], w0, b0, recipe.anchor, sample_weight=weight[keep])


def _macro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    f1 = []
    for c in (0, 1):
        tp = float(((pred == c) & (y == c)).sum())
        p, r = tp / max((pred == c).sum(), 1), tp / max((y == c).sum(), 1)
        f1.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return round(float(np.mean(f1)), 4)


def measure(data: HeadData, w: np.ndarray, b: np.ndarray, positive: int = 1, recall: float = 0.85) -> dict:
    """The head as it would be served after `streamsense models calibrate` and `risk-eval --fit` (the temperature and
    its `medium` fitted on validation by the same rules), on fp32 vectors: validation and test macro F1 and risky
    rows at ≥ medium; per template half, per group the benign mean probability and false-positive rate at 0.5, and
    the abusive rows' recall at 0.5."""
    from streamsense.models.risk_eval import fit_temperature
    from streamsense.models.runtime import softmax

    xv, yv = data.validation
    t = fit_temperature((xv @ w.T + b).astype(np.float64), yv)

    def prob(x):
        return softmax((x @ w.T + b).astype(np.float64) / t)[:, positive]

    pv = prob(xv)
    medium = math.floor(float(np.quantile(pv[yv == positive], 1 - recall)) * 1000) / 1000
    out = {"temperature": t, "medium": medium}
    for split, (x, y) in (("validation", data.validation), ("test", data.test)):
        p = prob(x)
        out[split] = {"macro_f1": _macro_f1((p >= THRESHOLD).astype(int) * positive
                                            + (p < THRESHOLD).astype(int) * (1 - positive), y),
                      "risky_medium": round(float((p[y == positive] >= medium).mean()), 4),
                      "benign_medium": round(float((p[y != positive] >= medium).mean()), 4)}
    for part, (x, abusive, group) in data.templates.items():
        p = prob(x)
        groups = {}
        for g in dict.fromkeys(group.tolist()):
            benign = (group == g) & ~abusive
            groups[g] = {"mean": round(float(p[benign].mean()), 4), "fpr": round(float((p[benign] >= 0.5).mean()), 4),
                         "recall": round(float((p[(group == g) & abusive] >= 0.5).mean()), 4),
                         "medium": round(float((p[benign] >= medium).mean()), 4)}
        means = [v["mean"] for v in groups.values()]
        out[part] = {"groups": groups, "worst_mean": max(means), "spread": round(max(means) - min(means), 4),
                     "max_fpr": max(v["fpr"] for v in groups.values()),
                     "benign_mean": round(float(p[~abusive].mean()), 4),
                     "recall": round(float((p[abusive] >= 0.5).mean()), 4),
                     "benign_medium": round(float((p[~abusive] >= medium).mean()), 4)}
    return out


def search(data: HeadData, w0: np.ndarray, b0: np.ndarray, recipes: list[Recipe]) -> list[dict]:
    """Each recipe's refit measured (and the head as it is, first)."""
    rows = [{"recipe": "as it is", **measure(data, w0, b0)}]
    for recipe in recipes:
        w, b = refit(data, w0, b0, recipe)
        rows.append({"recipe": recipe.label(), "weights": (w, b), **measure(data, w, b)})
    return rows


def choose(rows: list[dict], budget: float = 0.01) -> dict | None:
    """The refit with the lowest worst benign group mean on the dev half among those whose validation macro F1 and
    risky-at-medium stay within `budget` of the head as it is; None where none does or none is better."""
    base = rows[0]
    ok = [r for r in rows[1:] if r["validation"]["macro_f1"] >= base["validation"]["macro_f1"] - budget
          and r["dev"]["recall"] >= min(0.9, base["dev"]["recall"])]
    best = min(ok, key=lambda r: (r["dev"]["max_fpr"], r["dev"]["worst_mean"]), default=None)
    if best is None or (best["dev"]["max_fpr"], best["dev"]["worst_mean"]) >= (base["dev"]["max_fpr"],
                                                                               base["dev"]["worst_mean"]):
        return None
    return best


def table(rows: list[dict]) -> str:
    """Markdown: one line per recipe."""
    lines = ["| recipe | val F1 | test F1 | val risky ≥ medium | test risky ≥ medium | medium | dev worst mean / "
             "spread / max FPR / abuse recall | held-out worst mean / spread / max FPR / abuse recall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, h = r["dev"], r["heldout"]
        lines.append(f"| {r['recipe']} | {r['validation']['macro_f1']:.4f} | {r['test']['macro_f1']:.4f} | "
                     f"{r['validation']['risky_medium']:.2%} | {r['test']['risky_medium']:.2%} | {r['medium']} | "
                     f"{d['worst_mean']:.2f} / {d['spread']:.2f} / {d['max_fpr']:.0%} / {d['recall']:.0%} | "
                     f"{h['worst_mean']:.2f} / {h['spread']:.2f} / {h['max_fpr']:.0%} / {h['recall']:.0%} |")
    return "\n".join(lines)


def export_refit(base_dir: Path, heads: dict[str, tuple[np.ndarray, np.ndarray]], registry: Path, datasets_dir: Path,
                 note: dict) -> Path:
    """The base model with `heads` replaced, exported (fp16 + int8, parity on the validation splits) and published
    as the next version of its name in `registry`; its card keeps the other heads' temperatures (the refitted
    heads need `streamsense models calibrate --record`)."""
    import tempfile

    import torch

    from streamsense.exporters.onnx import export
    from streamsense.models.adapt import _calibration_kept, load_base
    from streamsense.models.network import save_trained
    from streamsense.models.registry import publish, read_card, write_card

    card, model, tokenizer, _ = load_base(base_dir)
    with torch.no_grad():
        for name, (w, b) in heads.items():
            model.heads[name].weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
            model.heads[name].bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
    training = card["training"]
    summary = {"base_model": card["base_model"], "torch": torch.__version__, "device": "cpu", "minutes": 0,
               "steps": 0, "train_examples": {}, "validation": card["metrics"]["validation"], "history": [],
               "config": {**training.get("config", {}), "max_length": card["max_length"]},
               "tasks": card["tasks"], "languages": card.get("languages", ["en"]),
               "debias": {"from": f"{card['name']}:{card['version']}", **note}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_trained(tmp / "trained", model, tokenizer, summary)
        exported = export(tmp / "trained", tmp / "exported", datasets_dir, parity_limit=500, name=card["name"])
        exported["training"]["debias"] = summary["debias"]
        kept = _calibration_kept(card, set(heads))
        if kept:
            exported["calibration"] = kept
        write_card(tmp / "exported", exported)
        return publish(tmp / "exported", registry, card["name"])


def dumps(rows: list[dict]) -> str:
    return json.dumps([{k: v for k, v in r.items() if k != "weights"} for r in rows], indent=2)


__all__ = ["BENIGN_TRAINING", "BIAS_HEADS", "Recipe", "benign_training_rows", "choose",
           "counterfactuals", "export_refit", "head_data", "measure", "refit", "search", "table"]


RECIPES = (  # the grid `streamsense models debias` tries (docs/models.md, "Fairness": what each gave)
    Recipe(0.3, 1.0, 0.0), Recipe(0.3, 0.0, 1.0),
    *(Recipe(anchor, 1.0, benign) for anchor in (0.3, 0.1, 0.03, 0.01, 0.003) for benign in (1.0, 3.0, 10.0)),
    *(Recipe(anchor, counterfactual, benign, balanced) for balanced in (True, False)
      for anchor in (0.1, 0.03, 0.01, 0.003)
      for counterfactual, benign in ((0.0, 3.0), (0.0, 10.0), (0.3, 10.0), (0.0, 30.0))),
)


def run(base_dir: Path, datasets_dir: Path, cache_dir: Path, heads=("hate",), recipes=RECIPES,
        log=print) -> dict[str, list[dict]]:
    """Per head: the head as it is and each recipe's refit, measured (`measure`), from vectors cached under
    `cache_dir`; each row of a refit keeps its weights."""
    import torch

    from streamsense.models.adapt import _features, load_base

    card, model, tokenizer, _ = load_base(base_dir)
    if card.get("pooling", "mean") != "mean" or "en" not in card.get("languages", ["en"]):
        # its training rows (TweetEval) and benign sentences are English
        raise AdaptError(f"{card['name']}: the debias refit is built for English mean-pooled models only")
    vectors = CachedEncoder(f"vectors-{card['name']}-{card['version']}",
                            lambda texts: _features(model, tokenizer, texts, card["max_length"]), cache_dir,
                            announce=lambda n: log(f"encoding {n} texts"))

    out = {}
    for head in heads:
        if head not in BIAS_HEADS:
            raise ValueError(f"{head}: not a head the bias report reads ({', '.join(BIAS_HEADS)})")
        data = head_data(head, card, datasets_dir, vectors)
        layer = model.heads[head]
        w0, b0 = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
        with torch.no_grad():
            out[head] = search(data, w0, b0, list(recipes))
    return out
