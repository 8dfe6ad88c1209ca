"""`streamsense demo`: embedded broker + SQLite + a worker process, replay the bundled samples, summarise."""

import asyncio
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from streamsense.localstack import local_stack, stop_worker
from streamsense.models.risk import LEVELS
from streamsense.settings import STREAMS_DIR, Settings
from streamsense.streams.bi import jsonable, utc
from streamsense.streams.kafka import client_options
from streamsense.streams.produce import produce_lines, read_lines
from streamsense.streams.schema import alerts, dead_letters, predictions
from streamsense.streams.store import Store

SAMPLES = STREAMS_DIR / "samples"
# Messages a real feed will contain sooner or later; each must end in the dead-letter topic with a reason.
MALFORMED = [b"this is not json", b'{"id": "bad-1"}', b'{"id": "bad-2", "text": 42}', b'{"id": "bad-3", "text": "   "}',
             b'{"id": "bad-4", "text": "\xff\xfe broken utf-8"}', b"[1, 2, 3]"]
MALFORMED_POSTS = 3  # the first three go to the posts topic, the rest to the tickets topic
ALERT_EXAMPLES = 5


def wait_for(store: Store, expected: int, worker: subprocess.Popen, timeout: float) -> int:
    """Poll until `expected` messages are accounted for (stored or dead-lettered); returns the count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = store.count(predictions) + store.count(dead_letters)
        if seen >= expected or time.monotonic() > deadline:
            return seen
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode}")
        time.sleep(0.1)


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def summarise(store: Store, produced: dict[str, int], seconds: float, ready_at: datetime | None = None,
              ready_seconds: float | None = None, topics: dict[str, str] | None = None,
              malformed: dict[str, int] | None = None, foreign: tuple[str, ...] = ()) -> dict:
    """What the demo did, from the store: per kind (topic, produced, stored, dead letters, sentiment, risk), the dead
    letters with their reasons, the alerts (the windowed ones in full, the per-message ones counted per rule and a
    few examples), and produce→SQL latency of the messages produced after `ready_at` (None: not measured). The
    `foreign` topics (`demo --inputs`) are left out of the per-kind counts."""
    topics = topics or {"posts": "posts", "tickets": "tickets"}
    malformed = malformed or {}
    with store.engine.connect() as conn:
        def of_kind(kind):  # the built-in topics' rows of that kind (a declared foreign topic's are summarised apart)
            return (predictions.c.kind == kind) & predictions.c.source_topic.not_in(list(foreign))

        def grouped(column, kind):
            rows = conn.execute(select(column, func.count()).where(of_kind(kind)).group_by(column))
            return {k: n for k, n in sorted(rows)}

        dead = conn.execute(select(dead_letters.c.source_topic, dead_letters.c.source_partition,
                                   dead_letters.c.source_offset, dead_letters.c.error)
                            .order_by(dead_letters.c.source_topic, dead_letters.c.source_partition,
                                      dead_letters.c.source_offset)).all()
        summary = {}
        for kind, name in (("post", "posts"), ("ticket", "tickets")):
            summary[name] = {"topic": topics[name], "produced": produced[name], "malformed": malformed.get(name, 0),
                             "stored": conn.execute(select(func.count()).where(of_kind(kind))).scalar_one(),
                             "dead_letters": sum(1 for d in dead if d.source_topic == topics[name]),
                             "sentiment": grouped(predictions.c.sentiment, kind),
                             "risk": grouped(predictions.c.risk_level, kind)}
        times = conn.execute(select(predictions.c.produced_at, predictions.c.stored_at)).all()
        alert_rows = conn.execute(select(alerts.c.severity, alerts.c.rule, alerts.c.key, alerts.c.window_start,
                                         alerts.c.window_end, alerts.c.summary, alerts.c.evidence)
                                  .order_by(alerts.c.created_at, alerts.c.rule, alerts.c.key)).all()
        model = conn.execute(select(predictions.c.model_version).limit(1)).scalar()
        by_model = dict(conn.execute(select(predictions.c.model_version, func.count())
                                     .group_by(predictions.c.model_version)
                                     .order_by(func.count().desc(), predictions.c.model_version)).all())
        languages = conn.execute(select(predictions.c.lang, predictions.c.supported, func.count())
                                 .group_by(predictions.c.lang, predictions.c.supported)).all()
    # Latency only for what was produced once the worker was running: the rest waited for its start, not for it.
    after = [(utc(p), utc(s)) for p, s in times if p and s and (ready_at is None or utc(p) >= ready_at)]
    latencies = sorted((s - p).total_seconds() * 1000 for p, s in after) if ready_at else []
    stored = [s for _, s in after]
    span = (max(stored) - min(stored)).total_seconds() if len(stored) > 1 else 0.0
    windowed = [a for a in alert_rows if a.window_start is not None]
    # most severe first (stable: stored order within a severity), so a reader sees what pages before what is watched
    per_message = sorted((a for a in alert_rows if a.window_start is None),
                         key=lambda a: -LEVELS.index(a.severity) if a.severity in LEVELS else 0)
    by_rule: dict[str, int] = {}
    for a in alert_rows:
        by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
    summary.update({
        # messages per identified language, and those the model does not read (flagged unsupported_language)
        "languages": {lang or "none": n for lang, n in sorted(_per_language(languages, None).items(),
                                                              key=lambda item: (-item[1], item[0] or ""))},
        "unsupported": _per_language(languages, False),
        "models": by_model,  # results per model: Chinese text is read by the Chinese model
        "alerts": len(alert_rows),
        "alerts_by_rule": dict(sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
        "windowed_alerts": [{"rule": a.rule, "severity": a.severity, "key": a.key,
                             "window_start": jsonable(a.window_start), "window_end": jsonable(a.window_end),
                             "summary": a.summary, **_about(a.evidence)} for a in windowed],
        "dlq": len(dead),
        "dead_letters": [{"topic": d.source_topic, "partition": d.source_partition, "offset": d.source_offset,
                          "error": d.error} for d in dead],
        "seconds": round(seconds, 2),
        "worker_ready_s": None if ready_seconds is None else round(ready_seconds, 2),
        "worker_msgs_per_s": round(len(stored) / span, 1) if span else None,
        "latency_ms": {"p50": round(_percentile(latencies, 0.5)), "p95": round(_percentile(latencies, 0.95)),
                       "messages": len(latencies)} if latencies else None,
        "model": model,
        "alert_examples": [f"[{a.severity}] {a.summary}" for a in per_message[:ALERT_EXAMPLES]],
    })
    return summary


def run_demo(settings: Settings, db_path: Path, timeout: float = 300.0, log=print, inputs: bool = False) -> dict:
    """The demo; with `inputs`, also the foreign-shape topics of streamsense/demo_inputs.py, declared in an inputs
    file beside the database (summary["inputs"]: per topic, what was produced, stored, dead-lettered, skipped)."""
    started = time.monotonic()
    app_id = f"streamsense-demo-{uuid.uuid4().hex[:8]}"
    overrides, foreign = {}, []
    if inputs:
        from streamsense.demo_inputs import foreign_topics, write_declaration

        foreign = foreign_topics(SAMPLES, settings)
        overrides["inputs"] = write_declaration(db_path.with_suffix(".inputs.toml"), settings, foreign)
    with local_stack(settings, db_path, app_id=app_id, **overrides) as (settings, store, (worker,)):
        log(f"broker on {settings.kafka_bootstrap_servers}, database {db_path}; worker started")
        posts = read_lines(SAMPLES / "posts.jsonl") + MALFORMED[:MALFORMED_POSTS]
        tickets = read_lines(SAMPLES / "tickets.jsonl") + MALFORMED[MALFORMED_POSTS:]
        options = client_options(settings)

        # The first post alone, until it is stored: then the worker has loaded the model, joined the group and is
        # consuming, and the latency of what follows measures the pipeline, not the worker's start.
        first = asyncio.run(produce_lines(posts[:1], settings.topic_posts, options))
        if wait_for(store, first, worker, timeout) < first:
            raise TimeoutError(f"the worker stored nothing in {timeout}s")
        ready_at, ready_seconds = datetime.now(timezone.utc), time.monotonic() - started
        log(f"worker ready: first result stored {ready_seconds:.1f} s after start")

        async def produce_rest():
            return (await produce_lines(posts[1:], settings.topic_posts, options),
                    await produce_lines(tickets, settings.topic_tickets, options))

        sent_posts, sent_tickets = asyncio.run(produce_rest())
        sent_posts += first
        log(f"produced {sent_posts} posts and {sent_tickets} tickets (including {len(MALFORMED)} malformed)")
        expected = sent_posts + sent_tickets
        for topic in foreign:
            asyncio.run(produce_lines(topic.messages, topic.topic, options))
            expected += len(topic.messages) - topic.skipped  # a skipped message leaves no row
            log(f"produced {len(topic.messages)} messages to {topic.topic} ({topic.shape})")
        seen = wait_for(store, expected, worker, timeout)
        if seen < expected or not _consumed(store, foreign, timeout):
            raise TimeoutError(f"only {seen} of {expected} messages were processed in {timeout}s")
        stop_worker(worker)  # its last commits are in before the summary is read
        malformed = {"posts": MALFORMED_POSTS, "tickets": len(MALFORMED) - MALFORMED_POSTS}
        produced = {name: sent - malformed[name] for name, sent in (("posts", sent_posts), ("tickets", sent_tickets))}
        summary = summarise(store, produced, time.monotonic() - started, ready_at, ready_seconds,
                            {"posts": settings.topic_posts, "tickets": settings.topic_tickets}, malformed,
                            tuple(t.topic for t in foreign))
        if foreign:
            summary["inputs"] = [_input_summary(store, topic) for topic in foreign]
        return summary


def _consumed(store: Store, foreign: list, timeout: float) -> bool:
    """Whether the stored offsets of each foreign topic cover every message produced to it (skipped ones leave
    no row: their offsets are what says they were read)."""
    deadline = time.monotonic() + timeout
    while True:
        if all(sum(store.next_offsets([t.topic]).values()) >= len(t.messages) for t in foreign):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _input_summary(store: Store, topic) -> dict:
    consumed = sum(store.next_offsets([topic.topic]).values())
    stored = store.count(predictions, source_topic=topic.topic)
    dead = store.count(dead_letters, source_topic=topic.topic)
    return {"topic": topic.topic, "shape": topic.shape, "produced": len(topic.messages), "stored": stored,
            "dead_letters": dead, "skipped": consumed - stored - dead}


def _about(evidence) -> dict:
    """What a windowed alert is about, from its evidence (streams/alerting/terms.py): its terms, its duplicates and
    the excerpts of its representative messages (the evidence's first items)."""
    evidence = evidence if isinstance(evidence, list) else []
    about = (evidence[0].get("about") if evidence and isinstance(evidence[0], dict) else None) or {}
    return {"terms": about.get("terms", []), "duplicates": about.get("duplicates"),
            "examples": [e.get("excerpt", "") for e in evidence[:about.get("examples", 0)]]}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _window(start: str, end: str | None) -> str:
    """"2026-11-01T09:25:00Z", "2026-11-01T09:30:00Z" → "2026-11-01 09:25 → 09:30 UTC"."""
    if not end:
        return f"from {start[:10]} {start[11:16]} UTC"
    day, end_day = start[:10], end[:10]
    return f"{day} {start[11:16]} → {end[11:16] if end_day == day else end[:10] + ' ' + end[11:16]} UTC"


def _per_language(rows, supported) -> dict:
    """Messages per language from (lang, supported, count) rows: all of them (supported None), or those with it."""
    out: dict = {}
    for lang, flag, n in rows:
        if supported is None or flag is supported:
            out[lang] = out.get(lang, 0) + n
    return out


def print_summary(out: Console, summary: dict, db: Path | None = None) -> None:
    """The demo's summary as `streamsense demo` prints it (`--json` prints `summary` itself)."""
    malformed = summary["posts"]["malformed"] + summary["tickets"]["malformed"]
    table = Table(title="StreamSense demo", caption=f"produced = stored + dead letters ({malformed} of the messages "
                                                    "are malformed on purpose)")
    for col in ("topic", "produced", "stored", "dead letters", "sentiment", "risk"):
        table.add_column(col)
    for name in ("posts", "tickets"):
        part = summary[name]
        table.add_row(escape(part["topic"]), str(part["produced"] + part["malformed"]), str(part["stored"]),
                      str(part["dead_letters"]), _counts(part["sentiment"]), _counts(part["risk"]))
    out.print(table)
    if summary.get("inputs"):
        declared = Table(title="declared inputs (other systems' shapes, one inputs file)",
                         caption="produced = stored + dead letters + skipped (Debezium deletes)")
        for col in ("topic", "shape", "produced", "stored", "dead letters", "skipped"):
            declared.add_column(col)
        for part in summary["inputs"]:
            declared.add_row(escape(part["topic"]), escape(part["shape"]), str(part["produced"]), str(part["stored"]),
                             str(part["dead_letters"]), str(part["skipped"]))
        out.print(declared)
    if summary.get("languages"):
        unsupported = summary.get("unsupported") or {}
        out.print("languages: " + ", ".join(f"{escape(str(lang))} {n}" for lang, n in summary["languages"].items())
                  + (f" (read by no model, classified and flagged unsupported_language: "
                     f"{', '.join(f'{escape(str(lang))} {n}' for lang, n in unsupported.items())})" if unsupported
                     else ""))
    if summary.get("models"):
        out.print("models: " + ", ".join(f"{escape(str(m))} {n}" for m, n in summary["models"].items()))
    out.print(f"dead letters: [bold]{summary['dlq']}[/]")
    for d in summary["dead_letters"]:
        out.print(f"  {escape(d['topic'])}[dim]@{d['partition']}:{d['offset']}[/] {escape(d['error'])}")
    windowed = summary["windowed_alerts"]
    out.print(f"alerts: [bold]{summary['alerts']}[/] ({escape(_counts(summary['alerts_by_rule']))})")
    out.print(f"  windowed: {len(windowed)}")
    for a in windowed:
        out.print(f"    {escape('[' + a['severity'] + ']')} [bold]{escape(a['rule'])}[/] [cyan]{escape(a['key'])}[/] "
                  f"[dim]{_window(a['window_start'], a['window_end'])}[/]: {escape(a['summary'])}")
        if a.get("terms"):
            out.print("      terms: " + ", ".join(f"{escape(t['term'])} ({t['count']} messages, {t['baseline']} in "
                                                  f"the baseline, z {t['z']})" for t in a["terms"]))
        for example in a.get("examples", []):
            out.print(f"      [dim]•[/] [italic]{escape(example[:120])}[/]")
    out.print(f"  per message: {summary['alerts'] - len(windowed)}"
              + (", for example:" if summary["alert_examples"] else ""))
    for line in summary["alert_examples"]:
        out.print(f"    {escape(line)}")
    out.print(f"model: {escape(str(summary['model']))}")
    latency = summary["latency_ms"]
    ready = summary.get("worker_ready_s")
    worker = [f"first result stored {ready} s after start (model load, group join)"] if ready is not None else []
    if latency:
        worker.append(f"the {latency['messages']} results produced after that, in one burst: produce→SQL p50 "
                      f"{latency['p50']} ms, p95 {latency['p95']} ms (queueing included), "
                      f"{summary['worker_msgs_per_s']} msg/s")
    else:
        worker.append("produce→SQL latency not measured (nothing was produced once the worker was ready)")
    out.print("worker: " + "; ".join(worker))
    out.print(f"total {summary['seconds']} s" + (f"; results are in {escape(str(db))} (tables predictions, alerts, "
                                                 f"dead_letters; `streamsense query --list`)" if db else ""))
