"""Registry aliases (champion / challenger), promotion through the gate's feedback checks, rollback, and a worker's
reload following the champion."""

import json
import re
import math
import shutil

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models import gate
from streamsense.models.profile import section
from streamsense.models.registry import (
    ModelNotFoundError, alias_version, init_registry, list_models, read_aliases, read_card, resolve, set_alias,
    write_card,
)
from streamsense.settings import SHIPPED_MODELS, Settings
from streamsense.streams.feedback.evidence import quality
from streamsense.streams.feedback.gate_checks import mcnemar_exact
from streamsense.streams.feedback.verdicts import Verdict, record
from streamsense.streams.worker import load_classifier
from tests.bi_rows import prediction
from tests.test_feedback import T0, _store

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
    with pytest.raises(ModelNotFoundError, match="no version or alias 'challenger'"):
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
    assert re.search(r"refused by the gate \(1 of \d+ checks failed", refused.output)  # the other checks pass
    evidence.write_text(json.dumps(GOOD))
    passed = runner.invoke(app, ["models", "promote", f"{NAME}:2", "--evidence", str(evidence), "--by", "ops"],
                           env=env)
    assert passed.exit_code == 0, passed.output
    assert f"{NAME}:champion is now version 2" in passed.output
    shown = json.loads(runner.invoke(app, ["models", "aliases", NAME, "--json"], env=env).stdout)
    assert shown["aliases"] == {"champion": 2}
    bad = runner.invoke(app, ["models", "promote", f"{NAME}:7"], env=env)
    assert bad.exit_code == 2 and "no version '7'" in bad.output


def test_naming_a_challenger_pins_the_implicit_champion(registry):
    env = {"STREAMSENSE_MODEL_REGISTRY": str(registry)}
    result = CliRunner().invoke(app, ["models", "challenger", f"{NAME}:3"], env=env)
    assert result.exit_code == 0, result.output
    assert read_aliases(registry, NAME)["aliases"] == {"champion": 2, "challenger": 3}  # not 3, the newest


def test_registry_init_links_the_shipped_models(tmp_path):
    made = init_registry(tmp_path / "r", SHIPPED_MODELS)
    assert {p.relative_to(tmp_path / "r").as_posix() for p in made} == {
        f"{m.name}/{m.version}" for m in list_models(SHIPPED_MODELS)}
    for path in made:  # the small files copied (a recorded profile stays in this registry), the ONNX files linked
        assert not path.is_symlink() and not (path / "model.json").is_symlink()
        assert all((path / f).is_symlink() for f in read_card(path)["files"] if f.endswith(".onnx"))
    assert init_registry(tmp_path / "r", SHIPPED_MODELS) == []  # kept
    assert resolve(tmp_path / "r", f"{NAME}:champion") == tmp_path / "r" / NAME / "3"
    assert not (tmp_path / "r" / NAME / ".3.init").exists()


def test_the_worker_loads_the_champion_and_follows_a_promotion(tmp_path):
    root = tmp_path / "r"
    init_registry(root, SHIPPED_MODELS)
    _version(root, 4, link_onnx=True)
    set_alias(root, NAME, "champion", 3, "promote")
    settings = Settings(model_registry=root, model=f"{NAME}:champion", language_models="")
    assert load_classifier(settings).model_version == f"{NAME}:3"
    assert gate.promote(root, NAME, 4, GOOD).passed
    assert load_classifier(settings).model_version == f"{NAME}:4"  # what reload_model (SIGHUP) calls


TEXTS = {"pos1": ("I love this phone, it is wonderful!", "positive"),
         "pos2": ("Great service today, thank you so much, amazing team", "positive"),
         "pos3": ("Best coffee I have ever had, absolutely delighted", "positive"),
         "neg1": ("This is terrible, I hate it, worst purchase ever", "negative"),
         "neg2": ("Awful support, my order is broken and nobody answers", "negative"),
         "neg3": ("Disgusting food, rude staff, never again", "negative")}


def _reversed(root, version: int):
    """A version whose sentiment labels are in reverse order: the same network, so it calls negative what the
    shipped model calls positive (a challenger worse than the champion, made without training)."""
    path = _version(root, version, link_onnx=True)
    card = read_card(path)
    sentiment = next(t for t in card["tasks"] if t["name"] == "sentiment")
    sentiment["labels"] = sentiment["labels"][::-1]
    write_card(path, card | {"created_at": "2026-01-01T00:00:00+00:00"})
    return path


def test_promote_gathers_the_verdict_evidence_by_running_both_models(tmp_path):
    root = tmp_path / "r"
    _version(root, 3, link_onnx=True)
    _reversed(root, 4)
    url = f"sqlite:///{tmp_path / 'e.db'}"
    rows = [prediction("post", ident, "b", label, T0, text=text, offset=i) | {"model_version": f"{NAME}:3"}
            for i, (ident, (text, label)) in enumerate(TEXTS.items())]
    rows.append(prediction("post", "hashed", "b", "negative", T0, offset=9) | {"text": None,
                                                                                "model_version": f"{NAME}:3"})
    _store(url, rows)
    engine = create_engine(url)
    record(engine, [Verdict("post", ident, "sentiment", "ann", label=label) for ident, (_, label) in TEXTS.items()]
           + [Verdict("post", "hashed", "sentiment", "ann", label="negative")])
    env = {"STREAMSENSE_MODEL_REGISTRY": str(root), "STREAMSENSE_DATABASE_URL": url, "COLUMNS": "200"}
    runner = CliRunner()
    # the reversed version as challenger: the champion is right on all six, the challenger on none
    set_alias(root, NAME, "champion", 3, "promote")
    refused = runner.invoke(app, ["models", "promote", f"{NAME}:4"], env=env)
    assert refused.exit_code == 1, refused.output
    assert "on 6 held-out verdicts: challenger 0.000 vs champion 1.000; right only by the challenger 0, only by " \
           "the champion 6" in refused.output
    # the other way round: six discordant pairs all for the challenger, p = 1/64
    set_alias(root, NAME, "champion", 4, "promote")
    evidence = tmp_path / "alerts.json"
    evidence.write_text(json.dumps({"alert_precision": GOOD["alert_precision"]}))
    passed = runner.invoke(app, ["models", "promote", f"{NAME}:3", "--evidence", str(evidence)], env=env)
    assert passed.exit_code == 0, passed.output
    assert "p = 0.0156 < 0.05" in passed.output
    assert alias_version(root, NAME, "champion") == 3

    compared = json.loads(runner.invoke(app, ["models", "compare", f"{NAME}:4", f"{NAME}:3", "--json"],
                                        env=env).stdout)
    assert compared["texts"] == 6  # the hashed one has no text to run on
    assert compared["agreement"]["sentiment"] == 0.0  # reversed labels: never the same sentiment
    assert compared["agreement"]["offensive"] == compared["agreement"]["complaint"] == 1.0  # the same network
    assert compared["verdicts"] == {"sentiment": {"n": 6, "champion": 0, "challenger": 6}} and compared["better"]

    report = quality(engine, root / NAME / "3")
    assert report["heads"] == {"sentiment": {"n": 6, "right": 6, "accuracy": 1.0, "low": 0.6097, "high": 1.0}}
    assert report["without_text"] == 1
    shown = runner.invoke(app, ["feedback", "quality", f"{NAME}:3", "--record"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "1 labelled verdicts name messages stored without text" in shown.output
    assert section(root / NAME / "3", "quality")["heads"]["sentiment"]["accuracy"] == 1.0
    engine.dispose()
