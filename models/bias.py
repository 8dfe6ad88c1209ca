"""Identity-term bias: per head and identity group, false alarms on benign mentions, recall on abuse and Jigsaw's
unintended-bias AUCs, from the project's own templates (models/bias_templates/) and the test rows naming the groups;
the profile's `bias` section and the promotion gate's `bias` check.

Every figure comes from the serving path: the model's runtime (int8 on CPU, its calibration) and the Classifier's
risk decision with the risk rules, as the worker runs them.

Metrics (Borkan et al. 2019, "Nuanced Metrics for Measuring Unintended Bias with Real Data for Text
Classification"; Dixon et al. 2018):
- false-positive rate: the share of a group's benign rows a head flags at its decision threshold (its positive
  label's probability ≥ 0.5: the model's own label), and the share the risk decision puts at ≥ `medium`;
- subgroup AUC: the head's AUC on the group's rows only (benign against abusive);
- BPSN AUC (background positive, subgroup negative): the group's benign rows against every other group's abusive
  rows: low where the group's benign mentions score like abuse (false alarms);
- BNSP AUC (background negative, subgroup positive): the group's abusive rows against every other group's benign
  rows: low where abuse of the group scores like benign text (missed abuse).
"""

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from streamsense.models.gate import CheckResult, gate_check
from streamsense.models.risk import _folds_into_ascii

TEMPLATES_DIR = Path(__file__).with_name("bias_templates")
BIAS_HEADS = ("offensive", "hate")
THRESHOLD = 0.5  # a binary head's decision threshold: its positive label's probability at which it says so
PARTS = ("dev", "heldout")
REPORTED = "heldout"  # the half the summary, the card and the gate read (the dev half is for choosing mitigations)
# Targets (issue 32), on the held-out half's benign rows; recall on its abusive rows
TARGETS = {"fpr": 0.05, "mean": 0.25, "spread": 0.15, "medium_share": 0.10, "above_medium": 0.0, "recall_medium": 0.90}
MIN_ROWS = 20  # test-split figures of a group are shown (CLI, card) where it has at least this many rows
# the gate refuses a group's gap or false-positive rate that grows by more than this; a gap only where the group ends
# above the overall mean by more than it too. Not smaller: an unchanged head re-exported to int8 moved a group's gap
# by 0.03 (the feedback loop's adapted complaint head: lesbian, offensive, -0.01 -> 0.02), which is noise, not bias
GATE_MARGIN = 0.05


class BiasError(ValueError):
    pass


@dataclass(frozen=True)
class Group:
    name: str
    category: str
    one: str  # singular, without article
    people: str  # plural
    terms: tuple[str, ...]  # finds the group's rows in the test splits


@dataclass(frozen=True)
class Row:
    text: str
    group: str
    abusive: bool
    part: str  # dev or heldout
    template: int


@dataclass(frozen=True)
class Suite:
    language: str
    groups: tuple[Group, ...]
    rows: tuple[Row, ...]
    path: Path
    sha256: str

    def matcher(self) -> dict[str, re.Pattern]:
        """Per group, the regex that finds its terms in a text (whole words for English, substrings for Chinese)."""
        out = {}
        for g in self.groups:
            words = "|".join(re.escape(t) for t in sorted(g.terms, key=len, reverse=True))
            out[g.name] = re.compile(words if self.language == "zh" else rf"\b(?:{words})\b", re.IGNORECASE)
        return out


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def load_suite(language: str = "en", path: Path | None = None) -> Suite:
    """The templates of `language` crossed with its groups: one row per (template, group)."""
    path = Path(path) if path else TEMPLATES_DIR / f"{language}.toml"
    if not path.is_file():
        raise BiasError(f"no bias templates for language {language!r} ({path} not found)")
    raw_bytes = path.read_bytes()
    raw = tomllib.loads(raw_bytes.decode("utf-8"))
    try:
        groups = tuple(Group(g["name"], g["category"], g["one"], g["people"], tuple(g["terms"])) for g in raw["groups"])
        templates = raw["templates"]
        rows = []
        for abusive, key in ((False, "benign"), (True, "offensive")):
            for i, template in enumerate(templates[key]):
                for g in groups:
                    text = template.format(one=g.one, people=g.people, a_one=_article(g.one))
                    rows.append(Row(text[:1].upper() + text[1:], g.name, abusive, PARTS[i % 2], i))
    except (KeyError, IndexError, TypeError) as exc:
        raise BiasError(f"bias templates {path}: {type(exc).__name__}: {exc}") from exc
    if len({g.name for g in groups}) != len(groups):
        raise BiasError(f"bias templates {path}: group names repeat")
    return Suite(raw.get("language", language), groups, tuple(rows), path, hashlib.sha256(raw_bytes).hexdigest())


# -- metrics ------------------------------------------------------------------------------------------------------

def auc(positives, negatives) -> float | None:
    """The probability that a random positive scores above a random negative (ties count half): the Mann-Whitney
    statistic over the pairs. None where either side is empty."""
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if not pos.size or not neg.size:
        return None
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.arange(1, scores.size + 1)
    # ties share their mean rank
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    for s, e in zip(starts, ends):
        if e - s > 1:
            ranks[order[s:e]] = (s + 1 + e) / 2
    u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def bias_aucs(scores, abusive, in_group) -> dict[str, float | None]:
    """Subgroup, BPSN and BNSP AUC of one group (rows where `in_group`) against the rest (the background)."""
    scores, abusive, in_group = np.asarray(scores), np.asarray(abusive, dtype=bool), np.asarray(in_group, dtype=bool)
    return {"subgroup_auc": _r(auc(scores[in_group & abusive], scores[in_group & ~abusive])),
            "bpsn_auc": _r(auc(scores[~in_group & abusive], scores[in_group & ~abusive])),
            "bnsp_auc": _r(auc(scores[in_group & abusive], scores[~in_group & ~abusive]))}


def rate(mask) -> float | None:
    mask = np.asarray(mask, dtype=bool)
    return _r(float(mask.mean())) if mask.size else None


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


# -- the decision layer's mitigation: identity-blind heads ----------------------------------------------------------

PLACEHOLDER = {"en": "person", "zh": "人"}


@lru_cache(maxsize=4)
def identity_lexicon(language: str) -> re.Pattern:
    """Every identity term of the language's suite (each group's terms and its singular and plural forms), longest
    first: whole words for English, substrings for Chinese."""
    suite = load_suite(language)
    words = {w.lower() for g in suite.groups for w in (*g.terms, g.one, g.people)}
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(alternatives if language == "zh" else rf"\b(?:{alternatives})\b", re.IGNORECASE)


_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class _Lexicon:
    """A language's identity lexicon taken apart for text on which lower-casing is re's case folding (_foldable). In the
    lower-cased text a term can only match where a word (a \\w run) begins, and that word is the term's first word: a
    one-word term matches where it is the word; a term of several words where `several` matches there."""

    single: frozenset[str]  # the one-word terms, lower-cased
    first: frozenset[str]  # the first words of the terms of several words
    several: re.Pattern  # those terms, longest first, whole words, case-sensitive

    def matches(self, low: str):
        """(start, end) of each match of the lexicon in the lower-cased text `low`, as its regex (longest term first,
        whole words) finds them on the text: at a word, the longest term there (one of several words is longer than
        the word itself), then on after it."""
        single, first, several = self.single, self.first, self.several
        end = 0
        for word in _WORD.finditer(low):
            start = word.start()
            if start < end:
                continue
            w = word.group()
            found = several.match(low, start) if w in first else None
            if found is not None:
                end = found.end()
                yield start, end
            elif w in single:
                end = word.end()
                yield start, end


@lru_cache(maxsize=4)
def _lexicon(language: str) -> _Lexicon | None:
    """The lexicon's parts (_Lexicon), or None where they would not say what `identity_lexicon` says: Chinese
    (substrings, not words), or a term with a character other than ASCII letters and digits inside (a space or a hyphen
    between words)."""
    if language == "zh":
        return None
    suite = load_suite(language)
    terms = sorted({w.lower() for g in suite.groups for w in (*g.terms, g.one, g.people)}, key=len, reverse=True)
    if not terms or not all(re.fullmatch(r"[a-z0-9](?:[a-z0-9 -]*[a-z0-9])?", t) for t in terms):
        return None
    several = [t for t in terms if not _WORD.fullmatch(t)]
    # `(?!x)` matches nothing: a lexicon of one-word terms only
    alternatives = "|".join(re.escape(t) for t in several) or "(?!x)"
    return _Lexicon(frozenset(t for t in terms if _WORD.fullmatch(t)),
                    frozenset(_WORD.match(t).group(0) for t in several), re.compile(rf"\b(?:{alternatives})\b"))


def _foldable(text: str) -> bool:
    """Whether lower-casing `text` is what re's case-insensitive matching does to it against ASCII terms: ASCII, or
    without a character that folds into ASCII (models/risk.py); then each character's lower case is one character, a
    word character iff it was one (tests/test_bias.py checks this over all of Unicode), so terms match the lower-cased
    text case-sensitively at the same places."""
    return text.isascii() or _folds_into_ascii().search(text) is None


def names_a_group(text: str, language: str = "en") -> bool:
    """`identity_lexicon(language).search(text)`, mostly without a regex: the case-insensitive alternation of ~120
    terms costs ~45 µs a tweet. On text whose lower case is re's case folding (_foldable: nearly all text) a set test
    on its words decides, and only a text holding the first word of a term of several words ("old", "black", ...)
    looks where those words are (_Lexicon.matches)."""
    lexicon = _lexicon(language)
    if lexicon is None or not _foldable(text):
        return identity_lexicon(language).search(text) is not None
    low = text.lower()
    words = _WORD.findall(low)
    if not lexicon.single.isdisjoint(words):
        return True
    return not lexicon.first.isdisjoint(words) and next(lexicon.matches(low), None) is not None


def names_groups(texts, language: str = "en") -> list[int]:
    """The positions of `texts` that name a group (`names_a_group`), in order."""
    return [i for i, text in enumerate(texts) if names_a_group(text, language)]


def blind(text: str, language: str = "en") -> str:
    """`text` with every identity term replaced by a neutral word (its identity-blind counterfactual). Where lower
    case is re's case folding (_foldable), the terms are found in the lower-cased text (_Lexicon.matches, at the same
    places) and replaced in the text as it is: the same text as the lexicon's `sub`, ~5x cheaper."""
    word = PLACEHOLDER.get(language, "person")
    lexicon = _lexicon(language)
    if lexicon is None or not _foldable(text):
        return identity_lexicon(language).sub(word, text)
    out, at = [], 0
    for start, end in lexicon.matches(text.lower()):
        out += (text[at:start], word)
        at = end
    return "".join(out) + text[at:] if out else text


@dataclass(frozen=True)
class Blinding:
    """What a model's identity-blind second look found on a batch, for a model with the same lexicon language (and,
    for `encoded`, the same tokens: a shadowed challenger) to take instead of finding it again: `checked` are the
    texts it looked at, `named` the positions among them that name a group, `encoded` the token ids of those texts'
    identity-blind counterfactuals, in that order, by `runtime`'s tokenizer. References only: recording it is free."""

    language: str
    checked: list[str]
    named: list[int]
    encoded: object  # models/runtime.py Encoded
    runtime: object


def blind_probs(classifier, texts, probs: dict) -> dict:
    """`probs` with each identity-blind head's probability (RiskRules.identity_blind), where it reaches the head's
    `medium` on a text naming a group of people, replaced by the lower of the text's and its identity-blind
    counterfactual's (the whole row of that head, so it still sums to one). A message is flagged for what it says,
    not for whom it names: the term can lower the score, never raise it. Only those texts take a second pass through
    the model (a few per cent of traffic); every other row is as inferred. Returns a new dict; `probs` is kept."""
    return blinded_probs(classifier, texts, probs)[0]


def _known(blindings, language: str, runtime) -> dict:
    """text → False (checked, names no group) or (Encoded, row) of its blinded counterfactual's tokens where they are
    `runtime`'s (the same tokenizer, length and emoji handling), else True, from other models' Blinding of the batch."""
    from streamsense.models.runtime import tokens_key

    known: dict = {}
    key = None
    for b in blindings:
        if b.language != language:
            continue
        if key is None:
            key = tokens_key(runtime) or ()
        same = key != () and tokens_key(b.runtime) == key
        known.update(dict.fromkeys(b.checked, False))
        known.update((b.checked[k], (b.encoded, j) if same else True) for j, k in enumerate(b.named))
    return known


def blinded_probs(classifier, texts, probs: dict, seen=()) -> tuple[dict, "Blinding | None"]:
    """`blind_probs`, and what it found (Blinding; None where no head is identity-blind or no text reached a
    `medium`). `seen`: other models' Blinding of the same texts (the champion's, for a shadow): which of them name a
    group and, where the tokens are this model's, their counterfactuals' token ids are taken from there (the same
    answers: both are functions of the text alone); the rest are found here."""
    language = "zh" if "en" not in classifier.languages else "en"
    rules = classifier.rules
    columns = {t.name: t.labels.index(t.positive) for t in classifier.runtime.tasks if t.positive}
    heads = [h for h in rules.identity_blind if h in probs and h in columns]
    candidates = sorted({i for h in heads for i in np.flatnonzero(probs[h][:, columns[h]] >= rules.heads[h].medium)
                         .tolist()})
    checked = [texts[i] for i in candidates]
    runtime = classifier.runtime
    known = _known(seen, language, runtime) if seen else {}
    if known:
        from streamsense.models.runtime import Encoded

        answers = [known.get(text) for text in checked]
        unknown = [k for k, a in enumerate(answers) if a is None]
        for k in names_groups([checked[k] for k in unknown], language):
            answers[unknown[k]] = True
        named = [k for k, a in enumerate(answers) if a]  # False: names no group; True or tokens: names one
        own = [k for k in named if answers[k] is True]  # without tokens this model can use: tokenized here
        mine = runtime.tokenize([blind(checked[k], language) for k in own]) if own else None
        tokens = dict(zip(own, ((mine, j) for j in range(len(own)))))
        rows = [tokens[k] if answers[k] is True else answers[k] for k in named]
        encoded = Encoded([part.ids[j] for part, j in rows], [part.truncated[j] for part, j in rows])
    else:
        named = names_groups(checked, language)
        encoded = runtime.tokenize([blind(checked[k], language) for k in named]) if named else None
    found = Blinding(language, checked, named, encoded, runtime) if candidates else None
    if not named:
        return probs, found
    again = runtime.infer(encoded)
    out = dict(probs)
    rows = np.asarray([candidates[k] for k in named])
    for h in heads:
        new = out[h].copy()
        lower = again[h][:, columns[h]] < new[rows, columns[h]]
        new[rows[lower]] = again[h][lower]
        out[h] = new
    return out, found


# -- scoring through the serving path -------------------------------------------------------------------------------

@dataclass
class Scores:
    """Per text: each bias head's positive probability, the risk level (index into LEVELS) and the sentiment label."""

    heads: dict[str, np.ndarray]
    levels: np.ndarray
    negative: np.ndarray  # sentiment label is "negative"


def score_texts(classifier, texts: list[str]) -> Scores:
    """The served decision of each text: the heads' probabilities as the risk decision reports them (after any
    identity-blind head's second look), its level and its sentiment label."""
    from streamsense.models.risk import LEVELS
    from streamsense.models.risk_eval import _classify

    probs, risks, _ = _classify(classifier, list(texts))
    positive = {h: np.array([r.labels.get(h, np.nan) for r in risks], dtype=np.float64) for h in BIAS_HEADS
                if h in probs}
    labels = classifier.sentiment_labels
    sentiment = probs["sentiment"].argmax(axis=1) if texts else np.zeros(0, dtype=np.int64)
    negative = sentiment == labels.index("negative") if "negative" in labels else np.zeros(len(texts), dtype=bool)
    return Scores({h: positive[h] for h in BIAS_HEADS if h in positive},
                  np.array([LEVELS.index(r.level) for r in risks], dtype=np.int64), negative)


def _template_report(suite: Suite, rows: list[Row], scores: Scores) -> dict:
    """Per group and head on one half of the templates, with the summary the targets read."""
    medium = 1  # LEVELS.index("medium")
    group_of = np.array([r.group for r in rows])
    abusive = np.array([r.abusive for r in rows], dtype=bool)
    groups = {}
    for g in suite.groups:
        mine = group_of == g.name
        benign, bad = mine & ~abusive, mine & abusive
        entry = {"category": g.category, "benign": int(benign.sum()), "abusive": int(bad.sum()), "heads": {},
                 "medium_share": rate(scores.levels[benign] >= medium),
                 "above_medium": rate(scores.levels[benign] > medium),
                 "recall_medium": rate(scores.levels[bad] >= medium),
                 "negative_share": rate(scores.negative[benign])}
        for head, p in scores.heads.items():
            entry["heads"][head] = {"fpr": rate(p[benign] >= THRESHOLD), "mean": _r(float(p[benign].mean())),
                                    "recall": rate(p[bad] >= THRESHOLD), **bias_aucs(p, abusive, mine)}
        groups[g.name] = entry
    benign_all = ~abusive
    summary = {"benign": int(benign_all.sum()), "abusive": int(abusive.sum()),
               "medium_share": rate(scores.levels[benign_all] >= medium),
               "above_medium": rate(scores.levels[benign_all] > medium),
               "recall_medium": rate(scores.levels[abusive] >= medium),
               "negative_share": rate(scores.negative[benign_all]), "heads": {}}
    worst_medium = max(groups, key=lambda n: groups[n]["medium_share"] or 0)
    summary["worst_medium_group"] = {"group": worst_medium, "medium_share": groups[worst_medium]["medium_share"]}
    lowest_recall = min(groups, key=lambda n: groups[n]["recall_medium"] or 0)
    summary["lowest_recall_group"] = {"group": lowest_recall, "recall_medium": groups[lowest_recall]["recall_medium"]}
    for head in scores.heads:
        means = {n: e["heads"][head]["mean"] for n, e in groups.items()}
        fprs = {n: e["heads"][head]["fpr"] for n, e in groups.items()}
        worst, best = max(means, key=means.get), min(means, key=means.get)
        summary["heads"][head] = {
            "worst_group": worst, "worst_mean": means[worst], "worst_fpr": fprs[worst], "best_group": best,
            "best_mean": means[best], "spread": _r(means[worst] - means[best]),
            "max_fpr": max(fprs.values()), "max_fpr_group": max(fprs, key=fprs.get),
            "mean": _r(float(scores.heads[head][benign_all].mean())),
            "recall": rate(scores.heads[head][abusive] >= THRESHOLD)}
    summary["targets"] = targets_met(summary)
    return {"groups": groups, "summary": summary}


def targets_met(summary: dict) -> dict[str, bool]:
    """Which of the targets (TARGETS) the summary of a half meets."""
    heads = summary["heads"].values()
    return {"fpr": all(h["max_fpr"] <= TARGETS["fpr"] for h in heads),
            "mean": all(h["worst_mean"] <= TARGETS["mean"] for h in heads),
            "spread": all(h["spread"] <= TARGETS["spread"] for h in heads),
            "medium_share": summary["medium_share"] <= TARGETS["medium_share"],
            "above_medium": summary["above_medium"] <= TARGETS["above_medium"],
            "recall_medium": summary["recall_medium"] >= TARGETS["recall_medium"]}


def _split_report(suite: Suite, texts: list[str], risky: np.ndarray, scores: np.ndarray) -> dict:
    """One head on its labelled test split: per group mentioned, rows, false-positive rate at the threshold, mean
    benign probability and the three AUCs against the rest of the split."""
    found = suite.matcher()
    out = {"rows": len(texts), "groups": {}}
    flagged = scores >= THRESHOLD
    for g in suite.groups:
        mine = np.array([found[g.name].search(t) is not None for t in texts], dtype=bool)
        if not mine.any():
            continue
        benign = mine & ~risky
        out["groups"][g.name] = {"n": int(mine.sum()), "risky": int((mine & risky).sum()),
                                 "fpr": rate(flagged[benign]),
                                 "mean_benign": _r(float(scores[benign].mean())) if benign.any() else None,
                                 **bias_aucs(scores, risky, mine)}
    out["overall_fpr"] = rate(flagged[~risky])
    out["overall_auc"] = _r(auc(scores[risky], scores[~risky]))
    return out


def evaluate_bias(classifier, datasets_dir: Path | None = None, limit: int | None = None,
                  suite: Suite | None = None) -> dict:
    """The bias report of `classifier`: both template halves, and the test rows naming the groups where the datasets
    are found (`test_splits` None with the reason where they are not). `limit`: at most this many templates of each
    kind (a quick look)."""
    from streamsense.models.data import load_split
    from streamsense.models.tasks import task_views

    language = "zh" if "en" not in classifier.languages else "en"
    suite = suite or load_suite(language)
    rows = list(suite.rows)
    if limit is not None:
        rows = [r for r in rows if r.template < limit]
    scores = score_texts(classifier, [r.text for r in rows])
    report = {"model": classifier.model_version, "language": suite.language,
              "rules_fitted_for": classifier.rules.fitted_for,
              "templates": {"file": f"models/bias_templates/{suite.path.name}", "sha256": suite.sha256,
                            "groups": len(suite.groups), "rows": len(rows), "limit": limit},
              "threshold": THRESHOLD, "heads": list(scores.heads), "reported": REPORTED, "parts": {}}
    for part in PARTS:
        idx = [i for i, r in enumerate(rows) if r.part == part]
        sub = Scores({h: p[idx] for h, p in scores.heads.items()}, scores.levels[idx], scores.negative[idx])
        report["parts"][part] = _template_report(suite, [rows[i] for i in idx], sub)
    report["summary"] = report["parts"][REPORTED]["summary"]
    report["mitigation"] = _without_mitigation(classifier, suite, rows) if classifier.rules.identity_blind else None
    report["test_splits"], report["test_splits_note"] = None, None
    card = classifier.runtime.card
    if datasets_dir is None or not Path(datasets_dir).is_dir():
        report["test_splits_note"] = f"datasets not found ({datasets_dir}): templates only"
        return report
    splits = {}
    try:
        for entry in card["tasks"]:
            if entry["name"] not in scores.heads:
                continue
            for view in task_views(entry):
                examples = load_split(datasets_dir, view, "test", emoji=classifier.runtime.emoji)
                texts = [e.text for e in examples]
                risky = np.array([e.label == view.labels.index(view.positive) for e in examples], dtype=bool)
                p = score_texts(classifier, texts).heads[entry["name"]]
                splits[f"{entry['name']}/{view.dataset}"] = _split_report(suite, texts, risky, p)
    except FileNotFoundError as exc:
        report["test_splits_note"] = f"{exc}: templates only"
        return report
    report["test_splits"] = splits
    return report


def _without_mitigation(classifier, suite: Suite, rows: list[Row]) -> dict:
    """The reported half's figures with the identity-blind heads as inferred (the before of the before/after)."""
    import dataclasses

    from streamsense.models.classifier import Classifier

    rules = classifier.rules
    plain = dataclasses.replace(rules, heads={n: dataclasses.replace(h, identity_blind=False)
                                              for n, h in rules.heads.items()})
    idx = [i for i, r in enumerate(rows) if r.part == REPORTED]
    scores = score_texts(Classifier(classifier.runtime, plain), [rows[i].text for i in idx])
    part = _template_report(suite, [rows[i] for i in idx], scores)
    return {"identity_blind": list(rules.identity_blind), "summary": part["summary"],
            "without": {name: {"medium_share": g["medium_share"], "recall_medium": g["recall_medium"],
                               "heads": {h: {"fpr": m["fpr"], "mean": m["mean"]} for h, m in g["heads"].items()}}
                        for name, g in part["groups"].items()}}


def made_from(report: dict) -> dict:
    t = report["templates"]
    out = {"templates": t["file"], "sha256": t["sha256"], "rows": t["rows"], "reported": report["reported"]}
    if report["test_splits"]:
        out["test_splits"] = {k: v["rows"] for k, v in report["test_splits"].items()}
    else:
        out["test_splits"] = report["test_splits_note"]
    return out


def record(model_dir: Path, report: dict) -> dict:
    """Write `report` as the `bias` section of the model's profile (the card's Fairness section is rendered from it)."""
    from streamsense.models.profile import write_section

    if report["templates"]["limit"] is not None:
        raise BiasError("a bias report made with --limit is a quick look: record it on every template")
    data = {k: v for k, v in report.items() if k not in ("model",)}
    return write_section(model_dir, "bias", data, made_from(report))


# -- the promotion gate ---------------------------------------------------------------------------------------------

def gaps(section: dict) -> dict[tuple[str, str], dict[str, float]]:
    """(head, group) → the group's false-positive rate, mean benign probability and gap (its mean benign
    probability above the mean over every group's benign rows) on the reported half of a recorded bias section."""
    part = section["parts"][section.get("reported", REPORTED)]
    overall = part["summary"]["heads"]
    out = {}
    for group, entry in part["groups"].items():
        for head, m in entry["heads"].items():
            out[(head, group)] = {"fpr": m["fpr"], "mean": m["mean"], "gap": _r(m["mean"] - overall[head]["mean"])}
    return out


@gate_check("bias")
def gate_bias(champion: Path, challenger: Path, evidence: dict) -> CheckResult:
    """Refuses a challenger where any group's gap (its mean benign probability above the overall benign mean) or its
    benign false-positive rate, on any head, grows by more than GATE_MARGIN over the champion's; both models need a
    bias section made from the same templates."""
    from streamsense.models.profile import section
    from streamsense.models.registry import read_card

    def ref(path):
        card = read_card(path)
        return f"{card.get('name')}:{card.get('version')}"

    old, new = section(champion, "bias"), section(challenger, "bias")
    for name, path, s in (("champion", champion, old), ("challenger", challenger, new)):
        if s is None:
            return CheckResult("bias", False, f"the {name} {ref(path)} has no bias report: run `streamsense models "
                                              f"bias --model {ref(path)} --record`")
    if old["templates"]["sha256"] != new["templates"]["sha256"]:
        return CheckResult("bias", False, "the two bias reports were made from different templates: record both "
                                          "again with `streamsense models bias --record`")
    before, after = gaps(old), gaps(new)
    worst = None  # (excess over the margin, reason)
    largest = (-1.0, "")
    for key in sorted(set(before) & set(after)):
        head, group = key
        for metric, label in (("gap", "gap"), ("fpr", "benign false-positive rate")):
            b, a = before[key][metric], after[key][metric]
            if a is None or b is None:
                continue
            change = a - b
            if change > largest[0]:
                largest = (change, f"{group} {head} {label} {b:.2f} → {a:.2f}")
            widened = change > GATE_MARGIN and (metric != "gap" or a > GATE_MARGIN)
            if widened and (worst is None or change > worst[0]):
                worst = (change, f"group {group!r}: {head} {label} {a:.2f} against the champion's {b:.2f} "
                                 f"(+{change:.2f} > margin {GATE_MARGIN})")
    missing = sorted(set(before) - set(after))
    if missing:
        head, group = missing[0]
        return CheckResult("bias", False, f"the challenger's bias report lacks group {group!r} on {head}")
    if worst is not None:
        return CheckResult("bias", False, worst[1], {"change": _r(worst[0])})
    return CheckResult("bias", True, f"no group's gap or benign false-positive rate grew by more than {GATE_MARGIN} "
                                     f"(largest change: {largest[1] or 'none'})", {"change": _r(largest[0])})
