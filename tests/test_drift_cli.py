"""`streamsense drift reference` / `explain`, the drift BI report and metrics, on replays of the committed fixtures."""

import json
import shutil

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models.profile import section
from streamsense.models.registry import verify
from streamsense.settings import SHIPPED_MODELS
from streamsense.streams.bi import connect, run_report
from streamsense.streams.drift.compare import Reference
from streamsense.streams.drift.reference import make_reference, save_reference
from streamsense.streams.telemetry import Metrics
from tests.test_drift import N, REFERENCE_TEXTS, TWEETS, Replay, _held_out, null  # noqa: F401 (a fixture)

MODEL = "streamsense-minilm:3"


@pytest.fixture
def registry(tmp_path):
    """A copy of the shipped English model (its ONNX files linked) whose profile the commands may rewrite."""
    src = SHIPPED_MODELS / "streamsense-minilm" / "3"
    dst = tmp_path / "registry" / "streamsense-minilm" / "3"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".onnx":
            (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst.parent.parent


def invoke(args, **env):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})


def test_reference_from_validation_data(registry, tmp_path):
    """From the card's validation datasets (a small stand-in folder of fixture tweets, one per task's dataset)."""
    card = json.loads((registry / "streamsense-minilm" / "3" / "model.json").read_text())
    datasets = tmp_path / "datasets"
    for k, task in enumerate(card["tasks"]):
        folder = datasets / task["dataset"]
        folder.mkdir(parents=True)
        rows = TWEETS[k * 130:(k + 1) * 130]
        label = {"sentiment": None}.get(task["name"], task["labels"][0])
        folder.joinpath("validation.jsonl").write_text("".join(
            json.dumps({"text": r["text"], "label": label or r["label"]}) + "\n" for r in rows))
    result = invoke(["drift", "reference", "--model", MODEL, "--datasets-dir", str(datasets)],
                    STREAMSENSE_MODEL_REGISTRY=str(registry))
    assert result.exit_code == 0, result.output
    model_dir = registry / "streamsense-minilm" / "3"
    written = section(model_dir, "drift")
    assert written["made_from"]["rows"] == 520 and written["sums"][0] == 520
    assert [d["dataset"] for d in written["made_from"]["datasets"]] == [t["dataset"] for t in card["tasks"]]
    verify(model_dir)  # the card's checksum covers the new profile.json
    too_few = invoke(["drift", "reference", "--model", MODEL, "--datasets-dir", str(datasets), "--per-dataset", "100"],
                     STREAMSENSE_MODEL_REGISTRY=str(registry))
    assert too_few.exit_code == 2 and "a reference needs at least 500" in too_few.output
    assert "Traceback" not in too_few.output


@pytest.fixture
def html_store(null, registry, tmp_path):
    """A store with one drifted window (HTML around the texts) judged against a reference recorded in the registry's
    model: the null model's rows, stored under the model's own version so the registry's reference applies."""
    model_dir = registry / "streamsense-minilm" / "3"
    data = make_reference(null, REFERENCE_TEXTS)
    save_reference(model_dir, data, {"rows": len(REFERENCE_TEXTS), "source": "fixture tweets"})
    replay = Replay(null, Reference.from_section(data), tmp_path / "html.db")
    replay.window([f'<div class="post"><p>{t}</p></div>' for t in _held_out(0)], 0)
    replay.close(1)
    with replay.store.engine.begin() as conn:
        for table in ("drift_windows", "predictions"):
            conn.execute(text(f"UPDATE {table} SET model_version = :v"), {"v": MODEL})
    return replay


def test_explain_names_what_moved_and_shows_examples(html_store, registry):
    env = {"STREAMSENSE_MODEL_REGISTRY": str(registry), "STREAMSENSE_DATABASE_URL": html_store.url}
    result = invoke(["drift", "explain", "--json", "--window", "2026-01-01T00:00"], **env)
    assert result.exit_code == 2 and "no drift window" in result.output  # a time with no window: said in a line
    result = invoke(["drift", "explain", "--json", "--model", MODEL], **env)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # the newest window: the one message that closed the one before, too small to judge, and saying so
    assert out["status"] == "too small" and out["summary"] == f"too small: 1 < {N} messages"
    at = out["window_start"]
    first = json.loads(invoke(["drift", "explain", "--json", "--model", MODEL, "--window",
                               _minus_an_hour(at)], **env).stdout)
    assert first["status"] == "drift" and first["messages"] == N
    assert first["quantities"][0]["level"] == "major"
    assert {"length (tokens)", "text representation"} <= {q["name"] for q in first["quantities"]
                                                           if q["level"] != "stable"}
    tokens = {t["token"] for t in first["drivers"]["tokens"]}
    assert tokens & {"<", ">", "div", "class", "post", "/"}, tokens
    assert any("<div" in e for t in first["drivers"]["tokens"] for e in t["examples"])
    table = invoke(["drift", "explain", "--model", MODEL, "--window", _minus_an_hour(at)], **env)
    assert table.exit_code == 0 and "length (tokens)" in table.stdout and "token '" in table.stdout


def _minus_an_hour(iso: str) -> str:
    from datetime import datetime, timedelta
    return (datetime.fromisoformat(iso) - timedelta(minutes=30)).isoformat()


def test_reference_from_a_trusted_window_of_stored_traffic(html_store, registry):
    env = {"STREAMSENSE_MODEL_REGISTRY": str(registry), "STREAMSENSE_DATABASE_URL": html_store.url}
    result = invoke(["drift", "reference", "--model", MODEL, "--from-store", "--since", "2020-01-01T00:00"], **env)
    assert result.exit_code == 0, result.output
    written = section(registry / "streamsense-minilm" / "3", "drift")
    assert written["made_from"]["source"] == "stored traffic" and written["made_from"]["rows"] == N + 1
    nothing = invoke(["drift", "reference", "--model", MODEL, "--from-store", "--since", "2099-01-01"], **env)
    assert nothing.exit_code == 2 and "no stored texts of streamsense-minilm:3" in nothing.output


def test_bi_report_dashboard_and_metrics(html_store):
    from streamsense.streams.dashboard import summary

    engine = connect(html_store.url)
    rows = run_report(engine, "drift-windows").records()
    panel = summary(engine, "minute", 60)["drift"]
    engine.dispose()
    assert panel == rows
    assert [r["status"] for r in rows] == [None, "drift"]  # newest first: the open window is not judged yet
    assert rows[1]["messages"] == N and "(PSI " in rows[1]["summary"]
    metrics = Metrics()
    metrics.watch_drift(html_store.store.drift)
    exposed = metrics.render().decode()
    level = 'streamsense_drift_level{model_version="streamsense-minilm:3+null",quantity="length (tokens)",scope="*"}'
    assert f"{level} 2.0" in exposed
    assert "streamsense_drift_window_messages{" in exposed


def test_the_promotion_gate_wants_a_drift_reference(registry):
    import streamsense.streams.drift.promotion  # noqa: F401 (registers the check)
    from streamsense.models.gate import run_gate

    model_dir = registry / "streamsense-minilm" / "3"
    passed = run_gate(model_dir, model_dir, only=["drift_reference"])
    assert passed.passed and "has a drift reference of 4665 texts" in passed.reasons()[0]
    (model_dir / "profile.json").unlink()
    card = json.loads((model_dir / "model.json").read_text())
    del card["files"]["profile.json"]
    (model_dir / "model.json").write_text(json.dumps(card))
    refused = run_gate(model_dir, model_dir, only=["drift_reference"])
    assert not refused.passed
    assert refused.reasons() == ["drift_reference: streamsense-minilm:3 has no drift reference: make one with "
                                 "`streamsense drift reference --model streamsense-minilm:3`"]


def test_a_reference_made_while_the_worker_runs_is_used_at_the_next_close(registry):
    from streamsense.streams.drift.reference import References

    refs = References(registry)
    model_dir = registry / "streamsense-minilm" / "3"
    assert refs.get(MODEL).messages == 4665  # the shipped one
    (model_dir / "profile.json").unlink()
    assert refs.get(MODEL) is None
    data = {**section(SHIPPED_MODELS / "streamsense-minilm" / "3", "drift")}
    data["sums"] = [x * 2 for x in data["sums"]]
    save_reference(model_dir, data, "a test")
    assert refs.get(MODEL).messages == 2 * 4665
    assert refs.get(MODEL + "+null") is None and refs.get("no-such-model:1") is None
