"""`streamsense inputs`: check a declaration file, and try messages through a declared input without storing
anything; and how `classify` reads its lines through the same declarations."""

import asyncio
import json
from collections import Counter
from pathlib import Path

import msgspec
import typer

from streamsense.settings import Settings
from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.declare import Input, InputSpec, build, builtin_specs, check, load_inputs
from streamsense.streams.inputs.formats import Skip
from streamsense.streams.records import DecodeError

inputs_app = typer.Typer(help="Declared input topics (STREAMSENSE_INPUTS): check the declarations, and try messages "
                              "through one (a dry run: nothing is stored).", no_args_is_help=True)

_FILE_HELP = "The declaration file (default: STREAMSENSE_INPUTS; unset: the built-in declaration of posts and tickets)."


def declared(settings: Settings, file: Path | None = None) -> dict[str, Input]:
    """The declared inputs by topic, from `file` when given: checked as the worker checks them at start."""
    if file is not None:
        settings = settings.model_copy(update={"inputs": file})
    return load_inputs(settings)


def pick(inputs: dict[str, Input], topic: str, option: str) -> Input:
    if topic not in inputs:
        raise typer.BadParameter(f"no input declares topic {topic!r} (declared: {', '.join(inputs)})",
                                 param_hint=option)
    return inputs[topic]


def outcome(reader: Input, msg: Incoming) -> dict:
    """What the worker would make of `msg`: {"record": ...}, {"dead_letter": reason}, {"skipped": reason} or
    {"stop": reason} (an input with on_error = "stop")."""
    try:
        record = reader.read(msg)
    except DecodeError as exc:
        if reader.on_error == "skip":
            return {"skipped": f"{exc.reason} (on_error = skip)"}
        if reader.on_error == "stop":
            return {"stop": exc.reason}
        return {"dead_letter": exc.reason}
    except Skip as exc:
        return {"skipped": exc.reason}
    return {"record": {"kind": record.kind, **msgspec.to_builtins(record)}}


def _describe(reader: Input) -> str:
    spec = reader.spec
    if spec.fixed:
        how = "the built-in JSON shape"
    else:
        fields = "; ".join(f"{name} <- {source.text}" for name, source in reader.fields.sources.items())
        how = f"format {spec.format}" + ("" if spec.envelope == "none" else f", envelope {spec.envelope}") + \
            f", fields: {fields}"
    return f"{spec.topic}: {spec.kind}, {how}, on_error {spec.on_error}"


@inputs_app.command("check")
def check_command(file: Path = typer.Option(None, "--file", "-f", help=_FILE_HELP)):
    """Check a declaration file as the worker does at start: one line per problem (exit 2), else one per input."""
    settings = Settings()
    path = file or settings.inputs
    if path is None:
        typer.echo("STREAMSENSE_INPUTS is not set: the built-in declaration reads " +
                   ", ".join(f"{s.topic} ({s.kind})" for s in builtin_specs(settings)) + " in the built-in JSON shape")
        return
    inputs, problems = check(path, settings)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        typer.echo(f"  {len(problems)} problem{'s' if len(problems) > 1 else ''} in {path} (docs/inputs.md has "
                   "worked declarations)", err=True)
        raise typer.Exit(2)
    for reader in inputs.values():
        typer.echo(_describe(reader))
    typer.echo(f"{path}: {len(inputs)} input{'s' if len(inputs) != 1 else ''}, no problems")


def _lines(path: Path, limit: int) -> list[bytes]:
    with open(path, "rb") as f:
        return [line.rstrip(b"\r\n") for _, line in zip(range(limit), f)]


async def _from_topic(settings: Settings, topic: str, limit: int, timeout: float) -> list:
    """Up to `limit` records of `topic` from its beginning, read without a group (nothing committed)."""
    from aiokafka import AIOKafkaConsumer

    from streamsense.streams.kafka import client_options

    consumer = AIOKafkaConsumer(topic, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                **client_options(settings))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list = []
    try:
        await consumer.start()
        while len(got) < limit and (wait := deadline - loop.time()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(wait, 1.0) * 1000), max_records=limit - len(got))
            for records in batches.values():
                got += records
    finally:
        await consumer.stop()
    return sorted(got, key=lambda r: (r.partition, r.offset))[:limit]


@inputs_app.command("try")
def try_command(
    topic: str = typer.Argument(..., help="A declared input topic."),
    from_file: Path = typer.Option(None, "--from-file", exists=True, dir_okay=False,
                                   help="Sample message values, one per line (JSON Lines, or text for a string "
                                        "topic); each is read as a message of TOPIC whose offset is its line number."),
    from_topic: bool = typer.Option(False, "--from-topic", help="Read TOPIC itself from its beginning (no consumer "
                                    "group: nothing is committed, the worker's position is untouched)."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="Messages to read."),
    file: Path = typer.Option(None, "--file", "-f", help=_FILE_HELP),
    timeout: float = typer.Option(10.0, help="--from-topic: seconds to wait for the messages."),
):
    """Read messages through a declared input and print what each becomes: the record as JSON, or `dead letter:
    REASON`, or `skipped: REASON`. Nothing is classified or stored."""
    if (from_file is None) == (not from_topic):
        raise typer.BadParameter("give one of --from-file FILE or --from-topic", param_hint="--from-file")
    settings = Settings()
    reader = pick(declared(settings, file), topic, "TOPIC")
    if from_file is not None:
        messages = [(f"line {n}", Incoming(topic, 0, n, None, value, None))
                    for n, value in enumerate(_lines(from_file, limit), 1)]
    else:
        from streamsense.cli import require_broker
        from streamsense.streams.kafka import client_options

        require_broker(client_options(settings))
        records = asyncio.run(_from_topic(settings, topic, limit, timeout))
        messages = [(f"{topic}[{r.partition}]@{r.offset}",
                     Incoming(topic, r.partition, r.offset, r.key, r.value,
                              r.timestamp / 1000 if r.timestamp and r.timestamp > 0 else None)) for r in records]
    counts: Counter = Counter()
    for where, msg in messages:
        result = outcome(reader, msg)
        [(what, detail)] = result.items()
        counts[what] += 1
        if what == "record":
            typer.echo(f"{where}: {json.dumps(detail, ensure_ascii=False, default=str)}")
        else:
            typer.echo(f"{where}: {what.replace('_', ' ')}: {detail}"
                       + (" (the worker would stop here)" if what == "stop" else ""))
    typer.echo(f"{len(messages)} message{'s' if len(messages) != 1 else ''}: {counts['record']} records, "
               f"{counts['dead_letter']} dead letters, {counts['skipped']} skipped"
               + (f", {counts['stop']} would stop the worker" if counts["stop"] else ""), err=True)


# --- classify -------------------------------------------------------------------------------------------------------

class LineReader:
    """How `streamsense classify` reads its lines: each line is a message value of a declared input (`--input
    TOPIC`), or, without one, of the built-in declaration in the shape `--kind` names (auto: a ticket when the JSON
    object has a "body") and the format `--format` names (json; string: each line is a text). A line is accepted
    exactly when the worker would accept that message; its offset is its line number (`@coords`), and under
    `--format string` its key is its line number too (the id)."""

    def __init__(self, settings: Settings, kind: str, topic: str | None = None, value_format: str = "json"):
        self.kind, self.topic = kind, topic or "stdin"
        if topic is not None:
            self.readers = {"declared": pick(declared(settings), topic, "--input")}
        else:
            kinds = ("post", "ticket") if kind == "auto" and value_format == "json" else (
                ("post",) if kind == "auto" else (kind,))  # a text line is a post unless --kind ticket says otherwise
            self.readers = {k: build(InputSpec(self.topic, k, value_format), settings) for k in kinds}
        self.keyed = topic is None and value_format == "string"

    def _reader(self, raw: bytes) -> Input:
        if len(self.readers) == 1:
            return next(iter(self.readers.values()))
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        return self.readers["ticket" if isinstance(data, dict) and "body" in data else "post"]

    def parse(self, number: int, raw: bytes) -> dict:
        """{"line", "record"}, or {"line", "id", "error"} / {"line", "id", "skipped"} with the id as a string (the
        message's own where its mapping finds one, else the line number)."""
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            return {"line": number, "id": str(number), "error": "empty line"}
        msg = Incoming(self.topic, 0, number, str(number).encode() if self.keyed else None, raw, None)
        reader = self._reader(raw)
        try:
            return {"line": number, "record": reader.read(msg)}
        except (DecodeError, Skip) as exc:
            ident = reader.ident(msg)
            return {"line": number, "id": str(number) if ident is None else ident,
                    "error" if isinstance(exc, DecodeError) else "skipped": exc.reason}
