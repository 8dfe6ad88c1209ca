"""Value formats: how a message value's bytes become a JSON-like value (dict, list, str, number, bool, None).

The contract every format keeps (the built-ins here, and the schema-registry formats of the modules in PLUGINS):

- `make_format(name, options, settings)` builds one format object per declared input, at start. A factory raises
  `FormatConfigError` (one line, naming the option) for options it does not take or cannot use, and
  `NoRegistry` (a FormatConfigError) where it needs a schema registry and none is configured.
- `format.decode(value, msg)` is called once per message with the value's bytes (never None, at most
  records.MAX_MESSAGE_BYTES: the caller handles tombstones and oversized values) and the message it came in (for
  its topic, partition, offset, key). It returns the decoded value, or raises `DecodeError(reason)` (one line) for
  a message that can never decode: a poison message, dead-lettered with the reason. A transient failure (a schema
  registry that does not answer) is not a DecodeError: `decode` waits and retries inside (nothing is skipped).
- `Skip(reason)` is raised for a message to pass over and count (a Debezium delete, a tombstone): no row, no dead
  letter, its offset still advances.

Built-ins: `json`, `string` (the whole value is the text) and `auto` (magic byte 0: the Confluent wire format, read
by the registry format "confluent"; `{` or `[`: JSON; anything else: text). A format whose module is in PLUGINS is
imported on first use, so a missing optional dependency is a one-line FormatConfigError at start.
"""

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from streamsense.streams.contracts import Incoming
from streamsense.streams.records import DecodeError, odd_json, parse_json

if TYPE_CHECKING:
    from streamsense.settings import Settings

__all__ = ["DecodeError", "FORMATS", "FormatConfigError", "NoRegistry", "PLUGINS", "Skip", "ValueFormat",
           "make_format", "register_format"]


class Skip(Exception):
    """A message to pass over and count (a delete, a tombstone): no row, no dead letter; `reason` is one line,
    `kind` a short word for the count's label (delete, truncate, tombstone; a small fixed set)."""

    def __init__(self, reason: str, kind: str = "skip"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


class FormatConfigError(ValueError):
    """A format cannot be built from its options (or its optional dependency is missing): one line, naming the
    option; the declaration prefixes the topic."""


class NoRegistry(FormatConfigError):
    """The format needs a schema registry and none is configured (STREAMSENSE_SCHEMA_REGISTRY_URL)."""


class ValueFormat(Protocol):
    name: str

    def decode(self, value: bytes, msg: Incoming) -> Any:
        """The value's bytes → dict / list / str / number / bool / None, or DecodeError(reason)."""
        ...


FormatFactory = Callable[[dict, "Settings"], ValueFormat]

#: format name → factory(options, settings); filled by register_format (built-ins below, plugins when imported)
FORMATS: dict[str, FormatFactory] = {}

#: format name → the module that registers it (imported on first use: its dependencies are optional)
PLUGINS: dict[str, str] = {
    "confluent": "streamsense.streams.inputs.confluent",
    "avro": "streamsense.streams.inputs.avro",
    "json_schema": "streamsense.streams.inputs.json_schema",
    "protobuf": "streamsense.streams.inputs.protobuf",
}


def register_format(name: str, factory: FormatFactory) -> None:
    """Make `name` usable as an input's `format`: `factory(options, settings)` returns a ValueFormat."""
    FORMATS[name] = factory


def known_formats() -> list[str]:
    return sorted(set(FORMATS) | set(PLUGINS))


def _load(name: str) -> FormatFactory | None:
    factory = FORMATS.get(name)
    if factory is None and name in PLUGINS:
        try:
            importlib.import_module(PLUGINS[name])
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            if missing == PLUGINS[name]:
                raise FormatConfigError(f"format {name!r} is not available in this installation") from None
            raise FormatConfigError(f"format {name!r} needs the Python package {missing!r}, which is not installed "
                                    f"(pip install 'streamsense[registry]')") from None
        factory = FORMATS.get(name)
    return factory


def make_format(name: str, options: dict | None, settings: "Settings") -> ValueFormat:
    """The format `name` built from `options` (the input's own options table) and the settings."""
    factory = _load(name)
    if factory is None:
        raise FormatConfigError(f"unknown format {name!r} (known: {', '.join(known_formats())})")
    return factory(dict(options or {}), settings)


def no_options(name: str, options: dict) -> None:
    """For a format that takes no options: a FormatConfigError naming the first one given."""
    if options:
        raise FormatConfigError(f"format {name!r} takes no options (got {sorted(options)[0]!r})")


# --- built-ins ------------------------------------------------------------------------------------------------------

_msgspec_decode = msgspec.json.decode


class JsonFormat:
    """JSON text (UTF-8). msgspec reads the well-formed common case; anything it refuses goes to the checked parser
    (records.parse_json: the same limits and reasons as the fixed-shape decoder, deep nesting and over-long integers
    included)."""

    name = "json"

    def decode(self, value: bytes, msg: Incoming) -> Any:
        if not odd_json(value):
            try:
                return _msgspec_decode(value)
            except (msgspec.DecodeError, RecursionError, ValueError):
                pass
        return parse_json(value)


class StringFormat:
    """The whole value is the text (UTF-8)."""

    name = "string"

    def decode(self, value: bytes, msg: Incoming) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


class AutoFormat:
    """Magic byte 0: the Confluent wire format (the registry format "confluent"); `{` or `[` after any leading
    whitespace: JSON; anything else: text."""

    name = "auto"

    def __init__(self, registry: ValueFormat | None):
        self.registry = registry
        self.json, self.string = JsonFormat(), StringFormat()

    def decode(self, value: bytes, msg: Incoming) -> Any:
        if value[:1] == b"\x00":
            if self.registry is None:
                raise DecodeError("value is in the Confluent wire format (magic byte 0) but no schema registry is "
                                  "configured (STREAMSENSE_SCHEMA_REGISTRY_URL)")
            return self.registry.decode(value, msg)
        if value.lstrip()[:1] in (b"{", b"["):
            return self.json.decode(value, msg)
        return self.string.decode(value, msg)


def _json(options: dict, settings) -> JsonFormat:
    no_options("json", options)
    return JsonFormat()


def _string(options: dict, settings) -> StringFormat:
    no_options("string", options)
    return StringFormat()


def _auto(options: dict, settings) -> AutoFormat:
    """`auto` passes its options to the registry format; without a registry it still reads JSON and text."""
    try:
        registry = make_format("confluent", options, settings)
    except NoRegistry:
        if options:
            raise FormatConfigError(f"format 'auto' was given registry options ({', '.join(sorted(options))}) but "
                                    "no schema registry is configured (STREAMSENSE_SCHEMA_REGISTRY_URL)") from None
        registry = None
    except FormatConfigError:
        if options or "confluent" in FORMATS or getattr(settings, "schema_registry_url", None):
            raise
        registry = None  # the registry module's dependency is not installed: JSON and text still read
    return AutoFormat(registry)


register_format("json", _json)
register_format("string", _string)
register_format("auto", _auto)
