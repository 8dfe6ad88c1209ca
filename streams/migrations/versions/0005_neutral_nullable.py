"""`predictions.p_neutral` may be NULL: a model without a neutral label (the Chinese model) stores none.

Revision ID: 0005
Revises: 0004

The Chinese sentiment head is two-class (negative / positive): no Chinese dataset here labels neutral text, so its
probability of neutral is unavailable, and NULL says so where 0 would claim the model ruled neutral out. English rows
keep all three probabilities. On SQLite the column's NOT NULL goes only with a copy of the table (batch mode), which
SQLite refuses while the BI views name the table, so the views are dropped and created again around it.
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _bi():
    """Revision 0002 (the BI views), loaded from its file beside this one."""
    spec = importlib.util.spec_from_file_location("streamsense_migration_0002", Path(__file__).with_name("0002_bi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set_nullable(nullable: bool) -> None:
    dialect = op.get_bind().dialect.name
    if dialect != "sqlite":
        op.alter_column("predictions", "p_neutral", existing_type=sa.Float, nullable=nullable)
        return
    bi = _bi()
    for view in reversed(bi.VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table("predictions", recreate="always") as batch:
        batch.alter_column("p_neutral", existing_type=sa.Float, nullable=nullable)
    bi.create_views(dialect)


def upgrade() -> None:
    _set_nullable(True)


def downgrade() -> None:
    op.execute("UPDATE predictions SET p_neutral = 0 WHERE p_neutral IS NULL")  # NOT NULL again: 0 where unknown
    _set_nullable(False)
