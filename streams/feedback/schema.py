"""The feedback tables (migration 0006), on the store's shared metadata: `feedback`, one row per (target, head,
person); `shadow_predictions`, a challenger's results beside the champion's (streams/feedback/shadow.py)."""

from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, String, Table, UniqueConstraint

from streamsense.streams.schema import metadata

#: What a verdict is about: a prediction (kind post/ticket, message_id) or an alert (kind "alert", its id). `head` is
#: the model head judged (sentiment, offensive, …) or "alert". `verdict` is right/wrong; `label` the label the person
#: gave (or implied: "right" confirms the predicted one, "wrong" on a two-label head names the other), NULL where not
#: known (a bare "wrong" on sentiment). `predicted` and `model_version` copy what the stored prediction said when the
#: verdict came in, so quality stays tied to the version judged after the model changes. `sample`: how the item was
#: chosen for review (`random`, `uncertain`, `alert`; NULL: not from the queue) — only `random` ones estimate quality
#: without bias. One person's word per (kind, message_id, head): saying the same twice counts once, saying something
#: else replaces it (`updated_at` moves).
feedback = Table(
    "feedback", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("head", String(64), nullable=False),
    Column("by", String(200), nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("label", String(64)),
    Column("predicted", String(64)),
    Column("model_version", String(100)),
    Column("source", String(32), nullable=False),  # cli, jsonl, kafka, argilla, label-studio
    Column("sample", String(16)),
    Column("created_at", DateTime(timezone=True), nullable=False),  # when the person said it
    Column("updated_at", DateTime(timezone=True), nullable=False),  # when it was stored or last replaced
    UniqueConstraint("kind", "message_id", "head", "by", name="uq_feedback_target_head_by"),
    Index("ix_feedback_head", "head", "model_version"),
)

#: What a shadowed challenger said about a stored message: one row per (kind, message_id, model_version); `alerts`
#: names the rules it would have raised (never raised: no alert row, no alerts topic message).
shadow_predictions = Table(
    "shadow_predictions", metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("sentiment", String(16), nullable=False),
    Column("p_negative", Float, nullable=False),
    Column("p_neutral", Float),
    Column("p_positive", Float, nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("risk_score", Float, nullable=False),
    Column("risk_labels", JSON, nullable=False),
    Column("alerts", JSON, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "message_id", "model_version", name="uq_shadow_kind_message_version"),
)
