"""Registry aliases (champion / challenger), promotion through the gate's feedback checks, rollback, and a worker's
reload following the champion."""

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models import gate
from streamsense.models.registry import (
    ModelNotFoundError, alias_version, init_registry, list_models, read_aliases, read_card, resolve, set_alias, write_card,
)
from streamsense.settings import SHIPPED_MODELS, Settings
from streamsense.streams.feedback.gate_checks import mcnemar_exact
from streamsense.streams.worker import load_classifier

NAME = "streamsense-minilm"
SHIPPED = SHIPPED_MODELS / NAME / "3"


def _version(root, version: int, test_delta: dict | None = None, link_onnx: bool = False):
    """Version `version` of NAME in `root`: the shipped model's card and small files (its ONNX files linked, or
    left out), with its test metrics moved by `test_delta` {split: points}."""
    out = root / NAME / str(version)
    out.mkdir(parents=True)
    card = read_card(SHIPPED)
    for name in card["files"]:
        if name.endswith(".onnx"):
            if link_onnx:
                (out / name).symlink_to(SHIPPED / name)
        else:
            shutil.copy2(SHIPPED / name, out / name)
    if not link_onnx:
        card["files"] = {k: v for k, v in card["files"].items() if not k.endswith(".onnx")}
    for variant in card["metrics"]["test"].values():
        for split, delta in (test_delta or {}).items():
            variant[split] = {**variant[split], "macro_recall": variant[split]["macro_recall"] + delta / 100,
                              "macro_f1": variant[split]["macro_f1"] + delta / 100}
    write_card(out, card | {"version": version})
    return out


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "registry"
    for v in (1, 2):
        _version(root, v)
    _version(root, 3, {"sentiment": -1.5})  # sentiment's test macro recall 1.5 points worse
    return root


def _pairs(b: int, c: int, same: int = 20) -> list[dict]:
    return ([{"champion": False, "challenger": True}] * b + [{"champion": True, "challenger": False}] * c
            + [{"champion": True, "challenger": True}] * same)


GOOD = {"verdicts": _pairs(12, 2), "alert_precision": {"champion": {"n": 10, "right": 6},
                                                       "challenger": {"n": 10, "right": 7}}}


def test_mcnemar_against_a_hand_computation():
    assert mcnemar_exact(8, 1) == pytest.approx((9 + 1) / 512)  # C(9,8) + C(9,9) over 2^9
    assert mcnemar_exact(12, 2) == pytest.approx(sum(math.comb(14, k) for k in range(12, 15)) / 2 ** 14)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(1, 5) > 0.9


def test_aliases_resolve_and_the_implicit_champion(registry):
    assert alias_version(registry, NAME, "champion") == 3  # no aliases file: the champion is the latest version
    with pytest.raises(ModelNotFoundError, match="no alias 'challenger'"):
        resolve(registry, f"{NAME}:challenger")
    set_alias(registry, NAME, "champion", 1, "promote")
    set_alias(registry, NAME, "challenger", 2, "set")
    assert resolve(registry, f"{NAME}:champion") == registry / NAME / "1"
    assert resolve(registry, f"{NAME}:challenger") == registry / NAME / "2"
    assert resolve(registry, f"{NAME}:latest") == registry / NAME / "3"
    with pytest.raises(ModelNotFoundError):
        set_alias(registry, NAME, "champion", 9, "promote")
    with pytest.raises(ValueError):
        set_alias(registry, NAME, "latest", 1, "set")


def test_promote_moves_the_champion_only_through_the_gate(registry):
    set_alias(registry, NAME, "champion", 1, "promote")
    set_alias(registry, NAME, "challenger", 2, "set")
    refused = gate.promote(registry, NAME, 2, {**GOOD, "verdicts": _pairs(3, 2)})  # not significant
    assert not refused.passed
    assert [r.split(":")[0] for r in refused.reasons()] == ["verdicts"]
    assert "exact McNemar one-sided p = 0.5000 >= 0.05" in refused.reasons()[0]
    assert alias_version(registry, NAME, "champion") == 1
    no_evidence = gate.promote(registry, NAME, 2, {})
    assert {r.split(":")[0] for r in no_evidence.reasons()} == {"verdicts", "alert_precision"}
    worse_alerts = gate.promote(registry, NAME, 2, {**GOOD, "alert_precision": {
        "champion": {"n": 10, "right": 8}, "challenger": {"n": 10, "right": 7}}})
    assert worse_alerts.reasons() == ["alert_precision: alert precision 0.700 (n=10) vs the champion's 0.800 (n=10)"]

    passed = gate.promote(registry, NAME, 2, GOOD, by="ops")
    assert passed.passed and alias_version(registry, NAME, "champion") == 2
    assert "challenger" not in read_aliases(registry, NAME)["aliases"]  # it became the champion
    assert read_aliases(registry, NAME)["history"][-2]["by"] == "ops"

    losing = gate.promote(registry, NAME, 3, GOOD)  # version 3 lost 1.5 points on sentiment's test split
    assert not losing.passed
    assert losing.reasons() == ["test_splits: more than 1 point lost on sentiment macro_recall 0.7041 → 0.6891"]
    assert alias_version(registry, NAME, "champion") == 2


def test_test_splits_need_the_recorded_metrics(registry):
    card = read_card(registry / NAME / "3")
    card["metrics"].pop("test")
    write_card(registry / NAME / "3", card)
    result = gate.run_gate(registry / NAME / "1", registry / NAME / "3", GOOD, only=["test_splits"])
    assert not result.passed
    assert "has no test-split metrics: run `streamsense models eval --model streamsense-minilm:3 --record` (it " \
           "needs the datasets)" in result.reasons()[0]


def test_rollback_walks_back_one_promotion_at_a_time(registry):
    gate.promote(registry, NAME, 1, GOOD)  # from the implicit champion 3 (its own test splits are the reference)
    assert alias_version(registry, NAME, "champion") == 1
    assert gate.promote(registry, NAME, 2, GOOD).passed
    env = {"STREAMSENSE_MODEL_REGISTRY": str(registry), "STREAMSENSE_DATABASE_URL": "sqlite:////nonexistent/x.db"}
    runner = CliRunner()
    first = runner.invoke(app, ["models", "rollback", NAME], env=env)
    assert first.exit_code == 0, first.output
    assert "now version 1 (was 2)" in first.output
    second = runner.invoke(app, ["models", "rollback", NAME], env=env)
    assert "now version 3 (was 1)" in second.output
    third = runner.invoke(app, ["models", "rollback", NAME], env=env)
    assert third.exit_code == 2 and "no earlier champion than version 3" in third.output


def test_cli_promote_refuses_with_the_reasons_then_passes(registry, tmp_path):
    env = {"STREAMSENSE_MODEL_REGISTRY": str(registry), "STREAMSENSE_DATABASE_URL": "sqlite:////nonexistent/x.db",
           "COLUMNS": "200"}
    set_alias(registry, NAME, "champion", 1, "promote")
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({**GOOD, "verdicts": _pairs(2, 4)}))
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "promote", f"{NAME}:2", "--evidence", str(evidence)], env=env)
    assert refused.exit_code == 1
    assert "failed verdicts: on 26 held-out verdicts" in refused.output
    assert "refused by the gate (1 of 3 checks failed" in refused.output
    evidence.write_text(json.dumps(GOOD))
    passed = runner.invoke(app, ["models", "promote", f"{NAME}:2", "--evidence", str(evidence), "--by", "ops"],
                           env=env)
    assert passed.exit_code == 0, passed.output
    assert f"{NAME}:champion is now version 2" in passed.output
    shown = json.loads(runner.invoke(app, ["models", "aliases", NAME, "--json"], env=env).stdout)
    assert shown["aliases"] == {"champion": 2}
    bad = runner.invoke(app, ["models", "promote", f"{NAME}:7"], env=env)
    assert bad.exit_code == 2 and "no version '7'" in bad.output


def test_registry_init_links_the_shipped_models(tmp_path):
    made = init_registry(tmp_path / "r", SHIPPED_MODELS)
    assert {p.relative_to(tmp_path / "r").as_posix() for p in made} == {
        f"{m.name}/{m.version}" for m in list_models(SHIPPED_MODELS)}
    assert all(p.is_symlink() for p in made)
    assert init_registry(tmp_path / "r", SHIPPED_MODELS) == []  # kept
    assert resolve(tmp_path / "r", f"{NAME}:champion").resolve() == SHIPPED.resolve()


def test_the_worker_loads_the_champion_and_follows_a_promotion(tmp_path):
    root = tmp_path / "r"
    init_registry(root, SHIPPED_MODELS)
    _version(root, 4, link_onnx=True)
    set_alias(root, NAME, "champion", 3, "promote")
    settings = Settings(model_registry=root, model=f"{NAME}:champion", language_models="")
    assert load_classifier(settings).model_version == f"{NAME}:3"
    assert gate.promote(root, NAME, 4, GOOD).passed
    assert load_classifier(settings).model_version == f"{NAME}:4"  # what reload_model (SIGHUP) calls
