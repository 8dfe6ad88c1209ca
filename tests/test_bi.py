"""BI views (migration 0002), canned reports (streamsense.streams.bi), `streamsense query` and
`streamsense alerts tail`."""

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamsense.insights import register
from streamsense.streams.alerting.rules import alert_message
from streamsense.streams.bi import REPORTS, catalog, connect, empty_hint, newest, parse_since, run_report
from streamsense.streams.contracts import Batch
from streamsense.streams.schema import dead_letters, predictions
from streamsense.streams.store import Store
from tests.bi_rows import alert, prediction
from tests.helpers import produce, settings_for

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def utc(text: str) -> str:
    return text + "Z"


POSTS = [
    prediction("post", "p1", "acme", "negative", at(0.1)),
    prediction("post", "p2", "acme", "negative", at(0.5)),
    prediction("post", "p3", "acme", "positive", at(0.99)),
    prediction("post", "p4", "acme", "neutral", at(1)),
    prediction("post", "p5", "globex", "neutral", at(0.2), lang="zh", lang_declared="zh-CN"),
    prediction("post", "p6", "globex", "negative", at(0.7), lang="es"),
    prediction("post", "p7", "acme", "negative", at(75)),
    # no Kafka timestamp: bucketed by when it was stored; no language: stored before migration 0004
    prediction("post", "p8", "acme", "positive", None, lang=None),
]
TICKETS = [
    prediction("ticket", "t1", "food", "neutral", at(2), "my order is late", "low", 0.10, "normal"),
    prediction("ticket", "t2", "food", "negative", at(2), "refund me or I call my lawyer", "high", 0.85, "high"),
    prediction("ticket", "t3", "food", "negative", at(2.5), "this is fraud, I was charged twice", "critical", 0.97,
               "urgent"),
    prediction("ticket", "t4", "software", "neutral", at(3), "the app logs me out", "medium", 0.40, "normal"),
    prediction("ticket", "t5", "software", "negative", at(3), "still broken after the update", "medium", 0.50),
    prediction("ticket", "t6", "software", "negative", at(4), "cancel my subscription now", "high", 0.80, "high"),
]
ALERTS = [
    alert("high_risk", "high", [TICKETS[1]], at(2)),
    alert("high_risk", "critical", [TICKETS[2]], at(2.5)),
    alert("high_risk", "high", [TICKETS[5]], at(4)),
    alert("negative_share_spike", "high", POSTS[:3], at(5), "acme (posts): negative share 67% vs 20%",
          (at(0), at(5))),
]
DEAD = [{"source_topic": "posts", "source_partition": 0, "source_offset": 8, "error": "invalid JSON",
         "payload": b"not json"},
        {"source_topic": "tickets", "source_partition": 1, "source_offset": 5, "error": "missing 'body'",
         "payload": b"{}"}]


@pytest.fixture
def filled(database_url):
    """The rows above, written as two batches the way the worker writes them; yields (url, written_between)."""
    store = Store(database_url, "streamsense")
    store.migrate()
    before = datetime.now(timezone.utc)
    store.write(Batch(POSTS[:5] + TICKETS[:3], ALERTS[:2], DEAD[:1], {("posts", 0): 6, ("tickets", 1): 3}))
    store.write(Batch(POSTS[5:] + TICKETS[3:], ALERTS[2:], DEAD[1:], {("posts", 0): 9, ("tickets", 1): 6,
                                                                        ("tickets", 0): 2}))
    after = datetime.now(timezone.utc)
    store.dispose()
    yield database_url, (before, after)


@pytest.fixture
def engine(filled):
    engine = connect(filled[0])
    yield engine
    engine.dispose()


def records(engine, name, **params):
    return run_report(engine, name, **params).records()


def minute_floor(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def test_sentiment_per_minute_counts_and_shares(engine, filled):
    rows = records(engine, "sentiment-minute")
    timed = {(r["kind"], r["grp"], r["bucket_start"]): r for r in rows if r["bucket_start"].startswith("2026-03-02")}
    assert timed[("post", "acme", utc("2026-03-02T10:00:00"))] == {
        "kind": "post", "grp": "acme", "bucket_start": utc("2026-03-02T10:00:00"), "n": 3, "negative": 2,
        "neutral": 0, "positive": 1, "negative_share": pytest.approx(2 / 3)}
    acme_next = timed[("post", "acme", utc("2026-03-02T10:01:00"))]
    assert (acme_next["n"], acme_next["neutral"], acme_next["negative_share"]) == (1, 1, 0.0)
    globex = timed[("post", "globex", utc("2026-03-02T10:00:00"))]
    assert (globex["n"], globex["negative"], globex["neutral"], globex["negative_share"]) == (2, 1, 1, 0.5)
    assert timed[("post", "acme", utc("2026-03-02T11:15:00"))]["negative_share"] == 1.0
    food = timed[("ticket", "food", utc("2026-03-02T10:02:00"))]
    assert (food["n"], food["negative"], food["neutral"]) == (3, 2, 1)
    assert sum(r["n"] for r in rows) == len(POSTS) + len(TICKETS)
    # p8 has no Kafka timestamp: it lands in the minute it was stored
    before, after = filled[1]
    (stored,) = [r for r in rows if not r["bucket_start"].startswith("2026-03-02")]
    assert (stored["grp"], stored["n"], stored["positive"]) == ("acme", 1, 1)
    assert minute_floor(before) <= datetime.fromisoformat(stored["bucket_start"]) <= minute_floor(after)
    assert [r["bucket_start"] for r in rows] == sorted((r["bucket_start"] for r in rows), reverse=True)


def test_sentiment_per_hour(engine):
    hourly = records(engine, "sentiment-hour", since=T0)
    rows = {(r["grp"], r["bucket_start"]): r for r in hourly if r["kind"] == "post"}
    acme = rows[("acme", utc("2026-03-02T10:00:00"))]
    assert (acme["n"], acme["negative"], acme["neutral"], acme["positive"], acme["negative_share"]) == (4, 2, 1, 1, 0.5)
    assert rows[("globex", utc("2026-03-02T10:00:00"))]["n"] == 2
    assert rows[("acme", utc("2026-03-02T11:00:00"))]["n"] == 1


def test_since_includes_the_bucket_starting_at_that_time(engine):
    since = datetime(2026, 3, 2, 10, 1, tzinfo=timezone.utc)
    rows = records(engine, "sentiment-minute", since=since)
    assert utc("2026-03-02T10:01:00") in {r["bucket_start"] for r in rows}
    assert all(r["bucket_start"] >= utc("2026-03-02T10:01:00") for r in rows)
    assert records(engine, "sentiment-minute", since=since.astimezone(timezone(timedelta(hours=2)))) == rows
    assert len(records(engine, "sentiment-minute", limit=2)) == 2


def test_risk_by_product_level(engine):
    rows = [(r["product"], r["risk_level"], r["n"], round(r["avg_risk_score"], 4))
            for r in records(engine, "risk-by-product")]
    assert rows == [("food", "low", 1, 0.10), ("food", "high", 1, 0.85), ("food", "critical", 1, 0.97),
                    ("software", "medium", 2, 0.45), ("software", "high", 1, 0.80)]


def test_top_risky_tickets_are_ordered_by_score(engine):
    rows = records(engine, "top-risky-tickets")
    assert [r["ticket_id"] for r in rows] == ["t3", "t2", "t6", "t5", "t4", "t1"]
    top = rows[0]
    assert top == {"ticket_id": "t3", "product": "food", "customer_id": "author-t3", "priority": "urgent",
                   "risk_level": "critical", "risk_score": 0.97, "risk_explanation": "critical risk: complaint 0.97",
                   "sentiment": "negative", "excerpt": "this is fraud, I was charged twice",
                   "produced_at": utc("2026-03-02T10:02:30")}
    assert [r["ticket_id"] for r in records(engine, "top-risky-tickets", limit=2)] == ["t3", "t2"]
    assert [r["ticket_id"] for r in records(engine, "top-risky-tickets", since=at(3))] == ["t6", "t5", "t4"]


def test_alert_counts_and_latest_alerts(engine):
    assert [(r["rule"], r["severity"], r["n"], r["last_created_at"]) for r in records(engine, "alerts-by-rule")] == [
        ("high_risk", "high", 2, utc("2026-03-02T10:04:00")),
        ("high_risk", "critical", 1, utc("2026-03-02T10:02:30")),
        ("negative_share_spike", "high", 1, utc("2026-03-02T10:05:00")),
    ]
    latest = records(engine, "latest-alerts", limit=2)
    assert [(a["rule"], a["key"]) for a in latest] == [("negative_share_spike", "post:acme"),
                                                       ("high_risk", "ticket:t6")]
    assert [e["message_id"] for e in latest[0]["evidence"]] == ["p1", "p2", "p3"]
    assert (latest[0]["window_start"], latest[0]["window_end"]) == (utc("2026-03-02T10:00:00"),
                                                                    utc("2026-03-02T10:05:00"))
    assert latest[1]["evidence"][0]["excerpt"] == "cancel my subscription now"


def test_throughput_offsets_and_totals(engine, filled):
    rows = records(engine, "throughput")
    per_kind = {}
    for r in rows:
        per_kind[r["kind"]] = per_kind.get(r["kind"], 0) + r["n"]
    assert per_kind == {"post": len(POSTS), "ticket": len(TICKETS), "dead_letter": len(DEAD)}
    before, after = filled[1]
    assert all(minute_floor(before) <= datetime.fromisoformat(r["bucket_start"]) <= minute_floor(after) for r in rows)
    assert newest(engine, "throughput") == max(datetime.fromisoformat(r["bucket_start"]) for r in rows)
    assert records(engine, "offsets") == [
        {"group_id": "streamsense", "topic": "posts", "partition": 0, "next_offset": 9},
        {"group_id": "streamsense", "topic": "tickets", "partition": 0, "next_offset": 2},
        {"group_id": "streamsense", "topic": "tickets", "partition": 1, "next_offset": 6},
    ]
    assert {r["what"]: r["n"] for r in records(engine, "totals")} == {
        "post": len(POSTS), "ticket": len(TICKETS), "alert": len(ALERTS), "dead_letter": len(DEAD)}


# --- time bases: event time (since) and stored time (stored_since) ----------------------------------------------

def age(engine, message_ids: list[str], stored_at: datetime, dead_offsets: tuple[int, ...] = ()) -> None:
    """Pretend these rows were written at `stored_at` (their event times stay as they are)."""
    with engine.begin() as conn:
        conn.execute(predictions.update().where(predictions.c.message_id.in_(message_ids)).values(stored_at=stored_at))
        if dead_offsets:
            conn.execute(dead_letters.update().where(dead_letters.c.source_offset.in_(dead_offsets))
                         .values(stored_at=stored_at))


def test_stored_since_keeps_what_was_written_since_and_buckets_it_by_event_time(engine, filled):
    before = filled[1][0]
    everything = {name: records(engine, name) for name in ("sentiment-minute", "sentiment-hour")}
    # the first batch was written two hours ago; its messages' event times are unchanged
    age(engine, [r["message_id"] for r in POSTS[:5] + TICKETS[:3]], before - timedelta(hours=2), (8,))
    cutoff = before - timedelta(hours=1)

    # stored_since before every write: the same rows as the views (the report rebuilds them from predictions)
    for name, rows in everything.items():
        assert records(engine, name, stored_since=before - timedelta(hours=3)) == rows, name
        assert (records(engine, name, since=T0, stored_since=before - timedelta(hours=3))
                == records(engine, name, since=T0)), name

    rows = records(engine, "sentiment-minute", stored_since=cutoff)
    assert sum(r["n"] for r in rows) == len(POSTS[5:] + TICKETS[3:])
    timed = {(r["kind"], r["grp"], r["bucket_start"]): (r["n"], r["negative"], r["negative_share"]) for r in rows}
    assert timed[("post", "globex", utc("2026-03-02T10:00:00"))] == (1, 1, 1.0)  # p6 only: p5 was written earlier
    assert timed[("post", "acme", utc("2026-03-02T11:15:00"))] == (1, 1, 1.0)
    assert timed[("ticket", "software", utc("2026-03-02T10:03:00"))] == (2, 1, 0.5)
    assert ("post", "acme", utc("2026-03-02T10:00:00")) not in timed
    assert [r["bucket_start"] for r in rows] == sorted((r["bucket_start"] for r in rows), reverse=True)
    # both: written in the last hour and in buckets from 10:01 of event time
    both = records(engine, "sentiment-minute", since=at(1), stored_since=cutoff)
    assert sum(r["n"] for r in both) == 5 and min(r["bucket_start"] for r in both) == utc("2026-03-02T10:03:00")
    assert records(engine, "sentiment-minute", stored_since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []

    assert [r["ticket_id"] for r in records(engine, "top-risky-tickets", stored_since=cutoff)] == ["t6", "t5", "t4"]
    assert [r["ticket_id"] for r in records(engine, "top-risky-tickets", since=at(3.5), stored_since=cutoff)] == ["t6"]

    # throughput has only stored time: since and stored_since filter the same buckets
    recent = records(engine, "throughput", stored_since=cutoff)
    assert recent == records(engine, "throughput", since=cutoff)
    per_kind = {}
    for r in recent:
        per_kind[r["kind"]] = per_kind.get(r["kind"], 0) + r["n"]
    assert per_kind == {"post": 3, "ticket": 3, "dead_letter": 1}

    with pytest.raises(ValueError, match="no stored time; 'since' filters on created_at"):
        run_report(engine, "latest-alerts", stored_since=cutoff)
    with pytest.raises(ValueError, match="takes no 'stored_since'"):
        run_report(engine, "offsets", stored_since=cutoff)


def test_catalog_says_which_time_each_report_filters_on():
    listed = {r["name"]: (r["since_on"], r["stored_since"]) for r in catalog()}
    assert listed == {
        "sentiment-minute": ("bucket_start (event time)", True),
        "sentiment-hour": ("bucket_start (event time)", True),
        "risk-by-product": (None, False),
        "top-risky-tickets": ("produced_at (event time)", True),
        "alerts-by-rule": (None, False),
        "latest-alerts": ("created_at (event time)", False),
        "throughput": ("bucket_start (stored time)", True),
        "languages": (None, True),
        "top-terms": ("event_at (event time)", True),
        "drift-windows": ("window_start (event time)", False),
        "feedback-labels": (None, False),
        "feedback-precision": (None, False),
        "offsets": (None, False),
        "totals": (None, False),
    }


REPLAYED = POSTS[:7] + TICKETS  # each with its own created_at, 2026-03-02 10:00 … 11:15


@pytest.fixture
def replayed(database_url):
    """Old messages (event times 2026-03-02) written now, as right after `streamsense demo`; yields the url."""
    store = Store(database_url, "streamsense")
    store.migrate()
    store.write(Batch(REPLAYED, ALERTS, DEAD, {("posts", 0): 7}))
    store.dispose()
    yield database_url


def test_empty_window_hint_counts_what_lies_outside(replayed):
    engine = connect(replayed)
    written = datetime(2026, 4, 1, 12, 0, tzinfo=timezone.utc)
    age(engine, [r["message_id"] for r in REPLAYED], written, (5, 8))
    now = written + timedelta(minutes=5)

    assert run_report(engine, "sentiment-minute", since=parse_since("30m", now)).rows == []
    assert empty_hint(engine, "sentiment-minute", "30m", now=now) == (
        "0 rows in the last 30m by event time; 13 messages stored, event times 2026-03-02 10:00 … 2026-03-02 11:15 "
        "UTC, written 2026-04-01 12:00 … 2026-04-01 12:00 UTC (use --since 31d, or --stored-since 30m)")
    # what the hint suggests shows the rows
    assert sum(r["n"] for r in records(engine, "sentiment-minute", since=parse_since("31d", now))) == 13
    assert sum(r["n"] for r in records(engine, "sentiment-minute", stored_since=parse_since("30m", now))) == 13

    later = written + timedelta(hours=1)
    assert empty_hint(engine, "sentiment-hour", "2h", "30m", now=later) == (
        "0 rows in the last 2h by event time and stored in the last 30m; 13 messages stored, event times "
        "2026-03-02 10:00 … 2026-03-02 11:15 UTC, written 2026-04-01 12:00 … 2026-04-01 12:00 UTC "
        "(use --since 31d, or --stored-since 60m)")
    assert empty_hint(engine, "top-risky-tickets", stored_since=datetime(2026, 4, 2, tzinfo=timezone.utc),
                      now=later) == (
        "0 rows stored since 2026-04-02 00:00 UTC; 6 tickets stored, event times 2026-03-02 10:02 … "
        "2026-03-02 10:04 UTC, written 2026-04-01 12:00 … 2026-04-01 12:00 UTC (use --stored-since 60m)")
    assert empty_hint(engine, "throughput", "30m", now=later) == (
        "0 rows stored in the last 30m; 15 rows stored, written 2026-04-01 12:00 … 2026-04-01 12:00 UTC "
        "(use --since 60m)")
    assert empty_hint(engine, "latest-alerts", "30m", now=now) == (
        "0 rows in the last 30m by event time; 4 alerts stored, alert times 2026-03-02 10:02 … 2026-03-02 10:05 UTC "
        "(use --since 31d)")
    engine.dispose()


def test_empty_window_hint_on_an_empty_store(database_url):
    Store(database_url, "g").migrate()
    engine = connect(database_url)
    assert empty_hint(engine, "sentiment-minute", "30m") == (
        "0 rows in the last 30m by event time: no messages stored at all (is the worker writing to this database?)")
    assert empty_hint(engine, "offsets") == "0 rows"
    engine.dispose()


def test_every_report_runs_on_an_empty_store(database_url):
    Store(database_url, "g").migrate()
    engine = connect(database_url)
    for name in REPORTS:
        result = run_report(engine, name)
        assert result.columns and (result.rows == [] or name == "totals"), name
    assert newest(engine, "sentiment-minute") is None
    engine.dispose()


def test_languages_report(engine, filled):
    assert records(engine, "languages") == [
        {"kind": "ticket", "lang": "en", "n": 6, "supported": 6, "supported_share": 1.0},
        {"kind": "post", "lang": "en", "n": 5, "supported": 5, "supported_share": 1.0},
        {"kind": "post", "lang": None, "n": 1, "supported": 0, "supported_share": 0.0},  # stored before 0004
        {"kind": "post", "lang": "es", "n": 1, "supported": 0, "supported_share": 0.0},
        {"kind": "post", "lang": "zh", "n": 1, "supported": 0, "supported_share": 0.0},
    ]
    before, after = filled[1]
    assert sum(r["n"] for r in records(engine, "languages", stored_since=before)) == 14
    assert records(engine, "languages", stored_since=after + timedelta(minutes=1)) == []
    with pytest.raises(ValueError, match="takes no 'since'"):
        run_report(engine, "languages", since=T0)


def test_bad_report_parameters(engine):
    with pytest.raises(KeyError, match="unknown report"):
        run_report(engine, "nope")
    with pytest.raises(ValueError, match="takes no 'since'"):
        run_report(engine, "offsets", since=T0)


def test_parse_since():
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("30m", now) == datetime(2026, 3, 2, 11, 30, tzinfo=timezone.utc)
    assert parse_since("2h", now) == datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    assert parse_since("7d", now) == datetime(2026, 2, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2026-03-02T10:01") == datetime(2026, 3, 2, 10, 1, tzinfo=timezone.utc)
    assert parse_since("2026-03-02T12:01+02:00") == datetime(2026, 3, 2, 10, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="invalid time"):
        parse_since("yesterday")


def test_downgrade_drops_the_views(database_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    from streamsense.streams.store import migrate

    migrate(database_url)
    engine = connect(database_url)
    assert {"sentiment_by_group_minute", "top_risky_tickets"} <= set(inspect(engine).get_view_names())
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "streams" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.downgrade(cfg, "0001")
    assert inspect(engine).get_view_names() == []
    migrate(database_url)
    assert len(inspect(engine).get_view_names()) == 6
    engine.dispose()


# --- the CLI -----------------------------------------------------------------------------------------------------

def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def invoke(args: list[str], **env):
    return CliRunner().invoke(cli(), args, env={"COLUMNS": "160", **env})


def test_query_list(tmp_path):
    result = invoke(["query", "--list"])
    assert result.exit_code == 0, result.output
    for name in REPORTS:
        assert name in result.stdout
    # at 80 columns the names (what a user types) and the options stay whole; the descriptions wrap instead
    narrow = invoke(["query", "--list"], COLUMNS="80").stdout
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in narrow, narrow
    assert [n for n in REPORTS if any(line.startswith(f"│ {n} ") for line in lines)] == list(REPORTS), narrow
    assert "--stored-since" in narrow
    listed = json.loads(invoke(["query", "--list", "--json"]).stdout)
    assert [r["name"] for r in listed] == list(REPORTS)


def test_query_json_and_table(filled):
    url = filled[0]
    result = invoke(["query", "top-risky-tickets", "--json", "--limit", "2"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["ticket_id"], r["risk_score"]) for r in rows] == [("t3", 0.97), ("t2", 0.85)]
    result = invoke(["query", "alerts-by-rule", "--json"], STREAMSENSE_DATABASE_URL=url)
    assert [(r["rule"], r["n"]) for r in json.loads(result.stdout)] == [
        ("high_risk", 2), ("high_risk", 1), ("negative_share_spike", 1)]
    result = invoke(["query", "risk-by-product"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert "software" in result.stdout and "critical" in result.stdout and "5 rows" in result.stdout
    result = invoke(["query", "sentiment-minute", "--json", "--since", "2026-03-02T10:01"],
                    STREAMSENSE_DATABASE_URL=url)
    assert min(r["bucket_start"] for r in json.loads(result.stdout)) == utc("2026-03-02T10:01:00")


def test_query_rejects_bad_input(filled):
    url = filled[0]
    result = invoke(["query", "nope"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 2 and "unknown report 'nope'" in result.output
    result = invoke(["query", "offsets", "--since", "1h"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 2 and "takes no 'since'" in result.output
    result = invoke(["query", "throughput", "--since", "yesterday"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 2 and "invalid time" in result.output


def test_query_by_event_time_and_by_stored_time(replayed):
    """Right after a replay of old messages: --since (event time) finds nothing and says why, --stored-since finds
    them."""
    url = replayed
    result = invoke(["query", "sentiment-minute", "--since", "30m", "--json"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert ("0 rows in the last 30m by event time; 13 messages stored, event times 2026-03-02 10:00 … "
            "2026-03-02 11:15 UTC, written ") in result.stderr
    assert result.stderr.rstrip().endswith(", or --stored-since 30m)")
    result = invoke(["query", "sentiment-minute", "--stored-since", "30m", "--json"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sum(r["n"] for r in rows) == 13 and all(r["bucket_start"].startswith("2026-03-02") for r in rows)
    assert result.stderr == ""
    result = invoke(["query", "top-risky-tickets", "--since", "30m"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 0 and "0 rows" in result.stdout
    assert "6 tickets stored" in result.stderr
    result = invoke(["query", "latest-alerts", "--stored-since", "30m"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 2 and "no stored time" in result.output and "--stored-since" in result.output
    result = invoke(["query", "throughput", "--stored-since", "soon"], STREAMSENSE_DATABASE_URL=url)
    assert result.exit_code == 2 and "invalid time" in result.output and "--stored-since" in result.output
    result = invoke(["query", "--list"])
    assert "bucket_start (stored time)" in result.stdout and "--stored-since" in result.stdout


def test_alerts_tail_prints_alerts_from_the_topic(broker, unique, tmp_path):
    settings = settings_for(broker.bootstrap_servers, f"sqlite:///{tmp_path / 'unused.db'}", unique)
    messages = [json.dumps(alert_message(a), ensure_ascii=False).encode() for a in ALERTS[1:]]
    produce(settings, settings.topic_alerts, [messages[0], b"not an alert", *messages[1:]])
    env = {"STREAMSENSE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "STREAMSENSE_TOPIC_ALERTS": settings.topic_alerts}

    # No --max here: the bad message sits on another partition than some alerts, and a tail that stops after
    # three alerts may never reach it. Reading until the timeout sees all four.
    result = invoke(["alerts", "tail", "--json", "--from-beginning", "--timeout", "10"], **env)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(a["id"] for a in lines) == sorted(a["id"] for a in ALERTS[1:])
    spike = next(a for a in lines if a["rule"] == "negative_share_spike")
    assert spike["window"] == {"start": "2026-03-02T10:00:00+00:00", "end": "2026-03-02T10:05:00+00:00"}
    assert [e["message_id"] for e in spike["evidence"]] == ["p1", "p2", "p3"]
    assert "not JSON" in result.stderr

    result = invoke(["alerts", "tail", "--from-beginning", "--max", "3", "--timeout", "60"], **env)
    assert result.exit_code == 0, result.output
    assert "CRITICAL" in result.stdout and "ticket:t3" in result.stdout
    assert "this is fraud, I was charged twice" in result.stdout
    assert "acme (posts): negative share 67% vs 20%" in result.stdout
    assert "window 2026-03-02T10:00:00+00:00 → 2026-03-02T10:05:00+00:00" in result.stdout

    # From the end of the topic: an alert produced while it runs is printed, then --timeout ends it. (The embedded
    # broker's end offsets lag by one on some partitions, so older alerts may show up too; not asserted.)
    fresh = alert("high_risk", "critical", [TICKETS[0]], at(9), "arrived while tailing")
    message = json.dumps(alert_message(fresh)).encode()
    producer = threading.Timer(4, produce, (settings, settings.topic_alerts, [message]))
    producer.start()
    result = invoke(["alerts", "tail", "--json", "--timeout", "15"], **env)
    producer.join()
    assert result.exit_code == 0, result.output
    assert fresh["id"] in [json.loads(line)["id"] for line in result.stdout.splitlines()]


# --- the dashboard counters (migration 0008, streams/counters.py) -------------------------------------------------

def counters(engine) -> dict[tuple, tuple]:
    from streamsense.streams.counters import dashboard_counts as t

    with engine.connect() as conn:
        return {(r.basis, utc_naive(r.bucket_start), r.kind, r.grp, r.lang, r.sentiment, r.risk_level):
                (r.n, r.supported, round(r.risk_score_sum, 9)) for r in conn.execute(t.select())}


def utc_naive(at: datetime) -> datetime:
    return at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo else at


def counted_from_rows(engine) -> dict[tuple, tuple]:
    """What the counters must hold, computed here from the stored predictions themselves."""
    c = predictions.c
    out: dict[tuple, list] = {}
    with engine.connect() as conn:
        for r in conn.execute(select_rows(c)):
            minute = minute_floor(utc_naive(r.event_at))
            for basis, at in (("e", minute), ("h", minute.replace(minute=0)),
                              ("s", minute_floor(utc_naive(r.stored_at)))):
                n = out.setdefault((basis, at, r.kind, r.grp or "", r.lang or "", r.sentiment, r.risk_level),
                                   [0, 0, 0.0])
                n[0] += 1
                n[1] += bool(r.supported)
                n[2] += r.risk_score
    return {k: (n, s, round(score, 9)) for k, (n, s, score) in out.items()}


def select_rows(c):
    from sqlalchemy import select

    return select(c.kind, c.grp, c.lang, c.sentiment, c.risk_level, c.risk_score, c.supported, c.event_at,
                  c.stored_at)


def test_counters_equal_the_rows_after_batches_replays_a_restart_and_the_backfill(database_url):
    """Every batch adds what it inserted, once: a replayed batch (all duplicates), a batch half new, a message
    twice in one batch, and a new Store on the same database (a restart) leave the counters equal to the aggregate
    over the stored rows; migration 0008's backfill (down one revision from it and up again) rebuilds the same."""
    from alembic import command
    from alembic.config import Config

    from streamsense.streams.counters import rebuild

    store = Store(database_url, "streamsense")
    store.migrate()
    store.write(Batch(POSTS[:5] + TICKETS[:3], [], [], {("posts", 0): 6}))
    store.write(Batch(POSTS[:5] + TICKETS[:3], [], [], {("posts", 0): 6}))  # a replay: nothing new
    store.write(Batch(POSTS[3:7] + [POSTS[6]] + TICKETS[2:5], [], [], {("posts", 0): 8}))  # half new, one twice
    store.dispose()
    restarted = Store(database_url, "streamsense")
    restarted.write(Batch(POSTS[5:] + TICKETS[4:], [], [], {("posts", 0): 9}))
    engine = restarted.engine
    got = counters(engine)
    assert got == counted_from_rows(engine)
    assert sum(n for (basis, *_), (n, _, _) in got.items() if basis == "e") == len(POSTS) + len(TICKETS)
    # times with an offset and without a Kafka timestamp (p8: bucketed by when it was stored) counted as the views do
    view = run_report(engine, "sentiment-minute").records()
    assert sorted((r["kind"], r["grp"], r["bucket_start"], r["n"]) for r in view) == sorted(
        (r["kind"], r["grp"] or None, r["bucket_start"], r["n"])
        for r in bi_panel(engine, "minute"))
    with engine.begin() as conn:
        rebuild(conn)
    assert counters(engine) == got
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "streams" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.downgrade(cfg, "0008-1")
    assert "dashboard_counts" not in __import__("sqlalchemy").inspect(engine).get_table_names()
    restarted.dispose()
    old_schema = Store(database_url, "streamsense")  # a store on the schema before 0008 writes without counting
    old_schema.write(Batch([prediction("post", "late", "acme", "negative", at(9))], [], [], {}))
    old_schema.migrate()  # ... and the backfill counts what it wrote
    assert counters(old_schema.engine) == counted_from_rows(old_schema.engine) != got
    old_schema.write(Batch([prediction("post", "later", "acme", "negative", at(9))], [], [], {}))  # counted now
    assert counters(old_schema.engine) == counted_from_rows(old_schema.engine)
    old_schema.dispose()


def bi_panel(engine, unit):
    from streamsense.streams.bi import Filters, panel_sentiment

    return panel_sentiment(engine, Filters(), unit, 10000)


def test_dashboard_panels_equal_the_views_over_every_filter(engine, filled):
    """Each panel read from the counters equals the same aggregate over the raw rows, for a time range cut inside
    an hour (hourly counters inside, per-minute ones at the edges) and each filter."""
    from streamsense.streams.bi import Filters, panel_languages, panel_risk, panel_top_tickets, panel_totals

    rows = POSTS + TICKETS
    cases = [Filters(), Filters(start=at(0.5).replace(second=0), end=at(3)), Filters(start=at(1), end=at(76)),
             Filters(grp="acme"), Filters(lang="zh"), Filters(sentiment="negative"), Filters(risk_level="high"),
             Filters(start=at(2), grp="food", sentiment="negative")]
    stored = {r.message_id: utc_naive(r.event_at)
              for r in engine.connect().execute(__import__("sqlalchemy").select(predictions.c.message_id,
                                                                                 predictions.c.event_at))}

    def keep(r, f):
        t = stored[r["message_id"]]
        minute = minute_floor(t)
        return ((f.start is None or minute >= utc_naive(f.start)) and (f.end is None or minute < utc_naive(f.end))
                and all(v is None or r[k] == v for k, v in (("grp", f.grp), ("lang", f.lang),
                                                             ("sentiment", f.sentiment),
                                                             ("risk_level", f.risk_level))))

    for f in cases:
        kept = [r for r in rows if keep(r, f)]
        assert panel_totals(engine, f) == {k: n for k in ("post", "ticket")
                                           if (n := sum(r["kind"] == k for r in kept))}, f
        assert {(r["product"], r["risk_level"]): r["n"] for r in panel_risk(engine, f)} == {
            key: sum((r["grp"], r["risk_level"]) == key for r in kept if r["kind"] == "ticket")
            for key in {(r["grp"], r["risk_level"]) for r in kept if r["kind"] == "ticket"}}, f
        assert {(r["kind"], r["lang"]): r["n"] for r in panel_languages(engine, f, 100)} == {
            key: sum((r["kind"], r["lang"]) == key for r in kept) for key in {(r["kind"], r["lang"]) for r in kept}}, f
        top = [r["message_id"] for r in sorted((r for r in kept if r["kind"] == "ticket"),
                                               key=lambda r: (-r["risk_score"], r["message_id"]))][:3]
        assert [r["ticket_id"] for r in panel_top_tickets(engine, f, 3)] == top, f
