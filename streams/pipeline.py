"""One batch through the stages: decode/validate → tokenize → infer → decide → (store rows, output messages).

Pure and synchronous: the Faust agent feeds it and owns the I/O (produce, then SQL commit). Alerts are
candidates here; the store gates them (cooldown, rate limit, windows) in its transaction and the alert
outbox publishes what it kept.
"""

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from models.classifier import Classifier, Prediction
from streams.alerts import AlertRules
from streams.records import DecodeError, Record, decode
from streams.store import Batch, sha256, text_for_storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A message as read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None  # seconds since the epoch (Kafka record timestamp)

    @property
    def produced_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp, timezone.utc) if self.timestamp else None


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Topics:
    kinds: dict[str, str]  # input topic -> record kind ("post" / "ticket")
    predictions: str
    alerts: str
    dead_letter: str


@dataclass(frozen=True)
class Processed:
    batch: Batch
    outgoing: list[Outgoing]


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")).encode()


class Processor:
    def __init__(self, classifier: Classifier, topics: Topics, alert_rules: AlertRules, store_text: str = "full"):
        self.classifier = classifier
        self.topics = topics
        self.alert_rules = alert_rules
        self.store_text = store_text

    def process(self, messages: list[Incoming]) -> Processed:
        valid: list[tuple[Incoming, Record]] = []
        failed: list[tuple[Incoming, str]] = []
        for msg in messages:
            try:
                valid.append((msg, decode(self.topics.kinds[msg.topic], msg.value)))
            except DecodeError as exc:
                failed.append((msg, exc.reason))
        results = self._classify(valid)
        rows, alerts, out = [], [], []
        for (msg, record), result in zip(valid, results):
            if isinstance(result, Exception):
                failed.append((msg, f"model error: {type(result).__name__}: {result}"))
                continue
            rows.append(self._row(msg, record, result))
            out.append(Outgoing(self.topics.predictions, record.id.encode(), _json(self._prediction_message(msg, record, result))))
            excerpt = text_for_storage(record.model_text, self.store_text) or ""
            alerts += self.alert_rules.per_message(record.kind, record.id, record.group, excerpt, result,
                                                   self.classifier.model_version,
                                                   msg.produced_at or datetime.now(timezone.utc))
        dead = []
        for msg, reason in failed:
            log.info("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            dead.append({"source_topic": msg.topic, "source_partition": msg.partition,
                         "source_offset": msg.offset, "error": reason, "payload": msg.value})
            out.append(Outgoing(self.topics.dead_letter, msg.key, msg.value, [
                ("error", reason.encode()), ("source_topic", msg.topic.encode()),
                ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode()),
            ]))
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            tp = (msg.topic, msg.partition)
            offsets[tp] = max(offsets.get(tp, 0), msg.offset + 1)
        return Processed(Batch(rows, alerts, dead, offsets), out)

    def _classify(self, items: list[tuple[Incoming, Record]]) -> list[Prediction | Exception]:
        """Classify a batch; on a model error split it in halves until the failing message stands alone."""
        if not items:
            return []
        try:
            return self.classifier.classify([record.model_text for _, record in items])
        except Exception as exc:  # a model failure must cost one message, not the batch
            if len(items) == 1:
                return [exc]
            log.warning("model failed on a batch of %d (%s); splitting", len(items), type(exc).__name__)
            mid = len(items) // 2
            return self._classify(items[:mid]) + self._classify(items[mid:])

    def _row(self, msg: Incoming, record: Record, p: Prediction) -> dict:
        text = record.model_text
        scores = p.sentiment.scores
        return {
            "kind": record.kind, "message_id": record.id, "grp": record.group,
            "author": getattr(record, "author", None) or getattr(record, "customer_id", None),
            "priority": getattr(record, "priority", None),
            "text": text_for_storage(text, self.store_text), "text_sha256": sha256(text),
            "truncated": p.truncated, "sentiment": p.sentiment.label,
            "p_negative": scores["negative"], "p_neutral": scores["neutral"], "p_positive": scores["positive"],
            "risk_level": p.risk.level, "risk_score": p.risk.score, "risk_labels": p.risk.labels,
            "risk_signals": p.risk.signals, "risk_explanation": p.risk.explanation,
            "model_version": self.classifier.model_version,
            "source_topic": msg.topic, "source_partition": msg.partition, "source_offset": msg.offset,
            "created_at": record.created_at, "produced_at": msg.produced_at,
        }

    def _prediction_message(self, msg: Incoming, record: Record, p: Prediction) -> dict:
        return {"id": record.id, "kind": record.kind, **p.to_dict(),
                "model_version": self.classifier.model_version,
                "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}}
