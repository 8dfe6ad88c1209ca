import json

import pytest

from streamsense.streams.records import MAX_MESSAGE_BYTES, DecodeError, Post, Ticket, decode


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
