"""The `streamsense` command."""

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsense.settings import Settings

app = typer.Typer(help="StreamSense: sentiment and risk classification for Kafka streams.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
models_app = typer.Typer(help="The model registry: list and evaluate shipped or trained models.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
console = Console(stderr=True)


@app.command()
def broker(port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: STREAMSENSE_BROKER_PORT).")):
    """Run the embedded Kafka-compatible broker (Tansu, in-memory) until Ctrl-C."""
    import signal
    import threading

    from streams.broker import EmbeddedBroker

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
    from streams.worker import run_worker

    run_worker(Settings(), migrate=migrate, loglevel=loglevel)


@app.command()
def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL file, one message per line."),
    topic: str = typer.Option(..., "--topic", "-t", help="Topic to write to."),
):
    """Replay a JSONL file into a topic, one message per line (key = the record's id)."""
    import asyncio

    from rich.progress import Progress

    from streams.kafka import client_options
    from streams.produce import produce_lines, read_lines

    lines = read_lines(file)
    with Progress(console=console) as progress:
        task = progress.add_task(f"producing to {topic}", total=len(lines))
        sent = asyncio.run(produce_lines(lines, topic, client_options(Settings()),
                                         on_sent=lambda n: progress.advance(task, n)))
    console.print(f"sent {sent} messages to {topic}")


@app.command()
def classify(batch_size: int = typer.Option(64, help="Lines classified together.")):
    """Classify stdin (JSONL with id and text, or plain lines); one JSON result per input line, in order."""
    from streams.worker import load_classifier

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
              f"{summary['latency_ms']['p50']}/{summary['latency_ms']['p95']} ms   total {summary['seconds']} s")
    for line in summary["alert_examples"]:
        out.print(f"  {line}")
    out.print(f"results are in {db.resolve()} (tables predictions, alerts, dead_letters)")


@db_app.command("upgrade")
def db_upgrade():
    """Create or upgrade the schema at STREAMSENSE_DATABASE_URL."""
    from streams.store import migrate

    migrate(Settings().database_url)
    console.print("schema is up to date")
