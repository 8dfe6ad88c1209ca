"""A batch's counters and bulk rows through the driver (streams/counters.py, streams/bulk.py): the dashboard counters
and the alert window counters, computed per batch with numpy and upserted with one prepared statement, and the
shadow rows inserted the same way, hold exactly what the per-message loop and SQLAlchemy's statements (the code
before) wrote, on SQLite and PostgreSQL."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select

from streamsense.streams import bulk, counters
from streamsense.streams.alerting.gate import count_windows
from streamsense.streams.counters import EVENT, HOUR, KEY, STORED, _minute, dashboard_counts
from streamsense.streams.schema import alert_window_lengths, alert_windows
from streamsense.streams.store import Store


def reference_count(conn, insert, added, stored_at):
    """The dashboard counters as they were written before: message by message, then SQLAlchemy's upsert."""
    stored = _minute(stored_at)
    counts = {}
    for kind, grp, sentiment, event_at, lang, level, score, supported in added:
        minute = _minute(event_at)
        for basis, at in ((EVENT, minute), (HOUR, minute.replace(minute=0)), (STORED, stored)):
            c = counts.setdefault((basis, at, kind, grp or "", lang or "", sentiment, level), [0, 0, 0.0])
            c[0] += 1
            c[1] += bool(supported)
            c[2] += score
    if counts:
        stmt = insert(dashboard_counts)
        t = dashboard_counts.c
        conn.execute(stmt.on_conflict_do_update(
            index_elements=list(KEY),
            set_={"n": t.n + stmt.excluded.n, "supported": t.supported + stmt.excluded.supported,
                  "risk_score_sum": t.risk_score_sum + stmt.excluded.risk_score_sum}),
            [dict(zip(KEY, key), n=n, supported=s, risk_score_sum=r) for key, (n, s, r) in sorted(counts.items())])


def reference_windows(conn, insert, added, lengths):
    """The alert window counters as they were written before (SQLAlchemy's upsert)."""
    from streamsense.streams.alerting.gate import window_index

    counts = {}
    for kind, grp, sentiment, event_at in added:
        if grp:
            for seconds in lengths:
                n = counts.setdefault((seconds, kind, grp, window_index(event_at, seconds)), [0, 0])
                n[0] += 1
                n[1] += sentiment == "negative"
    if counts:
        stmt = insert(alert_windows)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["window_seconds", "kind", "grp", "window_index"],
            set_={"messages": alert_windows.c.messages + stmt.excluded.messages,
                  "negatives": alert_windows.c.negatives + stmt.excluded.negatives}),
            [{"window_seconds": s, "kind": k, "grp": g, "window_index": i, "messages": n, "negatives": neg}
             for (s, k, g, i), (n, neg) in sorted(counts.items())])


def batches(aware: bool, seed: int = 0) -> list[list[tuple]]:
    """Batches as the store reads them back: several minutes and hours (an hour boundary inside a batch), shared and
    repeated event times, out-of-order times, NULL groups and languages, every sentiment and level, unsupported
    languages, 4-decimal scores as the risk rules give (which do not add up exactly in binary), ints for booleans."""
    rng = random.Random(seed)
    t0 = datetime(2026, 12, 7, 0, 58, 30, tzinfo=timezone.utc if aware else None)
    out = []
    for b in range(6):
        rows = []
        for i in range(rng.choice([1, 7, 300])):
            at = t0 + timedelta(seconds=rng.choice([0, 0, 1.5, 40, 95, 170, 400]) + b * 20 + rng.random() * 3)
            if aware and rng.random() < 0.3:
                at = at.astimezone(timezone(timedelta(hours=5, minutes=30)))  # the same instant, another offset
            rows.append((rng.choice(["post", "ticket"]), rng.choice(["acme", "globex", None, ""]),
                         rng.choice(["negative", "neutral", "positive"]), at, rng.choice(["en", "zh", None]),
                         rng.choice(["low", "medium", "high", "critical"]), round(rng.random(), 4),
                         rng.choice([True, False, 1, 0])))
        out.append(rows)
    return out


def table_rows(conn, table) -> list[tuple]:
    return sorted(tuple(r) for r in conn.execute(select(table)))


@pytest.mark.parametrize("aware", [False, True])
def test_the_batch_counters_write_what_the_message_loop_wrote(database_url, aware):
    store = Store(database_url, "streamsense")
    store.migrate()
    stored_at = [datetime(2026, 12, 7, 1, 0, 5, tzinfo=timezone.utc) + timedelta(seconds=50 * i) for i in range(6)]
    got = {}
    for name, fn in (("reference", reference_count), ("batch", counters.count)):
        with store.engine.begin() as conn:
            conn.execute(delete(dashboard_counts))
        for rows, now in zip(batches(aware), stored_at):
            with store.engine.begin() as conn:
                fn(conn, store._insert, rows, now)
        with store.engine.connect() as conn:
            got[name] = table_rows(conn, dashboard_counts)
    assert got["batch"] == got["reference"]  # floats included: the same sums, bit for bit
    assert len(got["batch"]) > 100 and {r[0] for r in got["batch"]} == {EVENT, HOUR, STORED}
    assert any(r[-1] != round(r[-1], 4) for r in got["batch"])  # sums that binary floats cannot hold exactly
    with store.engine.begin() as conn:
        counters.count(conn, store._insert, [], stored_at[0])  # an empty batch writes nothing
        assert table_rows(conn, dashboard_counts) == got["reference"]
    store.dispose()


def test_the_window_counters_write_what_the_upsert_wrote(database_url):
    store = Store(database_url, "streamsense")
    store.migrate()
    lengths = [60, 300, 3600]
    with store.engine.begin() as conn:
        conn.execute(alert_window_lengths.insert(), [{"window_seconds": s} for s in lengths])
    got = {}
    for name in ("reference", "batch"):
        with store.engine.begin() as conn:
            conn.execute(delete(alert_windows))
        for rows in batches(aware=database_url.startswith("postgresql"), seed=1):
            added = [r[:4] for r in rows]
            with store.engine.begin() as conn:
                if name == "reference":
                    reference_windows(conn, store._insert, added, lengths)
                else:
                    count_windows(conn, store._insert, added)
        with store.engine.connect() as conn:
            got[name] = table_rows(conn, alert_windows)
    assert got["batch"] == got["reference"] and len(got["batch"]) > 20
    store.dispose()


def test_an_upsert_names_its_table_key_columns_in_order():
    dialect = Store("sqlite://", "g").engine.dialect
    with pytest.raises(ValueError, match="leading key columns"):
        bulk._upsert(dialect, dashboard_counts, ("kind", "basis"))
    sql, _ = bulk._upsert(dialect, alert_windows,
                              ("window_seconds", "kind", "grp", "window_index"))
    assert sql.startswith("INSERT INTO alert_windows (window_seconds, kind, grp, window_index, messages, negatives) "
                          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (window_seconds, kind, grp, window_index) DO UPDATE")
    assert "messages = alert_windows.messages + excluded.messages" in sql


def test_the_shadow_rows_insert_what_the_sqlalchemy_insert_did(database_url):
    """Shadow rows (JSON, floats, NULL, aware times) through `insert_new` equal SQLAlchemy's insert of them, and a row
    already stored (same kind, message, model version) is left as it was, first write wins, as before."""
    from streamsense.streams.bulk import insert_new
    from streamsense.streams.feedback.schema import shadow_predictions as t

    store = Store(database_url, "streamsense")
    store.migrate()
    at = datetime(2026, 12, 7, 2, 0, 1, 250000, tzinfo=timezone.utc)
    rows = [{"kind": "post", "message_id": f"m{i}", "model_version": "m:2", "sentiment": "negative",
             "p_negative": 0.1 * i, "p_neutral": None if i % 2 else 0.3333, "p_positive": 1 / 3,
             "risk_level": "medium", "risk_score": 0.5 + i / 7, "risk_labels": {"offensive": 0.5, "hate": i / 3},
             "alerts": sorted({"risk", "complaint"} if i % 3 else set()), "stored_at": at} for i in range(7)]
    got = {}
    conflict = ("kind", "message_id", "model_version")
    for name in ("reference", "driver"):
        with store.engine.begin() as conn:
            conn.execute(delete(t))
        for chunk in (rows[:4], rows[2:]):  # the second overlaps: its first two rows are already stored
            if chunk is rows[2:]:
                chunk = [{**r, "risk_level": "high"} if i < 2 else r for i, r in enumerate(chunk)]
            with store.engine.begin() as conn:
                if name == "reference":
                    conn.execute(store._insert(t).on_conflict_do_nothing(index_elements=list(conflict)), chunk)
                else:
                    insert_new(conn, t, conflict, chunk)
        with store.engine.connect() as conn:
            got[name] = [tuple(r)[1:] for r in conn.execute(select(t).order_by(t.c.message_id))]
    assert got["driver"] == got["reference"] and len(got["driver"]) == 7
    assert {r[7] for r in got["driver"]} == {"medium"}  # first write wins
