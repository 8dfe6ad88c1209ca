"""Read-only web dashboard over the SQL store: a static page (streams/dashboard_static/) and a JSON API over
streamsense.streams.bi; with a token, every path requires it, and beyond loopback it must have one."""

import asyncio
import base64
import binascii
import hmac
import ipaddress
import os
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from streamsense.models.risk import LEVELS
from streamsense.streams.bi import (
    REPORTS, Filters, catalog, connect, dead_letters_since, filter_options, jsonable, newest_minute, panel_alerts,
    panel_languages, panel_risk, panel_sentiment, panel_throughput, panel_top_tickets, panel_totals, parse_since,
    run_report,
)
from streamsense.streams.feedback.panel import feedback_panel
from streamsense.streams.schema import predictions

STATIC = Path(__file__).with_name("dashboard_static")
ENGINE = web.AppKey("engine", Engine)
SENTIMENTS = ("negative", "neutral", "positive")
BUCKETS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
SERIES_LIMIT = 20000
MINUTE_SPAN = timedelta(hours=6)  # the longest range charted per minute  # rows of a time series: buckets × groups
HEADERS = {"Cache-Control": "no-store",
           # Everything the page needs is served from here: no CDN, nothing inline.
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


def summary(engine, bucket: str, buckets: int, filters: Filters | None = None) -> dict:
    """Everything the page shows, in one response, narrowed by `filters` (every panel but the offsets and lag).
    Without a start, the time range is the last `buckets` buckets up to the newest data (not to now); throughput is
    of stored time: the 60 minutes up to the newest stored row."""
    f = filters or Filters()
    if f.start is None:
        last = newest_minute(engine)
        if last is not None:
            last = _floor(last, bucket)
            f = replace(f, start=last - (buckets - 1) * BUCKETS[bucket])
    wide = bucket == "minute" and f.start is not None and \
        (f.end or datetime.now(timezone.utc)) - f.start > MINUTE_SPAN
    if wide:  # a per-minute chart of days would read every minute: per hour instead, and the page says so
        bucket = "hour"
    last_stored = newest_minute(engine, stored=True)
    stored_since = last_stored and last_stored - timedelta(minutes=59)
    alerts, alert_total = panel_alerts(engine, f, 15)
    totals = {"post": 0, "ticket": 0, **panel_totals(engine, f), "alert": alert_total}
    if not f.narrowed:
        totals["dead_letter"] = dead_letters_since(engine, stored_since)
    return {
        "generated_at": jsonable(datetime.now(timezone.utc)),
        "bucket": bucket,
        "bucket_note": f"per hour: the range is over {MINUTE_SPAN.seconds // 3600} h" if wide else None,
        "range": {"start": jsonable(f.start), "end": jsonable(f.end)},
        "filters": {k: getattr(f, k) for k in FILTERS},
        "totals": totals,
        "sentiment": panel_sentiment(engine, f, bucket, SERIES_LIMIT),
        "risk": panel_risk(engine, f),
        "alerts": alerts,
        "alert_counts": records_of(engine, "alerts-by-rule"),
        "top_tickets": panel_top_tickets(engine, f, 10),
        "throughput": panel_throughput(engine, f, stored_since, SERIES_LIMIT),
        "offsets": records_of(engine, "offsets"),
        "languages": panel_languages(engine, f, 20),
        "options": filter_options(engine, f),
        "drift": run_report(engine, "drift-windows", limit=24).records(),
    }


def records_of(engine, name: str) -> list[dict]:
    return run_report(engine, name).records()


FILTERS = ("grp", "lang", "sentiment", "risk_level")
LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?$|^und$")


def filters_from(query) -> Filters:
    """The filters of a request (`from`, `to`: ISO 8601 or 30m/2h/7d; `grp`, `lang`, `sentiment`, `risk`),
    validated: ValueError says what is wrong."""
    values = {}
    for param in ("from", "to"):
        if query.get(param):
            at = parse_since(query[param])  # whole minutes, as the counters count
            values["start" if param == "from" else "end"] = at.replace(second=0, microsecond=0)
    if "start" in values and "end" in values and values["end"] <= values["start"]:
        raise ValueError("'to' must be after 'from'")
    grp = query.get("grp")
    if grp:
        if len(grp) > 200:
            raise ValueError("grp is at most 200 characters")
        values["grp"] = grp
    lang = query.get("lang")
    if lang:
        if not LANG.match(lang):
            raise ValueError(f"lang {lang!r} is not a language code (e.g. en, zh, und)")
        values["lang"] = lang
    for param, name, allowed in (("sentiment", "sentiment", SENTIMENTS), ("risk", "risk_level", LEVELS)):
        value = query.get(param)
        if value:
            if value not in allowed:
                raise ValueError(f"{param} must be one of {', '.join(allowed)}")
            values[name] = value
    return Filters(**values)


def _floor(at: datetime, bucket: str) -> datetime:
    return at.replace(minute=0) if bucket == "hour" else at


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
    try:
        filters = filters_from(request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return await _query(request, summary, bucket, buckets, filters)


async def feedback_view(request: web.Request) -> web.Response:
    """The feedback panel (streams/feedback/panel.py): not narrowed by the filters (verdicts are few, and about
    whichever message people chose)."""
    return await _query(request, feedback_panel)


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


METRICS = web.AppKey("metrics", tuple)
LAG_METRIC = "streamsense_consumer_lag"
LAG_TIMEOUT = 2.0  # seconds for each worker's /metrics


def parse_lag(text: str) -> dict[tuple[str, int], float]:
    """The consumer lag per (topic, partition) in a worker's Prometheus /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAG_METRIC:
                out[(sample.labels["topic"], int(sample.labels["partition"]))] = sample.value
    return out


async def lag_view(request: web.Request) -> web.Response:
    """Consumer lag per partition as the workers last saw it (their /metrics, STREAMSENSE_DASHBOARD_METRICS_URL:
    one URL or several, comma-separated; a partition belongs to one worker at a time, so their readings add up)."""
    import aiohttp

    urls = request.app[METRICS]
    if not urls:
        return web.json_response({"configured": False, "lag": [], "sources": []}, headers=HEADERS)
    lag: dict[tuple[str, int], float] = {}
    sources = []
    timeout = aiohttp.ClientTimeout(total=LAG_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url in urls:
            try:
                async with session.get(url) as response:
                    response.raise_for_status()
                    found = parse_lag(await response.text())
                for key, value in found.items():
                    lag[key] = lag.get(key, 0) + value
                sources.append({"url": url, "ok": True, "partitions": len(found)})
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                sources.append({"url": url, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return web.json_response({"configured": True, "sources": sources,
                              "lag": [{"topic": t, "partition": p, "lag": int(v)}
                                      for (t, p), v in sorted(lag.items())]}, headers=HEADERS)


def metrics_urls(value: str | None) -> tuple[str, ...]:
    """STREAMSENSE_DASHBOARD_METRICS_URL's URLs (comma-separated); ValueError for one that is not http(s)."""
    urls = tuple(u.strip() for u in (value or "").split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"STREAMSENSE_DASHBOARD_METRICS_URL: {url!r} is not an http(s) URL")
    return urls


WINDOW_LIMIT = 500  # messages of a window the page lists at most


def window_messages(engine, kind: str, group: str, start: datetime, end: datetime, limit: int) -> dict:
    """The stored messages of one (kind, group) window of event time, oldest first: what a windowed alert opens to.
    Texts as stored (STREAMSENSE_STORE_TEXT)."""
    c = predictions.c
    where = (c.kind == kind, c.grp == group, c.event_at >= start, c.event_at < end)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(predictions).where(*where)).scalar_one()
        rows = conn.execute(select(c.message_id, c.event_at, c.author, c.text, c.sentiment, c.risk_level,
                                   c.risk_score).where(*where).order_by(c.event_at, c.message_id).limit(limit))
        return {"kind": kind, "grp": group, "start": jsonable(start), "end": jsonable(end), "total": total,
                "messages": [{k: jsonable(v) for k, v in r._mapping.items()} for r in rows]}


async def window_view(request: web.Request) -> web.Response:
    q = request.query
    missing = [name for name in ("kind", "grp", "start", "end") if not q.get(name)]
    if missing:
        raise web.HTTPBadRequest(text=f"missing {', '.join(missing)}: /api/window?kind=post&grp=NAME&start=ISO&end=ISO")
    limit = min(_int(request, "limit", WINDOW_LIMIT), WINDOW_LIMIT)
    return await _query(request, lambda engine: window_messages(engine, q["kind"], q["grp"], parse_since(q["start"]),
                                                                  parse_since(q["end"]), limit))


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= 100000:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number from 1 to 100000")
    return int(raw)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=HEADERS)


MIN_TOKEN = 16
AUTH_CHALLENGE = {"WWW-Authenticate": 'Basic realm="streamsense dashboard", charset="UTF-8"'}


class DashboardAccessError(ValueError):
    """The dashboard would be reachable beyond loopback without authentication, its token is too short, or a
    metrics URL is not an http(s) URL."""


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1, "localhost"."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_access(host: str, token: str | None) -> None:
    """Raise DashboardAccessError unless serving on `host` with `token` is allowed: a token, if any, of at least
    MIN_TOKEN characters; none only on loopback."""
    if token is not None and len(token) < MIN_TOKEN:
        raise DashboardAccessError(f"STREAMSENSE_DASHBOARD_TOKEN is {len(token)} characters: use at least {MIN_TOKEN} "
                                   "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    if token is None and not is_loopback(host):
        raise DashboardAccessError(f"refusing to serve the dashboard on {host} without authentication: it shows "
                                   "message texts and authors; set STREAMSENSE_DASHBOARD_TOKEN, or listen on "
                                   "127.0.0.1 behind an authenticating proxy")


def authorized(header: str, token: str) -> bool:
    """Whether an Authorization header carries `token`: "Bearer <token>", or "Basic" with it as the password (any
    user name). Compared in constant time."""
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme != "bearer":
        return False
    return hmac.compare_digest(value.encode("utf-8"), token.encode("utf-8"))


def _require(token: str):
    @web.middleware
    async def require_token(request: web.Request, handler):
        if authorized(request.headers.get("Authorization", ""), token):
            return await handler(request)
        raise web.HTTPUnauthorized(text="authentication required (STREAMSENSE_DASHBOARD_TOKEN)",
                                   headers={**AUTH_CHALLENGE, "Cache-Control": "no-store"})
    return require_token


def create_app(database_url: str, token: str | None = None, metrics: tuple[str, ...] = ()) -> web.Application:
    """The dashboard's application; with `token`, every path (page, static files, API) requires it; `metrics`: the
    workers' /metrics URLs the lag comes from."""
    app = web.Application(middlewares=[_require(token)] if token else [])
    app[METRICS] = tuple(metrics)

    async def engine(app: web.Application):
        app[ENGINE] = connect(database_url)
        yield
        app[ENGINE].dispose()

    app.cleanup_ctx.append(engine)
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary_view)
    app.router.add_get("/api/reports", reports_view)
    app.router.add_get("/api/reports/{name}", report_view)
    app.router.add_get("/api/window", window_view)
    app.router.add_get("/api/lag", lag_view)
    app.router.add_get("/api/feedback", feedback_view)
    app.router.add_static("/static", STATIC)
    return app


def serve(database_url: str, host: str = "127.0.0.1", port: int = 8050, log=print, token: str | None = None,
          metrics: str | None = None) -> None:
    """Run until Ctrl-C. Raises DashboardAccessError before listening where `check_access` refuses, or where the
    metrics URLs (default: STREAMSENSE_DASHBOARD_METRICS_URL) are not http(s) URLs."""
    check_access(host, token)
    try:
        urls = metrics_urls(metrics if metrics is not None else os.environ.get("STREAMSENSE_DASHBOARD_METRICS_URL"))
    except ValueError as exc:
        raise DashboardAccessError(str(exc)) from None
    log(f"dashboard on http://{host}:{port}/ (read-only, {database_url.split('://')[0]} store"
        f"{', token required' if token else ', no authentication: loopback only'})")
    web.run_app(create_app(database_url, token, urls), host=host, port=port, print=None, access_log=None)
