"""Canned BI reports over the SQL views of migration 0002 (and the store's tables), for the CLI and the dashboard.

Two time bases, never mixed silently (docs/bi.md, "Time"):

- **event time**, `predictions.event_at`: the message's own `created_at`, else its Kafka timestamp, else when it was
  stored; the sentiment views bucket by it, `top_risky_tickets.produced_at` is it, and `alerts.created_at` is the
  event time of the alert's message or the end of its window. It is when things happened, and it is what the alert
  windows use, so a spike alert and the chart's bucket line up; a replay of old messages lands in the past.
- **stored time**, `stored_at`: when the worker wrote the row; `stored_per_minute` (throughput) buckets by it.

`since` filters a report on its own time column (event time, except `throughput`, which has only stored time);
`stored_since` keeps the rows stored at or after a time, whatever their event time. A window that leaves nothing is
explained by `empty_hint`.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import (
    DateTime, Float, Integer, String, Text, case, cast, column, func, literal, select, table, type_coerce, union_all,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Select

from streamsense.models.risk import LEVELS
from streamsense.streams.drift.windows import drift_windows
from streamsense.streams.feedback import quality
from streamsense.streams.feedback.schema import feedback
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


EVENT, STORED = "event time", "stored time"
SQLITE_BUCKETS = {"minute": "%Y-%m-%d %H:%M:00.000000", "hour": "%Y-%m-%d %H:00:00.000000",  # as migration 0002
                  "day": "%Y-%m-%d 00:00:00.000000"}


def _bucket(unit: str, col, dialect: str) -> ColumnElement:
    """The start of the UTC minute, hour or day `col` falls in, as the views of migration 0002 compute it."""
    if dialect == "postgresql":
        return type_coerce(func.timezone("UTC", func.date_trunc(unit, func.timezone("UTC", col))), TZ)
    return type_coerce(func.strftime(SQLITE_BUCKETS[unit], col), TZ)


@dataclass(frozen=True)
class Source:
    """Stored rows a report is made of, for `empty_hint`: a table, a filter, and its event and stored time columns."""
    table: object
    noun: str
    where: tuple = ()
    event: str | None = "event_at"
    stored: str | None = "stored_at"


@dataclass(frozen=True)
class Report:
    name: str
    description: str
    query: Select
    time_column: str | None = None  # what `since` filters on; None: the report takes no `since`
    limit: int | None = None  # default row limit
    table: tuple[str, ...] = ()  # the columns `streamsense query` shows without --json (default: all)
    time_base: str | None = None  # what time_column holds: EVENT or STORED
    bucket: str | None = None  # "minute"/"hour": time_column is a bucket start of that unit; None: a row's own time
    # How `stored_since` applies: fn(stmt, at, dialect) -> stmt; None: the report has no stored time to filter on.
    stored_filter: Callable[[Select, datetime, str], Select] | None = None
    sources: tuple[Source, ...] = field(default=())  # what an empty result is explained with
    # Computed in Python over `query`'s rows (then `limit` caps its output, not the rows read): fn(rows) -> (columns,
    # rows); None: the report is the query itself.
    compute: Callable[[list[tuple]], tuple[list[str], list[tuple]]] | None = None

    @property
    def time(self) -> str | None:
        """What `since` filters on, in words, e.g. "bucket_start (event time)"."""
        return f"{self.time_column} ({self.time_base})" if self.time_column else None


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict]:
        """Rows as JSON-ready dicts (datetimes as UTC ISO 8601)."""
        return [{c: jsonable(v) for c, v in zip(self.columns, row)} for row in self.rows]


def _sentiment_query(unit: str, dialect: str, stored_since: datetime) -> Select:
    """The sentiment view's query over the predictions stored at or after `stored_since` (the view has no stored
    time: its rows are aggregates), same columns, buckets and order."""
    start = _bucket(unit, predictions.c.event_at, dialect)
    negative = func.sum(case((predictions.c.sentiment == "negative", 1), else_=0))
    stmt = (select(predictions.c.kind, predictions.c.grp, start.label("bucket_start"), func.count().label("n"),
                   negative.label("negative"),
                   func.sum(case((predictions.c.sentiment == "neutral", 1), else_=0)).label("neutral"),
                   func.sum(case((predictions.c.sentiment == "positive", 1), else_=0)).label("positive"),
                   (cast(negative, Float) / func.count()).label("negative_share"))
            .where(predictions.c.stored_at >= stored_since)
            .group_by(predictions.c.kind, predictions.c.grp, start))
    return stmt.order_by(stmt.selected_columns.bucket_start.desc(), predictions.c.kind, predictions.c.grp)


def _sentiment_report(view, unit: str) -> Report:
    return Report(f"sentiment-{unit}", f"messages and sentiment counts per kind and group (brand/product) per {unit} "
                  "of event time, newest first",
                  select(view).order_by(view.c.bucket_start.desc(), view.c.kind, view.c.grp),
                  "bucket_start", 1000, time_base=EVENT, bucket=unit,
                  stored_filter=lambda stmt, at, dialect: _sentiment_query(unit, dialect, at),
                  sources=(Source(predictions, "messages"),))


def _stored_tickets(stmt: Select, at: datetime, dialect: str) -> Select:
    stored = select(predictions.c.message_id).where(predictions.c.kind == "ticket", predictions.c.stored_at >= at)
    return stmt.where(top_risky_tickets.c.ticket_id.in_(stored))


def _languages_query(*where) -> Select:
    """Messages per kind and identified language (migration 0004; NULL: stored before it, never identified), how
    many of them the model supports, and that share."""
    c = predictions.c
    supported = func.sum(case((c.supported.is_(True), 1), else_=0))
    return (select(c.kind, c.lang, func.count().label("n"), supported.label("supported"),
                   (cast(supported, Float) / func.count()).label("supported_share"))
            .where(*where).group_by(c.kind, c.lang)
            .order_by(func.count().desc(), c.kind, func.coalesce(c.lang, "")))  # NULL first on both databases


def _top_terms(rows: list[tuple]) -> tuple[list[str], list[tuple]]:
    from streamsense.streams.alerting.terms import top_terms

    return (["kind", "grp", "window_start", "window_end", "term", "messages", "baseline", "z", "log_odds",
             "window_messages", "baseline_messages"], top_terms(rows))


def _top_terms_query():
    from streamsense.streams.alerting.terms import REPORT_ROWS

    c = predictions.c
    return (select(c.kind, c.grp, c.event_at, c.text).where(c.grp != "", c.text.is_not(None), c.text != "")
            .order_by(c.event_at.desc()).limit(REPORT_ROWS))


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
    Report("top-risky-tickets", "tickets with the highest risk score (produced_at: the ticket's event time)",
           select(top_risky_tickets).order_by(top_risky_tickets.c.risk_score.desc(), top_risky_tickets.c.ticket_id),
           "produced_at", 20, ("ticket_id", "product", "priority", "risk_level", "risk_score", "excerpt"),
           time_base=EVENT, stored_filter=_stored_tickets,
           sources=(Source(predictions, "tickets", (predictions.c.kind == "ticket",)),)),
    Report("alerts-by-rule", "alerts per rule and severity, with the newest one's time",
           select(alert_counts_by_rule).order_by(alert_counts_by_rule.c.n.desc(), alert_counts_by_rule.c.rule,
                                                 _level_rank(alert_counts_by_rule.c.severity))),
    Report("latest-alerts", "the newest alerts with their evidence (created_at: event time of the message, or the "
           "window's end)",
           select(alerts.c.created_at, alerts.c.severity, alerts.c.rule, alerts.c.key, alerts.c.summary,
                  alerts.c.evidence, alerts.c.window_start, alerts.c.window_end, alerts.c.model_version, alerts.c.id)
           .order_by(alerts.c.created_at.desc(), alerts.c.id), "created_at", 20,
           ("created_at", "severity", "rule", "key", "summary", "evidence"), time_base=EVENT,
           sources=(Source(alerts, "alerts", event="created_at", stored=None),)),
    Report("throughput", "rows stored per minute of stored time: predictions per kind and dead letters, newest first",
           select(stored_per_minute).order_by(stored_per_minute.c.bucket_start.desc(), stored_per_minute.c.kind),
           "bucket_start", 1000, time_base=STORED, bucket="minute",
           stored_filter=lambda stmt, at, dialect: stmt.where(stored_per_minute.c.bucket_start >= at),
           sources=(Source(predictions, "rows", event=None), Source(dead_letters, "rows", event=None))),
    Report("languages", "messages per kind and language identified in the text (lang NULL: stored before language "
           "identification), with how many and what share the model supports",
           _languages_query(), stored_filter=lambda stmt, at, dialect: _languages_query(predictions.c.stored_at >= at),
           sources=(Source(predictions, "messages"),)),
    Report("top-terms", "per kind, group and 5-minute window of event time, the terms that set the window's messages "
           "apart from the group's previous 30 minutes (computed in Python over the newest 20,000 stored texts: "
           "docs/alerts.md)", _top_terms_query(), "event_at", 200,
           ("window_start", "kind", "grp", "term", "messages", "baseline", "z"), time_base=EVENT,
           stored_filter=lambda stmt, at, dialect: stmt.where(predictions.c.stored_at >= at),
           sources=(Source(predictions, "messages"),), compute=_top_terms),
    Report("drift-windows", "drift per model version, scope and window (window_start: by Kafka timestamp), newest "
           "first: messages, status (drift, stable, too small, no reference) and what moved most "
           "(`streamsense drift explain` tells more)",
           select(drift_windows.c.window_start, drift_windows.c.model_version, drift_windows.c.scope,
                  drift_windows.c.messages, drift_windows.c.status, drift_windows.c.summary,
                  drift_windows.c.judged_at, drift_windows.c.window_seconds)
           .order_by(drift_windows.c.window_start.desc(), drift_windows.c.model_version, drift_windows.c.scope),
           "window_start", 100, ("window_start", "model_version", "scope", "messages", "status", "summary"),
           time_base=EVENT,
           sources=(Source(drift_windows, "drift windows", event="window_start", stored="updated_at"),)),
    # people's verdicts (streams/feedback/, docs/bi.md "Feedback")
    Report("feedback-labels", "verdicts collected per kind, head, source and verdict: how many carry a label, from "
           "how many people, the newest", quality.labels_query(),
           sources=(Source(feedback, "verdicts", event="created_at", stored="updated_at"),)),
    Report("feedback-precision", "precision of each head's predicted label, each alert rule and each rule a "
           "shadowed challenger would have fired, from people's verdicts, with 95 % Wilson intervals; *_random: from "
           "the review queue's random share only (unbiased)",
           quality.precision_query(), table=("scope", "name", "predicted", "model_version", "n", "precision", "low",
                                             "high", "n_random", "precision_random"),
           compute=quality.with_intervals,
           sources=(Source(feedback, "verdicts", event="created_at", stored="updated_at"),)),
    Report("offsets", "next offset to read per consumer group and partition, as stored with each batch",
           select(consumer_offsets).order_by(consumer_offsets.c.group_id, consumer_offsets.c.topic,
                                             consumer_offsets.c.partition)),
    Report("totals", "rows per kind of result: posts, tickets, alerts, dead letters",
           select(_totals).order_by(_totals.c.what)),
)}


def catalog() -> list[dict]:
    """The reports, for listings: name, description, whether it takes `since` and on what (`since_on`, e.g.
    "bucket_start (event time)"), whether it takes `stored_since`, default limit."""
    return [{"name": r.name, "description": r.description, "since": r.time_column is not None, "since_on": r.time,
             "stored_since": r.stored_filter is not None, "limit": r.limit}
            for r in REPORTS.values()]


def _report(name: str) -> Report:
    report = REPORTS.get(name)
    if report is None:
        raise KeyError(f"unknown report {name!r}; choose one of {', '.join(REPORTS)}")
    return report


def run_report(engine: Engine, name: str, limit: int | None = None, since: datetime | None = None,
               stored_since: datetime | None = None) -> Result:
    """Run a canned report. `since` keeps rows whose report time column (`Report.time`: event time, except for
    `throughput`: stored time) is at or after that time; for a bucketed report, the buckets starting at or after it.
    `stored_since` keeps what was stored at or after that time: the rows (tickets), or the messages aggregated into
    each bucket (sentiment) or the stored-time buckets (throughput). `limit` overrides the default row limit."""
    report = _report(name)
    stmt = report.query
    if stored_since is not None:
        if report.stored_filter is None:
            raise ValueError(f"report {name!r} takes no 'stored_since'" + (
                f": it has no stored time; 'since' filters on {report.time}" if report.time_column else ""))
        stmt = report.stored_filter(stmt, utc(stored_since), engine.dialect.name)
    if since is not None:
        if report.time_column is None:
            raise ValueError(f"report {name!r} takes no 'since'")
        stmt = stmt.where(stmt.selected_columns[report.time_column] >= utc(since))
    limit = limit or report.limit
    if report.compute is not None:
        with engine.connect() as conn:
            columns, rows = report.compute([tuple(row) for row in conn.execute(stmt)])
        return Result(columns, rows[:limit] if limit else rows)
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


def empty_hint(engine: Engine, name: str, since: str | datetime | None = None,
               stored_since: str | datetime | None = None, now: datetime | None = None) -> str:
    """Why a report with this window returned no rows, and what would show some, e.g. "0 rows in the last 30m by
    event time; 570 messages stored, event times 2026-11-01 09:00 … 2026-11-01 09:29 UTC, written 2026-11-28 07:02 …
    2026-11-28 07:02 UTC (use --since 27d, or --stored-since 30m)": how many rows the report is made of, their event
    and stored times, and the --since / --stored-since that would reach back to them. `since` and `stored_since` as
    given to the CLI (`30m`, an ISO time) or as datetimes; `now` for relative times (default: the clock)."""
    report = _report(name)
    now = now or datetime.now(timezone.utc)
    since_at = _at(since, now)
    stored_at = _at(stored_since, now)
    since_base = report.time_base or EVENT
    window = []
    if since_at is not None:
        window.append(f"stored {_window(since, since_at)}" if since_base == STORED
                      else f"{_window(since, since_at)} by {since_base}")
    if stored_at is not None:
        window.append(f"stored {_window(stored_since, stored_at)}")
    head = "0 rows " + " and ".join(window) if window else "0 rows"
    if not report.sources:
        return head
    total, events, stored = _extent(engine, report.sources)
    noun = report.sources[0].noun
    if not total:
        return f"{head}: no {noun} stored at all (is the worker writing to this database?)"
    body = [f"{total} {noun} stored"]
    if events[0] is not None:
        body.append(f"{'alert' if noun == 'alerts' else 'event'} times {_span(events)}")
    if stored[0] is not None:
        body.append(f"written {_span(stored)}")
    use = []
    oldest_for_since = stored[0] if since_base == STORED else events[0]
    if since_at is not None and oldest_for_since is not None and oldest_for_since < since_at:
        floor = _floor(oldest_for_since, report.bucket)
        use.append(f"--since {_covering(now - floor)}" if floor < now else f"--since {_iso(floor)}")
    if stored_at is not None and stored[0] is not None and stored[0] < stored_at:
        floor = _floor(stored[0], "minute" if since_base == STORED else None)
        use.append(f"--stored-since {_covering(now - floor)}")
    if (since_at is not None and stored_at is None and since_base == EVENT and report.stored_filter is not None
            and stored[1] is not None and stored[1] >= since_at):
        use.append(f"--stored-since {since if isinstance(since, str) else _iso(since_at)}")
    return f"{head}; {', '.join(body)}" + (f" (use {', or '.join(use)})" if use else "")


def _at(value: str | datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    return parse_since(value, now) if isinstance(value, str) else utc(value)


def _window(given: str | datetime, at: datetime) -> str:
    if isinstance(given, str) and RELATIVE.match(given.strip()):
        return f"in the last {given.strip()}"
    return f"since {_minute(at)} UTC"


def _extent(engine: Engine, sources: tuple[Source, ...]) -> tuple[int, tuple, tuple]:
    """Rows in the sources, (oldest, newest) event time and (oldest, newest) stored time (None where unknown)."""
    total, events, stored = 0, [], []
    with engine.connect() as conn:
        for source in sources:
            cols = [func.count()]
            for name in (source.event, source.stored):
                if name is not None:
                    cols += [func.min(source.table.c[name]), func.max(source.table.c[name])]
            row = list(conn.execute(select(*cols).select_from(source.table).where(*source.where)).one())
            total += row.pop(0)
            if source.event is not None:
                events += [utc(t) for t in row[:2] if t is not None]
                row = row[2:]
            if source.stored is not None:
                stored += [utc(t) for t in row[:2] if t is not None]

    def extent(times):
        return (min(times), max(times)) if times else (None, None)

    return total, extent(events), extent(stored)


def _floor(at: datetime, bucket: str | None) -> datetime:
    if bucket == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    if bucket == "minute":
        return at.replace(second=0, microsecond=0)
    return at


def _covering(span: timedelta) -> str:
    """The shortest of `Nd`, `Nh`, `Nm` reaching back at least `span` (whole units, rounded up)."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds > 2 * size:
            return f"{math.ceil(seconds / size)}{unit}"
    return f"{max(1, math.ceil(seconds / 60))}m"


def _minute(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def _span(times: tuple[datetime, datetime]) -> str:
    return f"{_minute(times[0])} … {_minute(times[1])} UTC"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M")


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


# --- the dashboard's panels, over the per-minute counters (streams/counters.py) and indexed time ranges ------------

@dataclass(frozen=True)
class Filters:
    """What every dashboard panel is narrowed to: a range of event time (`start` inclusive, `end` exclusive; None:
    open), a group (channel/brand or product), the identified language, sentiment and risk level (None: any)."""
    start: datetime | None = None
    end: datetime | None = None
    grp: str | None = None
    lang: str | None = None
    sentiment: str | None = None
    risk_level: str | None = None

    @property
    def narrowed(self) -> bool:
        """Whether anything beyond time is filtered (dead letters, which have none of these, then show none)."""
        return any(v is not None for v in (self.grp, self.lang, self.sentiment, self.risk_level))

    def on_counts(self, t, time: bool = True) -> list:
        where = [t.grp == self.grp] if self.grp is not None else []
        where += [t.lang == self.lang] if self.lang is not None else []
        where += [t.sentiment == self.sentiment] if self.sentiment is not None else []
        where += [t.risk_level == self.risk_level] if self.risk_level is not None else []
        if time and self.start is not None:
            where.append(t.bucket_start >= self.start)
        if time and self.end is not None:
            where.append(t.bucket_start < self.end)
        return where

    def on_messages(self, c) -> list:
        where = self.on_counts(c, time=False)
        where += [c.event_at >= self.start] if self.start is not None else []
        where += [c.event_at < self.end] if self.end is not None else []
        return where


def _counts():
    from streamsense.streams.counters import dashboard_counts

    return dashboard_counts


def _counted(f: Filters):
    """The counter rows that cover `f`'s range and filters, as a subquery: whole hours from the hourly counters, the
    minutes at either edge from the per-minute ones (a range of days reads hours, not every minute)."""
    from streamsense.streams.counters import EVENT, HOUR

    t = _counts().c
    cols = (t.kind, t.grp, t.lang, t.sentiment, t.risk_level, t.n, t.supported, t.risk_score_sum)
    base = f.on_counts(t, time=False)
    first = f.start and _hour(f.start + timedelta(minutes=59))
    last = f.end and _hour(f.end)
    if first and last and first >= last:  # within an hour or two: minutes
        return select(*cols).where(t.basis == EVENT, *f.on_counts(t)).subquery()
    parts = [select(*cols).where(t.basis == HOUR, *base, *([t.bucket_start >= first] if first else []),
                                 *([t.bucket_start < last] if last else []))]
    if f.start and first > f.start:
        parts.append(select(*cols).where(t.basis == EVENT, *base, t.bucket_start >= f.start, t.bucket_start < first))
    if f.end and last < f.end:
        parts.append(select(*cols).where(t.basis == EVENT, *base, t.bucket_start >= last, t.bucket_start < f.end))
    return (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def newest_minute(engine: Engine, stored: bool = False) -> datetime | None:
    """The newest minute with a counted message, of event time (or of stored time), as an aware UTC datetime."""
    from streamsense.streams.counters import EVENT, STORED

    t = _counts().c
    with engine.connect() as conn:
        at = conn.execute(select(func.max(t.bucket_start)).where(t.basis == (STORED if stored else EVENT))).scalar()
    return None if at is None else utc(at)


def _rows(engine: Engine, stmt) -> list[dict]:
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return Result(list(result.keys()), [tuple(r) for r in result]).records()


def _none_if_blank(rows: list[dict], *names: str) -> list[dict]:
    """The counters hold '' for a NULL group or language; the page gets None, as from the raw rows."""
    for row in rows:
        for name in names:
            row[name] = row[name] or None
    return rows


def panel_sentiment(engine: Engine, f: Filters, unit: str, limit: int) -> list[dict]:
    """Messages and sentiment counts per kind, group and minute or hour of event time, newest first (the columns of
    the sentiment report)."""
    from streamsense.streams.counters import EVENT, HOUR

    t = _counts().c
    start = t.bucket_start
    if unit == "hour":  # the hours that hold the range's start and end
        f = replace(f, start=f.start and _hour(f.start), end=f.end and _hour(f.end + timedelta(minutes=59)))
    n = func.sum(t.n)

    def of(sentiment):
        return func.sum(case((t.sentiment == sentiment, t.n), else_=0))

    stmt = (select(t.kind, t.grp, start.label("bucket_start"), n.label("n"), of("negative").label("negative"),
                   of("neutral").label("neutral"), of("positive").label("positive"),
                   (cast(of("negative"), Float) / n).label("negative_share"))
            .where(t.basis == (EVENT if unit == "minute" else HOUR), *f.on_counts(t)).group_by(t.kind, t.grp, start))
    stmt = stmt.order_by(stmt.selected_columns.bucket_start.desc(), t.kind, t.grp).limit(limit)
    return _none_if_blank(_rows(engine, stmt), "grp")


def panel_totals(engine: Engine, f: Filters) -> dict:
    """Messages per kind in the filters."""
    t = _counted(f).c
    with engine.connect() as conn:
        return {kind: int(n) for kind, n in conn.execute(select(t.kind, func.sum(t.n)).group_by(t.kind))}


def panel_risk(engine: Engine, f: Filters) -> list[dict]:
    """Tickets per product and risk level with the mean risk score (the risk-by-product report's columns)."""
    t = _counted(f).c
    n = func.sum(t.n)
    stmt = (select(t.grp.label("product"), t.risk_level, n.label("n"), (func.sum(t.risk_score_sum) / n)
                   .label("avg_risk_score"))
            .where(t.kind == "ticket").group_by(t.grp, t.risk_level)
            .order_by(t.grp, _level_rank(t.risk_level)))
    return _none_if_blank(_rows(engine, stmt), "product")


def panel_languages(engine: Engine, f: Filters, limit: int) -> list[dict]:
    """Messages per kind and identified language, how many the model supports, and that share (the languages
    report's columns and order)."""
    t = _counted(f).c
    n = func.sum(t.n)
    stmt = (select(t.kind, t.lang, n.label("n"), func.sum(t.supported).label("supported"),
                   (cast(func.sum(t.supported), Float) / n).label("supported_share"))
            .group_by(t.kind, t.lang)
            .order_by(n.desc(), t.kind, t.lang).limit(limit))
    return _none_if_blank(_rows(engine, stmt), "lang")


def panel_throughput(engine: Engine, f: Filters, since: datetime | None, limit: int) -> list[dict]:
    """Rows stored per minute of stored time since `since`: predictions per kind in the filters (not their event
    time range: this panel is of stored time), and dead letters unless a filter other than time is set."""
    from streamsense.streams.counters import STORED

    t = _counts().c
    where = [t.basis == STORED, *f.on_counts(t, time=False)] + ([t.bucket_start >= since] if since else [])
    stmt = select(t.kind, t.bucket_start, func.sum(t.n).label("n")).where(*where).group_by(t.kind, t.bucket_start)
    if not f.narrowed:
        minute = _bucket("minute", dead_letters.c.stored_at, engine.dialect.name)
        dead = (select(literal("dead_letter").label("kind"), minute.label("bucket_start"), func.count().label("n"))
                .where(*([dead_letters.c.stored_at >= since] if since else [])).group_by(minute))
        stmt = union_all(stmt, dead).subquery()
        stmt = select(stmt).order_by(stmt.c.bucket_start.desc(), stmt.c.kind)
    else:
        stmt = stmt.order_by(t.bucket_start.desc(), t.kind)
    return _rows(engine, stmt.limit(limit))


def dead_letters_since(engine: Engine, since: datetime | None) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(dead_letters)
                            .where(*([dead_letters.c.stored_at >= since] if since else []))).scalar_one()


def panel_top_tickets(engine: Engine, f: Filters, limit: int) -> list[dict]:
    """The tickets with the highest risk score in the filters (the top-risky-tickets report's columns)."""
    c = predictions.c
    stmt = (select(c.message_id.label("ticket_id"), c.grp.label("product"), c.author.label("customer_id"),
                   c.priority, c.risk_level, c.risk_score, c.risk_explanation, c.sentiment,
                   func.substr(c.text, 1, 160).label("excerpt"), c.event_at.label("produced_at"))
            .where(c.kind == "ticket", *f.on_messages(c)).order_by(c.risk_score.desc(), c.message_id).limit(limit))
    return _rows(engine, stmt)


ALERT_SCAN = 1000  # the newest alerts in the time range a narrowed page looks through


def panel_alerts(engine: Engine, f: Filters, limit: int) -> tuple[list[dict], int]:
    """The newest alerts in the time range (created_at), each per-message one with its message (text as stored,
    every reason: explanation, labels, signals), and how many there are. With a group, language, sentiment or risk
    level filter, a per-message alert is kept when its message matches, a windowed one when its group does (it is
    about a group's window, not one message's language or sentiment), among the newest ALERT_SCAN."""
    a, c = alerts.c, predictions.c
    where = ([a.created_at >= f.start] if f.start is not None else []) + \
        ([a.created_at < f.end] if f.end is not None else [])
    stmt = (select(a.created_at, a.severity, a.rule, a.key, a.summary, a.evidence, a.window_start, a.window_end,
                   a.model_version, a.id).where(*where).order_by(a.created_at.desc(), a.id))
    with engine.connect() as conn:
        if not f.narrowed:
            total = conn.execute(select(func.count()).select_from(alerts).where(*where)).scalar_one()
        found = Result(*_fetch(conn, stmt.limit(ALERT_SCAN if f.narrowed else limit))).records()
        single = {tuple(r["key"].split(":", 1)) for r in found if r["window_start"] is None and ":" in r["key"]}
        messages = {}
        for kind in {k for k, _ in single}:
            ids = [m for k, m in single if k == kind]
            for i in range(0, len(ids), 500):
                rows = conn.execute(select(c.kind, c.message_id, c.grp, c.author, c.text, c.event_at, c.sentiment,
                                           c.lang, c.risk_level, c.risk_score, c.risk_explanation, c.risk_labels,
                                           c.risk_signals).where(c.kind == kind, c.message_id.in_(ids[i:i + 500])))
                for r in rows:
                    messages[(r.kind, r.message_id)] = {k: jsonable(v) for k, v in r._mapping.items()}
    kept = []
    for r in found:
        kind, _, rest = r["key"].partition(":")
        if r["window_start"] is None:
            r["message"] = messages.get((kind, rest))
            if f.narrowed and not _matches(r["message"], f):
                continue
        elif f.grp is not None and rest != f.grp:
            continue
        kept.append(r)
    return kept[:limit], (len(kept) if f.narrowed else total)


def _fetch(conn, stmt):
    result = conn.execute(stmt)
    return list(result.keys()), [tuple(r) for r in result]


def _matches(message: dict | None, f: Filters) -> bool:
    return message is not None and all(
        want is None or message[name] == want
        for name, want in (("grp", f.grp), ("lang", f.lang), ("sentiment", f.sentiment), ("risk_level", f.risk_level)))


def filter_options(engine: Engine, f: Filters | None = None) -> dict:
    """The groups and languages of the time range (of `f`; its other filters are not applied), for the page's filter
    menus."""
    f = f or Filters()
    t = _counted(Filters(start=f.start, end=f.end)).c
    with engine.connect() as conn:
        groups = conn.execute(select(t.kind, t.grp).distinct().where(t.grp != "").order_by(t.kind, t.grp)).all()
        langs = conn.scalars(select(t.lang).distinct().where(t.lang != "").order_by(t.lang)).all()
    return {"groups": [{"kind": k, "grp": g} for k, g in groups], "languages": list(langs),
            "sentiments": ["negative", "neutral", "positive"], "risk_levels": list(LEVELS)}
