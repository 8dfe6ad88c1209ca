"""Argilla and Label Studio records: stored predictions and alerts out (the model's suggestions, people's verdicts so
far), people's labels back in as verdicts, so a team labels in the tool it already has.

Argilla (FeedbackDataset records): `fields.text`; `metadata` {kind, message_id, model_version, sample, text_stored,
feedback}; `suggestions` [{question_name, value, score, agent, type}] — type `model` for the model's (agent: its
version), `human` for a person's pre-label (agent: who; imported as that person's verdict); `responses` [{user_id,
values: {question: {value}}, status, updated_at}] — only `submitted` ones are verdicts (draft and discarded are
skipped and counted).

Label Studio (tasks, JSON export): `data` {text, ref, kind, message_id, sample, text_stored, feedback}; `predictions`
[{model_version, score, result}]; `annotations` [{completed_by, created_at, was_cancelled, result}]; every result item
is {from_name, to_name: "text", type: "choices", value: {choices: [label]}}. Cancelled annotations are skipped.

In both, a question or `from_name` is the head, its value the label; a verdict without a known label (a bare
`wrong` on sentiment) is the question `<head>_verdict` with value right / wrong. An alert's head is `alert`, its
labels alarm / false_alarm. `sample` is how the item was chosen for review (the queue's reason); `feedback` holds,
per stored verdict ("who/head"), when it was said and its sample, so export then import gives back the same
verdicts (who, what, when, sample); answers added in the tool take the tool's time and the record's sample.
"""

from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine

from streamsense.streams.feedback.schema import feedback
from streamsense.streams.feedback.verdicts import (
    ALARM, ALERT_HEAD, Verdict, VerdictError, head_labels, heads_of, parse_at, parse_ref,
)
from streamsense.streams.schema import alerts, predictions

FORMATS = ("argilla", "label-studio")
VERDICT_SUFFIX = "_verdict"


def targets(engine: Engine, refs: list[tuple[str, str]], samples: dict | None = None) -> list[dict]:
    """What an export shows of each stored target, in `refs` order: text (None where stored without), model version,
    each head's predicted label and its probability."""
    samples = samples or {}
    out = {}
    with engine.connect() as conn:
        pairs = [r for r in refs if r[0] != "alert"]
        for start in range(0, len(pairs), 500):
            chunk = pairs[start:start + 500]
            stmt = select(predictions).where(or_(*(and_(predictions.c.kind == k, predictions.c.message_id == i)
                                                   for k, i in chunk)))
            for row in conn.execute(stmt):
                heads = {}
                for head in heads_of(row):
                    _, predicted = head_labels(row, head)
                    heads[head] = (predicted, _score(row, head, predicted))
                out[(row.kind, row.message_id)] = {"text": row.text, "model_version": row.model_version,
                                                   "heads": heads}
        ids = [i for k, i in refs if k == "alert"]
        for start in range(0, len(ids), 500):
            for row in conn.execute(select(alerts).where(alerts.c.id.in_(ids[start:start + 500]))):
                out[("alert", row.id)] = {"text": row.summary, "model_version": row.model_version,
                                          "heads": {ALERT_HEAD: (ALARM, 1.0)}, "rule": row.rule}
    return [{"kind": k, "message_id": i, "sample": samples.get((k, i)), **out[(k, i)]} for k, i in refs
            if (k, i) in out]


def _score(row, head: str, predicted: str) -> float:
    if head == "sentiment":
        return float(getattr(row, f"p_{predicted}"))
    p = float(row.risk_labels[head])
    return round(p if predicted == head else 1 - p, 4)


def _verdicts_by_target(engine: Engine, refs: list[tuple[str, str]]) -> dict:
    grouped = defaultdict(list)
    with engine.connect() as conn:
        for start in range(0, len(refs), 500):
            chunk = refs[start:start + 500]
            stmt = select(feedback).where(or_(*(and_(feedback.c.kind == k, feedback.c.message_id == i)
                                                for k, i in chunk))).order_by(feedback.c.pk)
            for row in conn.execute(stmt):
                grouped[(row.kind, row.message_id)].append(row)
    return grouped


def _question(row) -> tuple[str, str]:
    """(question, value) for a stored verdict: the label where known, else `<head>_verdict` right/wrong."""
    return (row.head, row.label) if row.label is not None else (row.head + VERDICT_SUFFIX, row.verdict)


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).isoformat()


def export(engine: Engine, fmt: str, refs: list[tuple[str, str]], samples: dict | None = None) -> list[dict]:
    """Records of `fmt` for the stored targets `refs` with their verdicts so far."""
    items = targets(engine, refs, samples)
    verdicts = _verdicts_by_target(engine, [(t["kind"], t["message_id"]) for t in items])
    make = _argilla_record if fmt == "argilla" else _label_studio_task
    return [make(t, verdicts.get((t["kind"], t["message_id"]), [])) for t in items]


def _argilla_record(t: dict, rows: list) -> dict:
    by_user = defaultdict(list)
    for row in rows:
        by_user[row.by].append(row)
    return {
        "external_id": f"{t['kind']}:{t['message_id']}",
        "fields": {"text": t["text"] or ""},
        "metadata": {"kind": t["kind"], "message_id": t["message_id"], "model_version": t["model_version"],
                     "sample": t["sample"], "text_stored": t["text"] is not None, "feedback": _details(rows)},
        "suggestions": [{"question_name": head, "value": predicted, "score": score, "agent": t["model_version"],
                         "type": "model"} for head, (predicted, score) in t["heads"].items()],
        "responses": [{"user_id": user, "status": "submitted",
                       "values": {q: {"value": v} for q, v in map(_question, user_rows)},
                       "updated_at": _iso(max(r.created_at for r in user_rows))}
                      for user, user_rows in by_user.items()],
    }


def _details(rows: list) -> dict:
    """Per stored verdict ("who/head"): when it was said and how its item was sampled, which the tools' own fields
    cannot carry per answer (so a round trip loses nothing)."""
    return {f"{r.by}/{r.head}": {"at": _iso(r.created_at), "sample": r.sample} for r in rows}


def _choice(head: str, value: str, score: float | None = None) -> dict:
    item = {"from_name": head, "to_name": "text", "type": "choices", "value": {"choices": [value]}}
    return item | ({"score": score} if score is not None else {})


def _label_studio_task(t: dict, rows: list) -> dict:
    groups = defaultdict(list)  # one annotation per person and moment
    for row in rows:
        groups[(row.by, _iso(row.created_at))].append(row)
    scores = [score for _, score in t["heads"].values()]
    return {
        "data": {"text": t["text"] or "", "ref": f"{t['kind']}:{t['message_id']}", "kind": t["kind"],
                 "message_id": t["message_id"], "sample": t["sample"], "text_stored": t["text"] is not None,
                 "feedback": _details(rows)},
        "predictions": [{"model_version": t["model_version"], "score": min(scores),
                         "result": [_choice(head, predicted, score)
                                    for head, (predicted, score) in t["heads"].items()]}],
        "annotations": [{"completed_by": by, "created_at": at, "was_cancelled": False,
                         "result": [_choice(*_question(r)) for r in group]}
                        for (by, at), group in groups.items()],
    }


def _verdict(kind: str, ident: str, question: str, value, by, at, source: str, sample) -> Verdict:
    if not isinstance(value, str):
        raise VerdictError(f"{kind}:{ident} {question}: value {value!r} is not a string")
    if not isinstance(by, (str, int)) or str(by).strip() == "":
        raise VerdictError(f"{kind}:{ident} {question}: no user")
    if question.endswith(VERDICT_SUFFIX):
        return Verdict(kind, ident, question[:-len(VERDICT_SUFFIX)], str(by), verdict=value, created_at=parse_at(at),
                       source=source, sample=sample)
    return Verdict(kind, ident, question, str(by), label=value, created_at=parse_at(at), source=source,
                   sample=sample)


class Imported:
    """Verdicts read from a file, and what was skipped or malformed, with why."""

    def __init__(self):
        self.verdicts: list[Verdict] = []
        self.skipped: dict[str, int] = defaultdict(int)  # e.g. "draft response": 2
        self.malformed: list[tuple[str, str]] = []


def parse(fmt: str, records: list) -> Imported:
    """Verdicts from Argilla records or Label Studio tasks (as exported, or as the tools export them)."""
    out = Imported()
    for n, record in enumerate(records, 1):
        try:
            (_argilla_verdicts if fmt == "argilla" else _label_studio_verdicts)(record, out)
        except (VerdictError, KeyError, TypeError, AttributeError) as exc:
            reason = str(exc) if isinstance(exc, VerdictError) else f"missing or malformed {exc}"
            out.malformed.append((f"record {n}", reason))
    return out


def _ref(record_ref, metadata: dict) -> tuple[str, str]:
    if metadata.get("kind") and metadata.get("message_id") is not None:
        return parse_ref(f"{metadata['kind']}:{metadata['message_id']}")
    return parse_ref(record_ref)


def _detail(details: dict, by, question: str, at, sample) -> tuple:
    """(when, sample) of one answer: from the exported per-verdict details where present, else the tool's own."""
    mine = details.get(f"{by}/{question.removesuffix(VERDICT_SUFFIX)}") or {}
    return mine.get("at", at), mine.get("sample", sample)


def _argilla_verdicts(record: dict, out: Imported) -> None:
    metadata = record.get("metadata") or {}
    kind, ident = _ref(record.get("external_id") or record.get("id"), metadata)
    details = metadata.get("feedback") or {}
    for response in record.get("responses") or []:
        if response.get("status", "submitted") != "submitted":
            out.skipped[f"{response.get('status')} response"] += 1
            continue
        user = response["user_id"]
        for question, answer in response["values"].items():
            value = answer["value"] if isinstance(answer, dict) else answer
            at, sample = _detail(details, user, question, response.get("updated_at"), metadata.get("sample"))
            out.verdicts.append(_verdict(kind, ident, question, value, user, at, "argilla", sample))
    for suggestion in record.get("suggestions") or []:
        if suggestion.get("type") == "human":  # a person's pre-label: their verdict
            out.verdicts.append(_verdict(kind, ident, suggestion["question_name"], suggestion["value"],
                                         suggestion.get("agent"), None, "argilla", metadata.get("sample")))
        else:
            out.skipped["model suggestion"] += 1


def _label_studio_verdicts(task: dict, out: Imported) -> None:
    data = task["data"]
    kind, ident = _ref(data.get("ref"), data)
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            out.skipped["cancelled annotation"] += 1
            continue
        by = annotation["completed_by"]
        if isinstance(by, dict):  # Label Studio's own export names the user by email
            by = by.get("email") or by.get("id")
        for item in annotation["result"]:
            choices = item["value"]["choices"]
            if len(choices) != 1:
                raise VerdictError(f"{kind}:{ident} {item['from_name']}: {len(choices)} choices, not one")
            at, sample = _detail(data.get("feedback") or {}, by, item["from_name"], annotation.get("created_at"),
                                 data.get("sample"))
            out.verdicts.append(_verdict(kind, ident, item["from_name"], choices[0], by, at, "label-studio", sample))

