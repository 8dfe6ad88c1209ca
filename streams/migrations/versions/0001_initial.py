"""Initial schema: predictions, alerts, dead letters, processed offsets.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("grp", sa.String(200)),
        sa.Column("author", sa.String(200)),
        sa.Column("priority", sa.String(16)),
        sa.Column("text", sa.Text),
        sa.Column("text_sha256", sa.String(64), nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("p_negative", sa.Float, nullable=False),
        sa.Column("p_neutral", sa.Float, nullable=False),
        sa.Column("p_positive", sa.Float, nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("risk_score", sa.Float, nullable=False),
        sa.Column("risk_labels", sa.JSON, nullable=False),
        sa.Column("risk_signals", sa.JSON, nullable=False),
        sa.Column("risk_explanation", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer, nullable=False),
        sa.Column("source_offset", sa.BigInteger, nullable=False),
        sa.Column("created_at", TZ),
        sa.Column("produced_at", TZ),
        sa.Column("stored_at", TZ, nullable=False),
        sa.Column("event_at", TZ, nullable=False),
        sa.UniqueConstraint("kind", "message_id", name="uq_predictions_kind_message"),
    )
    op.create_index("ix_predictions_kind_grp_event", "predictions", ["kind", "grp", "event_at"])
    op.create_index("ix_predictions_risk", "predictions", ["risk_level", "risk_score"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("window_start", TZ),
        sa.Column("window_end", TZ),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(100)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("published_at", TZ),
    )
    op.create_index("ix_alerts_rule_created", "alerts", ["rule", "created_at"])
    op.create_index("ix_alerts_key_created", "alerts", ["key", "created_at"])
    op.create_index("ix_alerts_unpublished", "alerts", ["published_at"])
    op.create_table(
        "dead_letters",
        sa.Column("source_topic", sa.String(255), primary_key=True),
        sa.Column("source_partition", sa.Integer, primary_key=True),
        sa.Column("source_offset", sa.BigInteger, primary_key=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("stored_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "consumer_offsets",
        sa.Column("group_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("consumer_offsets", "dead_letters", "alerts", "predictions"):
        op.drop_table(table)
