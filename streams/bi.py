"""Canned BI reports over the SQL views of migration 0002 (and the store's tables), for the CLI and the dashboard."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import DateTime, Float, Integer, String, Text, case, column, func, literal, select, table, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Select

from streamsense.models.risk import LEVELS
from streamsense.streams.schema import alerts, consumer_offsets, dead_letters, predictions
from streamsense.streams.store import Store

TZ = DateTime(timezone=True)


def _sentiment_view(unit: str):
    return table(f"sentiment_by_group_{unit}", column("kind", String), column("grp", String),
                 column("bucket_start", TZ), column("n", Integer), column("negative", Integer),
                 column("neutral", Integer), column("positive", Integer), column("negative_share", Float))


sentiment_minute = _sentiment_view("minute")
sentiment_hour = _sentiment_view("hour")
risk_by_product_level = table("risk_by_product_level", column("product", String), column("risk_level", String),
                              column("n", Integer), column("avg_risk_score", Float))
top_risky_tickets = table("top_risky_tickets", column("ticket_id", String), column("product", String),
                          column("customer_id", String), column("priority", String), column("risk_level", String),
                          column("risk_score", Float), column("risk_explanation", Text), column("sentiment", String),
                          column("excerpt", Text), column("produced_at", TZ))
alert_counts_by_rule = table("alert_counts_by_rule", column("rule", String), column("severity", String),
                             column("n", Integer), column("last_created_at", TZ))
stored_per_minute = table("stored_per_minute", column("kind", String), column("bucket_start", TZ),
                          column("n", Integer))


def _level_rank(col):
    return case({level: rank for rank, level in enumerate(LEVELS)}, value=col, else_=len(LEVELS))


@dataclass(frozen=True)
class Report:
    name: str
    description: str
    query: Select
    time_column: str | None = None  # what `since` filters on; None: the report takes no `since`
    limit: int | None = None  # default row limit
    table: tuple[str, ...] = ()  # the columns `streamsense query` shows without --json (default: all)


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict]:
        """Rows as JSON-ready dicts (datetimes as UTC ISO 8601)."""
        return [{c: jsonable(v) for c, v in zip(self.columns, row)} for row in self.rows]


def _sentiment_report(view, unit: str) -> Report:
    return Report(f"sentiment-{unit}", f"messages and sentiment counts per kind and group (brand/product) per {unit}, "
                  "newest first", select(view).order_by(view.c.bucket_start.desc(), view.c.kind, view.c.grp),
                  "bucket_start", 1000)


_totals = union_all(
    select(predictions.c.kind.label("what"), func.count().label("n")).group_by(predictions.c.kind),
    select(literal("alert").label("what"), func.count()).select_from(alerts),
    select(literal("dead_letter").label("what"), func.count()).select_from(dead_letters),
).subquery()

REPORTS: dict[str, Report] = {r.name: r for r in (
    _sentiment_report(sentiment_minute, "minute"),
    _sentiment_report(sentiment_hour, "hour"),
    Report("risk-by-product", "tickets per product and risk level, with the mean risk score",
           select(risk_by_product_level).order_by(risk_by_product_level.c.product,
                                                  _level_rank(risk_by_product_level.c.risk_level))),
    Report("top-risky-tickets", "tickets with the highest risk score",
           select(top_risky_tickets).order_by(top_risky_tickets.c.risk_score.desc(), top_risky_tickets.c.ticket_id),
           "produced_at", 20, ("ticket_id", "product", "priority", "risk_level", "risk_score", "excerpt")),
    Report("alerts-by-rule", "alerts per rule and severity, with the newest one's time",
           select(alert_counts_by_rule).order_by(alert_counts_by_rule.c.n.desc(), alert_counts_by_rule.c.rule,
                                                 _level_rank(alert_counts_by_rule.c.severity))),
    Report("latest-alerts", "the newest alerts with their evidence",
           select(alerts.c.created_at, alerts.c.severity, alerts.c.rule, alerts.c.key, alerts.c.summary,
                  alerts.c.evidence, alerts.c.window_start, alerts.c.window_end, alerts.c.model_version, alerts.c.id)
           .order_by(alerts.c.created_at.desc(), alerts.c.id), "created_at", 20,
           ("created_at", "severity", "rule", "key", "summary", "evidence")),
    Report("throughput", "rows stored per minute: predictions per kind and dead letters, newest first",
           select(stored_per_minute).order_by(stored_per_minute.c.bucket_start.desc(), stored_per_minute.c.kind),
           "bucket_start", 1000),
    Report("offsets", "next offset to read per consumer group and partition, as stored with each batch",
           select(consumer_offsets).order_by(consumer_offsets.c.group_id, consumer_offsets.c.topic,
                                             consumer_offsets.c.partition)),
    Report("totals", "rows per kind of result: posts, tickets, alerts, dead letters",
           select(_totals).order_by(_totals.c.what)),
)}


def catalog() -> list[dict]:
    """The reports, for listings: name, description, whether it takes `since`, default limit."""
    return [{"name": r.name, "description": r.description, "since": r.time_column is not None, "limit": r.limit}
            for r in REPORTS.values()]


def run_report(engine: Engine, name: str, limit: int | None = None, since: datetime | None = None) -> Result:
    """Run a canned report; `since` keeps rows at or after that time, `limit` overrides the default row limit."""
    report = REPORTS.get(name)
    if report is None:
        raise KeyError(f"unknown report {name!r}; choose one of {', '.join(REPORTS)}")
    stmt = report.query
    if since is not None:
        if report.time_column is None:
            raise ValueError(f"report {name!r} takes no 'since'")
        stmt = stmt.where(stmt.selected_columns[report.time_column] >= utc(since))
    limit = limit or report.limit
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return Result(list(result.keys()), [tuple(row) for row in result])


def newest(engine: Engine, name: str) -> datetime | None:
    """The newest value of a report's time column (None for no rows), as an aware UTC datetime."""
    report = REPORTS[name]
    with engine.connect() as conn:
        at = conn.execute(select(func.max(report.query.selected_columns[report.time_column]))).scalar()
    return None if at is None else utc(at)


def connect(database_url: str) -> Engine:
    """An engine with the store's connection options (SQLite busy timeout, pool sizes)."""
    return Store(database_url, group_id="bi").engine


RELATIVE = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d` (before now) or an ISO 8601 time (UTC when it has no offset)."""
    match = RELATIVE.match(value.strip())
    if match:
        return (now or datetime.now(timezone.utc)) - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"invalid time {value!r}: use e.g. 30m, 2h, 7d or 2026-01-31T12:00") from None
    return utc(at)


def utc(at: datetime) -> datetime:
    """Aware and in UTC; naive means UTC already (SQLite hands back naive datetimes, and the store writes UTC)."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def jsonable(value):
    """Datetimes as ISO 8601 in UTC ("2026-01-31T12:00:00Z"); anything else unchanged."""
    return utc(value).isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value
