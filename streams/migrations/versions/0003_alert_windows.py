"""Alert window counters: messages and negative messages per (window length, kind, group, window).

Revision ID: 0003
Revises: 0002

The windowed rules read these counters instead of aggregating `predictions` on every batch. The window lengths
come from the rule file, which the schema does not know, so this revision creates the tables empty: a worker
counts its rules' lengths from its first batch on and, for a length not counted yet, rebuilds that length's counters
from the stored predictions first (`Store._register_window_lengths`). Existing rows are therefore counted, once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_windows",
        sa.Column("window_seconds", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("grp", sa.String(200), primary_key=True),
        sa.Column("window_index", sa.BigInteger, primary_key=True),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("negatives", sa.Integer, nullable=False),
    )
    op.create_table(
        "alert_window_lengths",
        sa.Column("window_seconds", sa.Integer, primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("alert_window_lengths")
    op.drop_table("alert_windows")
