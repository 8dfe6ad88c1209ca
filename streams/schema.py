"""The SQL schema: results, alerts, dead letters, processed offsets and the alert window counters (Alembic
migrations in streams/migrations build the same tables)."""

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Float, Integer, LargeBinary, MetaData, String, Table, Text,
    UniqueConstraint, func,
)

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("grp", String(200)),  # channel/brand for posts, product for tickets
    Column("author", String(200)),  # author for posts, customer_id for tickets
    Column("priority", String(16)),
    Column("text", Text),  # full, redacted or empty, per STREAMSENSE_STORE_TEXT
    Column("text_sha256", String(64), nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("sentiment", String(16), nullable=False),
    Column("p_negative", Float, nullable=False),
    Column("p_neutral", Float),  # NULL: the model has no neutral label (migration 0005)
    Column("p_positive", Float, nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("risk_score", Float, nullable=False),
    Column("risk_labels", JSON, nullable=False),
    Column("risk_signals", JSON, nullable=False),
    Column("risk_explanation", Text, nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("source_topic", String(255), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True)),  # from the message
    Column("produced_at", DateTime(timezone=True)),  # Kafka timestamp
    # migration 0004 (NULL in rows stored before it): the language identified (models/language.py; `und`: too short
    # to tell), the producer's declared `lang` (posts only), whether the model supports the identified language
    Column("lang", String(16)),
    Column("lang_declared", String(16)),
    Column("supported", Boolean),
    Column("stored_at", DateTime(timezone=True), nullable=False),  # set at write time (UTC)
    Column("event_at", DateTime(timezone=True), nullable=False),  # created_at, else produced_at, else stored_at
    UniqueConstraint("kind", "message_id", name="uq_predictions_kind_message"),
)

alerts = Table(
    "alerts", metadata,
    Column("id", String(64), primary_key=True),  # deterministic: a replay cannot raise it twice
    Column("rule", String(100), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("key", String(300), nullable=False),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True)),
    Column("summary", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("model_version", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),  # outbox: set once the alerts topic acknowledged it
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("source_topic", String(255), primary_key=True),
    Column("source_partition", Integer, primary_key=True),
    Column("source_offset", BigInteger, primary_key=True),
    Column("error", Text, nullable=False),
    Column("payload", LargeBinary),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

consumer_offsets = Table(
    "consumer_offsets", metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Messages and negative ones per (window length, kind, group, window) for the windowed alert rules, counted once per
# stored prediction; only the lengths in alert_window_lengths are counted.
alert_windows = Table(
    "alert_windows", metadata,
    Column("window_seconds", Integer, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("grp", String(200), primary_key=True),
    Column("window_index", BigInteger, primary_key=True),  # whole seconds since the epoch // window_seconds
    Column("messages", Integer, nullable=False),
    Column("negatives", Integer, nullable=False),
)

alert_window_lengths = Table(
    "alert_window_lengths", metadata,
    Column("window_seconds", Integer, primary_key=True),
)
