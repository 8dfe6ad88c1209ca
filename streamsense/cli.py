"""The `streamsense` command."""

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsense.insights import alerts_app, register as register_insights
from streamsense.settings import Settings

app = typer.Typer(help="StreamSense: sentiment and risk classification for Kafka streams.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
models_app = typer.Typer(help="The model registry: list and evaluate shipped or trained models.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
register_insights(app)
console = Console(stderr=True)


@app.command()
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


@app.command()
def worker(
    migrate: bool = typer.Option(True, help="Upgrade the database schema before starting."),
    loglevel: str = typer.Option("info", help="debug, info, warning or error."),
):
    """Run the Faust worker: consume posts and tickets, classify, store, alert."""
    from streamsense.streams.worker import run_worker

    run_worker(Settings(), migrate=migrate, loglevel=loglevel)


@app.command()
def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file, one message per line."),
    topic: str = typer.Option(..., "--topic", "-t", help="Topic to write to."),
):
    """Replay a JSONL file into a topic, one message per line (key = the record's id)."""
    import asyncio

    from rich.progress import Progress

    from streamsense.streams.kafka import client_options
    from streamsense.streams.produce import produce_lines, read_lines

    lines = read_lines(file)
    with Progress(console=console) as progress:
        task = progress.add_task(f"producing to {topic}", total=len(lines))
        sent = asyncio.run(produce_lines(lines, topic, client_options(Settings()),
                                         on_sent=lambda n: progress.advance(task, n)))
    console.print(f"sent {sent} messages to {topic}")


@app.command()
def classify(batch_size: int = typer.Option(64, help="Lines classified together.")):
    """Classify stdin (JSONL with id and text, or plain lines); one JSON result per input line, in order."""
    from streamsense.streams.worker import load_classifier

    classifier = load_classifier(Settings())

    def parse(number: int, line: str) -> dict:
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as exc:
                return {"id": number, "error": f"invalid JSON: {exc.msg}"}
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"id": data.get("id", number), "error": "missing or empty 'text'"}
            return {"id": data.get("id", number), "text": text}
        if not stripped:
            return {"id": number, "error": "empty line"}
        return {"id": number, "text": line.rstrip("\n")}

    def flush(items: list[dict]) -> None:
        usable = [item for item in items if "text" in item]
        predictions = iter(classifier.classify([item["text"] for item in usable]))
        for item in items:
            out = item if "error" in item else {"id": item["id"], **next(predictions).to_dict()}
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    pending: list[dict] = []
    for number, line in enumerate(sys.stdin, 1):
        pending.append(parse(number, line))
        if len(pending) >= batch_size:
            flush(pending)
            pending = []
    flush(pending)


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    db: Path = typer.Option(Path("streamsense-demo.db"), help="SQLite file for the demo (recreated)."),
    timeout: float = typer.Option(300, help="Seconds to wait for every message to be processed."),
):
    """Start the embedded broker, a worker and SQLite; replay real sample posts and tickets; summarise."""
    from streamsense.demo import run_demo

    summary = run_demo(Settings(), db.resolve(), timeout, log=lambda m: console.print(f"[dim]{m}[/]"))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    out = Console()
    table = Table(title="StreamSense demo")
    for col in ("", "produced", "stored", "sentiment", "risk"):
        table.add_column(col)
    for name in ("posts", "tickets"):
        part = summary[name]
        table.add_row(name, str(part["produced"]), str(part["stored"]),
                      ", ".join(f"{k} {v}" for k, v in part["sentiment"].items()),
                      ", ".join(f"{k} {v}" for k, v in part["risk"].items()))
    out.print(table)
    out.print(f"alerts raised: [bold]{summary['alerts']}[/]   dead-lettered: [bold]{summary['dlq']}[/]   "
              f"model: {summary['model']}")
    out.print(f"worker throughput: {summary['worker_msgs_per_s']} msg/s   latency produce→SQL p50/p95: "
              f"{summary['latency_ms']['p50']}/{summary['latency_ms']['p95']} ms (the samples are produced while the "
              f"worker starts)   total {summary['seconds']} s")
    for line in summary["alert_examples"]:
        out.print(f"  {line}")
    out.print(f"results are in {db.resolve()} (tables predictions, alerts, dead_letters)")


@alerts_app.command("check")
def alerts_check(path: Optional[Path] = typer.Argument(None, help="Rules file (default: STREAMSENSE_ALERT_RULES).")):
    """Validate an alert rules file and list its rules."""
    from streamsense.streams.alerting.rules import AlertRules, AlertRulesError

    try:
        rules = AlertRules.load(path or Settings().alert_rules)
    except AlertRulesError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    for rule in rules.rules:
        Console().print(f"{rule.name}: {rule.model_dump(exclude_defaults=True, exclude={'name'})}")


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


@app.command()
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
        batch_size=batch_size, max_length=max_length, lr=lr, eval_every=eval_every, patience=patience, seed=seed,
        device=device,
        init_from=str(init_from) if init_from else None,
    ))
    console.print(f"trained in {summary['minutes']} min on {summary['device']}; best validation: "
                  f"{json.dumps(summary['validation'])}; test: {json.dumps(summary['test'])}")


@app.command()
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


@app.command()
def bench(
    quick: bool = typer.Option(False, help="A short run (about two minutes on 2 cores)."),
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
    postgres_url: str = typer.Option("postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                                     help="A PostgreSQL server and a user allowed to create databases."),
):
    """Measure model only, tokenize + infer, end to end (broker → worker → SQL) and a transformers baseline."""
    from streamsense.bench import run_bench, run_load

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
    settings = Settings(null_model=null_model)
    stores = dict(database=database, postgres_url=postgres_url)
    if load:
        result = run_load(settings, n, db.resolve(), timeout=24 * 3600, workers=workers, producers=producers,
                          broker=broker, **stores)
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
