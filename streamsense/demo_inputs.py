"""`streamsense demo --inputs`: topics in shapes of other systems (Twitter API v2, stored tweets, Debezium change
events of a helpdesk table; Avro and Protobuf through a schema registry where one is at hand), made from the bundled
samples and declared in one inputs file beside the demo's database, so the demo shows them classified next to the
built-in topics."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from streamsense.settings import Settings

_DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
PER_TOPIC = 12  # sample records re-shaped per foreign topic


@dataclass(frozen=True)
class DemoTopic:
    """One foreign-shape topic of the demo: its declaration (an [[input]] table) and the messages produced to it."""

    topic: str
    shape: str  # a few words for the summary
    declaration: str
    messages: list[bytes]
    skipped: int = 0  # messages the declaration passes over (Debezium deletes)
    malformed: int = 0  # messages that must be dead-lettered, with the reason naming the path


def twitter_time(iso: str) -> str:
    """RFC 3339 → Twitter's `Wed Oct 10 20:19:24 +0000 2018` (locale-independent)."""
    at = datetime.fromisoformat(iso)
    zone = at.strftime("%z") or "+0000"
    return f"{_DAYS[at.weekday()]} {_MONTHS[at.month - 1]} {at.day:02d} {at:%H:%M:%S} {zone} {at.year}"


def twitter_v2(posts: list[dict], settings: Settings) -> DemoTopic:
    topic = "demo-tweets-v2"
    messages = [json.dumps({"data": {"id": f"v2-{p['id']}", "text": p["text"], "author_id": p.get("author"),
                                     "lang": p.get("lang"), "created_at": p.get("created_at")},
                            "includes": {"users": [{"username": p.get("channel")}]}}).encode() for p in posts]
    messages.append(json.dumps({"data": {"id": "v2-no-text", "edit_history_tweet_ids": ["1"]}}).encode())
    return DemoTopic(topic, "Twitter API v2 {data: {id, text}}", f"""
[[input]]
topic = "{topic}"
kind = "post"
[input.fields]
id = "data.id"
text = "data.text"
author = "data.author_id"
lang = "data.lang"
created_at = "data.created_at"
channel = "includes.users.0.username"
""", messages, malformed=1)


def stored_tweets(posts: list[dict], settings: Settings) -> DemoTopic:
    topic = "demo-stored-tweets"
    messages = []
    for i, p in enumerate(posts):
        tweet = {"id": 1_000_000 + i, "id_str": f"st-{p['id']}", "user": {"screen_name": p.get("channel")},
                 "created_at": twitter_time(p["created_at"]), "lang": p.get("lang")}
        if i % 2:  # an extended tweet: the full text is in extended_tweet, `text` is cut
            tweet.update(text=p["text"][:40] + "…", truncated=True, extended_tweet={"full_text": p["text"]})
        else:
            tweet["full_text"] = p["text"]
        messages.append(json.dumps(tweet).encode())
    return DemoTopic(topic, "stored tweets (id_str, full_text, Twitter times)", f"""
[[input]]
topic = "{topic}"
kind = "post"
[input.fields]
id = "id_str"
text = ["extended_tweet.full_text", "full_text", "text"]
channel = "user.screen_name"
lang = "lang"
created_at = "created_at"
""", messages)


def debezium_tickets(tickets: list[dict], settings: Settings) -> DemoTopic:
    topic = "demo-helpdesk.public.tickets"
    messages = []
    for i, t in enumerate(tickets):
        row = {"id": 7000 + i, "subject": t.get("subject") or None, "description": t["body"],
               "customer_id": t.get("customer_id"), "product": t.get("product"), "priority": t.get("priority")}
        messages.append(json.dumps({"schema": {"type": "struct", "name": "helpdesk.public.tickets.Envelope"},
                                    "payload": {"before": None, "after": row, "op": "c" if i else "r",
                                                "ts_ms": 1_793_000_000_000 + i * 1000}}).encode())
    for i in range(2):  # two deletes: skipped and counted, never classified
        messages.append(json.dumps({"schema": {}, "payload": {"before": {"id": 7000 + i}, "after": None,
                                                              "op": "d"}}).encode())
    messages.append(json.dumps({"payload": {"after": {"id": 7999, "subject": "no description"},
                                            "op": "u"}}).encode())
    return DemoTopic(topic, "Debezium change events (payload.after; deletes)", f"""
[[input]]
topic = "{topic}"
kind = "ticket"
envelope = "debezium"
[input.fields]
id = "id"
subject = "subject"
body = "description"
customer_id = "customer_id"
product = "product"
priority = "priority"
created_at = "@envelope.ts_ms"
""", messages, skipped=2, malformed=1)


AVRO_POST = {"type": "record", "name": "Review", "namespace": "demo.shop", "fields": [
    {"name": "review_id", "type": "long"}, {"name": "body", "type": "string"},
    {"name": "reviewer", "type": ["null", "string"], "default": None},
    {"name": "posted_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}


def avro_posts(posts: list[dict], settings: Settings) -> DemoTopic | None:
    """Posts as Avro in the Confluent wire format, their schema registered in the schema registry (None without
    one); one message that is not in the wire format shows its dead letter."""
    if not settings.schema_registry_url:
        return None
    import io

    from fastavro import parse_schema, schemaless_writer

    from streamsense.streams.inputs.registry import RegistryClient, frame

    topic = "demo-avro-reviews"
    schema_id = RegistryClient.from_settings(settings).register(f"{topic}-value", json.dumps(AVRO_POST))
    parsed, messages = parse_schema(AVRO_POST), []
    for i, p in enumerate(posts):
        out = io.BytesIO()
        schemaless_writer(out, parsed, {"review_id": 50_000 + i, "body": p["text"], "reviewer": p.get("author"),
                                        "posted_at": datetime.fromisoformat(p["created_at"])})
        messages.append(frame(schema_id, out.getvalue()))
    messages.append(json.dumps({"review_id": 1, "body": "JSON on an Avro topic"}).encode())
    return DemoTopic(topic, f"Avro, schema id {schema_id} in the schema registry", f"""
[[input]]
topic = "{topic}"
kind = "post"
format = "avro"
[input.fields]
id = "review_id"
text = "body"
author = "reviewer"
created_at = "posted_at"
channel = {{ const = "shop-reviews" }}
""", messages, malformed=1)


PROTOBUF_POST = """syntax = "proto3";
package demo.shop;
import "google/protobuf/timestamp.proto";

message Review {
  int64 review_id = 1;
  string body = 2;
  optional string reviewer = 3;
  google.protobuf.Timestamp posted_at = 4;
}
"""


def protobuf_posts(posts: list[dict], settings: Settings) -> DemoTopic | None:
    """Posts as Protobuf in the Confluent wire format, their .proto registered in the schema registry (None without
    one, or without the optional .proto parser); one message whose indexes name no message type shows its dead
    letter."""
    if not settings.schema_registry_url:
        return None
    try:
        from streamsense.streams.inputs.protobuf import ProtobufSchema, encode_indexes
    except ImportError:
        return None
    from streamsense.streams.inputs.registry import RegistryClient, frame

    topic = "demo-protobuf-reviews"
    client = RegistryClient.from_settings(settings)
    schema_id = client.register(f"{topic}-value", PROTOBUF_POST, "PROTOBUF")
    review, messages = ProtobufSchema(client.schema(schema_id), client).message_class((0,)), []
    for i, p in enumerate(posts):
        message = review(review_id=60_000 + i, body=p["text"])
        if p.get("author"):
            message.reviewer = p["author"]
        message.posted_at.FromDatetime(datetime.fromisoformat(p["created_at"]))
        messages.append(frame(schema_id, encode_indexes([0]) + message.SerializeToString()))
    messages.append(frame(schema_id, encode_indexes([3]) + b"\x08\x01"))  # message type 3: the .proto has one
    return DemoTopic(topic, f"Protobuf, schema id {schema_id} in the schema registry", f"""
[[input]]
topic = "{topic}"
kind = "post"
format = "protobuf"
[input.fields]
id = "review_id"
text = "body"
author = "reviewer"
created_at = "posted_at"
channel = {{ const = "shop-reviews" }}
""", messages, malformed=1)


#: what makes the demo's foreign topics: (sample posts, sample tickets, settings) → a DemoTopic, or None where what
#: it needs is not there (a schema registry's topic, without one). Append to add a shape.
FOREIGN: list[Callable[[list[dict], list[dict], Settings], DemoTopic | None]] = [
    lambda posts, tickets, settings: twitter_v2(posts[:PER_TOPIC], settings),
    lambda posts, tickets, settings: stored_tweets(posts[PER_TOPIC:2 * PER_TOPIC], settings),
    lambda posts, tickets, settings: debezium_tickets(tickets[:PER_TOPIC], settings),
    lambda posts, tickets, settings: avro_posts(posts[2 * PER_TOPIC:3 * PER_TOPIC], settings),
    lambda posts, tickets, settings: protobuf_posts(posts[3 * PER_TOPIC:4 * PER_TOPIC], settings),
]


def foreign_topics(samples: Path, settings: Settings) -> list[DemoTopic]:
    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (samples / name).read_text(encoding="utf-8").splitlines() if line]

    posts, tickets = read("posts.jsonl"), read("tickets.jsonl")
    return [t for make in FOREIGN if (t := make(posts, tickets, settings)) is not None]


def write_declaration(path: Path, settings: Settings, topics: list[DemoTopic]) -> Path:
    """The demo's inputs file: the built-in posts and tickets topics, then each foreign topic."""
    builtin = (f'[[input]]\ntopic = "{settings.topic_posts}"\nkind = "post"\n\n'
               f'[[input]]\ntopic = "{settings.topic_tickets}"\nkind = "ticket"\n')
    path.write_text(builtin + "".join(t.declaration for t in topics), encoding="utf-8")
    return path
