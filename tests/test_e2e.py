"""End to end on real parts: embedded broker, a worker process, SQLite and PostgreSQL, the shipped model."""

import json

import pytest

from streamsense.streams.schema import alerts, dead_letters, predictions

from streamsense.streams.store import Store
from tests.helpers import as_lines, consume_all, produce, settings_for, wait_until, worker

RISKY_TICKET = {"id": "risky-1", "subject": "Unauthorized charge",
                "body": "You charged me twice without permission. This is fraud and my lawyer will hear about it. "
                        "Cancel my account immediately.", "customer_id": "c-9", "product": "billing",
                "priority": "urgent"}
MALFORMED = [b"{not json", b'{"id": "m1"}', b'{"id": "m2", "text": ["list"]}', b"\xff\xfe\xfd"]


def _posts(n: int) -> list[dict]:
    texts = ["I love the new update, great job!", "The app keeps crashing, this is awful.",
             "Store opens at 9am tomorrow.", "Worst customer service ever, never again."]
    return [{"id": f"p{i}", "text": f"{texts[i % len(texts)]} #{i}", "channel": "acme"} for i in range(n)]


def _tickets(n: int) -> list[dict]:
    return [{"id": f"t{i}", "subject": "Question", "body": f"How do I change my delivery address? ref {i}",
             "product": "shipping"} for i in range(n)] + [RISKY_TICKET]


def test_pipeline_end_to_end(broker, database_url, unique, tmp_path):
    settings = settings_for(broker.bootstrap_servers, database_url, unique)
    posts, tickets = _posts(120), _tickets(59)
    store = Store(database_url, settings.app_id)
    store.migrate()
    with worker(settings, tmp_path):
        produce(settings, settings.topic_posts, as_lines(posts) + MALFORMED[:2])
        produce(settings, settings.topic_tickets, as_lines(tickets) + MALFORMED[2:])
        total = len(posts) + len(tickets) + len(MALFORMED)
        wait_until(lambda: store.count(predictions) + store.count(dead_letters) >= total, 120, what="all processed")

        with store.engine.connect() as conn:
            rows = conn.execute(predictions.select()).all()
        assert sorted(r.message_id for r in rows if r.kind == "post") == sorted(p["id"] for p in posts)
        assert sorted(r.message_id for r in rows if r.kind == "ticket") == sorted(t["id"] for t in tickets)
        for r in rows:
            assert r.sentiment in ("negative", "neutral", "positive")
            assert r.p_negative + r.p_neutral + r.p_positive == pytest.approx(1.0, abs=2e-3)
            assert r.risk_level in ("low", "medium", "high", "critical")
        risky = next(r for r in rows if r.message_id == "risky-1")
        assert risky.risk_level == "critical"
        assert {"fraud", "legal_threat", "churn"} <= set(risky.risk_signals)
        assert store.count(dead_letters) == len(MALFORMED)

        dlq = consume_all(settings, settings.topic_dead_letter, len(MALFORMED))
        assert sorted(m.value for m in dlq) == sorted(MALFORMED)
        for m in dlq:
            headers = dict(m.headers)
            assert headers["error"]
            assert headers["source_topic"].decode() in (settings.topic_posts, settings.topic_tickets)
            assert int(headers["source_offset"]) >= 0

        wait_until(lambda: not store.unpublished_alerts(), 30, what="alerts published")
        alert_messages = [json.loads(m.value) for m in consume_all(settings, settings.topic_alerts, store.count(alerts))]
        # one alert for the message, carrying both rules' reasons
        [risky] = [a for a in alert_messages if a["key"] == "ticket:risky-1"]
        assert (risky["rule"], risky["severity"]) == ("high_risk", "critical")
        assert risky["evidence"][0]["message_id"] == "risky-1"
        assert {r["rule"] for r in risky["evidence"][0]["reasons"]} == {"high_risk", "legal_or_fraud"}
        assert store.count(alerts, key="ticket:risky-1") == 1

        out = consume_all(settings, settings.topic_predictions, len(rows))
        assert {json.loads(m.value)["id"] for m in out} == {r.message_id for r in rows}

        # Replaying every message: offsets move on, but no row or alert is added.
        alerts_before = store.count(alerts)
        produce(settings, settings.topic_posts, as_lines(posts) + MALFORMED[:2])
        produce(settings, settings.topic_tickets, as_lines(tickets) + MALFORMED[2:])
        topics = [settings.topic_posts, settings.topic_tickets]
        wait_until(lambda: sum(store.next_offsets(topics).values()) >= 2 * total, 120, what="replay processed")
        assert store.count(predictions) == len(posts) + len(tickets)
        assert store.count(alerts) == alerts_before
    store.dispose()
