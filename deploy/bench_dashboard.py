"""Dashboard query bench: fills a store with N predictions fast (SQLite executemany, PostgreSQL COPY), builds the
dashboard counters as migration 0008 does, and times each of the page's queries (median of 3 runs).

    .venv/bin/python deploy/bench_dashboard.py sqlite:///tmp/bench.db --rows 1000000
    .venv/bin/python deploy/bench_dashboard.py 'postgresql+psycopg://user@host/db' --rows 1000000

The database must be empty (a new SQLite file, or a new PostgreSQL database or schema): the bench writes to it.
Rows: 80% posts over 20 brands, 20% tickets over 8 products, spread over 7 days of event time (stored a few
seconds after), English/Chinese/Spanish, every sentiment and risk level."""

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from streamsense.streams import bi, dashboard
from streamsense.streams.counters import rebuild
from streamsense.streams.schema import predictions
from streamsense.streams.store import Store

DAYS = 7
LEVELS = (("low", 0.1), ("medium", 0.5), ("high", 0.8), ("critical", 0.95))


def rows(n: int, end: datetime, seed: int = 7):
    rng = random.Random(seed)
    span = DAYS * 86400
    for i in range(n):
        kind = "post" if rng.random() < 0.8 else "ticket"
        grp = f"brand-{rng.randrange(20)}" if kind == "post" else f"product-{rng.randrange(8)}"
        at = end - timedelta(seconds=span * (n - i) / n)
        level, score = LEVELS[min(3, int(rng.expovariate(2.5)))]
        lang = rng.choices(("en", "zh", "es"), (85, 10, 5))[0]
        yield {"kind": kind, "message_id": f"m{i}", "grp": grp, "author": f"a{rng.randrange(50000)}",
               "priority": "normal" if kind == "ticket" else None, "text": f"message {i} about {grp}",
               "text_sha256": f"{i:064x}", "truncated": False,
               "sentiment": rng.choices(("negative", "neutral", "positive"), (3, 4, 3))[0],
               "p_negative": 0.3, "p_neutral": 0.4, "p_positive": 0.3, "risk_level": level,
               "risk_score": round(score + rng.random() * 0.04, 3), "risk_labels": "{}", "risk_signals": "[]",
               "risk_explanation": f"{level} risk", "model_version": "bench:1", "source_topic": f"{kind}s",
               "source_partition": i % 4, "source_offset": i // 4, "created_at": at, "produced_at": at,
               "lang": lang, "lang_declared": None, "supported": lang == "en",
               "stored_at": at + timedelta(seconds=3), "event_at": at}


def fill(store: Store, n: int, end: datetime) -> float:
    names = [c.name for c in predictions.c if c.name != "pk"]
    started = time.perf_counter()
    raw = store.engine.raw_connection()
    try:
        if store.dialect == "sqlite":
            def value(v):
                return v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
            sql = f"INSERT INTO predictions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            batch = []
            for row in rows(n, end):
                batch.append(tuple(value(row[k]) for k in names))
                if len(batch) == 50000:
                    raw.cursor().executemany(sql, batch)
                    batch.clear()
            if batch:
                raw.cursor().executemany(sql, batch)
        else:
            with raw.driver_connection.cursor() as cursor:
                with cursor.copy(f"COPY predictions ({', '.join(names)}) FROM STDIN") as copy:
                    for row in rows(n, end):
                        copy.write_row([row[k] for k in names])
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def timed(fn, runs: int = 3) -> tuple[float, object]:
    times, value = [], None
    for _ in range(runs):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--views", action="store_true", help="also time the BI views' summary (slow: seconds)")
    args = parser.parse_args()
    store = Store(args.url, "bench")
    store.migrate()
    if store.count(predictions):
        sys.exit("the bench writes its own rows: give it an empty database")
    end = datetime.now(timezone.utc).replace(microsecond=0)
    out = {"rows": args.rows, "database": store.dialect, "fill_s": round(fill(store, args.rows, end), 1)}
    started = time.perf_counter()
    with store.engine.begin() as conn:
        rebuild(conn)  # the backfill of migration 0008
        conn.exec_driver_sql("ANALYZE")
    out["backfill_s"] = round(time.perf_counter() - started, 1)
    with store.engine.connect() as conn:
        out["counter_rows"] = conn.execute(text("SELECT COUNT(*) FROM dashboard_counts")).scalar_one()
    engine = store.engine
    last = bi.newest_minute(engine)
    stored_since = bi.newest_minute(engine, stored=True) - timedelta(minutes=59)
    cases = {
        "default (last 60 minutes)": bi.Filters(start=last - timedelta(minutes=59)),
        "last 24 hours": bi.Filters(start=last - timedelta(hours=24)),
        "all 7 days": bi.Filters(),
        "24 h, brand-3, negative": bi.Filters(start=last - timedelta(hours=24), grp="brand-3", sentiment="negative"),
        "7 days, product-2, zh, high": bi.Filters(grp="product-2", lang="zh", risk_level="high"),
    }
    out["ms"] = {}
    for name, f in cases.items():
        unit = "hour" if f.start is None or f.start < last - timedelta(hours=2) else "minute"
        panels = {
            "totals": lambda: bi.panel_totals(engine, f),
            "sentiment": lambda: bi.panel_sentiment(engine, f, unit, dashboard.SERIES_LIMIT),
            "risk": lambda: bi.panel_risk(engine, f),
            "languages": lambda: bi.panel_languages(engine, f, 20),
            "throughput": lambda: bi.panel_throughput(engine, f, stored_since, dashboard.SERIES_LIMIT),
            "top_tickets": lambda: bi.panel_top_tickets(engine, f, 10),
            "alerts": lambda: bi.panel_alerts(engine, f, 15),
            "options": lambda: bi.filter_options(engine),  # the menus over the whole store (the page: its range)
            "summary (all of the above)": lambda: dashboard.summary(engine, unit, 60 if unit == "minute" else 168, f),
        }
        out["ms"][name] = {panel: round(timed(fn)[0], 1) for panel, fn in panels.items()}
        print(name, json.dumps(out["ms"][name]), flush=True)
    out["ms"]["top-terms report"] = round(timed(lambda: bi.run_report(engine, "top-terms"), 1)[0], 1)
    if args.views:
        out["ms"]["views: sentiment-minute, last hour"] = round(timed(lambda: bi.run_report(
            engine, "sentiment-minute", since=last - timedelta(minutes=59)), 1)[0], 1)
    print(json.dumps(out, indent=1))
    store.dispose()


if __name__ == "__main__":
    main()
