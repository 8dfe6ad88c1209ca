"""`streamsense drift`: make a model version's drift reference (from its validation data or a trusted window of
stored traffic) and explain a drift window."""

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsense import errors
from streamsense.settings import Settings

drift_app = typer.Typer(help="Drift monitoring: make a model's reference profile, explain a window.",
                        no_args_is_help=True)
console = Console(stderr=True)


def _fail(what: str, fix: str, code: int = errors.USAGE):
    for line in errors.Failure(what, fix, code).lines():
        typer.echo(line, err=True)
    raise typer.Exit(code)


def _time(value: Optional[str], option: str) -> Optional[datetime]:
    from streamsense.streams.bi import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _classifier(settings: Settings, model_dir: Path):
    from streamsense.models.classifier import Classifier
    from streamsense.models.risk import RiskRules
    from streamsense.models.runtime import ModelRuntime

    runtime = ModelRuntime(model_dir, "cpu", settings.intra_op_threads)
    return Classifier(runtime, RiskRules.load(settings.risk_rules).for_model(runtime.name))


def validation_texts(card: dict, datasets_dir: Path, per_dataset: int) -> tuple[list[str], list[dict]]:
    """The validation texts of every dataset the card's heads were trained on (a seeded sample of `per_dataset`
    each), without repeats."""
    from streamsense.models.data import load_split
    from streamsense.models.registry import text_options
    from streamsense.models.tasks import Task, canonical_label

    texts, used, seen = [], [], set()
    for t in card["tasks"]:
        task = Task(t["name"], tuple(map(canonical_label, t["labels"])), t.get("dataset", ""), t["metric"])
        if not task.dataset or task.dataset in seen:
            continue
        seen.add(task.dataset)
        rows = load_split(datasets_dir, task, "validation", limit=per_dataset, seed=0,
                          emoji=text_options(card)["emoji"])
        texts += [r.text for r in rows]
        used.append({"dataset": task.dataset, "split": "validation", "rows": len(rows)})
    unique = list(dict.fromkeys(texts))
    return unique, used


@drift_app.command("reference")
def reference(
    model: str = typer.Option(..., "--model", help="The model, NAME[:VERSION] or a model directory."),
    datasets_dir: Optional[Path] = typer.Option(None, help="The datasets folder (default: STREAMSENSE_DATASETS_DIR)."),
    per_dataset: int = typer.Option(2000, min=1, help="At most this many validation rows per dataset."),
    from_store: bool = typer.Option(False, "--from-store", help="From stored traffic of this model version "
                                    "(STREAMSENSE_DATABASE_URL) between --since and --until, instead of datasets."),
    since: Optional[str] = typer.Option(None, help="--from-store: from this time (30m, 2h, 7d or ISO 8601)."),
    until: Optional[str] = typer.Option(None, help="--from-store: until this time (default: now)."),
    as_json: bool = typer.Option(False, "--json", help="Print the section written as JSON."),
):
    """Make the drift reference of a model version and record it in its profile (profile.json beside its card)."""
    from streamsense.models.registry import read_card, resolve
    from streamsense.streams.drift.reference import make_reference, save_reference

    settings = Settings()
    model_dir = resolve(settings.model_registry, model)
    card = read_card(model_dir)
    label = f"{card.get('name')}:{card.get('version')}"
    minimum = settings.drift_min_messages
    if from_store:
        if since is None:
            raise typer.BadParameter("--from-store needs --since (the start of the trusted window)",
                                     param_hint="--since")
        start, end = _time(since, "--since"), _time(until, "--until")
        texts = stored_texts(settings.database_url, label, start, end)
        if not texts:
            _fail(f"no stored texts of {label} between {start.isoformat()} and {(end.isoformat() if end else 'now')}",
                  "pick a window the worker stored with STREAMSENSE_STORE_TEXT=full or redacted")
        made_from = {"window": {"since": start.isoformat(), "until": end.isoformat() if end else None},
                     "source": "stored traffic", "rows": len(texts)}
    else:
        folder = datasets_dir or settings.datasets_dir
        texts, used = validation_texts(card, folder, per_dataset)
        made_from = {"datasets": used, "rows": len(texts)}
    if len(texts) < minimum:
        _fail(f"{len(texts)} texts: a reference needs at least {minimum} (STREAMSENSE_DRIFT_MIN_MESSAGES)",
              "widen the window (--since/--until) or the sample (--per-dataset)")
    classifier = _classifier(settings, model_dir)
    data = make_reference(classifier, texts, minimum)
    written = save_reference(model_dir, data, made_from)
    if as_json:
        print(json.dumps(written, indent=1))
        return
    size = (model_dir / "profile.json").stat().st_size
    console.print(f"drift reference of {label}: {len(texts)} texts, bootstrap threshold "
                  f"{data['projection']['bootstrap']['threshold']} (T, windows of {minimum}); "
                  f"profile.json {size / 1024:.0f} KB in {model_dir}")


def stored_texts(database_url: str, version: str, start: datetime, end: Optional[datetime]) -> list[str]:
    from sqlalchemy import select

    from streamsense.streams.bi import connect
    from streamsense.streams.schema import predictions

    errors.require_database(database_url)
    p = predictions.c
    stmt = select(p.text).where(p.model_version == version, p.event_at >= start, p.text.is_not(None))
    if end is not None:
        stmt = stmt.where(p.event_at < end)
    engine = connect(database_url)
    try:
        with engine.connect() as conn:
            return [t for (t,) in conn.execute(stmt) if t]
    finally:
        engine.dispose()


@drift_app.command("explain")
def explain(
    model: Optional[str] = typer.Option(None, "--model", help="The model version as stored (NAME:VERSION); "
                                        "default: any model's newest window."),
    window: Optional[str] = typer.Option(None, "--window", help="A time inside the window (ISO 8601, or 2h for "
                                         "two hours ago); default: the newest window."),
    scope: str = typer.Option("*", help="The scope: * (the whole stream) or topic:NAME."),
    examples: int = typer.Option(3, min=0, help="Example texts per driver."),
    as_json: bool = typer.Option(False, "--json", help="Print the explanation as JSON."),
):
    """Explain a drift window: which quantities moved most, and which tokens, languages, lengths and repeated texts
    drive it (examples from the stored texts)."""
    from streamsense.models.registry import resolve
    from streamsense.models.runtime import ModelRuntime
    from streamsense.streams.bi import connect
    from streamsense.streams.drift.explain import WindowNotFound
    from streamsense.streams.drift.explain import explain as explain_window
    from streamsense.streams.drift.reference import References

    settings = Settings()
    at = _time(window, "--window")
    errors.require_database(settings.database_url)
    references = References(settings.model_registry)
    engine = connect(settings.database_url)
    try:
        with engine.connect() as conn:
            try:
                from streamsense.streams.drift.explain import find_window
                version = find_window(conn, model, scope, at).model_version
            except WindowNotFound as exc:
                _fail(str(exc), "see the windows with `streamsense query drift-windows`")
            tokenizer = None
            if not version.endswith("+null"):
                try:
                    tokenizer = ModelRuntime(resolve(settings.model_registry, version), "cpu", null_model=True)
                except Exception:  # the model is not in this registry: explain without tokens
                    tokenizer = None
            out = explain_window(conn, references, version, scope, at, settings.drift_min_messages, tokenizer,
                                 examples)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return
    print_explanation(Console(), out)


def print_explanation(out: Console, x: dict) -> None:
    out.print(f"[bold]{x['model_version']}[/] scope {x['scope']}  {x['window_start']} → {x['window_end']}  "
              f"{x['messages']} messages: [bold]{x['status']}[/]")
    out.print(f"  {x['summary']}")
    if x["quantities"]:
        table = Table("quantity", "method", "value", "level", "what moved", box=None)
        moved = [q for q in x["quantities"] if q["level"] != "stable"]
        shown = x["quantities"][:len(moved) + 3]  # what moved, then the closest of the rest (--json: all)
        for q in shown:
            style = {"major": "red", "moderate": "yellow"}.get(q["level"], "dim")
            table.add_row(q["name"], q["method"], f"{q['value']:.3f}", f"[{style}]{q['level']}[/]", q["moved"])
        out.print(table)
        if len(shown) < len(x["quantities"]):
            out.print(f"[dim]{len(x['quantities']) - len(shown)} more quantities stable (--json lists them)[/]")
    estimated = {h: e for h, e in x.get("estimated", {}).items() if e.get("window") is not None}
    if estimated:
        out.print("estimated accuracy (no labels, calibrated heads): " + ", ".join(
            f"{h} {e['window']:.0%} (reference {e['reference']:.0%})" for h, e in estimated.items()))
    drivers = x.get("drivers", {})
    for token in drivers.get("tokens", [])[:8]:
        out.print(f"  token {token['token']!r}: {token['reference']:.2%} → {token['window']:.2%} of tokens"
                  + (f"  e.g. {token['examples'][0]!r}" if token["examples"] else ""))
    for lang in drivers.get("languages", []):
        out.print(f"  language {lang['lang']}: {lang['reference']:.0%} → {lang['window']:.0%}"
                  + (f"  e.g. {lang['examples'][0]!r}" if lang["examples"] else ""))
    for rep in drivers.get("repeated texts", []):
        out.print(f"  repeated {rep['count']}x: {rep['text']!r}")
    if not x.get("texts_read") and x["status"] not in ("no reference",):
        out.print("[dim]no stored texts in this window (STREAMSENSE_STORE_TEXT=hash?): no examples[/]")
