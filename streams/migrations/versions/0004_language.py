"""Language per result: `predictions.lang`, `lang_declared`, `supported`.

Revision ID: 0004
Revises: 0003

`lang` is the language the worker identified (models/language.py: ISO 639-1, `und` when the text is too short to
tell), `lang_declared` the producer's own `lang` field of a post (tickets have none: NULL), `supported` whether the
model that classified the row reads that language (`und` counts as supported). Rows stored before this revision were
never identified: their three columns stay NULL (not backfilled; `streamsense query languages` lists them as lang
NULL). Nullable for that reason; the worker always writes `lang` and `supported`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("lang", sa.String(16)))
    op.add_column("predictions", sa.Column("lang_declared", sa.String(16)))
    op.add_column("predictions", sa.Column("supported", sa.Boolean))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN: SQLite 3.35 or newer (a batch copy of the table would trip over the BI views)
    for name in ("supported", "lang_declared", "lang"):
        op.drop_column("predictions", name)
