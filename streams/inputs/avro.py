"""The `avro` input format: Avro values in the Confluent wire format, read with the writer's schema fetched by id from
the schema registry (fastavro, schemaless), into a dict named as the schema's fields (a union's value plain).

Schema evolution needs nothing more: each message is read with the schema it was written with (its id), and the
field mapping reads by name, so messages of an older and a newer version of a subject both decode; a field the older
version lacks is absent (the mapping's first-present list, or a missing-path dead letter).

Hostile values are bounded: a string or bytes length past the message's end is a truncation (fastavro reads what is
there: nothing of the declared size is allocated); a writer schema that is recursive is read by fastavro's pure-Python
reader, whose depth the interpreter bounds (its compiled reader recursed until the C stack overflowed: a crash); a
schema with an array of items that take no bytes (null, an empty record) is refused, since an item count there is
not bounded by the message's size (fastavro would loop 2^60 times).
"""

import io
import json
from typing import Any

from fastavro import parse_schema, schemaless_reader
from fastavro._read_py import schemaless_reader as checked_reader

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.formats import NoRegistry, no_options, register_format
from streamsense.streams.inputs.registry import RegisteredSchema, RegistryClient, client_for, split
from streamsense.streams.records import DecodeError

_PRIMITIVE_ZERO = {"null"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _shape(parsed) -> tuple[bool, bool]:
    """(recursive, has an array of zero-byte items) for a parsed schema (fastavro's: full names, named types
    defined once, referenced by name after)."""
    named = dict(parsed.get("__named_schemas", {})) if isinstance(parsed, dict) else {}
    recursive = zero_items = False
    done: set = set()  # named types walked in full (depth-first: a cycle is a name met again on the stack)

    def zero_width(node, seen: frozenset) -> bool:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node in _PRIMITIVE_ZERO
            if node in seen or node not in named:
                return False
            return zero_width(named[node], seen | {node})
        if isinstance(node, list):  # a union: its branch index takes a byte at least
            return False
        kind = node.get("type")
        if kind == "record" or kind == "error":
            return all(zero_width(f["type"], seen | {node.get("name")}) for f in node.get("fields", ()))
        if kind == "fixed":
            return node.get("size") == 0
        if isinstance(kind, (str, dict, list)) and kind not in ("enum", "array", "map"):
            return zero_width(kind, seen)
        return False

    def walk(node, stack: tuple) -> None:
        nonlocal recursive, zero_items
        if isinstance(node, str):
            if node in stack:
                recursive = True
            elif node in named and node not in done:
                walk(named[node], stack)
            return
        if isinstance(node, list):
            for branch in node:
                walk(branch, stack)
            return
        kind = node.get("type")
        name = node.get("name")
        if kind in ("record", "error"):
            if name in stack:
                recursive = True
                return
            for f in node.get("fields", ()):
                walk(f["type"], stack + (name,))
            done.add(name)
        elif kind == "array":
            if zero_width(node["items"], frozenset()):
                zero_items = True
            walk(node["items"], stack)
        elif kind == "map":
            walk(node["values"], stack)
        elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind in named):
            walk(kind, stack)

    walk(parsed, ())
    return recursive, zero_items


class AvroReader:
    """One writer schema, parsed once: `read(payload)` → its value, or DecodeError."""

    def __init__(self, schema: RegisteredSchema):
        self.id = schema.id
        if schema.references:
            raise DecodeError(f"Avro schema id {schema.id} references other schemas "
                              f"({', '.join(str(r.get('name', r)) for r in schema.references)}): not read yet")
        try:
            self.parsed = parse_schema(json.loads(schema.text))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise DecodeError(f"schema id {schema.id} is not a valid Avro schema "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
        recursive, zero_items = _shape(self.parsed)
        if zero_items:
            raise DecodeError(f"Avro schema id {schema.id} has an array of items that take no bytes (null or an "
                              f"empty record): not read, as its item count cannot be bounded by the message's size")
        self._reader = checked_reader if recursive else schemaless_reader

    def read(self, payload) -> Any:
        try:
            return self._reader(io.BytesIO(payload), self.parsed, None)
        except EOFError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise DecodeError(f"truncated Avro value for schema id {self.id}{detail}") from None
        except RecursionError:
            raise DecodeError(f"Avro value for schema id {self.id} nests too deeply") from None
        except Exception as exc:  # a value the schema does not describe: a bad union index, invalid UTF-8, ...
            raise DecodeError(f"invalid Avro value for schema id {self.id} ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


def avro_reader(schema: RegisteredSchema) -> AvroReader:
    return AvroReader(schema)


def registry_of(name: str, settings) -> RegistryClient:
    """The process's registry client, or NoRegistry naming the format that needs it."""
    client = client_for(settings)
    if client is None:
        raise NoRegistry(f"format {name!r} needs a schema registry: set STREAMSENSE_SCHEMA_REGISTRY_URL")
    return client


def wrong_type(schema: RegisteredSchema, fmt: str, expected: str) -> DecodeError:
    return DecodeError(f"schema id {schema.id} is a {schema.type} schema, not {expected} (this input's format is "
                       f"{fmt!r}; format 'confluent' reads any registry schema)")


class AvroFormat:
    """Confluent wire format, Avro schemas only."""

    name = "avro"

    def __init__(self, client: RegistryClient):
        self.client = client

    def decode(self, value: bytes, msg: Incoming) -> Any:
        schema_id, payload = split(value)
        schema = self.client.schema(schema_id)
        if schema.type != "AVRO":
            raise wrong_type(schema, self.name, "Avro")
        return self.client.parsed(schema, avro_reader).read(payload)


def _avro(options: dict, settings) -> AvroFormat:
    no_options("avro", options)
    return AvroFormat(registry_of("avro", settings))


register_format("avro", _avro)
