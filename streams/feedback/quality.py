"""Quality from verdicts: precision per head and predicted label, per alert rule, and per rule of a shadowed
challenger's would-be alerts, with Wilson intervals."""

import math

from sqlalchemy import String, case, func, literal, select, union_all
from sqlalchemy.sql import Select

from streamsense.streams.feedback.challenger import WOULD_ALERT
from streamsense.streams.feedback.schema import feedback
from streamsense.streams.schema import alerts

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _counts(*group):
    right = case((feedback.c.verdict == "right", 1), else_=0)
    rnd = case((feedback.c.sample == "random", 1), else_=0)
    both = case((feedback.c.verdict == "right", rnd), else_=0)
    return (func.count().label("n"), func.sum(right).label("right"), func.sum(rnd).label("n_random"),
            func.sum(both).label("right_random"))


def precision_query() -> Select:
    """Verdict counts per (scope, name, predicted label, model version): heads (what a head predicted, how often
    people said it was right) and alert rules (alerts judged, how many were real alarms). `random` columns: the
    verdicts on items drawn by the review queue's random share (the unbiased estimate). Scope `would-be alert rule`:
    a shadowed challenger's would-be alerts (streams/feedback/challenger.py), per rule and the version judged."""
    heads = (select(literal("head", String).label("scope"), feedback.c.head.label("name"), feedback.c.predicted,
                    feedback.c.model_version, *_counts())
             .where(feedback.c.kind.notin_(("alert", WOULD_ALERT)))
             .group_by(feedback.c.head, feedback.c.predicted, feedback.c.model_version))
    rules = (select(literal("alert rule", String).label("scope"), alerts.c.rule.label("name"),
                    literal("alarm", String).label("predicted"), feedback.c.model_version, *_counts())
             .select_from(feedback.join(alerts, alerts.c.id == feedback.c.message_id))
             .where(feedback.c.kind == "alert")
             .group_by(alerts.c.rule, feedback.c.model_version))
    would = (select(literal("would-be alert rule", String).label("scope"), feedback.c.head.label("name"),
                    literal("alarm", String).label("predicted"), feedback.c.model_version, *_counts())
             .where(feedback.c.kind == WOULD_ALERT)
             .group_by(feedback.c.head, feedback.c.model_version))
    both = union_all(heads, rules, would).subquery()
    return select(both).order_by(both.c.scope, both.c.name, both.c.predicted, both.c.model_version)


PRECISION_COLUMNS = ("precision", "low", "high", "precision_random", "low_random", "high_random")


def with_intervals(rows: list[tuple]) -> tuple[list[str], list[tuple]]:
    """`precision_query`'s rows with precision and its 95 % Wilson interval added, for all verdicts and for the random
    share (None: no verdicts)."""
    columns = list(precision_query().selected_columns.keys())
    at = {c: i for i, c in enumerate(columns)}
    out = []
    for row in rows:
        extra = []
        for n_col, k_col in (("n", "right"), ("n_random", "right_random")):
            n, k = int(row[at[n_col]] or 0), int(row[at[k_col]] or 0)
            extra += [round(k / n, 4), *(round(x, 4) for x in wilson(k, n))] if n else [None, None, None]
        out.append((*row, *extra))
    return [*columns, *PRECISION_COLUMNS], out


def labels_query() -> Select:
    """Labels collected: verdicts per kind, head, source and verdict, with how many carry a label."""
    c = feedback.c
    return (select(c.kind, c.head, c.source, c.verdict, func.count().label("n"),
                   func.sum(case((c.label.is_not(None), 1), else_=0)).label("labelled"),
                   func.count(func.distinct(c.by)).label("people"), func.max(c.updated_at).label("last_at"))
            .group_by(c.kind, c.head, c.source, c.verdict).order_by(c.kind, c.head, c.source, c.verdict))


__all__ = ["wilson", "precision_query", "with_intervals", "labels_query"]
