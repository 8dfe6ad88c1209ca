"""The `json_schema` input format: JSON values in the Confluent wire format whose schema (a JSON Schema) is in the
schema registry; read as JSON (the same checked reader as format `json`: deep nesting and over-long integers are a
one-line dead letter), and validated against the schema only where the input asks (`validate = true`).

Why validation is off by default (docs/architecture.md): the producer's serializer validated each value when it
wrote it, and checking again costs ~10x the decode itself (jsonschema: ~30 us per 300-byte value vs ~3 us to read it
on this project's bench machine), which alone would take more than the 10 % of the null-model ceiling a registry
format may cost. Where it is on and jsonschema is absent, the input fails at start with one line.
"""

from typing import Any

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.avro import registry_of, wrong_type
from streamsense.streams.inputs.formats import FormatConfigError, JsonFormat, register_format
from streamsense.streams.inputs.registry import RegisteredSchema, RegistryClient, split
from streamsense.streams.records import DecodeError


def take_validate(name: str, options: dict) -> bool:
    """The `validate` option (a bool, default false); a FormatConfigError for any other option."""
    validate = options.pop("validate", False)
    if not isinstance(validate, bool):
        raise FormatConfigError(f"format {name!r}: validate must be true or false, not {validate!r}")
    if options:
        raise FormatConfigError(f"format {name!r} takes only the option 'validate' (got {sorted(options)[0]!r})")
    if validate:
        try:
            import jsonschema  # noqa: F401
        except ImportError:
            raise FormatConfigError(f"format {name!r}: validate = true needs the Python package 'jsonschema', "
                                    f"which is not installed (pip install 'streamsense[registry]')") from None
    return validate


def json_validator(schema: RegisteredSchema):
    """A jsonschema validator for the schema's draft (its $schema; draft 7 where it names none)."""
    import json

    import jsonschema

    try:
        document = json.loads(schema.text)
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft7Validator)
        cls.check_schema(document)
        return cls(document)
    except (ValueError, jsonschema.SchemaError) as exc:
        raise DecodeError(f"schema id {schema.id} is not a valid JSON Schema ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from None


class JsonSchemaReader:
    """Reads (and, with `validate`, checks) the JSON payload of one registry schema."""

    def __init__(self, client: RegistryClient, validate: bool):
        self.client, self.validate = client, validate
        self.json = JsonFormat()

    def read(self, schema: RegisteredSchema, payload, msg: Incoming) -> Any:
        value = self.json.decode(bytes(payload), msg)
        if self.validate:
            validator = self.client.parsed(schema, json_validator)
            try:
                error = next(iter(validator.iter_errors(value)), None)
            except RecursionError:
                raise DecodeError(f"value nests too deeply to check against JSON Schema id {schema.id}") from None
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(the value)"
                raise DecodeError(f"value does not match JSON Schema id {schema.id}: at {where}: "
                                  f"{error.message[:200]}")
        return value


class JsonSchemaFormat:
    """Confluent wire format, JSON Schema schemas only."""

    name = "json_schema"

    def __init__(self, client: RegistryClient, validate: bool = False):
        self.client = client
        self.reader = JsonSchemaReader(client, validate)

    def decode(self, value: bytes, msg: Incoming) -> Any:
        schema_id, payload = split(value)
        schema = self.client.schema(schema_id)
        if schema.type != "JSON":
            raise wrong_type(schema, self.name, "a JSON Schema")
        return self.reader.read(schema, payload, msg)


def _json_schema(options: dict, settings) -> JsonSchemaFormat:
    validate = take_validate("json_schema", options)
    return JsonSchemaFormat(registry_of("json_schema", settings), validate)


register_format("json_schema", _json_schema)
