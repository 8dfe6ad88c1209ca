"""The store's fast paths (PostgreSQL: COPY into a temporary table, then INSERT … SELECT; SQLite: one DBAPI
executemany) and its per-batch alert gate store exactly what the SQLAlchemy path they replaced stored: the same rows
are written both ways into two fresh databases and every column of every table is compared. `legacy_write` below is
that path as it was (executemany … RETURNING, then each alert checked against the store and inserted one by one)."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import and_, case, event, func, select

import streamsense.streams.store as store_module
from streamsense.streams.alerting.gate import _explain, count_windows, register_window_lengths
from streamsense.streams.alerting.rules import (
    EVIDENCE_MAX, AlertRules, Counts, _alert, _evidence, _Windowed, alert_id, window_index,
)
from streamsense.streams.contracts import Batch, sha256
from streamsense.streams.schema import (
    alert_window_lengths, alert_windows, alerts, consumer_offsets, dead_letters, predictions,
)
from streamsense.streams.store import BATCH_TABLE, Store

T0 = datetime(2026, 6, 1, 9, 30, tzinfo=timezone.utc)
PLUS2 = timezone(timedelta(hours=2))
NOW = datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)  # the write time both paths use

HOSTILE = [
    'quotes \' " `` and a backslash \\ and \\N and \\\\N',
    "tab\there, newline\nthere, carriage\rreturn, \\t not a tab, \\n not a newline",
    "emoji 🙂🔥👍🏽 and Chinese 你好，世界 and Arabic مرحبا and combining é",
    "COPY text-format specials: \\. alone, comma, \"quoted\", |pipe|, and a trailing backslash \\",
    "",
    " leading and trailing spaces ",
    "\u2028line separator\u2029paragraph separator\x0bvertical tab\x0cform feed\x7fdel",
]

RULES = '''
[[rules]]
name = "risky"
kind = "risk_level"
min_level = "high"
max_per_minute = 2
[[rules]]
name = "watched"
kind = "negative_sentiment"
min_confidence = 0.5
groups = ["acme", "globex"]
cooldown_seconds = 90
[[rules]]
name = "both"
kind = "signal"
signals = ["legal_threat"]
cooldown_seconds = 30
max_per_minute = 3
[[rules]]
name = "hateful"
kind = "label_score"
label = "hate"
threshold = 0.5
[[rules]]
name = "neg_spike"
kind = "negative_share"
window_seconds = 60
baseline_windows = 2
factor = 1.5
min_messages = 4
cooldown_seconds = 120
[[rules]]
name = "vol"
kind = "volume"
window_seconds = 120
baseline_windows = 1
factor = 2
'''


def row(i: int, at: datetime | None, sentiment: str = "neutral", grp: str | None = "acme", kind: str = "post",
        text_: str | None = None, created: datetime | None = None) -> dict:
    body = f"message {i}" if text_ is None else text_
    neg = 0.9 if sentiment == "negative" else 0.05
    return {
        "kind": kind, "message_id": f"{kind}-{i}", "grp": grp, "author": f"author {i}", "priority": None,
        "text": body, "text_sha256": sha256(body), "truncated": i % 7 == 0, "sentiment": sentiment,
        "p_negative": neg, "p_neutral": round(1 - neg - 0.01, 6), "p_positive": 0.01 + i * 1e-9,
        "risk_level": "low", "risk_score": neg / 3,
        "risk_labels": {"offensive": 0.1, "hate": 1 / 3, "complaint": i / 7, "note": body[:20]},
        "risk_signals": ["legal_threat"] if i % 5 == 0 else [], "risk_explanation": f"explained {body[:30]}",
        "model_version": "m:1", "source_topic": f"{kind}s", "source_partition": i % 3, "source_offset": 1000 + i,
        "created_at": created, "produced_at": at,
        # the language columns of migration 0004: codes, a declared one or none, supported, and NULL (rows stored
        # before the migration had none)
        "lang": ["en", "zh", "und", None][i % 4], "lang_declared": [None, "zh-Hans", "en"][i % 3],
        "supported": [True, False, True, None][i % 4],
    }


# --- the path the fast paths replaced ---------------------------------------------------------------------------

def _insert(dialect: str, table):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


class LegacyGate:
    """AlertGate as it was: windowed candidates pre-checked, then each candidate checked with up to three queries
    against the alerts stored, those of the batch inserted before it included."""

    def __init__(self, rules: AlertRules):
        self.rules = rules

    def admit(self, conn, candidates, rows):
        proposed = list(candidates)
        if rows:
            proposed += self._windowed(conn, rows, rows[0]["model_version"])
        return (alert for alert in proposed if self.allows(conn, alert))

    def _windowed(self, conn, rows, model_version):
        out = []
        c = alert_windows.c
        when = predictions.c.event_at
        for rule in (r for r in self.rules.rules if isinstance(r, _Windowed)):
            size = timedelta(seconds=rule.window_seconds)
            touched = {(r["kind"], r["grp"], window_index(r["event_at"], rule.window_seconds)) for r in rows if r["grp"]}
            if not touched:
                continue
            found = conn.execute(
                select(c.kind, c.grp, c.window_index, c.messages, c.negatives)
                .where(c.window_seconds == rule.window_seconds, c.kind.in_({k for k, _, _ in touched}),
                       c.grp.in_({g for _, g, _ in touched}),
                       c.window_index.in_({at - i for _, _, at in touched for i in range(rule.baseline_windows + 1)}))
            ).all()
            counts = {(k, g, at): Counts(n, neg) for k, g, at, n, neg in found}
            for kind, group, at in sorted(touched):
                current = counts.get((kind, group, at), Counts(0, 0))
                if current.n < rule.min_messages:
                    continue
                previous = [counts.get((kind, group, at - i), Counts(0, 0)) for i in range(1, rule.baseline_windows + 1)]
                history = [rule.measure(c) for c in previous if rule.counts_in_baseline(c)]
                if not history or not any(c.n for c in previous):
                    continue
                baseline = sum(history) / len(history)
                value = rule.measure(current)
                if baseline > 0 and value > rule.factor * baseline:
                    key = f"{kind}:{group}"
                    start = datetime.fromtimestamp(at * rule.window_seconds, timezone.utc)
                    alert = _alert(
                        rule, key, rule.severity or "medium", f"{group} ({kind}s): {rule.describe(value, baseline)}", [],
                        model_version, start + size, alert_id(rule.name, key, start.isoformat()), (start, start + size))
                    if not self.allows(conn, alert):
                        continue
                    worst = conn.execute(
                        select(predictions.c.message_id, predictions.c.text, predictions.c.risk_score)
                        .where(predictions.c.kind == kind, predictions.c.grp == group, when >= start, when < start + size)
                        .order_by(case((predictions.c.sentiment == "negative", 0), else_=1), predictions.c.risk_score.desc())
                        .limit(EVIDENCE_MAX)).all()
                    alert["evidence"] = [_evidence(r.message_id, kind, r.text or "", r.risk_score) for r in worst]
                    # what the window is about: the same explanation the gate adds (streams/alerting/terms.py)
                    _explain(conn, alert, rule, kind, group, start, start + size)
                    out.append(alert)
        return out

    def allows(self, conn, alert) -> bool:
        if conn.execute(select(alerts.c.id).where(alerts.c.id == alert["id"])).first():
            return False
        rule = self.rules.by_name.get(alert["rule"])
        if rule is None:
            return True
        at = alert["created_at"]
        earlier = and_(alerts.c.rule == rule.name, alerts.c.id != alert["id"], alerts.c.created_at <= at)
        if rule.cooldown_seconds:
            since = at - timedelta(seconds=rule.cooldown_seconds)
            if conn.execute(select(func.count()).select_from(alerts).where(
                    earlier, alerts.c.key == alert["key"], alerts.c.created_at > since)).scalar_one():
                return False
        if rule.max_per_minute:
            since = at - timedelta(minutes=1)
            if conn.execute(select(func.count()).select_from(alerts).where(
                    earlier, alerts.c.created_at > since)).scalar_one() >= rule.max_per_minute:
                return False
        return True


def legacy_write(store: Store, batch: Batch, now: datetime, gate: LegacyGate | None) -> None:
    """Store.write as it was, on `store`'s engine."""
    dialect = store.dialect
    insert = lambda table: _insert(dialect, table)  # noqa: E731
    rows = [{**row, "stored_at": now, "event_at": row["created_at"] or row["produced_at"] or now}
            for row in batch.predictions]
    if gate and not store._lengths_registered:
        register_window_lengths(store.engine, dialect, insert, gate.rules.window_lengths)
        store._lengths_registered = True
    with store.engine.begin() as conn:
        if rows:
            added = conn.execute(
                insert(predictions).on_conflict_do_nothing(index_elements=["kind", "message_id"])
                .returning(predictions.c.kind, predictions.c.grp, predictions.c.sentiment, predictions.c.event_at),
                rows).all()
            count_windows(conn, insert, added)
        kept = gate.admit(conn, batch.alerts, rows) if gate else batch.alerts
        for alert in kept:
            conn.execute(insert(alerts).on_conflict_do_nothing(index_elements=["id"]), alert)
        if batch.dead_letters:
            conn.execute(insert(dead_letters).on_conflict_do_nothing(
                index_elements=["source_topic", "source_partition", "source_offset"]), batch.dead_letters)
        if batch.offsets:
            stmt = insert(consumer_offsets)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["group_id", "topic", "partition"], set_={"next_offset": stmt.excluded.next_offset},
                    where=consumer_offsets.c.next_offset < stmt.excluded.next_offset),
                [{"group_id": store.group_id, "topic": t, "partition": p, "next_offset": o}
                 for (t, p), o in batch.offsets.items()])


# --- two fresh databases ------------------------------------------------------------------------------------------

@pytest.fixture
def two_urls(database_url, request, tmp_path):
    """Two fresh empty databases of the same kind: one for the fast path, one for the legacy path."""
    if database_url.startswith("sqlite"):
        return database_url, f"sqlite:///{tmp_path / 'legacy.db'}"
    return database_url, request.getfixturevalue("postgres_url_2")


@pytest.fixture
def postgres_url_2():
    import uuid

    from tests.conftest import new_pg_schema

    with new_pg_schema(f"t_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def fixed_now(monkeypatch):
    """Store.write's clock stopped at NOW, so both paths stamp the same stored_at."""
    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW.astimezone(tz) if tz else NOW.replace(tzinfo=None)
    monkeypatch.setattr(store_module, "datetime", Clock)


def pair(two_urls, rules: AlertRules | None = None) -> tuple[Store, Store, LegacyGate | None]:
    fast, legacy = Store(two_urls[0], "g", rules), Store(two_urls[1], "g")
    fast.migrate()
    legacy.migrate()
    return fast, legacy, LegacyGate(rules) if rules else None


def write_both(fast: Store, legacy: Store, gate, batch: Batch) -> None:
    fast.write(batch)
    legacy_write(legacy, batch, NOW, gate)


def raw_tables(store: Store) -> dict[str, list[tuple]]:
    """Every table as stored: each column as the database gives it back, JSON as its stored text, every row in
    insertion order (dead_letters.stored_at is the server's clock: left out)."""
    out = {}
    with store.engine.connect() as conn:
        for table, order in ((predictions, "pk"), (alerts, "id"), (dead_letters, "source_offset"),
                             (consumer_offsets, "topic, partition"), (alert_windows, "window_seconds, kind, grp, "
                                                                                     "window_index"),
                             (alert_window_lengths, "window_seconds")):
            columns = [c.name for c in table.c if not (table is dead_letters and c.name == "stored_at")]
            if store.dialect == "postgresql":  # JSON as text: the json type keeps the text it was given
                listed = ", ".join(f'"{c}"::text' if isinstance(table.c[c].type, type(predictions.c.risk_labels.type))
                                   else f'"{c}"' for c in columns)
                typed = ", ".join(f'pg_typeof("{c}")::text' for c in columns)
            else:
                listed = ", ".join(f'"{c}"' for c in columns)
                typed = ", ".join(f'typeof("{c}")' for c in columns)
            rows = conn.exec_driver_sql(f"SELECT {listed}, {typed} FROM {table.name} ORDER BY {order}").all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def assert_same(fast: Store, legacy: Store) -> None:
    got, want = raw_tables(fast), raw_tables(legacy)
    for name in want:
        assert got[name] == want[name], name


def hostile_rows() -> list[dict]:
    rows = []
    for i, body in enumerate(HOSTILE * 2):
        r = row(i, T0 + timedelta(seconds=i), "negative" if i % 2 else "positive", text_=body,
                grp=["acme", "东京 brand 🙂", None, "it's \"quoted\"\\"][i % 4],
                created=[None, T0.astimezone(PLUS2) + timedelta(seconds=i)][i % 2])
        r["author"] = body[:200] or None
        r["risk_explanation"] = body
        r["risk_labels"] = {"offensive": 0.25, body[:10] or "empty": [1, 2.5, None, True], "nested": {"k": body}}
        r["risk_signals"] = [body[:12], "fraud"] if body else []
        rows.append(r)
    rows.append({**row(90, None), "created_at": None, "produced_at": None})  # event_at: the write time
    rows.append({**row(91, T0), "risk_labels": None, "risk_signals": None})  # JSON null, as SQLAlchemy stores None
    rows.append({**row(92, T0), "p_negative": 1, "p_neutral": 0, "risk_score": 0, "priority": "urgent"})  # ints
    return rows


# --- the tests ----------------------------------------------------------------------------------------------------

def test_rows_round_trip_identical_to_the_sqlalchemy_path(two_urls, fixed_now):
    fast, legacy, gate = pair(two_urls)
    rows = hostile_rows()
    dead = [{"source_topic": "posts", "source_partition": 1, "source_offset": 5, "error": "bad \\ \t\n 🙂 ünïcode",
             "payload": bytes(range(256))},
            {"source_topic": "posts", "source_partition": 1, "source_offset": 6, "error": "none", "payload": None}]
    write_both(fast, legacy, gate, Batch(rows[:9], [], dead, {("posts", 0): 9}))
    write_both(fast, legacy, gate, Batch(rows[4:], [], dead[:1], {("posts", 0): 7, ("posts", 1): 3}))  # half stored
    assert_same(fast, legacy)
    # what comes back through SQLAlchemy is what was given, text and JSON byte for byte
    with fast.engine.connect() as conn:
        stored = {r.message_id: r for r in conn.execute(predictions.select())}
    assert len(stored) == len(rows)
    for r in rows:
        got = stored[r["message_id"]]
        for column in ("text", "grp", "author", "risk_explanation", "risk_labels", "risk_signals", "truncated",
                       "p_negative", "p_neutral", "p_positive", "source_offset", "priority"):
            assert getattr(got, column) == r[column], column
        assert isinstance(got.truncated, bool)
        if r["produced_at"] is not None:
            assert got.produced_at.replace(tzinfo=timezone.utc) == r["produced_at"]
    fast.dispose()
    legacy.dispose()


def test_a_replayed_batch_adds_nothing_and_a_half_stored_one_counts_its_new_half(two_urls, tmp_path, fixed_now):
    rules = AlertRules.model_validate({"rules": [{"name": "v", "kind": "volume", "window_seconds": 60,
                                                  "baseline_windows": 1, "factor": 3}]})
    fast, legacy, gate = pair(two_urls, rules)
    first = [row(i, T0 + timedelta(seconds=10 * i), "negative" if i % 3 else "neutral") for i in range(12)]
    write_both(fast, legacy, gate, Batch(first[:6], [], [], {}))
    write_both(fast, legacy, gate, Batch(first[:6], [], [], {}))  # a replay: nothing new
    write_both(fast, legacy, gate, Batch(first[3:], [], [], {}))  # half stored: the new half counts
    twice = row(50, T0, "negative")
    write_both(fast, legacy, gate, Batch([twice, first[0], twice, {**twice, "message_id": "post-51"}], [], [], {}))
    assert_same(fast, legacy)
    with fast.engine.connect() as conn:
        counters = {(r.window_index, r.messages, r.negatives) for r in conn.execute(alert_windows.select())}
    expected = {}
    for r in first + [twice, {**twice, "message_id": "post-51"}]:
        n, neg = expected.get(window_index(r["produced_at"], 60), (0, 0))
        expected[window_index(r["produced_at"], 60)] = (n + 1, neg + (r["sentiment"] == "negative"))
    assert counters == {(w, n, neg) for w, (n, neg) in expected.items()}
    assert fast.count(predictions) == 14
    fast.dispose()
    legacy.dispose()


def test_alert_gate_keeps_what_the_one_by_one_gate_kept(two_urls, fixed_now):
    """Random batches of candidates (cooldowns, rates, both, none, windowed rules, repeats, replays, times with
    and without an offset) through both gates: the same alerts, evidence included, in the same order."""
    rules = AlertRules.model_validate(__import__("tomllib").loads(RULES))
    fast, legacy, gate = pair(two_urls, rules)
    rnd = random.Random(7)
    from streamsense.models.classifier import Prediction, Sentiment
    from streamsense.models.risk import Risk

    batches = []
    serial = 0
    for b in range(12):
        rows, candidates = [], []
        for _ in range(rnd.randint(0, 30)):
            serial += 1
            at = T0 + timedelta(seconds=rnd.randint(0, 600))
            if rnd.random() < 0.3:
                at = at.astimezone(PLUS2)
            sentiment = rnd.choice(["negative", "negative", "neutral"])
            grp = rnd.choice(["acme", "globex", "initech"])
            r = row(serial, at, sentiment, grp=grp, created=at if rnd.random() < 0.5 else None)
            rows.append(r)
            p = Prediction(Sentiment(sentiment, {"negative": 0.9 if sentiment == "negative" else 0.1}),
                           Risk(rnd.choice(["low", "high", "critical"]), 0.5, {"hate": rnd.random()},
                                ["legal_threat"] if rnd.random() < 0.4 else [], "x"), False)
            candidates += rules.per_message("post", str(rnd.randint(0, 40)), grp, r["text"], p, "m:1", at)
        rnd.shuffle(candidates)
        batches.append(Batch(rows, candidates + candidates[:2], [], {}))
        if b % 4 == 3:
            batches.append(batches[rnd.randrange(len(batches))])  # a replay
    for batch in batches:
        write_both(fast, legacy, gate, batch)
        assert_same(fast, legacy)
    assert 10 < fast.count(alerts) < sum(len(b.alerts) for b in batches)
    with fast.engine.connect() as conn:
        assert {r for r, in conn.execute(select(alerts.c.rule).distinct())} >= {"risky", "watched", "both", "hateful"}
    fast.dispose()
    legacy.dispose()


def test_alert_gate_reads_once_per_batch_and_per_limited_rule(tmp_path, database_url):
    rules = AlertRules.model_validate(__import__("tomllib").loads(RULES))
    store = Store(database_url, "g", rules)
    store.migrate()
    statements = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    candidates = [{"id": f"{rule}-{i}", "rule": rule, "severity": "high", "key": f"post:{i % 4}", "window_start": None,
                   "window_end": None, "summary": "s", "evidence": [], "model_version": "m:1",
                   "created_at": T0 + timedelta(seconds=i)}
                  for i in range(60) for rule in ("risky", "watched", "both", "hateful", "unknown")]
    store.write(Batch([], candidates, [], {}))
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "alerts" in s]
    assert len(reads) == 1 + 3  # the ids stored already, then risky, watched and both
    assert len([s for s in statements if s.startswith("INSERT INTO alerts")]) == 1
    kept = store.count(alerts)
    assert kept == 2 + 4 + 3 + 60 + 60  # rate 2/min; a key per 90 s; 3/min (and a key per 30 s); no limit; unknown
    store.dispose()


def test_json_columns_query_the_same(two_urls, fixed_now):
    fast, legacy, gate = pair(two_urls)
    write_both(fast, legacy, gate, Batch(hostile_rows(), [], [], {}))
    if fast.dialect == "postgresql":
        query = ("SELECT message_id, risk_labels->>'offensive', risk_labels->'nested'->>'k', "
                 "CASE json_typeof(risk_signals) WHEN 'array' THEN json_array_length(risk_signals) END, "
                 "risk_signals->>0, json_typeof(risk_labels) "
                 "FROM predictions ORDER BY message_id")
    else:
        query = ("SELECT message_id, json_extract(risk_labels, '$.offensive'), json_extract(risk_labels, '$.nested.k'), "
                 "json_array_length(risk_signals), json_extract(risk_signals, '$[0]'), json_type(risk_labels) "
                 "FROM predictions ORDER BY message_id")
    results = []
    for store in (fast, legacy):
        with store.engine.connect() as conn:
            results.append(conn.exec_driver_sql(query).all())
    assert results[0] == results[1]
    assert any(r[2] == HOSTILE[2] for r in results[0])
    fast.dispose()
    legacy.dispose()


def test_bi_reports_read_fast_path_rows_as_before(two_urls, fixed_now):
    from streamsense.streams.bi import REPORTS, run_report
    from tests.test_bi import ALERTS, DEAD, POSTS, TICKETS

    fast, legacy, gate = pair(two_urls)
    write_both(fast, legacy, gate, Batch(POSTS[:5] + TICKETS[:3], ALERTS[:2], DEAD[:1], {("posts", 0): 6}))
    write_both(fast, legacy, gate, Batch(POSTS[5:] + TICKETS[3:], ALERTS[2:], DEAD[1:], {("posts", 0): 9}))
    assert_same(fast, legacy)
    for name in REPORTS:
        if name != "throughput":  # dead letters' stored_at is the server's clock
            assert run_report(fast.engine, name).rows == run_report(legacy.engine, name).rows, name
    fast.dispose()
    legacy.dispose()


def test_naive_times_are_read_as_before(two_urls, fixed_now):
    """A time without an offset: SQLite stores it as is; PostgreSQL reads it in the session's time zone (the fast
    path copies such a batch as text rather than binary, and the gate compares such alert times in that zone)."""
    if two_urls[0].startswith("postgresql"):  # a session time zone that is not UTC
        two_urls = tuple(f"{url}%20-ctimezone%3DAsia%2FTokyo" for url in two_urls)
    rules = AlertRules.model_validate(__import__("tomllib").loads(RULES))
    fast, legacy, gate = pair(two_urls, rules)
    if fast.dialect == "postgresql":
        with fast.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "Asia/Tokyo"
    naive = T0.replace(tzinfo=None)
    rows = [row(1, naive, created=naive + timedelta(minutes=1)), row(2, T0), row(3, naive)]
    candidates = [{"id": f"c{i}", "rule": rule, "severity": "high", "key": f"post:{i % 2}", "window_start": None,
                   "window_end": None, "summary": "s", "evidence": [], "model_version": "m:1",
                   "created_at": at + timedelta(seconds=20 * i)}
                  for i in range(8) for rule in ("watched", "both")
                  for at in (naive, T0 + timedelta(hours=9), T0.astimezone(PLUS2))]
    write_both(fast, legacy, gate, Batch(rows, candidates[:20], [], {}))
    write_both(fast, legacy, gate, Batch(rows, candidates[20:], [], {}))
    assert_same(fast, legacy)
    fast.dispose()
    legacy.dispose()


def test_the_temporary_table_is_made_again_when_the_session_lost_it(postgres_url):
    store = Store(postgres_url, "g")
    store.migrate()
    bad = {"source_topic": "posts", "source_partition": 0, "source_offset": 1, "error": None, "payload": None}
    with pytest.raises(Exception, match="error"):  # the first batch of the session fails after making the table
        store.write(Batch([row(1, T0)], [], [bad], {}))
    store.write(Batch([row(1, T0)], [], [], {}))  # the failed transaction took the table with it: made again
    with store.engine.connect() as conn:
        conn.exec_driver_sql("DISCARD TEMP")  # a session that lost its temporary tables
        conn.commit()
        assert conn.connection.info.get(BATCH_TABLE)
    with pytest.raises(Exception, match=BATCH_TABLE):
        store.write(Batch([row(2, T0)], [], [], {}))
    store.write(Batch([row(2, T0)], [], [], {}))  # the retry (the sink retries every failed write) makes it again
    assert store.count(predictions) == 2
    with store.engine.connect() as conn:  # empty between batches
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {BATCH_TABLE}").scalar_one() == 0
    store.dispose()
