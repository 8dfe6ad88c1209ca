"""The dashboard's feedback panel: labels collected (per head and per day, the review queue's random share apart),
each alert rule's and head's precision from the verdicts with its 95 % Wilson interval (the `feedback-precision`
report, streams/feedback/quality.py), and each shadowed challenger's agreement with the champion."""

from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

from streamsense.streams.bi import _bucket, jsonable, run_report
from streamsense.streams.feedback.challenger import WOULD_ALERT, agreement, would_alert_counts
from streamsense.streams.feedback.quality import wilson
from streamsense.streams.feedback.schema import feedback

DAYS = 30  # the per-day chart's span, up to the newest verdict
SHADOW_ROWS = 20000  # agreement on the newest shadow rows only: ~0.1 s on SQLite, where 200,000 took 1.3 s
PRECISION_ROWS = 60  # of the report's rows (scope, name, predicted label, model version) the panel shows at most
QUEUE_SAMPLES = ("uncertain", "alert", WOULD_ALERT)  # the queue's other parts: chosen, so their precision is biased
HINT = ("no verdicts yet: mark an alert with `streamsense feedback alert ID --false-alarm --by YOU` (or "
        "--confirmed), judge a prediction with `streamsense feedback add post:ID --head sentiment --label negative "
        "--by YOU`, or start from `streamsense feedback queue`, which also lists a shadowed challenger's would-be "
        "alerts (`streamsense feedback would-alert`)")


def _count_if(condition):
    return func.sum(case((condition, 1), else_=0))


def labels(engine: Engine) -> list[dict]:
    """Verdicts per kind and head: how many, with a label, from the random share, from the rest of the queue,
    given outside it, from how many people, the newest."""
    c = feedback.c
    stmt = (select(c.kind, c.head, func.count().label("n"), _count_if(c.label.is_not(None)).label("labelled"),
                   _count_if(c.sample == "random").label("random"),
                   _count_if(c.sample.in_(QUEUE_SAMPLES)).label("queue"),
                   func.count(func.distinct(c.by)).label("people"), func.max(c.updated_at).label("last_at"))
            .group_by(c.kind, c.head).order_by(c.kind, c.head))
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [{"kind": r.kind, "head": r.head, "n": r.n, "labelled": int(r.labelled), "random": int(r.random),
             "queue": int(r.queue), "outside": r.n - int(r.random) - int(r.queue), "people": r.people,
             "last_at": jsonable(r.last_at)} for r in rows]


def per_day(engine: Engine, days: int = DAYS) -> list[dict]:
    """Verdicts per UTC day of `created_at` (when people said them) over the `days` up to the newest, the random
    share apart."""
    c = feedback.c
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(c.created_at))).scalar()
        if newest is None:
            return []
        newest = newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)
        start = datetime.combine(newest.date() - timedelta(days=days - 1), datetime.min.time(), timezone.utc)
        day = _bucket("day", c.created_at, conn.dialect.name).label("day")
        rows = list(conn.execute(select(day, func.count().label("n"), _count_if(c.sample == "random").label("random"))
                                 .where(c.created_at >= start).group_by(day).order_by(day)))
    return [{"bucket_start": jsonable(r.day), "n": r.n, "random": int(r.random), "other": r.n - int(r.random)}
            for r in rows]


def shadowing(engine: Engine) -> list[dict]:
    """Each (champion, challenger) pair shadowing stored: agreement on the messages both handled (of the newest
    SHADOW_ROWS shadowed), and the challenger's would-be alerts people judged, with the precision and its 95 %
    interval."""
    out = []
    for pair in agreement(engine, newest=SHADOW_ROWS):
        judged = would_alert_counts(engine, pair["challenger"])
        low, high = wilson(judged["right"], judged["n"])
        out.append({**pair, "last_at": jsonable(pair["last_at"]), "judged": judged["n"], "right": judged["right"],
                    "precision": round(judged["right"] / judged["n"], 4) if judged["n"] else None,
                    "low": round(low, 4) if judged["n"] else None, "high": round(high, 4) if judged["n"] else None})
    return out


def feedback_panel(engine: Engine) -> dict:
    """Everything the panel shows; `hint` says how to give a first verdict where there is none."""
    with engine.connect() as conn:
        total, people = conn.execute(select(func.count(), func.count(func.distinct(feedback.c.by)))).one()
    precision = run_report(engine, "feedback-precision").records() if total else []
    order = {"alert rule": 0, "would-be alert rule": 1, "head": 2}
    precision.sort(key=lambda r: (order.get(r["scope"], 3), r["name"], r["predicted"], r["model_version"] or ""))
    return {"verdicts": total, "people": people, "hint": None if total else HINT,
            "labels": labels(engine) if total else [], "per_day": per_day(engine) if total else [],
            "precision": precision[:PRECISION_ROWS], "precision_rows": len(precision),
            "shadow": shadowing(engine), "shadow_rows": SHADOW_ROWS}
