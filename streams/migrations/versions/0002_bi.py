"""BI views: sentiment per group and time bucket, risk per product, top risky tickets, alert counts, throughput.

Revision ID: 0002
Revises: 0001

Views have the same columns on SQLite and PostgreSQL. Bucket starts are UTC: `timestamptz` on PostgreSQL, and on
SQLite text in the format SQLAlchemy stores datetimes in ("YYYY-MM-DD HH:MM:SS.ffffff"), so they compare and sort
like the stored columns.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = ("sentiment_by_group_minute", "sentiment_by_group_hour", "risk_by_product_level", "top_risky_tickets",
         "alert_counts_by_rule", "stored_per_minute")
# When a message happened, for the sentiment views: event_at (created_at, else the Kafka timestamp, else when it was stored).
MESSAGE_TIME = "event_at"  # created_at, else the Kafka timestamp, else write time: as the alert windows
SQLITE_FORMATS = {"minute": "%Y-%m-%d %H:%M:00.000000", "hour": "%Y-%m-%d %H:00:00.000000"}


def bucket(unit: str, expr: str, dialect: str) -> str:
    """SQL for the start of the UTC minute or hour that `expr` falls in."""
    if dialect == "postgresql":
        return f"date_trunc('{unit}', ({expr}) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"strftime('{SQLITE_FORMATS[unit]}', {expr})"


def sentiment_view(unit: str, dialect: str) -> str:
    start = bucket(unit, MESSAGE_TIME, dialect)
    negative = "SUM(CASE WHEN sentiment = 'negative' THEN 1 ELSE 0 END)"
    return f"""
        CREATE VIEW sentiment_by_group_{unit} AS
        SELECT kind, grp, {start} AS bucket_start, COUNT(*) AS n,
               {negative} AS negative,
               SUM(CASE WHEN sentiment = 'neutral' THEN 1 ELSE 0 END) AS neutral,
               SUM(CASE WHEN sentiment = 'positive' THEN 1 ELSE 0 END) AS positive,
               CAST({negative} AS DOUBLE PRECISION) / COUNT(*) AS negative_share
        FROM predictions
        GROUP BY kind, grp, {start}
    """


def upgrade() -> None:
    create_views(op.get_bind().dialect.name)
    # top_risky_tickets: ORDER BY risk_score LIMIT n walks this index; the latest alerts: alerts by created_at.
    op.create_index("ix_predictions_kind_risk_score", "predictions", ["kind", "risk_score"])
    op.create_index("ix_alerts_created", "alerts", ["created_at"])


def create_views(dialect: str) -> None:
    """The BI views (VIEWS); revision 0005 drops and recreates them around a copy of the predictions table on SQLite."""
    op.execute(sentiment_view("minute", dialect))
    op.execute(sentiment_view("hour", dialect))
    op.execute("""
        CREATE VIEW risk_by_product_level AS
        SELECT grp AS product, risk_level, COUNT(*) AS n, AVG(risk_score) AS avg_risk_score
        FROM predictions
        WHERE kind = 'ticket'
        GROUP BY grp, risk_level
    """)
    op.execute(f"""
        CREATE VIEW top_risky_tickets AS
        SELECT message_id AS ticket_id, grp AS product, author AS customer_id, priority, risk_level, risk_score,
               risk_explanation, sentiment, SUBSTR(text, 1, 160) AS excerpt,
               {MESSAGE_TIME} AS produced_at
        FROM predictions
        WHERE kind = 'ticket'
        ORDER BY risk_score DESC, message_id
    """)
    op.execute("""
        CREATE VIEW alert_counts_by_rule AS
        SELECT rule, severity, COUNT(*) AS n, MAX(created_at) AS last_created_at
        FROM alerts
        GROUP BY rule, severity
    """)
    minute = bucket("minute", "stored_at", dialect)
    op.execute(f"""
        CREATE VIEW stored_per_minute AS
        SELECT kind, {minute} AS bucket_start, COUNT(*) AS n
        FROM predictions GROUP BY kind, {minute}
        UNION ALL
        SELECT 'dead_letter' AS kind, {minute} AS bucket_start, COUNT(*) AS n
        FROM dead_letters GROUP BY {minute}
    """)


def downgrade() -> None:
    op.drop_index("ix_alerts_created", "alerts")
    op.drop_index("ix_predictions_kind_risk_score", "predictions")
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
