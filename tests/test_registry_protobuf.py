"""Protobuf values in the schema registry's wire format (streams/inputs/protobuf.py): the message indexes, values
written by an independent encoder (message classes built from hand-made FileDescriptorProtos with the official
protobuf library, not from the .proto text) read back through the .proto text, imports (references and well-known
types), errors as one-line reasons, hostile values, and against a real registry (Apicurio, its Confluent API)."""

import base64
import sys

import pytest
from google.protobuf import (descriptor_pb2, descriptor_pool, duration_pb2, message_factory, struct_pb2,
                             timestamp_pb2, wrappers_pb2, any_pb2)
from hypothesis import given, settings as hsettings, strategies as st

from streamsense.settings import Settings
from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs import formats
from streamsense.streams.inputs.formats import FormatConfigError, NoRegistry, make_format
from streamsense.streams.inputs.protobuf import ProtobufSchema, encode_indexes, message_indexes
from streamsense.streams.inputs.registry import RegisteredSchema, RegistryClient, frame
from streamsense.streams.records import DecodeError

MSG = Incoming("reviews", 0, 3, None, b"", None)
F = descriptor_pb2.FieldDescriptorProto

REVIEW_PROTO = """
syntax = "proto3";
package shop.v1;

import "google/protobuf/timestamp.proto";

// a product review, as a shop's service writes it
message Review {
  string id = 1;
  string text = 2;
  int64 likes = 3;
  uint64 views = 4;
  sint32 delta = 5;
  fixed64 f64 = 6;
  sfixed32 sf32 = 7;
  double score = 8;
  float weight = 9;
  bool verified = 10;
  bytes blob = 11;
  int32 i32 = 12;
  uint32 u32 = 13;
  sint64 s64 = 14;
  fixed32 f32 = 15;
  sfixed64 sf64 = 16;
  Status status = 17;
  repeated string tags = 18;
  repeated int64 counts = 19;
  map<string, int32> votes = 20;
  map<int64, Author> by_id = 21;
  Author author = 22;
  oneof channel {
    string web = 23;
    int32 store = 24;
  }
  google.protobuf.Timestamp created_at = 25;
  optional int32 rating = 26;

  enum Status {
    STATUS_UNKNOWN = 0;
    PUBLISHED = 1;
    HIDDEN = 2;
  }
  message Author {
    string name = 1;
    repeated Status seen = 2;
  }
}

message Envelope {
  message Inner {
    enum Kind { K0 = 0; }   // an enum: not counted by the message indexes
    message Deep { string text = 1; }
  }
  Review review = 1;
}
"""


# --- an independent encoder: the same types built by hand, as protoc would describe them ----------------------------

def fld(name, number, type_=None, type_name=None, label=F.LABEL_OPTIONAL, **extra):
    out = F(name=name, number=number, label=label, **extra)
    if type_ is not None:
        out.type = type_
    if type_name is not None:
        out.type = F.TYPE_ENUM if type_name.endswith(("Status", "Priority")) else F.TYPE_MESSAGE
        out.type_name = type_name
    return out


def entry(name, key, value):
    message = descriptor_pb2.DescriptorProto(name=name, field=[key, value])
    message.options.map_entry = True
    return message


def hand_made_review_file() -> descriptor_pb2.FileDescriptorProto:
    status = descriptor_pb2.EnumDescriptorProto(name="Status", value=[
        descriptor_pb2.EnumValueDescriptorProto(name=n, number=i)
        for i, n in enumerate(("STATUS_UNKNOWN", "PUBLISHED", "HIDDEN"))])
    author = descriptor_pb2.DescriptorProto(name="Author", field=[
        fld("name", 1, F.TYPE_STRING),
        fld("seen", 2, type_name=".shop.v1.Review.Status", label=F.LABEL_REPEATED)])
    scalars = [("id", F.TYPE_STRING), ("text", F.TYPE_STRING), ("likes", F.TYPE_INT64), ("views", F.TYPE_UINT64),
               ("delta", F.TYPE_SINT32), ("f64", F.TYPE_FIXED64), ("sf32", F.TYPE_SFIXED32),
               ("score", F.TYPE_DOUBLE), ("weight", F.TYPE_FLOAT), ("verified", F.TYPE_BOOL),
               ("blob", F.TYPE_BYTES), ("i32", F.TYPE_INT32), ("u32", F.TYPE_UINT32), ("s64", F.TYPE_SINT64),
               ("f32", F.TYPE_FIXED32), ("sf64", F.TYPE_SFIXED64)]
    fields = [fld(name, i + 1, t) for i, (name, t) in enumerate(scalars)]
    fields += [
        fld("status", 17, type_name=".shop.v1.Review.Status"),
        fld("tags", 18, F.TYPE_STRING, label=F.LABEL_REPEATED),
        fld("counts", 19, F.TYPE_INT64, label=F.LABEL_REPEATED),
        fld("votes", 20, type_name=".shop.v1.Review.VotesEntry", label=F.LABEL_REPEATED),
        fld("by_id", 21, type_name=".shop.v1.Review.ByIdEntry", label=F.LABEL_REPEATED),
        fld("author", 22, type_name=".shop.v1.Review.Author"),
        fld("web", 23, F.TYPE_STRING, oneof_index=0),
        fld("store", 24, F.TYPE_INT32, oneof_index=0),
        fld("created_at", 25, type_name=".google.protobuf.Timestamp"),
        fld("rating", 26, F.TYPE_INT32, oneof_index=1, proto3_optional=True),
    ]
    review = descriptor_pb2.DescriptorProto(
        name="Review", field=fields, enum_type=[status],
        # the map entries first: the message indexes count declared messages only, whatever the descriptor's order
        nested_type=[entry("VotesEntry", fld("key", 1, F.TYPE_STRING), fld("value", 2, F.TYPE_INT32)),
                     entry("ByIdEntry", fld("key", 1, F.TYPE_INT64),
                           fld("value", 2, type_name=".shop.v1.Review.Author")),
                     author],
        oneof_decl=[descriptor_pb2.OneofDescriptorProto(name="channel"),
                    descriptor_pb2.OneofDescriptorProto(name="_rating")])
    deep = descriptor_pb2.DescriptorProto(name="Deep", field=[fld("text", 1, F.TYPE_STRING)])
    inner = descriptor_pb2.DescriptorProto(name="Inner", nested_type=[deep])
    envelope = descriptor_pb2.DescriptorProto(name="Envelope", nested_type=[inner],
                                              field=[fld("review", 1, type_name=".shop.v1.Review")])
    return descriptor_pb2.FileDescriptorProto(name="hand/review.proto", package="shop.v1", syntax="proto3",
                                              dependency=["google/protobuf/timestamp.proto"],
                                              message_type=[review, envelope])


def well_known(module) -> descriptor_pb2.FileDescriptorProto:
    out = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(out)
    return out


def independent_classes(*files, well_known_modules=(timestamp_pb2,)):
    pool = descriptor_pool.DescriptorPool()
    for module in well_known_modules:
        pool.Add(well_known(module))
    for file in files:
        pool.Add(file)
    return lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def schema(text: str, schema_id: int = 1, references=(), client=None) -> ProtobufSchema:
    return ProtobufSchema(RegisteredSchema(schema_id, "PROTOBUF", text, tuple(references)), client)


def wire(indexes, message) -> bytes:
    """The payload after the 5-byte header, as the serializer writes it."""
    return encode_indexes(indexes) + message.SerializeToString()


# --- the message indexes --------------------------------------------------------------------------------------------

def test_message_indexes_as_the_serializer_writes_them():
    assert encode_indexes([0]) == b"\x00"  # the first message: one byte, not a count and an index
    assert message_indexes(b"\x00rest") == ((0,), 1)
    assert encode_indexes([1]) == b"\x02\x02"  # count 1 (zig-zag: 2), index 1 (2)
    assert message_indexes(b"\x06\x02\x00\x04payload") == ((1, 0, 2), 4)
    assert message_indexes(encode_indexes([0, 300])) == ((0, 300), 4)  # a two-byte varint
    with pytest.raises(DecodeError, match="a count of 1000 \\(at most 64\\)"):
        message_indexes(encode_indexes(list(range(1000))))
    with pytest.raises(DecodeError, match="a count of -1"):
        message_indexes(b"\x01")
    with pytest.raises(DecodeError, match="a negative index -2"):
        message_indexes(b"\x02\x03")
    for cut in (b"", b"\x80", b"\x04\x02", b"\xff" * 11):
        with pytest.raises(DecodeError, match="truncated Protobuf message indexes"):
            message_indexes(cut)


@given(st.lists(st.integers(0, 2**31), min_size=1, max_size=64))
def test_message_indexes_round_trip(indexes):
    encoded = encode_indexes(indexes)
    assert message_indexes(encoded + b"\x08\x01") == (tuple(indexes), len(encoded))


# --- values from an independent encoder -----------------------------------------------------------------------------

def test_proto3_scalars_nested_enum_repeated_map_oneof_timestamp_from_an_independent_encoder():
    cls = independent_classes(hand_made_review_file())
    Review, Author = cls("shop.v1.Review"), cls("shop.v1.Review.Author")
    created = cls("google.protobuf.Timestamp")(seconds=1_700_000_000, nanos=250_000_000)
    review = Review(id="r-1", text="the strap broke after a week", likes=2**40, views=2**64 - 1, delta=-5,
                    f64=2**63, sf32=-7, score=4.5, weight=0.25, verified=True, blob=b"\x00\xffbin", i32=-2**31,
                    u32=2**32 - 1, s64=-2**62, f32=7, sf64=-2**63, status=2, tags=["strap", "quality"],
                    counts=[1, -1, 2**50], votes={"up": 3, "down": 1},
                    by_id={42: Author(name="ann", seen=[1, 2])}, author=Author(name="bo"), store=7,
                    created_at=created, rating=0)
    value = schema(REVIEW_PROTO).read(wire([0], review))
    assert value == {
        "id": "r-1", "text": "the strap broke after a week", "likes": 2**40, "views": 2**64 - 1, "delta": -5,
        "f64": 2**63, "sf32": -7, "score": 4.5, "weight": 0.25, "verified": True,
        "blob": base64.b64encode(b"\x00\xffbin").decode(), "i32": -2**31, "u32": 2**32 - 1, "s64": -2**62,
        "f32": 7, "sf64": -2**63, "status": "HIDDEN", "tags": ["strap", "quality"], "counts": [1, -1, 2**50],
        "votes": {"up": 3, "down": 1}, "by_id": {"42": {"name": "ann", "seen": ["PUBLISHED", "HIDDEN"]}},
        "author": {"name": "bo"}, "store": 7, "created_at": "2023-11-14T22:13:20.250Z",
        "rating": 0,  # proto3 `optional`: set to 0 is present
    }
    assert all(isinstance(value[k], int) for k in ("likes", "views", "f64", "s64", "sf64"))  # not JSON's strings
    # the other oneof member, and fields left at their defaults: absent (Protobuf's JSON mapping)
    sparse = schema(REVIEW_PROTO).read(wire([0], Review(id="r-2", web="shop.example", status=0, likes=0)))
    assert sparse == {"id": "r-2", "web": "shop.example"}
    # an enum number the schema does not name (proto3 enums are open): the number
    assert schema(REVIEW_PROTO).read(wire([0], Review(id="r-3", status=9)))["status"] == 9


def test_nested_message_types_by_their_indexes():
    cls = independent_classes(hand_made_review_file())
    s = schema(REVIEW_PROTO)
    author = cls("shop.v1.Review.Author")(name="cy", seen=[1])
    assert s.read(wire([0, 0], author)) == {"name": "cy", "seen": ["PUBLISHED"]}
    envelope = cls("shop.v1.Envelope")(review=cls("shop.v1.Review")(id="r-9", text="inside"))
    assert s.read(wire([1], envelope)) == {"review": {"id": "r-9", "text": "inside"}}
    deep = cls("shop.v1.Envelope.Inner.Deep")(text="three levels down")
    assert s.read(wire([1, 0, 0], deep)) == {"text": "three levels down"}
    assert s.message_class((1, 0, 0)).DESCRIPTOR.full_name == "shop.v1.Envelope.Inner.Deep"


PROTO2 = """
syntax = "proto2";
package legacy;
message Ticket {
  required string id = 1;
  optional string subject = 2 [default = "none"];
  optional Priority priority = 3 [default = HIGH];
  repeated int32 codes = 4 [packed = true];
  enum Priority { LOW = 1; HIGH = 2; }
}
"""


def test_proto2_labels_defaults_and_presence():
    priority = descriptor_pb2.EnumDescriptorProto(name="Priority", value=[
        descriptor_pb2.EnumValueDescriptorProto(name="LOW", number=1),
        descriptor_pb2.EnumValueDescriptorProto(name="HIGH", number=2)])
    ticket = descriptor_pb2.DescriptorProto(name="Ticket", enum_type=[priority], field=[
        fld("id", 1, F.TYPE_STRING, label=F.LABEL_REQUIRED), fld("subject", 2, F.TYPE_STRING),
        fld("priority", 3, type_name=".legacy.Ticket.Priority"),
        fld("codes", 4, F.TYPE_INT32, label=F.LABEL_REPEATED)])
    file = descriptor_pb2.FileDescriptorProto(name="hand/ticket.proto", package="legacy", syntax="proto2",
                                              message_type=[ticket])
    Ticket = independent_classes(file)("legacy.Ticket")
    s = schema(PROTO2)
    assert s.read(wire([0], Ticket(id="t1", subject="", priority=1, codes=[3, 4]))) == {
        "id": "t1", "subject": "", "priority": "LOW", "codes": [3, 4]}  # proto2: set is present, even when empty
    assert s.read(wire([0], Ticket(id="t2"))) == {"id": "t2"}  # unset optionals: absent, not their defaults
    built = s.message_class((0,))()
    assert (built.subject, built.priority) == ("none", 2)  # the .proto's defaults made it into the descriptor


def test_well_known_types_map_to_json():
    text = """
    syntax = "proto3";
    import "google/protobuf/duration.proto";
    import "google/protobuf/wrappers.proto";
    import "google/protobuf/struct.proto";
    import "google/protobuf/any.proto";
    message Extras {
      google.protobuf.Duration took = 1;
      google.protobuf.StringValue note = 2;
      google.protobuf.Int64Value big = 3;
      google.protobuf.BytesValue raw = 4;
      google.protobuf.Struct meta = 5;
      google.protobuf.Any any = 6;
      google.protobuf.Any unknown = 7;
    }
    """
    extras = descriptor_pb2.DescriptorProto(name="Extras", field=[
        fld("took", 1, type_name=".google.protobuf.Duration"), fld("note", 2, type_name=".google.protobuf.StringValue"),
        fld("big", 3, type_name=".google.protobuf.Int64Value"), fld("raw", 4, type_name=".google.protobuf.BytesValue"),
        fld("meta", 5, type_name=".google.protobuf.Struct"), fld("any", 6, type_name=".google.protobuf.Any"),
        fld("unknown", 7, type_name=".google.protobuf.Any")])
    deps = (duration_pb2, wrappers_pb2, struct_pb2, any_pb2)
    file = descriptor_pb2.FileDescriptorProto(name="hand/extras.proto", syntax="proto3", message_type=[extras],
                                              dependency=[m.DESCRIPTOR.name for m in deps])
    cls = independent_classes(file, well_known_modules=deps)
    Extras, Duration, Any = cls("Extras"), cls("google.protobuf.Duration"), cls("google.protobuf.Any")
    meta = cls("google.protobuf.Struct")()
    meta.update({"source": "app", "tries": 2, "tags": ["a", None]})
    packed = Any()
    packed.Pack(Duration(seconds=3))
    message = Extras(took=Duration(seconds=1, nanos=500_000_000), note=cls("google.protobuf.StringValue")(value=""),
                     big=cls("google.protobuf.Int64Value")(value=2**53 + 1),
                     raw=cls("google.protobuf.BytesValue")(value=b"\x01"), meta=meta, any=packed,
                     unknown=Any(type_url="type.googleapis.com/nowhere.Thing", value=b"\x08\x01"))
    assert schema(text).read(wire([0], message)) == {
        "took": "1.500s", "note": "", "big": 2**53 + 1, "raw": "AQ==",
        "meta": {"source": "app", "tries": 2.0, "tags": ["a", None]},
        "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"},
        "unknown": {"@type": "type.googleapis.com/nowhere.Thing", "value": "CAE="}}


def test_confluent_decimal_and_meta_imports_without_references():
    """Confluent's serializer imports confluent/type/decimal.proto and confluent/meta.proto without references."""
    text = """syntax = "proto3";
    package pay;
    import "confluent/meta.proto";
    import "confluent/type/decimal.proto";
    message Refund {
      string id = 1 [(confluent.field_meta).doc = "the refund's id"];
      confluent.type.Decimal amount = 2;
      repeated confluent.type.Decimal parts = 3;
    }
    """
    decimal_file = descriptor_pb2.FileDescriptorProto(
        name="d.proto", package="confluent.type", syntax="proto3", message_type=[descriptor_pb2.DescriptorProto(
            name="Decimal", field=[fld("value", 1, F.TYPE_BYTES), fld("precision", 2, F.TYPE_UINT32),
                                   fld("scale", 3, F.TYPE_INT32)])])
    refund_file = descriptor_pb2.FileDescriptorProto(
        name="r.proto", package="pay", syntax="proto3", dependency=["d.proto"],
        message_type=[descriptor_pb2.DescriptorProto(name="Refund", field=[
            fld("id", 1, F.TYPE_STRING), fld("amount", 2, type_name=".confluent.type.Decimal"),
            fld("parts", 3, type_name=".confluent.type.Decimal", label=F.LABEL_REPEATED)])])
    cls = independent_classes(decimal_file, refund_file)
    Refund, Decimal = cls("pay.Refund"), cls("confluent.type.Decimal")

    def dec(unscaled: int, scale: int):
        raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True) if unscaled else b""
        return Decimal(value=raw, precision=10, scale=scale)

    refund = Refund(id="rf-1", amount=dec(-12_345, 2), parts=[dec(0, 0), dec(5, -3), dec(2**70, 4)])
    assert schema(text).read(wire([0], refund)) == {
        "id": "rf-1", "amount": "-123.45", "parts": ["0", "5E+3", str(__import__("decimal").Decimal(2**70) / 10**4)]}


# --- references: schemas that import other subjects -----------------------------------------------------------------

AUTHOR_PROTO = 'syntax = "proto3";\npackage people;\nmessage Person { string name = 1; int64 followers = 2; }\n'
POST_PROTO = """syntax = "proto3";
package social;
import "people/person.proto";
import "google/protobuf/timestamp.proto";
message Post { string id = 1; string text = 2; people.Person author = 3; google.protobuf.Timestamp at = 4; }
"""


class Versions:
    """A registry's subject versions, for the reader's reference look-ups (the real registry below)."""

    def __init__(self, schemas: dict):
        self.schemas, self.asked = schemas, []

    def version(self, subject, version):
        self.asked.append((subject, version))
        if (subject, version) not in self.schemas:
            raise DecodeError(f"subject {subject!r} version {version} not found")
        return self.schemas[(subject, version)]


def post_classes():
    person = descriptor_pb2.FileDescriptorProto(name="p.proto", package="people", syntax="proto3", message_type=[
        descriptor_pb2.DescriptorProto(name="Person", field=[fld("name", 1, F.TYPE_STRING),
                                                             fld("followers", 2, F.TYPE_INT64)])])
    post = descriptor_pb2.FileDescriptorProto(
        name="s.proto", package="social", syntax="proto3", dependency=["p.proto", "google/protobuf/timestamp.proto"],
        message_type=[descriptor_pb2.DescriptorProto(name="Post", field=[
            fld("id", 1, F.TYPE_STRING), fld("text", 2, F.TYPE_STRING),
            fld("author", 3, type_name=".people.Person"), fld("at", 4, type_name=".google.protobuf.Timestamp")])])
    cls = independent_classes(person, post)
    return cls("social.Post"), cls("people.Person")


def test_a_reference_to_another_subject_and_a_well_known_import():
    Post, Person = post_classes()
    registry = Versions({("people-person", 1): RegisteredSchema(7, "PROTOBUF", AUTHOR_PROTO)})
    refs = [{"name": "people/person.proto", "subject": "people-person", "version": 1}]
    s = schema(POST_PROTO, 8, refs, registry)
    post = Post(id="p1", text="@united lost my bag", author=Person(name="ann", followers=10))
    post.at.seconds = 86_400
    assert s.read(wire([0], post)) == {"id": "p1", "text": "@united lost my bag",
                                       "author": {"name": "ann", "followers": 10}, "at": "1970-01-02T00:00:00Z"}
    assert registry.asked == [("people-person", 1)]
    with pytest.raises(DecodeError, match="subject 'people-person' version 1 not found"):
        schema(POST_PROTO, 9, refs, Versions({}))
    with pytest.raises(DecodeError, match=r"schema id 10 cannot be read: it imports 'people/person.proto', which is "
                                          r"neither one of its references nor one of Google's well-known types"):
        schema(POST_PROTO, 10, (), registry)


def test_a_registry_that_is_down_while_a_reference_is_fetched_is_waited_for_not_a_reason():
    """A reference fetched while the registry does not answer: the decode waits (nothing dead-lettered); a stop ends
    the wait with RegistryUnavailable, and nothing about the schema is remembered as unreadable."""
    import threading

    from streamsense.streams.inputs.registry import RegistryUnavailable

    stop = threading.Event()
    client = RegistryClient("http://127.0.0.1:1", timeout=0.2, stop=stop)
    client._schemas[8] = RegisteredSchema(8, "PROTOBUF", POST_PROTO, (
        {"name": "people/person.proto", "subject": "people-person", "version": 1},))
    threading.Timer(1.5, stop.set).start()
    fmt = make_format("protobuf", {}, Settings(schema_registry_url="http://127.0.0.1:1"))
    fmt.client = client
    fmt.reader.client = client
    Post, _ = post_classes()
    with pytest.raises(RegistryUnavailable, match="subject people-person version 1"):
        fmt.decode(frame(8, wire([0], Post(id="p"))), MSG)
    assert client.requests >= 2 and not client._parsed  # retried; no reason cached for the schema


# --- what is refused, and why ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("message { broken", r"^Protobuf schema id 1 cannot be read: line 1:8: extraneous input '\{'$"),
    ('syntax = "proto3"; message A { Missing m = 1; }', r"schema id 1 cannot be read: .*Missing"),
    ('syntax = "proto2"; message A { optional group G = 1 { optional int32 x = 2; } }', r"proto2 groups are not read"),
    ('edition = "2023"; message A { int32 x = 1; }', r"Protobuf editions \(2023\) are not read"),
    ('syntax = "proto3"; enum E { A = 0; }', r"Protobuf schema id 1 declares no message"),
    ('syntax = "proto3"; message A { int32 x = 1; int32 y = 1; }', r"cannot be read: A: field number 1 is used twice"),
    ('syntax = "proto3"; message A { int32 x = 99999999999; }', r"cannot be read: ValueError: Value out of range"),
    ('syntax = "proto3"; message A { oneof o { } int32 x = 1; }', r"cannot be read: A: oneof o has no field"),
    ('syntax = "proto3"; ' + "message A {" * 3000 + "}" * 3000, r"cannot be read: the \.proto nests too deeply"),
])
def test_schemas_that_cannot_be_read_are_one_line_reasons(text, reason, capsys):
    with pytest.raises(DecodeError, match=reason) as info:
        schema(text)
    assert "\n" not in str(info.value)
    assert capsys.readouterr().err == ""  # the parser's own error printing is silenced


def test_values_that_do_not_decode_are_one_line_reasons():
    Review = independent_classes(hand_made_review_file())("shop.v1.Review")
    s = schema(REVIEW_PROTO)
    good = wire([0], Review(id="r", text="fine"))
    with pytest.raises(DecodeError, match=r"^Protobuf message indexes \[2\] name no message type of schema id 1 "
                                          r"\(at index 2: 2 messages there\)$"):
        s.read(encode_indexes([2]) + good[1:])
    with pytest.raises(DecodeError, match=r"indexes \[0, 1\] name no message type .*1 message there"):
        s.read(encode_indexes([0, 1]) + good[1:])
    for cut in range(2, len(good) - 1):  # truncated inside a field
        if cut == 2 + len("r") + 1:
            continue  # a cut between two fields is a shorter valid message
        with pytest.raises(DecodeError, match=r"^invalid Protobuf value for schema id 1 \(shop\.v1\.Review: "):
            s.read(good[:cut])
    with pytest.raises(DecodeError, match=r"invalid Protobuf value .*(bad UTF-8|'utf-8' codec)"):
        s.read(b"\x00\x0a\x02\xff\xfe")  # a proto3 string that is not UTF-8
    far = Review(id="r")
    far.created_at.seconds = 2**62  # a Timestamp past the year 9999: no RFC 3339 text for it
    with pytest.raises(DecodeError, match=r"^invalid Protobuf value for schema id 1 \(shop\.v1\.Review: .*Timestamp"):
        s.read(wire([0], far))


def test_a_deeply_nested_value_is_a_reason_not_a_crash():
    s = schema('syntax = "proto3"; message Node { Node next = 1; string text = 2; }')
    payload = b""
    for _ in range(200):
        payload = b"\x0a" + _varint_bytes(len(payload)) + payload
    with pytest.raises(DecodeError, match=r"^invalid Protobuf value for schema id 1 \(Node: .*(Depth|nesting)"):
        s.read(b"\x00" + payload)


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_give_a_reason(data):
    s = _FUZZ_SCHEMA
    try:
        value = s.read(data)
    except DecodeError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(value, dict)


_FUZZ_SCHEMA = schema(REVIEW_PROTO)


def _fuzz_review() -> bytes:
    cls = independent_classes(hand_made_review_file())
    Review, Author = cls("shop.v1.Review"), cls("shop.v1.Review.Author")
    return wire([0], Review(id="r-1", text="a long enough text " * 3, likes=-1, tags=["a", "b"], counts=[1, 2**40],
                            votes={"up": 3}, by_id={7: Author(name="n", seen=[1, 2])}, web="w", status=1, rating=4))


_FUZZ_GOOD = _fuzz_review()


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_FUZZ_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(1, len(_FUZZ_GOOD)))
def test_a_valid_value_mutated_or_cut_decodes_or_gives_a_reason(flips, cut):
    data = bytearray(_FUZZ_GOOD)
    for where, byte in flips:
        data[where] = byte
    try:
        value = _FUZZ_SCHEMA.read(bytes(data[:cut]))
    except DecodeError as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        assert isinstance(value, dict)


def test_huge_declared_lengths_are_reasons_without_allocating():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for length in (2**31, 2**60, 2**64 - 1):
        for tag in (b"\x12", b"\x9a\x01", b"\xa2\x01"):  # text, counts (packed), votes (a map entry)
            with pytest.raises(DecodeError, match=r"^invalid Protobuf value for schema id 1 \(shop\.v1\.Review: "):
                _FUZZ_SCHEMA.read(b"\x00" + tag + _varint_bytes(length) + b"abc")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing of that size


# --- the formats ----------------------------------------------------------------------------------------------------

def test_the_protobuf_format_needs_a_registry_and_takes_no_options():
    with pytest.raises(NoRegistry, match=r"format 'protobuf' needs a schema registry"):
        make_format("protobuf", {}, Settings(schema_registry_url=None))
    with pytest.raises(FormatConfigError, match=r"format 'protobuf' takes no options \(got 'subject'\)"):
        make_format("protobuf", {"subject": "x"}, Settings(schema_registry_url="http://127.0.0.1:1"))


def test_without_the_parser_protobuf_fails_at_start_and_confluent_dead_letters_it(monkeypatch):
    import streamsense.streams.inputs.confluent  # noqa: F401 (imported first: put back as they were after the test)
    import streamsense.streams.inputs.protobuf  # noqa: F401

    monkeypatch.setitem(sys.modules, "proto_schema_parser", None)
    for module in ("streamsense.streams.inputs.protobuf", "streamsense.streams.inputs.confluent"):
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(formats, "FORMATS", {k: v for k, v in formats.FORMATS.items()
                                             if k not in ("protobuf", "confluent")})
    settings = Settings(schema_registry_url="http://127.0.0.1:1")
    with pytest.raises(FormatConfigError) as info:
        make_format("protobuf", {}, settings)
    assert str(info.value) == ("format 'protobuf' needs the Python package 'proto_schema_parser', which is not "
                               "installed (pip install 'streamsense[registry]')")
    confluent = make_format("confluent", {}, settings)  # Avro and JSON Schema topics still read
    confluent.client = RegistryClient("http://127.0.0.1:1")  # not the process's shared client: its cache untouched
    confluent.client._schemas[5] = RegisteredSchema(5, "PROTOBUF", 'syntax = "proto3"; message A { int32 x = 1; }')
    with pytest.raises(DecodeError, match=r"^schema id 5 is a Protobuf schema: reading it needs the Python package "
                                          r"'proto_schema_parser', which is not installed"):
        confluent.decode(frame(5, b"\x00\x08\x01"), MSG)


# --- against a real registry (Apicurio's Confluent-compatible API) --------------------------------------------------

def test_protobuf_with_references_through_the_registry(schema_registry, unique):
    url = schema_registry.url
    client = RegistryClient(url)
    person_subject = f"people-{unique}"
    person_id = client.register(person_subject, AUTHOR_PROTO, "PROTOBUF")
    refs = [{"name": "people/person.proto", "subject": person_subject, "version": 1}]
    post_id = client.register(f"posts-{unique}-value", POST_PROTO, "PROTOBUF", refs)
    # a second version of the subject: a field added (schema evolution)
    post_v2 = POST_PROTO.replace("google.protobuf.Timestamp at = 4;", "google.protobuf.Timestamp at = 4; "
                                                                        "string lang = 5;")
    post_v2_id = client.register(f"posts-{unique}-value", post_v2, "PROTOBUF", refs)
    assert len({person_id, post_id, post_v2_id}) == 3
    fetched = RegistryClient(url).schema(post_id)
    assert (fetched.type, [r["subject"] for r in fetched.references]) == ("PROTOBUF", [person_subject])
    reference = RegistryClient(url).version(person_subject, 1)
    assert (reference.id, reference.type, reference.text) == (person_id, "PROTOBUF", AUTHOR_PROTO)
    for subject, version in ((person_subject, 9), (f"nobody-{unique}", 1)):  # the registry's 40402 and 40401
        with pytest.raises(DecodeError, match=rf"^subject '{subject}' version {version} not found in the schema "
                                              rf"registry at {url}$"):
            RegistryClient(url).version(subject, version)

    Post, Person = post_classes()
    post = Post(id="p1", text="delayed again", author=Person(name="ann", followers=3))
    newer = schema(post_v2, 99, refs, client).message_class((0,))(id="p2", text="on time", lang="en")
    settings = Settings(schema_registry_url=url)
    for name in ("protobuf", "confluent", "auto"):
        fmt = make_format(name, {}, settings)
        assert fmt.decode(frame(post_id, wire([0], post)), MSG) == {
            "id": "p1", "text": "delayed again", "author": {"name": "ann", "followers": 3}}
        assert fmt.decode(frame(post_v2_id, wire([0], newer)), MSG) == {"id": "p2", "text": "on time", "lang": "en"}
    avro_id = client.register(f"avro-{unique}-value", '{"type": "string"}')
    with pytest.raises(DecodeError, match=rf"schema id {avro_id} is a AVRO schema, not a Protobuf schema"):
        make_format("protobuf", {}, settings).decode(frame(avro_id, b"\x00"), MSG)
    with pytest.raises(DecodeError, match=rf"schema id {post_id} is a PROTOBUF schema, not Avro"):
        make_format("avro", {}, settings).decode(frame(post_id, wire([0], post)), MSG)


def docs_blocks() -> tuple[str, str]:
    """The .proto and the declaration of docs/inputs.md's Protobuf example, as the page shows them."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "inputs.md").read_text()
    section = page[page.index("### A Protobuf topic with the schema registry"):]
    block = lambda lang: section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]  # noqa: E731
    return block("proto"), block("toml")


def test_the_worked_protobuf_declaration_of_the_docs(schema_registry, unique, tmp_path):
    from streamsense.streams.inputs.declare import load_inputs

    proto, declaration = docs_blocks()
    client = RegistryClient(schema_registry.url)
    client.register(f"people-person-{unique}", AUTHOR_PROTO, "PROTOBUF")
    sid = client.register(f"reviews-{unique}-value", proto, "PROTOBUF",
                          [{"name": "people/person.proto", "subject": f"people-person-{unique}", "version": 1}])
    path = tmp_path / "inputs.toml"
    path.write_text(declaration)
    reader = load_inputs(Settings(inputs=path, schema_registry_url=schema_registry.url))["reviews"]
    writer = ProtobufSchema(client.schema(sid), client)
    Review = writer.message_class((1,))
    review = Review(review_id="rv-3", rating=2)
    review.body.text, review.body.lang = "The zip broke on day two", "en"
    review.author.name = "ann"
    review.created_at.FromSeconds(1_800_000_000)
    record = reader.read(Incoming("reviews", 0, 1, None, frame(sid, wire([1], review)), None))
    assert (record.id, record.text, record.lang, record.author, record.channel) == (
        "rv-3", "The zip broke on day two", "en", "ann", "GOOD")
    assert record.created_at.timestamp() == 1_800_000_000
    review.rating = 0  # at its first value: absent, so the constant
    assert reader.read(Incoming("reviews", 0, 2, None, frame(sid, wire([1], review)), None)).channel == "unrated"
    body = writer.message_class((1, 0))(text="a Body alone")
    with pytest.raises(DecodeError, match="mapping: id: review_id is not present"):  # a Body where a Review goes
        reader.read(Incoming("reviews", 0, 3, None, frame(sid, wire([1, 0], body)), None))
