"""Dashboard counters and time indexes: message counts per minute and hour of event time and per minute of stored
time (streams/counters.py), backfilled from the stored predictions; indexes led by event time (predictions) and
stored time (dead letters).

Revision ID: 0008
Revises: 0007

The dashboard's panels aggregated every stored prediction before filtering on time (the 0002 views), 6-11 s each at
a million rows; the counters hold at most one row per minute, kind, group, language, sentiment and risk level, and
the store adds to them in the batch's own transaction (so a replayed message, which inserts nothing, adds nothing).
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _bi():
    """Revision 0002 (the BI views' bucket expression), loaded from its file beside this one."""
    spec = importlib.util.spec_from_file_location("streamsense_migration_0002", Path(__file__).with_name("0002_bi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    from streamsense.streams.counters import rebuild_sql

    op.create_table(
        "dashboard_counts",
        sa.Column("basis", sa.String(1), primary_key=True),
        sa.Column("bucket_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("grp", sa.String(200), primary_key=True),
        sa.Column("lang", sa.String(16), primary_key=True),
        sa.Column("sentiment", sa.String(16), primary_key=True),
        sa.Column("risk_level", sa.String(16), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("supported", sa.Integer, nullable=False),
        sa.Column("risk_score_sum", sa.Float, nullable=False),
    )
    # a group's rows in a time range (the page's group filter), without reading every group's
    op.create_index("ix_dashboard_counts_grp", "dashboard_counts", ["basis", "grp", "bucket_start"])
    dialect = op.get_bind().dialect.name
    for sql in rebuild_sql(dialect, _bi().bucket):
        op.execute(sql)
    # the dashboard's time range: top tickets and a window's messages by event time; dead letters by stored time
    op.create_index("ix_predictions_event_at", "predictions", ["event_at"])
    op.create_index("ix_dead_letters_stored_at", "dead_letters", ["stored_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_stored_at", "dead_letters")
    op.drop_index("ix_predictions_event_at", "predictions")
    op.drop_index("ix_dashboard_counts_grp", "dashboard_counts")
    op.drop_table("dashboard_counts")
