"""The debiasing refit's parts (models/debias.py): training sentences apart from the evaluation templates,
counterfactual swaps, the vector cache, weighted head fits and the choice between refits."""

import random
import re
import tomllib

import numpy as np

from streamsense.models.adapt import fit_head
from streamsense.models.bias import TEMPLATES_DIR, identity_lexicon, names_a_group
from streamsense.models.debias import (BENIGN_TRAINING, BROAD, benign_training_rows, choose,
                                       counterfactuals)
from streamsense.models.vectors import CachedEncoder


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"[\w']+", re.sub(r"\{\w+\}", " X ", text.lower()))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_benign_training_sentences_are_not_the_evaluation_templates():
    raw = tomllib.loads((TEMPLATES_DIR / "en.toml").read_text(encoding="utf-8"))["templates"]
    evaluation = [t for kind in ("benign", "offensive") for t in raw[kind]]
    held = set().union(*(_shingles(t) for t in evaluation))
    for pattern in BENIGN_TRAINING:
        assert pattern not in evaluation
        assert not _shingles(pattern) & held, pattern
    rows = benign_training_rows()
    assert len(rows) == len(BENIGN_TRAINING) * 32 and len(set(rows)) == len(rows)
    assert all(names_a_group(r) for r in rows)


def test_counterfactuals_swap_every_identity_term_for_another_groups_in_the_same_number():
    rng = random.Random(1)
    copies = counterfactuals("Gay people and lesbians should be banned", 3, rng)
    assert len(copies) == 3 and len(set(copies)) == 3
    for copy in copies:
        assert "gay" not in copy.lower() and "lesbian" not in copy.lower()
        assert copy.endswith("should be banned") and names_a_group(copy)
    # a singular term becomes a singular form; a plural one a plural form
    lexicon = identity_lexicon("en")
    for copy in counterfactuals("That muslim next door again", 5, random.Random(2)):
        term = lexicon.search(copy).group(0)
        assert not term.lower().endswith(("people", "s")) or term.lower().endswith(("person", "us")), copy
    assert counterfactuals("The weather is lovely today") == []
    assert counterfactuals("Oh man, American Airlines lost my bag") == []  # broad words are not swapped
    assert {"man", "american"} <= BROAD


def test_vector_cache_encodes_each_text_once_across_runs(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("a")] for t in texts], dtype=np.float32)

    first = CachedEncoder("m-1", encode, tmp_path)(["banana", "kiwi", "banana"])
    assert first.tolist() == [[6, 3], [4, 0], [6, 3]]
    again = CachedEncoder("m-1", encode, tmp_path)(["kiwi", "papaya", "banana"])
    assert again.tolist() == [[4, 0], [6, 3], [6, 3]]
    assert calls == [["kiwi", "banana"], ["papaya"]]


def test_weighted_fit_ignores_zero_weight_rows_and_follows_heavy_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    w0, b0 = np.zeros((2, 4), dtype=np.float32), np.zeros(2, dtype=np.float32)
    plain = fit_head(x[:150], y[:150], w0, b0, anchor=0.01, sample_weight=np.ones(150))
    # rows 150..199 relabelled all 0, weighted zero: the same head as without them
    y2 = y.copy()
    y2[150:] = 0
    weights = np.r_[np.ones(150), np.zeros(50)]
    zero = fit_head(x, y2, w0, b0, anchor=0.01, sample_weight=weights)
    assert np.allclose(plain[0], zero[0], atol=1e-4)
    heavy = fit_head(x, y2, w0, b0, anchor=0.01, sample_weight=np.r_[np.ones(150), np.full(50, 20.0)])
    share = lambda w, b: float(((x @ w.T + b).argmax(1) == 1).mean())  # noqa: E731
    assert share(*heavy) < share(*plain) - 0.1


def _row(f1, fpr, mean, recall=1.0):
    return {"validation": {"macro_f1": f1}, "dev": {"max_fpr": fpr, "worst_mean": mean, "recall": recall}}


def test_choose_keeps_validation_within_the_budget_and_needs_an_improvement():
    base = _row(0.78, 0.8, 0.7)
    costly, fair, fairer_but_blind = _row(0.75, 0.0, 0.1), _row(0.775, 0.1, 0.3), _row(0.78, 0.0, 0.1, recall=0.5)
    assert choose([base, costly, fair, fairer_but_blind]) is fair
    assert choose([base, costly]) is None
    assert choose([base, _row(0.78, 0.8, 0.7)]) is None



def test_measure_fits_the_temperature_and_medium_on_validation_and_reports_each_group():
    from streamsense.models.debias import HeadData, measure

    rng = np.random.default_rng(3)

    def split(n):
        y = (rng.random(n) < 0.4).astype(np.int64)
        x = rng.normal(size=(n, 3)).astype(np.float32)
        x[:, 0] += np.where(y == 1, 1.5, -1.5)
        return x, y

    # templates: group "a" benign rows sit on the abusive side, group "b" benign rows far from it; abuse of both
    x = np.zeros((8, 3), dtype=np.float32)
    x[:, 0] = [1.0, 1.2, -3.0, -2.8, 3.0, 3.0, 3.0, 3.0]
    abusive = np.array([False, False, False, False, True, True, True, True])
    group = np.array(["a", "a", "b", "b", "a", "a", "b", "b"])
    data = HeadData("hate", (np.zeros((1, 3), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64)),
                    split(2000), split(1000), {"dev": (x, abusive, group), "heldout": (x, abusive, group)})
    w = np.array([[-1.0, 0, 0], [1.0, 0, 0]], dtype=np.float32)
    b = np.zeros(2, dtype=np.float32)
    m = measure(data, w, b)
    xv, yv = data.validation
    assert 0.2 < m["temperature"] < 5
    assert 0.84 <= m["validation"]["risky_medium"] <= 0.86  # the medium is fitted for 85 % recall on validation
    assert 0.8 < m["validation"]["macro_f1"] <= 1 and 0.8 < m["test"]["macro_f1"] <= 1
    dev = m["dev"]
    assert dev["groups"]["a"]["fpr"] == 1.0 and dev["groups"]["b"]["fpr"] == 0.0
    assert dev["worst_mean"] == dev["groups"]["a"]["mean"] > 0.5 > dev["groups"]["b"]["mean"]
    assert dev["spread"] == round(dev["groups"]["a"]["mean"] - dev["groups"]["b"]["mean"], 4)
    assert dev["recall"] == 1.0 and dev["max_fpr"] == 1.0


def test_debias_command_refuses_what_it_cannot_do(tmp_path):
    """Before any encoding: an unknown head, publishing into the shipped models, a Chinese model: one clear line."""
    from typer.testing import CliRunner

    from streamsense.cli import app
    from streamsense.settings import SHIPPED_MODELS

    runner = CliRunner()
    result = runner.invoke(app, ["models", "debias", "--head", "complaint", "--cache", str(tmp_path)])
    assert result.exit_code == 2 and "refits only offensive, hate" in result.output
    result = runner.invoke(app, ["models", "debias", "--publish", str(SHIPPED_MODELS), "--cache", str(tmp_path)])
    assert result.exit_code == 2 and "not into the shipped models" in result.output
    result = runner.invoke(app, ["models", "debias", "--model", "streamsense-bge-zh", "--cache", str(tmp_path)])
    assert result.exit_code == 2 and "English mean-pooled models only" in result.output
    assert not list(tmp_path.iterdir())  # nothing encoded
