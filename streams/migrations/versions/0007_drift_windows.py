"""Drift windows: running drift sums per (model version, scope, window start), judged when the window closes.

Revision ID: 0007
Revises: 0006

Written in the batch's transaction with its results and offsets (streams/drift/windows.py), so a window's state
follows the stored offsets. `sums` is the window's drift vector (float64, streams/drift/features.py); `verdict` is
NULL until the window is judged against its model version's reference.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_windows",
        sa.Column("model_version", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("messages", sa.BigInteger, nullable=False),
        sa.Column("sums", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16)),
        sa.Column("summary", sa.Text),
        sa.Column("verdict", sa.JSON),
        sa.Column("judged_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_windows")
