"""`streamsense models bias`: the identity-term bias report of a model (models/bias.py), printed or recorded; and
`streamsense models debias`: the heads refitted against it (models/debias.py)."""

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsense.cli import models_app
from streamsense.settings import Settings


def _pct(x) -> str:
    return "–" if x is None else f"{x * 100:.0f} %"


def _num(x) -> str:
    return "–" if x is None else f"{x:.2f}"


@models_app.command("bias")
def models_bias(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    limit: Optional[int] = typer.Option(None, min=1, help="At most this many templates of each kind (a quick look; "
                                                          "not recorded)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    record: bool = typer.Option(False, help="Write the report as the `bias` section of the model's profile "
                                            "(profile.json) and its card's Fairness section."),
):
    """Identity-term bias, per head and group: false-positive rate on benign mentions (at the head's threshold and
    at risk level >= medium), mean probability, subgroup / BPSN / BNSP AUC, recall on abuse of the group; from the
    project's templates and, where the datasets are found, the test rows naming the groups (docs/models.md,
    "Fairness")."""
    from streamsense.models.bias import MIN_ROWS, evaluate_bias, record as record_report
    from streamsense.models.classifier import Classifier
    from streamsense.models.registry import resolve
    from streamsense.models.risk import RiskRules
    from streamsense.models.runtime import ModelRuntime

    settings = Settings()
    if record and limit:
        raise typer.BadParameter("--record needs every template (no --limit)")
    path = resolve(settings.model_registry, model or settings.model)
    runtime = ModelRuntime(path, "cpu", settings.intra_op_threads)  # int8 on CPU, as the worker serves it
    classifier = Classifier(runtime, RiskRules.load(settings.risk_rules).for_model(runtime.name))
    report = evaluate_bias(classifier, settings.datasets_dir, limit)
    if record:
        record_report(path, report)
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    out = Console(highlight=False)
    part = report["parts"][report["reported"]]
    heads = report["heads"]
    table = Table(title=f"{report['model']}: benign mentions and abuse of each group "
                        f"({report['reported']} half of {report['templates']['file']})")
    for col in ("group", *[f"{h} FPR / mean" for h in heads], "≥ medium (benign)", "abuse ≥ medium",
                "negative", *[f"{h} BPSN / BNSP" for h in heads]):
        table.add_column(col)
    for name, g in part["groups"].items():
        table.add_row(name, *[f"{_pct(g['heads'][h]['fpr'])} / {_num(g['heads'][h]['mean'])}" for h in heads],
                      _pct(g["medium_share"]), _pct(g["recall_medium"]), _pct(g["negative_share"]),
                      *[f"{_num(g['heads'][h]['bpsn_auc'])} / {_num(g['heads'][h]['bnsp_auc'])}" for h in heads])
    out.print(table)
    s = report["summary"]
    for h, m in s["heads"].items():
        out.print(f"{h}: worst group {m['worst_group']} (mean {m['worst_mean']}, FPR {_pct(m['worst_fpr'])}), "
                  f"best {m['best_group']} ({m['best_mean']}), spread {m['spread']}; highest FPR "
                  f"{_pct(m['max_fpr'])} ({m['max_fpr_group']})", soft_wrap=True)
    out.print(f"benign at ≥ medium {_pct(s['medium_share'])} (worst {s['worst_medium_group']['group']} "
              f"{_pct(s['worst_medium_group']['medium_share'])}), above medium {_pct(s['above_medium'])}; abuse at "
              f"≥ medium {_pct(s['recall_medium'])}; targets met: "
              f"{', '.join(k for k, v in s['targets'].items() if v) or 'none'}; missed: "
              f"{', '.join(k for k, v in s['targets'].items() if not v) or 'none'}", soft_wrap=True)
    if report["test_splits"] is None:
        out.print(report["test_splits_note"], soft_wrap=True)
    else:
        for key, split in report["test_splits"].items():
            shown = [(g, m) for g, m in split["groups"].items() if m["n"] >= MIN_ROWS and m["bpsn_auc"] is not None]
            worst = sorted(shown, key=lambda kv: kv[1]["bpsn_auc"])[:3]
            out.print(f"test split {key}: {split['rows']} rows, FPR {_pct(split['overall_fpr'])}, AUC "
                      f"{split['overall_auc']}; lowest BPSN AUC: "
                      + (", ".join(f"{g} {m['bpsn_auc']} (n {m['n']})" for g, m in worst)
                         or f"no group with {MIN_ROWS} rows"), soft_wrap=True)
    if record:
        out.print(f"recorded in {path / 'profile.json'} and {path / 'MODEL_CARD.md'}")


@models_app.command("debias")
def models_debias(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    head: list[str] = typer.Option(["hate"], help="Head to refit (repeat: hate, offensive)."),
    cache: Path = typer.Option(Path(".cache/debias"), help="Folder for the sentence vectors (each text encoded once, "
                                                           "kept across runs)."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write every refit's figures to this file."),
    publish: Optional[Path] = typer.Option(None, help="Export the chosen refits (parity on the validation splits) "
                                                      "and publish them as the next version in this registry."),
):
    """Refit heads on the frozen encoder with counterfactual copies of their training rows and benign identity
    sentences, anchored to the heads they replace; print each recipe on validation, test and both template halves,
    and the one chosen (validation and the dev half only; docs/models.md, "Fairness"). Needs the `train` extra and
    the datasets. After --publish: `models calibrate --record`, `models risk-eval --fit`, `models bias --record`."""
    from streamsense.models.adapt import AdaptError
    from streamsense.models.bias import BIAS_HEADS
    from streamsense.models.debias import choose, dumps, export_refit, run, table
    from streamsense.models.registry import resolve
    from streamsense.settings import SHIPPED_MODELS

    unknown = [h for h in head if h not in BIAS_HEADS]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: refits only {', '.join(BIAS_HEADS)}", param_hint="--head")
    if publish is not None and publish.resolve() == SHIPPED_MODELS.resolve():
        raise typer.BadParameter("not into the shipped models: publish into a registry of your own "
                                 "(`streamsense models registry-init DIR`)", param_hint="--publish")
    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    out = Console(highlight=False)
    try:
        results = run(path, settings.datasets_dir, cache, tuple(head), log=out.print)
    except AdaptError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    chosen = {}
    for name, rows in results.items():
        out.print(f"\n{name}\n" + table(rows), soft_wrap=True)
        best = choose(rows)
        out.print(f"chosen: {best['recipe'] if best else 'none (no refit is better within the validation budget)'}")
        if best:
            chosen[name] = best
    if as_json:
        as_json.write_text("{" + ", ".join(f'"{n}": {dumps(rows)}' for n, rows in results.items()) + "}")
    if publish and chosen:
        target = export_refit(path, {n: r["weights"] for n, r in chosen.items()}, publish, settings.datasets_dir,
                              {"heads": {n: r["recipe"] for n, r in chosen.items()}})
        out.print(f"published {target}")
