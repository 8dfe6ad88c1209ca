"""The `streamsense` command.

Failures: the expected ones (a database or broker that cannot be reached, a login refused, a missing schema or
SQLite file, a bad STREAMSENSE_* setting, an unknown or altered model, an invalid rules file) print one or two
lines on stderr, what failed then what to do, and exit with

    0  success
    1  a runtime failure: the configuration is fine, but what it points at is not ready or not working
       (database server or Kafka broker down, schema missing, a model's files altered)
    2  a usage or configuration problem: the command line, a setting, or a file or address it names is wrong
       (bad option or STREAMSENSE_* value, invalid rules file, unknown model, no SQLite database at the path,
       database login refused)

The mapping from exception to message is streamsense/errors.py, applied once, around every command, by
`_Commands.invoke`. `--debug` (before the command: `streamsense --debug query ...`) or STREAMSENSE_DEBUG=1 shows
the full traceback instead; anything not in that table (a bug) always does. Read-only commands (`query`,
`alerts list`, `dashboard`) never create a database: on a SQLite URL they need the file to exist.
"""

import asyncio
import functools
import importlib.util
import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from streamsense import cli_feedback, errors
from streamsense.cli_drift import drift_app
from streamsense.cli_inputs import inputs_app
from streamsense.insights import alerts_tail, dashboard, print_alert, query
from streamsense.settings import BENCH_POSTGRES_URL, Settings

# The order `streamsense --help` lists commands in: the order a newcomer needs them, under these panels.
START, RUN, INSPECT, MODELS, OPERATE = "Start here", "Run", "Inspect", "Models", "Operate"
ORDER = ("demo", "broker", "worker", "produce", "classify", "inputs", "query", "alerts", "dashboard",
         "feedback", "drift", "models", "train", "export", "bench", "db")

#: What the running command uses where it is not STREAMSENSE_* (e.g. `bench --postgres-url`): for messages.
_USING: dict[str, str] = {}


# Typer's exit, abort and usage exceptions (click's, or those of the copy of click that newer typers vendor).
_TYPER_EXITS = (typer.Exit, typer.Abort,
                *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))
_USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Commands(TyperGroup):
    """The top-level group: lists commands in ORDER, and turns expected failures into one or two lines."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def invoke(self, ctx):
        _USING.clear()
        try:
            return super().invoke(ctx)
        except _USAGE_ERRORS as exc:  # a bad option or argument: the same two lines, exit code 2
            if ctx.params.get("debug") or type(exc).__name__ == "NoArgsIsHelpError":  # that one shows the help
                raise
            failure = errors.Failure(exc.format_message(), f"see `{(exc.ctx or ctx).command_path} --help`",
                                     exc.exit_code)
            for line in failure.lines():
                typer.echo(line, err=True)
            raise typer.Exit(failure.code) from None
        except _TYPER_EXITS:
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            where, secrets = _context()
            failure = errors.explain(exc, **where)
            if failure is None:
                raise  # not an expected failure: a bug, with its traceback
            for line in failure.lines(secrets):
                typer.echo(line, err=True)
            raise typer.Exit(failure.code) from None


def _context() -> tuple[dict, list[str]]:
    """Where the command was connecting (for messages) and the secrets no message may show."""
    try:
        settings = Settings()
        database_url, servers = settings.database_url, settings.kafka_bootstrap_servers
        secrets = [settings.kafka_sasl_password.get_secret_value()] if settings.kafka_sasl_password else []
    except Exception:  # the settings themselves are what failed
        database_url = os.environ.get("STREAMSENSE_DATABASE_URL")
        servers = os.environ.get("STREAMSENSE_KAFKA_BOOTSTRAP_SERVERS")
        secrets = [os.environ.get("STREAMSENSE_KAFKA_SASL_PASSWORD", "")]
    database_url = _USING.get("database_url", database_url)
    secrets += [errors.url_password(url) or "" for url in (database_url, os.environ.get("STREAMSENSE_DATABASE_URL"))]
    return {"database_url": database_url, "bootstrap_servers": servers}, secrets


app = typer.Typer(cls=_Commands, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="StreamSense: sentiment and risk classification for Kafka streams.",
                  epilog="Exit codes: 0 ok, 1 a runtime failure (database, broker, model), 2 a usage or "
                         "configuration problem. New here? Run `streamsense demo`.")
models_app = typer.Typer(help="The model registry: list and evaluate shipped or trained models.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts: list stored ones, follow the alerts topic, check a rules file.",
                         no_args_is_help=True)
db_app = typer.Typer(help="The SQL store: create or upgrade its schema.", no_args_is_help=True)
console = Console(stderr=True)
app.add_typer(alerts_app, name="alerts", rich_help_panel=INSPECT)
app.add_typer(models_app, name="models", rich_help_panel=MODELS)
app.add_typer(db_app, name="db", rich_help_panel=OPERATE)
app.add_typer(inputs_app, name="inputs", rich_help_panel=RUN)
app.add_typer(drift_app, name="drift", rich_help_panel=MODELS)
cli_feedback.register(app, models_app, MODELS)  # `feedback …`; `models promote / rollback / aliases …`


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", envvar="STREAMSENSE_DEBUG",
                                    help="Show the full traceback of a failure instead of one or two lines.")):
    """StreamSense: sentiment and risk classification for Kafka streams."""


@app.command(rich_help_panel=RUN)
def broker(port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: STREAMSENSE_BROKER_PORT).")):
    """Run the embedded Kafka-compatible broker (Tansu, in-memory) until Ctrl-C."""
    import signal
    import threading

    from streamsense.brokers import EmbeddedBroker

    settings = Settings()
    with EmbeddedBroker(port or settings.broker_port) as b:
        console.print(f"broker ready on [bold]{b.bootstrap_servers}[/] (in memory: data is lost when it stops)")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1) and b.process.poll() is None:
                pass
        except KeyboardInterrupt:
            pass
    console.print("broker stopped")


@app.command(rich_help_panel=RUN)
def worker(
    migrate: bool = typer.Option(True, help="Upgrade the database schema before starting."),
    loglevel: str = typer.Option("info", help="debug, info, warning or error."),
):
    """Run the Faust worker: consume posts and tickets, classify, store, alert."""
    from streamsense.streams.worker import run_worker

    run_worker(Settings(), migrate=migrate, loglevel=loglevel)


@app.command(rich_help_panel=RUN)
def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file, one message per line."),
    topic: str = typer.Option(..., "--topic", "-t", help="Topic to write to."),
):
    """Replay a JSONL file into a topic, one message per line (key = the record's id)."""
    from rich.progress import Progress

    from streamsense.streams.kafka import client_options
    from streamsense.streams.produce import produce_lines, read_lines

    options = client_options(Settings())
    lines = read_lines(file)
    require_broker(options)  # before the progress bar: a broker that is not there is one line, not a bar and a line
    with Progress(console=console) as progress:
        task = progress.add_task(f"producing to {topic}", total=len(lines))
        sent = asyncio.run(produce_lines(lines, topic, options, on_sent=lambda n: progress.advance(task, n)))
    console.print(f"sent {sent} messages to {topic}")


def require_broker(options: dict) -> None:
    """Raise aiokafka's KafkaConnectionError unless a broker answers a metadata request; the client is closed
    either way. (Checked first because an aiokafka producer or consumer whose start() fails is never stopped by
    produce_lines or tail, and prints "Unclosed AIOKafkaProducer" at exit.)"""
    from aiokafka import AIOKafkaClient

    async def probe() -> None:
        client = AIOKafkaClient(**options)
        try:
            await client.bootstrap()
        finally:
            await client.close()

    with _quiet("aiokafka"):  # its own log line for the refused connection: the error message says it
        asyncio.run(probe())


@contextmanager
def _quiet(logger_name: str, level: int = logging.CRITICAL):
    log = logging.getLogger(logger_name)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


class RecordShape(str, Enum):
    auto = "auto"
    post = "post"
    ticket = "ticket"


class LineFormat(str, Enum):
    json = "json"
    string = "string"


@app.command(rich_help_panel=RUN)
def classify(
    batch_size: int = typer.Option(64, min=1, help="Lines classified together."),
    kind: RecordShape = typer.Option(RecordShape.auto, case_sensitive=False,
                                     help="Record shape: post {id, text, ...}, ticket {id, subject, body, ...}, "
                                          "or auto (a ticket when the object has a \"body\")."),
    input_topic: str = typer.Option(None, "--input", help="Read each line as a message of this declared input "
                                    "topic (STREAMSENSE_INPUTS): its format, envelope and field mapping."),
    value_format: LineFormat = typer.Option(LineFormat.json, "--format", case_sensitive=False,
                                            help="Without --input: json (each line a JSON object), or string (each "
                                                 "line a text; its id the line number)."),
):
    """Classify stdin (JSON Lines posts or tickets, plain lines with --format string, or a declared input's
    messages with --input); one JSON result per input line, in order.

    Each result carries the language identified in the text (`lang`, `und` when too short to tell), the post's
    declared `lang_declared`, `supported`: false where no model reads that language (its risk then has the signal
    `unsupported_language`), and the model that classified it (`model_version`: Chinese text goes to the Chinese
    model, STREAMSENSE_LANGUAGE_MODELS).

    Each line is read as the worker reads a message; an invalid line's result is {"line", "id", "error"} with the
    reason (the id as a string: the line's own, else its line number), and the others are still classified."""
    from dataclasses import replace

    from streamsense.cli_inputs import LineReader
    from streamsense.models.language import identify, is_supported
    from streamsense.streams.pipeline import DECLARED_MAX, flag_unsupported, model_languages_of
    from streamsense.streams.worker import load_classifier

    kind = RecordShape(kind).value
    if input_topic is not None and (kind != "auto" or LineFormat(value_format) != LineFormat.json):
        raise typer.BadParameter("--input takes the kind and format from the declaration", param_hint="--kind/--format")
    settings = Settings()
    parse = LineReader(settings, kind, input_topic, LineFormat(value_format).value).parse
    classifier = load_classifier(settings)
    languages = model_languages_of(classifier)
    routed = hasattr(classifier, "classifier_for")

    invalid = total = 0

    def flush(items: list[dict]) -> None:
        records = [item["record"] for item in items if "record" in item]
        texts = [r.model_text for r in records]
        predictions, langs = iter(classifier.classify(texts)), iter(identify(texts))
        for item in items:
            if "record" in item:
                record, prediction, lang = item["record"], next(predictions), next(langs)
                # the model that read it: a routed classifier's for that language (models/routing.py)
                version = (classifier.classifier_for(lang) if routed else classifier).model_version
                supported = is_supported(lang, languages)
                if not supported:  # as the worker flags it (streams/pipeline.py)
                    prediction = replace(prediction, risk=flag_unsupported(prediction.risk, lang, languages))
                declared = getattr(record, "lang", None)
                out = {"id": record.id, "kind": record.kind, **prediction.to_dict(), "lang": lang,
                       "lang_declared": declared[:DECLARED_MAX] if declared else None, "supported": supported,
                       "model_version": version}
            else:
                out = item
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    stdin = getattr(sys.stdin, "buffer", None)
    lines = stdin if stdin is not None else (line.encode("utf-8", "surrogateescape") for line in sys.stdin)
    pending: list[dict] = []
    for number, line in enumerate(lines, 1):
        item = parse(number, line)
        total += 1
        invalid += "record" not in item
        pending.append(item)
        if len(pending) >= batch_size:
            flush(pending)
            pending = []
    flush(pending)
    if invalid:
        console.print(f"{invalid} of {total} lines invalid: their results hold the reason in \"error\"",
                      highlight=False)


@app.command(rich_help_panel=START)
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    db: Path = typer.Option(Path("streamsense-demo.db"), help="SQLite file for the demo (recreated)."),
    timeout: float = typer.Option(300, help="Seconds to wait for every message to be processed."),
    inputs: bool = typer.Option(False, "--inputs", help="Also topics in other systems' shapes (Twitter v2, stored "
                                "tweets, Debezium change events), read through a declared inputs file."),
):
    """Start the embedded broker, a worker and SQLite; replay real sample posts and tickets; summarise."""
    from streamsense.demo import print_summary, run_demo

    from streamsense.registries import registry_for

    log = lambda m: console.print(f"[dim]{m}[/]")  # noqa: E731
    with registry_for(Settings(), inputs, log) as settings:  # --inputs: an Avro topic too, where a registry is
        summary = run_demo(settings, db.resolve(), timeout, log=log, inputs=inputs)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print_summary(Console(), summary, db.resolve())


# --- reading what the worker produced: query, alerts, dashboard ----------------------------------------------------
# The command bodies of `query`, `alerts tail` and `dashboard` are in streamsense/insights.py; here they are wrapped
# so a read-only command never creates a SQLite file, and a broker that is not there is one line.

@app.command("query", rich_help_panel=INSPECT)
@functools.wraps(query)
def query_command(**kwargs):
    from streamsense.streams.bi import REPORTS

    if kwargs.get("name") in REPORTS and not kwargs.get("list_reports"):
        errors.require_database(Settings().database_url)
    return query(**kwargs)


@app.command("dashboard", rich_help_panel=INSPECT)
@functools.wraps(dashboard)
def dashboard_command(**kwargs):
    from streamsense.streams.bi import connect, run_report

    url = Settings().database_url
    errors.require_database(url)
    engine = connect(url)
    try:  # a database that is down, or has no schema, fails here rather than on the first page load
        run_report(engine, "totals")
    finally:
        engine.dispose()
    return dashboard(**kwargs)


@alerts_app.command("list")
def alerts_list(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of alert objects."),
    limit: Optional[int] = typer.Option(None, min=1, help="At most this many alerts (default 20)."),
    since: Optional[str] = typer.Option(None, help="Only alerts raised at or after: 30m, 2h, 7d or an ISO 8601 time."),
):
    """List the newest alerts stored in the SQL store (STREAMSENSE_DATABASE_URL), newest first."""
    from streamsense.streams.bi import connect, parse_since, run_report

    url = Settings().database_url
    errors.require_database(url)
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    engine = connect(url)
    try:
        records = run_report(engine, "latest-alerts", limit=limit, since=start).records()
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return
    out = Console()
    for record in records:
        window = {"start": record.get("window_start"), "end": record.get("window_end")} \
            if record.get("window_start") else None
        print_alert(out, {**record, "window": window})
    console.print(f"[dim]{len(records)} alerts[/]" if records else
                  "no alerts stored (yet): the worker stores them as its rules fire")


@alerts_app.command("tail")
@functools.wraps(alerts_tail)
def alerts_tail_command(**kwargs):
    from streamsense.streams.kafka import client_options

    require_broker(client_options(Settings()))
    return alerts_tail(**kwargs)


@alerts_app.command("check")
def alerts_check(
    path: Optional[Path] = typer.Argument(None, help="Rules file (default: STREAMSENSE_ALERT_RULES)."),
    as_json: bool = typer.Option(False, "--json", help="Print the parsed rules as a JSON array."),
):
    """Validate an alert rules file and list its rules (an invalid file: the reason, and exit code 2)."""
    from streamsense.streams.alerting.rules import AlertRules

    path = path or Settings().alert_rules
    rules = AlertRules.load(path)  # AlertRulesError: one line, exit 2 (streamsense/errors.py)
    if as_json:
        print(json.dumps([rule.model_dump(mode="json") for rule in rules.rules], indent=2))
        return
    out = Console(highlight=False)
    out.print(f"{len(rules.rules)} alert rules in {escape(str(path))}")
    for rule in rules.rules:
        details = [rule.kind, f"severity {rule.severity}" if rule.severity else "severity: the message's risk level"]
        if rule.cooldown_seconds:
            details.append(f"cooldown {rule.cooldown_seconds:g} s")
        if rule.max_per_minute:
            details.append(f"at most {rule.max_per_minute}/min")
        if getattr(rule, "family", None):
            details.append(f"family {rule.family}")
        out.print(f"[bold]{escape(rule.name)}[/] ({escape(', '.join(details))})")
        out.print(f"  fires when {escape(describe_rule(rule))}")


def describe_rule(rule) -> str:
    """What makes a rule fire, in words."""
    data = rule.model_dump()
    kind = data["kind"]
    if kind == "risk_level":
        return f"a message's risk level is {data['min_level']} or above"
    if kind == "label_score":
        return f"a message's {data['label']} score is {data['threshold']:g} or more"
    if kind == "signal":
        return f"signal {' or '.join(data['signals'])} fires on a message"
    if kind == "negative_sentiment":
        return f"a message on {', '.join(data['groups'])} is negative with confidence {data['min_confidence']:g}+"
    if kind in ("negative_share", "volume"):
        measure = "a group's negative share" if kind == "negative_share" else "a group's message count"
        return (f"{measure} in a {data['window_seconds']} s window is over {data['factor']:g}x its baseline (the "
                f"previous {data['baseline_windows']} windows), with at least {data['min_messages']} messages in it")
    shown = {k: v for k, v in data.items() if k not in ("name", "kind", "severity", "cooldown_seconds",
                                                        "max_per_minute")}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


@db_app.command("upgrade")
def db_upgrade():
    """Create or upgrade the schema at STREAMSENSE_DATABASE_URL."""
    from streamsense.streams.store import migrate

    migrate(Settings().database_url)
    console.print("schema is up to date")


def _task_weights(text: str) -> dict[str, float]:
    """`offensive=2,hate=1.5` → {"offensive": 2.0, "hate": 1.5}."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if weight <= 0:
            raise typer.BadParameter(f"expected task=weight with a weight > 0, got {part!r}", param_hint="--task-weights")
        weights[name.strip()] = weight
    return weights


@app.command(rich_help_panel=MODELS)
def train(
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained model (torch weights)."),
    tasks: str = typer.Option("sentiment,offensive,hate,complaint", help="Comma-separated heads to train."),
    task_weights: str = typer.Option("", help="Sampling weights, e.g. offensive=2 (others 1)."),
    epochs: float = typer.Option(3.0, help="Passes over the combined training data."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps (overrides epochs)."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after this much wall time (CPU budgets)."),
    train_limit: Optional[int] = typer.Option(None, help="Use at most this many training rows per task."),
    val_limit: Optional[int] = typer.Option(None, help="Use at most this many validation rows per task."),
    batch_size: int = typer.Option(32),
    max_length: int = typer.Option(128, help="Tokens per text; export serves the model at the same length."),
    emoji: str = typer.Option("names", help="Emoji as their names (names) or as they are (keep); export serves alike."),
    lr: float = typer.Option(8e-5, help="Encoder learning rate (heads use 1e-3)."),
    eval_every: int = typer.Option(700, help="Steps between validation runs (early stopping)."),
    patience: int = typer.Option(3, help="Validation runs without improvement before stopping."),
    seed: int = typer.Option(13),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    init_from: Optional[Path] = typer.Option(None, help="Continue from a trained directory instead of the base."),
):
    """Fine-tune the shared MiniLM encoder with one head per task (needs the `train` extra)."""
    from streamsense.models.network import base_model_path
    from streamsense.models.train import TrainConfig, train as run_train

    settings = Settings()
    summary = run_train(TrainConfig(
        base_model=base_model_path(), datasets_dir=str(settings.datasets_dir), output_dir=str(output),
        tasks=tuple(t.strip() for t in tasks.split(",")), task_weights=_task_weights(task_weights), epochs=epochs,
        max_steps=max_steps, max_minutes=max_minutes, train_limit=train_limit, val_limit=val_limit,
        batch_size=batch_size, max_length=max_length, emoji=emoji, lr=lr, eval_every=eval_every, patience=patience, seed=seed,
        device=device,
        init_from=str(init_from) if init_from else None,
    ))
    console.print(f"trained in {summary['minutes']} min on {summary['device']}; best validation: "
                  f"{json.dumps(summary['validation'])}; test: {json.dumps(summary['test'])}")


@app.command(rich_help_panel=MODELS)
def export(
    trained: Path = typer.Argument(..., exists=True, file_okay=False, help="Output of `streamsense train`."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the ONNX model."),
    publish_as: Optional[str] = typer.Option(None, "--publish", help="Also publish into the registry under this name."),
    parity_limit: int = typer.Option(500, help="Validation texts per task for the parity check."),
):
    """Export to ONNX (optimised; fp16 for CUDA, int8 for CPU), check parity against torch, write the model card."""
    from streamsense.exporters.onnx import export as run_export
    from streamsense.models.registry import publish

    settings = Settings()
    card = run_export(trained, output, settings.datasets_dir, parity_limit=parity_limit)
    console.print(f"exported to {output}: parity {json.dumps(card['parity'])}")
    if publish_as:
        console.print(f"published as {publish(output, settings.model_registry, publish_as)}")


@models_app.command("recover")
def models_recover(
    model: str = typer.Argument(..., help="name[:version] in the registry, or a model directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the trained model (torch weights)."),
):
    """Read a shipped model's weights back from its fp16 ONNX graph into a trained directory (needs `train`)."""
    from streamsense.exporters.recover import recover
    from streamsense.models.registry import resolve

    settings = Settings()
    summary = recover(resolve(settings.model_registry, model), output, settings.datasets_dir)
    console.print(f"recovered {summary['recovered_from']['model']} into {output}: "
                  f"parity {json.dumps(summary['recovered_from']['parity'])}")


@models_app.command("soup")
def models_soup(
    trained: list[Path] = typer.Argument(..., exists=True, file_okay=False, help="Trained directories (2 or more)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the averaged model."),
    weights: Optional[str] = typer.Option(None, help="Comma-separated weights, one per directory (default: equal)."),
    greedy: bool = typer.Option(False, help="Keep only the directories whose joining raises the validation score."),
):
    """Average the weights of models fine-tuned from the same base (a model soup); score it like `train`."""
    from streamsense.models.soup import NoBetterSoupError, greedy_soup, soup

    if greedy and weights:
        raise typer.BadParameter("--greedy averages the kept models equally: leave out --weights")
    try:
        summary = (greedy_soup(trained, output, Settings().datasets_dir) if greedy else
                   soup(trained, output, Settings().datasets_dir,
                        [float(w) for w in weights.split(",")] if weights else None))
    except NoBetterSoupError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1)
    console.print(f"soup of {len(trained)} models in {output}; validation: {json.dumps(summary['validation'])}; "
                  f"test: {json.dumps(summary['test'])}")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")):
    """List the models in the registry (STREAMSENSE_MODEL_REGISTRY)."""
    from streamsense.models.registry import list_models

    infos = list_models(Settings().model_registry)
    if as_json:
        print(json.dumps([{"name": i.name, "version": i.version, "path": str(i.path)} for i in infos], indent=2))
        return
    table = Table(title=f"models in {Settings().model_registry}")
    for col in ("name", "version", "tasks", "size MB", "path"):
        table.add_column(col)
    for info in infos:
        size = sum(f["bytes"] for f in info.card.get("files", {}).values()) / 1e6
        table.add_row(info.name, str(info.version), ", ".join(t["name"] for t in info.card["tasks"]),
                      f"{size:.1f}", str(info.path))
    Console().print(table)


@models_app.command("eval")
def models_eval(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    variant: Optional[str] = typer.Option(None, help="int8 or fp16 (default: the one for the device)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    limit: Optional[int] = typer.Option(None, help="Evaluate on at most this many test rows per task."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    record: bool = typer.Option(False, help="Write the metrics into the model card (model.json, MODEL_CARD.md)."),
):
    """Evaluate a model on the test splits: macro recall / F1, accuracy, latency per batch."""
    from streamsense.models.evaluate import evaluate
    from streamsense.models.registry import read_card, resolve, write_card

    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    report = evaluate(path, settings.datasets_dir, device=device, variant=variant, limit=limit,
                      threads=settings.intra_op_threads)
    if record:
        if limit:
            raise typer.BadParameter("--record needs the whole test splits (no --limit)")
        card = read_card(path)
        card["metrics"].setdefault("test", {})[report["variant"]] = report
        write_card(path, card)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{report['model']} ({report['variant']} on {report['device']}), test splits")
    for col in ("task", "n", "macro recall", "macro F1", "accuracy"):
        table.add_column(col)
    for name, m in report.items():
        if isinstance(m, dict) and "macro_f1" in m:
            table.add_row(name, str(m["n"]), f"{m['macro_recall']:.4f}", f"{m['macro_f1']:.4f}", f"{m['accuracy']:.4f}")
    Console().print(table)
    lat = report["latency"]
    Console().print(f"latency: {lat['mean_ms_per_batch']} ms per batch of {lat['batch_size']} "
                    f"(p95 {lat['p95_ms_per_batch']} ms), {lat['msgs_per_s']} msg/s")


@models_app.command("calibrate")
def models_calibrate(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    limit: Optional[int] = typer.Option(None, help="At most this many rows per set (a quick look; not recorded)."),
    record: bool = typer.Option(False, help="Write the temperatures into the model card (model.json, MODEL_CARD.md)."),
):
    """Fit one temperature per head on the validation splits (temperature scaling); print NLL and ECE before and
    after on validation and test; with --record, the runtime applies them from then on."""
    from streamsense.models.registry import read_card, resolve, write_card
    from streamsense.models.risk_eval import fit_temperatures
    from streamsense.models.runtime import ModelRuntime

    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    fitted = fit_temperatures(ModelRuntime(path, "cpu", settings.intra_op_threads), settings.datasets_dir, limit)
    out = Console(highlight=False)
    for name, t in fitted["temperature"].items():
        v, te = fitted["validation"][name], fitted["test"][name]
        out.print(f"{name}: T {t}  validation NLL {v['nll'][0]} → {v['nll'][1]}, ECE {v['ece'][0]} → {v['ece'][1]}; "
                  f"test NLL {te['nll'][0]} → {te['nll'][1]}, ECE {te['ece'][0]} → {te['ece'][1]}", soft_wrap=True)
    if record:
        if limit:
            raise typer.BadParameter("--record needs the whole validation splits (no --limit)")
        card = read_card(path)
        card["calibration"] = fitted
        write_card(path, card)
        out.print(f"recorded in {path / 'model.json'}")


@models_app.command("risk-eval")
def models_risk_eval(
    model: Optional[str] = typer.Option(None, help="name[:version] in the registry, or a model directory "
                                                   "(default: STREAMSENSE_MODEL)."),
    split: list[str] = typer.Option(["validation", "test"], help="Splits to report (repeat the option)."),
    limit: Optional[int] = typer.Option(None, help="At most this many rows per set (a quick look)."),
    fit: bool = typer.Option(False, help="Fit the heads' medium/high probabilities on validation and print them as "
                                         "the [heads] tables of the risk rules file, before the report."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Risk levels and alerts on labelled data: per set, benign messages reaching high/critical, risky ones reaching
    at least medium, messages per level and alerts per 10,000 (docs/models.md, "Risk levels")."""
    import dataclasses

    from streamsense.models.classifier import Classifier
    from streamsense.models.registry import resolve
    from streamsense.models.risk import RiskRules
    from streamsense.models.risk_eval import (evaluate_risk, fit_heads, format_report, heads_toml, load_sets,
                                              score_sets)
    from streamsense.models.rule_cases import DEFAULT_CASES
    from streamsense.models.runtime import ModelRuntime
    from streamsense.streams.alerting.rules import AlertRules

    settings = Settings()
    path = resolve(settings.model_registry, model or settings.model)
    runtime = ModelRuntime(path, "cpu", settings.intra_op_threads)
    rules = RiskRules.load(settings.risk_rules)
    classifier = Classifier(runtime, rules.for_model(runtime.name))  # a model with its own [models."name".heads]
    out = Console(highlight=False)
    if fit:
        scored = score_sets(classifier, load_sets(settings.datasets_dir, "validation", runtime.emoji, limit,
                                                  card=runtime.card))
        heads = fit_heads(scored, classifier.rules)
        own = runtime.name in rules.model_heads or "en" not in classifier.languages  # its own table, else [heads]
        print(heads_toml(heads, classifier.model_version, runtime.name if own else None))
        classifier.rules = dataclasses.replace(classifier.rules, heads=heads, fitted_for=classifier.model_version)
    report = evaluate_risk(classifier, settings.datasets_dir, tuple(split), limit, AlertRules.load(settings.alert_rules),
                           DEFAULT_CASES)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out.print(format_report(report), soft_wrap=True)


@app.command(rich_help_panel=OPERATE)
def bench(
    quick: bool = typer.Option(False, help="A short run (70 s on 2 cores, docs/benchmarks.md)."),
    messages: Optional[int] = typer.Option(None, help="Messages end to end (default 30000; quick 3000)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON to this file."),
    db: Path = typer.Option(Path("streamsense-bench.db"), help="SQLite file for the end-to-end stage (recreated)."),
    load: bool = typer.Option(False, help="Only the end-to-end stage, for long load runs (e.g. --messages 1000000)."),
    workers: int = typer.Option(1, help="Worker processes in one group end to end (one GPU can serve several)."),
    producers: int = typer.Option(1, help="Producer processes feeding the end-to-end stage."),
    model_messages: Optional[int] = typer.Option(None, help="Tweets for the model stages (default 20000; quick 2000)."),
    broker: str = typer.Option("tansu", help="Broker started for the end-to-end stage: tansu (embedded) or kafka "
                               "(Apache Kafka 4.4.0; jars from `bash deploy/test-deps.sh`)."),
    null_model: bool = typer.Option(False, help="End to end with inference replaced by zero logits (everything else "
                                    "real): the pipeline's own ceiling. Labelled in the output."),
    database: str = typer.Option("sqlite", help="Store for the end-to-end stage: sqlite (a fresh file) or postgresql "
                                 "(a fresh database on --postgres-url's server, dropped afterwards)."),
    postgres_url: str = typer.Option(BENCH_POSTGRES_URL,
                                     help="A PostgreSQL server and a user allowed to create databases."),
    zh_share: float = typer.Option(0.0, min=0.0, max=1.0, help="With --load: this share of the messages are real "
                                   "Chinese reviews and posts (mixed traffic; needs the datasets)."),
    inputs: str = typer.Option("fixed", help="With --load: fixed (the built-in shape), twitter-v2 (Twitter API v2 "
                               "messages through a declared field mapping) or both (alternated A B A B, and their "
                               "ratio); avro / protobuf (through the schema registry) or avro-both / protobuf-both."),
    curve: Optional[str] = typer.Option(None, help="With --load: a latency–throughput table, paced at these percents "
                                        "of the ceiling that --messages measures, e.g. 10,50,80,100."),
    row_seconds: float = typer.Option(20.0, min=1.0, help="With --curve: about how long each paced row runs."),
):
    """Measure model only, tokenize + infer, end to end (broker → worker → SQL) and a transformers baseline."""
    from streamsense.bench import LOAD_INPUTS, REGISTRY_INPUTS, run_bench, run_load

    n = messages or (3000 if quick else 30000)
    if broker not in ("tansu", "kafka"):
        raise typer.BadParameter("choose tansu or kafka", param_hint="--broker")
    if broker == "kafka":
        from streamsense.brokers import apache_kafka_missing

        if apache_kafka_missing():
            console.print("Apache Kafka 4.4.0 is not available here (needs Java and the jars): "
                          "run `bash deploy/test-deps.sh` once, or use --broker tansu.")
            raise typer.Exit(2)
    if database not in ("sqlite", "postgresql"):
        raise typer.BadParameter("choose sqlite or postgresql", param_hint="--database")
    if zh_share and not load:
        raise typer.BadParameter("mixed traffic is measured end to end only: add --load", param_hint="--zh-share")
    if inputs not in LOAD_INPUTS or (inputs != "fixed" and not load):
        raise typer.BadParameter(f"{', '.join(LOAD_INPUTS)}, with --load", param_hint="--inputs")
    if inputs.startswith("protobuf") and importlib.util.find_spec("proto_schema_parser") is None:
        console.print("--inputs protobuf needs the .proto parser: pip install 'streamsense[registry]'")
        raise typer.Exit(2)
    if inputs in REGISTRY_INPUTS:
        from streamsense.registries import apicurio_missing

        if not Settings().schema_registry_url and apicurio_missing():
            console.print(f"no schema registry for --inputs {inputs}: set STREAMSENSE_SCHEMA_REGISTRY_URL, or run "
                          "`bash deploy/test-deps.sh` once (Apicurio Registry; needs Java 21 or later)")
            raise typer.Exit(2)
    settings = Settings(null_model=null_model)
    stores = dict(database=database, postgres_url=postgres_url)
    if database == "postgresql":
        _USING["database_url"] = postgres_url  # what a database failure's message names
    if curve is not None:
        from streamsense.bench import curve_table, parse_percents, run_curve

        if not load:
            raise typer.BadParameter("the curve is measured end to end only: add --load", param_hint="--curve")
        result = run_curve(settings, n, parse_percents(curve, "--curve"), db.resolve(), timeout=24 * 3600,
                           row_seconds=row_seconds, broker=broker, workers=workers, producers=producers,
                           log=lambda m: console.print(f"[dim]{m}[/]"), **stores)
        print(curve_table(result))
        if json_out:
            json_out.write_text(json.dumps(result, indent=2))
        return
    if load:
        result = run_load(settings, n, db.resolve(), timeout=24 * 3600, workers=workers, producers=producers,
                          broker=broker, zh_share=zh_share, shape=inputs, **stores)
        print(json.dumps(result, indent=2))
        if json_out:
            json_out.write_text(json.dumps(result, indent=2))
        return
    result = run_bench(settings, n, model_messages=model_messages or (2000 if quick else 20000),
                       baseline_messages=500 if quick else 5000, db_path=db.resolve(), timeout=600 if quick else 3600,
                       workers=workers, producers=producers, broker=broker, **stores,
                       log=lambda m: console.print(f"[dim]{m}[/]"))
    table = Table(title=f"StreamSense bench ({result['device']}, {result['variant']}, batch {result['batch_size']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))


import streamsense.cli_models_bias  # noqa: E402,F401  `models bias` (registers itself on models_app)
import streamsense.cli_models_decision  # noqa: E402,F401  `models decide` (registers itself on models_app)
