"""The instance's HTTP server: ``/health`` and ``/metrics`` (later issues add routes).

Handlers reach their dependencies through ``web.AppKey``; nothing here knows
the supervisor, only a :class:`HealthSource` it implements.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleet.metrics import FleetMetrics


class HealthSource(Protocol):
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details): details are JSON-safe and carry no secrets."""
        ...


HEALTH_KEY = web.AppKey("health", HealthSource)
METRICS_KEY = web.AppKey("metrics", FleetMetrics)


async def health(request: web.Request) -> web.Response:
    healthy, details = await request.app[HEALTH_KEY].health()
    return web.Response(
        status=200 if healthy else 503,
        body=orjson.dumps({"status": "ok" if healthy else "unavailable", **details}),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_web_app(source: HealthSource, fleet_metrics: FleetMetrics) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[HEALTH_KEY] = source
    app[METRICS_KEY] = fleet_metrics
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def start_web(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (the config may say 0 in tests)."""
    address = runner.addresses[0]
    return int(address[1])
