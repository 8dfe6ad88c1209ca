"""`streamsense bench`: model only, tokenize + infer, end to end through the broker, and a transformers baseline,
on the same real tweets, in one run."""

import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, union_all

from streamsense.demo import SAMPLES
from streamsense.localstack import local_stack
from streamsense.models.data import require_datasets
from streamsense.registries import registry_for
from streamsense.settings import BENCH_POSTGRES_URL, Settings
from streamsense.streams.kafka import client_options
from streamsense.streams.produce import produce_lines
from streamsense.streams.schema import dead_letters, predictions
from streamsense.streams.store import Store
from streamsense.streams.worker import load_classifier




ZH_SETS = ("waimai_10k", "online_shopping_10_cats", "cold")  # real Chinese reviews and posts, test splits


def bench_texts(settings: Settings, n: int, zh_share: float = 0.0) -> list[str]:
    """Real tweets (TweetEval sentiment test split), repeated to `n`; with `zh_share`, that share of the messages
    (spread evenly) are real Chinese reviews and posts instead (the Chinese sets' test splits, taken in turn), for
    mixed-traffic runs (`bench --zh-share`)."""
    path = Path(settings.datasets_dir) / "tweeteval_sentiment" / "test.jsonl"
    if not path.exists():
        path = SAMPLES / "posts.jsonl"
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    if not zh_share:
        return [texts[i % len(texts)] for i in range(n)]
    if not 0 < zh_share <= 1:
        raise ValueError(f"zh_share must be within (0, 1], not {zh_share}")
    require_datasets(settings.datasets_dir, ZH_SETS, ("test",))
    sets = []
    for name in ZH_SETS:
        with open(Path(settings.datasets_dir) / name / "test.jsonl", encoding="utf-8") as f:
            sets.append([json.loads(line)["text"] for line in f])
    chinese = [t for group in zip(*sets) for t in group]  # one of each set in turn
    out, english, zh = [], 0, 0
    for i in range(n):
        if int((i + 1) * zh_share) > int(i * zh_share):
            out.append(chinese[zh % len(chinese)])
            zh += 1
        else:
            out.append(texts[english % len(texts)])
            english += 1
    return out


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def model_stages(classifier, texts: list[str], batch_size: int) -> dict:
    """Model only (pre-tokenized batches) and tokenize + infer, same batches, same order."""
    runtime = classifier.runtime
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    runtime.infer(runtime.tokenize(batches[0]))  # warm-up
    encoded = [runtime.tokenize(b) for b in batches]
    start = time.perf_counter()
    for e in encoded:
        runtime.infer(e)
    model_only = time.perf_counter() - start
    start = time.perf_counter()
    for b in batches:
        runtime.infer(runtime.tokenize(b))
    both = time.perf_counter() - start
    return {"model_only_msgs_per_s": _rate(len(texts), model_only), "tokenize_infer_msgs_per_s": _rate(len(texts), both)}


def baseline(texts: list[str], per_message: int) -> dict:
    """What a user would otherwise write: a transformers pipeline over the same encoder (needs the train extra)."""
    try:
        import torch
        from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

        from streamsense.models.network import base_model_path
    except ImportError as exc:
        return {"baseline_pipeline_msgs_per_s": None, "baseline_pipeline_batched_msgs_per_s": None,
                "baseline_note": f"skipped: {exc.name} not installed (pip install .[train])"}
    from transformers.utils import logging as transformers_logging

    path = base_model_path()
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    # The encoder has no classification head: its "LOAD REPORT … classifier.weight MISSING" is expected here (the
    # baseline measures speed, not accuracy), so only errors are shown while loading, and no progress bar.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        model = BertForSequenceClassification.from_pretrained(path, num_labels=3)
        device = 0 if torch.cuda.is_available() else -1
        clf = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(path),
                       device=device, truncation=True, max_length=128)
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    clf(texts[:8])
    start = time.perf_counter()
    for text in texts[:per_message]:
        clf(text)
    single = time.perf_counter() - start
    start = time.perf_counter()
    clf(texts, batch_size=64)
    batched = time.perf_counter() - start
    return {"baseline_pipeline_msgs_per_s": _rate(per_message, single),
            "baseline_pipeline_batched_msgs_per_s": _rate(len(texts), batched),
            "baseline_note": "transformers pipeline on the same MiniLM-L6 encoder (torch, fp32), batch_size=64"}


class ProcessSampler:
    """CPU share and RSS of processes from /proc, sampled in a thread; several processes are summed."""

    def __init__(self, pids: list[int], interval: float = 0.5):
        self.pids, self.interval, self.cpu, self.rss = pids, interval, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ticks(self) -> int:
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total

    def _rss_mb(self) -> float:
        kb = 0
        for pid in self.pids:
            line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
            kb += int(line.split()[1])
        return kb / 1024

    def _run(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        last, last_t = self._ticks(), time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                ticks, now = self._ticks(), time.monotonic()
                self.cpu.append(100.0 * (ticks - last) / hz / (now - last_t))
                last, last_t = ticks, now
                self.rss.append(self._rss_mb())
            except (FileNotFoundError, ProcessLookupError):
                return

    def __enter__(self):
        self._first = self._ticks()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        try:
            self.cpu_seconds = (self._ticks() - self._first) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError):
            self.cpu_seconds = None


def gpu_utilisation() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _produce_part(lines: list[bytes], topic: str, options: dict, rate: float | None,
                  keys: list[bytes] | None = None) -> int:
    return asyncio.run(produce_lines(lines, topic, options, chunk=pace_chunk(rate), rate=rate, keys=keys))

def pace_chunk(rate: float | None) -> int:
    """Messages sent together: 500 in a burst; paced, about 20 ms worth (1 to 100), so that a slow pace is not sent
    in clumps that the latency would then show. Each chunk waits for its acks (the producer lingers 5 ms, plus the
    round trip): with chunks of 10 ms, paced runs on Apache Kafka reached only half their rate on a loaded machine."""
    return 500 if not rate else max(1, min(100, -(-int(rate) // 50)))


def scrape_stages(procs: list) -> tuple[dict[str, float], int]:
    """Stage seconds summed over the workers' /metrics (streams/stages.py), and the messages they consumed."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    seconds: dict[str, float] = {}
    consumed = 0
    for process in procs:
        if getattr(process, "web_port", None) is None:
            continue
        with urlopen(f"http://127.0.0.1:{process.web_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "streamsense_stage_seconds_total":
                    seconds[sample.labels["stage"]] = seconds.get(sample.labels["stage"], 0.0) + sample.value
                elif sample.name == "streamsense_messages_in_total":
                    consumed += int(sample.value)
    return seconds, consumed


def stage_breakdown(seconds: dict[str, float], messages: int) -> dict[str, float]:
    """µs of wall time per message and stage, in pipeline order (the stages overlap in threads, so they do not add
    up to the elapsed time)."""
    from streamsense.streams.stages import STAGES

    order = [s for s in STAGES if s in seconds] + sorted(set(seconds) - set(STAGES))
    return {stage: round(seconds[stage] * 1e6 / messages, 1) for stage in order} if messages else {}


@contextmanager
def bench_database(kind: str, db_path: Path, admin_url: str):
    """The end-to-end store: a fresh SQLite file, or a fresh PostgreSQL database on `admin_url`'s server (dropped
    afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{db_path}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"streamsense_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def end_to_end(settings: Settings, texts: list[str], db_path: Path, timeout: float, rate: float | None,
               workers: int = 1, producers: int = 1, broker: str = "tansu", database: str = "sqlite",
               postgres_url: str = BENCH_POSTGRES_URL, shape: str = "fixed") -> dict:
    """The real broker → `workers` worker processes (one group) → SQL, every message counted; produced as fast as
    possible by `producers` processes, or paced at `rate` per second, in `shape` (SHAPES). Latency is produce time
    (Kafka timestamp) → SQL commit."""
    with bench_database(database, db_path, postgres_url) as url:
        return _end_to_end(settings, texts, db_path, timeout, rate, workers, producers, broker, url, shape)


#: the input shapes `bench --inputs` measures: the built-in one (records.decode's fast path), and Twitter API v2
#: messages read through a declared JSON mapping (streams/inputs/): the same texts, ids and channels either way
SHAPES = ("fixed", "twitter-v2")
TWITTER_V2_DECLARATION = """
[[input]]
topic = "{topic}"
kind = "post"
[input.fields]
id = "data.id"
text = "data.text"
author = "data.author_id"
channel = "includes.users.0.username"
"""


#: `--inputs avro`: the same posts in Avro through the schema registry (Confluent wire format), declared format "avro"
AVRO_POST = {"type": "record", "name": "BenchPost", "namespace": "streamsense.bench", "fields": [
    {"name": "id", "type": "string"}, {"name": "text", "type": "string"},
    {"name": "channel", "type": ["null", "string"], "default": None}]}
AVRO_DECLARATION = """
[[input]]
topic = "{topic}"
kind = "post"
format = "avro"
[input.fields]
id = "id"
text = "text"
channel = "channel"
"""
#: `--inputs protobuf`: the same posts in Protobuf through the schema registry, declared format "protobuf"
PROTOBUF_POST = """syntax = "proto3";
package streamsense.bench;
message BenchPost { string id = 1; string text = 2; optional string channel = 3; }
"""
PROTOBUF_DECLARATION = AVRO_DECLARATION.replace('format = "avro"', 'format = "protobuf"')
#: --inputs both / avro-both / protobuf-both: the pairs alternated A B A B in one run
PAIRS = {"both": ("fixed", "twitter-v2"), "avro-both": ("fixed", "avro"), "protobuf-both": ("fixed", "protobuf")}
#: what `bench --load --inputs` takes; those that need a schema registry
LOAD_INPUTS = ("fixed", "twitter-v2", "both", "avro", "avro-both", "protobuf", "protobuf-both")
REGISTRY_INPUTS = ("avro", "avro-both", "protobuf", "protobuf-both")
DECLARATIONS = {"twitter-v2": TWITTER_V2_DECLARATION, "avro": AVRO_DECLARATION, "protobuf": PROTOBUF_DECLARATION}


def avro_shaper(registry_url: str, topic: str):
    """`shaped` for the avro shape: the bench schema registered under "<topic>-value", each post framed with its id."""
    import io

    from fastavro import parse_schema, schemaless_writer

    from streamsense.streams.inputs.registry import RegistryClient, frame

    schema_id = RegistryClient(registry_url).register(f"{topic}-value", json.dumps(AVRO_POST))
    parsed = parse_schema(AVRO_POST)

    def shape(ident: str, text: str, channel: str) -> bytes:
        out = io.BytesIO()
        schemaless_writer(out, parsed, {"id": ident, "text": text, "channel": channel})
        return frame(schema_id, out.getvalue())
    return shape


def protobuf_shaper(registry_url: str, topic: str):
    """`shaped` for the protobuf shape: the bench .proto registered under "<topic>-value", each post framed with its
    id and the message indexes [0]."""
    from streamsense.streams.inputs.protobuf import ProtobufSchema, encode_indexes
    from streamsense.streams.inputs.registry import RegisteredSchema, RegistryClient, frame

    schema_id = RegistryClient(registry_url).register(f"{topic}-value", PROTOBUF_POST, "PROTOBUF")
    post = ProtobufSchema(RegisteredSchema(schema_id, "PROTOBUF", PROTOBUF_POST), None).message_class((0,))
    header = frame(schema_id, encode_indexes([0]))

    def shape(ident: str, text: str, channel: str) -> bytes:
        return header + post(id=ident, text=text, channel=channel).SerializeToString()
    return shape


def shaped(shape: str, ident: str, text: str, channel: str) -> bytes:
    """One bench message in `shape`."""
    if callable(shape):
        return shape(ident, text, channel)
    if shape == "fixed":
        return json.dumps({"id": ident, "text": text, "channel": channel}).encode()
    return json.dumps({"data": {"id": ident, "text": text, "author_id": "2244994945", "edit_history_tweet_ids": [ident]},
                       "includes": {"users": [{"id": "2244994945", "username": channel}]}}).encode()


def _end_to_end(settings: Settings, texts: list[str], db_path: Path, timeout: float, rate: float | None,
                workers: int, producers: int, broker: str, database_url: str, shape: str = "fixed") -> dict:
    run = uuid.uuid4().hex[:8]
    overrides = {}
    if shape != "fixed":
        declaration = db_path.with_suffix(".inputs.toml")
        declaration.write_text(DECLARATIONS[shape].format(topic=f"bench-posts-{run}"))
        overrides["inputs"] = declaration
    if shape in ("avro", "protobuf"):
        shape = (avro_shaper if shape == "avro" else protobuf_shaper)(settings.schema_registry_url,
                                                                     f"bench-posts-{run}")
    lines = [shaped(shape, f"b{i}", t, f"brand-{i % 20}") for i, t in enumerate(texts)]
    with local_stack(settings, db_path, workers, broker, web=True, app_id=f"bench-{run}",
                     topic_posts=f"bench-posts-{run}", database_url=database_url,
                     topic_partitions=max(settings.topic_partitions, workers), **overrides) as (settings, store, procs):
        wait_for_group(store, settings, procs, shape=shape)
        options = client_options(settings)
        share = None if rate is None else rate / producers
        parts = [lines[i::producers] for i in range(producers)]
        # every shape keyed by its id, as the built-in shape always was: the same partitioning whatever the shape
        keys = [f"b{i}".encode() for i in range(len(lines))]
        key_parts = [keys[i::producers] for i in range(producers)]
        with ProcessSampler([p.pid for p in procs]) as sampler, \
                ProcessPoolExecutor(producers, mp_context=multiprocessing.get_context("spawn")) as pool:
            gpu = []
            started = time.monotonic()
            sending = [pool.submit(_produce_part, part, settings.topic_posts, options, share, part_keys)
                       for part, part_keys in zip(parts, key_parts)]
            deadline = started + timeout
            produced_s = None
            while store.count(predictions) < len(texts) + 1 and time.monotonic() < deadline:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker exited with code {[p.returncode for p in procs]}")
                if produced_s is None and all(f.done() for f in sending):
                    produced_s = time.monotonic() - started
                gpu.append(gpu_utilisation())
                time.sleep(0.5)
            sent = sum(f.result() for f in sending)
            produced_s = produced_s or time.monotonic() - started
        stage_seconds, consumed = scrape_stages(procs)
        with store.engine.connect() as conn:
            rows = conn.execute(select(predictions.c.message_id, predictions.c.produced_at, predictions.c.stored_at,
                                       predictions.c.source_partition)
                                .where(predictions.c.message_id != WARM_UP_ID)).all()
        partitions = offset_check(store, settings.topic_posts)
    stored = [r.stored_at for r in rows]
    latency = np.array([(r.stored_at - r.produced_at).total_seconds() * 1000 for r in rows if r.produced_at])
    span = (max(stored) - min(stored)).total_seconds() if len(stored) > 1 else 0.0
    ids = [r.message_id for r in rows]
    batches = batch_sizes(stored)
    gpu_samples = [g for g in gpu if g is not None]
    return {
        "msgs_per_s": _rate(len(rows), span),
        # the producers' own rate: when it is close to msgs_per_s, producing (not the workers) set the pace
        "produce_msgs_per_s": _rate(sent, produced_s),
        "p50_ms": round(float(np.percentile(latency, 50)), 1) if len(latency) else None,
        "p95_ms": round(float(np.percentile(latency, 95)), 1) if len(latency) else None,
        "p99_ms": round(float(np.percentile(latency, 99)), 1) if len(latency) else None,
        "lost": len(texts) - len(set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "offset_gaps": sum(not p["contiguous"] for p in partitions.values()),
        "max_partition_wait_s": max_partition_wait([(r.source_partition, r.stored_at) for r in rows]),
        "partitions": partitions,
        # messages per SQL transaction (a batch's rows share its stored_at): how the batch size followed load
        "batches": len(batches),
        "batch_size_mean": round(float(np.mean(batches)), 1) if batches else None,
        "batch_size_p50": int(np.percentile(batches, 50)) if batches else None,
        "batch_size_max": max(batches, default=None),
        "worker_cpu_percent_mean": round(float(np.mean(sampler.cpu)), 1) if sampler.cpu else None,
        # CPU of the worker processes (all threads, tokenizer's included) over the run, per message stored
        "worker_cpu_us_per_msg": round(sampler.cpu_seconds * 1e6 / len(rows), 1) if sampler.cpu_seconds and rows else None,
        "stage_us_per_msg": stage_breakdown(stage_seconds, consumed),
        "worker_rss_mb_peak": round(max(sampler.rss, default=0.0), 1),
        # RSS over the run, first / middle / last sample: flat when memory is bounded
        "worker_rss_mb_trend": [round(sampler.rss[i], 1) for i in (0, len(sampler.rss) // 2, -1)] if sampler.rss else [],
        "seconds": round(span, 1),
        "gpu_utilisation_percent_mean": round(float(np.mean(gpu_samples)), 1) if gpu_samples else None,
    }


def batch_sizes(stored_at: list) -> list[int]:
    """Rows per batch from the stored rows' `stored_at` (one per SQL transaction, so one per batch)."""
    counts: dict = {}
    for at in stored_at:
        counts[at] = counts.get(at, 0) + 1
    return list(counts.values())


def max_partition_wait(stored: list[tuple[int, object]]) -> float:
    """The longest time a partition made no progress while another did, from (partition, stored_at) pairs of a
    burst (every partition has unread messages from the start until its last row is stored): per partition, the
    gaps between its successive commits (the first measured from the run's first commit) in which some other
    partition committed."""
    times: dict[int, list] = {}
    for partition, at in stored:
        times.setdefault(partition, []).append(at)
    if len(times) < 2:
        return 0.0
    commits = {p: sorted(set(ts)) for p, ts in times.items()}
    start = min(ts[0] for ts in commits.values())
    longest = 0.0
    for p, ts in commits.items():
        others = sorted(t for q, qs in commits.items() if q != p for t in qs)
        for before, after in zip([start] + ts[:-1], ts):
            gap = (after - before).total_seconds()
            if gap > longest and any(before < t < after for t in others):
                longest = gap
    return round(longest, 2)


def offset_check(store: Store, topic: str) -> dict[int, dict]:
    """Per partition of `topic`: messages handled (a result or a dead letter each), and whether their offsets are
    exactly 0 … n − 1 with n the next offset committed in SQL (no gap, nothing twice, nothing acknowledged that
    was not stored)."""
    handled = union_all(*(
        select(t.c.source_partition.label("partition"), t.c.source_offset.label("offset"))
        .where(t.c.source_topic == topic)
        for t in (predictions, dead_letters)
    )).subquery()
    offset = handled.c.offset
    with store.engine.connect() as conn:
        rows = conn.execute(select(handled.c.partition, func.count(), func.count(offset.distinct()), func.min(offset),
                                   func.max(offset)).group_by(handled.c.partition)).all()
    committed = store.next_offsets([topic])
    result = {}
    for partition, n, distinct, low, high in rows:
        next_offset = committed.get((topic, partition))
        result[partition] = {"handled": n, "next_offset": next_offset,
                             "contiguous": n == distinct and low == 0 and high == n - 1 and next_offset == n}
    return result


WARM_UP_ID = "bench-warm-up"
GROUP_SETTLE_S = 15.0


def wait_for_group(store: Store, settings: Settings, procs: list, timeout: float = 120, shape: str = "fixed") -> None:
    """Before timing starts: every worker has loaded its model and the group owns all partitions. A warm-up
    message goes through first; with several workers, the group then gets GROUP_SETTLE_S seconds to finish
    rebalancing (workers join one by one)."""
    asyncio.run(produce_lines([shaped(shape, WARM_UP_ID, "warm up", "bench")], settings.topic_posts,
                              client_options(settings)))
    deadline = time.monotonic() + timeout
    while store.count(predictions) < 1:
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError("the workers did not process the warm-up message")
        time.sleep(0.2)
    if len(procs) > 1:
        time.sleep(GROUP_SETTLE_S)


def run_load(settings: Settings, messages: int, db_path: Path, timeout: float, workers: int = 1,
             producers: int = 1, broker: str = "tansu", database: str = "sqlite",
             postgres_url: str = BENCH_POSTGRES_URL, zh_share: float = 0.0, shape: str = "fixed") -> dict:
    """The long load run: end to end only, as fast as possible, every message counted. `shape="both"`: the
    built-in shape and Twitter v2 through a declared mapping, alternated twice (A B A B, so a machine whose load
    changes meets both alike), with the ratio of their mean rates; `"avro"` / `"avro-both"` (`"protobuf"` /
    `"protobuf-both"`) likewise for the posts in Avro (Protobuf) through the schema registry
    (STREAMSENSE_SCHEMA_REGISTRY_URL's, else an Apicurio started for the run)."""
    common = {"messages": messages, "batch_size": settings.batch_size, "workers": workers, "broker": broker,
              "database": database, "zh_share": zh_share, "language_models": settings.language_models,
              **model_note(settings), "machine": machine()}
    texts = bench_texts(settings, messages, zh_share)
    run = lambda shape: end_to_end(settings, texts, db_path, timeout, rate=None, workers=workers,  # noqa: E731
                                   producers=producers, broker=broker, database=database,
                                   postgres_url=postgres_url, shape=shape)
    with registry_for(settings, shape in REGISTRY_INPUTS) as settings:
        if shape not in PAIRS:
            return {**common, "inputs": shape, **run(shape)}
        pair = PAIRS[shape]
        runs = {s: [] for s in pair}
        for _ in range(2):
            for s in pair:
                runs[s].append(run(s))
    keys = ("msgs_per_s", "lost", "duplicated", "offset_gaps", "worker_cpu_us_per_msg", "stage_us_per_msg", "seconds")
    mean = {s: round(float(np.mean([r["msgs_per_s"] for r in rs])), 1) for s, rs in runs.items()}
    other = pair[1]
    ratio = round(mean[other] / mean["fixed"], 3) if mean["fixed"] else None
    return {**common, "inputs": f"{shape} ({', '.join(pair + pair)})",
            **{f"{s}_runs": [{k: r[k] for k in keys} for r in rs] for s, rs in runs.items()},
            **{f"{s}_msgs_per_s_mean": m for s, m in mean.items()},
            f"ratio_{other.replace('-', '_')}_to_fixed": ratio}


def model_note(settings: Settings) -> dict:
    if settings.null_model:
        return {"model": "NULL MODEL: zero logits instead of inference (everything else real); measures the "
                         "pipeline's own ceiling, not a classifier"}
    return {}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{cpu}, {os.cpu_count()} cores"


def run_bench(settings: Settings, messages: int, model_messages: int, baseline_messages: int,
              db_path: Path, timeout: float, workers: int = 1, producers: int = 1, log=print,
              broker: str = "tansu", database: str = "sqlite", postgres_url: str = BENCH_POSTGRES_URL) -> dict:
    classifier = load_classifier(settings.model_copy(update={"null_model": False}))  # the model stages: the real one
    result = {
        "device": classifier.runtime.device, "variant": classifier.runtime.variant, "model": classifier.model_version,
        **({"end_to_end_model": model_note(settings)["model"]} if settings.null_model else {}),
        "batch_size": settings.batch_size, "machine": machine(),
        "messages": messages, "workers": workers, "producers": producers, "broker": broker, "database": database,
    }
    log(f"model stages on {model_messages} tweets, batch {settings.batch_size}")
    result.update(model_stages(classifier, bench_texts(settings, model_messages), settings.batch_size))
    texts = bench_texts(settings, messages)
    log(f"end to end, as fast as possible: {messages} messages through {broker}, {workers} worker(s) and SQLite")
    burst = end_to_end(settings, texts, db_path, timeout, rate=None, workers=workers, producers=producers,
                       broker=broker, database=database, postgres_url=postgres_url)
    rate = round(0.8 * burst["msgs_per_s"], 1)
    log(f"end to end, paced at {rate} msg/s (80% of that) for latency")
    paced = end_to_end(settings, texts, db_path, timeout, rate=rate, workers=workers, producers=producers,
                       broker=broker, database=database, postgres_url=postgres_url)
    result.update({
        "e2e_msgs_per_s": burst["msgs_per_s"], "e2e_paced_rate": rate, "e2e_p50_ms": paced["p50_ms"],
        "e2e_p95_ms": paced["p95_ms"], "e2e_p99_ms": paced["p99_ms"], "e2e_burst_p99_ms": burst["p99_ms"],
        "lost": burst["lost"] + paced["lost"], "duplicated": burst["duplicated"] + paced["duplicated"],
        "offset_gaps": burst["offset_gaps"] + paced["offset_gaps"], "max_partition_wait_s": burst["max_partition_wait_s"],
        **{k: burst[k] for k in ("produce_msgs_per_s", "worker_cpu_percent_mean", "worker_cpu_us_per_msg",
                                 "stage_us_per_msg", "worker_rss_mb_peak", "gpu_utilisation_percent_mean")},
    })
    log(f"baseline: transformers pipeline on {baseline_messages} tweets")
    result.update(baseline(bench_texts(settings, baseline_messages), min(200, baseline_messages)))
    # with the null model end to end, the ratio to the real model would mean nothing
    result["ratio_e2e_to_model_only"] = (None if settings.null_model else
                                         round(result["e2e_msgs_per_s"] / result["model_only_msgs_per_s"], 3))
    batched = result.get("baseline_pipeline_batched_msgs_per_s")
    result["ratio_e2e_to_baseline_batched"] = round(result["e2e_msgs_per_s"] / batched, 2) if batched else None
    return result


# The latency–throughput curve (`bench --load --curve 10,50,80,100`)

CURVE_ROW_MIN_MESSAGES = 100
CURVE_KEYS = ("msgs_per_s", "produce_msgs_per_s", "p50_ms", "p95_ms", "p99_ms", "batches", "batch_size_mean",
              "batch_size_p50", "batch_size_max", "worker_cpu_us_per_msg", "lost", "duplicated", "offset_gaps",
              "max_partition_wait_s", "seconds", "stage_us_per_msg")


def run_curve(settings: Settings, messages: int, percents: list[float], db_path: Path, timeout: float,
              row_seconds: float = 20.0, broker: str = "tansu", database: str = "sqlite",
              postgres_url: str = BENCH_POSTGRES_URL, log=print, ceiling: float | None = None, workers: int = 1,
              producers: int = 1) -> dict:
    """A burst of `messages` measures the ceiling; then one run paced at each percent of it, about `row_seconds`
    long (at least CURVE_ROW_MIN_MESSAGES, at most `messages`): per row the latency from the Kafka timestamp to the
    SQL commit, the batch sizes seen and the worker's CPU per message. Each run has a fresh broker and worker.
    `ceiling` (msg/s) skips the burst: rows paced as another run's, to compare two builds at the same rates."""
    stores = dict(broker=broker, database=database, postgres_url=postgres_url, workers=workers, producers=producers)
    rows = []
    if ceiling is None:
        log(f"ceiling: {messages} messages as fast as possible")
        burst = end_to_end(settings, bench_texts(settings, messages), db_path, timeout, rate=None, **stores)
        if not burst["msgs_per_s"]:  # one batch took the whole burst: no span to measure a rate over
            raise ValueError(f"{messages} messages went through in one batch of up to {settings.batch_size}: "
                             "measure the ceiling with more messages")
        ceiling = burst["msgs_per_s"]
        rows.append({"percent": "burst", "rate": None, "messages": messages, **{k: burst[k] for k in CURVE_KEYS}})
    for percent in percents:
        rate = round(ceiling * percent / 100, 1)
        n = max(CURVE_ROW_MIN_MESSAGES, min(messages, int(rate * row_seconds)))
        log(f"{percent:g} % of the ceiling: {n} messages paced at {rate} msg/s")
        paced = end_to_end(settings, bench_texts(settings, n), db_path, timeout, rate=rate, **stores)
        rows.append({"percent": percent, "rate": rate, "messages": n, **{k: paced[k] for k in CURVE_KEYS}})
    return {"messages": messages, "batch_size": settings.batch_size, "batch_max_wait": settings.batch_max_wait,
            "broker": broker, "database": database, "workers": workers, "producers": producers,
            **model_note(settings), "machine": machine(), "ceiling_msgs_per_s": ceiling, "curve": rows}


def curve_table(result: dict) -> str:
    """The curve as a Markdown table (what docs/benchmarks.md shows)."""
    head = ("| load | target msg/s | msg/s | p50 / p95 / p99 ms | batch mean / p50 / max | CPU µs/msg | "
            "lost / dup |\n|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in result["curve"]:
        load = r["percent"] if r["percent"] == "burst" else f"{r['percent']:g} %"
        lines.append(f"| {load} | {r['rate'] or '—'} | {r['msgs_per_s']:,} | {r['p50_ms']} / {r['p95_ms']} / "
                     f"{r['p99_ms']} | {r['batch_size_mean']} / {r['batch_size_p50']} / {r['batch_size_max']} | "
                     f"{r['worker_cpu_us_per_msg']} | {r['lost']} / {r['duplicated']} |")
    return "\n".join(lines)


def parse_percents(text: str, option: str) -> list[float]:
    """"10,50,80,100" → [10.0, 50.0, 80.0, 100.0]; anything else is the user's error, said in one line."""
    import typer

    try:
        percents = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        percents = []
    if not percents or any(not 0 < p <= 200 for p in percents):
        raise typer.BadParameter("percents of the ceiling, each within (0, 200], e.g. 10,50,80,100", param_hint=option)
    return percents
