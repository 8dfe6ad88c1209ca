"""The worker's HTTP endpoints: /metrics (Prometheus), /health (readiness) and /live (liveness).

A mode.Service, so Faust starts and stops it with the app on the worker's event loop
(`app.web_server(WebServer(...))`); it also runs standalone (`await server.start()`).
"""

import asyncio
import logging
import time

from aiohttp import web
from aiokafka import AIOKafkaClient
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST

from streamsense.settings import Settings
from streamsense.streams.kafka import client_options
from streamsense.streams.telemetry import Metrics

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # seconds for one broker probe


class Health:
    """Ready = the model is loaded and the broker answered within the last `max_silence` seconds."""

    def __init__(self, max_silence: float = 30.0, clock=time.monotonic):
        self.max_silence = max_silence
        self.clock = clock
        self.model: dict | None = None
        self.broker_answered_at: float | None = None

    def model_loaded(self, info: dict) -> None:
        self.model = info

    def broker_answered(self) -> None:
        self.broker_answered_at = self.clock()

    def check(self) -> tuple[bool, dict]:
        silence = None if self.broker_answered_at is None else self.clock() - self.broker_answered_at
        problems = []
        if self.model is None:
            problems.append("model not loaded")
        if silence is None or silence > self.max_silence:
            problems.append("broker not answering")
        body = {"status": "unavailable" if problems else "ready", "model": self.model,
                "broker_seconds_ago": None if silence is None else round(silence, 1), "problems": problems}
        return not problems, body


def make_app(metrics: Metrics, health: Health) -> web.Application:
    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_view(request: web.Request) -> web.Response:
        ready, body = health.check()
        return web.json_response(body, status=200 if ready else 503)

    async def live_view(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/health", health_view)
    app.router.add_get("/live", live_view)
    return app


class WebServer(Service):
    """Serves `make_app` on settings.web_host:web_port (0 = any free port: see `port` once started) and
    probes the broker every `probe_interval` seconds for /health."""

    def __init__(self, settings: Settings, metrics: Metrics, health: Health, probe_interval: float = 10.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.probe_interval = probe_interval
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(make_app(self.metrics, self.health), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.web_host, self.settings.web_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("metrics and health on http://%s:%d", self.settings.web_host, self.port)

    async def on_stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def probe_broker(self) -> None:
        """One metadata round trip with a short-lived client (the same options as the worker's)."""
        client = AIOKafkaClient(**client_options(self.settings), request_timeout_ms=int(PROBE_TIMEOUT * 1000))
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await client.bootstrap()
        finally:
            await client.close()

    @Service.task
    async def _probe_loop(self) -> None:
        while not self.should_stop:
            try:
                await self.probe_broker()
                self.health.broker_answered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure to reach the cluster leaves /health unready
                log.warning("broker probe failed (%s: %s)", type(exc).__name__, exc)
            await self.sleep(self.probe_interval)
