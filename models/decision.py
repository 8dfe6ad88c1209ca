"""Each head's decision policy, stated in its model card: which class prior its probabilities (and so its label)
assume — the prior its training mix put into it, or a stated one (balanced) — and the logit offset between the two.

A head trained with plain cross-entropy on a mix of datasets learns p(class | text) under the mix's class shares:
`models/zh_train.py` draws each dataset with probability ∝ size ** alpha × its weight, so the Chinese sentiment head
learned waimai_10k's two negatives to one positive (weighted ×1.5) blended with online_shopping's near-even split,
and on a domain with mostly positive reviews it leans negative. Logit adjustment (Menon et al., ICLR 2021) removes
that prior: probability = softmax(logits / T + log target − log training), T the head's temperature where the card
has one; the label is its argmax. The card's `decision` section holds, per head, the policy, both priors and what the
training prior was derived from; `ModelRuntime` applies it on every device and variant, so serving, `streamsense
models eval` and every figure read through the runtime decide alike. A card without the section: no head is moved.

Standard library and numpy only (the runtime imports it).
"""

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from streamsense.models.registry import ModelIntegrityError

POLICIES = ("training", "balanced", "prior")  # keep the training mix's prior / decide as if balanced / a stated one
DIGITS = 6


def mix_shares(sizes: Mapping[str, int], alpha: float, weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each dataset's share of a task's training draws: size ** alpha × its weight (default 1), normalised
    (`models/zh_train.py`; `models/train.py` draws tasks the same way)."""
    weights = weights or {}
    raw = {d: float(n) ** alpha * float(weights.get(d, 1.0)) for d, n in sizes.items() if n}
    total = sum(raw.values())
    if not total:
        raise ValueError("no training examples to derive a prior from")
    return {d: r / total for d, r in raw.items()}


def mix_prior(counts: Mapping[str, Mapping[str, int]], labels: Sequence[str], alpha: float,
              weights: Mapping[str, float] | None = None, class_weighted: bool | str = False) -> dict[str, float]:
    """The class prior a head trained on this mix learned: Σ over datasets of its draw share × its class shares ×
    the loss's class weights, normalised. Class weights (total / (classes × count)) are over the task's pooled
    examples where `class_weighted` is True, over each dataset's own where it is "dataset" (each dataset then brings
    an even split), else none. `counts`: dataset -> label -> training examples."""
    shares = mix_shares({d: sum(c.values()) for d, c in counts.items()}, alpha, weights)

    def balancing(rows: list[Mapping[str, int]]) -> np.ndarray:
        n = np.array([sum(c.get(label, 0) for c in rows) for label in labels], dtype=np.float64)
        return n.sum() / (len(labels) * np.maximum(n, 1))

    pooled = balancing(list(counts.values())) if class_weighted is True else np.ones(len(labels))
    mass = np.zeros(len(labels))
    for d, share in shares.items():
        n = sum(counts[d].values())
        class_w = balancing([counts[d]]) if class_weighted == "dataset" else pooled
        mass += share * np.array([counts[d].get(label, 0) / n for label in labels]) * class_w
    return {label: round(float(p), DIGITS) for label, p in zip(labels, mass / mass.sum())}


def target_prior(policy: str, labels: Sequence[str], training: Mapping[str, float],
                 stated: Mapping[str, float] | None = None) -> dict[str, float]:
    """The prior a policy decides under: the training prior itself, uniform, or a stated one (normalised)."""
    if policy == "training":
        return dict(training)
    if policy == "balanced":
        return {label: round(1 / len(labels), DIGITS) for label in labels}
    if policy == "prior":
        if not stated or set(stated) != set(labels) or not all(v > 0 for v in stated.values()):
            raise ValueError(f"policy 'prior' needs a positive share for each of {', '.join(labels)}")
        total = sum(stated.values())
        return {label: round(stated[label] / total, DIGITS) for label in labels}
    raise ValueError(f"decision policy {policy!r}: one of {', '.join(POLICIES)}")


def offset(labels: Sequence[str], training: Mapping[str, float], target: Mapping[str, float]) -> np.ndarray:
    """log target − log training, per label in head order (added to the head's temperature-scaled logits)."""
    return np.array([math.log(target[label]) - math.log(training[label]) for label in labels], dtype=np.float32)


def probabilities(logits: np.ndarray, temperature: float | None = None, shift: np.ndarray | None = None) -> np.ndarray:
    """softmax(logits / temperature + shift), float32: the one formula the runtime and every evaluation use."""
    z = logits.astype(np.float32)
    if temperature is not None:
        z = z / np.float32(temperature)
    if shift is not None:
        z = z + shift.astype(np.float32)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def offsets(card: dict) -> dict[str, np.ndarray]:
    """Each head's logit offset from the card's `decision` section (validated against the head's labels); heads
    without an entry, or a policy of `training`, are not moved."""
    section = card.get("decision") or {}
    labels = {t["name"]: [label.replace("-", "_") for label in t["labels"]] for t in card.get("tasks", [])}
    out = {}
    for head, entry in section.items():
        if head not in labels:
            raise ModelIntegrityError(f"model card: decision policy for {head!r}, which is not a head of the model")
        policy = entry.get("policy")
        if policy not in POLICIES:
            raise ModelIntegrityError(f"model card: decision policy of {head} is {policy!r}, not one of "
                                      f"{', '.join(POLICIES)}")
        if policy == "training":
            continue
        priors = [entry.get("training_prior") or {}, entry.get("target_prior") or {}]
        for prior in priors:
            values = [prior.get(label) for label in labels[head]]
            if set(prior) != set(labels[head]) or not all(isinstance(v, (int, float)) and 0 < v < 1 for v in values) \
                    or abs(sum(values) - 1) > 1e-3:
                raise ModelIntegrityError(f"model card: decision priors of {head} must give each of "
                                          f"{', '.join(labels[head])} a share in (0, 1), summing to 1; got {prior}")
        out[head] = offset(labels[head], *priors)
    return out


def card_training_prior(card: dict, head: str, datasets_dir: Path) -> tuple[dict[str, float], dict]:
    """The prior the card's training put into `head`, and what it was derived from: the training config's sampling
    (task_sampling_alpha, dataset_weights), the train splits' class counts, and whether the loss weighed classes
    (models/zh_train.py `class_weighted`, or per dataset `class_weighted_per_dataset`; models/train.py weighs every
    task's classes)."""
    from streamsense.models.data import load_split, require_datasets
    from streamsense.models.tasks import task_views

    entry = next((t for t in card["tasks"] if t["name"] == head), None)
    if entry is None:
        raise ValueError(f"model {card.get('name')} has no {head!r} head")
    config = (card.get("training") or {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"model {card.get('name')}: its card records no training config to derive {head}'s "
                         "training prior from")
    views = task_views(entry)
    require_datasets(datasets_dir, [v.dataset for v in views], ("train",))
    counts = {}
    for view in views:
        labels = [e.label for e in load_split(datasets_dir, view, "train")]
        counts[view.dataset] = {name: labels.count(i) for i, name in enumerate(view.labels)}
    alpha = float(config.get("task_sampling_alpha", 0.5))
    weights = {d: w for d, w in (config.get("dataset_weights") or {}).items() if d in counts}
    weighted = head in config["class_weighted"] if "class_weighted" in config else True
    if head in (config.get("class_weighted_per_dataset") or ()):
        weighted = "dataset"
    prior = mix_prior(counts, views[0].labels, alpha, weights, weighted)
    shares = mix_shares({d: sum(c.values()) for d, c in counts.items()}, alpha, weights)
    derived = {"train_counts": counts, "draw_shares": {d: round(s, 4) for d, s in shares.items()},
               "task_sampling_alpha": alpha, "dataset_weights": weights, "class_weighted": weighted}
    return prior, derived


def state(card: dict, head: str, policy: str, training: dict[str, float], derived: dict,
          stated: Mapping[str, float] | None = None) -> dict:
    """The card's `decision` entry for `head` under `policy`."""
    labels = [label.replace("-", "_") for label in next(t for t in card["tasks"] if t["name"] == head)["labels"]]
    target = target_prior(policy, labels, training, stated)
    shift = offset(labels, training, target)
    return {"policy": policy, "training_prior": training, "target_prior": target,
            "logit_offset": {label: round(float(x), 4) for label, x in zip(labels, shift)},
            "derived_from": derived, "stated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
