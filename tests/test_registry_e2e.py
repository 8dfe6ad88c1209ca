"""End to end through a real schema registry (Apicurio, in memory) on both brokers: an Avro topic written with two
versions of its subject, and a JSON-Schema topic, declared in an inputs file and classified by a worker process whose
predictions go out in Avro; then the registry paused for 30 s mid-stream (SIGSTOP: a registry that is down) while
messages of a schema id the worker has not fetched yet arrive, an unknown schema id, and values that are not in the
wire format. 0 lost, 0 duplicated, each bad message dead-lettered once with its reason, the worker still running."""

import io
import json
import time
import urllib.request

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamsense.streams.inputs.registry import RegistryClient, frame, split
from streamsense.streams.schema import dead_letters, predictions
from streamsense.streams.store import Store
from tests.helpers import consume_all, produce, settings_for, wait_until, worker

OUTAGE = 30.0  # seconds the registry is paused mid-stream

TWEET_V1 = {"type": "record", "name": "Tweet", "namespace": "e2e", "fields": [
    {"name": "id", "type": "string"}, {"name": "text", "type": "string"}, {"name": "created_at", "type": "long"}]}
TWEET_V2 = {**TWEET_V1, "fields": [*TWEET_V1["fields"],
                                   {"name": "author", "type": ["null", "string"], "default": None}]}
TWEET_V3 = {**TWEET_V2, "fields": [*TWEET_V2["fields"], {"name": "lang", "type": ["null", "string"], "default": None}]}
TICKET_JSON = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": ["id", "subject"],
               "properties": {"id": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}}}

DECLARATION = """
[[input]]
topic = "avro-{u}"
kind = "post"
format = "avro"
[input.fields]
id = "id"
text = "text"
author = "author"
created_at = "created_at"

[[input]]
topic = "js-{u}"
kind = "ticket"
format = "json_schema"
[input.fields]
id = "id"
subject = "subject"
body = "body"
"""


def avro(schema_id: int, schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    return frame(schema_id, out.getvalue())


def test_avro_and_json_schema_topics_through_the_registry_with_an_outage(broker, schema_registry, unique, tmp_path):
    registry = RegistryClient(schema_registry.url)
    subject = f"avro-{unique}-value"
    v1, v2 = registry.register(subject, json.dumps(TWEET_V1)), registry.register(subject, json.dumps(TWEET_V2))
    js = registry.register(f"js-{unique}-value", json.dumps(TICKET_JSON), "JSON")
    path = tmp_path / "inputs.toml"
    path.write_text(DECLARATION.format(u=unique))
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    settings = settings_for(broker.bootstrap_servers, database_url, unique, inputs=path,
                            schema_registry_url=schema_registry.url, schema_registry_timeout=2.0, output_format="avro")
    store = Store(database_url, settings.app_id)
    store.migrate()
    old = [avro(v1, TWEET_V1, {"id": f"a{i}", "text": f"my bag is lost again {i}", "created_at": 1_700_000_000_000})
           for i in range(12)]
    new = [avro(v2, TWEET_V2, {"id": f"b{i}", "text": f"the flight was great {i}", "created_at": 1_700_000_000_000,
                               "author": "bo"}) for i in range(12)]
    tickets = [frame(js, json.dumps({"id": f"t{i}", "subject": "refund", "body": f"charged twice {i}"}).encode())
               for i in range(10)]
    unknown_id = frame(987_654, b"\x04a1\x04hi\x02")
    not_wire = json.dumps({"id": "j1", "text": "plain JSON on an Avro topic"}).encode()
    wrong_magic = b"\x01" + tickets[0][1:]
    log_path = tmp_path / "worker.log"

    def processed() -> int:
        return store.count(predictions) + store.count(dead_letters)

    with worker(settings, tmp_path, loglevel="warning") as process:
        produce(settings, f"avro-{unique}", [*old[:6], *new[:6], unknown_id, *old[6:], not_wire, *new[6:]])
        produce(settings, f"js-{unique}", [*tickets[:5], wrong_magic, *tickets[5:]])
        wait_until(lambda: processed() >= 24 + 10 + 3, 180, what="the first messages processed")
        # mid-stream: a third version the worker has not fetched, written while the registry is down
        v3 = registry.register(subject, json.dumps(TWEET_V3))
        late = [avro(v3, TWEET_V3, {"id": f"c{i}", "text": f"still waiting at the gate {i}",
                                    "created_at": 1_700_000_000_000, "author": None, "lang": "en"}) for i in range(8)]
        schema_registry.pause()
        try:
            produce(settings, f"avro-{unique}", late)
            paused_at = time.monotonic()
            time.sleep(OUTAGE)
            assert processed() == 24 + 10 + 3  # waiting: nothing of the late messages skipped or dead-lettered
        finally:
            schema_registry.resume()
        wait_until(lambda: processed() >= 24 + 10 + 3 + 8, 120, what="the late messages processed")
        recovered = time.monotonic() - paused_at - OUTAGE
        assert process.poll() is None  # the worker kept going
        with store.engine.connect() as conn:
            rows = conn.execute(predictions.select()).all()
            dead = conn.execute(dead_letters.select()).all()
        out = consume_all(settings, settings.topic_predictions, len(rows), timeout=30)
    print(f"registry outage {OUTAGE:.0f} s: the late messages were stored {recovered:.1f} s after it ended")

    ids = lambda topic: sorted(r.message_id for r in rows if r.source_topic == topic)  # noqa: E731
    assert ids(f"avro-{unique}") == sorted([f"a{i}" for i in range(12)] + [f"b{i}" for i in range(12)]
                                           + [f"c{i}" for i in range(8)])  # 0 lost, 0 duplicated, both versions
    assert ids(f"js-{unique}") == sorted(f"t{i}" for i in range(10))
    by_id = {r.message_id: r for r in rows}
    assert (by_id["a0"].author, by_id["b0"].author, by_id["c0"].author) == (None, "bo", None)
    assert by_id["t3"].kind == "ticket" and by_id["t3"].text.startswith("refund")
    reasons = sorted((d.source_topic, d.error) for d in dead)
    url = schema_registry.url
    assert reasons == sorted([
        (f"avro-{unique}", f"schema id 987654 not found in the schema registry at {url}"),
        (f"avro-{unique}", "not in the schema registry's wire format: first byte 0x7b, not the magic byte 0x00"),
        (f"js-{unique}", "not in the schema registry's wire format: first byte 0x01, not the magic byte 0x00"),
    ])
    letters = consume_all(settings, settings.topic_dead_letter, 4, timeout=10)
    assert len(letters) == 3  # each once

    # the predictions topic in Avro: each value's schema fetched from the registry by its id, as a consumer would
    assert len(out) == len(rows)
    schemas = {}
    decoded = []
    for message in out:
        schema_id, payload = split(message.value)
        if schema_id not in schemas:
            with urllib.request.urlopen(f"{url}/schemas/ids/{schema_id}") as response:
                schemas[schema_id] = parse_schema(json.loads(json.loads(response.read())["schema"]))
        decoded.append(schemaless_reader(io.BytesIO(payload), schemas[schema_id], None))
    assert sorted(d["id"] for d in decoded) == sorted(r.message_id for r in rows)
    assert len(schemas) == 1
    first = next(d for d in decoded if d["id"] == "b0")
    assert first["kind"] == "post" and first["source"]["topic"] == f"avro-{unique}"
    assert first["sentiment"]["label"] == by_id["b0"].sentiment and first["risk"]["level"] == by_id["b0"].risk_level

    log = log_path.read_text()
    assert log.count("does not answer") == 1 and log.count("answers again") == 1, log[-3000:]


def test_bench_load_run_with_an_avro_topic(schema_registry, tmp_path):
    """`bench --load --inputs avro`: the posts in Avro through the registry, every message counted, decode timed."""
    from streamsense.bench import run_load
    from streamsense.settings import Settings

    settings = Settings(batch_size=32, topic_partitions=2, null_model=True, schema_registry_url=schema_registry.url)
    result = run_load(settings, 300, tmp_path / "avro.db", timeout=180, shape="avro")
    assert result["inputs"] == "avro"
    assert (result["lost"], result["duplicated"], result["offset_gaps"]) == (0, 0, 0)
    assert sum(p["handled"] for p in result["partitions"].values()) == 301  # the warm-up message too
    assert result["stage_us_per_msg"]["decode"] > 0
