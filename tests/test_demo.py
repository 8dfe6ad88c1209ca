"""`streamsense demo` (what the README's first command runs): the bundled samples through the embedded broker,
a worker process and SQLite, with the shipped model."""

import json
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from streamsense.demo import print_summary, run_demo, summarise
from streamsense.settings import Settings
from streamsense.streams.contracts import Batch
from streamsense.streams.store import Store
from tests.bi_rows import alert, prediction


def printed(summary: dict, db: Path | None = None) -> str:
    out = Console(record=True, width=240)
    print_summary(out, summary, db)
    return out.export_text()


def test_demo_stores_every_sample_and_raises_the_staged_volume_alert(tmp_path):
    db = tmp_path / "demo.db"
    summary = run_demo(Settings(), db, timeout=240, log=lambda m: None)
    assert (summary["posts"]["produced"], summary["posts"]["stored"]) == (552, 552)
    assert (summary["tickets"]["produced"], summary["tickets"]["stored"]) == (156, 156)
    assert summary["dlq"] == 6
    assert sum(summary["posts"]["sentiment"].values()) == 552
    assert summary["model"].startswith("streamsense-minilm:")
    with sqlite3.connect(db) as conn:
        windowed = conn.execute("SELECT rule, key FROM alerts WHERE window_start IS NOT NULL").fetchall()
    # the samples put 162 northwind posts in one minute after ten quiet ones: a spike whatever the model says
    assert ("volume_spike", "post:northwind") in windowed
    assert summary["alerts"] > len(windowed)  # per-message alerts (critical risk, watched brands) too
    with sqlite3.connect(db) as conn:
        critical = conn.execute("SELECT key, rule, severity, evidence FROM alerts WHERE rule IN "
                                "('high_risk', 'legal_or_fraud') ORDER BY key").fetchall()
    # the three written tickets that threaten legal action or report fraud page once each, with every reason; no
    # real sample does (the contextual rules), and no message raises two alerts of one family
    assert [k for k, *_ in critical] == ["ticket:written-fraud-1", "ticket:written-legal-1", "ticket:written-legal-2",
                                         "ticket:written-zh-fraud-1", "ticket:written-zh-legal-1"]
    assert all(severity == "critical" for _, _, severity, _ in critical)
    reasons = {k: {r["rule"] for r in json.loads(ev)[0]["reasons"]} for k, _, _, ev in critical}
    assert reasons["ticket:written-legal-1"] == {"high_risk", "legal_or_fraud"}
    # the Chinese samples: identified, counted per language, read by the Chinese model (none flagged)
    assert summary["languages"]["zh"] == 10 and summary["unsupported"].get("zh", 0) == 0
    assert [n for m, n in summary["models"].items() if m.startswith("streamsense-bge-zh:")] == [10]
    assert summary["languages"]["en"] > 500

    # per topic: what was produced is stored or dead-lettered (3 malformed messages on each)
    for name in ("posts", "tickets"):
        part = summary[name]
        assert (part["topic"], part["malformed"], part["dead_letters"]) == (name, 3, 3)
    assert sorted(d["topic"] for d in summary["dead_letters"]) == ["posts"] * 3 + ["tickets"] * 3
    assert all(d["error"] for d in summary["dead_letters"])
    # the windowed alerts in full
    assert sorted((a["rule"], a["key"]) for a in summary["windowed_alerts"]) == sorted(windowed)
    spike = next(a for a in summary["windowed_alerts"] if a["rule"] == "volume_spike")
    assert spike["window_start"].startswith("2026-11-01T") and spike["window_end"] > spike["window_start"]
    # the window's count when the batch that crossed the threshold was stored: all 162 of the minute, or fewer where
    # the last ones came in a later batch (batch boundaries vary with the interleaving of partitions)
    counted = int(re.search(r"northwind \(posts\): (\d+) messages vs baseline", spike["summary"])[1])
    assert 50 <= counted <= 162  # min_messages 50
    assert sum(summary["alerts_by_rule"].values()) == summary["alerts"]
    # latency only for what was produced once the worker had stored its first result: every sample but the first
    assert summary["worker_ready_s"] > 0
    assert summary["latency_ms"]["messages"] == 552 + 156 - 1
    text = printed(summary, db)
    assert "volume_spike post:northwind 2026-11-01 " in text and f"northwind (posts): {counted} messages" in text
    assert "dead letters: 6" in text and "produced after that" in text
    # what the windowed alerts are about (streams/alerting/terms.py): the staged minute of northwind is 100 copies
    # of one giveaway text among 62 real tweets; acme-air's spike window holds 24 written delayed-flight complaints
    assert spike["duplicates"]["bot_like"] and "messages are one text (bot-like" in spike["summary"]
    assert any("giving away free tickets" in t["term"] for t in spike["terms"]), spike["terms"]
    assert "      terms: " in text and "giving away free tickets" in text
    share = [a for a in summary["windowed_alerts"] if a["rule"] == "negative_share_spike"]
    assert [a["key"] for a in share] == ["post:acme-air"]
    assert "delayed" in [t["term"] for t in share[0]["terms"]], share[0]
    assert any("delayed" in e.lower() for e in share[0]["examples"])


def test_summary_latency_alerts_and_dead_letters(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'summary.db'}", "demo")
    store.migrate()
    now = datetime.now(timezone.utc)
    ready = now - timedelta(seconds=5)
    rows = [prediction("post", "early", "acme", "negative", now - timedelta(minutes=1)),  # waited for the start
            prediction("post", "p2", "acme", "negative", ready + timedelta(seconds=1)),
            prediction("ticket", "t1", "food", "negative", ready + timedelta(seconds=2), "refund or lawyer", "high",
                       0.9)]
    window = (datetime(2026, 11, 1, 9, 25, tzinfo=timezone.utc), datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc))
    raised = [alert("high_risk", "high", rows[2:], now, "ticket t1: high risk"),
              alert("negative_share_spike", "high", rows[:2], window[1], "acme (posts): negative share 100%",
                    window)]
    dead = [{"source_topic": "posts-x", "source_partition": 0, "source_offset": 7, "error": "invalid JSON",
             "payload": b"nope"},
            {"source_topic": "tickets-x", "source_partition": 1, "source_offset": 3, "error": "missing 'body'",
             "payload": b"{}"}]
    store.write(Batch(rows, raised, dead, {}))
    topics = {"posts": "posts-x", "tickets": "tickets-x"}
    summary = summarise(store, {"posts": 2, "tickets": 1}, 12.345, ready, 4.5, topics, {"posts": 1, "tickets": 1})

    assert summary["posts"] == {"topic": "posts-x", "produced": 2, "malformed": 1, "stored": 2, "dead_letters": 1,
                                "sentiment": {"negative": 2}, "risk": {"low": 2}}
    assert summary["tickets"]["dead_letters"] == 1
    assert summary["dead_letters"] == [
        {"topic": "posts-x", "partition": 0, "offset": 7, "error": "invalid JSON"},
        {"topic": "tickets-x", "partition": 1, "offset": 3, "error": "missing 'body'"}]
    assert summary["latency_ms"]["messages"] == 2  # not the one produced a minute before the worker was ready
    assert summary["latency_ms"]["p95"] < 30_000
    assert summary["windowed_alerts"] == [{
        "rule": "negative_share_spike", "severity": "high", "key": "post:acme", "window_start": "2026-11-01T09:25:00Z",
        "window_end": "2026-11-01T09:30:00Z", "summary": "acme (posts): negative share 100%", "terms": [],
        "duplicates": None, "examples": []}]
    assert summary["alerts_by_rule"] == {"high_risk": 1, "negative_share_spike": 1}
    assert summary["alert_examples"] == ["[high] ticket t1: high risk"]
    assert (summary["seconds"], summary["worker_ready_s"], summary["dlq"]) == (12.35, 4.5, 2)
    assert summarise(store, {"posts": 2, "tickets": 1}, 1.0)["latency_ms"] is None  # no ready time: not measured

    text = printed(summary, Path("/tmp/demo.db"))
    assert "[high] negative_share_spike post:acme 2026-11-01 09:25 → 09:30 UTC: acme (posts): negative share 100%" \
        in text
    assert "posts-x@0:7 invalid JSON" in text and "tickets-x@1:3 missing 'body'" in text
    assert "[high] ticket t1: high risk" in text
    assert "first result stored 4.5 s after start" in text and "the 2 results produced after that" in text
    line = next(row for row in text.splitlines() if "posts-x" in row and "│" in row)
    assert [cell.strip() for cell in line.split("│")[1:5]] == ["posts-x", "3", "2", "1"]
    store.dispose()


def test_demo_with_declared_inputs_classifies_the_foreign_shapes(tmp_path):
    """`streamsense demo --inputs`: Twitter v2, stored tweets and Debezium tickets made from the samples, declared
    in one inputs file, classified beside the built-in topics; deletes skipped, bad ones dead-lettered with the path."""
    from streamsense.demo_inputs import twitter_time

    assert twitter_time("2026-11-01T09:00:04+00:00") == "Sun Nov 01 09:00:04 +0000 2026"
    summary = run_demo(Settings(schema_registry_url=None), tmp_path / "demo.db", timeout=240, log=lambda m: None,
                       inputs=True)  # no registry: the three JSON shapes (an Avro topic joins where one is set)
    assert (summary["posts"]["stored"], summary["tickets"]["stored"]) == (552, 156)  # the built-in topics unchanged (as in the plain demo)
    assert [(i["topic"], i["produced"], i["stored"], i["dead_letters"], i["skipped"]) for i in summary["inputs"]] == [
        ("demo-tweets-v2", 13, 12, 1, 0), ("demo-stored-tweets", 12, 12, 0, 0),
        ("demo-helpdesk.public.tickets", 15, 12, 1, 2)]
    reasons = {d["topic"]: d["error"] for d in summary["dead_letters"] if d["topic"].startswith("demo-")}
    assert reasons == {"demo-tweets-v2": "mapping: text: data.text is not present",
                       "demo-helpdesk.public.tickets": "mapping: body: description is not present"}
    assert "declared inputs" in printed(summary)
    from streamsense.demo import SAMPLES

    sample = json.loads((SAMPLES / "posts.jsonl").read_text().splitlines()[12])  # the first one re-shaped as stored
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        [(created_at,)] = conn.execute("SELECT created_at FROM predictions WHERE message_id = ?",
                                       (f"st-{sample['id']}",)).fetchall()
    assert datetime.fromisoformat(created_at).replace(tzinfo=timezone.utc) == datetime.fromisoformat(
        sample["created_at"])  # read back from Twitter's time form
