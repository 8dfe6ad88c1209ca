"""Input declarations: the TOML file named by STREAMSENSE_INPUTS (or, without one, the built-in declaration of
STREAMSENSE_TOPIC_POSTS and STREAMSENSE_TOPIC_TICKETS), checked at start, and the reader each declared topic gets.

    [[input]]
    topic = "tweets"              # required; each topic once
    kind = "post"                 # required: post | ticket
    format = "json"               # json (default) | string | auto | avro | json_schema | protobuf | confluent
    envelope = "none"             # none (default) | debezium
    on_error = "dead_letter"      # dead_letter (default) | skip | stop
    [input.fields]                # where each record field is found (streams/inputs/mapping.py)
    id = "data.id"
    text = ["data.text"]
    [input.options]               # passed to the format (a schema registry's subject, ...)

Every problem is one line naming the file, the input (its topic) and the key (`check` lists them all; `load_inputs`
raises InputsError with the first). docs/inputs.md has worked declarations.
"""

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.formats import FormatConfigError, Skip, ValueFormat, known_formats, make_format
from streamsense.streams.inputs.mapping import ENVELOPES, FIELDS, MISSING, FieldMap, MappingError, Typed, \
    debezium, identity, text_default
from streamsense.streams.records import MAX_MESSAGE_BYTES, DecodeError, Record, decode

KINDS = ("post", "ticket")
ON_ERROR = ("dead_letter", "skip", "stop")
KEYS = ("topic", "kind", "format", "envelope", "on_error", "fields", "options")


class InputsError(ValueError):
    """A declaration that cannot be used: one line (the file, the input's topic, the key, what is wrong)."""


@dataclass(frozen=True)
class InputSpec:
    """One `[[input]]` table, checked."""

    topic: str
    kind: str
    format: str = "json"
    envelope: str = "none"
    on_error: str = "dead_letter"
    fields: dict[str, Any] | None = None  # None: the built-in shape (or, for `string`, the value is the text)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> bool:
        """The built-in shape read by records.decode (its msgspec fast path), as without a declaration file."""
        return self.format == "json" and self.envelope == "none" and self.fields is None and not self.options


class Input:
    """A declared topic's reader: `read(msg)` → a checked Post or Ticket; DecodeError(reason) for a message that
    cannot become one; Skip(reason) for one to pass over (a Debezium delete, a tombstone). The worker's pipeline
    (streams/pipeline.py) applies `on_error` to the DecodeErrors."""

    def __init__(self, spec: InputSpec, value_format: ValueFormat | None, fields: FieldMap | None):
        self.spec, self.topic, self.kind, self.on_error = spec, spec.topic, spec.kind, spec.on_error
        self.fixed = spec.fixed
        self.format, self.fields = value_format, fields
        self.envelope = debezium if spec.envelope == "debezium" else None
        # JSON without an envelope: the mapping's paths decoded straight into Struct types (mapping.Typed)
        self.typed = (Typed.build(fields) if fields is not None and spec.format == "json" and self.envelope is None
                      else None)

    def read(self, msg: Incoming) -> Record:
        if self.fixed:
            return decode(self.kind, msg.value)
        raw = msg.value
        if raw is None:
            if self.envelope is not None:
                raise Skip("tombstone (no value)", "tombstone")
            raise DecodeError("empty message (no value)")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise DecodeError(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
        if self.typed is not None:
            record = self.typed.record(raw, msg)
            if record is not None:
                return record
        event = self.format.decode(raw, msg)
        if self.envelope is None:
            return self.fields.record(event, msg, event)
        value, event = self.envelope(event)
        return self.fields.record(value, msg, event)

    def ident(self, msg: Incoming) -> str | None:
        """The message's id where its mapping finds one, else None: for the lines of a dry run and `classify` that
        report a message that did not decode. Never raises."""
        try:
            if self.fixed:
                data = json.loads(msg.value)
                found = data.get("id") if isinstance(data, dict) else None
            else:
                event = self.format.decode(msg.value, msg)
                value, event = (event, event) if self.envelope is None else self.envelope(event)
                found = self.fields.sources["id"].get(value, msg, event)
        except Exception:  # a dry run's best effort: the reason is reported by read()
            return None
        return None if found is None or found is MISSING or isinstance(found, (dict, list)) else str(found)


# --- checking -------------------------------------------------------------------------------------------------------

def builtin_specs(settings) -> list[InputSpec]:
    """The declaration used when no file is named: today's two topics in the built-in shape."""
    return [InputSpec(settings.topic_posts, "post"), InputSpec(settings.topic_tickets, "ticket")]


def _where(index: int, table: Any) -> str:
    topic = table.get("topic") if isinstance(table, dict) else None
    return f"input {topic!r}" if isinstance(topic, str) and topic else f"input #{index + 1}"


def _choice(table: dict, key: str, choices: tuple[str, ...], default: str | None) -> str:
    value = table.get(key, default)
    if value is None:
        raise InputsError(f"{key}: required ({' | '.join(choices)})")
    if value not in choices:
        raise InputsError(f"{key}: must be {' | '.join(choices)}, not {value!r}")
    return value


def _spec(table: Any, outputs: dict[str, str]) -> InputSpec:
    if not isinstance(table, dict):
        raise InputsError("must be a table ([[input]])")
    for key in table:
        if key not in KEYS:
            raise InputsError(f"{key}: unknown key (known: {', '.join(KEYS)})")
    topic = table.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise InputsError("topic: required (the Kafka topic to read)")
    if topic in outputs:
        raise InputsError(f"topic: {topic!r} is the worker's {outputs[topic]} topic (an output, not an input)")
    kind = _choice(table, "kind", KINDS, None)
    value_format = table.get("format", "json")
    if not isinstance(value_format, str):
        raise InputsError(f"format: must be a string, not {type(value_format).__name__}")
    envelope = _choice(table, "envelope", ENVELOPES, "none")
    on_error = _choice(table, "on_error", ON_ERROR, "dead_letter")
    fields = table.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise InputsError("fields: must be a table ([input.fields])")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise InputsError("options: must be a table ([input.options])")
    return InputSpec(topic, kind, value_format, envelope, on_error, fields, options)


def build(spec: InputSpec, settings) -> Input:
    """The reader of a checked spec: the format made (its options checked), the fields compiled; InputsError."""
    if spec.fixed:
        return Input(spec, None, None)
    if spec.format not in known_formats():
        raise InputsError(f"format: unknown format {spec.format!r} (known: {', '.join(known_formats())})")
    try:
        value_format = make_format(spec.format, spec.options, settings)
    except FormatConfigError as exc:
        raise InputsError(f"{'options' if spec.options else 'format'}: {exc}") from None
    fields = spec.fields
    if fields is None:
        fields = text_default(spec.kind) if spec.format == "string" else identity(spec.kind)
    try:
        mapping = FieldMap(spec.kind, fields)
    except MappingError as exc:
        raise InputsError(str(exc)) from None
    return Input(spec, value_format, mapping)


def outputs_of(settings) -> dict[str, str]:
    return {settings.topic_predictions: "predictions", settings.topic_alerts: "alerts",
            settings.topic_dead_letter: "dead-letter"}


def check(path: Path, settings) -> tuple[dict[str, Input], list[str]]:
    """Every input of the file that checks out, and one line per problem (empty: the file is good)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return {}, [f"{path}: {exc.strerror or type(exc).__name__}"]
    except UnicodeDecodeError as exc:
        return {}, [f"{path}: not UTF-8 text (byte {exc.start})"]
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: not valid TOML: {exc}"]
    problems: list[str] = []
    for key in data:
        if key != "input":
            problems.append(f"{path}: {key}: unknown top-level key (declare each topic in an [[input]] table)")
    tables = data.get("input")
    if not isinstance(tables, list) or not tables:
        problems.append(f"{path}: no [[input]] tables (each declares one topic: topic, kind, fields...)")
        return {}, problems
    inputs: dict[str, Input] = {}
    outputs = outputs_of(settings)
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = _where(index, table)
        try:
            topic = table.get("topic") if isinstance(table, dict) else None
            if isinstance(topic, str) and topic in seen:
                raise InputsError("topic: declared twice (each topic is read by one declaration)")
            seen.add(topic)
            spec = _spec(table, outputs)
            inputs[spec.topic] = build(spec, settings)
        except InputsError as exc:
            problems.append(f"{path}: {where}: {exc}")
    return inputs, problems


def load_inputs(settings) -> dict[str, Input]:
    """The worker's inputs by topic: the file named by STREAMSENSE_INPUTS, else the built-in declaration. Raises
    InputsError (one line; the count of further problems added) when the file has any problem."""
    if settings.inputs is None:
        return {spec.topic: build(spec, settings) for spec in builtin_specs(settings)}
    inputs, problems = check(settings.inputs, settings)
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise InputsError(problems[0] + more)
    return inputs


def input_topics(settings) -> list[str]:
    """The topics the declarations name (without building their readers): what the worker subscribes to and
    creates. An unreadable file: InputsError (load_inputs says more)."""
    if settings.inputs is None:
        return [spec.topic for spec in builtin_specs(settings)]
    try:
        data = tomllib.loads(Path(settings.inputs).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputsError(f"{settings.inputs}: cannot be read ({exc})") from None
    tables = data.get("input")
    return list(dict.fromkeys(t["topic"] for t in tables if isinstance(t, dict) and isinstance(t.get("topic"), str))
                ) if isinstance(tables, list) else []


def kinds_of(inputs: dict[str, Input]) -> dict[str, str]:
    return {topic: reader.kind for topic, reader in inputs.items()}


__all__ = ["FIELDS", "Input", "InputSpec", "InputsError", "build", "builtin_specs", "check", "input_topics",
           "kinds_of", "load_inputs"]
