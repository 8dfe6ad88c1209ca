"""One batch through the stages: decode/validate → tokenize → infer → decide → (store rows, output messages).

Pure and synchronous: the Faust agent feeds it and owns the I/O (produce, then SQL commit). Alerts are
candidates here; the store gates them (cooldown, rate limit, windows) in its transaction and the alert
outbox publishes what it kept.
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from streamsense.models.classifier import Classifier, Prediction
from streamsense.models.runtime import Encoded
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.records import DecodeError, Record, decode
from streamsense.streams.contracts import (Batch, DeadLetterRow, Incoming, Outgoing, Processed, ResultRow, Topics,
                                            sha256, text_for_storage)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A batch after decoding and tokenizing: what inference needs."""

    messages: list[Incoming]
    valid: list[tuple[Incoming, Record]]
    failed: list[tuple[Incoming, str]]
    encoded: Encoded | None  # token ids of the valid texts (None: tokenizing failed)
    classifier: Classifier  # the model that tokenized it finishes it, even if a reload happens in between


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":")).encode()


class Processor:
    def __init__(self, classifier: Classifier, topics: Topics, alert_rules: AlertRules, store_text: str = "full"):
        self.classifier = classifier
        self.topics = topics
        self.alert_rules = alert_rules
        self.store_text = store_text

    def process(self, messages: list[Incoming]) -> Processed:
        return self.finish(self.prepare(messages))

    def prepare(self, messages: list[Incoming]) -> Prepared:
        """Stages 1 and 2, CPU work that overlaps the previous batch's inference: decode, then tokenize."""
        valid, failed = self.decode(messages)
        classifier = self.classifier  # the model that tokenizes a batch also infers it, even across a reload
        return Prepared(messages, valid, failed, self.tokenize(classifier, valid), classifier)

    def decode(self, messages: list[Incoming]) -> tuple[list[tuple[Incoming, Record]], list[tuple[Incoming, str]]]:
        """Stage 1: bytes → validated records; the rest with a one-line reason (they become dead letters)."""
        valid: list[tuple[Incoming, Record]] = []
        failed: list[tuple[Incoming, str]] = []
        for msg in messages:
            try:
                valid.append((msg, decode(self.topics.kinds[msg.topic], msg.value)))
            except DecodeError as exc:
                failed.append((msg, exc.reason))
        return valid, failed

    @staticmethod
    def tokenize(classifier: Classifier, valid: list[tuple[Incoming, Record]]) -> Encoded | None:
        """Stage 2: the batch's texts → token ids, once per batch (models/runtime.py: ModelRuntime.tokenize)."""
        if not valid:
            return None
        try:
            return classifier.tokenize([record.model_text for _, record in valid])
        except Exception as exc:  # leave it to infer_and_decide(), which isolates the message that breaks it
            log.warning("tokenizing a batch of %d failed (%s)", len(valid), type(exc).__name__)
            return None

    def finish(self, prepared: Prepared) -> Processed:
        """Stages 3 and 4, then the batch's rows and messages: infer + decide, shape."""
        valid, failed = prepared.valid, list(prepared.failed)
        results = self.infer_and_decide(prepared)
        version = prepared.classifier.model_version
        rows, alerts, out = [], [], []
        for (msg, record), result in zip(valid, results):
            if isinstance(result, Exception):
                failed.append((msg, f"model error: {type(result).__name__}: {result}"))
                continue
            rows.append(self._row(msg, record, result, version))
            out.append(Outgoing(self.topics.predictions, record.id.encode(),
                                _json(self._prediction_message(msg, record, result, version))))
            excerpt = text_for_storage(record.model_text, self.store_text) or ""
            alerts += self.alert_rules.per_message(record.kind, record.id, record.group, excerpt, result, version,
                                                   record.created_at or msg.produced_at or datetime.now(timezone.utc))
        dead = []
        for msg, reason in failed:
            log.info("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            dead.append(DeadLetterRow(source_topic=msg.topic, source_partition=msg.partition,
                                      source_offset=msg.offset, error=reason, payload=msg.value))
            out.append(Outgoing(self.topics.dead_letter, msg.key, msg.value, [
                ("error", reason.encode()), ("source_topic", msg.topic.encode()),
                ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode()),
            ]))
        offsets: dict[tuple[str, int], int] = {}
        for msg in prepared.messages:
            tp = (msg.topic, msg.partition)
            offsets[tp] = max(offsets.get(tp, 0), msg.offset + 1)
        return Processed(Batch(rows, alerts, dead, offsets), out)

    def infer_and_decide(self, prepared: Prepared) -> list[Prediction | Exception]:
        """Stages 3 and 4: one ONNX pass over the batch (all heads), then sentiment labels and risk (heads + rules:
        models/classifier.py, models/risk.py); a model failure is narrowed down to the message that causes it."""
        items, classifier = prepared.valid, prepared.classifier
        if not items:
            return []
        if prepared.encoded is not None:
            try:
                return classifier.predict([r.model_text for _, r in items], prepared.encoded)
            except Exception as exc:  # a model failure must cost one message, not the batch
                if len(items) == 1:
                    return [exc]
                log.warning("model failed on a batch of %d (%s); splitting", len(items), type(exc).__name__)
                mid = len(items) // 2
                return self._classify(classifier, items[:mid]) + self._classify(classifier, items[mid:])
        return self._classify(classifier, items)

    def _classify(self, classifier: Classifier, items: list[tuple[Incoming, Record]]) -> list[Prediction | Exception]:
        """Classify; on a failure split in halves until the failing message stands alone."""
        try:
            return classifier.classify([record.model_text for _, record in items])
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            mid = len(items) // 2
            return self._classify(classifier, items[:mid]) + self._classify(classifier, items[mid:])

    def _row(self, msg: Incoming, record: Record, p: Prediction, model_version: str) -> ResultRow:
        text = record.model_text
        scores = p.sentiment.scores
        return ResultRow(**{
            "kind": record.kind, "message_id": record.id, "grp": record.group,
            "author": getattr(record, "author", None) or getattr(record, "customer_id", None),
            "priority": getattr(record, "priority", None),
            "text": text_for_storage(text, self.store_text), "text_sha256": sha256(text),
            "truncated": p.truncated, "sentiment": p.sentiment.label,
            "p_negative": scores["negative"], "p_neutral": scores["neutral"], "p_positive": scores["positive"],
            "risk_level": p.risk.level, "risk_score": p.risk.score, "risk_labels": p.risk.labels,
            "risk_signals": p.risk.signals, "risk_explanation": p.risk.explanation,
            "model_version": model_version,
            "source_topic": msg.topic, "source_partition": msg.partition, "source_offset": msg.offset,
            "created_at": record.created_at, "produced_at": msg.produced_at,
        })

    def _prediction_message(self, msg: Incoming, record: Record, p: Prediction, model_version: str) -> dict:
        return {"id": record.id, "kind": record.kind, **p.to_dict(), "model_version": model_version,
                "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}}
