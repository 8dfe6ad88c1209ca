"""Model hot reload (SIGHUP) in a real worker, and JSON logs."""

import json
import signal
import time

from streamsense.models.registry import publish, resolve
from streamsense.settings import SHIPPED_MODELS, Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.schema import predictions
from streamsense.streams.store import Store
from streamsense.streams.telemetry import Metrics
from streamsense.streams.web import Health
from streamsense.streams.worker import build_processor, reload_model
from tests.helpers import as_lines, produce, settings_for, wait_until, worker

SHIPPED = resolve(SHIPPED_MODELS, "streamsense-minilm:latest")


def _posts(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": f"the delivery was late again ({i})", "channel": "acme"} for i in range(n)]


def _json_lines(path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_sighup_swaps_the_model_without_losing_messages(broker, tmp_path, unique):
    registry = tmp_path / "registry"
    publish(SHIPPED, registry, "m")
    settings = settings_for(broker.bootstrap_servers, f"sqlite:///{tmp_path / 'reload.db'}", unique,
                            model_registry=registry, model="m:latest", log_format="json")
    store = Store(settings.database_url, settings.app_id)
    store.migrate()
    first, second = _posts("before", 100), _posts("after", 100)
    with worker(settings, tmp_path, loglevel="info") as proc:
        produce(settings, settings.topic_posts, as_lines(first))
        wait_until(lambda: store.count(predictions) >= 100, 120, what="first half stored")
        publish(SHIPPED, registry, "m")
        proc.send_signal(signal.SIGHUP)
        log = tmp_path / "worker.log"
        wait_until(lambda: any("model reloaded: now m:2" in e["message"] for e in _json_lines(log)), 60,
                   what="reload logged")
        produce(settings, settings.topic_posts, as_lines(second))
        wait_until(lambda: store.count(predictions) >= 200, 120, what="second half stored")
        time.sleep(1)
    with store.engine.connect() as conn:
        versions = dict(conn.execute(predictions.select().with_only_columns(
            predictions.c.message_id, predictions.c.model_version)).all())
    assert len(versions) == 200
    assert {versions[p["id"]] for p in first} == {"m:1"}
    assert {versions[p["id"]] for p in second} == {"m:2"}
    entries = _json_lines(log)
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)


def test_a_broken_model_is_refused_and_the_running_one_kept(tmp_path, monkeypatch):
    registry = tmp_path / "registry"
    publish(SHIPPED, registry, "m")
    monkeypatch.setenv("STREAMSENSE_MODEL_REGISTRY", str(registry))
    monkeypatch.setenv("STREAMSENSE_MODEL", "m:latest")
    monkeypatch.setenv("STREAMSENSE_DEVICE", "cpu")
    processor = build_processor(Settings(), AlertRules.load())
    damaged = publish(SHIPPED, registry, "m")
    with open(damaged / "model.int8.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    metrics, health = Metrics(), Health()
    assert reload_model(processor, metrics, health) is False
    assert processor.classifier.model_version == "m:1"
