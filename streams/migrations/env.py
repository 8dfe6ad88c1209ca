"""Alembic environment: runs migrations against the URL set by streamsense.streams.store.migrate()."""

from alembic import context
from sqlalchemy import create_engine

from streamsense.streams.schema import metadata

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
