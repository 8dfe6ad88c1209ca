"""One batch through the stages: decode/validate → language → tokenize → infer → decide → (store rows, output
messages).

Pure and synchronous: the Faust agent feeds it and owns the I/O (produce, then SQL commit). Alerts are
candidates here; the store gates them (cooldown, rate limit, windows) in its transaction and the alert
outbox publishes what it kept.

Every message's language is identified (models/language.py) before tokenizing. A message in a language the model does
not support is never classified silently: with `unsupported_language="flag"` (the default) it is classified and its
risk carries the signal `unsupported_language` and a line of explanation; with `"dead_letter"` it goes to the
dead letters instead, reason "unsupported language: zh", without being classified.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import repeat
from datetime import datetime, timezone

from streamsense.models.classifier import BatchResult, Classifier, Prediction
from streamsense.models.language import DEFAULT_LANGUAGES, identify, is_supported
from streamsense.models.risk import Risk
from streamsense.models.runtime import Encoded
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.inputs.formats import Skip
from streamsense.streams.records import DecodeError, Record, decode
from streamsense.streams.contracts import (Batch, DeadLetterRow, Incoming, Outgoing, Processed, ResultRow, Topics,
                                            sha256, text_for_storage)
from streamsense.streams.feedback.shadow import shadow_rows
from streamsense.streams.outputs import JSON_OUTPUT
from streamsense.streams.stages import NoStages, Stages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A batch after decoding and tokenizing: what inference needs."""

    messages: list[Incoming]
    valid: list[tuple[Incoming, Record]]
    failed: list[tuple[Incoming, str]]
    encoded: Encoded | None  # token ids of the valid texts (None: tokenizing failed)
    classifier: Classifier  # the model that tokenized it finishes it, even if a reload happens in between
    langs: list[str]  # the language identified in each valid message's text, in order
    languages: Counter  # messages per identified language, those dead-lettered as unsupported included (metrics)
    skipped: Counter = field(default_factory=Counter)  # (topic, why) → messages passed over (Processed.skipped)


#: (start, stop, outcome) over a batch's valid messages, in order: decisions for the run, or the error of one message.
Part = tuple[int, int, BatchResult | Exception]


_OPTIONAL = ("author", "customer_id", "priority", "lang")
_OPTIONAL_BY_TYPE: dict[type, tuple[bool, bool, bool, bool]] = {}
#: `predictions.lang_declared` holds at most this many characters of the producer's `lang` (a post's field allows 200)
DECLARED_MAX = 16
UNSUPPORTED_SIGNAL = "unsupported_language"
UNSUPPORTED_REASON = "unsupported language: "  # + the code: the dead-letter reason in "dead_letter" mode


def _author_priority(record: Record) -> tuple[str | None, str | None, str | None]:
    """`getattr(record, "author", None) or getattr(record, "customer_id", None)`, `getattr(record, "priority",
    None)` and `getattr(record, "lang", None)` (cut to DECLARED_MAX characters; empty: None), without a failed
    attribute lookup per message (costly on pydantic models): which of these attributes a record type has is looked
    up once per type."""
    has = _OPTIONAL_BY_TYPE.get(type(record))
    if has is None:
        has = _OPTIONAL_BY_TYPE[type(record)] = tuple(hasattr(record, name) for name in _OPTIONAL)
    author = record.author if has[0] else None
    if not author:
        author = record.customer_id if has[1] else None
    declared = record.lang if has[3] else None
    return author, (record.priority if has[2] else None), (declared[:DECLARED_MAX] if declared else None)


def model_languages_of(classifier) -> tuple[str, ...]:
    """The languages a classifier's model reads (`Classifier.languages`, from its card); a stand-in without them
    (a wrapper in tests or benchmarks) is taken as English-only, as the shipped models are."""
    return getattr(classifier, "languages", DEFAULT_LANGUAGES)


def flag_unsupported(risk: Risk, lang: str, languages: tuple[str, ...]) -> Risk:
    """`risk` with the signal `unsupported_language` and a line saying why its scores cannot be trusted; level and
    score unchanged (the model's own, read from text it does not understand)."""
    why = f"{UNSUPPORTED_SIGNAL}: text in '{lang}', the model reads {', '.join(languages)} only (scores unreliable)"
    explanation = why if risk.explanation == "no risk signal" else f"{risk.explanation}; {why}"
    return replace(risk, signals=[*risk.signals, UNSUPPORTED_SIGNAL], explanation=explanation)


class InputStopped(RuntimeError):
    """A message of an input declared with on_error = "stop" did not decode: the worker stops (one-line reason);
    nothing after the stored offsets is lost, and the restart reads that message again."""


class Processor:
    """`prepare` (decode, tokenize) then `finish` (infer, decide, shape) a batch; each stage's wall time goes to
    `stages` once per batch (streams/stages.py)."""

    def __init__(self, classifier: Classifier, topics: Topics, alert_rules: AlertRules, store_text: str = "full",
                 stages: Stages | None = None, publish_predictions: bool = True, unsupported_language: str = "flag",
                 drift=None, output=None):
        self.classifier = classifier
        self.output = output or JSON_OUTPUT  # the predictions' and alerts' value format (streams/outputs.py)
        self.topics = topics
        self.alert_rules = alert_rules
        self.store_text = store_text
        self.stages = stages if stages is not None else NoStages()
        self.publish_predictions = publish_predictions  # False: results go to SQL only (dead letters still published)
        if unsupported_language not in ("flag", "dead_letter"):
            raise ValueError(f"unsupported_language must be 'flag' or 'dead_letter', not {unsupported_language!r}")
        self.unsupported_language = unsupported_language
        self.drift = drift  # streams/drift/meter.py DriftMeter: the batch's drift sums ride in Batch.drift (None: off)
        self.shadow: Classifier | None = None  # a challenger run beside the model (streams/feedback/shadow.py)
        self.shadow_share = 1.0

    def process(self, messages: list[Incoming]) -> Processed:
        return self.finish(self.prepare(messages))

    def prepare(self, messages: list[Incoming]) -> Prepared:
        """Stages 1 and 2, CPU work that overlaps the previous batch's inference: decode, identify the language
        (and in "dead_letter" mode set aside what the model does not read), then tokenize."""
        skipped: Counter = Counter()
        with self.stages("decode"):  # decode + the declared input's mapping
            valid, failed = self.decode(messages, skipped)
        classifier = self.classifier  # the model that tokenizes a batch also infers it, even across a reload
        with self.stages("language"):
            langs = identify([record.model_text for _, record in valid])
            languages = Counter(langs)
            if self.unsupported_language == "dead_letter":
                valid, langs, failed = self.divert(valid, langs, failed, model_languages_of(classifier))
        with self.stages("tokenize"):
            encoded = self.tokenize(classifier, valid, langs)
        return Prepared(messages, valid, failed, encoded, classifier, langs, languages, skipped)

    @staticmethod
    def divert(valid: list[tuple[Incoming, Record]], langs: list[str], failed: list[tuple[Incoming, str]],
               supported: tuple[str, ...]):
        """The messages in a language the model does not read, moved from `valid` to `failed` (dead letters) with
        the reason "unsupported language: <code>"."""
        if all(is_supported(lang, supported) for lang in langs):
            return valid, langs, failed
        kept, kept_langs, failed = [], [], list(failed)
        for item, lang in zip(valid, langs):
            if is_supported(lang, supported):
                kept.append(item)
                kept_langs.append(lang)
            else:
                failed.append((item[0], UNSUPPORTED_REASON + lang))
        return kept, kept_langs, failed

    def decode(self, messages: list[Incoming], skipped: Counter | None = None
               ) -> tuple[list[tuple[Incoming, Record]], list[tuple[Incoming, str]]]:
        """Stage 1: bytes → validated records (through the topic's declared input, if it has one: format, envelope,
        field mapping); the rest with a one-line reason (they become dead letters), except those passed over
        (a Skip, or a DecodeError on an input with on_error = "skip"), counted in `skipped` by (topic, why). An
        input with on_error = "stop" raises InputStopped on its first DecodeError."""
        valid: list[tuple[Incoming, Record]] = []
        failed: list[tuple[Incoming, str]] = []
        kinds, inputs = self.topics.kinds, self.topics.inputs
        for msg in messages:
            reader = inputs.get(msg.topic)
            try:
                if reader is None or reader.fixed:
                    valid.append((msg, decode(kinds[msg.topic], msg.value)))
                else:
                    valid.append((msg, reader.read(msg)))
            except DecodeError as exc:
                policy = "dead_letter" if reader is None else reader.on_error
                if policy == "dead_letter":
                    failed.append((msg, exc.reason))
                elif policy == "skip":
                    log.debug("skipped %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc.reason)
                    if skipped is not None:
                        skipped[(msg.topic, "error")] += 1
                else:
                    raise InputStopped(f"input {msg.topic!r} stops the worker (on_error = \"stop\"): "
                                       f"{msg.topic}[{msg.partition}]@{msg.offset}: {exc.reason}") from None
            except Skip as exc:
                if skipped is not None:
                    skipped[(msg.topic, exc.kind)] += 1
        return valid, failed

    @staticmethod
    def tokenize(classifier: Classifier, valid: list[tuple[Incoming, Record]], langs: list[str]) -> Encoded | None:
        """Stage 2: the batch's texts → token ids, once per batch (models/runtime.py: ModelRuntime.tokenize); a
        routed classifier (models/routing.py) sends each language's texts to its model's tokenizer."""
        if not valid:
            return None
        try:
            return classifier.tokenize([record.model_text for _, record in valid], langs)
        except Exception as exc:  # leave it to infer_and_decide(), which isolates the message that breaks it
            log.warning("tokenizing a batch of %d failed (%s)", len(valid), type(exc).__name__)
            return None

    def finish(self, prepared: Prepared) -> Processed:
        """Stages 3 and 4, infer + decide, then stage 5, shape: the batch's rows, messages and alert candidates."""
        probs = [] if self.drift is not None else None
        parts = self._decide(prepared, probs)
        with self.stages("shape"):
            processed = self._shape(prepared, parts)
        if probs:  # the one-pass path: a batch split to find a failing message adds nothing to the drift windows
            with self.stages("drift"):
                processed = self.drift.attach(processed, prepared, probs[0])
        shadow = self.shadow  # as the batch's model, the shadow of its start serves it whole across a reload
        if shadow is None or not processed.batch.predictions:
            return processed
        with self.stages("shadow"):
            stored = {(row["kind"], row["message_id"]) for row in processed.batch.predictions}
            # the champion's pattern signals per message, on the one-pass path (one part, all of the batch)
            fired = getattr(parts[0][2], "fired", None) if len(parts) == 1 else None
            # and what its identity-blind second look found (which texts name a group, their blinded tokens)
            blinded = getattr(parts[0][2], "blinded", ()) if len(parts) == 1 else ()
            rows = shadow_rows(shadow, prepared.valid, stored, self.shadow_share, self.alert_rules, prepared.encoded,
                               prepared.classifier, fired, blinded)
        return replace(processed, batch=replace(processed.batch, shadow=rows))

    def infer_and_decide(self, prepared: Prepared) -> list[Prediction | Exception]:
        """Stages 3 and 4 as one `Prediction` (or the error) per valid message; `finish` uses the columns instead."""
        out: list[Prediction | Exception] = []
        for _, _, result in self._decide(prepared):
            if isinstance(result, Exception):
                out.append(result)
            else:
                out += result.predictions()
        return out

    def _decide(self, prepared: Prepared, keep: list | None = None) -> list[Part]:
        """Stages 3 and 4: one ONNX pass over the batch (all heads), then sentiment labels and risk (heads + rules:
        models/classifier.py, models/risk.py); a model failure is narrowed down to the message that causes it."""
        items, classifier = prepared.valid, prepared.classifier
        if not items:
            return []
        texts = [record.model_text for _, record in items]
        if prepared.encoded is not None:
            try:
                return [(0, len(texts), self._run_model(classifier, texts, prepared.encoded, keep))]
            except Exception as exc:  # a model failure must cost one message, not the batch
                if len(texts) == 1:
                    return [(0, 1, exc)]
                log.warning("model failed on a batch of %d (%s); splitting", len(texts), type(exc).__name__)
                mid = len(texts) // 2
                with self.stages("infer"):  # the search for the culprit counts as inference
                    return (self._split(classifier, texts, prepared.langs, 0, mid)
                            + self._split(classifier, texts, prepared.langs, mid, len(texts)))
        with self.stages("infer"):
            return self._split(classifier, texts, prepared.langs, 0, len(texts))

    def _run_model(self, classifier: Classifier, texts: list[str], encoded: Encoded,
                   keep: list | None = None) -> BatchResult:
        """Infer and decide a tokenized batch, each stage timed; the heads' probabilities go to `keep` if given."""
        with self.stages("infer"):
            probs = classifier.infer(encoded)
        with self.stages("decide"):
            result = classifier.decide(texts, encoded, probs)
        if keep is not None:
            keep.append(probs)
        return result

    def _split(self, classifier: Classifier, texts: list[str], langs: list[str], start: int, stop: int) -> list[Part]:
        """Tokenize, infer and decide texts[start:stop]; on a failure split in halves until the failing message
        stands alone."""
        try:
            chunk = texts[start:stop]
            return [(start, stop, classifier.decide(chunk, classifier.tokenize(chunk, langs[start:stop])))]
        except Exception as exc:
            if stop - start == 1:
                return [(start, stop, exc)]
            mid = (start + stop) // 2
            return (self._split(classifier, texts, langs, start, mid)
                    + self._split(classifier, texts, langs, mid, stop))

    def _shape(self, prepared: Prepared, parts: list[Part]) -> Processed:
        """Result rows, prediction messages and alert candidates from the decisions' columns; dead letters; offsets."""
        valid, failed = prepared.valid, list(prepared.failed)
        version = prepared.classifier.model_version
        store_text, predictions_topic = self.store_text, self.topics.predictions
        may_fire, per_message = self.alert_rules.may_fire, self.alert_rules.per_message
        encode, publish = self.output.prediction, self.publish_predictions
        langs, languages = prepared.langs, model_languages_of(prepared.classifier)
        rows: list[ResultRow] = []
        alerts: list = []
        out: list[Outgoing] = []
        for start, stop, result in parts:
            if isinstance(result, Exception):
                failed.append((valid[start][0], f"model error: {type(result).__name__}: {result}"))
                continue
            versions = result.versions or repeat(version)
            columns = zip(valid[start:stop], langs[start:stop], result.labels, result.scores, result.risks,
                          result.truncated, versions)
            for i, ((msg, record), lang, label, scores, risk, truncated, row_version) in enumerate(columns):
                text = record.model_text
                stored = text_for_storage(text, store_text)
                kind, ident, group, created_at = record.kind, record.id, record.group, record.created_at
                produced_at = msg.produced_at
                author, priority, declared = _author_priority(record)
                supported = is_supported(lang, languages)
                if not supported:
                    risk = flag_unsupported(risk, lang, languages)
                rows.append({
                    "kind": kind, "message_id": ident, "grp": group, "author": author, "priority": priority,
                    "text": stored, "text_sha256": sha256(text),
                    "truncated": truncated, "sentiment": label,
                    # a model without a neutral label (Chinese) stores p_neutral NULL: unavailable, not 0
                    "p_negative": scores["negative"], "p_neutral": scores.get("neutral"),
                    "p_positive": scores["positive"],
                    "risk_level": risk.level, "risk_score": risk.score, "risk_labels": risk.labels,
                    "risk_signals": risk.signals, "risk_explanation": risk.explanation,
                    "model_version": row_version,
                    "source_topic": msg.topic, "source_partition": msg.partition, "source_offset": msg.offset,
                    "created_at": created_at, "produced_at": produced_at,
                    "lang": lang, "lang_declared": declared, "supported": supported,
                })
                if publish:
                    out.append(Outgoing(predictions_topic, ident.encode(), encode({
                        "id": ident, "kind": kind, "sentiment": {"label": label, "scores": scores},
                        "risk": risk.to_dict(), "truncated": truncated,
                        "lang": lang, "lang_declared": declared, "supported": supported, "model_version": row_version,
                        "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
                    })))
                if may_fire(group, risk, scores):
                    prediction = result.prediction(i)
                    if not supported:
                        prediction = replace(prediction, risk=risk)
                    alerts += per_message(kind, ident, group, stored or "", prediction, row_version,
                                          created_at or produced_at or datetime.now(timezone.utc))
        dead = []
        for msg, reason in failed:
            dead.append(DeadLetterRow(source_topic=msg.topic, source_partition=msg.partition,
                                      source_offset=msg.offset, error=reason, payload=msg.value))
            out.append(Outgoing(self.topics.dead_letter, msg.key, msg.value, [
                ("error", reason.encode()), ("source_topic", msg.topic.encode()),
                ("source_partition", str(msg.partition).encode()), ("source_offset", str(msg.offset).encode()),
            ]))
        if failed:  # one line per batch; each message's reason is in its dead-letter row and headers
            msg, reason = failed[0]
            log.info("dead-lettered %d of %d messages; first %s[%d]@%d: %s", len(failed), len(prepared.messages),
                     msg.topic, msg.partition, msg.offset, reason)
        offsets: dict[tuple[str, int], int] = {}
        for msg in prepared.messages:
            tp = (msg.topic, msg.partition)
            offsets[tp] = max(offsets.get(tp, 0), msg.offset + 1)
        return Processed(Batch(rows, alerts, dead, offsets), out, prepared.languages, prepared.skipped)
