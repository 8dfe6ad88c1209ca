"""End to end, Protobuf through a real schema registry (Apicurio, in memory) on both brokers: a .proto that imports
another subject (a reference) and a well-known type registered, Confluent-framed messages of a nested message type
(message indexes [1]) produced, a worker process reads them through a declared inputs file and stores the mapped
text and its results; bad messages (indexes naming no type, a payload that does not parse, not the wire format, a
mapped path that is missing) are dead-lettered once each with their reason, and the worker keeps going."""

from datetime import datetime, timezone

from streamsense.streams.inputs.protobuf import ProtobufSchema, encode_indexes
from streamsense.streams.inputs.registry import RegistryClient, frame
from streamsense.streams.schema import dead_letters, predictions
from streamsense.streams.store import Store
from tests.helpers import consume_all, produce, settings_for, wait_until, worker

PERSON = 'syntax = "proto3";\npackage people;\nmessage Person { string name = 1; int64 followers = 2; }\n'
REVIEWS = """syntax = "proto3";
package shop;
import "people/person.proto";
import "google/protobuf/timestamp.proto";

message Heartbeat { int64 at = 1; }
message Review {
  string review_id = 1;
  Body body = 2;
  people.Person author = 3;
  google.protobuf.Timestamp created_at = 4;
  message Body { string text = 1; string lang = 2; }
}
"""

DECLARATION = """
[[input]]
topic = "pb-{u}"
kind = "post"
format = "protobuf"
[input.fields]
id = "review_id"
text = "body.text"
lang = "body.lang"
author = "author.name"
created_at = "created_at"
"""


def test_protobuf_topic_through_the_registry(broker, schema_registry, unique, tmp_path):
    registry = RegistryClient(schema_registry.url)
    registry.register(f"people-{unique}", PERSON, "PROTOBUF")
    refs = [{"name": "people/person.proto", "subject": f"people-{unique}", "version": 1}]
    schema_id = registry.register(f"pb-{unique}-value", REVIEWS, "PROTOBUF", refs)
    # the producer's classes, built from the same registered text (the unit tests check them against a hand-made
    # encoder); the worker builds its own from the registry
    classes = ProtobufSchema(registry.schema(schema_id), registry)
    Review = classes.message_class((1,))

    def review(i: int, text: str, **extra) -> bytes:
        message = Review(review_id=f"r{i}", **extra)
        if text:
            message.body.text, message.body.lang = text, "en"
        message.author.name = f"user{i % 3}"
        message.created_at.FromSeconds(1_700_000_000 + i)
        return frame(schema_id, encode_indexes([1]) + message.SerializeToString())

    good = [review(i, f"the seat was broken on flight {i}") for i in range(20)]
    no_type = frame(schema_id, encode_indexes([7]) + Review(review_id="x1").SerializeToString())
    corrupt = frame(schema_id, encode_indexes([1]) + b"\x0a\x40short")
    not_wire = b'{"review_id": "j1"}'
    no_text = review(99, "")

    path = tmp_path / "inputs.toml"
    path.write_text(DECLARATION.format(u=unique))
    database_url = f"sqlite:///{tmp_path / 'protobuf.db'}"
    settings = settings_for(broker.bootstrap_servers, database_url, unique, inputs=path,
                            schema_registry_url=schema_registry.url, schema_registry_timeout=2.0)
    store = Store(database_url, settings.app_id)
    store.migrate()

    def processed() -> int:
        return store.count(predictions) + store.count(dead_letters)

    with worker(settings, tmp_path, loglevel="warning") as process:
        produce(settings, f"pb-{unique}", [*good[:10], no_type, corrupt, *good[10:], not_wire, no_text])
        wait_until(lambda: processed() >= 24, 180, what="the Protobuf messages processed")
        assert process.poll() is None  # the worker kept going
        with store.engine.connect() as conn:
            rows = conn.execute(predictions.select()).all()
            dead = conn.execute(dead_letters.select()).all()
        letters = consume_all(settings, settings.topic_dead_letter, 5, timeout=10)

    assert sorted(r.message_id for r in rows) == sorted(f"r{i}" for i in range(20))  # 0 lost, 0 duplicated
    by_id = {r.message_id: r for r in rows}
    assert by_id["r4"].text == "the seat was broken on flight 4" and by_id["r4"].author == "user1"
    assert by_id["r4"].lang_declared == "en"
    created = by_id["r4"].created_at
    assert created.replace(tzinfo=created.tzinfo or timezone.utc) == datetime.fromtimestamp(1_700_000_004,
                                                                                             timezone.utc)
    assert all(r.sentiment and r.risk_level for r in rows)
    topic = f"pb-{unique}"
    reasons = sorted(d.error for d in dead)
    assert all(d.source_topic == topic for d in dead)
    corrupt_reason = [r for r in reasons if r.startswith("invalid Protobuf value")]
    assert len(corrupt_reason) == 1 and corrupt_reason[0].startswith(
        f"invalid Protobuf value for schema id {schema_id} (shop.Review: ")  # the rest is the protobuf library's
    assert sorted(set(reasons) - set(corrupt_reason)) == sorted([
        f"Protobuf message indexes [7] name no message type of schema id {schema_id} (at index 7: 2 messages there)",
        "not in the schema registry's wire format: first byte 0x7b, not the magic byte 0x00",
        "mapping: text: body.text is not present",
    ])
    assert len(letters) == 4  # each once


def test_bench_load_run_with_a_protobuf_topic(schema_registry, tmp_path):
    """`bench --load --inputs protobuf`: the posts in Protobuf through the registry, every message counted."""
    from streamsense.bench import run_load
    from streamsense.settings import Settings

    settings = Settings(batch_size=32, topic_partitions=2, null_model=True, schema_registry_url=schema_registry.url)
    result = run_load(settings, 300, tmp_path / "protobuf.db", timeout=180, shape="protobuf")
    assert result["inputs"] == "protobuf"
    assert (result["lost"], result["duplicated"], result["offset_gaps"]) == (0, 0, 0)
    assert sum(p["handled"] for p in result["partitions"].values()) == 301  # the warm-up message too
    assert result["stage_us_per_msg"]["decode"] > 0


def test_the_demo_protobuf_topic_reads_through_its_declaration(schema_registry, tmp_path):
    """`demo --inputs`' Protobuf topic (made where a registry is at hand): every sample post read back through its
    own declaration as the worker reads it, the one bad message with its reason."""
    import json

    from streamsense.demo import SAMPLES
    from streamsense.settings import Settings
    from streamsense.streams.contracts import Incoming
    from streamsense.streams.inputs.declare import load_inputs
    from streamsense.streams.records import DecodeError
    from streamsense.demo_inputs import protobuf_posts

    settings = Settings(schema_registry_url=schema_registry.url)
    posts = [json.loads(line) for line in (SAMPLES / "posts.jsonl").read_text().splitlines()[36:48]]
    topic = protobuf_posts(posts, settings)
    path = tmp_path / "inputs.toml"
    path.write_text(topic.declaration)
    reader = load_inputs(Settings(inputs=path, schema_registry_url=schema_registry.url))[topic.topic]
    records, reasons = [], []
    for offset, value in enumerate(topic.messages):
        try:
            records.append(reader.read(Incoming(topic.topic, 0, offset, None, value, None)))
        except DecodeError as exc:
            reasons.append(str(exc))
    assert [r.text for r in records] == [p["text"] for p in posts]
    assert [r.created_at for r in records] == [datetime.fromisoformat(p["created_at"]) for p in posts]
    assert [r.author for r in records] == [p.get("author") for p in posts]
    assert len(reasons) == topic.malformed == 1 and "name no message type" in reasons[0]
