"""The `confluent` input format: any value in the Confluent wire format, read by its registry schema's type (AVRO →
the avro reader, JSON → the json_schema reader); the format `auto` sends values that start with the magic byte 0
here. Protobuf schemas are not read by this version: such a message is dead-lettered saying so.
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

    def decode(self, value: bytes, msg: Incoming) -> Any:
        schema_id, payload = split(value)
        schema = self.client.schema(schema_id)
        if schema.type == "AVRO":
            return self.client.parsed(schema, avro_reader).read(payload)
        if schema.type == "JSON":
            return self.json.read(schema, payload, msg)
        raise DecodeError(f"schema id {schema_id} is a {schema.type} schema: this version reads Avro and JSON "
                          f"Schema values only")


def _confluent(options: dict, settings) -> ConfluentFormat:
    validate = take_validate("confluent", options)
    return ConfluentFormat(registry_of("confluent", settings), validate)


register_format("confluent", _confluent)
