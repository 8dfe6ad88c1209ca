"""The shared model profile (models/profile.py) and the promotion gate's frame (models/gate.py)."""

import shutil

import pytest

from streamsense.models import gate, profile
from streamsense.models.registry import ModelIntegrityError, read_card, verify
from streamsense.settings import SHIPPED_MODELS


@pytest.fixture
def model_dir(tmp_path):
    """A copy of the shipped English model's small files (the ONNX files are not needed by these checks), without
    the profile recorded for it."""
    src = SHIPPED_MODELS / "streamsense-minilm" / "3"
    out = tmp_path / "m"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.onnx", "profile.json"))  # without its recorded profile
    card = read_card(out)
    card["files"] = {k: v for k, v in card["files"].items() if not k.endswith(".onnx") and k != "profile.json"}
    (out / "model.json").write_text(__import__("json").dumps(card))
    return out


def test_a_section_is_written_listed_and_checked(model_dir):
    assert profile.section(model_dir, "bias") is None
    written = profile.write_section(model_dir, "bias", {"groups": {"gay": 0.1}}, {"dataset": "templates", "rows": 8})
    assert profile.section(model_dir, "bias") == written
    assert written["made_from"] == {"dataset": "templates", "rows": 8} and written["made_at"]
    assert "profile.json" in read_card(model_dir)["files"]
    verify(model_dir)
    profile.write_section(model_dir, "drift", {"bins": [1, 2]}, "validation")
    assert set(profile.read_profile(model_dir)["sections"]) == {"bias", "drift"}
    verify(model_dir)
    (model_dir / "profile.json").write_text("{}")  # altered behind the card's back
    with pytest.raises(ModelIntegrityError):
        verify(model_dir)


def test_an_unknown_section_is_refused(model_dir):
    with pytest.raises(profile.ProfileError):
        profile.write_section(model_dir, "mood", {}, "x")


def test_the_gate_passes_only_when_every_check_passes(model_dir, monkeypatch):
    monkeypatch.setattr(gate, "CHECKS", {})
    assert not gate.run_gate(model_dir, model_dir).passed  # no check: nothing said yes

    @gate.gate_check("always")
    def _ok(champion, challenger, evidence):
        return gate.CheckResult("always", True, "fine")

    assert gate.run_gate(model_dir, model_dir).passed

    @gate.gate_check("broken")
    def _broken(champion, challenger, evidence):
        raise RuntimeError("no verdicts")

    result = gate.run_gate(model_dir, model_dir)
    assert not result.passed
    assert result.reasons() == ["broken: the check failed: RuntimeError: no verdicts"]
    assert gate.run_gate(model_dir, model_dir, only=["always"]).passed
