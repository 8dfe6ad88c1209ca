"""`streamsense feedback …` (verdicts in and out, the review queue) and the registry's aliases under `streamsense
models …` (promote through the gate, rollback, registry init)."""

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsense import errors
from streamsense.settings import Settings

feedback_app = typer.Typer(help="People's verdicts on predictions and alerts: add, import, export, what to review "
                                "next.", no_args_is_help=True)
out = Console()
console = Console(stderr=True)


def register(app: typer.Typer, models_app: typer.Typer, panel: str) -> None:
    from streamsense import cli_challenger

    app.add_typer(feedback_app, name="feedback", rich_help_panel=panel)
    cli_challenger.register(feedback_app)
    models_app.command("promote")(models_promote)
    models_app.command("rollback")(models_rollback)
    models_app.command("aliases")(models_aliases)
    models_app.command("challenger")(models_challenger)
    models_app.command("registry-init")(models_registry_init)
    models_app.command("adapt")(models_adapt)
    models_app.command("compare")(models_compare)


def _fail(what: str, fix: str, code: int = errors.USAGE):
    for line in errors.Failure(what, fix, code).lines():
        typer.echo(line, err=True)
    raise typer.Exit(code)


def _engine(settings: Settings):
    from streamsense.streams.bi import connect

    errors.require_database(settings.database_url)
    return connect(settings.database_url)


def _report(outcome, what: str = "verdicts") -> None:
    for target, reason in outcome.rejected[:20]:
        console.print(f"rejected {target}: {reason}", markup=False)
    if len(outcome.rejected) > 20:
        console.print(f"… and {len(outcome.rejected) - 20} more rejected")
    console.print(f"{what}: {outcome.summary()}", markup=False)


def _record(verdicts) -> None:
    from streamsense.streams.feedback.verdicts import record

    settings = Settings()
    engine = _engine(settings)
    try:
        outcome = record(engine, verdicts)
    finally:
        engine.dispose()
    _report(outcome)
    if outcome.rejected and not (outcome.added or outcome.unchanged or outcome.replaced):
        raise typer.Exit(errors.USAGE)


@feedback_app.command("add")
def feedback_add(
    target: str = typer.Argument(..., help="KIND:ID of a stored prediction (post:123, ticket:T-9)."),
    head: str = typer.Option("sentiment", help="The head judged: sentiment, offensive, hate, complaint…"),
    label: Optional[str] = typer.Option(None, help="The right label (e.g. negative, complaint, not_offensive)."),
    right: bool = typer.Option(False, "--right", help="The model's label was right."),
    wrong: bool = typer.Option(False, "--wrong", help="The model's label was wrong."),
    by: str = typer.Option(..., "--by", help="Who says so (a user name, or a tool)."),
):
    """Add one verdict or corrected label on a stored prediction."""
    from streamsense.streams.feedback.verdicts import Verdict, VerdictError, check, parse_ref

    if right and wrong:
        raise typer.BadParameter("--right or --wrong, not both")
    try:
        kind, ident = parse_ref(target)
        if kind == "alert":
            raise VerdictError("an alert takes `streamsense feedback alert ID --false-alarm` (or --confirmed)")
        verdict = check(Verdict(kind, ident, head, by, "right" if right else "wrong" if wrong else None, label))
    except VerdictError as exc:
        _fail(str(exc), "see `streamsense feedback add --help`")
    _record([verdict])


@feedback_app.command("alert")
def feedback_alert(
    alert_id: str = typer.Argument(..., help="The alert's id (`streamsense alerts list` shows it)."),
    false_alarm: bool = typer.Option(False, "--false-alarm", help="It should not have been raised."),
    confirmed: bool = typer.Option(False, "--confirmed", help="It was a real alarm."),
    by: str = typer.Option(..., "--by", help="Who says so."),
):
    """Mark a stored alert a false alarm (or confirm it)."""
    from streamsense.streams.feedback.verdicts import ALERT_HEAD, Verdict

    if false_alarm == confirmed:
        raise typer.BadParameter("give one of --false-alarm or --confirmed")
    _record([Verdict("alert", alert_id, ALERT_HEAD, by, "wrong" if false_alarm else "right")])


@feedback_app.command("import")
def feedback_import(
    path: Path = typer.Argument(..., help="The file ('-': standard input)."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one verdict per line), argilla or label-studio "
                                                      "(a JSON array, or one record per line)."),
):
    """Add verdicts in bulk: a JSONL file of verdicts, or Argilla records / Label Studio tasks."""
    from streamsense.streams.feedback import formats
    from streamsense.streams.feedback.verdicts import VerdictError, from_dict

    if fmt not in ("jsonl", *formats.FORMATS):
        raise typer.BadParameter(f"{fmt!r} is not jsonl, argilla or label-studio", param_hint="--format")
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    records, malformed = _json_records(text)
    verdicts = []
    if fmt == "jsonl":
        for n, record in records:
            try:
                verdicts.append(from_dict(record, "jsonl"))
            except VerdictError as exc:
                malformed.append((f"line {n}", str(exc)))
    else:
        parsed = formats.parse(fmt, [record for _, record in records])
        verdicts, malformed = parsed.verdicts, malformed + parsed.malformed
        for what, n in sorted(parsed.skipped.items()):
            console.print(f"skipped {n} {what}{'s' if n > 1 else ''}", markup=False)
    for where, reason in malformed[:20]:
        console.print(f"malformed {where}: {reason}", markup=False)
    if not verdicts:
        _fail(f"no verdicts in {path}" + (f" ({len(malformed)} malformed)" if malformed else ""),
              f"see docs/models.md \"Adapting to your domain\" for the {fmt} format")
    _record(verdicts)


def _json_records(text: str) -> tuple[list[tuple[int, object]], list[tuple[str, str]]]:
    """A JSON array, or one JSON value per line (blank lines skipped): [(line or index, value)], [malformed]."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return list(enumerate(json.loads(stripped), 1)), []
        except json.JSONDecodeError as exc:
            return [], [("file", f"not JSON: {exc}")]
    records, malformed = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            malformed.append((f"line {n}", f"not JSON: {exc.msg}"))
    return records, malformed


@feedback_app.command("export")
def feedback_export(
    fmt: str = typer.Option(..., "--format", help="argilla or label-studio."),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="The file ('-': standard output)."),
    queue: Optional[int] = typer.Option(None, "--queue", min=1,
                                        help="Export the next N items of the review queue (default: every item "
                                             "that has verdicts, with them)."),
    random_share: Optional[float] = typer.Option(None, "--random-share", min=0, max=1,
                                                 help="With --queue: the random share (default "
                                                      "STREAMSENSE_FEEDBACK_RANDOM_SHARE)."),
):
    """Export stored predictions and alerts with the model's suggestions and people's verdicts, for Argilla or
    Label Studio."""
    from sqlalchemy import select

    from streamsense.streams.feedback import formats
    from streamsense.streams.feedback.queue import review_queue
    from streamsense.streams.feedback.schema import feedback

    if fmt not in formats.FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not argilla or label-studio", param_hint="--format")
    settings = Settings()
    engine = _engine(settings)
    try:
        samples = {}
        if queue:
            share = settings.feedback_random_share if random_share is None else random_share
            items = review_queue(engine, queue, share)
            refs = [(i["kind"], i["message_id"]) for i in items]
            samples = {(i["kind"], i["message_id"]): i["reason"] for i in items}
        else:
            with engine.connect() as conn:
                refs = [tuple(r) for r in conn.execute(select(feedback.c.kind, feedback.c.message_id)
                                                       .group_by(feedback.c.kind, feedback.c.message_id)
                                                       .order_by(feedback.c.kind, feedback.c.message_id))]
        records = formats.export(engine, fmt, refs, samples)
    finally:
        engine.dispose()
    text = json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    console.print(f"{len(records)} {'records' if fmt == 'argilla' else 'tasks'} exported", markup=False)


@feedback_app.command("queue")
def feedback_queue(
    limit: int = typer.Option(20, "--limit", min=1, help="How many items."),
    random_share: Optional[float] = typer.Option(None, "--random-share", min=0, max=1,
                                                 help="Share drawn at random (default "
                                                      "STREAMSENSE_FEEDBACK_RANDOM_SHARE, 0.2)."),
    order: str = typer.Option("margin", "--order", help="margin (smallest first) or entropy (largest first)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the random share (repeatable queues)."),
    challenger: str = typer.Option("auto", "--challenger", help="Whose would-be alerts share the alerts' slots: "
                                                                 "NAME:VERSION (or alias), auto (the challenger "
                                                                 "shadowed now, if any) or none."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
):
    """What to review next: alerts (and a shadowed challenger's would-be alerts), the predictions the model is least
    sure of, and a random share (the only unbiased estimate of quality)."""
    from streamsense.cli_challenger import challenger_version
    from streamsense.streams.feedback.queue import ORDERS, review_queue

    if order not in ORDERS:
        raise typer.BadParameter(f"{order!r} is not one of {', '.join(ORDERS)}", param_hint="--order")
    settings = Settings()
    share = settings.feedback_random_share if random_share is None else random_share
    engine = _engine(settings)
    try:
        items = review_queue(engine, limit, share, order, seed=seed,
                             challenger=challenger_version(settings, engine, challenger))
    finally:
        engine.dispose()
    if as_json:
        for item in items:
            print(json.dumps(item))
        return
    table = Table(title=f"review queue ({len(items)}; random share {share:g})")
    for col in ("target", "why", "head", "margin/entropy, rule or challenger"):
        table.add_column(col)
    for i in items:
        table.add_row(f"{i['kind']}:{i['message_id']}", i["reason"], i["head"], str(i["score"]))
    out.print(table)
    console.print("add verdicts with `streamsense feedback add KIND:ID --head H --label L --by YOU` (or "
                  "`feedback export --queue N` for Argilla / Label Studio)", markup=False)
    if any(i["kind"] == "would_alert" for i in items):
        console.print("a would_alert row is an alert the challenger (last column) would have raised: `streamsense "
                      "feedback would-alert KIND:ID --rule HEAD --false-alarm|--confirmed --by YOU`", markup=False)


@feedback_app.command("quality")
def feedback_quality(
    model: Optional[str] = typer.Argument(None, help="NAME[:VERSION or alias] (default: STREAMSENSE_MODEL)."),
    record_it: bool = typer.Option(False, "--record", help="Write it as the `quality` section of the model's "
                                                           "profile (profile.json)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """A model's accuracy per head on people's labels (held out: stored after the model was made), with 95 %
    Wilson intervals; the model is run on the stored texts."""
    from streamsense.models.profile import write_section
    from streamsense.models.registry import read_card, resolve
    from streamsense.streams.feedback.evidence import quality

    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    engine = _engine(settings)
    try:
        report = quality(engine, path)
    finally:
        engine.dispose()
    card = read_card(path)
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        table = Table(title=f"{card['name']}:{card['version']} on {report['verdicts']} labelled verdicts "
                            f"(stored after {report['stored_after']})")
        for col in ("head", "n", "right", "accuracy", "95 % interval"):
            table.add_column(col)
        for head, h in sorted(report["heads"].items()):
            table.add_row(head, str(h["n"]), str(h["right"]), f"{h['accuracy']:.3f}",
                          f"{h['low']:.3f} … {h['high']:.3f}")
        out.print(table)
    if report["without_text"]:
        console.print(f"{report['without_text']} labelled verdicts name messages stored without text "
                      "(STREAMSENSE_STORE_TEXT=hash): left out", markup=False)
    if record_it:
        if not report["verdicts"]:
            _fail("no labelled verdicts to record", "label some first (`streamsense feedback queue`)")
        write_section(path, "quality", report, {"verdicts": report["verdicts"], "judged": "labelled verdicts stored "
                                                f"after {report['stored_after']}"})
        console.print(f"recorded as the quality section of {path / 'profile.json'}", markup=False)


@feedback_app.command("consume")
def feedback_consume():
    """Read verdicts from the feedback topic (STREAMSENSE_TOPIC_FEEDBACK) until Ctrl-C: stored with their offsets in
    SQL; malformed ones, or ones naming nothing stored, go to the dead letters with the reason."""
    import logging.config

    from streamsense.logs import logging_config
    from streamsense.streams.feedback.consumer import run

    settings = Settings()
    config = logging_config(settings.log_format, "info")
    if config:
        logging.config.dictConfig(config)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"reading verdicts from {settings.topic_feedback} on {settings.kafka_bootstrap_servers}",
                  markup=False)
    totals = run(settings)
    console.print(f"stopped; verdicts: {totals.summary()}", markup=False)


# --- models: aliases, promotion, rollback ----------------------------------------------------------------------

def _name_version(ref: str) -> tuple[str, int]:
    name, _, version = ref.partition(":")
    if not name or not version.isdigit():
        raise typer.BadParameter(f"{ref!r} is not NAME:VERSION (e.g. streamsense-minilm:4)")
    return name, int(version)


def models_promote(
    model: str = typer.Argument(..., help="NAME:VERSION to make champion."),
    evidence: Optional[Path] = typer.Option(None, help="A JSON file of gate evidence (docs/models.md); what it "
                                                       "lacks is gathered from STREAMSENSE_DATABASE_URL: both "
                                                       "models run on the held-out labelled verdicts; alert "
                                                       "precision comes from the verdicts on each version's "
                                                       "(would-be) alerts where there are any, else the file."),
    by: Optional[str] = typer.Option(None, "--by", help="Who promotes (recorded in the aliases' history)."),
):
    """Promote a version to champion through the gate; refused, with each failed check's reason, unless every
    check passes. A worker serving NAME:champion switches on its next reload (SIGHUP)."""
    from streamsense.models.gate import promote
    from streamsense.models.registry import CHAMPION, alias_version, resolve
    from streamsense.streams.feedback.gate_checks import load_evidence

    settings = Settings()
    name, version = _name_version(model)
    root = settings.model_registry
    resolve(root, model)  # an unknown model fails here with the registry's message
    gathered = load_evidence(evidence) if evidence else {}
    sqlite = errors.sqlite_path(settings.database_url)
    from streamsense.models.registry import read_card
    from streamsense.streams.feedback.challenger import alert_precision

    dirs = {"champion": resolve(root, f"{name}:{alias_version(root, name, CHAMPION)}"),
            "challenger": resolve(root, model)}
    versions = {role: f"{c['name']}:{c['version']}" for role, c in ((r, read_card(p)) for r, p in dirs.items())}
    engine = _engine(settings) if sqlite is None or sqlite.is_file() else None
    try:  # the verdicts from the store where the file lacks them; alert precision from the store's verdicts first
        if engine is not None and "verdicts" not in gathered:
            from streamsense.streams.feedback.evidence import paired

            console.print("running both models on the held-out labelled verdicts…", markup=False)
            gathered.update(paired(engine, dirs["champion"], dirs["challenger"]))
        gathered["alert_precision"] = alert_precision(engine, versions, gathered.get("alert_precision"))
    finally:
        if engine is not None:
            engine.dispose()
    try:
        result = promote(root, name, version, gathered, by)
    except (ValueError, PermissionError) as exc:
        _fail(str(exc), "see `streamsense models aliases NAME`")
    for line in result.reasons():
        console.print(("  passed " if result.passed else "  failed ") + line, markup=False)
    if not result.passed:
        _fail(f"promotion of {model} refused by the gate ({sum(not r.passed for r in result.results)} of "
              f"{len(result.results)} checks failed, above)", "fix what the failed checks say, then promote again",
              errors.RUNTIME)
    console.print(f"{name}:{CHAMPION} is now version {version} (was {result.champion}); send SIGHUP to workers "
                  f"serving {name}:{CHAMPION}", markup=False)


def models_rollback(name: str = typer.Argument(..., help="The model name."),
                    by: Optional[str] = typer.Option(None, "--by", help="Who rolls back.")):
    """Move the champion back to the version it held before its last promotion (no gate)."""
    from streamsense.models.registry import CHAMPION, ModelNotFoundError, rollback_target, set_alias

    root = Settings().model_registry
    try:
        target = rollback_target(root, name)
    except ModelNotFoundError as exc:
        _fail(str(exc), f"`streamsense models aliases {name}` shows the history")
    entry = set_alias(root, name, CHAMPION, target, "rollback", by)
    console.print(f"{name}:{CHAMPION} is now version {target} (was {entry['previous']}); send SIGHUP to workers "
                  f"serving {name}:{CHAMPION}", markup=False)


def models_challenger(model: str = typer.Argument(..., help="NAME:VERSION to name challenger."),
                      by: Optional[str] = typer.Option(None, "--by")):
    """Name a version the challenger (no gate: a challenger serves nothing until it is promoted)."""
    from streamsense.models.registry import ALIASES, CHALLENGER, _versions, pin_champion, resolve, set_alias

    name, version = _name_version(model)
    root = Settings().model_registry
    resolve(root, model)
    others = [v for v in _versions(root, name) if v != version]
    if others and not (Path(root) / name / ALIASES).is_file():  # the implicit champion: the newest other version
        pin_champion(root, name, others[-1], by)
    set_alias(root, name, CHALLENGER, version, "set", by)
    console.print(f"{name}:{CHALLENGER} is now version {version}", markup=False)


def models_aliases(name: str = typer.Argument(..., help="The model name."),
                   as_json: bool = typer.Option(False, "--json")):
    """Show a model's aliases and their history."""
    from streamsense.models.registry import CHAMPION, alias_version, read_aliases

    root = Settings().model_registry
    data = read_aliases(root, name)
    data["aliases"].setdefault(CHAMPION, alias_version(root, name, CHAMPION))  # the implicit one included
    if as_json:
        print(json.dumps(data, indent=1))
        return
    for alias, version in sorted(data["aliases"].items()):
        out.print(f"{name}:{alias} → {version}", markup=False)
    for entry in data["history"]:
        out.print(f"  {entry['at']} {entry['action']} {entry['alias']}: {entry['previous']} → {entry['version']}"
                  + (f" by {entry['by']}" if entry.get("by") else ""), markup=False)


def models_registry_init(
    directory: Path = typer.Argument(..., help="The writable registry to make (or add the shipped models to)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the shipped versions instead of linking them."),
):
    """Make a writable registry holding the shipped models (linked, or copied), for promotion and new versions;
    then set STREAMSENSE_MODEL_REGISTRY to it."""
    from streamsense.models.registry import init_registry
    from streamsense.settings import SHIPPED_MODELS

    made = init_registry(directory, SHIPPED_MODELS, copy)
    for path in made:
        console.print(f"{'copied' if copy else 'linked'} {path}", markup=False)
    console.print(f"{len(made)} version{'s' if len(made) != 1 else ''} added; now set "
                  f"STREAMSENSE_MODEL_REGISTRY={directory.resolve()}", markup=False)


def models_adapt(
    model: Optional[str] = typer.Option(None, "--model", help="Adapt this model only, from the labels in its "
                                                              "languages (default: every served model that gets "
                                                              "labels: STREAMSENSE_MODEL and "
                                                              "STREAMSENSE_LANGUAGE_MODELS)."),
    from_file: Optional[Path] = typer.Option(None, "--from-file", help='Labels, one {"text", "task", "label", '
                                                                      '"lang"?} per line.'),
    from_feedback: bool = typer.Option(False, "--from-feedback", help="People's labelled verdicts in "
                                                                      "STREAMSENSE_DATABASE_URL (messages stored "
                                                                      "with text)."),
    anchor: float = typer.Option(0.3, min=0, help="Pull towards the replaced head's weights (larger: closer to "
                                                   "the base model)."),
    class_weight: str = typer.Option("balanced", help="balanced: classes weigh equally in the fit; labels: the "
                                                      "labels' own class ratio becomes the head's prior."),
):
    """Make a challenger from labels: the encoder frozen, each labelled head refitted, exported and parity-checked,
    published as the next version and named challenger (needs the `train` extra; about a minute on 2 CPU cores).
    Each label goes to the model that reads its language (`lang`, else identified), as the worker routes messages."""
    from streamsense.models.adapt import AdaptError, LabelRow, adapt_and_export, read_labels, route
    from streamsense.models.language import UNDETERMINED, model_languages
    from streamsense.models.registry import (
        CHALLENGER, CHAMPION, alias_version, pin_champion, read_card, resolve, set_alias,
    )
    from streamsense.settings import SHIPPED_MODELS
    from streamsense.streams.worker import language_models

    if bool(from_file) == from_feedback:
        raise typer.BadParameter("give one of --from-file FILE or --from-feedback")
    if class_weight not in ("balanced", "labels"):
        raise typer.BadParameter("--class-weight is balanced or labels")
    settings = Settings()
    root = settings.model_registry
    if Path(root).resolve() == SHIPPED_MODELS.resolve():
        _fail("the registry is the installed package's shipped models, which adaptation must not change",
              "make a writable one: `streamsense models registry-init DIR`, then STREAMSENSE_MODEL_REGISTRY=DIR")
    if model:
        refs = [model]
    else:
        try:
            routed = language_models(settings.language_models)
        except ValueError as exc:
            _fail(str(exc), "fix STREAMSENSE_LANGUAGE_MODELS, or name one model with --model")
        refs = list(dict.fromkeys([settings.model, *routed.values()]))
    bases = {ref: resolve(root, ref) for ref in refs}
    cards = {ref: read_card(base) for ref, base in bases.items()}
    if from_file:
        rows, bad = read_labels(from_file)
        for n, why in bad[:20]:
            console.print(f"malformed line {n}: {why}", markup=False)
        if model:  # one model: the labels in the languages it reads (and those too short to tell)
            per_model, left = route(rows, {model: (*model_languages(cards[model]), UNDETERMINED)}, None)
        else:
            per_model, left = route(rows, {ref: tuple(lang for lang, r in routed.items() if r == ref)
                                           for ref in refs[1:]}, settings.model)
        if left:
            console.print(f"{left} labels are in languages {model} does not read: left out", markup=False)
        sources = {ref: f"file {from_file.name} ({len(r)} of its {len(rows)} labels)" for ref, r in per_model.items()}
    else:
        from streamsense.streams.feedback.evidence import labelled

        engine = _engine(settings)
        per_model, sources = {}, {}
        try:
            for ref, card in cards.items():
                items, without_text = labelled(engine, card["name"])
                if without_text:
                    console.print(f"{card['name']}: {without_text} labelled verdicts name messages stored without "
                                  "text (STREAMSENSE_STORE_TEXT=hash): they cannot train", markup=False)
                if items:
                    per_model[ref] = [LabelRow(i.text, i.head, i.label) for i in items]
                    sources[ref] = f"feedback: {len(items)} labelled verdicts"
        finally:
            engine.dispose()
    if not per_model:
        _fail(f"no labels to adapt from ({from_file or 'feedback'})", "label messages first (`streamsense feedback "
              "queue`), or give --from-file")
    adapted = 0
    for ref, rows in per_model.items():
        card = cards[ref]
        pin_champion(root, card["name"], alias_version(root, card["name"], CHAMPION))  # before v+1 is the newest
        try:
            target, new = adapt_and_export(bases[ref], rows, root, sources[ref], anchor, class_weight=class_weight)
        except AdaptError as exc:
            if len(per_model) == 1:
                _fail(str(exc), "see docs/models.md \"Adapting to your domain\"")
            console.print(f"{card['name']}:{card['version']}: not adapted: {exc}", markup=False)
            continue
        adapted += 1
        set_alias(root, new["name"], CHALLENGER, new["version"], "adapt", None, sources[ref])
        table = Table(title=f"{new['name']}:{new['version']} adapted from {card['name']}:{card['version']} "
                            f"({sources[ref]})")
        for col in ("head", "labels", "held out", "accuracy before", "after"):
            table.add_column(col)
        for head, h in new["training"]["adaptation"]["heads"].items():
            table.add_row(head, str(h["labels"]), str(h.get("held_out", 0)),
                          str(h.get("held_out_accuracy_before", "–")), str(h.get("held_out_accuracy_after", "–")))
        out.print(table)
        console.print(f"published {target}, named {new['name']}:{CHALLENGER}; next: `streamsense models eval "
                      f"--model {new['name']}:{new['version']} --record`, then `streamsense models promote "
                      f"{new['name']}:{new['version']}`", markup=False)
    untouched = [f"{cards[r]['name']}:{cards[r]['version']}" for r in refs if r not in per_model]
    if untouched:
        console.print(f"no labels for {', '.join(untouched)}: left as it is", markup=False)
    if not adapted:
        _fail("no model was adapted (above: why)", "see docs/models.md \"Adapting to your domain\"")


def models_compare(
    champion: str = typer.Argument(..., help="NAME[:VERSION or alias], e.g. streamsense-minilm:champion."),
    challenger: str = typer.Argument(..., help="NAME[:VERSION or alias], e.g. streamsense-minilm:challenger."),
    sample: int = typer.Option(500, min=1, help="How many of the newest stored texts to compare the heads on."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Two versions side by side: each head's agreement on stored texts and accuracy on the labelled verdicts held
    out from the challenger with the gate's paired test (both run offline), and what shadowing stored live."""
    from streamsense.models.registry import read_card, resolve
    from streamsense.streams.feedback.evidence import compare

    settings = Settings()
    dirs = [resolve(settings.model_registry, ref) for ref in (champion, challenger)]
    engine = _engine(settings)
    try:
        report = compare(engine, *dirs, sample=sample)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(report, indent=1))
        return
    names = [f"{c['name']}:{c['version']}" for c in map(read_card, dirs)]
    table = Table(title=f"{names[0]} (champion) vs {names[1]} (challenger)")
    for col in ("head", f"agreement on {report['texts']} texts", "held-out verdicts", "champion right",
                "challenger right"):
        table.add_column(col)
    for head in sorted(set(report["agreement"]) | set(report["verdicts"])):
        v = report["verdicts"].get(head, {})
        table.add_row(head, str(report["agreement"].get(head, "–")), str(v.get("n", 0)), str(v.get("champion", "–")),
                      str(v.get("challenger", "–")))
    out.print(table)
    console.print(f"paired test: {report['paired_test']}", markup=False)
    live = report["shadow"]
    console.print(f"shadowed live: {live['messages']} messages" + (
        f"; sentiment agrees on {live['sentiment_agreement']:.1%}, risk level on {live['risk_level_agreement']:.1%}; "
        f"the challenger would have alerted on {live['challenger_alerts']}" if live["messages"] else
        " (run a worker with STREAMSENSE_SHADOW_MODEL set to the challenger)"), markup=False)
