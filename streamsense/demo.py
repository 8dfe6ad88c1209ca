"""`streamsense demo`: embedded broker + SQLite + a worker process, replay the bundled samples, summarise."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from streamsense.settings import PROJECT_ROOT, STREAMS_DIR, Settings
from streamsense.streams.broker import ApacheKafkaBroker, EmbeddedBroker, apache_kafka_missing, free_port
from streamsense.streams.kafka import client_options, ensure_topics
from streamsense.streams.produce import produce_lines, read_lines
from streamsense.streams.store import Store, alerts, dead_letters, predictions

SAMPLES = STREAMS_DIR / "samples"
# Messages a real feed will contain sooner or later; each must end in the dead-letter topic with a reason.
MALFORMED = [b"this is not json", b'{"id": "bad-1"}', b'{"id": "bad-2", "text": 42}', b'{"id": "bad-3", "text": "   "}',
             b'{"id": "bad-4", "text": "\xff\xfe broken utf-8"}', b"[1, 2, 3]"]


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, value in settings.model_dump().items():
        if value is not None:
            value = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"STREAMSENSE_{name.upper()}"] = str(value)
    return env


def start_worker(settings: Settings, log_path: Path, loglevel: str = "warning") -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "streamsense", "worker", "--loglevel", loglevel],
                            env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)


def stop_worker(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def new_local_broker(kind: str, log_path: Path | None = None):
    """A broker on a free loopback port, not started: `tansu` (embedded, in memory) or `kafka` (Apache Kafka)."""
    if kind == "tansu":
        return EmbeddedBroker(free_port(), log_path=log_path)
    if kind == "kafka":
        reason = apache_kafka_missing()
        if reason:
            raise RuntimeError(reason.split(":")[0] + ": run `bash deploy/test-deps.sh` once (needs Java and Maven)")
        return ApacheKafkaBroker(free_port(), log_path=log_path, heap="1g")
    raise ValueError(f"unknown broker {kind!r}: choose tansu or kafka")


@contextmanager
def local_stack(settings: Settings, db_path: Path, workers: int = 1, broker: str = "tansu",
                **overrides) -> Iterator[tuple[Settings, Store, list[subprocess.Popen]]]:
    """A broker of its own (the embedded Tansu, or Apache Kafka with `broker="kafka"`), a fresh SQLite file and
    `workers` worker processes (one group) on them, with the settings that point at both; workers stopped, the
    store closed and the broker stopped (its data deleted) on exit."""
    db_path.unlink(missing_ok=True)
    with new_local_broker(broker, db_path.with_suffix(f".{broker}.log")) as broker:
        settings = settings.model_copy(update={
            "kafka_bootstrap_servers": broker.bootstrap_servers, "database_url": f"sqlite:///{db_path}", **overrides})
        store = Store(settings.database_url, settings.app_id)
        store.migrate()
        ensure_topics(settings)  # before anything is produced: an auto-created topic gets the broker's partition count
        procs = [start_worker(settings, db_path.with_suffix(f".worker{i}.log")) for i in range(workers)]
        try:
            yield settings, store, procs
        finally:
            for process in procs:
                stop_worker(process)
            store.dispose()


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
