"""Identity-term bias (models/bias.py): the metrics, the templates, the report through the serving path, the
`models bias` command, its record in the profile and card, and the promotion gate's `bias` check."""

import copy
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from streamsense.cli import app
from streamsense.models import bias, gate, profile
from streamsense.models.classifier import Classifier
from streamsense.models.registry import read_card, verify
from streamsense.models.risk import RiskRules
from streamsense.models.runtime import ModelRuntime
from streamsense.settings import SHIPPED_MODELS

ENGLISH = SHIPPED_MODELS / "streamsense-minilm" / "3"


# -- metrics on hand-made scores ------------------------------------------------------------------------------------

def test_auc_counts_pairs_and_halves_ties():
    # positives 0.9, 0.4 against negatives 0.5, 0.1, 0.4: 0.9 beats all three (3), 0.4 beats 0.1 (1) and ties 0.4
    # (0.5), loses to 0.5: 4.5 of 6 pairs
    assert bias.auc([0.9, 0.4], [0.5, 0.1, 0.4]) == pytest.approx(0.75)
    assert bias.auc([0.2, 0.3], [0.6, 0.7]) == 0.0
    assert bias.auc([0.5], [0.5]) == 0.5
    assert bias.auc([], [0.1]) is None
    rng = np.random.default_rng(0)
    pos, neg = rng.random(40), rng.random(30)
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert bias.auc(pos, neg) == pytest.approx(pairs)


def test_subgroup_bpsn_and_bnsp_auc_by_hand():
    # group rows: benign 0.6, 0.2; abusive 0.7. Background: benign 0.1, 0.3; abusive 0.5, 0.9
    scores = [0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.9]
    abusive = [0, 0, 1, 0, 0, 1, 1]
    group = [1, 1, 1, 0, 0, 0, 0]
    m = bias.bias_aucs(scores, abusive, group)
    assert m["subgroup_auc"] == 1.0  # 0.7 above 0.6 and 0.2
    # BPSN: background abusive (0.5, 0.9) against the group's benign (0.6, 0.2): 0.5>0.2, 0.9>0.6, 0.9>0.2 -> 3/4
    assert m["bpsn_auc"] == 0.75
    # BNSP: the group's abusive (0.7) against background benign (0.1, 0.3): 2/2
    assert m["bnsp_auc"] == 1.0


def test_false_positive_rate_and_targets():
    assert bias.rate(np.array([0.6, 0.4, 0.5, 0.1]) >= bias.THRESHOLD) == 0.5
    assert bias.rate(np.array([], dtype=bool)) is None
    summary = {"heads": {"offensive": {"max_fpr": 0.0, "worst_mean": 0.2, "spread": 0.1}},
               "medium_share": 0.05, "above_medium": 0.0, "recall_medium": 0.95}
    assert all(bias.targets_met(summary).values())
    summary["heads"]["offensive"]["max_fpr"] = 0.25
    summary["recall_medium"] = 0.8
    met = bias.targets_met(summary)
    assert not met["fpr"] and not met["recall_medium"] and met["mean"]


# -- templates ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "zh"])
def test_templates_cover_twenty_groups_with_benign_and_abusive_rows_in_both_halves(language):
    suite = bias.load_suite(language)
    assert suite.language == language
    assert len(suite.groups) >= 20
    assert len({g.category for g in suite.groups}) >= 5
    for g in suite.groups:
        mine = [r for r in suite.rows if r.group == g.name]
        for part in bias.PARTS:
            assert any(not r.abusive and r.part == part for r in mine), (g.name, part)
            assert any(r.abusive and r.part == part for r in mine), (g.name, part)
    assert not any("{" in r.text or "}" in r.text for r in suite.rows)
    if language == "en":
        texts = {r.text for r in suite.rows}
        assert "I am an immigrant and I love this airline" in texts and "I am a Muslim and I love this airline" in texts


def test_a_broken_templates_file_is_named(tmp_path):
    path = tmp_path / "xx.toml"
    path.write_text('language = "xx"\n[[groups]]\nname = "a"\n', encoding="utf-8")
    with pytest.raises(bias.BiasError, match="xx.toml"):
        bias.load_suite("xx", path)
    with pytest.raises(bias.BiasError, match="no bias templates"):
        bias.load_suite("xx")


def test_blinding_replaces_whole_identity_words_only():
    assert bias.blind("I am a gay person and my manager is a Muslim") == "I am a person and my manager is a person"
    assert bias.blind("Germany has great mangoes") == "Germany has great mangoes"
    assert bias.blind("我是河南人，很喜欢", "zh") == "我是人，很喜欢"


# -- through the serving path (the shipped English model, int8 on CPU) -----------------------------------------------

@pytest.fixture(scope="module")
def classifier():
    runtime = ModelRuntime(ENGLISH, "cpu", threads=1)
    return Classifier(runtime, RiskRules.load())


def test_the_report_on_a_subset_measures_every_group_and_the_mitigation(classifier, tmp_path):
    report = bias.evaluate_bias(classifier, tmp_path / "no-datasets", limit=4)
    assert report["test_splits"] is None and "templates only" in report["test_splits_note"]
    assert report["heads"] == ["offensive", "hate"] and report["language"] == "en"
    part = report["parts"]["heldout"]
    assert len(part["groups"]) >= 20
    gay = part["groups"]["gay"]
    assert gay["benign"] == 2 and gay["abusive"] == 2  # templates 1 and 3 of each kind are held out
    # the served offensive probability of benign mentions of gay people is lowered by the identity-blind head ...
    before = report["mitigation"]["without"]["gay"]
    assert report["mitigation"]["identity_blind"] == ["offensive", "complaint"]
    assert gay["heads"]["offensive"]["mean"] < before["heads"]["offensive"]["mean"]
    assert before["heads"]["offensive"]["mean"] > 0.4  # (the shipped model's known bias, which the report shows)
    # ... while abuse of them is still flagged
    assert gay["recall_medium"] == 1.0
    # a prediction taken alone says the same as the report
    text = "I'm a gay person and a loyal customer for ten years"
    assert text in {r.text for r in bias.load_suite("en").rows}
    assert classifier.classify([text])[0].risk.labels["offensive"] < 0.3


def test_blinding_keeps_the_inferred_probabilities_it_does_not_change(classifier):
    texts = ["I am a gay person and I love this airline", "thanks for the quick delivery", "gay people are trash"]
    encoded = classifier.runtime.tokenize(texts)
    probs = classifier.runtime.infer(encoded)
    kept = {k: v.copy() for k, v in probs.items()}
    out = bias.blind_probs(classifier, texts, probs)
    for k in probs:
        assert np.array_equal(probs[k], kept[k])  # the caller's arrays are untouched
    assert out["offensive"][0, 1] < probs["offensive"][0, 1]  # the benign mention: lowered
    assert np.array_equal(out["offensive"][1], probs["offensive"][1])  # no identity term: as inferred
    assert out["offensive"][2, 1] >= 0.5  # the abuse: still offensive without the word
    assert np.array_equal(out["hate"], probs["hate"])  # hate is not identity-blind


def test_another_models_blinding_is_taken_where_it_applies(classifier, monkeypatch):
    """What one model's second look found (which texts name a group, their counterfactuals' tokens) serves another
    model with the same lexicon and tokens: the same probabilities as looking itself, without tokenizing again; a
    Blinding in another language is ignored, one by other tokens gives its answers but not its tokens."""
    texts = ["I am a gay person and I love this airline", "thanks for the quick delivery", "gay people are trash",
             "The old man at the gate was rude", "my black cat hates this delivery app", "muslim families fly too"]
    probs = classifier.runtime.infer(classifier.runtime.tokenize(texts))
    own, found = bias.blinded_probs(classifier, texts, probs)
    assert found is not None and [found.checked[k] for k in found.named]  # some checked texts name a group
    # a Blinding of part of the batch, in another order, as a routed or other champion gives it
    part = [4, 0, 1]
    _, seen = bias.blinded_probs(classifier, [texts[i] for i in part], {h: p[part] for h, p in probs.items()})
    tokenized = []
    real = classifier.runtime.tokenize
    monkeypatch.setattr(classifier.runtime, "tokenize", lambda batch: tokenized.append(list(batch)) or real(batch))
    out, _ = bias.blinded_probs(classifier, texts, probs, (seen,))
    assert all(np.array_equal(out[h], own[h]) for h in own)
    named_here = {found.checked[k] for k in found.named} - set(seen.checked)
    assert tokenized == [[bias.blind(t) for t in found.checked if t in named_here]]  # only what `seen` lacked
    tokenized.clear()
    out, _ = bias.blinded_probs(classifier, texts, probs, (found,))  # all of it known: nothing tokenized again
    assert all(np.array_equal(out[h], own[h]) for h in own) and tokenized == []
    # the answers are taken: a Blinding that says no text names a group leaves every row as inferred
    blank = bias.Blinding("en", found.checked, [], None, classifier.runtime)
    assert all(np.array_equal(bias.blinded_probs(classifier, texts, probs, (blank,))[0][h], probs[h]) for h in probs)
    # another language: ignored; other tokens (no tokenizer in its card): its answers, this model's own tokens
    other = bias.Blinding("zh", found.checked, [], None, classifier.runtime)
    assert all(np.array_equal(bias.blinded_probs(classifier, texts, probs, (other,))[0][h], own[h]) for h in own)
    alien = bias.Blinding("en", found.checked, found.named, None, object())
    out, _ = bias.blinded_probs(classifier, texts, probs, (alien,))
    assert all(np.array_equal(out[h], own[h]) for h in own)
    assert tokenized[-1] == [bias.blind(found.checked[k]) for k in found.named]


def _model_copy(tmp_path):
    """The shipped English model with its ONNX files linked, not copied."""
    out = tmp_path / "streamsense-minilm" / "3"
    shutil.copytree(ENGLISH, out, ignore=shutil.ignore_patterns("*.onnx", "profile.json"))
    for onnx in ENGLISH.glob("*.onnx"):
        (out / onnx.name).symlink_to(onnx)
    card = read_card(out)
    card["files"].pop("profile.json", None)
    (out / "model.json").write_text(json.dumps(card))
    return out


def test_the_command_prints_and_records_the_report(tmp_path, monkeypatch):
    model = _model_copy(tmp_path)
    monkeypatch.setenv("STREAMSENSE_DATASETS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("STREAMSENSE_INTRA_OP_THREADS", "1")
    runner = CliRunner()
    quick = runner.invoke(app, ["models", "bias", "--model", str(model), "--limit", "2", "--json"])
    assert quick.exit_code == 0, quick.output
    assert json.loads(quick.stdout)["templates"]["limit"] == 2
    refused = runner.invoke(app, ["models", "bias", "--model", str(model), "--limit", "2", "--record"])
    assert refused.exit_code == 2 and "--record needs every template" in refused.output
    assert profile.section(model, "bias") is None

    done = runner.invoke(app, ["models", "bias", "--model", str(model), "--record"])
    assert done.exit_code == 0, done.output
    assert "datasets not found" in done.output and "templates only" in done.output
    section = profile.section(model, "bias")
    assert section["made_from"]["templates"] == "models/bias_templates/en.toml"
    assert section["made_from"]["test_splits"].endswith("templates only")
    assert len(section["parts"]["heldout"]["groups"]) >= 20
    verify(model)  # profile.json is listed with its checksum
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Fairness" in card
    fairness = card.split("## Fairness")[1].split("\n## ")[0]
    assert "| transgender | gender and sexuality |" in fairness and "identity-blind" in fairness


# -- the promotion gate ---------------------------------------------------------------------------------------------

def _section(gay_mean: float, gay_fpr: float) -> dict:
    groups = {}
    for name, mean, fpr in (("gay", gay_mean, gay_fpr), ("Christian", 0.05, 0.0)):
        groups[name] = {"category": "x", "heads": {"offensive": {"fpr": fpr, "mean": mean}}}
    overall = (gay_mean + 0.05) / 2
    return {"reported": "heldout", "templates": {"sha256": "abc"},
            "parts": {"heldout": {"groups": groups, "summary": {"heads": {"offensive": {"mean": overall}}}}}}


@pytest.fixture
def pair(tmp_path):
    dirs = []
    for name in ("champion", "challenger"):
        out = tmp_path / name
        shutil.copytree(ENGLISH, out, ignore=shutil.ignore_patterns("*.onnx", "profile.json"))
        card = read_card(out)
        card["files"] = {k: v for k, v in card["files"].items() if k.endswith(".json")}
        card["files"].pop("profile.json", None)
        (out / "model.json").write_text(json.dumps(card))
        dirs.append(out)
    return dirs


def test_the_gate_refuses_a_challenger_that_widens_a_groups_gap(pair):
    champion, challenger = pair
    result = gate.run_gate(champion, challenger, only=["bias"])
    assert not result.passed and "has no bias report" in result.reasons()[0]

    profile.write_section(champion, "bias", _section(0.10, 0.0), "templates")
    profile.write_section(challenger, "bias", _section(0.40, 0.25), "templates")
    result = gate.run_gate(champion, challenger, only=["bias"])
    assert not result.passed
    [reason] = result.reasons()
    assert reason.startswith("bias: group 'gay': offensive") and "0.25" in reason and "champion's 0.00" in reason

    profile.write_section(challenger, "bias", _section(0.11, 0.0), "templates")  # within the margin
    result = gate.run_gate(champion, challenger, only=["bias"])
    assert result.passed, result.reasons()
    assert "no group's gap" in result.reasons()[0]

    other = copy.deepcopy(_section(0.10, 0.0))
    other["templates"]["sha256"] = "def"
    profile.write_section(challenger, "bias", other, "templates")
    result = gate.run_gate(champion, challenger, only=["bias"])
    assert not result.passed and "different templates" in result.reasons()[0]


def test_the_gate_compares_the_recorded_shipped_reports(pair):
    """The shipped model's recorded section against itself passes; with one group's benign mean raised, it fails."""
    recorded = profile.section(ENGLISH, "bias")
    if recorded is None:
        pytest.skip("the shipped model has no bias section recorded")
    champion, challenger = pair
    data = {k: v for k, v in recorded.items() if k not in ("made_at", "made_from")}
    profile.write_section(champion, "bias", data, recorded["made_from"])
    profile.write_section(challenger, "bias", data, recorded["made_from"])
    assert gate.run_gate(champion, challenger, only=["bias"]).passed
    worse = copy.deepcopy(data)
    worse["parts"]["heldout"]["groups"]["lesbian"]["heads"]["offensive"]["mean"] += 0.3
    profile.write_section(challenger, "bias", worse, recorded["made_from"])
    result = gate.run_gate(champion, challenger, only=["bias"])
    assert not result.passed and "'lesbian'" in result.reasons()[0]


def test_the_chinese_report_reads_its_own_templates_and_head(tmp_path):
    runtime = ModelRuntime(SHIPPED_MODELS / "streamsense-bge-zh" / "1", "cpu", threads=1)
    zh = Classifier(runtime, RiskRules.load().for_model(runtime.name))
    report = bias.evaluate_bias(zh, None, limit=2)
    assert report["language"] == "zh" and report["heads"] == ["offensive"] and report["mitigation"] is None
    assert report["templates"]["file"] == "models/bias_templates/zh.toml"
    part = report["parts"]["dev"]
    assert len(part["groups"]) >= 20 and part["groups"]["河南人"]["benign"] == 1
    assert report["test_splits"] is None and "templates only" in report["test_splits_note"]


def _identity_texts() -> list[str]:
    """The sample posts, the fixture tweets of every English set, templated mentions, and texts made to trip the
    word-set path: non-ASCII text, characters that fold into ASCII letters (the long s, the Kelvin sign, the dotted
    capital I), terms of several words and hyphens, terms glued to symbols, digits and underscores."""
    import json
    from pathlib import Path

    from streamsense.demo import SAMPLES

    texts = [json.loads(line).get("text") or "" for line in (SAMPLES / "posts.jsonl").read_text().splitlines()]
    fixtures = Path(__file__).parent / "fixtures" / "datasets"
    for path in sorted(fixtures.glob("tweeteval_*/*.jsonl")) + sorted(fixtures.glob("complaints_twitter/*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    suite = bias.load_suite("en")
    texts += [t.format(g=g.one) for g in suite.groups for t in ("I am {g} and I fly often", "my {g}-friendly town")]
    texts += ["the old man and the old  man", "OLD MAN, old-man, old_man, oldman", "Black people 👍🏿 black-people",
              "blind woman✨", "€gay", "gay€", "gay_", "2gay", "gays'", "ſtraight people", "gay Kelvin",
              "Müslim Muslims", "İslam islam", "trans\u00a0woman and trans women", "young people, YOUNG PERSON!",
              "a wheelchair users' group", "LGBTQ+ folks", "jews—and—muslims", "東京のgay", "ＧＡＹ full width",
              "white\nman", "Asian\tpeople", "latino-people latino people"]
    return texts


def test_the_word_gate_agrees_with_the_lexicon():
    """`names_a_group` and `blind` find the terms in the lower-cased text's words where lower case is re's case
    folding, else with the lexicon's regex: on the samples, the fixture tweets, the templates, hand-made edge cases
    and random casings of all of them they say exactly what the regex says (which texts, and the blinded text)."""
    import random

    from streamsense.models.bias import blind, identity_lexicon, names_a_group, names_groups

    texts = _identity_texts()
    rng = random.Random(0)
    lexicon = identity_lexicon("en")
    checked = 0
    for text in texts:
        variants = (text, text.upper(), "".join(c.upper() if rng.random() < 0.5 else c for c in text))
        for variant in variants:
            assert names_a_group(variant) == bool(lexicon.search(variant)), variant
            assert blind(variant) == lexicon.sub("person", variant), variant
            checked += 1
        assert names_groups(variants) == [i for i, v in enumerate(variants) if lexicon.search(v)]
    assert checked > 3000 and any(names_a_group(t) for t in texts) and not all(names_a_group(t) for t in texts)
    assert sum(names_a_group(t) for t in texts) > 100 and sum(not t.isascii() for t in texts) > 30


def test_lower_case_is_re_case_folding_where_the_word_gate_trusts_it():
    """What the word-set path assumes of every character that does not fold into ASCII (models/risk.py): its lower
    case is one character, not ASCII, and a word character exactly where it is one, over all of Unicode."""
    import re

    from streamsense.models.risk import _folds_into_ascii

    folds, word = _folds_into_ascii(), re.compile(r"\w")
    wrong = []
    for code in range(0x80, 0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        low = c.lower()
        if low != c or word.match(c) is None:
            if folds.search(c) is None and (len(low) != 1 or low.isascii() or
                                            (word.match(c) is None) != (word.match(low) is None)):
                wrong.append(hex(code))
    assert not wrong
    # and the folding characters are caught: re matches them to ASCII letters case-insensitively
    assert all(folds.search(c) for c in "\u017f\u212a\u0130")  # the long s, the Kelvin sign, the dotted capital I
    assert re.fullmatch("st", "\u017ft", re.IGNORECASE) and "\u017ft".lower() != "st"  # why they must be caught
