"""The `confluent` input format: any value in the Confluent wire format, read by its registry schema's type (AVRO →
the avro reader, JSON → the json_schema reader, PROTOBUF → the protobuf reader); the format `auto` sends values that
start with the magic byte 0 here. The Protobuf reader needs the optional .proto parser (streamsense[registry]): where it
is not installed, a Protobuf message is dead-lettered saying so, and the other kinds still read.
"""

from typing import Any

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.avro import avro_reader, registry_of
from streamsense.streams.inputs.formats import register_format
from streamsense.streams.inputs.json_schema import JsonSchemaReader, take_validate
from streamsense.streams.inputs.registry import RegistryClient, split
from streamsense.streams.records import DecodeError


class ConfluentFormat:
    name = "confluent"

    def __init__(self, client: RegistryClient, validate: bool = False):
        self.client = client
        self.json = JsonSchemaReader(client, validate)
        try:
            from streamsense.streams.inputs.protobuf import ProtobufReader
        except ImportError as exc:
            self.protobuf, self.protobuf_missing = None, getattr(exc, "name", None) or str(exc)
        else:
            self.protobuf, self.protobuf_missing = ProtobufReader(client), None

    def decode(self, value: bytes, msg: Incoming) -> Any:
        schema_id, payload = split(value)
        schema = self.client.schema(schema_id)
        if schema.type == "AVRO":
            return self.client.parsed(schema, avro_reader).read(payload)
        if schema.type == "JSON":
            return self.json.read(schema, payload, msg)
        if schema.type == "PROTOBUF":
            if self.protobuf is None:
                raise DecodeError(f"schema id {schema_id} is a Protobuf schema: reading it needs the Python package "
                                  f"{self.protobuf_missing!r}, which is not installed (pip install "
                                  f"'streamsense[registry]')")
            return self.protobuf.read(schema, payload)
        raise DecodeError(f"schema id {schema_id} is a {schema.type} schema: this version reads Avro, JSON Schema "
                          f"and Protobuf values only")


def _confluent(options: dict, settings) -> ConfluentFormat:
    validate = take_validate("confluent", options)
    return ConfluentFormat(registry_of("confluent", settings), validate)


register_format("confluent", _confluent)
