"""Model registry: `<root>/<name>/<version>/` directories of exported models, each described by its model.json, and
per name the aliases that point at versions (`<root>/<name>/aliases.json`: champion, challenger).

Runtime side: standard library only (no torch, transformers or onnx).
"""

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

FORMAT = 1  # model.json layout version
CARD = "model.json"  # not listed in its own `files`, so publish can record name and version
CARD_MARKDOWN = "MODEL_CARD.md"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"[1-9][0-9]*")


class ModelNotFoundError(LookupError):
    pass


class ModelIntegrityError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int
    path: Path
    card: dict


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(model_dir: Path, names: list[str]) -> dict[str, dict]:
    """`files` for a card: sha256 and size of each named file."""
    return {name: {"sha256": sha256(Path(model_dir) / name), "bytes": (Path(model_dir) / name).stat().st_size}
            for name in names}


def read_card(model_dir: Path) -> dict:
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelIntegrityError(f"{model_dir}: no {CARD}, so this is not an exported model; run `streamsense export`")
    card = json.loads(path.read_text(encoding="utf-8"))
    if card.get("format") != FORMAT:
        raise ModelIntegrityError(f"{path}: format {card.get('format')!r} is not {FORMAT}; re-export the model")
    return card


def write_card(model_dir: Path, card: dict) -> None:
    """Write model.json and its readable twin MODEL_CARD.md."""
    model_dir = Path(model_dir)
    (model_dir / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (model_dir / CARD_MARKDOWN).write_text(render_markdown(card, _profile(model_dir)), encoding="utf-8")


def _profile(model_dir: Path) -> dict | None:
    """The model's profile (models/profile.py) where one was made: the card renders some of its sections."""
    path = Path(model_dir) / "profile.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def text_options(card: dict) -> dict:
    """How the model's input text is prepared before tokenizing (models/text.py), from the card's `text`: training,
    export, evaluation and serving all read it here. Cards without it (v3 and older) keep emoji as they are."""
    from streamsense.models.text import EMOJI_MODES

    options = {"emoji": "keep"} | dict(card.get("text") or {})
    if options["emoji"] not in EMOJI_MODES:
        raise ModelIntegrityError(f"model card: text.emoji is {options['emoji']!r}, not one of {', '.join(EMOJI_MODES)}")
    return options


def calibration(card: dict) -> dict[str, float]:
    """Each head's temperature from the card's `calibration` (`streamsense models calibrate`): the runtime divides the
    head's logits by it before the softmax. Argmax labels do not change; probabilities become honest. Cards without a
    calibration: no head is scaled."""
    section = card.get("calibration") or {}
    temperatures = {}
    for name, t in (section.get("temperature") or {}).items():
        if not isinstance(t, (int, float)) or not 0.05 <= t <= 20:
            raise ModelIntegrityError(f"model card: calibration temperature of {name} is {t!r}, not within [0.05, 20]")
        temperatures[name] = float(t)
    return temperatures


def verify(model_dir: Path) -> dict:
    """The card of `model_dir` after checking every file it lists is present with the recorded sha256."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    hint = "re-export the model or publish it again from a good export"
    for name, entry in card["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ModelIntegrityError(f"{model_dir}: {name} is missing; {hint}")
        if path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise ModelIntegrityError(
                f"{model_dir}: {name} has been altered (sha256 no longer matches {CARD}); {hint}"
            )
    return card


def _versions(root: Path, name: str, complete: bool = True) -> list[int]:
    """Version numbers under `<root>/<name>`; complete ones have their model.json (it is written last)."""
    folder = Path(root) / name
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name) and (not complete or (p / CARD).is_file())
    )


def list_models(root: Path) -> list[ModelInfo]:
    """Every published model version under `root`, sorted by name then version."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        ModelInfo(folder.name, version, folder / str(version), read_card(folder / str(version)))
        for folder in sorted(root.iterdir())
        if folder.is_dir()
        for version in _versions(root, folder.name)
    ]


def resolve(root: Path, ref: str) -> Path:
    """The directory for `name`, `name:latest`, `name:<version>`, `name:<alias>` (champion, challenger: see
    `aliases`) or a path to a model directory."""
    path = Path(ref)
    if (path / CARD).is_file():
        return path
    name, _, version = str(ref).partition(":")
    if not _NAME.fullmatch(name):
        raise ModelNotFoundError(f"{ref!r} is neither a model directory (no {CARD}) nor a model name")
    versions = _versions(root, name)
    if not versions:
        known = sorted({m.name for m in list_models(root)})
        raise ModelNotFoundError(f"no model named {name!r} in {root}; available: {known or 'none'}")
    if version in ("", "latest"):
        return Path(root) / name / str(versions[-1])
    if _ALIAS.fullmatch(version):
        return Path(root) / name / str(alias_version(root, name, version, versions))
    if not version.isdigit() or int(version) not in versions:
        raise ModelNotFoundError(f"model {name!r} has no version {version!r} in {root}; versions: {versions}")
    return Path(root) / name / str(int(version))


# --- aliases: names that move (MLflow-style), not copies -------------------------------------------------------

ALIASES = "aliases.json"
CHAMPION, CHALLENGER = "champion", "challenger"
_ALIAS = re.compile(r"[a-z][a-z0-9_-]*")


def read_aliases(root: Path, name: str) -> dict:
    """`<root>/<name>/aliases.json`: {"aliases": {alias: version}, "history": [{alias, version, previous, action, at,
    by, reason}]}; an empty one where none was written."""
    path = Path(root) / name / ALIASES
    if not path.is_file():
        return {"format": FORMAT, "aliases": {}, "history": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or not isinstance(data.get("aliases"), dict):
        raise ModelIntegrityError(f"{path}: not an aliases file of format {FORMAT}")
    return data


def alias_version(root: Path, name: str, alias: str, versions: list[int] | None = None) -> int:
    """The version `alias` points at. Without an aliases file the champion is the latest version (a registry that
    never promoted anything serves what it always served; `models adapt` and `models challenger` pin it first, so a
    new version never becomes the champion by being newest); any other alias must have been set."""
    versions = _versions(root, name) if versions is None else versions
    aliases = read_aliases(root, name)["aliases"]
    if alias not in aliases:
        if alias == CHAMPION and not (Path(root) / name / ALIASES).is_file() and versions:
            return versions[-1]
        raise ModelNotFoundError(f"model {name!r} has no version or alias {alias!r} in {root}; versions: {versions}, "
                                 f"aliases: {sorted(aliases) or 'none'} (`streamsense models promote` and `models "
                                 "challenger` set them)")
    version = int(aliases[alias])
    if version not in versions:
        raise ModelIntegrityError(f"{Path(root) / name / ALIASES}: {alias} points at version {version}, which is "
                                  f"not in the registry (versions: {versions})")
    return version


def set_alias(root: Path, name: str, alias: str, version: int | None, action: str, by: str | None = None,
              reason: str | None = None) -> dict:
    """Point `alias` at `version` (None: remove it), recording the move in the history; the file is replaced
    atomically, so a worker reading it mid-write sees the old or the new one. Returns the history entry."""
    if not _ALIAS.fullmatch(alias) or alias == "latest":
        raise ValueError(f"alias {alias!r}: lower-case letters, digits, '_' or '-', starting with a letter; "
                         "not 'latest'")
    if version is not None and version not in _versions(root, name):
        raise ModelNotFoundError(f"model {name!r} has no version {version} in {root}")
    data = read_aliases(root, name)
    previous = data["aliases"].get(alias)
    if previous is None and alias == CHAMPION and not (Path(root) / name / ALIASES).is_file():
        previous = _versions(root, name)[-1]  # the implicit champion (latest) is what a rollback returns to
    if version is None:
        data["aliases"].pop(alias, None)
    else:
        data["aliases"][alias] = version
    entry = {"alias": alias, "version": version, "previous": previous, "action": action,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": by, "reason": reason}
    data["history"].append(entry)
    path = Path(root) / name / ALIASES
    tmp = path.with_name(f".{ALIASES}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return entry


def pin_champion(root: Path, name: str, version: int, by: str | None = None) -> int:
    """Make the implicit champion explicit (before a new version or a challenger appears, which would otherwise make
    the newest version the champion unvetted): point `champion` at `version` if no champion was ever set. Returns
    the champion."""
    aliases = read_aliases(root, name)["aliases"]
    if CHAMPION in aliases:
        return int(aliases[CHAMPION])
    set_alias(root, name, CHAMPION, version, "pin", by, "the champion before a new version or challenger")
    return version


def rollback_target(root: Path, name: str) -> int:
    """The version the champion held before the promotion that made the current one champion (each rollback goes
    one promotion further back)."""
    data = read_aliases(root, name)
    current = data["aliases"].get(CHAMPION)
    if current is None:
        raise ModelNotFoundError(f"model {name!r} has no champion alias in {root}: nothing to roll back")
    for entry in reversed(data["history"]):
        if entry["alias"] == CHAMPION and entry["action"] == "promote" and entry["version"] == current:
            if entry["previous"] is None or entry["previous"] == current:
                break
            return int(entry["previous"])
    raise ModelNotFoundError(f"model {name!r}: no earlier champion than version {current} in {root}")


def init_registry(target: Path, source: Path, copy: bool = False) -> list[Path]:
    """A writable registry at `target` holding every version of `source` (the shipped models). Each version is a
    directory of its own: its card, tokenizer and other small files copied (so recording metrics, a calibration or a
    profile changes this registry, never the installed package), its ONNX files linked (symbolic links: no space
    taken) or, with `copy`, copied. Versions already there are kept. Returns the version directories made."""
    made = []
    for info in list_models(source):
        dest = Path(target) / info.name / str(info.version)
        if dest.exists() or dest.is_symlink():
            continue
        tmp = dest.with_name(f".{info.version}.init")  # complete before it is listed (as publish does)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for item in sorted(info.path.iterdir()):
            if item.is_file() and item.suffix == ".onnx" and not copy:
                (tmp / item.name).symlink_to(item.resolve())
            elif item.is_file():
                shutil.copy2(item, tmp / item.name)
        verify(tmp)
        tmp.rename(dest)
        made.append(dest)
    return made


def publish(exported_dir: Path, root: Path, name: str) -> Path:
    """Copy a verified export into `<root>/<name>/<next version>/` and record name and version in its card."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
    card = verify(exported_dir)
    taken = _versions(root, name, complete=False)  # an interrupted publish's leftovers keep their number
    target = Path(root) / name / str((taken[-1] if taken else 0) + 1)
    target.mkdir(parents=True)  # fails if a concurrent publish took this version
    for file in card["files"]:
        shutil.copy2(Path(exported_dir) / file, target / file)
    card = card | {"name": name, "version": int(target.name)}
    write_card(target, card)  # last, so a half-copied version is never listed
    verify(target)
    return target


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(card: dict, profile: dict | None = None) -> str:
    """MODEL_CARD.md: the content of model.json for people (and sections of its profile, where given)."""
    title = f"{card['name']} v{card['version']}" if card.get("version") else f"{card['name']} (unpublished)"
    tasks, training, validation = card["tasks"], card["training"], card["metrics"]["validation"]
    risks = ", ".join(f"{t['name']}: {t['positive']}" for t in tasks if t["positive"])
    examples = ", ".join(f"{task} {n}" for task, n in training["train_examples"].items())
    datasets = ", ".join(f"`{d}`" for t in tasks for d in t.get("datasets") or [t["dataset"]])
    metric_rows = []
    for t in tasks:
        for dataset in t.get("datasets") or [t["dataset"]]:
            m = validation.get(f"{t['name']}/{dataset}") or validation[t["name"]]  # per dataset where it has several
            metric_rows.append([t["name"], dataset, ", ".join(t["labels"]), t["metric"], m[t["metric"]],
                                m["macro_f1"], m["accuracy"], m["n"]])
    chinese = "zh" in card.get("languages", ["en"])
    lines = [
        f"# {title}",
        "",
        (f"Multi-task text classifier ({', '.join(t['name'] for t in tasks)}) fine-tuned from "
         f"`{card['base_model']}` ({card['architecture']}), exported to ONNX. Created {card['created_at']}."),
        "",
        "## Intended use",
        "",
        (("Scoring short Chinese posts, reviews and customer messages in a stream: sentiment (negative / positive: "
          "the Chinese sets label no neutral, so this model never says neutral) and offensive language, one head per "
          "task over a shared encoder. " if chinese else
          "Scoring short English social-media posts and customer messages in a stream: sentiment, offensive "
          "language, hate speech and complaints, one head per task over a shared encoder. ")
         + f"Languages: {', '.join(card.get('languages', ['en']))}. "
         f"Inputs longer than {card['max_length']} tokens are truncated."),
        "",
        "## Tasks and validation metrics",
        "",
        *_table(["task", "dataset", "labels", "headline metric", "value", "macro F1", "accuracy", "n"], metric_rows),
        "",
        (f"Mean headline score: {validation.get('score')}. "
         f"Risk tasks report the probability of their positive label ({risks})."),
        "",
        *_test_section(card),
        *_calibration_section(card),
        *_decision_section(card),
        *_text_section(card),
        *_fairness_section(((profile or {}).get("sections") or {}).get("bias")),
        "## Training",
        "",
        (f"Trained on {training['device']} for {training['steps']} steps ({training['minutes']} minutes) "
         f"on the train splits of {datasets}; examples per task: {examples}."),
        "",
        *_lineage_section(training),
        "## Variants and export parity",
        "",
        *_table(
            ["variant", "file", "device", "parity", "checked on", "max abs logit diff", "min label agreement"],
            [_parity_row(card, variant) for variant in card["parity"]["variants"]],
        ),
        "",
        (f"Each ONNX variant against the PyTorch model on {card['parity']['texts']} validation texts "
         "(label agreement per task on that task's texts; thresholds in `model.json`)."),
        "",
        "## Files",
        "",
        *_table(["file", "bytes", "sha256"], [[f, e["bytes"], f"`{e['sha256']}`"] for f, e in card["files"].items()]),
        "",
        "## Tools",
        "",
        *[f"- {tool} {version}" for tool, version in card["tools"].items()],
        "",
        "## Limitations",
        "",
        ("- Chinese reviews and Weibo-style posts: trained on food-delivery and shopping reviews and the COLD "
         "offensive-language set; other domains and long documents will score worse than the metrics above."
         if chinese else
         "- English, tweet-style text: trained on TweetEval and a Twitter complaints set; other domains, "
         "languages and long documents will score worse than the metrics above."),
        ("- Offensive and hate labels carry the biases of their annotators; use the scores to prioritise "
         "human review, not to take automated action against people."),
        "- Metrics come from validation splits used for model selection, so they are slightly optimistic.",
        "",
    ]
    return "\n".join(lines)


def _test_section(card: dict) -> list[str]:
    """Test-split metrics recorded by `streamsense models eval --record`, one table per variant."""
    lines = []
    for variant, report in card["metrics"].get("test", {}).items():
        rows = [[name, m["n"], m["macro_recall"], m["macro_f1"], m["accuracy"]]
                for name, m in report.items() if isinstance(m, dict) and "macro_f1" in m]
        lat = report["latency"]
        lines += [f"## Test metrics: {variant} on {report['device']}", "",
                  *_table(["task", "n", "macro recall", "macro F1", "accuracy"], rows), "",
                  f"Latency on the evaluating machine: {lat['mean_ms_per_batch']} ms per batch of "
                  f"{lat['batch_size']} (p95 {lat['p95_ms_per_batch']} ms), {lat['msgs_per_s']} msg/s.", ""]
    return lines


def _calibration_section(card: dict) -> list[str]:
    """Temperatures recorded by `streamsense models calibrate --record`, with NLL and ECE before → after."""
    section = card.get("calibration")
    if not section:
        return []
    rows = [[name, t, *(f"{section[split][name][m][0]} → {section[split][name][m][1]}"
                        for split in ("validation", "test") for m in ("nll", "ece"))]
            for name, t in section["temperature"].items()]
    return ["## Calibration", "",
            (f"Temperature scaling fitted on {section['fitted_on']}: the runtime divides each head's logits by its "
             "temperature before the softmax, so probabilities (and the risk levels fitted on them) mean what they "
             "say; labels do not change."), "",
            *_table(["head", "temperature", "validation NLL", "validation ECE", "test NLL", "test ECE"], rows), ""]


def _decision_section(card: dict) -> list[str]:
    """Decision policies recorded by `streamsense models decide --record` (models/decision.py)."""
    section = card.get("decision")
    if not section:
        return []
    say = {"balanced": "as if its classes were equally likely", "training": "under its training mix's prior",
           "prior": "under a stated prior"}

    def shares(prior: dict) -> str:
        return ", ".join(f"{label} {p:.3f}" for label, p in prior.items())

    rows = [[head, e["policy"], shares(e["training_prior"]), shares(e["target_prior"]),
             ", ".join(f"{label} {x:+.4f}" for label, x in e["logit_offset"].items())] for head, e in section.items()]
    lines = ["## Decision policy", "",
             ("What class prior each head decides under (`streamsense models decide`). A head trained on a mix of "
              "datasets learns the mix's class shares; the runtime adds log target − log training prior to the "
              "head's temperature-scaled logits before the softmax, so its probabilities and label are those of the "
              "stated prior, on every device and variant and in `streamsense models eval`."), "",
             *_table(["head", "policy", "training prior", "decides under", "logit offset"], rows), ""]
    for head, e in section.items():
        d = e.get("derived_from") or {}
        if "draw_shares" in d:
            counts = "; ".join(f"{ds} " + ", ".join(f"{k} {v}" for k, v in c.items())
                               for ds, c in d["train_counts"].items())
            lines += [f"- {head}: {say.get(e['policy'], e['policy'])}. Training prior from the train splits "
                      f"({counts}), drawn {', '.join(f'{ds} {x}' for ds, x in d['draw_shares'].items())} "
                      f"(size ** {d['task_sampling_alpha']} × dataset weights {d['dataset_weights'] or 'none'}), "
                      f"class-weighted loss: {loss_weighting(d['class_weighted'])}."]
    return lines + [""]


def loss_weighting(class_weighted) -> str:
    """How a head's loss weighed its classes, in words (a decision entry's `class_weighted`)."""
    return "per dataset" if class_weighted == "dataset" else "yes" if class_weighted else "no"


MIN_TEST_ROWS = 20  # models/bias.py MIN_ROWS: a group's test-split figures are shown from this many rows


def _fairness_section(bias: dict | None) -> list[str]:
    """The profile's `bias` section (`streamsense models bias --record`, models/bias.py): per identity group, false
    alarms on benign mentions and recall on abuse, with the summary against the targets."""
    if not bias:
        return []
    try:
        return _fairness_lines(bias)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a section this version cannot read: say so
        return ["## Fairness", "", f"The profile's bias section could not be rendered ({type(exc).__name__}: {exc}); "
                "`streamsense models bias --record` writes it again.", ""]


def _fairness_lines(bias: dict) -> list[str]:
    part = bias["parts"][bias["reported"]]
    heads = bias["heads"]
    summary = part["summary"]

    def pct(x):
        return "–" if x is None else f"{x * 100:.0f} %"

    def num(x):
        return "–" if x is None else f"{x:.2f}"

    mitigation = bias.get("mitigation") or {}
    baseline = mitigation.get("without") or {}
    blind = mitigation.get("identity_blind") or []

    def cell(g, before, h):
        now = f"{pct(g['heads'][h]['fpr'])} / {num(g['heads'][h]['mean'])}"
        if before and h in blind:
            was = before["heads"][h]
            now += f" (was {pct(was['fpr'])} / {num(was['mean'])})"
        return now

    rows = []
    for name, g in sorted(part["groups"].items(), key=lambda kv: (kv[1]["category"], kv[0].lower())):
        before = baseline.get(name)
        rows.append([name, g["category"], *[cell(g, before, h) for h in heads],
                     pct(g["medium_share"]) + (f" (was {pct(before['medium_share'])})" if before else ""),
                     pct(g["recall_medium"]),
                     *[f"{num(g['heads'][h]['subgroup_auc'])} / {num(g['heads'][h]['bpsn_auc'])} / "
                       f"{num(g['heads'][h]['bnsp_auc'])}" for h in heads]])
    t = bias["templates"]
    half = bias["reported"].replace("heldout", "held-out")
    lines = ["## Fairness", "",
             (f"Identity-term bias (`streamsense models bias`), through the serving path, on the {half} "
              f"half of the project's templates (`{t['file']}`: {t['groups']} groups, benign mentions and abuse of "
              f"each; made {bias['made_at']}). FPR: benign mentions a head flags at probability ≥ "
              f"{bias['threshold']}; ≥ medium: benign mentions at risk level medium or above"
              + (" (before the mitigation in brackets)" if blind else "")
              + "; abuse ≥ medium: the group's abusive templates at medium or above; AUCs: subgroup / BPSN / BNSP."),
             ""]
    if blind:
        lines += [(f"Mitigation in the decision layer (before it in brackets): identity-blind heads "
                   f"({', '.join(blind)}): where one reaches its medium probability on a text naming a group, its "
                   "probability is the lower of the text's and the text's with the group's words replaced by a "
                   "neutral word (docs/models.md, \"Fairness\")."), ""]
    lines += _table(["group", "category", *[f"{h} FPR / mean" for h in heads], "≥ medium", "abuse ≥ medium",
                     *[f"{h} AUCs" for h in heads]], rows)
    met = summary["targets"]
    lines += ["", "Summary: " + "; ".join(
        f"{h}: worst {m['worst_group']} {num(m['worst_mean'])}, best {m['best_group']} {num(m['best_mean'])}, "
        f"spread {num(m['spread'])}, highest FPR {pct(m['max_fpr'])} ({m['max_fpr_group']})"
        for h, m in summary["heads"].items())
        + f"; benign at ≥ medium {pct(summary['medium_share'])}, above medium {pct(summary['above_medium'])}; "
          f"abuse at ≥ medium {pct(summary['recall_medium'])}. Targets met: "
        + (", ".join(k for k, v in met.items() if v) or "none") + "; missed: "
        + (", ".join(k for k, v in met.items() if not v) or "none") + ".", ""]
    splits = bias.get("test_splits")
    if splits:
        lines += ["Test rows naming the groups (groups with at least 20 rows; FPR at the head's threshold, BPSN AUC):",
                  ""]
        for key, split in splits.items():
            named = [f"{g} {pct(m['fpr'])}, {num(m['bpsn_auc'])} (n {m['n']})" for g, m in split["groups"].items()
                     if m["n"] >= MIN_TEST_ROWS]
            lines.append(f"- {key} ({split['rows']} rows, FPR {pct(split['overall_fpr'])}, AUC "
                         f"{num(split['overall_auc'])}): " + ("; ".join(named) or "no group with 20 rows"))
        lines.append("")
    elif bias.get("test_splits_note"):
        lines += [f"Test splits: {bias['test_splits_note']}.", ""]
    return lines


def _text_section(card: dict) -> list[str]:
    emoji = text_options(card)["emoji"]
    english = "en" in card.get("languages", ["en"])
    how = ("written as their English names before tokenizing (😡 → enraged face), as in training" if emoji == "names"
           else "passed to the tokenizer as they are" + ("; its English vocabulary reads most of them as [UNK]"
                                                          if english else ", as in training"))
    return ["## Input text", "", f"Mentions become @user, URLs http; emoji are {how} (`text.emoji` = {emoji}).", ""]


def _lineage_section(training: dict) -> list[str]:
    """What the weights were built from: a model continued (`train --init-from`) and/or averaged (`models soup`)."""
    lines = []
    if "init" in training:
        init = training["init"]
        lines += [f"Continued (`train --init-from`, or `init_from` of models/zh_train.py) from {init['from']}: "
                  f"validation score {init['validation_score']}, "
                  f"{init['steps']} steps ({init['minutes']} minutes) on {init['device']}.", ""]
        lines += _soup_table(init["soup"]) if "soup" in init else []
    lines += _soup_table(training["soup"]) if "soup" in training else []
    if "soup_search" in training:
        rows = [[t["from"], t["alone"], t["soup"], "yes" if t["kept"] else "no"] for t in training["soup_search"]]
        lines += ["Chosen greedily (`models soup --greedy`): best first, each kept only if the average improves "
                  "on validation:", "",
                  *_table(["model", "validation alone", "validation of the average with it", "kept"], rows), ""]
    return lines


def _soup_table(parts: list[dict]) -> list[str]:
    rows = [[part["from"] + (f" (continued from {part['init']['from']})" if "init" in part else ""), part["weight"],
             part["device"], part["steps"], part["minutes"], part["validation_score"]] for part in parts]
    return ["Weight average (`models soup`) of these models (its steps and minutes are their sums):", "",
            *_table(["model", "weight", "trained on", "steps", "minutes", "validation score"], rows), ""]


def _parity_row(card: dict, variant: str) -> list:
    shipped = card["variants"].get(variant, {"file": "(not shipped)", "device": ""})
    result = card["parity"]["variants"][variant]
    if result["status"] == "skipped":
        return [variant, shipped["file"], shipped["device"], f"skipped: {result['reason']}", "", "", ""]
    return [variant, shipped["file"], shipped["device"], result["status"], result["provider"],
            f"{result['max_abs_diff']:.2e}", min(result["agreement"].values())]
