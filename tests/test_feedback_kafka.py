"""The feedback topic on a real broker (both kinds): verdicts stored with their offsets in SQL, malformed ones and
ones naming nothing stored dead-lettered with the reason, a restart reading nothing twice."""

import asyncio
import json
import threading

from sqlalchemy import create_engine, select

from streamsense.streams.feedback.consumer import REASON, consume, group_id
from streamsense.streams.feedback.verdicts import stored
from streamsense.streams.kafka import ensure_topics
from streamsense.streams.schema import consumer_offsets, dead_letters
from tests.helpers import consume_all, produce, settings_for, wait_until
from tests.test_feedback import T0, _preds, _store


class Running:
    """`consume` in a thread with its own event loop, stopped on exit."""

    def __init__(self, settings):
        self.settings = settings
        self.result = None

    def __enter__(self):
        ready = threading.Event()

        def main():
            async def go():
                self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
                ready.set()
                self.result = await consume(self.settings, self.stop)
            asyncio.run(go())

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_verdicts_from_the_feedback_topic(broker, tmp_path, unique):
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    settings = settings_for(broker.bootstrap_servers, url, unique, topic_feedback=f"feedback-{unique}")
    _store(url, _preds())
    ensure_topics(settings, [settings.topic_feedback, settings.topic_dead_letter])
    good = [{"target": "post:p0", "head": "sentiment", "label": "neutral", "by": "ann"},
            {"target": "post:p1", "head": "complaint", "verdict": "right", "by": "ann", "at": T0.isoformat()},
            {"target": "post:p0", "head": "sentiment", "label": "neutral", "by": "ann"}]  # the same again
    bad = [b"{not json", json.dumps({"target": "post:p9", "head": "sentiment", "label": "neutral",
                                     "by": "ann"}).encode(), json.dumps({"target": "post:p2"}).encode()]
    produce(settings, settings.topic_feedback, [json.dumps(v).encode() for v in good] + bad)
    engine = create_engine(url)

    def dead() -> list:
        with engine.connect() as conn:
            return list(conn.execute(select(dead_letters)))

    with Running(settings) as running:
        wait_until(lambda: len(stored(engine)) == 2 and len(dead()) == 3, 60, what="verdicts and dead letters")
    assert running.result.added == 2 and running.result.unchanged == 1
    rows = {(r["message_id"], r["head"]): (r["verdict"], r["label"], r["source"]) for r in stored(engine)}
    assert rows == {("p0", "sentiment"): ("wrong", "neutral", "kafka"),
                    ("p1", "complaint"): ("right", "not_complaint", "kafka")}
    reasons = sorted(r.error for r in dead())
    assert all(r.startswith(REASON) for r in reasons)
    assert any("not JSON" in r for r in reasons) and any("no stored prediction post:p9" in r for r in reasons)
    assert any("give a label or a verdict" in r or "'head'" in r for r in reasons)
    with engine.connect() as conn:
        offsets = {r.partition: r.next_offset for r in conn.execute(
            select(consumer_offsets).where(consumer_offsets.c.group_id == group_id(settings)))}
    assert sum(offsets.values()) == 6  # every message, on whichever partitions they landed
    letters = consume_all(settings, settings.topic_dead_letter, 3)
    assert sorted(dict(m.headers)["error"].decode() for m in letters) == reasons

    # a restart reads from the stored offsets: nothing twice; a new verdict is taken
    produce(settings, settings.topic_feedback, [json.dumps(
        {"target": "post:p2", "head": "sentiment", "verdict": "right", "by": "bo"}).encode()])
    with Running(settings) as again:
        wait_until(lambda: len(stored(engine)) == 3, 60, what="the new verdict")
    assert again.result.added == 1 and again.result.unchanged == 0 and not again.result.rejected
    assert len(dead()) == 3
    engine.dispose()
