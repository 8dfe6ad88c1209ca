"""Declared inputs (streams/inputs/): formats, field mapping, envelopes, event times, the declaration file's checks,
the pipeline's on_error handling, `streamsense inputs`, and every foreign shape end to end on both brokers."""

import json
import textwrap
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from streamsense.brokers import free_port
from streamsense.cli import app
from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.contracts import Incoming
from streamsense.streams.inputs.declare import InputSpec, InputsError, build, check, load_inputs
from streamsense.streams.inputs.formats import (FORMATS, PLUGINS, FormatConfigError, NoRegistry, Skip, make_format,
                                                register_format)
from streamsense.streams.inputs.mapping import MISSING, FieldMap, MappingError, compile_source, lookup, parse_path
from streamsense.streams.pipeline import InputStopped, Processor
from streamsense.streams.records import DecodeError, Post, Ticket, decode, from_fields
from streamsense.streams.worker import build_topics

SETTINGS = Settings(inputs=None)
UTC = timezone.utc


def _msg(value, topic="t", key=None, offset=3, partition=1, timestamp=1_700_000_000.5) -> Incoming:
    raw = value if value is None or isinstance(value, bytes) else json.dumps(value).encode()
    return Incoming(topic, partition, offset, key, raw, timestamp)


def _input(kind="post", fields=None, fmt="json", envelope="none", on_error="dead_letter", options=None, topic="t"):
    return build(InputSpec(topic, kind, fmt, envelope, on_error, fields, options or {}), SETTINGS)


def _reason(reader, value, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        reader.read(_msg(value, **kw))
    assert "\n" not in info.value.reason
    return info.value.reason


# --- paths ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, steps", [
    ("text", ("text",)),
    ("data.text", ("data", "text")),
    ("data.`user.name`", ("data", "user.name")),
    ("`a.b`.`c`", ("a.b", "c")),
    ("`tick\\`s`", ("tick`s",)),
    ("`back\\\\slash`", ("back\\slash",)),
    ("`@key`", ("@key",)),
    ("entities.urls.0.url", ("entities", "urls", "0", "url")),
])
def test_paths_parse(text, steps):
    assert parse_path(text) == steps


@pytest.mark.parametrize("text, problem", [
    ("", "non-empty"), ("a..b", "empty step"), ("a.", "empty step"), (".a", "empty step"),
    ("`a.b", "not closed"), ("`a`b", "closing backtick"), ("a`b`", "backtick may only open"),
])
def test_bad_paths_are_refused_with_a_reason(text, problem):
    with pytest.raises(MappingError, match=problem):
        parse_path(text)


def test_lookup_walks_objects_and_lists_and_treats_null_as_missing():
    value = {"data": {"user.name": "ann", "n": None, "list": [{"x": 1}, {"x": 2}], "0": "zero"}}
    assert lookup(value, parse_path("data.`user.name`")) == "ann"
    assert lookup(value, parse_path("data.list.1.x")) == 2
    assert lookup(value, parse_path("data.0")) == "zero"  # a digit step reads an object's key
    for missing in ("data.n", "data.list.2.x", "data.list.x", "data.user.name", "nope", "data.list.1.x.y"):
        assert lookup(value, parse_path(missing)) is MISSING, missing
    assert lookup(["a"], parse_path("0")) == "a" and lookup("text", parse_path("0")) is MISSING


# --- sources and mapping --------------------------------------------------------------------------------------------

def test_the_first_present_source_wins():
    source = compile_source(["extended_tweet.full_text", "full_text", "text"])
    assert source.get({"text": "t", "full_text": "f"}, _msg(None), None) == "f"
    assert source.get({"text": "t", "extended_tweet": {"full_text": None}}, _msg(None), None) == "t"
    assert source.get({}, _msg(None), None) is MISSING
    assert source.missing_reason("text") == "mapping: text: none of extended_tweet.full_text, full_text, text is present"


def test_specials_and_constants():
    msg = _msg(b"x", topic="tw", key=b"k-1", offset=42, partition=3)
    get = lambda spec: compile_source(spec).get("VALUE", msg, {"ts_ms": 5})  # noqa: E731
    assert get("@key") == "k-1" and get("@coords") == "tw:3:42" and get("@topic") == "tw"
    assert (get("@partition"), get("@offset"), get("@timestamp")) == (3, 42, 1_700_000_000_500)
    assert get("@value") == "VALUE" and get("@envelope.ts_ms") == 5
    assert get({"const": "twitter"}) == "twitter" and get(["nope", {"const": 7}]) == 7
    assert compile_source("@key").get("v", _msg(b"x", key=None), None) is MISSING
    with pytest.raises(DecodeError, match="message key is not UTF-8"):
        compile_source("@key").get("v", _msg(b"x", key=b"\xff"), None)


@pytest.mark.parametrize("spec, problem", [
    ({"path": "x"}, "only `const`"), ({"const": [1]}, "const must be a string or a number"),
    ({"const": True}, "const must be"), (3, "a source is a path string"), ([], "empty list"),
    ("@nope", "unknown special source '@nope'"), ("@key.x", "@key takes no path"),
])
def test_bad_sources_are_refused(spec, problem):
    with pytest.raises(MappingError, match=problem):
        compile_source(spec)


@pytest.mark.parametrize("kind, fields, problem", [
    ("post", {"id": "a", "text": "b", "body": "c"}, "fields.body: a post has no field 'body'"),
    ("ticket", {"id": "a", "body": "b", "lang": "c"}, "fields.lang: a ticket has no field 'lang'"),
    ("post", {"id": "a"}, "fields.text: required for a post but not mapped"),
    ("ticket", {"body": "a"}, "fields.id: required for a ticket but not mapped"),
    ("post", {"id": "a", "text": "x..y"}, "fields.text: path 'x..y': an empty step"),
    ("tweet", {}, "kind must be post or ticket"),
])
def test_field_maps_are_checked(kind, fields, problem):
    with pytest.raises(MappingError) as info:
        FieldMap(kind, fields)
    assert problem in str(info.value)


def test_integers_become_text_where_the_field_is_an_identifier():
    reader = _input("ticket", {"id": "id", "body": "b", "customer_id": "c", "priority": "p"})
    ticket = reader.read(_msg({"id": 7, "b": "help", "c": 12, "p": "high"}))
    assert (ticket.id, ticket.customer_id, ticket.priority) == ("7", "12", "high")
    assert "invalid ticket: priority" in _reason(reader, {"id": 7, "b": "help", "p": 3})


# --- the shapes at the top of the issue -----------------------------------------------------------------------------

TWITTER_V2 = {"id": "data.id", "text": "data.text", "author": "data.author_id", "lang": "data.lang",
              "created_at": "data.created_at", "channel": {"const": "twitter"}}
STORED = {"id": ["id_str", "id"], "text": ["extended_tweet.full_text", "full_text", "text"],
          "author": "user.screen_name", "lang": "lang", "created_at": "created_at"}
DEBEZIUM = {"id": "id", "subject": "subject", "body": "description", "customer_id": "customer_id",
            "priority": "priority", "created_at": ["created_at", "@envelope.ts_ms"]}


def test_twitter_v2():
    reader = _input(fields=TWITTER_V2)
    post = reader.read(_msg({"data": {"id": "1", "text": "@united lost my bag again", "author_id": "99",
                                      "lang": "en", "created_at": "2024-05-01T10:00:00.000Z"}, "includes": {}}))
    assert post == Post("1", "@united lost my bag again", "99", "twitter", "en", datetime(2024, 5, 1, 10, tzinfo=UTC))
    assert _reason(reader, {"data": {"id": "1"}}) == "mapping: text: data.text is not present"
    assert _reason(reader, {"data": {"text": "x"}}) == "mapping: id: data.id is not present"
    assert _reason(reader, [1, 2]) == "mapping: id: data.id is not present"  # not an object: nothing is present


def test_stored_tweets_prefer_the_full_text_and_read_twitter_times():
    reader = _input(fields=STORED)
    tweet = {"id": 2, "id_str": "2", "text": "short…", "full_text": "full", "truncated": True,
             "extended_tweet": {"full_text": "the extended text"}, "user": {"screen_name": "ann"},
             "created_at": "Wed Oct 10 20:19:24 +0000 2018"}
    post = reader.read(_msg(tweet))
    assert (post.id, post.text, post.author) == ("2", "the extended text", "ann")
    assert post.created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert reader.read(_msg({"id": 3, "text": "old"})).text == "old" and reader.read(_msg({"id": 3, "text": "o"})).id == "3"
    reason = _reason(reader, {"id_str": "4"})
    assert reason == "mapping: text: none of extended_tweet.full_text, full_text, text is present"


def test_debezium_creates_updates_and_snapshots_map_the_row_after_deletes_skip():
    reader = _input("ticket", DEBEZIUM, envelope="debezium")
    row = {"id": 7, "subject": "refund", "description": "I was charged twice", "customer_id": 42}
    for op in ("c", "u", "r"):
        event = {"before": None, "after": row, "op": op, "ts_ms": 1_700_000_000_000}
        for wrapped in (event, {"schema": {"type": "struct"}, "payload": event}):
            ticket = reader.read(_msg(wrapped))
            assert ticket == Ticket("7", "I was charged twice", "refund", "42", None, None,
                                    datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC))
    for value, kind in (({"payload": {"before": row, "after": None, "op": "d"}}, "delete"),
                        ({"before": row, "after": None, "op": "d"}, "delete"), ({"op": "t"}, "truncate"),
                        (None, "tombstone")):
        with pytest.raises(Skip) as info:
            reader.read(_msg(value))
        assert info.value.kind == kind
    assert _reason(reader, {"op": "c", "after": None}) == "debezium: after is missing (op 'c')"
    assert _reason(reader, {"op": "x", "after": row}) == "debezium: unknown op 'x' (expected c, u, r, d or t)"
    assert _reason(reader, [row]) == "debezium: expected a change event (an object), got list"
    assert _reason(reader, {"op": "c", "after": {"id": 8}}) == "mapping: body: description is not present"


def test_plain_text_topics():
    reader = _input(fmt="string")
    assert reader.read(_msg(b"lost my bag", key=b"k9")) == Post("k9", "lost my bag")
    assert reader.read(_msg(b"lost my bag", key=None, topic="lines", offset=5)).id == "lines:1:5"
    assert _reason(reader, b"  ") == "invalid post: text: Value error, text is empty"
    assert _reason(reader, b"\xffbad") == "invalid UTF-8 at byte 0"
    ticket = _input("ticket", fmt="string").read(_msg(b"refund please", key=b"1"))
    assert (ticket.id, ticket.body) == ("1", "refund please")


def test_auto_reads_json_text_and_explains_the_wire_format_without_a_registry():
    reader = _input(fmt="auto", fields={"id": ["id", "@coords"], "text": ["text", "@value"]})
    assert reader.read(_msg({"id": "j", "text": "json"})) == Post("j", "json")
    assert reader.read(_msg(b"plain words", offset=9)) == Post("t:1:9", "plain words")
    reason = _reason(reader, b"\x00\x00\x00\x00\x01\x02avro")
    assert "Confluent wire format" in reason and "STREAMSENSE_SCHEMA_REGISTRY_URL" in reason


def test_the_built_in_declaration_reads_the_built_in_shape_through_the_fast_path():
    inputs = load_inputs(Settings(inputs=None, topic_posts="p", topic_tickets="k"))
    assert [(t, r.kind, r.fixed) for t, r in inputs.items()] == [("p", "post", True), ("k", "ticket", True)]
    topics = build_topics(Settings(inputs=None, topic_posts="p", topic_tickets="k"))
    assert topics.kinds == {"p": "post", "k": "ticket"} and dict(topics.inputs) == {}  # no reader: records.decode
    raw = b'{"id": "1", "text": "hi", "created_at": "Wed Oct 10 20:19:24 +0000 2018"}'
    assert decode("post", raw).created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)  # the fixed shape too


def test_an_identity_mapping_agrees_with_the_fixed_shape():
    mapped = _input(envelope="debezium")  # no fields: each field from its own name, in the row
    row = {"id": 5, "text": "hello", "channel": "c", "lang": "en", "created_at": "2024-01-01T00:00:00+02:00"}
    assert mapped.read(_msg({"op": "c", "after": row})) == decode("post", json.dumps(row).encode())


# --- event times ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2018-10-10T20:19:24Z", datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)),
    ("2018-10-10T22:19:24.5+02:00", datetime(2018, 10, 10, 22, 19, 24, 500000, tzinfo=timezone(timedelta(hours=2)))),
    (1539202764, datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)),
    ("1539202764", datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)),
    (1539202764123, datetime(2018, 10, 10, 20, 19, 24, 123000, tzinfo=UTC)),
    ("1539202764123", datetime(2018, 10, 10, 20, 19, 24, 123000, tzinfo=UTC)),
    ("Wed Oct 10 20:19:24 +0000 2018", datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)),
    ("Wed Oct 10 22:19:24 +0200 2018", datetime(2018, 10, 10, 22, 19, 24, tzinfo=timezone(timedelta(hours=2)))),
    (datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC), datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)),
])
def test_event_times_in_the_forms_sources_write(value, expected):
    post = from_fields("post", {"id": "1", "text": "x", "created_at": value})
    assert post.created_at == expected and post.created_at.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("value", ["Wed Oct 40 20:19:24 +0000 2018", "yesterday", True, [1]])
def test_bad_event_times_are_refused(value):
    with pytest.raises(DecodeError, match="invalid post: created_at"):
        from_fields("post", {"id": "1", "text": "x", "created_at": value})


# --- formats (the contract) -----------------------------------------------------------------------------------------

def test_formats_are_registered_by_name_and_plugins_fail_in_one_line(monkeypatch):
    class Upper:
        name = "upper"

        def decode(self, value, msg):
            return value.decode().upper()

    monkeypatch.setitem(FORMATS, "upper", lambda options, settings: Upper())
    assert make_format("upper", {}, SETTINGS).decode(b"abc", _msg(b"abc")) == "ABC"
    with pytest.raises(FormatConfigError, match="takes no options"):
        make_format("json", {"x": 1}, SETTINGS)
    with pytest.raises(FormatConfigError, match="unknown format 'xml'"):
        make_format("xml", {}, SETTINGS)
    monkeypatch.setitem(PLUGINS, "gone", "streamsense_no_such_format_module")
    with pytest.raises(FormatConfigError, match="format 'gone' is not available in this installation"):
        make_format("gone", {}, SETTINGS)


def test_a_plugin_whose_dependency_is_missing_fails_at_start_in_one_line(monkeypatch, tmp_path):
    (tmp_path / "streamsense_fake_format.py").write_text("import streamsense_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(PLUGINS, "fake", "streamsense_fake_format")
    with pytest.raises(FormatConfigError) as info:
        make_format("fake", {}, SETTINGS)
    assert str(info.value) == ("format 'fake' needs the Python package 'streamsense_missing_dependency', which is not "
                               "installed (pip install 'streamsense[registry]')")


def test_auto_uses_the_registry_format_when_one_is_configured(monkeypatch):
    seen = []

    class Wire:
        name = "confluent"

        def decode(self, value, msg):
            seen.append(value)
            return {"id": "w", "text": "from the registry"}

    def factory(options, settings):
        if not options.get("url"):
            raise NoRegistry("no registry")
        return Wire()

    monkeypatch.setitem(FORMATS, "confluent", factory)
    reader = _input(fmt="auto", options={"url": "http://registry"})
    assert reader.read(_msg(b"\x00\x00\x00\x00\x01rest")) == Post("w", "from the registry") and len(seen) == 1
    assert _input(fmt="auto").format.registry is None  # no registry: JSON and text still read


def test_register_format_is_the_extension_point(monkeypatch):
    monkeypatch.setattr("streamsense.streams.inputs.formats.FORMATS", dict(FORMATS))
    register_format("csv", lambda options, settings: type("Csv", (), {
        "name": "csv", "decode": lambda self, value, msg: dict(zip(("id", "text"), value.decode().split(",", 1)))})())
    assert _input(fmt="csv", fields={"id": "id", "text": "text"}).read(_msg(b"9,nine")) == Post("9", "nine")


# --- hostile input through a mapping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, reason", [
    (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid JSON: nested too deeply"),
    (b'{"data": {"id": ' + b"9" * 5000 + b', "text": "x"}}', "invalid JSON: an integer over"),
    (b'{"data": {"id": "1", "text": "\xc3\x28"}}', "invalid UTF-8"),
    (b'{"data": {"id": "1", "text": ', "invalid JSON"),
    (b"x" * (2 * 1024 * 1024 + 1), "over the 2097152 byte limit"),
    (None, "empty message (no value)"),
    (b'"a string"', "mapping: id: data.id is not present"),
    (b'{"data": {"id": "1", "text": {"nested": 1}}}', "invalid post: text: Input should be a valid string"),
    (b'{"data": {"id": "' + b"i" * 300 + b'", "text": "x"}}', "invalid post: id: String should have at most 200"),
    (b'{"data": {"id": 1e400, "text": "x"}}', "invalid post: id"),
    (b'{"data": {"id": 123456789012345678901234567890, "text": "x"}}', None),
])
def test_hostile_values_through_a_mapping_are_refused_with_a_reason(raw, reason):
    reader = _input(fields=TWITTER_V2)
    if reason is None:  # a big integer id is its decimal text
        assert reader.read(_msg(raw)).id == "123456789012345678901234567890"
        return
    assert reason in _reason(reader, raw)


# --- declaration files ----------------------------------------------------------------------------------------------

GOOD = """
[[input]]
topic = "tweets"
kind = "post"
[input.fields]
id = "data.id"
text = "data.text"
channel = { const = "twitter" }

[[input]]
topic = "helpdesk.public.tickets"
kind = "ticket"
envelope = "debezium"
on_error = "skip"
[input.fields]
id = "id"
body = "description"
subject = "subject"

[[input]]
topic = "lines"
kind = "post"
format = "string"
"""


def _file(tmp_path, text, name="inputs.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_declares_its_topics(tmp_path):
    settings = Settings(inputs=_file(tmp_path, GOOD))
    inputs = load_inputs(settings)
    assert [(t, r.kind, r.spec.format, r.spec.envelope, r.on_error) for t, r in inputs.items()] == [
        ("tweets", "post", "json", "none", "dead_letter"), ("helpdesk.public.tickets", "ticket", "json", "debezium",
                                                           "skip"), ("lines", "post", "string", "none", "dead_letter")]
    from streamsense.streams.kafka import worker_topics

    assert worker_topics(settings)[:3] == ["tweets", "helpdesk.public.tickets", "lines"]
    assert "posts" not in worker_topics(settings)  # a file replaces the built-in declaration


BAD = [
    ("not toml", "[[input]\n", "not valid TOML"),
    ("no inputs", "title = 'x'\n", "title: unknown top-level key"),
    ("empty", "", "no [[input]] tables"),
    ("unknown key", '[[input]]\ntopic = "a"\nkind = "post"\ncolour = 1\n', "input 'a': colour: unknown key"),
    ("no topic", '[[input]]\nkind = "post"\n', "input #1: topic: required"),
    ("kind", '[[input]]\ntopic = "a"\nkind = "tweet"\n', "input 'a': kind: must be post | ticket, not 'tweet'"),
    ("no kind", '[[input]]\ntopic = "a"\n', "input 'a': kind: required"),
    ("format", '[[input]]\ntopic = "a"\nkind = "post"\nformat = "xml"\n', "input 'a': format: unknown format 'xml'"),
    ("envelope", '[[input]]\ntopic = "a"\nkind = "post"\nenvelope = "maxwell"\n',
     "input 'a': envelope: must be none | debezium"),
    ("on_error", '[[input]]\ntopic = "a"\nkind = "post"\non_error = "ignore"\n',
     "input 'a': on_error: must be dead_letter | skip | stop"),
    ("unknown field", '[[input]]\ntopic = "a"\nkind = "post"\n[input.fields]\nid = "i"\ntext = "t"\nbody = "b"\n',
     "input 'a': fields.body: a post has no field 'body'"),
    ("required", '[[input]]\ntopic = "a"\nkind = "ticket"\n[input.fields]\nid = "i"\n',
     "input 'a': fields.body: required for a ticket but not mapped"),
    ("path", '[[input]]\ntopic = "a"\nkind = "post"\n[input.fields]\nid = "i"\ntext = "`t"\n',
     "input 'a': fields.text: path '`t': a backtick is not closed"),
    ("duplicate", '[[input]]\ntopic = "a"\nkind = "post"\n[[input]]\ntopic = "a"\nkind = "ticket"\n',
     "input 'a': topic: declared twice"),
    ("output topic", '[[input]]\ntopic = "dead-letter"\nkind = "post"\n',
     "topic: 'dead-letter' is the worker's dead-letter topic"),
    ("options", '[[input]]\ntopic = "a"\nkind = "post"\n[input.options]\nurl = "x"\n',
     "input 'a': options: format 'json' takes no options (got 'url')"),
    ("fields type", '[[input]]\ntopic = "a"\nkind = "post"\nfields = "id"\n', "input 'a': fields: must be a table"),
]


@pytest.mark.parametrize("name, text, problem", BAD, ids=[b[0] for b in BAD])
def test_every_problem_is_one_line_naming_the_topic_and_the_key(tmp_path, name, text, problem):
    path = _file(tmp_path, text)
    _, problems = check(path, SETTINGS)
    assert problems and all("\n" not in p and p.startswith(str(path)) for p in problems)
    assert any(problem in p for p in problems), problems
    with pytest.raises(InputsError):
        load_inputs(Settings(inputs=path))


def test_the_cli_says_a_bad_declaration_in_two_lines(tmp_path):
    path = _file(tmp_path, BAD[5][1] + BAD[7][1].replace('"a"', '"b"'))
    result = CliRunner().invoke(app, ["inputs", "check", "--file", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: input 'a': kind: must be post | ticket, not 'tweet'",
        f"error: {path}: input 'b': format: unknown format 'xml' (known: auto, avro, confluent, json, json_schema, "
        "protobuf, string)", f"  2 problems in {path} (docs/inputs.md has worked declarations)"]
    worker = CliRunner().invoke(app, ["worker"], env={"STREAMSENSE_INPUTS": str(path)})
    assert worker.exit_code == 2 and len(worker.stderr.splitlines()) == 2
    assert worker.stderr.startswith(f"error: invalid input declaration: {path}: input 'a': kind:")
    assert "(and 1 more problem)" in worker.stderr and "streamsense inputs check" in worker.stderr


def test_inputs_check_and_try_from_a_file_of_samples(tmp_path):
    path = _file(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["inputs", "check", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert "tweets: post, format json, fields: id <- data.id; text <- data.text; channel <- const 'twitter'" \
        in result.stdout and result.stdout.rstrip().endswith("3 inputs, no problems")
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(b'{"data": {"id": "1", "text": "lost my bag"}}\n{"data": {"id": "2"}}\nnot json\n'
                        b'{"data": {"id": "4", "text": "x"}}\n')
    result = CliRunner().invoke(app, ["inputs", "try", "tweets", "-f", str(path), "--from-file", str(samples),
                                      "--limit", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert json.loads(lines[0].split(": ", 1)[1]) == {"kind": "post", "id": "1", "text": "lost my bag",
                                                       "author": None, "channel": "twitter", "lang": None,
                                                       "created_at": None}
    assert lines[1:] == ["line 2: dead letter: mapping: text: data.text is not present",
                         "line 3: dead letter: invalid JSON: Expecting value at line 1 column 1"]
    assert "3 messages: 1 records, 2 dead letters, 0 skipped" in result.stderr
    cdc = tmp_path / "cdc.jsonl"
    cdc.write_text('{"op": "d", "before": {"id": 1}}\n{"op": "c", "after": {"id": 2}}\n')
    result = CliRunner().invoke(app, ["inputs", "try", "helpdesk.public.tickets", "-f", str(path), "--from-file",
                                      str(cdc)])
    assert result.stdout.splitlines() == [
        "line 1: skipped: debezium delete (op 'd')",
        "line 2: skipped: mapping: body: description is not present (on_error = skip)"]
    unknown = CliRunner().invoke(app, ["inputs", "try", "nope", "-f", str(path), "--from-file", str(cdc)])
    assert unknown.exit_code == 2 and "no input declares topic 'nope'" in unknown.stderr
    neither = CliRunner().invoke(app, ["inputs", "try", "tweets", "-f", str(path)])
    assert neither.exit_code == 2 and "--from-file FILE or --from-topic" in neither.stderr


def test_classify_reads_through_a_declared_input(tmp_path, monkeypatch):
    from tests.test_cli import _EchoClassifier
    from streamsense.streams import worker

    monkeypatch.setattr(worker, "load_classifier", lambda settings: _EchoClassifier())
    path = _file(tmp_path, GOOD)
    lines = '{"data": {"id": "1", "text": "lost my bag"}}\n{"data": {"id": 2}}\nplain\n'
    result = CliRunner().invoke(app, ["classify", "--input", "tweets"], input=lines,
                                env={"STREAMSENSE_INPUTS": str(path)})
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert (out[0]["id"], out[0]["seen"]) == ("1", "lost my bag")
    assert out[1] == {"line": 2, "id": "2", "error": "mapping: text: data.text is not present"}
    assert out[2] == {"line": 3, "id": "3", "error": "invalid JSON: Expecting value at line 1 column 1"}
    text = CliRunner().invoke(app, ["classify", "--input", "lines"], input="plain words\n",
                              env={"STREAMSENSE_INPUTS": str(path)})
    assert [json.loads(line)["seen"] for line in text.stdout.splitlines()] == ["plain words"]
    both = CliRunner().invoke(app, ["classify", "--input", "lines", "--kind", "ticket"], input="",
                              env={"STREAMSENSE_INPUTS": str(path)})
    assert both.exit_code == 2 and "--input takes the kind and format from the declaration" in both.stderr


# --- the pipeline: on_error and skips -------------------------------------------------------------------------------

def test_the_pipeline_dead_letters_skips_and_stops_as_declared(classifier, tmp_path):
    declaration = GOOD + '\n[[input]]\ntopic = "strict"\nkind = "post"\non_error = "stop"\n'
    settings = Settings(inputs=_file(tmp_path, declaration), topic_predictions="out", topic_dead_letter="dlq")
    processor = Processor(classifier, build_topics(settings), AlertRules.load())
    messages = [
        _msg({"data": {"id": "1", "text": "I love this"}}, topic="tweets", offset=0),
        _msg({"data": {"id": "2"}}, topic="tweets", offset=1),
        _msg({"op": "c", "after": {"id": 3, "description": "refund please"}}, topic="helpdesk.public.tickets",
             offset=0),
        _msg({"op": "d", "before": {"id": 3}}, topic="helpdesk.public.tickets", offset=1),
        _msg(None, topic="helpdesk.public.tickets", offset=2),
        _msg({"op": "c", "after": {"id": 4}}, topic="helpdesk.public.tickets", offset=3),
        _msg(b"hello there", topic="lines", key=b"L1", offset=0),
    ]
    out = processor.process(messages)
    assert sorted(r["message_id"] for r in out.batch.predictions) == ["1", "3", "L1"]
    [dead] = out.batch.dead_letters
    assert (dead["source_topic"], dead["source_offset"], dead["error"]) == (
        "tweets", 1, "mapping: text: data.text is not present")
    assert dict(out.skipped) == {("helpdesk.public.tickets", "delete"): 1,
                                 ("helpdesk.public.tickets", "tombstone"): 1, ("helpdesk.public.tickets", "error"): 1}
    assert out.batch.offsets == {("tweets", 1): 2, ("helpdesk.public.tickets", 1): 4, ("lines", 1): 1}
    with pytest.raises(InputStopped, match=r"input 'strict' stops the worker \(on_error = \"stop\"\): "
                                           r"strict\[1\]@7: invalid JSON"):
        processor.process([_msg(b"{oops", topic="strict", offset=7)])


# --- end to end: every shape of the issue, on both brokers ----------------------------------------------------------

E2E = """
[[input]]
topic = "tw2-{u}"
kind = "post"
[input.fields]
id = "data.id"
text = "data.text"
lang = "data.lang"
created_at = "data.created_at"
channel = {{ const = "twitter" }}

[[input]]
topic = "stored-{u}"
kind = "post"
[input.fields]
id = ["id_str", "id"]
text = ["extended_tweet.full_text", "full_text", "text"]
author = "user.screen_name"
created_at = "created_at"

[[input]]
topic = "cdc-{u}"
kind = "ticket"
envelope = "debezium"
[input.fields]
id = "id"
subject = "subject"
body = "description"
customer_id = "customer_id"
created_at = "@envelope.ts_ms"

[[input]]
topic = "text-{u}"
kind = "post"
format = "string"
"""


def _metric(port: int, name: str) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
            if line.startswith(name)}


def test_every_foreign_shape_end_to_end(broker, unique, tmp_path):
    from streamsense.streams.schema import dead_letters, predictions
    from streamsense.streams.store import Store
    from tests.helpers import as_lines, consume_all, produce, settings_for, wait_until, worker

    database_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    port = free_port()
    path = _file(tmp_path, E2E.format(u=unique))
    settings = settings_for(broker.bootstrap_servers, database_url, unique, inputs=path, web_port=port)
    store = Store(database_url, settings.app_id)
    store.migrate()
    v2 = [{"data": {"id": f"v{i}", "text": f"@united lost my bag again #{i}", "lang": "en",
                    "created_at": "2024-05-01T10:00:00.000Z"}} for i in range(20)]
    v2_bad = [{"data": {"id": "v-bad"}}]
    stored = [{"id": 1000 + i, "id_str": f"s{i}", "text": "short…", "truncated": True,
               "extended_tweet": {"full_text": f"the whole stored tweet number {i}, delayed again"},
               "user": {"screen_name": "ann"}, "created_at": "Wed Oct 10 20:19:24 +0000 2018"} for i in range(15)]
    row = {"subject": "refund", "description": "I was charged twice", "customer_id": 42}
    cdc = [{"schema": {}, "payload": {"op": "c", "after": {"id": i, **row}, "ts_ms": 1_700_000_000_000}}
           for i in range(10)]
    deletes = [{"schema": {}, "payload": {"op": "d", "before": {"id": i}, "after": None}} for i in range(3)]
    text = [f"plain text line {i}, the service was slow".encode() for i in range(12)]
    with worker(settings, tmp_path):
        produce(settings, f"tw2-{unique}", as_lines(v2 + v2_bad))
        produce(settings, f"stored-{unique}", as_lines(stored))
        produce(settings, f"cdc-{unique}", as_lines(cdc + deletes))
        produce(settings, f"text-{unique}", text)
        expected_rows = len(v2) + len(stored) + len(cdc) + len(text)
        wait_until(lambda: store.count(predictions) + store.count(dead_letters) >= expected_rows + 1, 120,
                   what="every message processed")
        skipped = wait_until(lambda: _metric(port, "streamsense_skipped_total"), 30, what="skips counted")
        with store.engine.connect() as conn:
            rows = conn.execute(predictions.select()).all()
            dead = conn.execute(dead_letters.select()).all()
    by_topic: dict[str, list] = {}
    for r in rows:
        by_topic.setdefault(r.source_topic, []).append(r)
    ids = lambda topic: sorted(r.message_id for r in by_topic.get(topic, []))  # noqa: E731
    assert ids(f"tw2-{unique}") == sorted(m["data"]["id"] for m in v2)  # 0 lost, 0 duplicated
    assert ids(f"stored-{unique}") == sorted(m["id_str"] for m in stored)
    assert ids(f"cdc-{unique}") == sorted(str(i) for i in range(10))
    assert len(ids(f"text-{unique}")) == len(text) == len(set(ids(f"text-{unique}")))
    assert len(rows) == expected_rows
    s0 = next(r for r in by_topic[f"stored-{unique}"] if r.message_id == "s0")
    assert s0.author == "ann" and s0.text.startswith("the whole stored tweet")  # the extended text won
    assert s0.created_at.replace(tzinfo=UTC) == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert {r.grp for r in by_topic[f"tw2-{unique}"]} == {"twitter"}
    t0 = next(r for r in by_topic[f"cdc-{unique}"] if r.message_id == "0")
    assert (t0.author, t0.kind) == ("42", "ticket") and t0.created_at.year == 2023
    [letter] = dead
    assert (letter.source_topic, letter.error) == (f"tw2-{unique}", "mapping: text: data.text is not present")
    assert skipped == {f'streamsense_skipped_total{{reason="delete",topic="cdc-{unique}"}}': 3.0}
    [letter] = consume_all(settings, settings.topic_dead_letter, 1, timeout=10)  # once: no second copy
    headers = dict(letter.headers)
    assert (headers["error"], headers["source_topic"]) == (b"mapping: text: data.text is not present",
                                                           f"tw2-{unique}".encode())


# --- the typed fast path agrees with the general one ----------------------------------------------------------------

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

from streamsense.streams.inputs.mapping import Typed  # noqa: E402

_TYPED_FIELDS = {"id": ["data.id", "id_str", "@coords"], "text": ["extended_tweet.full_text", "data.text", "text"],
                 "author": "includes.users.0.username", "channel": ["data.`a.b`", {"const": "c"}],
                 "lang": "data.list.1", "created_at": "data.created_at"}
_keys = st.sampled_from(["data", "id", "id_str", "text", "extended_tweet", "full_text", "includes", "users",
                         "username", "a.b", "list", "created_at", "0", "1"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["2018-10-10T20:19:24Z", "Wed Oct 10 20:19:24 +0000 2018", "1539202764123"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys | st.text(max_size=3), inner, max_size=5),
    max_leaves=30)


_texts = st.text(max_size=12) | st.sampled_from(["hi", " ", "\x00", ""]) | st.integers() | st.none()
_shaped = st.fixed_dictionaries({}, optional={
    "data": st.fixed_dictionaries({}, optional={
        "id": _texts, "text": _texts, "a.b": _texts | _values, "list": st.lists(_texts, max_size=3) | _values,
        "created_at": _texts | st.sampled_from(["2018-10-10T20:19:24Z", "Wed Oct 10 20:19:24 +0000 2018"]),
        "extra": _values}) | _values,
    "id_str": _texts, "text": _texts, "extended_tweet": st.fixed_dictionaries({}, optional={"full_text": _texts}),
    "includes": st.fixed_dictionaries({}, optional={"users": st.lists(
        st.fixed_dictionaries({}, optional={"username": _texts, "x": _values}), max_size=2) | _values}),
    "other": _values})


def _general(reader, msg):
    try:
        return reader.fields.record(reader.format.decode(msg.value, msg), msg, None)
    except DecodeError as exc:
        return exc.reason


@hsettings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values | _shaped)
def test_the_typed_path_gives_what_the_general_path_gives(value):
    reader = _input(fields=_TYPED_FIELDS)
    assert isinstance(reader.typed, Typed)
    msg = _msg(json.dumps(value).encode())
    try:
        typed = reader.typed.record(msg.value, msg)
    except DecodeError as exc:
        typed = exc.reason
    if typed is not None:  # where it answers, it answers as the general path does
        assert typed == _general(reader, msg)


def test_the_typed_path_answers_the_common_shapes_and_leaves_the_rest():
    reader = _input(fields=TWITTER_V2)
    v2 = {"data": {"id": "1", "text": "hi", "lang": "en", "created_at": "2024-05-01T10:00:00Z"}, "meta": [1, {}]}
    assert reader.typed.record(json.dumps(v2).encode(), _msg(None)) == reader.read(_msg(v2))
    for odd in ({"data": "not an object"}, [v2], {"data": {"id": "1"}}):
        assert reader.typed.record(json.dumps(odd).encode(), _msg(None)) is None  # the general path decides
    assert reader.typed.record(b'{"x": "\xff", "data": {"id": "1", "text": "hi"}}', _msg(None)) is None
    assert _input(fields={"id": "@key", "text": "@value"}).typed is None  # the whole value: general path only
    assert _input(fields={"id": "a", "text": "a.b"}).typed is None  # `a` a value and an object: general path
    assert _input(envelope="debezium").typed is None


def test_on_error_stop_stops_the_worker_and_a_restart_loses_nothing(broker, unique, tmp_path):
    """on_error = "stop": the worker exits (status 65) with the reason in one line; the batch with the bad message is
    not stored, so after the declaration is fixed (dead_letter) a restart reads it again: 0 lost, 0 duplicated."""
    from streamsense.localstack import worker_env
    from streamsense.streams.schema import dead_letters, predictions
    from streamsense.streams.store import Store
    from tests.helpers import as_lines, produce, settings_for, wait_until, worker

    database_url = f"sqlite:///{tmp_path / 'stop.db'}"
    topic = f"strict-{unique}"
    declaration = '[[input]]\ntopic = "{t}"\nkind = "post"\non_error = "{e}"\n[input.fields]\nid = "i"\ntext = "t"\n'
    path = _file(tmp_path, declaration.format(t=topic, e="stop"))
    settings = settings_for(broker.bootstrap_servers, database_url, unique, inputs=path)
    store = Store(database_url, settings.app_id)
    store.migrate()
    good = [{"i": f"g{n}", "t": f"fine message {n}"} for n in range(30)]
    with worker(settings, tmp_path, "strict") as process:
        produce(settings, topic, as_lines(good[:20]) + [b'{"i": "bad"}'] + as_lines(good[20:]))
        wait_until(lambda: process.poll() is not None, 90, what="the worker stops")
        assert process.returncode == 65
    log = (tmp_path / "strict.log").read_text()
    assert f"input '{topic}' stops the worker (on_error = \"stop\"): {topic}[" in log
    assert "mapping: text: t is not present; stopping" in log
    # CLI: the same declaration, tried from the topic itself (no group: the worker's position is untouched)
    result = CliRunner().invoke(app, ["inputs", "try", topic, "--from-topic", "--limit", "40", "--timeout", "20"],
                                env=worker_env(settings))
    assert result.exit_code == 0, result.output
    [stop] = [line for line in result.stdout.splitlines() if ": stop: " in line]
    assert stop.endswith("mapping: text: t is not present (the worker would stop here)")
    assert "31 messages: 30 records, 0 dead letters, 0 skipped, 1 would stop the worker" in result.stderr
    path.write_text(declaration.format(t=topic, e="dead_letter"))
    with worker(settings, tmp_path, "fixed"):
        wait_until(lambda: store.count(predictions) + store.count(dead_letters) >= 31, 90, what="all processed")
    with store.engine.connect() as conn:
        ids = sorted(r.message_id for r in conn.execute(predictions.select()))
        [letter] = conn.execute(dead_letters.select()).all()
    assert ids == sorted(g["i"] for g in good) and letter.error == "mapping: text: t is not present"
