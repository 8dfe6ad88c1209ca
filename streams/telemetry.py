"""Prometheus metrics of the worker, in a registry of its own (served by streams/web.py at /metrics).

The agent calls `observe_batch` once per batch, after the SQL commit (every message of a batch is one
result row or one dead letter, so the Processed batch says it all), and `observe_alerts` with the alerts
the outbox published (the store may drop candidates: cooldowns, rate limits); `instrument` times the
model's tokenize and infer calls wherever the pipeline makes them (they run in worker threads).
"""

import functools
import time
from collections.abc import Callable, Iterable, Mapping

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamsense.streams.contracts import Processed
from streamsense.streams.stages import Stages

NAMESPACE = "streamsense"
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
END_TO_END_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: The `lang` label values of streamsense_messages_by_language_total: the languages most seen in social and support
#: traffic, `und` (too short to tell) and "other" for every other code, so the label's cardinality stays bounded.
LANGUAGE_LABELS = frozenset(("en", "zh", "es", "pt", "fr", "de", "it", "nl", "ru", "ja", "ko", "ar", "hi", "tr",
                             "id", "pl", "vi", "th", "und"))


def _timed(histogram: Histogram, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        with histogram.time():
            return fn(*args, **kwargs)
    return timed


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, stages: Stages | None = None):
        self.registry = registry or CollectorRegistry()
        self.stages = stages if stages is not None else Stages()  # the worker passes the one its pipeline times
        self.registry.register(_StageSeconds(self.stages))
        common = dict(namespace=NAMESPACE, registry=self.registry)
        self.messages_in = Counter("messages_in", "Messages consumed", ["topic"], **common)
        self.messages_out = Counter("messages_out", "Messages produced (predictions, alerts, dead letters)",
                                    ["topic"], **common)
        self.dead_letters = Counter("dead_letters", "Messages dead-lettered, by source topic", ["topic"], **common)
        self.skipped = Counter("skipped", "Messages passed over without a result or a dead letter, by input topic and "
                               "why (delete, truncate, tombstone: Debezium; error: an input with on_error = skip)",
                               ["topic", "reason"], **common)
        self.languages = Counter("messages_by_language", "Valid messages by the language identified in their text "
                                 "(models/language.py; 'und': too short to tell, 'other': a language outside the "
                                 "listed ones), those dead-lettered as unsupported included", ["lang"], **common)
        self.alerts = Counter("alerts", "Alerts published on the alerts topic", ["rule", "severity"], **common)
        self.batch_size = Histogram("batch_size", "Messages per batch", buckets=BATCH_SIZE_BUCKETS, **common)
        self.tokenize_seconds = Histogram("tokenize_seconds", "Tokenizer time per call", buckets=MODEL_BUCKETS,
                                          **common)
        self.inference_seconds = Histogram("inference_seconds", "ONNX inference time per call",
                                           buckets=MODEL_BUCKETS, **common)
        self.batch_seconds = Histogram("batch_seconds", "Batch delivery: produce + SQL commit", buckets=BATCH_BUCKETS,
                                       **common)
        self.end_to_end_seconds = Histogram("end_to_end_seconds", "Kafka record timestamp → SQL commit, per message",
                                            buckets=END_TO_END_BUCKETS, **common)
        self.consumer_lag = Gauge("consumer_lag", "High-water mark minus next offset, as of the last batch",
                                  ["topic", "partition"], **common)
        self.model = Info("model", "The loaded model", **common)  # exposed as streamsense_model_info

    def instrument(self, runtime) -> None:
        """Time every `tokenize` and `infer` call of this model runtime (a streamsense.models.runtime.ModelRuntime)."""
        runtime.tokenize = _timed(self.tokenize_seconds, runtime.tokenize)
        runtime.infer = _timed(self.inference_seconds, runtime.infer)

    def watch_drift(self, windows) -> None:
        """Expose the last judged drift window of each model version and scope (streams/drift/windows.py)."""
        self.registry.register(_DriftGauges(windows))

    def set_model(self, info: dict[str, str]) -> None:
        self.model.info(info)

    def observe_batch(self, processed: Processed, seconds: float,
                      highwater: Callable[[str, int], int | None] | None = None) -> None:
        """Count one committed batch. `highwater(topic, partition)` gives the consumer's high-water mark, if known."""
        now = time.time()
        rows, dead = processed.batch.predictions, processed.batch.dead_letters
        self.batch_size.observe(len(rows) + len(dead))
        self.batch_seconds.observe(seconds)
        per_topic: dict[str, int] = {}
        for row in rows:
            per_topic[row["source_topic"]] = per_topic.get(row["source_topic"], 0) + 1
            if row["produced_at"]:  # the Kafka timestamp
                self.end_to_end_seconds.observe(max(now - row["produced_at"].timestamp(), 0.0))
        dead_per_topic: dict[str, int] = {}
        for letter in dead:
            dead_per_topic[letter["source_topic"]] = dead_per_topic.get(letter["source_topic"], 0) + 1
        for topic, n in dead_per_topic.items():
            per_topic[topic] = per_topic.get(topic, 0) + n
            self.dead_letters.labels(topic).inc(n)
        for (topic, reason), n in processed.skipped.items():
            per_topic[topic] = per_topic.get(topic, 0) + n
            self.skipped.labels(topic, reason).inc(n)
        for topic, n in per_topic.items():
            self.messages_in.labels(topic).inc(n)
        per_language: dict[str, int] = {}
        for lang, n in processed.languages.items():
            label = lang if lang in LANGUAGE_LABELS else "other"
            per_language[label] = per_language.get(label, 0) + n
        for label, n in per_language.items():
            self.languages.labels(label).inc(n)
        out_per_topic: dict[str, int] = {}
        for out in processed.outgoing:
            out_per_topic[out.topic] = out_per_topic.get(out.topic, 0) + 1
        for topic, n in out_per_topic.items():
            self.messages_out.labels(topic).inc(n)
        if highwater:
            for (topic, partition), next_offset in processed.batch.offsets.items():
                mark = highwater(topic, partition)
                if mark is not None:
                    self.consumer_lag.labels(topic, str(partition)).set(max(mark - next_offset, 0))

    def observe_alerts(self, alerts: Iterable[Mapping]) -> None:
        """Count published alerts (rows of the alerts table, or anything with `rule` and `severity`)."""
        for alert in alerts:
            self.alerts.labels(alert["rule"], alert["severity"]).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def consumer_highwater(consumer) -> Callable[[str, int], int | None]:
    """`observe_batch`'s high-water lookup over the worker's aiokafka consumer."""
    def highwater(topic: str, partition: int) -> int | None:
        try:
            return consumer.highwater(TopicPartition(topic, partition))
        except Exception:  # revoked since the batch was read, or the consumer stopped: no figure this time
            return None
    return highwater


def model_labels(runtime) -> dict[str, str]:
    """model_info labels (and /health's model) from a streamsense.models.runtime.ModelRuntime."""
    return {"name": runtime.name, "version": runtime.version, "device": runtime.device, "variant": runtime.variant}


class _StageSeconds:
    """`streamsense_stage_seconds_total{stage}`: the worker's wall time per pipeline stage (streams/stages.py)."""

    def __init__(self, stages: Stages):
        self.stages = stages

    def collect(self):
        family = CounterMetricFamily(f"{NAMESPACE}_stage_seconds", "Wall time per pipeline stage, summed over "
                                     "batches (the stages overlap: prepare, inference and delivery run in parallel)",
                                     labels=["stage"])
        for name, seconds in sorted(self.stages.snapshot().items()):
            family.add_metric([name], seconds)
        yield family


_DRIFT_LEVELS = {"stable": 0, "moderate": 1, "major": 2}


class _DriftGauges:
    """The last judged drift window per (model_version, scope): `streamsense_drift_value{quantity, method}` (PSI, rate
    change, projection shift, estimated-accuracy drop), `streamsense_drift_level{quantity}` (0 stable, 1 moderate,
    2 major), `streamsense_drift_estimated_accuracy{head}` (CBPE-style, calibrated heads),
    `streamsense_drift_window_messages` and `streamsense_drift_window_start_seconds`. Read at scrape time: nothing on
    the hot path."""

    def __init__(self, windows):
        self.windows = windows

    def collect(self):
        value = GaugeMetricFamily(f"{NAMESPACE}_drift_value", "Drift statistic of the last judged window per "
                                  "quantity (method: psi, rate, projection, cbpe)",
                                  labels=["model_version", "scope", "quantity", "method"])
        level = GaugeMetricFamily(f"{NAMESPACE}_drift_level", "Drift level of the last judged window per quantity: "
                                  "0 stable, 1 moderate, 2 major", labels=["model_version", "scope", "quantity"])
        accuracy = GaugeMetricFamily(f"{NAMESPACE}_drift_estimated_accuracy", "Estimated accuracy without labels "
                                     "(mean top probability of a calibrated head) in the last judged window",
                                     labels=["model_version", "scope", "head"])
        messages = GaugeMetricFamily(f"{NAMESPACE}_drift_window_messages", "Messages in the last judged drift window",
                                     labels=["model_version", "scope", "status"])
        started = GaugeMetricFamily(f"{NAMESPACE}_drift_window_start_seconds", "Start of the last judged drift "
                                    "window (epoch seconds)", labels=["model_version", "scope"])
        for (version, scope), (start, verdict) in sorted(self.windows.latest.items()):
            messages.add_metric([version, scope, verdict["status"]], verdict["messages"])
            started.add_metric([version, scope], start.timestamp())
            for q in verdict["quantities"]:
                value.add_metric([version, scope, q["name"], q["method"]], q["value"])
                level.add_metric([version, scope, q["name"]], _DRIFT_LEVELS[q["level"]])
            for head, e in verdict.get("estimated", {}).items():
                if e.get("window") is not None:
                    accuracy.add_metric([version, scope, head], e["window"])
        yield from (value, level, accuracy, messages, started)
