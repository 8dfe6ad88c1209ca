"""The local stack the demo, the bench and the tests start: a broker of the project's own (streamsense/brokers.py),
worker processes with exactly the given settings, and a fresh SQLite store, stopped and cleaned up together. Not
used by the worker itself."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from streamsense.brokers import ApacheKafkaBroker, EmbeddedBroker, apache_kafka_missing, free_port, stop_process
from streamsense.settings import PROJECT_ROOT, Settings
from streamsense.streams.kafka import ensure_topics
from streamsense.streams.store import Store


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
    """Graceful stop (the worker finishes its batch in flight), killed after `timeout`."""
    stop_process(process, timeout)


def new_local_broker(kind: str, log_path: Path | None = None, port: int | None = None, data_dir: Path | None = None,
                     heap: str = "1g"):
    """A broker on 127.0.0.1:`port` (a free one by default), not started: `tansu` (embedded, in memory) or `kafka`
    (Apache Kafka, its data in `data_dir`, a temporary folder by default)."""
    port = port or free_port()
    if kind == "tansu":
        return EmbeddedBroker(port, log_path=log_path)
    if kind == "kafka":
        reason = apache_kafka_missing()
        if reason:
            raise RuntimeError(reason.split(":")[0] + ": run `bash deploy/test-deps.sh` once (needs Java and Maven)")
        return ApacheKafkaBroker(port, log_path=log_path, data_dir=data_dir, heap=heap)
    raise ValueError(f"unknown broker {kind!r}: choose tansu or kafka")


@contextmanager
def local_stack(settings: Settings, db_path: Path, workers: int = 1, broker: str = "tansu", web: bool = False,
                **overrides) -> Iterator[tuple[Settings, Store, list[subprocess.Popen]]]:
    """A broker of its own (the embedded Tansu, or Apache Kafka with `broker="kafka"`), a fresh SQLite file and
    `workers` worker processes (one group) on them, with the settings that point at both; workers stopped, the
    store closed and the broker stopped (its data deleted) on exit. `database_url=` in `overrides` replaces the
    SQLite file; with `web`, each worker serves /metrics on a port of its own (`process.web_port`)."""
    db_path.unlink(missing_ok=True)
    with new_local_broker(broker, db_path.with_suffix(f".{broker}.log")) as broker:
        settings = settings.model_copy(update={
            "kafka_bootstrap_servers": broker.bootstrap_servers, "database_url": f"sqlite:///{db_path}", **overrides})
        store = Store(settings.database_url, settings.app_id)
        store.migrate()
        ensure_topics(settings)  # before anything is produced: an auto-created topic gets the broker's partition count
        procs = []
        for i in range(workers):
            port = free_port() if web else None
            procs.append(start_worker(settings.model_copy(update={"web_port": port}) if web else settings,
                                      db_path.with_suffix(f".worker{i}.log")))
            procs[-1].web_port = port
        try:
            yield settings, store, procs
        finally:
            for process in procs:
                stop_worker(process)
            store.dispose()
