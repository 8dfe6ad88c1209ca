"""Batch writes through the driver: a batch's counter upserts and its bulk inserts as one prepared statement run over
the rows by the DBAPI's executemany, the values bound as SQLAlchemy's column types bind them (its bind processors),
without SQLAlchemy's per-row parameter handling, which cost more than the database's own work on a batch's rows.
The same statements on SQLite and PostgreSQL (INSERT … ON CONFLICT)."""

from collections.abc import Sequence
from operator import itemgetter


def add(conn, table, keys: Sequence[str], rows: list[tuple]) -> None:
    """Upsert `rows` (the `keys` columns, then the columns to add to, in the table's order) into `table`: a new key
    is inserted, a present one gets the row's values added to its own. One prepared statement run over the rows by
    the driver (executemany) with the values bound as SQLAlchemy's types would bind them, without SQLAlchemy's
    per-row parameter handling (which cost more than the database's own work on a batch's counters)."""
    if rows:
        sql, processors = _upsert(conn.dialect, table, tuple(keys))
        if processors:
            rows = [tuple(v if p is None else p(v) for v, p in zip(row, processors)) for row in rows]
        conn.exec_driver_sql(sql, rows)


_STATEMENTS: dict = {}


def _upsert(dialect, table, keys: tuple[str, ...]) -> tuple[str, list | None]:
    """The statement of `add` for `table` on `dialect` (INSERT … ON CONFLICT (keys) DO UPDATE SET c = table.c +
    excluded.c, the same on SQLite and PostgreSQL) and each column's bind processor (None where none converts)."""
    cached = _STATEMENTS.get(("add", dialect.name, dialect.paramstyle, table.name, keys))
    if cached is None:
        columns = [c for c in table.c if c.name in keys] + [c for c in table.c if c.name not in keys]
        if [c.name for c in columns[:len(keys)]] != list(keys):
            raise ValueError(f"{table.name}: {keys} are not its leading key columns in order")
        quote = dialect.identifier_preparer.quote
        name = quote(table.name)
        sql = _insert_sql(dialect, table, columns) + f" ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET " \
            + ", ".join(f"{quote(c.name)} = {name}.{quote(c.name)} + excluded.{quote(c.name)}"
                        for c in columns[len(keys):])
        cached = _STATEMENTS[("add", dialect.name, dialect.paramstyle, table.name, keys)] = (
            sql, _processors(dialect, columns))
    return cached


def insert_new(conn, table, conflict: Sequence[str], rows: list[dict]) -> None:
    """INSERT … ON CONFLICT (conflict) DO NOTHING of `rows` (dicts with the same keys, table columns) into `table`:
    one prepared statement through the driver's executemany, the values bound as SQLAlchemy's types would bind them,
    without its per-row parameter handling (a batch's shadow rows cost more there than in the database)."""
    if not rows:
        return
    names = tuple(rows[0])
    key = ("insert", conn.dialect.name, conn.dialect.paramstyle, table.name, names, tuple(conflict))
    cached = _STATEMENTS.get(key)
    if cached is None:
        dialect = conn.dialect
        columns = [table.c[name] for name in names]
        sql = _insert_sql(dialect, table, columns) + \
            f" ON CONFLICT ({', '.join(map(dialect.identifier_preparer.quote, conflict))}) DO NOTHING"
        cached = _STATEMENTS[key] = (sql, _processors(dialect, columns))
    sql, processors = cached
    get = itemgetter(*names)
    values = [get(row) for row in rows] if len(names) > 1 else [(row[names[0]],) for row in rows]
    if processors:
        values = [tuple(v if p is None else p(v) for v, p in zip(row, processors)) for row in values]
    conn.exec_driver_sql(sql, values)


def _insert_sql(dialect, table, columns) -> str:
    quote = dialect.identifier_preparer.quote
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}[dialect.paramstyle]
    return (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "
            f"VALUES ({', '.join([marker] * len(columns))})")


def _processors(dialect, columns) -> list | None:
    """Each column's bind processor for `dialect` (None where it converts nothing; None for all: no conversion)."""
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    return processors if any(p is not None for p in processors) else None
