"""The output topics' value format (STREAMSENSE_OUTPUT_FORMAT): JSON (the default), or Avro / JSON Schema in the
schema registry's Confluent wire format, so that a Kafka Connect sink, ksqlDB or Flink reads the predictions and
alerts topics with no code.

With `avro` or `json_schema` the worker registers the predictions' and the alerts' value schemas under
"<topic>-value" at start (waiting while the registry is down, as the inputs do) and frames each value with the id
the registry gave: magic byte 0, the 4-byte id, then the schemaless Avro or the JSON text. The fields are those of
the JSON messages (docs/architecture.md, docs/alerts.md). In Avro, a prediction's score maps are `map<double>` (a
model without a neutral label has no `neutral`), and an alert's `evidence` (free-form, per rule) is its JSON text.
"""

import io
import json
import logging
from typing import TYPE_CHECKING

import msgspec

from streamsense.streams.inputs.registry import RegistryClient, client_for, frame

if TYPE_CHECKING:
    from streamsense.settings import Settings

log = logging.getLogger(__name__)

_JSON = msgspec.json.Encoder(enc_hook=str)  # as the pipeline's: what msgspec cannot encode is written as str(value)
_OPTIONAL_STRING = ["null", "string"]

PREDICTION_AVRO = {
    "type": "record", "name": "Prediction", "namespace": "streamsense", "fields": [
        {"name": "id", "type": "string"},
        {"name": "kind", "type": "string"},
        {"name": "sentiment", "type": {"type": "record", "name": "Sentiment", "fields": [
            {"name": "label", "type": "string"},
            {"name": "scores", "type": {"type": "map", "values": "double"}}]}},
        {"name": "risk", "type": {"type": "record", "name": "Risk", "fields": [
            {"name": "level", "type": "string"},
            {"name": "score", "type": "double"},
            {"name": "labels", "type": {"type": "map", "values": "double"}},
            {"name": "signals", "type": {"type": "array", "items": "string"}},
            {"name": "explanation", "type": "string"}]}},
        {"name": "truncated", "type": "boolean"},
        {"name": "lang", "type": _OPTIONAL_STRING, "default": None},
        {"name": "lang_declared", "type": _OPTIONAL_STRING, "default": None},
        {"name": "supported", "type": "boolean", "default": True},
        {"name": "model_version", "type": "string"},
        {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
            {"name": "topic", "type": "string"}, {"name": "partition", "type": "int"},
            {"name": "offset", "type": "long"}]}},
    ]}

ALERT_AVRO = {
    "type": "record", "name": "Alert", "namespace": "streamsense", "fields": [
        {"name": "id", "type": "string"},
        {"name": "rule", "type": "string"},
        {"name": "severity", "type": "string"},
        {"name": "key", "type": "string"},
        {"name": "window", "type": ["null", {"type": "record", "name": "Window", "fields": [
            {"name": "start", "type": _OPTIONAL_STRING}, {"name": "end", "type": _OPTIONAL_STRING}]}],
         "default": None},
        {"name": "summary", "type": "string"},
        {"name": "evidence", "type": "string", "doc": "the alert's evidence list as JSON text"},
        {"name": "model_version", "type": _OPTIONAL_STRING, "default": None},
        {"name": "created_at", "type": _OPTIONAL_STRING, "default": None},
    ]}

_NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
_STRING_OR_NULL = {"type": ["string", "null"]}
PREDICTION_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "streamsense.Prediction", "type": "object",
    "required": ["id", "kind", "sentiment", "risk", "model_version", "source"],
    "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"},
        "sentiment": {"type": "object", "required": ["label", "scores"],
                      "properties": {"label": {"type": "string"}, "scores": _NUMBERS}},
        "risk": {"type": "object", "required": ["level", "score"], "properties": {
            "level": {"type": "string"}, "score": {"type": "number"}, "labels": _NUMBERS,
            "signals": {"type": "array", "items": {"type": "string"}}, "explanation": {"type": "string"}}},
        "truncated": {"type": "boolean"}, "lang": _STRING_OR_NULL, "lang_declared": _STRING_OR_NULL,
        "supported": {"type": "boolean"}, "model_version": {"type": "string"},
        "source": {"type": "object", "required": ["topic", "partition", "offset"], "properties": {
            "topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}}},
    }}
ALERT_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "streamsense.Alert", "type": "object",
    "required": ["id", "rule", "severity", "key", "summary"],
    "properties": {
        "id": {"type": "string"}, "rule": {"type": "string"}, "severity": {"type": "string"},
        "key": {"type": "string"},
        "window": {"type": ["object", "null"], "properties": {"start": _STRING_OR_NULL, "end": _STRING_OR_NULL}},
        "summary": {"type": "string"}, "evidence": {"type": "array"}, "model_version": _STRING_OR_NULL,
        "created_at": _STRING_OR_NULL,
    }}


class JsonOutput:
    """The default: compact UTF-8 JSON, no framing."""

    name = "json"

    @staticmethod
    def prediction(value: dict) -> bytes:
        return _JSON.encode(value)

    @staticmethod
    def alert(value: dict) -> bytes:
        return json.dumps(value).encode()


class AvroOutput:
    """Schemaless Avro after the Confluent header, with the ids the registry gave the two schemas."""

    name = "avro"

    def __init__(self, client: RegistryClient, predictions_topic: str, alerts_topic: str):
        from fastavro import parse_schema, schemaless_writer

        self._write = schemaless_writer
        self._prediction = parse_schema(PREDICTION_AVRO)
        self._alert = parse_schema(ALERT_AVRO)
        self.prediction_id = client.register(f"{predictions_topic}-value", json.dumps(PREDICTION_AVRO))
        self.alert_id = client.register(f"{alerts_topic}-value", json.dumps(ALERT_AVRO))

    def _encode(self, schema, schema_id: int, value: dict) -> bytes:
        out = io.BytesIO()
        self._write(out, schema, value)
        return frame(schema_id, out.getvalue())

    def prediction(self, value: dict) -> bytes:
        return self._encode(self._prediction, self.prediction_id, value)

    def alert(self, value: dict) -> bytes:
        return self._encode(self._alert, self.alert_id, {**value, "evidence": _JSON.encode(value["evidence"]).decode()})


class JsonSchemaOutput:
    """JSON text after the Confluent header, with the ids of the two registered JSON Schemas."""

    name = "json_schema"

    def __init__(self, client: RegistryClient, predictions_topic: str, alerts_topic: str):
        self.prediction_id = client.register(f"{predictions_topic}-value", json.dumps(PREDICTION_JSON_SCHEMA), "JSON")
        self.alert_id = client.register(f"{alerts_topic}-value", json.dumps(ALERT_JSON_SCHEMA), "JSON")

    def prediction(self, value: dict) -> bytes:
        return frame(self.prediction_id, _JSON.encode(value))

    def alert(self, value: dict) -> bytes:
        return frame(self.alert_id, _JSON.encode(value))


JSON_OUTPUT = JsonOutput()


class OutputFormatError(ValueError):
    """STREAMSENSE_OUTPUT_FORMAT asks for the registry and none is configured."""


def output_format(settings: "Settings"):
    """The output format of these settings; for avro / json_schema its schemas are registered first (this waits
    while the registry is down)."""
    name = settings.output_format
    if name == "json":
        return JSON_OUTPUT
    client = client_for(settings)
    if client is None:
        raise OutputFormatError(f"STREAMSENSE_OUTPUT_FORMAT={name} needs a schema registry and none is configured")
    out = (AvroOutput if name == "avro" else JsonSchemaOutput)(client, settings.topic_predictions,
                                                               settings.topic_alerts)
    log.info("output format %s: %s-value is schema id %d, %s-value schema id %d (registry %s)", name,
             settings.topic_predictions, out.prediction_id, settings.topic_alerts, out.alert_id, client.url)
    return out
