"""`streamsense demo`: embedded broker + SQLite + a worker process, replay the bundled samples, summarise."""

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from streamsense.localstack import local_stack, stop_worker
from streamsense.settings import STREAMS_DIR, Settings
from streamsense.streams.kafka import client_options
from streamsense.streams.produce import produce_lines, read_lines
from streamsense.streams.schema import alerts, dead_letters, predictions
from streamsense.streams.store import Store

SAMPLES = STREAMS_DIR / "samples"
# Messages a real feed will contain sooner or later; each must end in the dead-letter topic with a reason.
MALFORMED = [b"this is not json", b'{"id": "bad-1"}', b'{"id": "bad-2", "text": 42}', b'{"id": "bad-3", "text": "   "}',
             b'{"id": "bad-4", "text": "\xff\xfe broken utf-8"}', b"[1, 2, 3]"]


def wait_for(store: Store, expected: int, worker: subprocess.Popen, timeout: float) -> int:
    """Poll until `expected` messages are accounted for (stored or dead-lettered); returns the count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = store.count(predictions) + store.count(dead_letters)
        if seen >= expected or time.monotonic() > deadline:
            return seen
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode}")
        time.sleep(0.25)


def summarise(store: Store, produced: dict[str, int], seconds: float) -> dict:
    with store.engine.connect() as conn:
        def grouped(column, kind):
            rows = conn.execute(select(column, func.count()).where(predictions.c.kind == kind).group_by(column))
            return {k: n for k, n in sorted(rows)}

        summary = {}
        for kind, name in (("post", "posts"), ("ticket", "tickets")):
            summary[name] = {"produced": produced[name], "stored": store.count(predictions, kind=kind),
                             "sentiment": grouped(predictions.c.sentiment, kind),
                             "risk": grouped(predictions.c.risk_level, kind)}
        times = conn.execute(select(predictions.c.produced_at, predictions.c.stored_at)).all()
        alert_rows = conn.execute(select(alerts.c.severity, alerts.c.summary).order_by(alerts.c.created_at)).all()
        model = conn.execute(select(predictions.c.model_version).limit(1)).scalar()
    stored = [s for _, s in times]
    latencies = sorted((s - p).total_seconds() * 1000 for p, s in times if p and s)
    span = (max(stored) - min(stored)).total_seconds() if len(stored) > 1 else 0.0
    summary.update({
        "alerts": len(alert_rows),
        "dlq": store.count(dead_letters),
        "seconds": round(seconds, 2),
        "worker_msgs_per_s": round(len(stored) / span, 1) if span else None,
        "latency_ms": {"p50": round(latencies[len(latencies) // 2]), "p95": round(latencies[int(len(latencies) * 0.95)])}
        if latencies else None,
        "model": model,
        "alert_examples": [f"[{sev}] {text}" for sev, text in alert_rows[:5]],
    })
    return summary


def run_demo(settings: Settings, db_path: Path, timeout: float = 300.0, log=print) -> dict:
    started = time.monotonic()
    app_id = f"streamsense-demo-{uuid.uuid4().hex[:8]}"
    with local_stack(settings, db_path, app_id=app_id) as (settings, store, (worker,)):
        log(f"broker on {settings.kafka_bootstrap_servers}, database {db_path}; worker started")
        posts = read_lines(SAMPLES / "posts.jsonl") + MALFORMED[:3]
        tickets = read_lines(SAMPLES / "tickets.jsonl") + MALFORMED[3:]
        options = client_options(settings)

        async def produce_all():
            return (await produce_lines(posts, settings.topic_posts, options),
                    await produce_lines(tickets, settings.topic_tickets, options))

        sent_posts, sent_tickets = asyncio.run(produce_all())
        log(f"produced {sent_posts} posts and {sent_tickets} tickets (including {len(MALFORMED)} malformed)")
        seen = wait_for(store, sent_posts + sent_tickets, worker, timeout)
        if seen < sent_posts + sent_tickets:
            raise TimeoutError(f"only {seen} of {sent_posts + sent_tickets} messages were processed in {timeout}s")
        stop_worker(worker)  # its last commits are in before the summary is read
        produced = {"posts": sent_posts - 3, "tickets": sent_tickets - (len(MALFORMED) - 3)}
        return summarise(store, produced, time.monotonic() - started)
