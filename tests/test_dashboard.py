"""The dashboard: its JSON API, and the page itself in headless Chromium over a store filled with the real samples."""

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from streamsense.demo import SAMPLES
from streamsense.settings import PROJECT_ROOT
from streamsense.brokers import free_port
from streamsense.streams.alerting.gate import with_about
from streamsense.streams.alerting.terms import explain
from streamsense.streams.dashboard import (
    DashboardAccessError, authorized, check_access, create_app, is_loopback, serve,
)
from streamsense.streams.produce import read_lines
from streamsense.streams.contracts import Batch
from streamsense.streams.store import Store
from tests.bi_rows import alert, prediction
from tests.helpers import wait_until

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]
SPAN = timedelta(minutes=55)
BATCH = 64


def level_of(score: float) -> str:
    return "critical" if score >= 0.9 else "high" if score >= 0.7 else "medium" if score >= 0.4 else "low"


def sample_rows(now: datetime) -> list[dict]:
    """The bundled posts and tickets over the last 55 minutes, with made-up but plausible results: a quarter of
    the posts negative, then acme-air turning negative in the last 10 minutes; ticket risk mostly low."""
    rng = random.Random(7)
    # not the demo's bot burst (100 copies of one text at the end of the file): acme-air's posts stay in the last
    # 10 minutes of the span
    posts = [p for p in map(json.loads, read_lines(SAMPLES / "posts.jsonl")) if not p["id"].startswith("written-bot")]
    tickets = [json.loads(line) for line in read_lines(SAMPLES / "tickets.jsonl")]
    rows = []
    for i, p in enumerate(posts):
        at = now - SPAN + SPAN * i / len(posts)
        spike = p["channel"] == "acme-air" and at > now - timedelta(minutes=10)
        sentiment = rng.choices(["negative", "neutral", "positive"], [8, 1, 1] if spike else [25, 45, 30])[0]
        rows.append(prediction("post", p["id"], p["channel"], sentiment, at, p["text"], partition=i % 2,
                               offset=i // 2, lang=p.get("lang", "en")))
    for i, t in enumerate(tickets):
        at = now - SPAN + SPAN * (i + 0.5) / len(tickets)
        score = round(rng.betavariate(2, 4), 3)
        sentiment = "negative" if score >= 0.5 else rng.choice(["negative", "neutral", "positive"])
        rows.append(prediction("ticket", t["id"], t["product"], sentiment, at, t["body"], level_of(score), score,
                               t.get("priority"), partition=i % 2, offset=i // 2,
                               lang="zh" if t["id"].startswith("written-zh") else "en"))
    return sorted(rows, key=lambda r: r["produced_at"])


def alerts_for(rows: list[dict], now: datetime) -> list[dict]:
    out = [alert("high_risk", r["risk_level"], [r], r["produced_at"]) for r in rows
           if r["kind"] == "ticket" and r["risk_level"] in ("high", "critical")]
    start = now - timedelta(minutes=5)
    negative = [r for r in rows
                if r["grp"] == "acme-air" and r["sentiment"] == "negative" and r["produced_at"] >= start]
    spike = alert("negative_share_spike", "high", negative[:3], now, "acme-air (posts): negative share 80% vs "
                  "25% baseline", (start, now))
    out.append(spike)
    # a volume alert over acme-air's last 20 minutes (which hold the written delayed-flight posts), with what it is
    # about as the gate finds it: the window's posts against the 30 minutes before
    start = now - timedelta(minutes=20)
    window = [r for r in rows if r["grp"] == "acme-air" and r["produced_at"] >= start]
    baseline = [r for r in rows if r["grp"] == "acme-air" and start - timedelta(minutes=30) <= r["produced_at"] < start]
    volume = alert("volume_spike", "medium", window[-3:], now + timedelta(seconds=1),
                   f"acme-air (posts): {len(window)} messages", (start, now))
    volume["evidence"] = with_about(volume["evidence"], explain(window, baseline), "post", window)
    out.append(volume)
    return out


def fill(database_url: str) -> dict:
    """Write the sample rows in worker-sized batches through Store.write; returns what was written."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = sample_rows(now)
    alerts = alerts_for(rows, now)
    dead = [{"source_topic": "posts", "source_partition": 0, "source_offset": 1000 + i, "error": "invalid JSON",
             "payload": b"not json"} for i in range(3)]
    store = Store(database_url, "streamsense")
    store.migrate()
    for start in range(0, len(rows), BATCH):
        chunk = rows[start:start + BATCH]
        offsets = defaultdict(int)
        for r in chunk:
            key = (r["source_topic"], r["source_partition"])
            offsets[key] = max(offsets[key], r["source_offset"] + 1)
        ids = {r["message_id"] for r in chunk}
        store.write(Batch(chunk, [a for a in alerts if a["evidence"][-1]["message_id"] in ids],
                          dead if start == 0 else [], dict(offsets)))
    store.dispose()
    return {"rows": rows, "alerts": alerts, "dead": dead}


@contextmanager
def serving(database_url: str, token: str | None = None, metrics: tuple[str, ...] = ()):
    """The dashboard on a free port, in a thread of its own."""
    with serving_app(create_app(database_url, token, metrics)) as base:
        yield base


@contextmanager
def serving_app(app: web.Application):
    """An aiohttp application on a free port, in a thread of its own."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _points(sentiment: list[dict], kind: str, smooth: int = 5, at_least: int = 20) -> list[tuple[str, int]]:
    """(group, messages) of each point the negative-share chart should draw: per bucket of the top 6 groups, the
    messages of the `smooth` minutes up to it, where they are at least `at_least`."""
    rows = [r for r in sentiment if r["kind"] == kind]
    totals = Counter()
    for r in rows:
        totals[r["grp"]] += r["n"]
    top = sorted(totals, key=lambda g: -totals[g])[:6]
    n = {(r["grp"], datetime.fromisoformat(r["bucket_start"].replace("Z", "+00:00"))): r["n"] for r in rows}
    out = []
    for group, at in n:
        if group in top:
            trailing = sum(n.get((group, at - timedelta(minutes=k)), 0) for k in range(smooth))
            if trailing >= at_least:
                out.append((group, trailing))
    return out


def share(rows) -> float:
    rows = list(rows)
    return sum(r["negative"] for r in rows) / sum(r["n"] for r in rows)


@pytest.fixture
def filled(database_url):
    return database_url, fill(database_url)


def test_api(filled):
    url, written = filled
    rows, alerts = written["rows"], written["alerts"]
    with serving(url) as base:
        status, headers, body = get(f"{base}/api/summary")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        data = json.loads(body)
        posts, tickets = (sum(r["kind"] == kind for r in rows) for kind in ("post", "ticket"))  # the bundled samples
        assert data["totals"] == {"post": posts, "ticket": tickets, "alert": len(alerts), "dead_letter": 3}
        assert sum(r["n"] for r in data["sentiment"]) == len(rows)
        acme = [r for r in data["sentiment"] if r["grp"] == "acme-air"]
        recent = datetime.fromisoformat(data["generated_at"]) - timedelta(minutes=9)
        assert share(r for r in acme if datetime.fromisoformat(r["bucket_start"]) >= recent) > 0.6
        assert share(r for r in acme if datetime.fromisoformat(r["bucket_start"]) < recent - timedelta(minutes=2)) < 0.4
        newest_first = sorted(alerts, key=lambda a: a["created_at"], reverse=True)
        assert [a["id"] for a in data["alerts"]] == [a["id"] for a in newest_first][:15]
        assert sum(r["n"] for r in data["risk"]) == tickets
        assert [t["risk_score"] for t in data["top_tickets"]] == sorted(
            (r["risk_score"] for r in rows if r["kind"] == "ticket"), reverse=True)[:10]
        assert sum(r["n"] for r in data["throughput"]) == len(rows) + 3
        assert {(o["topic"], o["partition"]): o["next_offset"] for o in data["offsets"]} == {
            ("posts", 0): (posts + 1) // 2, ("posts", 1): posts // 2, ("tickets", 0): (tickets + 1) // 2,
            ("tickets", 1): tickets // 2}
        per_lang = Counter((r["kind"], r["lang"]) for r in rows)  # the samples' Chinese posts and tickets too
        assert data["languages"] == [
            {"kind": k, "lang": lang, "n": n, "supported": n if lang == "en" else 0,
             "supported_share": 1.0 if lang == "en" else 0.0}
            for (k, lang), n in sorted(per_lang.items(), key=lambda item: (-item[1], item[0]))]
        assert per_lang["post", "zh"] == 8 and per_lang["ticket", "zh"] == 2

        hourly = json.loads(get(f"{base}/api/summary?bucket=hour&buckets=2")[2])
        assert sum(r["n"] for r in hourly["sentiment"]) == len(rows)

        status, _, body = get(f"{base}/api/reports/top-risky-tickets?limit=3")
        report = json.loads(body)
        assert status == 200 and len(report["rows"]) == 3 and report["columns"][0] == "ticket_id"
        assert json.loads(get(f"{base}/api/reports")[2])[0]["name"] == "sentiment-minute"
        assert get(f"{base}/api/reports/nope")[0] == 404
        assert get(f"{base}/api/reports/throughput?since=yesterday")[0] == 400
        assert get(f"{base}/api/reports/throughput?stored_since=yesterday")[0] == 400
        assert get(f"{base}/api/reports/latest-alerts?stored_since=1h")[0] == 400  # alerts have no stored time
        status, _, body = get(f"{base}/api/reports/top-risky-tickets?stored_since=1h&limit=3")
        assert status == 200 and len(json.loads(body)["rows"]) == 3  # stored just now: all inside the hour
        status, _, body = get(f"{base}/api/reports/top-risky-tickets?stored_since=2100-01-01T00:00:00Z")
        assert status == 200 and json.loads(body)["rows"] == []
        assert get(f"{base}/api/reports/offsets?since=1h")[0] == 400
        assert get(f"{base}/api/reports/offsets?limit=0")[0] == 400
        assert get(f"{base}/api/summary?bucket=day")[0] == 400

        status, headers, body = get(f"{base}/")
        assert status == 200 and b"/static/app.js" in body
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert get(f"{base}/static/app.js")[0] == 200


def test_serve_runs_until_interrupted(filled):
    url, written = filled
    posts = sum(r["kind"] == "post" for r in written["rows"])
    port = free_port()
    code = f"import sys; from streamsense.streams.dashboard import serve; serve(sys.argv[1], '127.0.0.1', {port})"
    process = subprocess.Popen([sys.executable, "-c", code, url], cwd=PROJECT_ROOT)
    try:
        status, _, body = wait_until(lambda: _answer(f"http://127.0.0.1:{port}/api/summary"), 30, what="dashboard")
        assert status == 200 and json.loads(body)["totals"]["post"] == posts
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def _answer(url: str):
    try:
        return get(url)
    except OSError:  # not listening yet
        return None


TOKEN = "a-token-of-at-least-16-chars"


def test_a_token_guards_every_path(filled):
    url, written = filled
    basic = base64.b64encode(f"analyst:{TOKEN}".encode()).decode()
    with serving(url, TOKEN) as base:
        for path in ("/", "/api/summary", "/api/reports/top-terms", "/api/window?kind=post&grp=acme-air",
                     "/static/app.js"):
            status, headers, body = get(f"{base}{path}")
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")  # the browser asks
            assert b"message" not in body and b"acme" not in body
        for wrong in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer ", f"Token {TOKEN}", f"Basic {TOKEN}",
                      "Basic " + base64.b64encode(b"analyst:nope").decode(), "Basic !!!"):
            assert get(f"{base}/api/summary", {"Authorization": wrong})[0] == 401, wrong
        status, _, body = get(f"{base}/api/summary", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["totals"]["post"] == sum(r["kind"] == "post" for r in written["rows"])
        assert get(f"{base}/", {"Authorization": f"Basic {basic}"})[0] == 200
        assert get(f"{base}/static/app.js", {"Authorization": f"basic {basic}"})[0] == 200


def test_a_windowed_alert_opens_to_its_messages(filled):
    url, written = filled
    volume = next(a for a in written["alerts"] if a["rule"] == "volume_spike")
    start, end = volume["window_start"], volume["window_end"]
    window = sorted((r for r in written["rows"] if r["kind"] == "post" and r["grp"] == "acme-air"
                     and start <= r["produced_at"] < end), key=lambda r: (r["produced_at"], r["message_id"]))
    query = urllib.parse.urlencode({"kind": "post", "grp": "acme-air", "start": start.isoformat(),
                                    "end": end.isoformat()})
    with serving(url) as base:
        status, _, body = get(f"{base}/api/window?{query}")
        assert status == 200
        data = json.loads(body)
        assert data["total"] == len(window) > 20
        assert [m["message_id"] for m in data["messages"]] == [r["message_id"] for r in window]
        assert data["messages"][0]["text"] == window[0]["text"] and data["messages"][0]["author"]
        status, _, body = get(f"{base}/api/window?{query}&limit=5")
        assert status == 200 and len(json.loads(body)["messages"]) == 5 and json.loads(body)["total"] == len(window)
        status, _, body = get(f"{base}/api/window?kind=post&grp=acme-air")
        assert status == 400 and b"missing start, end" in body
        status, _, body = get(f"{base}/api/window?kind=post&grp=acme-air&start=yesterday&end=now")
        assert status == 400 and b"invalid time" in body


def test_filters_apply_to_every_panel(filled):
    """grp, lang, sentiment, risk and a time range narrow every panel to the rows they keep (counted here from what
    was written); bad values are 400s that say what is allowed."""
    url, written = filled
    rows = written["rows"]
    newest = max(r["produced_at"] for r in rows).replace(second=0, microsecond=0)
    start = newest - timedelta(minutes=20)
    cases = [({"grp": "acme-air"}, lambda r: r["grp"] == "acme-air"),
             ({"lang": "zh"}, lambda r: r["lang"] == "zh"),
             ({"sentiment": "negative", "risk": "high"}, lambda r: r["sentiment"] == "negative"
              and r["risk_level"] == "high"),
             ({"from": start.isoformat(), "to": newest.isoformat()},
              lambda r: start <= r["produced_at"].replace(second=0, microsecond=0) < newest)]
    with serving(url) as base:
        for params, keep in cases:
            status, _, body = get(f"{base}/api/summary?{urllib.parse.urlencode(params)}")
            assert status == 200, body
            data = json.loads(body)
            kept = [r for r in rows if keep(r)]
            assert kept, params
            assert {k: data["totals"][k] for k in ("post", "ticket")} == {
                k: sum(r["kind"] == k for r in kept) for k in ("post", "ticket")}, params
            assert sum(r["n"] for r in data["sentiment"]) == len(kept), params
            assert sum(r["n"] for r in data["risk"]) == sum(r["kind"] == "ticket" for r in kept), params
            assert sum(r["n"] for r in data["languages"]) == len(kept), params
            assert [t["ticket_id"] for t in data["top_tickets"]] == [r["message_id"] for r in sorted(
                (r for r in kept if r["kind"] == "ticket"), key=lambda r: (-r["risk_score"], r["message_id"]))][:10]
            # of stored time (all stored just now): the event time range leaves it whole, with the dead letters
            assert sum(r["n"] for r in data["throughput"]) == (len(rows) + 3 if "from" in params else len(kept))
            assert ("dead_letter" in data["totals"]) == ("from" in params)  # no group, language...: none then
            for a in data["alerts"]:
                m = a.get("message")
                if a["window_start"] is None:  # a per-message alert: its message must match
                    assert m and all(keep_field(m, k, v) for k, v in params.items() if k not in ("from", "to"))
                elif "grp" in params:
                    assert a["key"].split(":", 1)[1] == params["grp"]
        # days per minute would read every minute: the answer is per hour, and says so
        wide = json.loads(get(f"{base}/api/summary?bucket=minute&from=2d")[2])
        assert wide["bucket"] == "hour" and wide["bucket_note"] == "per hour: the range is over 6 h"
        assert sum(r["n"] for r in wide["sentiment"]) == len(rows)
        assert {datetime.fromisoformat(r["bucket_start"]).minute for r in wide["sentiment"]} == {0}
        narrow = json.loads(get(f"{base}/api/summary?bucket=minute&from=1h")[2])
        assert narrow["bucket"] == "minute" and narrow["bucket_note"] is None
        everything = json.loads(get(f"{base}/api/summary")[2])
        assert {g["grp"] for g in everything["options"]["groups"]} == {r["grp"] for r in rows}
        assert set(everything["options"]["languages"]) == {r["lang"] for r in rows}
        for query, says in (("sentiment=angry", b"sentiment must be one of negative, neutral, positive"),
                            ("risk=severe", b"risk must be one of low, medium, high, critical"),
                            ("lang=english!", b"is not a language code"), ("from=yesterday", b"invalid time"),
                            ("from=2026-01-02T00:00&to=2026-01-01T00:00", b"'to' must be after 'from'"),
                            ("grp=" + "x" * 201, b"at most 200")):
            status, _, body = get(f"{base}/api/summary?{query}")
            assert status == 400 and says in body, (query, body)


def keep_field(message: dict, param: str, value: str) -> bool:
    return message[{"risk": "risk_level"}.get(param, param)] == value


def test_a_per_message_alert_opens_to_its_message_and_every_reason(filled):
    url, written = filled
    rows = {r["message_id"]: r for r in written["rows"]}
    with serving(url) as base:
        data = json.loads(get(f"{base}/api/summary")[2])
    single = [a for a in data["alerts"] if a["window_start"] is None]
    assert single
    for a in single:
        m, row = a["message"], rows[a["key"].split(":", 1)[1]]
        assert m["text"] == row["text"] and m["author"] == row["author"] and m["grp"] == row["grp"]
        assert m["risk_explanation"] == row["risk_explanation"] and m["risk_labels"] == row["risk_labels"]
        assert m["risk_level"] == row["risk_level"] and m["risk_signals"] == row["risk_signals"]


def test_lag_per_partition_comes_from_the_workers_metrics(filled):
    """/api/lag reads each worker's /metrics (Prometheus text as the worker's registry writes it) and adds up the
    partitions; a worker that does not answer is named, not fatal; without a URL it says lag is not configured."""
    url, _ = filled
    with serving_app(lag_worker({("posts", 0): 12, ("posts", 1): 0})) as one, \
            serving_app(lag_worker({("tickets", 0): 5})) as two:
        dead = f"http://127.0.0.1:{free_port()}/metrics"
        with serving(url, metrics=(f"{one}/metrics", f"{two}/metrics", dead)) as base:
            status, _, body = get(f"{base}/api/lag")
    assert status == 200
    data = json.loads(body)
    assert data["lag"] == [{"topic": "posts", "partition": 0, "lag": 12}, {"topic": "posts", "partition": 1, "lag": 0},
                           {"topic": "tickets", "partition": 0, "lag": 5}]
    assert [s["ok"] for s in data["sources"]] == [True, True, False] and data["sources"][2]["url"] == dead
    with serving(url) as base:
        assert json.loads(get(f"{base}/api/lag")[2]) == {"configured": False, "lag": [], "sources": []}
    with pytest.raises(DashboardAccessError, match="not an http"):
        serve(url, metrics="localhost:9100/metrics")


def test_access_rules():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.7", "dashboard.example", ""))
    check_access("127.0.0.1", None)
    check_access("0.0.0.0", TOKEN)
    with pytest.raises(DashboardAccessError, match="refusing to serve the dashboard on 0.0.0.0 without auth"):
        check_access("0.0.0.0", None)
    with pytest.raises(DashboardAccessError, match="at least 16"):
        check_access("127.0.0.1", "short")
    assert authorized(f"Bearer {TOKEN}", TOKEN) and not authorized("", TOKEN)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_command_refuses_to_listen_beyond_loopback_without_a_token(filled, monkeypatch):
    url, _ = filled
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STREAMSENSE_DASHBOARD_TOKEN"}
    env["STREAMSENSE_DATABASE_URL"] = url
    result = subprocess.run([sys.executable, "-m", "streamsense", "dashboard", "--host", "0.0.0.0", "--port",
                             str(port)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve the dashboard on 0.0.0.0 without authentication" in lines[0]
    assert "STREAMSENSE_DASHBOARD_TOKEN" in lines[0] and "Traceback" not in result.stderr
    # with a token it listens there, and asks for it
    env["STREAMSENSE_DASHBOARD_TOKEN"] = TOKEN
    process = subprocess.Popen([sys.executable, "-m", "streamsense", "dashboard", "--host", "0.0.0.0", "--port",
                                str(port)], cwd=PROJECT_ROOT, env=env)
    try:
        status, _, _ = wait_until(lambda: _answer(f"http://127.0.0.1:{port}/api/summary"), 60, what="dashboard")
        assert status == 401
        assert get(f"http://127.0.0.1:{port}/api/summary", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def test_api_explains_a_database_without_the_schema(database_url):
    with serving(database_url) as base:
        status, _, body = get(f"{base}/api/summary")
    assert status == 503 and "streamsense db upgrade" in json.loads(body)["error"]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[test]'")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Chromium is not installed: apt-get install -y chromium chromium-driver (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield browser
    browser.quit()


def lag_worker(lag: dict[tuple[str, int], int]) -> web.Application:
    """A worker's /metrics as its Prometheus registry writes it, with these consumer lags."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    gauge = Gauge("consumer_lag", "lag", ["topic", "partition"], namespace="streamsense", registry=registry)
    for (topic, partition), value in lag.items():
        gauge.labels(topic, str(partition)).set(value)

    async def metrics(request):
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def test_page_in_chromium(filled, browser, artifacts):
    from selenium.webdriver.support.ui import WebDriverWait

    url, written = filled
    lag = {("posts", 0): 7, ("posts", 1): 0, ("tickets", 0): 3, ("tickets", 1): 1}
    browser.get("about:blank")  # the previous test's page stops refreshing against its stopped server
    browser.get_log("browser")  # ... and what it logged is not this page's
    with serving_app(lag_worker(lag)) as worker, serving(url, metrics=(f"{worker}/metrics",)) as base:
        browser.get(base)
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))

        def count(css: str) -> int:
            return browser.execute_script(f"return document.querySelectorAll({css!r}).length")

        assert browser.find_element("id", "error").get_attribute("hidden") is not None
        # Chinese renders as glyphs, not as the one empty box of a missing font: two characters drawn in the page's
        # font differ (deploy/test-deps.sh installs a CJK font where there is none)
        drawn = browser.execute_script("""
            const canvas = document.createElement("canvas"), ctx = canvas.getContext("2d");
            canvas.width = canvas.height = 40;
            ctx.font = "28px " + getComputedStyle(document.body).fontFamily;
            return ["中", "文", "\uE000"].map(ch => {
              ctx.clearRect(0, 0, 40, 40); ctx.fillText(ch, 4, 32);
              return Array.from(ctx.getImageData(0, 0, 40, 40).data).join(",");
            });""")
        assert drawn[0] != drawn[1] and drawn[2] not in drawn[:2], "no CJK font: Chinese renders as empty boxes"
        brands = {r["grp"] for r in written["rows"] if r["kind"] == "post"}
        assert count("#sentiment-chart svg path.series") == len(brands) == 6  # one line per brand
        # a point is the share of the 5 minutes up to it, drawn only where they hold >= 20 messages (a handful of
        # messages makes a line jump between 0 % and 100 %); its size says how many
        drawn = browser.execute_script("return [...document.querySelectorAll('#sentiment-chart circle.point')]"
                                       ".map(c => [c.dataset.group, Number(c.dataset.n), Number(c.getAttribute('r'))])")
        expected = _points(json.loads(get(f"{base}/api/summary")[2])["sentiment"], "post")
        assert sorted((g, n) for g, n, _ in drawn) == sorted(expected) and len(drawn) > 20
        assert min(n for _, n, _ in drawn) >= 20
        assert all(r1 <= r2 for (_, n1, r1), (_, n2, r2) in zip(*[sorted(drawn, key=lambda d: d[1])] * 2))
        held = " ".join(t.text for t in browser.find_elements("css selector", "#sentiment-chart text.held")[1:])
        assert held.endswith("points of under 20 messages not drawn") and int(held.split()[0]) > 0
        assert "each point: the share of the 5 minutes up to it" in browser.find_element("id", "smooth-note").text
        assert count("#volume-chart svg rect.bar") > 50
        assert count("#risk-chart svg rect.bar") >= 9  # at least one bar per product
        assert count("#throughput-chart svg rect.bar") >= 3  # posts, tickets, dead letters
        shown = min(15, len(written["alerts"]))
        assert count("#alerts-table tr.alert") == shown
        assert count("#alerts-table tr.alert .evidence li") >= shown
        newest = max(written["alerts"], key=lambda a: a["created_at"])
        assert newest["rule"] == "volume_spike"
        first = browser.find_element("css selector", "#alerts-table tr.alert")
        excerpt = " ".join(newest["evidence"][0]["excerpt"].split())  # as rendered: white space collapsed
        assert newest["summary"] in first.text and excerpt not in first.text  # closed: the evidence is inside
        # the windowed alert opens to its terms, representative messages and the rest of its window's evidence
        first.find_element("css selector", "details.about summary").click()
        about = newest["evidence"][0]["about"]
        assert [t["term"] for t in about["terms"]] == ["delayed", "flight", "gate"], about  # the written posts
        shown = [c.text for c in first.find_elements("css selector", "table.terms td.term")]
        assert shown == [t["term"] for t in about["terms"]] and excerpt in first.text
        assert f"{about['messages']} messages in the window" in first.text
        # ... and to every message stored in its window
        first.find_element("css selector", "button.window-messages").click()
        WebDriverWait(browser, 30).until(lambda b: count("#alerts-table table.window-table tbody tr") > 0)
        window = [r for r in written["rows"] if r["grp"] == "acme-air" and r["kind"] == "post"
                  and newest["window_start"] <= r["produced_at"] < newest["window_end"]]
        assert count("#alerts-table table.window-table tbody tr") == len(window) == about["messages"]
        assert f"{len(window)} messages stored in the window" in first.text
        assert count("#tickets-table tbody tr") == 10
        assert count("#offsets-table tbody tr") == 4
        # consumer lag per partition, from the worker's /metrics
        cells = browser.execute_script("return [...document.querySelectorAll('#offsets-table tbody tr')]"
                                       ".map(tr => [...tr.children].map(td => td.textContent))")
        assert {(c[1], int(c[2])): int(c[4]) for c in cells} == lag
        assert count("#languages-table tbody tr") == len({(r["kind"], r["lang"]) for r in written["rows"]}) == 4
        # a per-message alert opens to its message as stored, with its risk explanation
        single = browser.find_elements("css selector", "#alerts-table tr.alert details.message")
        assert single
        single[0].find_element("css selector", "summary").click()
        message_id = single[0].find_element("css selector", "summary").text.split()[-1].rstrip(")")
        row = next(r for r in written["rows"] if r["message_id"] == message_id)
        assert " ".join(row["text"].split()) in single[0].text and row["risk_explanation"] in single[0].text

        # the whole page in one shot: a window as tall as the page plus the browser's own frame
        height = browser.execute_script("return document.documentElement.scrollHeight + window.outerHeight"
                                        " - window.innerHeight")
        browser.set_window_size(1400, height)
        name = "dashboard.png" if url.startswith("sqlite") else "dashboard-postgresql.png"
        assert browser.save_screenshot(str(artifacts / name))
        if url.startswith("sqlite"):  # docs/images/dashboard.png is this one: the page's top (filters, cards, charts,
            # the newest alert opened) 900 px wide in 128 colours, < 300 KB
            from PIL import Image

            shot = Image.open(artifacts / name).convert("RGB")
            shot = shot.crop((0, 0, shot.width, min(shot.height, shot.width * 9 // 7)))
            small = shot.resize((900, round(shot.height * 900 / shot.width)), Image.LANCZOS).quantize(128)
            small.save(artifacts / "dashboard-docs.png", optimize=True)
            assert (artifacts / "dashboard-docs.png").stat().st_size < 300_000

        # filters narrow every panel: one brand, then its negative posts only
        from selenium.webdriver.support.ui import Select

        def card(label: str) -> int:
            return int(browser.execute_script(
                "return [...document.querySelectorAll('#totals .card')].find(c => c.querySelector('.label')"
                f".textContent === {label!r}).querySelector('.value').textContent"))

        acme = [r for r in written["rows"] if r["grp"] == "acme-air"]
        Select(browser.find_element("css selector", "#filters [name=grp]")).select_by_value("acme-air")
        WebDriverWait(browser, 30).until(lambda b: card("posts") == len(acme))
        assert count("#sentiment-chart svg path.series") == 1 and card("tickets") == 0
        assert count("#tickets-table tbody tr.empty, #tickets-table tbody td.empty") == 1
        Select(browser.find_element("css selector", "#filters [name=sentiment]")).select_by_value("negative")
        negative = sum(r["sentiment"] == "negative" for r in acme)
        WebDriverWait(browser, 30).until(lambda b: card("posts") == negative)
        assert browser.find_element("css selector", "#filters [name=grp]").get_attribute("value") == "acme-air"
        browser.find_element("id", "clear-filters").click()
        WebDriverWait(browser, 30).until(lambda b: card("posts") == sum(r["kind"] == "post" for r in written["rows"]))

        browser.find_element("css selector", "#kind-toggle [data-kind=ticket]").click()
        browser.find_element("css selector", "#bucket-toggle [data-bucket=hour]").click()
        # posts have 6 brands too: wait for the page to say it switched, then count the top 6 products' lines
        WebDriverWait(browser, 30).until(lambda b: "product" in b.find_element("id", "group-word").text)
        WebDriverWait(browser, 30).until(lambda b: count("#sentiment-chart svg path.series") == 6)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        browser.get("about:blank")  # no refresh against this server once it stops
        assert errors == []
