"""A shadowed challenger's would-be alerts made reviewable: the review queue's items, how it agrees with the champion,
and its alert precision from people's verdicts on them, which the promotion gate's `alert_precision` check reads.

A would-be alert is a rule a shadowed challenger would have fired on a stored message (`shadow_predictions.alerts`,
rule names; it raised nothing). A verdict on one is a feedback row of kind `would_alert`, `message_id` the message
(`post:123`), `head` the rule, `model_version` the challenger version that would have raised it, `label` `alarm` or
`false_alarm`. The verdict says whether that rule alerting on that message is a real alarm, which does not depend on
the model: it counts for every shadowed version that would have raised the same rule on the same message.
"""

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.engine import Connection, Engine

from streamsense.streams.feedback.schema import feedback, shadow_predictions
from streamsense.streams.schema import predictions

WOULD_ALERT = "would_alert"  # the feedback kind (and queue reason) of a verdict on a would-be alert
MESSAGE_KINDS = ("post", "ticket")


def _alerting(col):
    """SQL: the shadow row would have raised an alert (its JSON list of rules is not empty)."""
    return cast(col, String) != "[]"


def newest_shadowed(engine: Engine) -> str | None:
    """The version the newest shadow row names (the challenger being shadowed now), unless that version also made
    the newest stored prediction (then it serves: it was promoted, and its alerts are real)."""
    s, p = shadow_predictions.c, predictions.c
    with engine.connect() as conn:
        version = conn.execute(select(s.model_version).order_by(s.stored_at.desc(), s.pk.desc()).limit(1)).scalar()
        serving = conn.execute(select(p.model_version).order_by(p.pk.desc()).limit(1)).scalar()
    return version if version is not None and version != serving else None


def _reviewed(conn: Connection, refs: list[str]) -> set[tuple[str, str]]:
    """(message ref, rule) of the would-be alerts among `refs` that have a verdict."""
    c = feedback.c
    out = set()
    for start in range(0, len(refs), 500):
        out |= {tuple(r) for r in conn.execute(select(c.message_id, c.head).where(
            c.kind == WOULD_ALERT, c.message_id.in_(refs[start:start + 500])))}
    return out


def unreviewed(conn: Connection, version: str, limit: int, page: int = 500) -> list[dict]:
    """The newest `limit` would-be alerts of `version` without a verdict, as review-queue items: {kind: would_alert,
    message_id: "post:123", reason: would_alert, head: the rule, score: the version}."""
    s = shadow_predictions.c
    out: list[dict] = []
    before = None
    while len(out) < limit:
        stmt = (select(s.pk, s.kind, s.message_id, s.alerts).where(s.model_version == version, _alerting(s.alerts))
                .order_by(s.pk.desc()).limit(page))
        if before is not None:
            stmt = stmt.where(s.pk < before)
        rows = list(conn.execute(stmt))
        if not rows:
            break
        before = rows[-1].pk
        reviewed = _reviewed(conn, [f"{r.kind}:{r.message_id}" for r in rows])
        for row in rows:
            ref = f"{row.kind}:{row.message_id}"
            out += [{"kind": WOULD_ALERT, "message_id": ref, "reason": WOULD_ALERT, "head": rule, "score": version}
                    for rule in row.alerts or [] if (ref, rule) not in reviewed]
    return out[:limit]


def shadow_rows_of(conn: Connection, refs: list[str], version: str | None = None) -> dict[str, list]:
    """The shadow rows of the messages `refs` ("post:123"; of `version` only, if given), newest first per message."""
    s = shadow_predictions.c
    pairs = sorted({(kind, ident) for kind, _, ident in (ref.partition(":") for ref in refs)
                    if kind in MESSAGE_KINDS and ident})
    found: dict[str, list] = {}
    for start in range(0, len(pairs), 500):
        stmt = select(s.kind, s.message_id, s.model_version, s.alerts, s.stored_at).where(
            or_(*(and_(s.kind == k, s.message_id == i) for k, i in pairs[start:start + 500])))
        if version is not None:
            stmt = stmt.where(s.model_version == version)
        for row in conn.execute(stmt.order_by(s.stored_at.desc(), s.pk.desc())):
            found.setdefault(f"{row.kind}:{row.message_id}", []).append(row)
    return found


def would_alert_counts(engine: Engine, version: str) -> dict:
    """Verdicts on the alerts `version` would have raised while shadowed: {"n", "right"} (right: a real alarm)."""
    c = feedback.c
    with engine.connect() as conn:
        verdicts = list(conn.execute(select(c.message_id, c.head, c.verdict).where(c.kind == WOULD_ALERT)))
        rows = shadow_rows_of(conn, [v.message_id for v in verdicts], version)
    judged = [v for v in verdicts if any(v.head in (r.alerts or []) for r in rows.get(v.message_id, []))]
    return {"n": len(judged), "right": sum(v.verdict == "right" for v in judged)}


ROLES = ("champion", "challenger")


def alert_precision(engine: Engine | None, versions: dict[str, str], given: dict | None = None) -> dict:
    """The gate's `alert_precision` evidence, each role from the store where it has verdicts, else from `given` (an
    --evidence file's): the champion's from the verdicts on its alerts; the challenger's from those on its would-be
    alerts (shadowing) and on any alerts it raised itself. Each role's counts carry `source`, one phrase."""
    from streamsense.streams.feedback.gate_checks import alert_counts

    given = given or {}
    out = {}
    for role in ROLES:
        if engine is not None:
            real = alert_counts(engine, versions[role])
            would = would_alert_counts(engine, versions[role]) if role == "challenger" else {"n": 0, "right": 0}
            if real["n"] or would["n"]:
                parts = [f"{n} on its would-be alerts" if what == "would" else f"{n} on its alerts"
                         for what, n in (("would", would["n"]), ("real", real["n"])) if n]
                out[role] = {"n": real["n"] + would["n"], "right": real["right"] + would["right"],
                             "source": f"the store: {' and '.join(parts)}"}
                continue
        if (given.get(role) or {}).get("n"):
            out[role] = {"n": int(given[role]["n"]), "right": int(given[role]["right"]),
                         "source": given[role].get("source", "the --evidence file")}
        else:
            out[role] = {"n": 0, "right": 0, "source": "the store" if engine is not None else "nowhere"}
    return out


def agreement(engine: Engine, champion: str | None = None, challenger: str | None = None,
              newest: int | None = None) -> list[dict]:
    """Per (champion version, challenger version) on the messages both handled: how many, how often sentiment and
    risk level agree, how many the challenger would have alerted on (newest challenger first). `newest`: only the
    newest that many shadow rows (the dashboard's bound: the join reads each row)."""
    shadow = shadow_predictions
    if newest is not None:
        recent = select(shadow_predictions).order_by(shadow_predictions.c.pk.desc()).limit(newest)
        if challenger is not None:
            recent = recent.where(shadow_predictions.c.model_version == challenger)
        shadow = recent.subquery("recent_shadow")
    p, s = predictions.c, shadow.c
    same = lambda a, b: func.sum(case((a == b, 1), else_=0))  # noqa: E731
    stmt = (select(p.model_version.label("champion"), s.model_version.label("challenger"),
                   func.count().label("messages"), same(p.sentiment, s.sentiment).label("sentiment_same"),
                   same(p.risk_level, s.risk_level).label("risk_level_same"),
                   func.sum(case((_alerting(s.alerts), 1), else_=0)).label("challenger_alerts"),
                   func.max(s.stored_at).label("last_at"))
            .select_from(predictions.join(shadow, and_(s.kind == p.kind, s.message_id == p.message_id)))
            .group_by(p.model_version, s.model_version).order_by(func.max(s.stored_at).desc()))
    if champion is not None:
        stmt = stmt.where(p.model_version == champion)
    if challenger is not None:
        stmt = stmt.where(s.model_version == challenger)
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [{"champion": r.champion, "challenger": r.challenger, "messages": int(r.messages),
             "sentiment_agreement": round(int(r.sentiment_same) / r.messages, 4),
             "risk_level_agreement": round(int(r.risk_level_same) / r.messages, 4),
             "challenger_alerts": int(r.challenger_alerts or 0), "last_at": r.last_at} for r in rows]
