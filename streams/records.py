"""Wire records: JSON in, validated on decode; anything invalid raises DecodeError with the reason.

Two paths, one behaviour. The fast path (msgspec: about 1.8 µs a message, against 6.5 for the checked path) takes
the common well-formed message; the checked path (json + pydantic, the original decoder) takes everything the fast
path is not sure about, and is the only one that rejects: every DecodeError reason comes from it. The fast path
accepts a message only when the checked path would accept it with the same values (tests/test_records.py compares
the two field by field).
"""

import json
import re
import sys
from datetime import datetime, timezone
from typing import Annotated, ClassVar, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_MESSAGE_BYTES = 2 * 1024 * 1024

Priority = Literal["low", "normal", "high", "urgent"]


class DecodeError(ValueError):
    """The message cannot be used; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- the records ----------------------------------------------------------------------------------------------------
# Immutable and hashable (frozen); gc=False: they hold only str, None and datetime, so they cannot form cycles.
# Build them with decode(): its two paths check the constraints below (ids 1-200 characters, short fields at most
# 200, text/body not blank, NUL removed, a created_at without a zone is UTC). Times carry a `datetime.timezone`.

_MsId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_MsShort = Annotated[str, msgspec.Meta(max_length=200)] | None


class Post(msgspec.Struct, frozen=True, gc=False):
    kind: ClassVar[Literal["post"]] = "post"
    id: _MsId
    text: str
    author: _MsShort = None
    channel: _MsShort = None  # brand or account the post is addressed to
    lang: _MsShort = None
    created_at: datetime | None = None

    @property
    def model_text(self) -> str:
        return self.text

    @property
    def group(self) -> str | None:
        return self.channel


class Ticket(msgspec.Struct, frozen=True, gc=False):
    kind: ClassVar[Literal["ticket"]] = "ticket"
    id: _MsId
    body: str
    subject: str = ""
    customer_id: _MsShort = None
    product: _MsShort = None
    priority: Priority | None = None
    created_at: datetime | None = None

    @property
    def model_text(self) -> str:
        subject = self.subject  # "not subject.strip()" without copying the subject
        return f"{subject}. {self.body}" if subject and not subject.isspace() else self.body

    @property
    def group(self) -> str | None:
        return self.product


Record = Post | Ticket
RECORD_TYPES: dict[str, type[Post] | type[Ticket]] = {"post": Post, "ticket": Ticket}


# --- the fast path: msgspec -----------------------------------------------------------------------------------------
# created_at is taken as a string and parsed here, only in the RFC 3339 form both parsers read alike (a "T", seconds,
# at most 6 fraction digits, "Z" or ±HH:MM or no zone): msgspec's own datetime parser rounds a 7th fraction digit
# where pydantic truncates it; pydantic also reads numbers, date-only strings and more; fromisoformat reads an offset
# of +00:60 as +01:00 where pydantic refuses it. All those go to the checked path. [0-9], not \d, which matches other
# scripts' digits too. (A Python regex: as a msgspec Meta(pattern=...) the same check cost twice as much.)
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?")


class _PostWire(msgspec.Struct, frozen=True, gc=False):
    # Unknown fields are ignored (msgspec's default), as in the checked path. `kind` is a field there too.
    id: _MsId
    text: str
    author: _MsShort = None
    channel: _MsShort = None
    lang: _MsShort = None
    created_at: str | None = None
    kind: Literal["post"] = "post"


class _TicketWire(msgspec.Struct, frozen=True, gc=False):
    id: _MsId
    body: str
    subject: str = ""
    customer_id: _MsShort = None
    product: _MsShort = None
    priority: Priority | None = None
    created_at: str | None = None
    kind: Literal["ticket"] = "ticket"


# Twitter's created_at, "Wed Oct 10 20:19:24 +0000 2018": rewritten to RFC 3339 before either path reads it.
_TWITTER_TIME = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                           r"([0-9]{1,2}) ([0-9]{2}:[0-9]{2}:[0-9]{2}) ([+-][0-9]{2})([0-9]{2}) ([0-9]{4})")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def rfc3339(value):
    """A time in Twitter's form as RFC 3339 text; any other value as it is."""
    if type(value) is str:
        m = _TWITTER_TIME.fullmatch(value)
        if m is not None:
            month, day, clock, zone_h, zone_m, year = m.groups()
            return f"{year}-{_MONTHS[month]:02d}-{int(day):02d}T{clock}{zone_h}:{zone_m}"
    return value


_post_wire = msgspec.json.Decoder(_PostWire).decode
_ticket_wire = msgspec.json.Decoder(_TicketWire).decode
# A message this short can neither nest deeper than 256 nor hold an integer over 640 digits (see _fast).
_SHORT_MESSAGE = 512
_LONG_NUMBER = re.compile(rb"[0-9]{641}")
_stamp_form = _STAMP.fullmatch
_fromisoformat = datetime.fromisoformat
_UTC = timezone.utc


def odd_json(raw: bytes) -> bool:
    """Whether `raw` might nest deeper than 256 or hold an integer over 640 digits: where json.loads and msgspec may
    disagree, so the checked parser (parse_json) must read it."""
    return len(raw) > _SHORT_MESSAGE and (raw.count(b"[") + raw.count(b"{") > 256 or _LONG_NUMBER.search(raw) is not None)


def _fast(kind: str, raw: bytes) -> Record | None:
    """The record, or None where the checked path has to decide. `raw` is bytes within MAX_MESSAGE_BYTES; None for
    anything odd, never an exception for bad input."""
    if not raw.isascii():
        # msgspec checks UTF-8 in the strings it keeps but not in the values it skips (unknown fields).
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(raw) > _SHORT_MESSAGE and (raw.count(b"[") + raw.count(b"{") > 256 or _LONG_NUMBER.search(raw)):
        # json.loads fails on deep nesting and on integers over sys.get_int_max_str_digits() (at least 640) a
        # little before msgspec does: let the checked path refuse them with its reason (odd_json, inlined).
        return None
    try:
        if kind == "post":
            w = _post_wire(raw)
        elif kind == "ticket":
            w = _ticket_wire(raw)
        else:
            return None  # an unknown kind: the checked path raises as it always has
    except (msgspec.DecodeError, RecursionError):  # msgspec.ValidationError is a DecodeError
        return None
    return _from_wire(kind, w)


def _from_wire(kind: str, w: "_PostWire | _TicketWire") -> Record | None:
    """The record from the fast path's wire struct, or None where the checked path has to decide."""
    if kind == "post":
        text, a, b, c = w.text, w.author, w.channel, w.lang
    else:
        text, a, b, c = w.body, w.subject, w.customer_id, w.product
    # The checked path strips NUL (JSON "\u0000") from the known fields, then checks lengths and emptiness: leave
    # any NUL to it. (Looking for it here, in the decoded strings, is 4x cheaper than searching the raw bytes.)
    # `not text or text.isspace()` is `not text.strip()` without the copy: both use str.isspace's whitespace.
    if (not text or text.isspace() or "\x00" in text or "\x00" in w.id or (a and "\x00" in a)
            or (b and "\x00" in b) or (c and "\x00" in c)):
        return None
    at = w.created_at
    if at is not None:
        if _stamp_form(at) is None:
            return None
        try:
            at = _fromisoformat(at)  # the form held; this still refuses impossible dates and times (Feb 30, 25:00)
        except ValueError:
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=_UTC)
    if kind == "post":
        return Post(w.id, text, a, b, c, at)
    return Ticket(w.id, text, a, b, c, w.priority, at)  # priority is a Literal: no NUL can pass it


# --- the checked path: json + pydantic (the original decoder) -------------------------------------------------------

Id = Annotated[str, Field(min_length=1, max_length=200)]
Short = Annotated[str | None, Field(default=None, max_length=200)]


class _RecordCheck(BaseModel):
    # Unknown fields are ignored so producers can add fields without breaking consumers.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Id
    created_at: datetime | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_from_number(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("created_at", mode="before")
    @classmethod
    def _twitter_time(cls, value):
        return rfc3339(value)

    @field_validator("created_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without a zone is taken as UTC, so every stored time is comparable.
        return value.replace(tzinfo=timezone.utc) if value and value.tzinfo is None else value

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value):
        # NUL cannot be stored in PostgreSQL text and carries no meaning in posts or tickets. Stripped before
        # validation, so lengths and emptiness are checked on what is stored.
        return value.replace("\x00", "") if isinstance(value, str) else value


class _PostCheck(_RecordCheck):
    kind: Literal["post"] = Field("post", exclude=True)
    text: str
    author: Short
    channel: Short
    lang: Short

    @field_validator("text", mode="after")
    @classmethod
    def _text_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value


class _TicketCheck(_RecordCheck):
    kind: Literal["ticket"] = Field("ticket", exclude=True)
    subject: str = ""
    body: str
    customer_id: Short
    product: Short
    priority: Priority | None = None

    @field_validator("body", mode="after")
    @classmethod
    def _body_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("body is empty")
        return value


_CHECKS: dict[str, type[_PostCheck] | type[_TicketCheck]] = {"post": _PostCheck, "ticket": _TicketCheck}


def _std_zone(value: datetime | None) -> datetime | None:
    # pydantic gives its own TzInfo; the fast path gives datetime.timezone (UTC: timezone.utc). Same instant, offset
    # and isoformat() either way; this makes the two paths give the same objects.
    if value is None or type(value.tzinfo) is timezone:
        return value
    return value.replace(tzinfo=timezone(value.utcoffset()))


def check_size(raw: bytes | None) -> bytes:
    """`raw`, or DecodeError for a message with no value or one over MAX_MESSAGE_BYTES."""
    if raw is None:
        raise DecodeError("empty message (no value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES} byte limit")
    return raw


def parse_json(raw: bytes):
    """UTF-8 JSON text → its value (json.loads), or DecodeError with a one-line reason: invalid UTF-8, invalid
    JSON, nesting past the interpreter's recursion limit, an integer over its digit limit."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    except ValueError:  # the only other ValueError json.loads raises
        raise DecodeError(f"invalid JSON: an integer over {sys.get_int_max_str_digits()} digits") from None


def _checked(kind: str, raw: bytes | None) -> Record:
    """The original decoder: a record, or DecodeError with its one-line reason."""
    data = parse_json(check_size(raw))
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    return _validated(kind, data)


def _validated(kind: str, data: dict) -> Record:
    try:
        checked = _CHECKS[kind].model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise DecodeError(f"invalid {kind}: {problems}") from None
    if kind == "post":
        return Post(checked.id, checked.text, checked.author, checked.channel, checked.lang,
                    _std_zone(checked.created_at))
    return Ticket(checked.id, checked.body, checked.subject, checked.customer_id, checked.product, checked.priority,
                  _std_zone(checked.created_at))


def decode(kind: str, raw: bytes | None) -> Record:
    """Bytes from the topic → a validated record, or DecodeError with a one-line reason."""
    if raw is not None and len(raw) <= MAX_MESSAGE_BYTES:
        record = _fast(kind, raw)
        if record is not None:
            return record
    return _checked(kind, raw)


_CONVERT_WIRE = {"post": _PostWire, "ticket": _TicketWire}
_convert = msgspec.convert


def from_fields(kind: str, fields: dict) -> Record:
    """A record from its fields (what a declared input's mapping yields: streams/inputs/mapping.py), with the checks
    decode() applies to a message's JSON object, or DecodeError with the reason. created_at may also be a datetime."""
    at = fields.get("created_at")
    if at is not None:
        if type(at) is str:
            if _stamp_form(at) is None:
                fields = {**fields, "created_at": rfc3339(at)}
        elif isinstance(at, datetime):
            fields = {**fields, "created_at": at.isoformat()}
    try:
        record = _from_wire(kind, _convert(fields, _CONVERT_WIRE[kind]))
    except (msgspec.ValidationError, KeyError):
        record = None
    if record is not None:
        return record
    return _validated(kind, fields)
