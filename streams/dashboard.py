"""Read-only web dashboard over the SQL store: a static page (streams/dashboard_static/) and a JSON API over
streamsense.streams.bi."""

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from streamsense.streams.bi import REPORTS, catalog, connect, jsonable, newest, parse_since, run_report

STATIC = Path(__file__).with_name("dashboard_static")
ENGINE = web.AppKey("engine", Engine)
BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
SERIES_LIMIT = 20000  # rows of a time series: buckets × groups
HEADERS = {"Cache-Control": "no-store",
           # Everything the page needs is served from here: no CDN, nothing inline.
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


def summary(engine, bucket: str, buckets: int) -> dict:
    """Everything the page shows, in one response; time series end at the newest data, not at now."""
    sentiment_report = f"sentiment-{bucket}"
    last = newest(engine, sentiment_report)
    last_stored = newest(engine, "throughput")

    def records(name, since=None, limit=None):
        return run_report(engine, name, limit=limit, since=since).records()

    return {
        "generated_at": jsonable(datetime.now(timezone.utc)),
        "bucket": bucket,
        "totals": {r["what"]: r["n"] for r in records("totals")},
        "sentiment": records(sentiment_report, last and last - (buckets - 1) * BUCKETS[bucket], SERIES_LIMIT),
        "risk": records("risk-by-product"),
        "alerts": records("latest-alerts", limit=15),
        "alert_counts": records("alerts-by-rule"),
        "top_tickets": records("top-risky-tickets", limit=10),
        "throughput": records("throughput", last_stored and last_stored - timedelta(minutes=59), SERIES_LIMIT),
        "offsets": records("offsets"),
        "languages": records("languages", limit=20),
        "drift": records("drift-windows", limit=24),
    }


async def _query(request: web.Request, fn, *args) -> web.Response:
    """Run `fn(engine, *args)` in a thread and answer its value as JSON."""
    try:
        return web.json_response(await asyncio.to_thread(fn, request.app[ENGINE], *args), headers=HEADERS)
    except ValueError as exc:  # a malformed time, or a report without a time column
        raise web.HTTPBadRequest(text=str(exc)) from None
    except SQLAlchemyError as exc:
        # Most often a database without the 0002 views: say how to fix it rather than a bare 500.
        return web.json_response({"error": f"database query failed ({type(exc).__name__}); is the schema up to "
                                           f"date? run `streamsense db upgrade`. {str(exc).splitlines()[0]}"},
                                 status=503, headers=HEADERS)


async def summary_view(request: web.Request) -> web.Response:
    bucket = request.query.get("bucket", "minute")
    if bucket not in BUCKETS:
        raise web.HTTPBadRequest(text=f"bucket must be one of {', '.join(BUCKETS)}")
    buckets = _int(request, "buckets", 60)
    return await _query(request, summary, bucket, buckets)


async def reports_view(request: web.Request) -> web.Response:
    return web.json_response(catalog(), headers=HEADERS)


async def report_view(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in REPORTS:
        raise web.HTTPNotFound(text=f"unknown report {name!r}")
    since, stored_since = request.query.get("since"), request.query.get("stored_since")
    limit = _int(request, "limit", None)

    def run(engine):
        result = run_report(engine, name, limit=limit, since=parse_since(since) if since else None,
                            stored_since=parse_since(stored_since) if stored_since else None)
        return {"name": name, "columns": result.columns, "rows": result.records()}

    return await _query(request, run)


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= 100000:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number from 1 to 100000")
    return int(raw)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=HEADERS)


def create_app(database_url: str) -> web.Application:
    app = web.Application()

    async def engine(app: web.Application):
        app[ENGINE] = connect(database_url)
        yield
        app[ENGINE].dispose()

    app.cleanup_ctx.append(engine)
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary_view)
    app.router.add_get("/api/reports", reports_view)
    app.router.add_get("/api/reports/{name}", report_view)
    app.router.add_static("/static", STATIC)
    return app


def serve(database_url: str, host: str = "127.0.0.1", port: int = 8050, log=print) -> None:
    """Run until Ctrl-C."""
    log(f"dashboard on http://{host}:{port}/ (read-only, {database_url.split('://')[0]} store)")
    web.run_app(create_app(database_url), host=host, port=port, print=None, access_log=None)
