"""What crosses a stage boundary, in one place: the message read from Kafka, the rows and messages a batch yields,
and the batch outcome that the commit protocol makes durable.

Pure data: this module imports nothing from SQLAlchemy, Faust, aiokafka or onnxruntime, so the pipeline that
builds these and the tests that check them run without any I/O. The store writes the rows as given (their keys are
the column names of `streams/store.py`); the sinks produce the `Outgoing` messages as given.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, TypedDict

from streamsense.models.text import redact

#: (topic, partition) → the next offset to read: what a batch commits with its results.
Offsets = Mapping[tuple[str, int], int]


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
    """A message to produce: a prediction, a dead letter or an alert."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class InputReader(Protocol):
    """A declared input topic's reader (streams/inputs/declare.py: Input): `read(msg)` → a Post or Ticket, or
    records.DecodeError(reason) (handled per `on_error`: "dead_letter", "skip" or "stop"), or inputs.formats.Skip
    (passed over and counted). `fixed`: the built-in shape, read by records.decode directly."""

    kind: str
    on_error: str
    fixed: bool

    def read(self, msg: Incoming) -> Any: ...


@dataclass(frozen=True)
class Topics:
    kinds: dict[str, str]  # input topic -> record kind ("post" / "ticket")
    predictions: str
    alerts: str
    dead_letter: str
    # input topic -> its declared reader; a topic of `kinds` without one is read in the built-in shape (records.decode)
    inputs: Mapping[str, InputReader] = field(default_factory=dict)


class ResultRow(TypedDict):
    """One classified message: a row of `predictions`, unique on (kind, message_id)."""

    kind: str
    message_id: str
    grp: str | None
    author: str | None
    priority: str | None
    text: str | None  # full, redacted or None, per STREAMSENSE_STORE_TEXT
    text_sha256: str
    truncated: bool
    sentiment: str
    p_negative: float
    p_neutral: float | None  # NULL where the model has no neutral label (the Chinese model)
    p_positive: float
    risk_level: str
    risk_score: float
    risk_labels: list[str]
    risk_signals: list[str]
    risk_explanation: str
    model_version: str
    source_topic: str
    source_partition: int
    source_offset: int
    created_at: datetime | None
    produced_at: datetime | None
    lang: str  # identified (models/language.py): ISO 639-1, or `und` when the text is too short to tell
    lang_declared: str | None  # the producer's `lang` field (posts; tickets have none)
    supported: bool  # the model reads `lang` (`und` counts as supported)


class DeadLetterRow(TypedDict):
    """A message that could not be classified: a row of `dead_letters` (and a copy on the dead-letter topic)."""

    source_topic: str
    source_partition: int
    source_offset: int
    error: str
    payload: bytes | None


class AlertCandidate(TypedDict):
    """An alert a rule proposes; the store's transaction keeps it or not (cooldown, rate limit, one per window)."""

    id: str  # deterministic: sha256(rule | key | window), so a replay proposes the same id
    rule: str
    severity: str
    key: str
    window_start: datetime | None
    window_end: datetime | None
    summary: str
    evidence: list[dict]
    model_version: str
    created_at: datetime


@dataclass(frozen=True)
class DriftSums:
    """What a batch adds to the drift windows of one model version (streams/drift/): per message (numpy arrays,
    one row each), its position in `Batch.predictions`, its window's start (epoch seconds), its topic, the
    histogram bins it counts in and its float sums. The store adds the rows it inserted to the windows in the
    batch's transaction (streams/drift/windows.py), so the window state follows the SQL offsets."""

    model_version: str
    layout: object  # streams.drift.features.Layout
    rows: object  # np.ndarray[int64]: positions in Batch.predictions
    windows: object  # np.ndarray[int64]: window start, epoch seconds
    topics: tuple[str, ...]  # the batch's topics; `topic_index` says each message's
    topic_index: object  # np.ndarray[int32]
    counts: object  # np.ndarray[int32] n x histograms: the vector index each message adds one to
    floats: object  # np.ndarray[float32] n x floats: each message's float sums


@dataclass(frozen=True)
class Batch:
    """Everything one batch writes in its SQL transaction; `offsets` are the next offsets to read."""

    predictions: list[ResultRow]
    alerts: list[AlertCandidate]
    dead_letters: list[DeadLetterRow]
    offsets: Offsets
    drift: list[DriftSums] = field(default_factory=list)  # per model version; empty with drift monitoring off
    shadow: list[dict] = field(default_factory=list)  # a shadowed challenger's rows (streams/feedback/shadow.py)


@dataclass(frozen=True)
class Processed:
    """A batch's outcome: its rows for SQL and its messages for the output topics."""

    batch: Batch
    outgoing: list[Outgoing]
    languages: Mapping[str, int] = field(default_factory=dict)  # messages per identified language (metrics)
    # (topic, why) → messages passed over without a row or a dead letter (a Debezium delete, a tombstone, an input
    # with on_error = "skip"); their offsets advance with the batch's
    skipped: Mapping[tuple[str, str], int] = field(default_factory=dict)


def text_for_storage(text: str, mode: str) -> str | None:
    """What `predictions.text` holds: the text (`full`), a redacted copy (`redacted`) or nothing (`hash`)."""
    if mode == "full":
        return text
    if mode == "redacted":
        return redact(text)
    return None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
