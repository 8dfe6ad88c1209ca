"""Models judged on people's labels: each version's quality on the labelled verdicts (the profile's `quality`
section) and the paired evidence the promotion gate's `verdicts` check reads, by running the models on the texts.

Which verdicts: those with a label (a bare `wrong` on sentiment has none), on a message stored with its text
(STREAMSENSE_STORE_TEXT full or redacted: a redacted text is what the model is run on, which may differ a little
from what it classified), judged on a version of the same model name (a Chinese message judged on the Chinese model
says nothing about the English one). Held out from a challenger: the verdicts stored after it was created (its card's
`created_at`), which no adaptation of it can have trained on.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from streamsense.models.registry import read_card
from streamsense.streams.feedback.quality import wilson
from streamsense.streams.feedback.schema import feedback
from streamsense.streams.schema import predictions


@dataclass(frozen=True)
class Labelled:
    kind: str
    message_id: str
    head: str
    label: str
    text: str


def labelled(engine: Engine, name: str, stored_after: datetime | None = None) -> tuple[list[Labelled], int]:
    """The labelled verdicts on messages judged on a version of `name` (stored after `stored_after` if given), and
    how many more were left out for want of stored text."""
    f, p = feedback.c, predictions.c
    stmt = (select(f.kind, f.message_id, f.head, f.label, p.text)
            .select_from(feedback.join(predictions, and_(p.kind == f.kind, p.message_id == f.message_id)))
            .where(f.kind != "alert", f.label.is_not(None), f.model_version.like(f"{name}:%"))
            .order_by(f.pk))
    if stored_after is not None:
        stmt = stmt.where(f.updated_at > stored_after)
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    usable = [Labelled(r.kind, r.message_id, r.head, r.label, r.text) for r in rows if r.text]
    return usable, len(rows) - len(usable)


def predicted_labels(model_dir: Path, items: list[Labelled], batch_size: int = 64) -> list[str | None]:
    """What the model says for each item's head (None: the model has no such head)."""
    from streamsense.models.runtime import ModelRuntime

    runtime = ModelRuntime(model_dir, "cpu")
    labels = {t.name: t.labels for t in runtime.tasks}
    out: list[str | None] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        probs, _ = runtime.predict_proba([i.text for i in chunk])
        for row, item in enumerate(chunk):
            if item.head not in probs:
                out.append(None)
                continue
            out.append(labels[item.head][int(probs[item.head][row].argmax())])
    return out


def created(card: dict) -> datetime | None:
    """When the model was made (its card's `created_at`), in UTC."""
    if not card.get("created_at"):
        return None
    at = datetime.fromisoformat(str(card["created_at"]).replace("Z", "+00:00"))
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def paired(engine: Engine, champion_dir: Path, challenger_dir: Path) -> dict:
    """The gate's `verdicts` evidence: on each held-out labelled verdict, whether each model's label matches (and
    the head it is about)."""
    card = read_card(challenger_dir)
    items, without_text = labelled(engine, card["name"], created(card))
    if not items:
        return {"verdicts": [], "held_out": {"stored_after": card.get("created_at"), "without_text": without_text}}
    old = predicted_labels(champion_dir, items)
    new = predicted_labels(challenger_dir, items)
    return {"verdicts": [{"champion": a == i.label, "challenger": b == i.label, "head": i.head}
                         for i, a, b in zip(items, old, new)],
            "held_out": {"stored_after": card.get("created_at"), "n": len(items), "without_text": without_text}}


def quality(engine: Engine, model_dir: Path) -> dict:
    """The model's accuracy per head on the labelled verdicts of its name stored after it was made (none of them can
    have trained it), with 95 % Wilson intervals: the profile's `quality` section (`streamsense feedback quality
    NAME:V --record`)."""
    card = read_card(model_dir)
    items, without_text = labelled(engine, card["name"], created(card))
    said = predicted_labels(model_dir, items) if items else []
    heads: dict[str, dict] = {}
    for item, label in zip(items, said):
        h = heads.setdefault(item.head, {"n": 0, "right": 0})
        h["n"] += 1
        h["right"] += label == item.label
    for h in heads.values():
        low, high = wilson(h["right"], h["n"])
        h.update(accuracy=round(h["right"] / h["n"], 4), low=round(low, 4), high=round(high, 4))
    return {"heads": heads, "verdicts": len(items), "without_text": without_text,
            "stored_after": card.get("created_at")}


def head_labels_of(model_dir: Path, texts: list[str], batch_size: int = 64) -> dict[str, list[str]]:
    """Every head's label for each text."""
    from streamsense.models.runtime import ModelRuntime

    runtime = ModelRuntime(model_dir, "cpu")
    labels = {t.name: t.labels for t in runtime.tasks}
    out: dict[str, list[str]] = {name: [] for name in labels}
    for start in range(0, len(texts), batch_size):
        probs, _ = runtime.predict_proba(texts[start:start + batch_size])
        for name, p in probs.items():
            out[name] += [labels[name][i] for i in p.argmax(1)]
    return out


def compare(engine: Engine, champion_dir: Path, challenger_dir: Path, sample: int = 500) -> dict:
    """The two versions side by side, offline: on the newest `sample` stored texts, how often each head agrees; on
    the labelled verdicts held out from the challenger, each one's accuracy per head and the gate's paired test."""
    from streamsense.streams.feedback.gate_checks import better_on_verdicts

    with engine.connect() as conn:
        texts = list(conn.execute(select(predictions.c.text).where(predictions.c.text.is_not(None),
                                                                   predictions.c.text != "")
                                  .order_by(predictions.c.pk.desc()).limit(sample)).scalars())
    agreement = {}
    if texts:
        a, b = head_labels_of(champion_dir, texts), head_labels_of(challenger_dir, texts)
        agreement = {head: round(sum(x == y for x, y in zip(a[head], b[head])) / len(texts), 4)
                     for head in a if head in b}
    evidence = paired(engine, champion_dir, challenger_dir)
    per_head: dict[str, dict] = {}
    for pair in evidence["verdicts"]:
        h = per_head.setdefault(pair["head"], {"n": 0, "champion": 0, "challenger": 0})
        h["n"] += 1
        h["champion"] += pair["champion"]
        h["challenger"] += pair["challenger"]
    test = better_on_verdicts(champion_dir, challenger_dir, evidence)
    return {"texts": len(texts), "agreement": agreement, "verdicts": per_head, "paired_test": test.reason,
            "better": test.passed, "shadow": shadowed(engine, champion_dir, challenger_dir)}


def shadowed(engine: Engine, champion_dir: Path, challenger_dir: Path) -> dict:
    """Live, from shadowing: on the messages the champion stored and the challenger shadowed, how often their
    sentiment and risk level agree, and how many alerts the challenger would have raised."""
    from streamsense.streams.feedback.challenger import agreement

    versions = [f"{c['name']}:{c['version']}" for c in map(read_card, (champion_dir, challenger_dir))]
    rows = agreement(engine, *versions)
    if not rows:
        return {"messages": 0}
    return {k: v for k, v in rows[0].items() if k not in ("champion", "challenger", "last_at")}
