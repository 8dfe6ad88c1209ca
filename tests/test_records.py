import json
import math
import sys
from datetime import timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streamsense.streams.records import (MAX_MESSAGE_BYTES, RECORD_TYPES, DecodeError, Post, Ticket, _checked, _fast,
                                         decode)


def test_post_round_trip_ignores_unknown_fields():
    post = decode("post", json.dumps({"id": 7, "text": "hello", "channel": "acme", "extra": {"x": 1}}).encode())
    assert isinstance(post, Post)
    assert (post.id, post.text, post.channel, post.group) == ("7", "hello", "acme", "acme")


def test_ticket_model_text_joins_subject_and_body():
    ticket = decode("ticket", b'{"id": "t1", "subject": "Refund", "body": "Charged twice", "priority": "urgent"}')
    assert isinstance(ticket, Ticket)
    assert ticket.model_text == "Refund. Charged twice"
    assert decode("ticket", b'{"id": "t2", "body": "Only a body"}').model_text == "Only a body"


def test_nul_characters_are_removed():
    assert decode("post", b'{"id": "a", "text": "x\\u0000y"}').text == "xy"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (None, "empty message"),
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"just a string"', "expected a JSON object, got str"),
        (b"\xff\xfe", "invalid UTF-8 at byte 0"),
        (b'{"text": "no id"}', "id: Field required"),
        (b'{"id": "", "text": "x"}', "id: String should have at least 1 character"),
        (b'{"id": "a", "text": "   "}', "text: Value error, text is empty"),
        (b'{"id": "a", "text": "\\u0000"}', "text is empty"),
        (b'{"id": "a", "text": 5}', "text: Input should be a valid string"),
        (b'{"id": true, "text": "x"}', "id: Input should be a valid string"),
        (b'{"id": "a", "text": "x", "created_at": "yesterday"}', "created_at"),
        (json.dumps({"id": "k" * 201, "text": "x"}).encode(), "id: String should have at most 200 characters"),
    ],
)
def test_invalid_posts_raise_with_reason(raw, reason):
    with pytest.raises(DecodeError) as err:
        decode("post", raw)
    assert reason in err.value.reason


def test_ticket_priority_is_checked():
    with pytest.raises(DecodeError, match="priority"):
        decode("ticket", b'{"id": "t", "body": "b", "priority": "whenever"}')


def test_oversized_message_is_rejected_before_parsing():
    raw = b'{"id": "a", "text": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(DecodeError, match="byte limit"):
        decode("post", raw)


def test_one_megabyte_text_is_accepted():
    post = decode("post", json.dumps({"id": "big", "text": "word " * 200_000}).encode())
    assert len(post.text) == 1_000_000


def test_created_at_without_a_zone_is_utc():
    post = decode("post", b'{"id": "a", "text": "x", "created_at": "2026-11-01T09:00:00"}')
    assert post.created_at.isoformat() == "2026-11-01T09:00:00+00:00"
    other = decode("post", b'{"id": "b", "text": "x", "created_at": "2026-11-01T10:00:00+01:00"}')
    assert other.created_at.utcoffset().total_seconds() == 3600


# --- the fast path (msgspec) against the checked path (json + pydantic) ---------------------------------------------
# decode() takes a message by the fast path only where the checked path, which alone rejects and gives the reasons,
# would accept it with the same values. These compare the two on tricky input, field by field.


def _fields(record) -> dict:
    return {**msgspec.structs.asdict(record), "kind": record.kind, "model_text": record.model_text,
            "group": record.group}


def _assert_same(fast, slow):
    assert type(fast) is type(slow)
    assert _fields(fast) == _fields(slow)
    for f, s in zip(msgspec.structs.astuple(fast), msgspec.structs.astuple(slow)):
        assert type(f) is type(s)
    if slow.created_at is not None:
        assert fast.created_at.isoformat() == slow.created_at.isoformat()
        assert fast.created_at.tzinfo == slow.created_at.tzinfo and type(fast.created_at.tzinfo) is timezone


def _agree(kind: str, raw: bytes | None) -> str:
    """Both paths on `raw`: the fast path's record (if any) must equal the checked path's; decode() must give what
    the checked path gives. Returns "fast", "checked" or the DecodeError reason, for tests that want a path."""
    try:
        slow = _checked(kind, raw)
    except DecodeError as exc:
        slow = exc
    except (RecursionError, ValueError, KeyError) as exc:  # what decode() has always raised on some input (json.loads
        slow = exc  # on deep nesting or huge integers, an unknown kind): unchanged
    fast = _fast(kind, raw) if raw is not None and len(raw) <= MAX_MESSAGE_BYTES else None
    if fast is not None:
        assert not isinstance(slow, Exception), f"fast path accepted what the checked path refuses: {slow!r}"
        _assert_same(fast, slow)
    try:
        got = decode(kind, raw)
    except DecodeError as exc:
        assert isinstance(slow, DecodeError) and exc.reason == slow.reason
        return exc.reason
    except (RecursionError, ValueError, KeyError) as exc:
        assert type(exc) is type(slow) and not isinstance(slow, DecodeError)
        return type(exc).__name__
    _assert_same(got, slow)
    return "fast" if fast is not None else "checked"


def _post(**fields) -> bytes:
    return json.dumps({"id": "p1", "text": "hello", **fields}).encode()


def _ticket(**fields) -> bytes:
    return json.dumps({"id": "t1", "body": "broken", **fields}).encode()


EMOJI = "\U0001f600"
STAMPS = [
    "2026-11-01T09:00:00", "2026-11-01T09:00:00Z", "2026-11-01T09:00:00+00:00", "2026-11-01T09:00:00-00:00",
    "2026-11-01T09:00:00+01:00", "2026-11-01T09:00:00-05:30", "2026-11-01T09:00:00+23:59", "2026-11-01T09:00:00+24:00",
    "2026-11-01T09:00:00+00:60", "2026-11-01T09:00:00+00:99", "2026-11-01T09:00:00+0100", "2026-11-01T09:00:00+01",
    "2026-11-01T09:00:00+01:00:30", "2026-11-01T09:00:00.1Z", "2026-11-01T09:00:00.123Z", "2026-11-01T09:00:00.123456",
    "2026-11-01T09:00:00.1234567Z", "2026-11-01T09:00:00.9999999Z", "2026-11-01T09:00:00,5Z", "2026-11-01T09:00:00.Z",
    "2026-11-01t09:00:00z", "2026-11-01 09:00:00Z", "2026-11-01_09:00:00", "2026-11-01T09:00Z", "2026-11-01T09:00",
    "2026-11-01", "2026-11-01T09", "20261101T090000Z", "2026-W44-1T09:00:00", "2026-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z", "2026-11-01T24:00:00", "2026-11-01T23:60:00", "2026-11-01T23:59:60Z", "0000-01-01T00:00:00",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z", "2026-11-01T09:00:00Z\n",
    " 2026-11-01T09:00:00Z", "2026-11-01T09:00:00 ", "\u0662\u0660\u0662\u0666-11-01T09:00:00",
    "2026-11-01T09:00:00\x00",
    "yesterday", "", "1700000000", "1700000000.5", 1700000000, 1700000000.5, 0, -1, True, None, [], {},
]
ID_CASES = [7, 0, -3, 10**30, True, False, 1.0, 1.5, None, "", "a", "k" * 200, "k" * 201, EMOJI * 200, EMOJI * 201,
            "\x00", "a\x00", "\x00" * 3 + "b", " ", [], {"a": 1}]
TEXT_CASES = ["x", "", " ", "\t\n", "\u3000", "\x1c\x1d\x1e\x1f", "\u200b", "\x85", "\xa0 x", "\x00", " \x00 ",
              "a\x00b",
              "\ud800", "\udfff x", "\ud83d\ude00", EMOJI, "x" * 100_000, 5, 0, None, True, [], {"a": "b"}]
SHORT_CASES = [None, "", "a", "a" * 200, "a" * 201, EMOJI * 200, EMOJI * 201, "a\x00", "\x00" * 201 + "b", 5, True, []]


@pytest.mark.parametrize("kind, raw", [
    *(("post", _post(id=v)) for v in ID_CASES),
    *(("ticket", _ticket(id=v)) for v in ID_CASES),
    *(("post", _post(text=v)) for v in TEXT_CASES),
    *(("ticket", _ticket(body=v)) for v in TEXT_CASES),
    *(("ticket", _ticket(subject=v)) for v in [*TEXT_CASES, "Refund", "  "]),
    *(("post", _post(created_at=v)) for v in STAMPS),
    *(("ticket", _ticket(created_at=v)) for v in STAMPS),
    *(("post", _post(**{f: v})) for f in ("author", "channel", "lang") for v in SHORT_CASES),
    *(("ticket", _ticket(**{f: v})) for f in ("customer_id", "product") for v in SHORT_CASES),
    *(("ticket", _ticket(priority=v))
      for v in ["low", "normal", "high", "urgent", "URGENT", "", None, 1, "urgent\x00"]),
    *((k, _post(kind=v)) for k in ("post", "ticket") for v in ["post", "ticket", "po\x00st", None, 1]),
    *((k, _ticket(kind=v)) for k in ("post", "ticket") for v in ["post", "ticket", None]),
    ("post", _post(extra={"deep": [[{"x": [1, 2, {"y": None}]}]], "n": 1e300, "big": 10**50, "s": "\x00\ud800"})),
    ("post", _post(text="fine", **{"te\x00xt": "", "": 1, "TEXT": ""})),
    ("post", json.dumps({"id": "p", "text": "x"}, ensure_ascii=False).encode()),
    ("post", json.dumps({"id": EMOJI, "text": "caf\xe9 " + EMOJI, "channel": "\u00fc"}, ensure_ascii=False).encode()),
    ("post", b'{"id": "a", "text": "x", "id": "b"}'),
    ("post", b'{"id": "a", "text": "x", "text": "  "}'),
    ("post", b'{"id": "a", "text": "  ", "text": "y"}'),
    ("post", b'{"id": 5, "id": "a", "text": "x"}'),
    ("post", b'{"id": "a", "id": 5, "text": "x"}'),
    ("post", b'{"i\\u0064": "a", "t\\u0065xt": "x\\u00e9\\ud83d\\ude00\\n\\"\\/"}'),
    ("post", b'{"id": "a", "text": "x", "junk": NaN}'),
    ("post", b'{"id": "a", "text": "x", "junk": -Infinity}'),
    ("post", b'{"id": "a", "text": "x", "junk": 1e999}'),
    ("post", b'{"id": "a", "text": "x", "junk": "\xff"}'),
    ("post", b'{"id": "a", "text": "x", "junk": "\xed\xa0\x80"}'),
    ("post", b'{"id": "a", "text": "x", "junk": "\xc0\xaf"}'),
    ("post", b'\xef\xbb\xbf{"id": "a", "text": "x"}'),
    ("post", b' \t\r\n{"id": "a", "text": "x"} \r\n'),
    ("post", b'\x0c{"id": "a", "text": "x"}'),
    ("post", b'{"id": "a", "text": "x"}\x00'),
    ("post", b'{"id": "a", "text": "x",}'),
    ("post", b'{"id": "a", "text": "x\ty"}'),
    ("post", b'{"id": "a", "text": "x\x7fy"}'),
    ("post", b'{"id": "a", "text": "x", "junk": [1,]}'),
    ("post", b'{"id": "a", "text": "x", "junk": 01}'),
    ("post", b'{"id": "a", "text": "x", "junk": "\\q"}'),
    ("post", b'{"id": "a", "text": "x", "junk": "\\u12"}'),
    ("post", b'{"id": "a", "text": "x", "junk": ' + b"7" * 5000 + b"}"),
    ("post", b'{"id": "a", "text": "x", "junk": -' + b"7" * 700 + b".5}"),
    ("post", b'{"id": "a", "text": "x", "junk": ' + b"[" * 300 + b"]" * 300 + b"}"),
    ("post", b'{"id": "a", "text": "x", "junk": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("post", b'{"id": "a", "text": "x", "junk": ' + b"{}," * 400 + b"0}"),
    ("post", b'{"id": "a", "text": "' + b"[" * 400 + b'"}'),
    *((k, v) for k in ("post", "ticket") for v in [b"[]", b"{}", b"null", b"1", b'"x"', b"true", b"", b"   ", b"{"]),
    ("ticket", b'{"id": "t", "body": "b", "priority": "whenever"}'),
    ("other", _post()),
    ("other", b"not json"),
    ("post", json.dumps({"id": "big", "text": "word " * 200_000}).encode()),
    ("post", b'{"id": "a", "text": "' + b"x" * (MAX_MESSAGE_BYTES - 23) + b'"}'),
    ("post", b'{"id": "a", "text": "' + b"x" * (MAX_MESSAGE_BYTES - 22) + b'"}'),
    ("post", None),
])
def test_fast_and_checked_paths_agree(kind, raw):
    _agree(kind, raw)


def test_common_messages_take_the_fast_path():
    # What the demo and tests produce: the fast path takes it, with zones as datetime.timezone.
    samples = Path(__file__).resolve().parent.parent / "streams" / "samples"
    for kind, name in (("post", "posts.jsonl"), ("ticket", "tickets.jsonl")):
        for line in (samples / name).read_bytes().splitlines():
            assert _agree(kind, line) == "fast"
    for stamp in ("2026-11-01T09:00:00", "2026-11-01T09:00:00Z", "2026-11-01T09:00:00.123456+05:30"):
        assert _agree("post", _post(created_at=stamp)) == "fast"
    post = decode("post", _post(created_at="2026-11-01T09:00:00Z"))
    assert post.created_at.tzinfo is timezone.utc
    # and what it cannot be sure of goes to the checked path, with the same result as always
    assert _agree("post", _post(id=7)) == "checked" and decode("post", _post(id=7)).id == "7"
    assert _agree("post", _post(created_at=1700000000)) == "checked"
    assert decode("post", _post(created_at="2026-11-01T09:00:00.9999999Z")).created_at.microsecond == 999999
    assert _agree("post", _post(text="a\x00b")) == "checked" and decode("post", _post(text="a\x00b")).text == "ab"


def test_records_are_immutable_and_hashable():
    post = decode("post", _post(created_at="2026-11-01T09:00:00Z"))
    ticket = decode("ticket", _ticket(priority="high"))
    assert {post: 1, ticket: 2}[decode("post", _post(created_at="2026-11-01T09:00:00+00:00"))] == 1
    with pytest.raises(AttributeError):
        post.text = "changed"
    assert (post.kind, ticket.kind) == ("post", "ticket") and RECORD_TYPES == {"post": Post, "ticket": Ticket}
    assert getattr(ticket, "author", None) is None and ticket.priority == "high"  # as the pipeline reads them


_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
_stamps = st.one_of(
    st.builds(lambda at, spec, zone: at.isoformat(timespec=spec) + zone, st.datetimes(),
              st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
              st.sampled_from(["", "Z", "+00:00", "-00:00", "+05:30", "-11:00", "+23:59"])),
    st.builds(
        lambda y, mo, d, sep, h, mi, s, frac, tz: f"{y}-{mo}-{d}{sep}{h}:{mi}{s}{frac}{tz}",
        st.sampled_from(["2026", "0000", "0001", "9999", "26", "02026"]), _digits, _digits,
        st.sampled_from(["T", "T", "t", " ", "_", "x"]), _digits, _digits,
        st.one_of(st.just(""), _digits.map(lambda v: ":" + v)),
        st.one_of(st.just(""), st.builds(lambda sep, n: sep + n, st.sampled_from([".", ","]),
                                         st.text("0123456789", min_size=0, max_size=9))),
        st.one_of(st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+01"]),
                  st.builds(lambda sign, hh, mm, colon: f"{sign}{hh}{colon}{mm}", st.sampled_from("+-"), _digits,
                            _digits, st.sampled_from([":", ":", ""]))),
    ),
    st.text(alphabet="0123456789-:T.Z+ z\x00\u0663", max_size=30),
    st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.none(), st.booleans(),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_strings = st.one_of(st.text(max_size=40), st.text(alphabet=" \t\n\x00\u3000\x1fa\ud800\U0001f600", max_size=8),
                     st.text(min_size=195, max_size=205), st.sampled_from(["", " ", "\x00", "k" * 200, "k" * 201]))
_values = st.one_of(st.none(), _strings, _strings, _strings, _json_values)  # mostly valid: then values are compared
_records = st.sampled_from(["post", "ticket"]).flatmap(lambda kind: st.tuples(
    st.just(kind),
    st.fixed_dictionaries({}, optional={
        "id": st.one_of(_strings, _strings, st.integers(), st.booleans(), st.floats(allow_nan=False)),
        "text": _values, "body": _values, "subject": _values, "author": _values, "channel": _values, "lang": _values,
        "customer_id": _values, "product": _values, "created_at": _stamps,
        "priority": st.one_of(st.sampled_from(["low", "normal", "high", "urgent", None]), _values),
        "kind": st.one_of(st.just(kind), st.sampled_from(["post", "ticket", "x", None])), "extra": _json_values,
    }),
    st.booleans(),
))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records)
def test_fast_path_never_disagrees_with_the_checked_path(case):
    kind, obj, ascii_only = case
    # Make most examples valid, so both paths accept and the values are compared.
    obj.setdefault("id", "x")
    obj.setdefault("text" if kind == "post" else "body", "some words")
    _agree(kind, json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


_VALID = [
    _post(author="a", channel="c", lang="en", created_at="2026-11-01T09:00:00+01:00", extra=[1, {"b": None}]),
    _ticket(subject="Refund", customer_id="c", product="p", priority="urgent", created_at="2026-11-01T09:00:00.5Z"),
]
_PIECES = [b'"', b"\\", b"\\u0000", b"\\ud800", b",", b":", b"{", b"}", b"[", b"]", b"0", b"-", b"e", b".", b" ",
           b"\x00", b"null", b"true", b'"id"', b'"text"', b'"body"']


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALID),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 3), st.binary(max_size=3) | st.sampled_from(_PIECES)),
                min_size=1, max_size=4))
def test_mutated_messages_agree(base, edits):
    raw = base
    for at, cut, insert in edits:
        at = min(at, len(raw))
        raw = raw[:at] + insert + raw[at + cut:]
    for kind in ("post", "ticket"):
        _agree(kind, raw)


def test_checked_path_limits_still_apply_to_the_fast_path():
    # Integers over Python's digit limit and nesting past the recursion limit fail in json.loads: decode() refuses
    # them with a reason (a DecodeError: dead-lettered, where a RecursionError used to stop the worker), instead of
    # the fast path accepting them.
    too_long = b'{"id": "a", "text": "x", "junk": ' + b"7" * (sys.get_int_max_str_digits() + 1) + b"}"
    with pytest.raises(DecodeError, match="invalid JSON: an integer over"):
        decode("post", too_long)
    deep = b'{"id": "a", "text": "x", "junk": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError, match="invalid JSON: nested too deeply"):
        decode("post", deep)
    assert math.isinf(json.loads("1e999"))  # json.loads reads it, and so both paths accept it
    assert _agree("post", b'{"id": "a", "text": "x", "junk": 1e999}') == "fast"
