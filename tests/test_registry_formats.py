"""The schema registry's formats (streams/inputs/registry.py, avro.py, json_schema.py, confluent.py): the wire
format, hostile values (no crash, no hang, bounded memory), and against a real registry (Apicurio, the
`schema_registry` fixture): schema evolution across two versions, JSON Schema, an unknown id, an outage waited out."""

import io
import json
import logging
import resource
import threading
import time
import urllib.request

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings as hsettings, strategies as st

from streamsense.settings import Settings
from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.avro import AvroReader
from streamsense.streams.inputs.formats import FormatConfigError, NoRegistry, make_format
from streamsense.streams.inputs.json_schema import JsonSchemaReader
from streamsense.streams.inputs.registry import (RegisteredSchema, RegistryClient, RegistryUnavailable, frame,
                                                 split)
from streamsense.streams.records import DecodeError

MSG = Incoming("tweets", 0, 7, None, b"", None)

TWEET_V1 = {"type": "record", "name": "Tweet", "namespace": "test", "fields": [
    {"name": "id", "type": "string"}, {"name": "text", "type": "string"},
    {"name": "created_at", "type": "long"}]}
TWEET_V2 = {**TWEET_V1, "fields": [*TWEET_V1["fields"],
                                   {"name": "author", "type": ["null", "string"], "default": None}]}
TWEET_JSON = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"id": {"type": "string"}, "text": {"type": "string"}}, "required": ["id", "text"]}


def avro_bytes(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


def varint(n: int) -> bytes:
    """Avro's zig-zag varint of `n`."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def reader(schema: dict, schema_id: int = 1) -> AvroReader:
    return AvroReader(RegisteredSchema(schema_id, "AVRO", json.dumps(schema)))


# --- the wire format ------------------------------------------------------------------------------------------------

def test_wire_format_round_trip_and_refusals():
    assert split(frame(42, b"payload")) == (42, memoryview(b"payload"))
    assert frame(2**32 - 1, b"")[1:5] == b"\xff\xff\xff\xff"
    with pytest.raises(DecodeError, match=r"3 bytes, shorter than its 5-byte header"):
        split(b"\x00\x00\x01")
    with pytest.raises(DecodeError, match=r"first byte 0x7b, not the magic byte 0x00"):
        split(b'{"id": "1", "text": "json, not the wire format"}')


# --- hostile Avro values ---------------------------------------------------------------------------------------------

def test_avro_decodes_a_record_with_a_union_as_the_plain_value():
    record = {"id": "1", "text": "@united lost my bag", "created_at": 1, "author": "ann"}
    assert reader(TWEET_V2).read(avro_bytes(TWEET_V2, record)) == record
    assert reader(TWEET_V2).read(avro_bytes(TWEET_V2, {**record, "author": None}))["author"] is None


def test_avro_truncated_and_huge_lengths_are_one_line_reasons_without_allocating():
    good = avro_bytes(TWEET_V1, {"id": "1", "text": "hello there", "created_at": 5})
    r = reader(TWEET_V1)
    for cut in range(len(good) - 1):
        with pytest.raises(DecodeError, match=r"truncated Avro value for schema id 1"):
            r.read(good[:cut])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    for length in (2**60, 2**62, 2**31):  # a string length far past the message's end
        with pytest.raises(DecodeError, match=r"truncated Avro value"):
            r.read(varint(1) + b"1" + varint(length) + b"abc")
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing of 2^60 bytes
    with pytest.raises(DecodeError, match=r"truncated Avro value"):  # a negative length
        r.read(varint(1) + b"1" + varint(-5) + b"abc")


def test_avro_bad_union_index_and_invalid_utf8():
    r = reader(TWEET_V2)
    base = varint(1) + b"1" + varint(2) + b"hi" + varint(3)
    with pytest.raises(DecodeError, match=r"invalid Avro value for schema id 1 \(IndexError"):
        r.read(base + varint(7))  # union branch 7 of 2
    with pytest.raises(DecodeError, match=r"invalid Avro value for schema id 1 \(UnicodeDecodeError"):
        r.read(varint(1) + b"\xff" + varint(2) + b"hi" + varint(3) + varint(0))


def test_avro_deeply_nested_recursive_value_is_refused_not_a_crash():
    """fastavro's compiled reader recursed once per level until the C stack overflowed (a segfault at 100,000
    levels): a recursive schema is read by the pure-Python reader, whose depth the interpreter bounds."""
    linked = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}
    r = reader(linked, 9)
    assert r.read(b"\x02\x02\x00") == {"next": {"next": {"next": None}}}
    with pytest.raises(DecodeError, match=r"Avro value for schema id 9 nests too deeply"):
        r.read(b"\x02" * 200_000 + b"\x00")


def test_avro_array_of_zero_byte_items_is_refused():
    """An item count of 2^60 of `null` items reads no bytes per item: fastavro looped (and allocated) forever."""
    for items in ("null", {"type": "record", "name": "Empty", "fields": []}):
        schema = {"type": "record", "name": "A", "fields": [{"name": "xs", "type": {"type": "array", "items": items}}]}
        with pytest.raises(DecodeError, match=r"array of items that take no bytes"):
            reader(schema)
    ints = {"type": "record", "name": "B", "fields": [{"name": "xs", "type": {"type": "array", "items": "int"}}]}
    with pytest.raises(DecodeError, match=r"truncated"):
        reader(ints).read(varint(2**60))  # a count past the message: each int item needs a byte


def test_a_schema_that_is_not_avro_is_a_reason():
    for text in ('{"type": "no-such-type"}', "not JSON"):
        with pytest.raises(DecodeError, match=r"schema id 4 is not a valid Avro schema"):
            AvroReader(RegisteredSchema(4, "AVRO", text))


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_avro_fuzz_random_bytes_decode_or_give_a_reason(data):
    try:
        value = reader(TWEET_V2).read(data)
    except DecodeError as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        assert set(value) == {"id", "text", "created_at", "author"}


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_confluent_header_fuzz(data):
    try:
        schema_id, payload = split(data)
    except DecodeError as exc:
        assert "wire format" in exc.reason
    else:
        assert data[0] == 0 and schema_id == int.from_bytes(data[1:5], "big") and bytes(payload) == data[5:]


def test_json_schema_payload_deep_nesting_is_a_reason():
    r = JsonSchemaReader(RegistryClient("http://127.0.0.1:1"), validate=False)
    schema = RegisteredSchema(3, "JSON", json.dumps(TWEET_JSON))
    assert r.read(schema, b'{"id": "1", "text": "hi"}', MSG) == {"id": "1", "text": "hi"}
    with pytest.raises(DecodeError):
        r.read(schema, b"[" * 100_000 + b"]" * 100_000, MSG)
    with pytest.raises(DecodeError):
        r.read(schema, b'{"id": "1", "text": ', MSG)


# --- the formats' options ----------------------------------------------------------------------------------------

def test_registry_formats_need_a_registry_and_check_their_options():
    for name in ("avro", "json_schema", "confluent"):
        with pytest.raises(NoRegistry, match=rf"format '{name}' needs a schema registry"):
            make_format(name, {}, Settings(schema_registry_url=None))
    settings = Settings(schema_registry_url="http://127.0.0.1:1")
    with pytest.raises(FormatConfigError, match=r"format 'avro' takes no options \(got 'subject'\)"):
        make_format("avro", {"subject": "x"}, settings)
    with pytest.raises(FormatConfigError, match=r"validate must be true or false"):
        make_format("json_schema", {"validate": "yes"}, settings)
    assert make_format("auto", {}, settings).registry.name == "confluent"


# --- against a real registry -----------------------------------------------------------------------------------

def register(url: str, subject: str, schema: dict, schema_type: str = "AVRO") -> int:
    return RegistryClient(url).register(subject, json.dumps(schema), schema_type)


def test_schema_evolution_two_versions_both_decode(schema_registry, unique):
    url = schema_registry.url
    v1 = register(url, f"tweets-{unique}-value", TWEET_V1)
    v2 = register(url, f"tweets-{unique}-value", TWEET_V2)
    assert v1 != v2
    with urllib.request.urlopen(f"{url}/subjects/tweets-{unique}-value/versions") as response:
        assert json.loads(response.read()) == [1, 2]
    old = frame(v1, avro_bytes(TWEET_V1, {"id": "1", "text": "old writer", "created_at": 10}))
    new = frame(v2, avro_bytes(TWEET_V2, {"id": "2", "text": "new writer", "created_at": 11, "author": "bo"}))
    settings = Settings(schema_registry_url=url)
    for name in ("avro", "confluent", "auto"):
        fmt = make_format(name, {}, settings)
        assert fmt.decode(old, MSG) == {"id": "1", "text": "old writer", "created_at": 10}
        assert fmt.decode(new, MSG) == {"id": "2", "text": "new writer", "created_at": 11, "author": "bo"}
    with pytest.raises(DecodeError, match=rf"schema id {v1} is a AVRO schema, not a JSON Schema"):
        make_format("json_schema", {}, settings).decode(old, MSG)


def test_json_schema_decodes_and_validates_on_request(schema_registry, unique):
    url = schema_registry.url
    sid = register(url, f"tickets-{unique}-value", TWEET_JSON, "JSON")
    good = frame(sid, b'{"id": "7", "text": "refund please"}')
    bad = frame(sid, b'{"id": 7, "text": "id is a number"}')
    settings = Settings(schema_registry_url=url)
    plain, checked = make_format("json_schema", {}, settings), make_format("json_schema", {"validate": True}, settings)
    assert plain.decode(good, MSG) == checked.decode(good, MSG) == {"id": "7", "text": "refund please"}
    assert plain.decode(bad, MSG) == {"id": 7, "text": "id is a number"}  # not validated: the producer's job
    with pytest.raises(DecodeError, match=rf"value does not match JSON Schema id {sid}: at id: 7 is not of type"):
        checked.decode(bad, MSG)
    assert make_format("confluent", {}, settings).decode(good, MSG)["id"] == "7"
    with pytest.raises(DecodeError, match=rf"schema id {sid} is a JSON schema, not Avro"):
        make_format("avro", {}, settings).decode(good, MSG)


def test_unknown_schema_id_is_a_poison_message_asked_once(schema_registry):
    client = RegistryClient(schema_registry.url)
    fmt = make_format("avro", {}, Settings(schema_registry_url=schema_registry.url))
    fmt.client = client
    for _ in range(3):
        with pytest.raises(DecodeError, match=rf"^schema id 987654 not found in the schema registry at "
                                              rf"{schema_registry.url}$"):
            fmt.decode(frame(987654, b"\x02x"), MSG)
    assert client.requests == 1


def test_registry_outage_blocks_then_decodes_logged_once(schema_registry, unique, caplog):
    """A paused registry (SIGSTOP: connections hang, as a registry that is down or unreachable) is waited for:
    the decode blocks, nothing is skipped, one warning per outage and one line when it is over."""
    sid = register(schema_registry.url, f"outage-{unique}-value", {**TWEET_V1, "name": f"T{unique}"})
    client = RegistryClient(schema_registry.url, timeout=0.5, max_backoff=0.5)
    value = frame(sid, avro_bytes(TWEET_V1, {"id": "1", "text": "waited for", "created_at": 3}))
    fmt = make_format("avro", {}, Settings(schema_registry_url=schema_registry.url))
    fmt.client = client
    out = []
    caplog.set_level(logging.WARNING, logger="streamsense.streams.inputs.registry")
    schema_registry.pause()
    try:
        thread = threading.Thread(target=lambda: out.append(fmt.decode(value, MSG)))
        thread.start()
        thread.join(4.0)
        assert thread.is_alive() and not out  # still waiting, not skipped
    finally:
        schema_registry.resume()
    thread.join(30)
    assert out == [{"id": "1", "text": "waited for", "created_at": 3}]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("does not answer" in line for line in lines) == 1, lines
    assert sum("answers again" in line for line in lines) == 1, lines
    assert schema_registry.url in lines[0] and f"schema id {sid}" in lines[0]


def test_a_stop_ends_the_wait_for_a_registry_that_is_down():
    stop = threading.Event()
    client = RegistryClient("http://127.0.0.1:9", timeout=0.5, stop=stop)  # the discard port: refused
    threading.Timer(0.8, stop.set).start()
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable,
                       match=r"stopped while waiting for the schema registry at .* \(schema id 5\)"):
        client.schema(5)
    assert time.monotonic() - started < 3.0


FEEDBACK_V1 = {"type": "record", "name": "Feedback", "namespace": "shop", "fields": [
    {"name": "feedback_id", "type": "long"}, {"name": "comment", "type": "string"},
    {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [{"name": "id", "type": "string"}]}},
    {"name": "submitted_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
FEEDBACK_V2 = {**FEEDBACK_V1, "fields": [*FEEDBACK_V1["fields"],
                                         {"name": "channel", "type": ["null", "string"], "default": None}]}
DOCS_DECLARATION = """
[[input]]
topic = "orders-feedback"
kind = "post"
format = "avro"
[input.fields]
id = "feedback_id"
text = "comment"
author = "customer.id"
created_at = "submitted_at"
channel = ["channel", { const = "shop" }]
"""


def test_the_worked_avro_declaration_of_the_docs(schema_registry, unique, tmp_path):
    """docs/inputs.md's Avro example, both schema versions, read through the declaration as the worker reads it."""
    from datetime import datetime, timezone

    from streamsense.streams.inputs.declare import load_inputs

    subject = f"orders-feedback-{unique}-value"
    v1, v2 = (register(schema_registry.url, subject, s) for s in (FEEDBACK_V1, FEEDBACK_V2))
    path = tmp_path / "inputs.toml"
    path.write_text(DOCS_DECLARATION)
    reader = load_inputs(Settings(inputs=path, schema_registry_url=schema_registry.url))["orders-feedback"]
    when = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    base = {"feedback_id": 981, "comment": "The parcel arrived broken", "customer": {"id": "c-17"},
            "submitted_at": when}
    old = reader.read(Incoming("orders-feedback", 0, 1, None, frame(v1, avro_bytes(FEEDBACK_V1, base)), None))
    new = reader.read(Incoming("orders-feedback", 0, 2, None,
                               frame(v2, avro_bytes(FEEDBACK_V2, {**base, "channel": "web"})), None))
    assert (old.id, old.text, old.author, old.channel, old.created_at) == ("981", base["comment"], "c-17", "shop", when)
    assert (new.id, new.channel) == ("981", "web")


PREDICTION = {"id": "p1", "kind": "post",
              "sentiment": {"label": "negative", "scores": {"negative": 0.9, "positive": 0.1}},
              "risk": {"level": "high", "score": 0.8, "labels": {"complaint": 0.7}, "signals": ["refund"],
                       "explanation": "refund request"}, "truncated": False, "lang": "en", "lang_declared": None,
              "supported": True, "model_version": "m:1", "source": {"topic": "t", "partition": 1, "offset": 9}}
ALERT = {"id": "a1", "rule": "high_risk", "severity": "high", "key": "post:p1",
         "window": {"start": "2026-12-06T10:00:00+00:00", "end": None}, "summary": "post p1: refund",
         "evidence": [{"message_id": "p1", "reasons": [{"rule": "high_risk"}]}], "model_version": "m:1",
         "created_at": "2026-12-06T10:00:01+00:00"}


def fetch_schema(url: str, schema_id: int) -> dict:
    with urllib.request.urlopen(f"{url}/schemas/ids/{schema_id}") as response:
        return json.loads(response.read())


def test_outputs_in_the_registry_formats_decode_with_the_registered_schemas(schema_registry, unique):
    """What a consumer of the predictions and alerts topics does: the schema fetched by the id in each value."""
    import jsonschema
    from fastavro import schemaless_reader

    from streamsense.streams.outputs import JSON_OUTPUT, output_format

    url = schema_registry.url
    topics = dict(topic_predictions=f"predictions-{unique}", topic_alerts=f"alerts-{unique}")
    avro = output_format(Settings(schema_registry_url=url, output_format="avro", **topics))
    for value, encoded in ((PREDICTION, avro.prediction(PREDICTION)), (ALERT, avro.alert(ALERT))):
        schema_id, payload = split(encoded)
        schema = parse_schema(json.loads(fetch_schema(url, schema_id)["schema"]))
        decoded = schemaless_reader(io.BytesIO(payload), schema, None)
        if "evidence" in value:  # free-form per rule: JSON text in Avro
            decoded["evidence"] = json.loads(decoded["evidence"])
        assert decoded == value
    with urllib.request.urlopen(f"{url}/subjects/predictions-{unique}-value/versions") as response:
        assert json.loads(response.read()) == [1]
    again = output_format(Settings(schema_registry_url=url, output_format="avro", **topics))
    assert (again.prediction_id, again.alert_id) == (avro.prediction_id, avro.alert_id)  # a restart: same ids

    js = output_format(Settings(schema_registry_url=url, output_format="json_schema",
                                topic_predictions=f"predictions-js-{unique}", topic_alerts=f"alerts-js-{unique}"))
    for value, encoded in ((PREDICTION, js.prediction(PREDICTION)), (ALERT, js.alert(ALERT))):
        schema_id, payload = split(encoded)
        answer = fetch_schema(url, schema_id)
        assert answer["schemaType"] == "JSON"
        decoded = json.loads(bytes(payload))
        jsonschema.validate(decoded, json.loads(answer["schema"]))
        assert decoded == value
    assert JSON_OUTPUT.prediction(PREDICTION) == json.dumps(PREDICTION, separators=(",", ":")).encode()


def test_an_output_format_without_a_registry_is_two_lines(tmp_path):
    from typer.testing import CliRunner

    from streamsense.cli import app

    db = tmp_path / "never.db"
    result = CliRunner().invoke(app, ["worker"], env={"STREAMSENSE_OUTPUT_FORMAT": "avro",
                                                      "STREAMSENSE_SCHEMA_REGISTRY_URL": "",
                                                      "STREAMSENSE_DATABASE_URL": f"sqlite:///{db}"})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-2:] == [
        "error: STREAMSENSE_OUTPUT_FORMAT=avro needs a schema registry and none is configured",
        "  set STREAMSENSE_SCHEMA_REGISTRY_URL, or STREAMSENSE_OUTPUT_FORMAT=json"]
    assert not db.exists()  # refused before anything was touched


def test_basic_auth_and_refusals_of_a_registry_are_waited_for_not_dead_lettered():
    """A registry asking for credentials: the client sends them; one answering 401 (wrong credentials) or 503 is
    waited for (the message is not at fault), then read once it answers."""
    import base64
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = ["503", "401"]  # then the schema
    seen = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            status = answers.pop(0) if answers else "200"
            body = {"schema": json.dumps(TWEET_V1)} if status == "200" else {"error_code": int(status) * 100}
            self.send_response(int(status))
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RegistryClient(f"http://127.0.0.1:{server.server_port}", "ann", "s3cret", max_backoff=0.5)
        value = frame(11, avro_bytes(TWEET_V1, {"id": "1", "text": "after two refusals", "created_at": 2}))
        fmt = make_format("avro", {}, Settings(schema_registry_url=f"http://127.0.0.1:{server.server_port}"))
        fmt.client = client
        assert fmt.decode(value, MSG)["text"] == "after two refusals"
        assert seen == ["Basic " + base64.b64encode(b"ann:s3cret").decode()] * 3
    finally:
        server.shutdown()


def test_a_url_that_is_not_a_registry_api_is_waited_for_not_dead_lettered(schema_registry, caplog):
    """Apicurio's root instead of its /apis/ccompat/v7: a 404 without a registry's error code is a configuration
    problem, not a missing schema; the wait says what to check (and a stop ends it)."""
    root = schema_registry.url.removesuffix("/apis/ccompat/v7")
    stop = threading.Event()
    client = RegistryClient(root, stop=stop)
    threading.Timer(1.0, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="streamsense.streams.inputs.registry"):
        with pytest.raises(RegistryUnavailable):
            client.schema(1)
    assert client.requests >= 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "HTTP 404 without a registry's error code" in line and "Apicurio's is .../apis/ccompat/v7" in line
