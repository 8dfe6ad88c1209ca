"""Feedback: people's verdicts and labels on stored predictions and alerts (`feedback`), and a shadowed
challenger's results beside the champion's (`shadow_predictions`).

Revision ID: 0006
Revises: 0005

One row per (kind, message_id, head, by): the same verdict twice is stored once, a changed one replaces it. The
table stands alone (no foreign key to `predictions` or `alerts`): a verdict outlives a prediction deleted by a
retention job, and it keeps its own copy of what was predicted and by which model version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("label", sa.String(64)),
        sa.Column("predicted", sa.String(64)),
        sa.Column("model_version", sa.String(100)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("sample", sa.String(16)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "message_id", "head", "by", name="uq_feedback_target_head_by"),
    )
    op.create_index("ix_feedback_head", "feedback", ["head", "model_version"])
    op.create_table(
        "shadow_predictions",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("p_negative", sa.Float, nullable=False),
        sa.Column("p_neutral", sa.Float),
        sa.Column("p_positive", sa.Float, nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("risk_score", sa.Float, nullable=False),
        sa.Column("risk_labels", sa.JSON, nullable=False),
        sa.Column("alerts", sa.JSON, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "message_id", "model_version", name="uq_shadow_kind_message_version"),
    )


def downgrade() -> None:
    op.drop_table("shadow_predictions")
    op.drop_index("ix_feedback_head", table_name="feedback")
    op.drop_table("feedback")
