"""The `protobuf` input format: Protobuf values in the Confluent wire format, their schema's .proto text fetched by
id from the schema registry (with the schemas it imports), built into message classes, and read into a JSON-like dict.

How a value is laid out (Confluent's KafkaProtobufSerializer): magic byte 0, the 4-byte schema id, the message
indexes — zig-zag varints, a count then that many indexes, the single byte 0 standing for [0] — naming which message
of the .proto the payload is (the first index a top-level message in the order the file declares them, each next one a
message nested in it; enums and a map's entry types are not counted, as in Confluent's own serializer), then the
Protobuf payload.

How a schema becomes classes: the .proto text is parsed by proto-schema-parser (pure Python, MIT) into its syntax
tree, turned here into a `FileDescriptorProto` (nested messages and enums, oneofs, maps as their entry types, proto3
`optional`, proto2 labels and defaults; type names left as written, resolved by the descriptor pool with Protobuf's
scoping rules), and added to a descriptor pool of its own (one per schema id: two versions of one subject declare
the same names) after the files it imports: the schema's `references` (fetched from the registry by subject and
version, each under the import name it gives) and Google's well-known types (google/protobuf/timestamp.proto etc.,
from the protobuf package). The official protobuf library (its upb backend) then parses each payload.

How a message maps to JSON (Protobuf's JSON mapping, with the differences marked *): field names as in the .proto;
fields left at their default without presence (proto3 scalars at 0 / "" / false / the first enum value, empty
repeated and map fields) are absent, a field with presence (a message, a oneof member, `optional`) is there when set;
enums by name (an unknown number as the number); *64-bit integers as integers (not strings); bytes as base64 text;
maps as objects (keys as text); Timestamp as RFC 3339 text, Duration as "1.5s", FieldMask as text; Struct, Value and
ListValue as the JSON they hold; the wrappers (Int64Value, StringValue, ...) as their plain value; Any as its JSON
form where its type is in the schema's files, else `{"@type": url, "value": base64}`; Confluent's decimal type
(confluent/type/decimal.proto, imported without a reference as Confluent's serializer does, like confluent/meta.proto)
as its decimal text. Floats stay numbers (NaN and infinities as Python floats). Not read: proto2 groups and Protobuf
editions (the schema is refused: its messages are dead-lettered saying so), and imports that are none of these.
"""

import base64
import decimal
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError as ProtobufDecodeError
from proto_schema_parser import ast as pa
from proto_schema_parser.parser import Parser

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.avro import registry_of, wrong_type
from streamsense.streams.inputs.formats import no_options, register_format
from streamsense.streams.inputs.registry import RegisteredSchema, RegistryClient, split
from streamsense.streams.records import DecodeError

MAX_INDEXES = 64  # message indexes in one value's header, at most (a nesting depth no schema reaches)
MAX_FILES = 256  # files one schema may pull in through its references, at most

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {"double": FDP.TYPE_DOUBLE, "float": FDP.TYPE_FLOAT, "int64": FDP.TYPE_INT64, "uint64": FDP.TYPE_UINT64,
           "int32": FDP.TYPE_INT32, "fixed64": FDP.TYPE_FIXED64, "fixed32": FDP.TYPE_FIXED32, "bool": FDP.TYPE_BOOL,
           "string": FDP.TYPE_STRING, "bytes": FDP.TYPE_BYTES, "uint32": FDP.TYPE_UINT32,
           "sfixed32": FDP.TYPE_SFIXED32, "sfixed64": FDP.TYPE_SFIXED64, "sint32": FDP.TYPE_SINT32,
           "sint64": FDP.TYPE_SINT64}
LABELS = {pa.FieldCardinality.REPEATED: FDP.LABEL_REPEATED, pa.FieldCardinality.REQUIRED: FDP.LABEL_REQUIRED,
          pa.FieldCardinality.OPTIONAL: FDP.LABEL_OPTIONAL, None: FDP.LABEL_OPTIONAL}

#: the well-known types' files, as the protobuf package has them (its _pb2 modules, imported on first use)
WELL_KNOWN = {f"google/protobuf/{name}.proto": f"google.protobuf.{name}_pb2" for name in (
    "any", "api", "descriptor", "duration", "empty", "field_mask", "source_context", "struct", "timestamp", "type",
    "wrappers")}


#: the files Confluent's serializers import without a reference (its "known dependencies"): the message types they
#: declare (their options extensions are not read, as no option is)
CONFLUENT_FILES = {
    "confluent/meta.proto": """syntax = "proto3";
package confluent;
import "google/protobuf/descriptor.proto";
message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; }
""",
    "confluent/type/decimal.proto": """syntax = "proto3";
package confluent.type;
message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }
""",
}


class SchemaError(Exception):
    """A .proto this reader cannot build (one line): every message of its schema id is dead-lettered with it."""


# --- the wire format's message indexes ------------------------------------------------------------------------------

def _varint(data, pos: int) -> tuple[int, int]:
    """An unsigned varint at `pos` (10 bytes at most) → (value, the position after it); DecodeError if cut short."""
    result = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i + 1
        shift += 7
    raise DecodeError("truncated Protobuf message indexes (a varint runs past the value's end or over 10 bytes)")


def _zigzag(data, pos: int) -> tuple[int, int]:
    n, pos = _varint(data, pos)
    return (n >> 1) ^ -(n & 1), pos


_FIRST = (0,)


def message_indexes(payload) -> tuple[tuple[int, ...], int]:
    """The message indexes at the start of a Protobuf payload (after the 5-byte header) → (indexes, where the
    message itself starts); the single byte 0 is (0,), the first message. DecodeError naming what is wrong."""
    if payload[:1] == b"\x00":  # the common case: the first message
        return _FIRST, 1
    count, pos = _zigzag(payload, 0)
    if count == 0:
        return _FIRST, pos
    if count < 0 or count > MAX_INDEXES:
        raise DecodeError(f"Protobuf message indexes: a count of {count} (at most {MAX_INDEXES})")
    indexes = []
    for _ in range(count):
        index, pos = _zigzag(payload, pos)
        if index < 0:
            raise DecodeError(f"Protobuf message indexes: a negative index {index}")
        indexes.append(index)
    return tuple(indexes), pos


def encode_indexes(indexes) -> bytes:
    """The message indexes as the serializer writes them ([0] as the single byte 0): for tests and tools."""
    indexes = list(indexes)
    if indexes == [0]:
        return b"\x00"
    out = bytearray()
    for n in (len(indexes), *indexes):
        n = (n << 1) ^ (n >> 63)
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                break
    return bytes(out)


# --- .proto text → FileDescriptorProto ------------------------------------------------------------------------------

class _RaiseOnError:
    """An ANTLR error listener that raises instead of printing (the parser's default prints and goes on)."""

    def syntaxError(self, recognizer, offending, line, column, msg, e):  # noqa: N802 (ANTLR's name)
        raise SchemaError(f"line {line}:{column}: {msg.split(' expecting {')[0]}")  # not ANTLR's list of 40 tokens

    def reportAmbiguity(self, *args):  # noqa: N802
        pass

    def reportAttemptingFullContext(self, *args):  # noqa: N802
        pass

    def reportContextSensitivity(self, *args):  # noqa: N802
        pass


def _quiet(recognizer) -> None:
    recognizer.removeErrorListeners()
    recognizer.addErrorListener(_RaiseOnError())


def parse_proto(text: str) -> pa.File:
    """The syntax tree of a .proto text; SchemaError (one line) where it is not one."""
    try:
        return Parser(setup_lexer=_quiet, setup_parser=_quiet).parse(text)
    except RecursionError:
        raise SchemaError("the .proto nests too deeply to parse") from None


def _entry_name(field: str) -> str:
    """protoc's name for a map field's entry type: `tag_counts` → `TagCountsEntry`."""
    out, upper = [], True
    for ch in field:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out) + "Entry"


def _option_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, pa.Identifier):
        return value.name
    return str(value)


def _field(node: pa.Field, out, proto3: bool) -> None:
    out.name, out.number = node.name, node.number
    out.label = LABELS[node.cardinality]
    if node.type in SCALARS:
        out.type = SCALARS[node.type]
    else:
        out.type_name = node.type  # resolved by the pool (message or enum), with Protobuf's scoping rules
    if proto3 and node.cardinality == pa.FieldCardinality.OPTIONAL:
        out.proto3_optional = True
    for option in node.options:
        if option.name == "default" and not proto3:
            out.default_value = _option_text(option.value)
        elif option.name == "json_name":
            out.json_name = str(option.value)
        elif option.name == "packed" and isinstance(option.value, bool):
            out.options.packed = option.value


def _enum(node: pa.Enum, out) -> None:
    out.name = node.name
    for element in node.elements:
        if isinstance(element, pa.EnumValue):
            out.value.add(name=element.name, number=element.number)
        elif isinstance(element, pa.Option) and element.name == "allow_alias" and element.value is True:
            out.options.allow_alias = True


def _message(node: pa.Message, out, proto3: bool, where: str) -> list:
    """Fill `out` from `node`; → the declared nested messages as [(name, their nested), ...] (the message indexes'
    tree: map entry types are not in it)."""
    out.name = node.name
    here = f"{where}.{node.name}" if where else node.name  # the message's full name, for the reasons
    nested: list = []
    for element in node.elements:
        if isinstance(element, pa.Field):
            _field(element, out.field.add(), proto3)
        elif isinstance(element, pa.MapField):
            entry = out.nested_type.add(name=_entry_name(element.name))
            entry.options.map_entry = True
            _field(pa.Field("key", 1, element.key_type), entry.field.add(), proto3)
            _field(pa.Field("value", 2, element.value_type), entry.field.add(), proto3)
            out.field.add(name=element.name, number=element.number, label=FDP.LABEL_REPEATED,
                          type_name=entry.name)
        elif isinstance(element, pa.OneOf):
            index = len(out.oneof_decl)
            out.oneof_decl.add(name=element.name)
            for member in element.elements:
                if isinstance(member, pa.Group):
                    raise SchemaError(f"{here}: proto2 groups are not read")
                if isinstance(member, pa.Field):
                    field = out.field.add()
                    _field(member, field, proto3)
                    field.oneof_index = index
        elif isinstance(element, pa.Message):
            nested.append((element.name, _message(element, out.nested_type.add(), proto3, here)))
        elif isinstance(element, pa.Enum):
            _enum(element, out.enum_type.add())
        elif isinstance(element, pa.Group):
            raise SchemaError(f"{here}: proto2 groups are not read")
        # options, reserved names and ranges, extension ranges, extensions, comments: nothing to read a value by
    # what protoc refuses and not every protobuf backend checks (the pure-Python pool does not)
    numbers: set[int] = set()
    for field in out.field:
        if field.number in numbers:
            raise SchemaError(f"{here}: field number {field.number} is used twice")
        numbers.add(field.number)
    used = {field.oneof_index for field in out.field if field.HasField("oneof_index")}
    for index, oneof in enumerate(out.oneof_decl):
        if index not in used:
            raise SchemaError(f"{here}: oneof {oneof.name} has no field")
    # proto3 `optional`: each field in a oneof of its own, declared after the real ones (as protoc does)
    names = {f.name for f in out.field} | {o.name for o in out.oneof_decl}
    for field in out.field:
        if field.proto3_optional:
            synthetic = "_" + field.name
            while synthetic in names:
                synthetic = "X" + synthetic
            names.add(synthetic)
            field.oneof_index = len(out.oneof_decl)
            out.oneof_decl.add(name=synthetic)
    return nested


def file_proto(name: str, tree: pa.File) -> tuple[descriptor_pb2.FileDescriptorProto, list]:
    """A parsed .proto → (its FileDescriptorProto named `name`, the message indexes' tree of its messages)."""
    if tree.edition is not None:
        raise SchemaError(f"Protobuf editions ({tree.edition}) are not read, only proto2 and proto3")
    syntax = (tree.syntax or "proto2").strip("'\"")
    if syntax not in ("proto2", "proto3"):
        raise SchemaError(f"syntax {syntax!r} is not read, only proto2 and proto3")
    proto3 = syntax == "proto3"
    out = descriptor_pb2.FileDescriptorProto(name=name, syntax=syntax)
    messages: list = []
    for element in tree.file_elements:
        if isinstance(element, pa.Package):
            out.package = element.name
        elif isinstance(element, pa.Import):
            if element.public:
                out.public_dependency.append(len(out.dependency))
            if element.weak:
                out.weak_dependency.append(len(out.dependency))
            out.dependency.append(element.name)
        elif isinstance(element, pa.Message):
            messages.append((element.name, _message(element, out.message_type.add(), proto3, out.package or "")))
        elif isinstance(element, pa.Enum):
            _enum(element, out.enum_type.add())
    return out, messages


# --- a schema's classes, and a value → JSON-like ------------------------------------------------------------------

def _well_known(name: str) -> descriptor_pb2.FileDescriptorProto:
    import importlib

    module = importlib.import_module(WELL_KNOWN[name])
    out = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(out)
    return out


_UNSEEN = object()


def _same(value):
    return value


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf 6 and later; `label` before (removed in 7)
    return flag if flag is not None else field.label == field.LABEL_REPEATED


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


class ProtobufSchema:
    """One registry schema (and the files it imports) built into a descriptor pool of its own: `read(payload)` →
    the value as a dict, or DecodeError."""

    def __init__(self, schema: RegisteredSchema, client: RegistryClient | None):
        self.id = schema.id
        self.pool = descriptor_pool.DescriptorPool()
        self._added: set[str] = set()
        self._client = client
        try:
            self.package, self.tree = self._add(f"registry/schema-{schema.id}.proto", schema, ())
        except SchemaError as exc:
            raise DecodeError(f"Protobuf schema id {schema.id} cannot be read: {str(exc)[:300]}") from None
        if not self.tree:
            raise DecodeError(f"Protobuf schema id {schema.id} declares no message")
        self._classes: dict[tuple[int, ...], Any] = {}
        self._converters: dict[Any, Any] = {}  # field descriptor → its value's converter (None: as it is)
        self._special: dict[Any, Any] = {}  # message descriptor → a well-known type's converter, or None

    def _add(self, name: str, schema: RegisteredSchema, stack: tuple) -> tuple[str, list]:
        if len(self._added) >= MAX_FILES:
            raise SchemaError(f"it pulls in more than {MAX_FILES} files through its references")
        try:
            proto, messages = file_proto(name, parse_proto(schema.text))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            # what the parser or the descriptor refuses past the grammar: a field number out of range, a hex one
            raise SchemaError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        references = {r.get("name"): r for r in schema.references if isinstance(r, dict)}
        for i, dependency in enumerate(proto.dependency):
            if dependency in self._added:
                continue
            if dependency in references:
                ref = references[dependency]
                if dependency in stack:
                    raise SchemaError(f"its references import each other in a cycle ({dependency})")
                if self._client is None:
                    raise SchemaError(f"it imports {dependency} (a reference) and no registry is at hand")
                imported = self._client.version(str(ref.get("subject")), ref.get("version"))
                self._add(dependency, imported, stack + (name,))
            elif dependency in WELL_KNOWN:
                self._add_well_known(dependency)
            elif dependency in CONFLUENT_FILES:
                self._add(dependency, RegisteredSchema(schema.id, "PROTOBUF", CONFLUENT_FILES[dependency]),
                          stack + (name,))
            else:
                raise SchemaError(f"it imports {dependency!r}, which is neither one of its references nor one of "
                                  f"Google's well-known types (nor Confluent's meta.proto or decimal.proto)")
        self._pool_add(proto)
        return proto.package, messages

    def _add_well_known(self, name: str) -> None:
        proto = _well_known(name)
        for dependency in proto.dependency:  # type.proto imports any.proto, ...
            if dependency not in self._added:
                self._add_well_known(dependency)
        self._pool_add(proto)

    def _pool_add(self, proto) -> None:
        try:
            self.pool.Add(proto)
            self.pool.FindFileByName(proto.name)  # built now (the pure-Python pool builds lazily): errors here
        except Exception as exc:  # TypeError / ValueError / KeyError from the pool: an undefined type, a clash, ...
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            detail = detail.replace("Couldn't build proto file into descriptor pool: ", "")
            raise SchemaError(f"{proto.name}: {detail}") from None
        self._added.add(proto.name)

    def message_class(self, indexes: tuple[int, ...]):
        """The message class the indexes name, or DecodeError."""
        cls = self._classes.get(indexes)
        if cls is not None:
            return cls
        names, level = [], self.tree
        for index in indexes:
            if index >= len(level):
                raise DecodeError(f"Protobuf message indexes {list(indexes)} name no message type of schema id "
                                  f"{self.id} (at index {index}: {len(level)} message"
                                  f"{'' if len(level) == 1 else 's'} there)")
            name, level = level[index]
            names.append(name)
        full = ".".join(([self.package] if self.package else []) + names)
        try:
            cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full))
        except Exception as exc:  # what the pool's checks at build time did not catch
            raise DecodeError(f"Protobuf schema id {self.id}: message {full} cannot be built "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
        if len(self._classes) < 10_000:
            self._classes[indexes] = cls
        return cls

    def read(self, payload) -> Any:
        indexes, start = message_indexes(payload)
        cls = self.message_class(indexes)
        try:
            message = cls.FromString(payload[start:])
            return self.to_json(message)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid Protobuf value for schema id {self.id} ({cls.DESCRIPTOR.full_name}: "
                              f"{str(exc)[:200] or 'cannot parse'})") from None
        except RecursionError:
            raise DecodeError(f"Protobuf value for schema id {self.id} nests too deeply") from None
        except ValueError as exc:  # a Timestamp / Duration out of its range
            raise DecodeError(f"invalid Protobuf value for schema id {self.id} ({cls.DESCRIPTOR.full_name}: "
                              f"{str(exc)[:200]})") from None

    # a value → JSON-like

    def to_json(self, message) -> Any:
        descriptor = message.DESCRIPTOR
        special = self._special.get(descriptor, _UNSEEN)
        if special is _UNSEEN:
            special = self._special[descriptor] = _SPECIAL.get(descriptor.full_name)
        if special is not None:
            return special(self, message)
        out = {}
        converters = self._converters
        for field, value in message.ListFields():
            convert = converters.get(field, _UNSEEN)
            if convert is _UNSEEN:
                convert = converters[field] = self._converter(field)
            out[field.name] = value if convert is None else convert(value)
        return out

    def _converter(self, field):
        one = self._scalar(field)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_of = entry["key"], self._scalar(entry["value"])
            bool_keys = key_field.type == key_field.TYPE_BOOL
            if value_of is None:
                value_of = _same
            return lambda m: {(("true" if k else "false") if bool_keys else str(k)): value_of(v) for k, v in m.items()}
        if _repeated(field):
            return list if one is None else (lambda values: [one(v) for v in values])
        return one

    def _scalar(self, field):
        if field.type == field.TYPE_MESSAGE:
            return self.to_json
        if field.type == field.TYPE_ENUM:
            names = {v.number: v.name for v in field.enum_type.values}
            return lambda n: names.get(n, n)
        if field.type == field.TYPE_BYTES:
            return _b64
        return None  # numbers, bools, text: as they are


def _wrapper(self: ProtobufSchema, message) -> Any:
    value = message.value
    return _b64(value) if isinstance(value, bytes) else value


def _decimal(self: ProtobufSchema, message) -> str:
    """confluent.type.Decimal (the unscaled value big-endian two's complement, and the scale) → its decimal text."""
    unscaled = int.from_bytes(message.value, "big", signed=True) if message.value else 0
    return str(decimal.Decimal(unscaled).scaleb(-message.scale))


def _any(self: ProtobufSchema, message) -> Any:
    try:
        return json_format.MessageToDict(message, descriptor_pool=self.pool, preserving_proto_field_name=True)
    except (TypeError, KeyError, ValueError, json_format.Error):
        return {"@type": message.type_url, "value": _b64(message.value)}


_SPECIAL = {
    "google.protobuf.Timestamp": lambda self, m: m.ToJsonString(),
    "google.protobuf.Duration": lambda self, m: m.ToJsonString(),
    "google.protobuf.FieldMask": lambda self, m: m.ToJsonString(),
    "google.protobuf.Struct": lambda self, m: json_format.MessageToDict(m),
    "google.protobuf.Value": lambda self, m: json_format.MessageToDict(m),
    "google.protobuf.ListValue": lambda self, m: json_format.MessageToDict(m),
    "google.protobuf.Empty": lambda self, m: {},
    "google.protobuf.Any": _any,
    "confluent.type.Decimal": _decimal,
    **{f"google.protobuf.{w}": _wrapper for w in ("DoubleValue", "FloatValue", "Int64Value", "UInt64Value",
                                                   "Int32Value", "UInt32Value", "BoolValue", "StringValue",
                                                   "BytesValue")},
}


class ProtobufReader:
    """Reads the Protobuf payloads of any registry schema (each schema id built once, cached by the client)."""

    def __init__(self, client: RegistryClient):
        self.client = client

    def _build(self, schema: RegisteredSchema) -> ProtobufSchema:
        return ProtobufSchema(schema, self.client)

    def read(self, schema: RegisteredSchema, payload) -> Any:
        return self.client.parsed(schema, self._build, key="protobuf").read(payload)


class ProtobufFormat:
    """Confluent wire format, Protobuf schemas only."""

    name = "protobuf"

    def __init__(self, client: RegistryClient):
        self.client = client
        self.reader = ProtobufReader(client)

    def decode(self, value: bytes, msg: Incoming) -> Any:
        schema_id, payload = split(value)
        schema = self.client.schema(schema_id)
        if schema.type != "PROTOBUF":
            raise wrong_type(schema, self.name, "a Protobuf schema")
        return self.reader.read(schema, payload)


def _protobuf(options: dict, settings) -> ProtobufFormat:
    no_options("protobuf", options)
    return ProtobufFormat(registry_of("protobuf", settings))


register_format("protobuf", _protobuf)
