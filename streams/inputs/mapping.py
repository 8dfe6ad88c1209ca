"""Field mapping for declared inputs: where in a decoded message each record field is found, and envelopes.

A field's source (the value of `fields.NAME` in a declaration, docs/inputs.md):

- a path: dotted keys into nested objects, `data.text`; a key that holds a dot (or starts with `@`) is written in
  backticks, `` data.`user.name` `` (inside backticks, `` \\` `` is a backtick and `\\\\` a backslash, as in Kafka
  Connect's nested field syntax); an all-digit step indexes a list (`entities.urls.0.url`) or reads that key of an
  object;
- a special source: `@key` (the message key as UTF-8 text), `@coords` (`topic:partition:offset`, unique per message),
  `@topic`, `@partition`, `@offset`, `@timestamp` (the Kafka record timestamp, epoch milliseconds), `@value` (the
  whole value after the envelope: the text of a `string` topic) and `@envelope.PATH` (a path into the message as
  decoded, before the envelope is removed: e.g. Debezium's `ts_ms`);
- a constant: `{ const = "twitter" }`;
- a list of the above: the first one present wins (`["extended_tweet.full_text", "full_text", "text"]`).

A source is present when the path leads to a value that is not null. The mapped fields are then checked exactly as a
message of the built-in shape is (records.from_fields): a required field (id, and text or body) that no source gives
is dead-lettered with `mapping: FIELD: ... is not present`.
"""

import operator
from collections.abc import Callable
from typing import Any

import msgspec

from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.formats import Skip
from streamsense.streams.records import DecodeError, from_fields, odd_json

#: a source found nothing
MISSING: Any = object()

#: record fields by kind, the required ones first
FIELDS: dict[str, tuple[str, ...]] = {
    "post": ("id", "text", "author", "channel", "lang", "created_at"),
    "ticket": ("id", "body", "subject", "customer_id", "product", "priority", "created_at"),
}
REQUIRED: dict[str, tuple[str, ...]] = {"post": ("id", "text"), "ticket": ("id", "body")}
#: fields where an integer is read as its decimal text (database keys, numeric user ids)
_AS_TEXT = frozenset(("id", "author", "channel", "customer_id", "product"))
_INT_TEXT_LIMIT = 1 << 64  # str() of an integer past Python's digit limit raises: such an id is left to the checks

SPECIALS = ("@key", "@coords", "@topic", "@partition", "@offset", "@timestamp", "@value", "@envelope")
ENVELOPES = ("none", "debezium")

Getter = Callable[[Any, Incoming, Any], Any]  # (value after the envelope, message, value before it) → value or MISSING


class MappingError(ValueError):
    """A field source that cannot be used (bad path syntax, unknown special, wrong type): one line, the key first."""


# --- paths ----------------------------------------------------------------------------------------------------------

def parse_path(text: str) -> tuple[str, ...]:
    """`a.b.\\`c.d\\`.0` → ("a", "b", "c.d", "0"); MappingError for an empty step or an unclosed backtick."""
    if not isinstance(text, str) or not text:
        raise MappingError("a path must be a non-empty string")
    steps: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == "`":
            i += 1
            out = []
            while True:
                if i >= n:
                    raise MappingError(f"path {text!r}: a backtick is not closed")
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] in "`\\":
                    out.append(text[i + 1])
                    i += 2
                elif ch == "`":
                    i += 1
                    break
                else:
                    out.append(ch)
                    i += 1
            if i < n and text[i] != ".":
                raise MappingError(f"path {text!r}: a closing backtick must end the step (a dot or the end follows)")
            steps.append("".join(out))
        else:
            end = text.find(".", i)
            end = n if end < 0 else end
            step = text[i:end]
            if not step:
                raise MappingError(f"path {text!r}: an empty step (two dots, or a dot at an end)")
            if "`" in step:
                raise MappingError(f"path {text!r}: a backtick may only open a step (write `{step}` whole)")
            steps.append(step)
            i = end
        if i >= n:
            return tuple(steps)
        i += 1  # the dot
        if i >= n:
            raise MappingError(f"path {text!r}: an empty step (two dots, or a dot at an end)")


def lookup(value: Any, steps: tuple[str, ...]) -> Any:
    """The value at `steps` in nested objects and lists, or MISSING (a null counts as missing)."""
    for step in steps:
        kind = type(value)
        if kind is dict:
            value = value.get(step, MISSING)
            if value is MISSING:
                return MISSING
        elif kind is list and step.isdigit() and step.isascii():
            index = int(step)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return MISSING if value is None else value


def _path_getter(steps: tuple[str, ...], outer: bool = False) -> Getter:
    if len(steps) == 1 and not outer:  # the common case, one dict lookup
        key = steps[0]

        def one(value, msg, event):
            if type(value) is dict:
                found = value.get(key)
                return MISSING if found is None else found
            return lookup(value, steps)
        return one
    if outer:
        return lambda value, msg, event: lookup(event, steps)
    return lambda value, msg, event: lookup(value, steps)


def _key(value, msg: Incoming, event):
    if msg.key is None:
        return MISSING
    try:
        return msg.key.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("mapping: @key: the message key is not UTF-8 text") from None


_SPECIAL_GETTERS: dict[str, Getter] = {
    "@key": _key,
    "@coords": lambda value, msg, event: f"{msg.topic}:{msg.partition}:{msg.offset}",
    "@topic": lambda value, msg, event: msg.topic,
    "@partition": lambda value, msg, event: msg.partition,
    "@offset": lambda value, msg, event: msg.offset,
    "@timestamp": lambda value, msg, event: MISSING if msg.timestamp is None else int(msg.timestamp * 1000),
    "@value": lambda value, msg, event: MISSING if value is None else value,
    "@envelope": lambda value, msg, event: MISSING if event is None else event,
}


# --- sources --------------------------------------------------------------------------------------------------------

#: how the typed fast path (Typed) reads one source: ("path", steps) into the value, ("message", getter) from the
#: message alone (a constant, @key, @coords...), or ("value", None) for one it cannot read (@value, @envelope)
Plan = tuple[str, Any]


class Source:
    """One field's source, compiled: `get(value, msg, event)` → the value or MISSING; `text` names it in reasons;
    `plans`: each alternative's Plan (the typed fast path's)."""

    def __init__(self, get: Getter, text: str, alternatives: int = 1, plans: tuple[Plan, ...] = ()):
        self.get, self.text, self.alternatives, self.plans = get, text, alternatives, plans

    def missing_reason(self, field: str) -> str:
        if self.alternatives > 1:
            return f"mapping: {field}: none of {self.text} is present"
        return f"mapping: {field}: {self.text} is not present"


def _one(spec: Any) -> tuple[Getter, str, Plan]:
    if isinstance(spec, dict):
        if set(spec) != {"const"}:
            raise MappingError(f"a table source takes only `const` (got {', '.join(sorted(spec)) or 'nothing'})")
        const = spec["const"]
        if not isinstance(const, (str, int, float)) or isinstance(const, bool):
            raise MappingError(f"const must be a string or a number, not {type(const).__name__}")
        get = lambda value, msg, event: const  # noqa: E731
        return get, f"const {const!r}", ("message", get)
    if not isinstance(spec, str):
        raise MappingError(f"a source is a path string, a list of them or {{ const = ... }}, "
                           f"not {type(spec).__name__}")
    if spec.startswith("@"):
        name, dot, rest = spec.partition(".")
        if name not in _SPECIAL_GETTERS:
            raise MappingError(f"unknown special source {name!r} (known: {', '.join(SPECIALS)}; a key that starts "
                               f"with @ is written in backticks, `{spec}`)")
        if rest or dot:
            if name != "@envelope":
                raise MappingError(f"{name} takes no path (only @envelope.PATH does)")
            return _path_getter(parse_path(rest), outer=True), spec, ("value", None)
        get = _SPECIAL_GETTERS[name]
        return get, spec, ("value", None) if name in ("@value", "@envelope") else ("message", get)
    steps = parse_path(spec)
    return _path_getter(steps), spec, ("path", steps)


def compile_source(spec: Any) -> Source:
    """A field's declared source → Source; MappingError (one line) for one that cannot be used."""
    if isinstance(spec, list):
        if not spec:
            raise MappingError("an empty list of sources")
        parts = [_one(s) for s in spec]
        getters = tuple(g for g, _, _ in parts)

        def first(value, msg, event):
            for get in getters:
                found = get(value, msg, event)
                if found is not MISSING:
                    return found
            return MISSING
        return Source(first if len(getters) > 1 else getters[0], ", ".join(t for _, t, _ in parts), len(parts),
                      tuple(p for _, _, p in parts))
    get, text, plan = _one(spec)
    return Source(get, text, 1, (plan,))


def identity(kind: str) -> dict[str, str]:
    """The built-in shape as a mapping: each field from the top-level key of its name."""
    return {name: f"`{name}`" for name in FIELDS[kind]}


def text_default(kind: str) -> dict[str, Any]:
    """A `string` topic's mapping when none is declared: the value is the text, the id the key (else the coords)."""
    return {"id": ["@key", "@coords"], REQUIRED[kind][1]: "@value"}


class FieldMap:
    """The declared fields of one input, compiled; `record(value, msg, event)` → a checked Post or Ticket."""

    def __init__(self, kind: str, fields: dict[str, Any]):
        if kind not in FIELDS:
            raise MappingError(f"kind must be post or ticket, not {kind!r}")
        self.kind = kind
        compiled: list[tuple[str, Source, bool]] = []
        for name, spec in fields.items():
            if name not in FIELDS[kind]:
                raise MappingError(f"fields.{name}: a {kind} has no field {name!r} (its fields: "
                                   f"{', '.join(FIELDS[kind])})")
            try:
                compiled.append((name, compile_source(spec), name in REQUIRED[kind]))
            except MappingError as exc:
                raise MappingError(f"fields.{name}: {exc}") from None
        for name in REQUIRED[kind]:
            if name not in fields:
                example = '"@key"' if name == "id" else f'"data.{name}"'
                raise MappingError(f"fields.{name}: required for a {kind} but not mapped (e.g. {name} = {example})")
        self.fields = tuple(compiled)
        self.sources = {name: source for name, source, _ in compiled}

    def record(self, value: Any, msg: Incoming, event: Any = None):
        out: dict[str, Any] = {}
        for name, source, required in self.fields:
            found = source.get(value, msg, event)
            if found is MISSING:
                if required:
                    raise DecodeError(source.missing_reason(name))
                continue
            if type(found) is int and name in _AS_TEXT and -_INT_TEXT_LIMIT < found < _INT_TEXT_LIMIT:
                found = str(found)
            out[name] = found
        return from_fields(self.kind, out)


# --- the typed fast path --------------------------------------------------------------------------------------------
# For a JSON topic without an envelope, the paths of a mapping are compiled into msgspec Struct types shaped like
# the part of the message they read (a Twitter v2 mapping: {data: {id, text, author_id}, includes: {users: [{
# username}]}}): msgspec then decodes only those keys, skipping the rest without building it, and the fields are read
# as attributes. Anything that does not fit these types (a key that holds another type, a list element that is not an
# object, a value that is not an object), and any message where the two parsers could disagree (invalid UTF-8 in a
# skipped part, deep nesting, huge integers), goes to the general path, which decides, and gives every reason.

class _Node:
    def __init__(self):
        self.kind = ""  # "leaf", "object" or "list"
        self.children: dict[str, "_Node"] = {}  # an object's keys
        self.element: "_Node | None" = None  # a list's elements

    def become(self, kind: str) -> bool:
        if self.kind and self.kind != kind:
            return False  # one key read both as a value and as an object or a list: no typed path
        self.kind = kind
        return True


def _is_index(step: str) -> bool:
    return step.isdigit() and step.isascii()


def _struct_type(node: _Node, names: dict[int, dict[str, str]]):
    """The msgspec type of `node`; `names[id(node)]`: key → attribute name, for the getters."""
    if node.kind == "leaf":
        return Any
    if node.kind == "list":
        return list[_struct_type(node.element, names)] | None
    attrs = {key: f"f{i}" for i, key in enumerate(node.children)}
    names[id(node)] = attrs
    fields = [(attrs[key], _struct_type(child, names) | None if child.kind != "leaf" else Any, None)
              for key, child in node.children.items()]
    return msgspec.defstruct("Mapped", fields, rename={a: k for k, a in attrs.items()}, frozen=True)


def _typed_getter(attrs: tuple):
    """Reads one path in a decoded Struct tree: `attrs`, per step, an attribute name or a list index."""
    if all(type(a) is str for a in attrs):
        chain = operator.attrgetter(".".join(attrs))

        def get_attrs(root, msg):
            try:
                v = chain(root)
            except AttributeError:  # None on the way
                return MISSING
            return MISSING if v is None else v
        return get_attrs

    def get(root, msg):
        v = root
        for a in attrs:
            if type(a) is int:
                if a >= len(v):
                    return MISSING
                v = v[a]
            else:
                v = getattr(v, a)
            if v is None:
                return MISSING
        return v
    return get


class Typed:
    """A FieldMap's typed fast path over JSON bytes: `record(raw, msg)` → the record, or None where the general path
    must decide (it is never wrong where it answers: the same fields, the same checks)."""

    def __init__(self, kind: str, plan: list[tuple[str, bool, list[tuple[str, Any]]]], decoder):
        self.kind, self.plan, self.decode = kind, plan, decoder

    @classmethod
    def build(cls, fields: FieldMap) -> "Typed | None":
        root = _Node()
        root.kind = "object"
        for _, source, _ in fields.fields:
            for how, what in source.plans:
                if how == "value":
                    return None
                if how != "path":
                    continue
                node = root
                steps = what
                if _is_index(steps[0]):
                    return None  # a value that is a list: the general path
                for i, step in enumerate(steps):
                    if _is_index(step):
                        continue  # the list itself was made by the step before
                    child = node.children.setdefault(step, _Node())
                    last = i == len(steps) - 1
                    nxt = None if last else steps[i + 1]
                    if last:
                        if not child.become("leaf"):
                            return None
                    elif _is_index(nxt):
                        if not child.become("list"):
                            return None
                        child.element = child.element or _Node()
                        tail_is_index_leaf = i + 1 == len(steps) - 1
                        if tail_is_index_leaf:
                            if not child.element.become("leaf"):
                                return None
                        elif not child.element.become("object") or (i + 2 < len(steps) and _is_index(steps[i + 2])):
                            return None  # a list of lists: the general path
                        child = child.element
                    elif not child.become("object"):
                        return None
                    node = child
        names: dict[int, dict[str, str]] = {}
        try:
            root_type = _struct_type(root, names)
        except (TypeError, ValueError):
            return None
        plan = []
        for name, source, required in fields.fields:
            getters = []
            for how, what in source.plans:
                if how == "message":
                    getters.append(lambda root, msg, _get=what: _get(None, msg, None))
                    continue
                attrs, node = [], root
                for i, step in enumerate(what):
                    if _is_index(step) and i > 0 and node.kind == "list":
                        attrs.append(int(step))
                        node = node.element
                    else:
                        attrs.append(names[id(node)][step])
                        node = node.children[step]
                getters.append(_typed_getter(tuple(attrs)))
            plan.append((name, required, name in _AS_TEXT, tuple(getters)))
        return cls(fields.kind, plan, msgspec.json.Decoder(root_type).decode)

    def record(self, raw: bytes, msg: Incoming):
        if odd_json(raw):
            return None
        if not raw.isascii():
            try:  # msgspec checks UTF-8 only in what it keeps: leave invalid UTF-8 anywhere to the general path
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
        try:
            root = self.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # a ValidationError is a DecodeError
            return None
        out: dict[str, Any] = {}
        for name, required, as_text, getters in self.plan:
            for get in getters:
                found = get(root, msg)
                if found is not MISSING:
                    break
            else:
                if required:
                    return None  # the general path names what is missing
                continue
            if as_text and type(found) is int and -_INT_TEXT_LIMIT < found < _INT_TEXT_LIMIT:
                found = str(found)
            out[name] = found
        return from_fields(self.kind, out)


# --- envelopes ------------------------------------------------------------------------------------------------------

def debezium(value: Any) -> tuple[dict, dict]:
    """A Debezium change event (with or without the schema wrapper, `payload`) → (the row after the change, the
    change event: what `@envelope.PATH` reads); a delete or a truncate raises Skip; anything else that is not a
    change event is a DecodeError."""
    if type(value) is dict and "op" not in value and type(value.get("payload")) is dict:
        value = value["payload"]
    if type(value) is not dict:
        raise DecodeError(f"debezium: expected a change event (an object), got {type(value).__name__}")
    op = value.get("op")
    if op == "d":
        raise Skip("debezium delete (op 'd')", "delete")
    if op == "t":
        raise Skip("debezium truncate (op 't')", "truncate")
    if op not in ("c", "u", "r") and op is not None:
        raise DecodeError(f"debezium: unknown op {op!r} (expected c, u, r, d or t)")
    after = value.get("after")
    if type(after) is not dict:
        raise DecodeError(f"debezium: after is {'missing' if after is None else 'not an object'} (op {op!r})")
    return after, value
