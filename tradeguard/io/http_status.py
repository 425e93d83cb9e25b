"""`StatusServer`: a runtime's metrics, health and status over HTTP (aiohttp, 127.0.0.1).

Routes (GET):

==============  =========================================================================
``/metrics``    the Prometheus exposition of the `Metrics` registry, refreshed from the
                layer first (OpenMetrics when the scraper asks for it in ``Accept``)
``/health``     ``{"status": "healthy" | "degraded" | "unhealthy", "reasons": [...]}``,
                HTTP 200 when healthy or degraded, 503 when unhealthy (see `Health`)
``/status``     ``layer.status()`` as JSON
==============  =========================================================================

Handlers run on the runtime's event loop, so they read the layer between two observations,
never during one. The server never changes the layer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Self, final

import anyio
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from tradeguard.fsm import BreakerState, FeedState, GuardState, TradingMode
from tradeguard.io._http import serving
from tradeguard.io.metrics import GLOBAL_SCOPE, Metrics
from tradeguard.io.runtime import Runtime

__all__ = ["Health", "HealthStatus", "StatusServer"]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]

_ALLOW, _PAUSED = TradingMode.ALLOW.name, TradingMode.PAUSED.name


@final
@dataclass(frozen=True, slots=True)
class Health:
    """The runtime's health, derived from the machines.

    * ``"unhealthy"``: the global mode is PAUSED, a feed is DEGRADED (out of reconnect
      attempts) or a circuit breaker is OPEN (every breaker guards an API category);
    * ``"degraded"``: otherwise, when any scope's own mode is not ALLOW (a restriction is in
      force: a symbol without a mark yet counts) or preview is disabled;
    * ``"healthy"``: every scope ALLOW, no feed DEGRADED, preview enabled.

    Attributes:
        status: the verdict.
        reasons: one human-readable line per problem, unhealthy ones first; empty when
            healthy.
    """

    status: HealthStatus
    reasons: tuple[str, ...] = ()

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Health:
        """Judge a ``ReliabilityLayer.status()`` view."""
        unhealthy: list[str] = []
        degraded: list[str] = []
        scopes = [(GLOBAL_SCOPE, status["global"]), *status["symbols"].items()]
        for scope, view in scopes:
            mode = view["mode"]
            if mode == _ALLOW:
                continue
            line = f"{scope} mode {mode}: {', '.join(_restrictions(view)) or 'no reason given'}"
            if scope == GLOBAL_SCOPE and mode == _PAUSED:
                unhealthy.append(line)
            else:
                degraded.append(line)
        for feed, view in status["feeds"].items():
            if view["state"] == FeedState.DEGRADED.name:
                unhealthy.append(
                    f"feed {feed} DEGRADED after {view['attempts']} reconnect attempts"
                )
        for category, view in status["breakers"].items():
            if view["state"] == BreakerState.OPEN.name:
                unhealthy.append(f"circuit breaker {category} OPEN")
        if not status["preview_enabled"]:
            degraded.append("preview disabled")
        verdict: HealthStatus = "unhealthy" if unhealthy else "degraded" if degraded else "healthy"
        return cls(verdict, (*unhealthy, *degraded))

    @property
    def http_status(self) -> int:
        """200 when healthy or degraded (still serving), 503 when unhealthy."""
        return 503 if self.status == "unhealthy" else 200


def _restrictions(scope: Mapping[str, Any]) -> list[str]:
    found = []
    for name, guard in scope["guards"].items():
        if guard["state"] == GuardState.HEALTHY.name or guard["restriction"] == _ALLOW:
            continue
        left = guard["seconds_until_lift"]
        lifts = "" if left is None else f" (may lift in {left:.1f} s)"
        found.append(f"{name} {guard['state']}{lifts}")
    if scope.get("has_mark") is False:
        found.append("mark_staleness NO_MARK")
    halt = scope["halt"]
    if halt["state"] == "HALTED":
        found.append(f"operator HALTED ({halt['reason']})")
    return found


@final
class StatusServer(anyio.AsyncContextManagerMixin):
    """Serves ``/metrics``, ``/health`` and ``/status`` of a runtime.

    Use as ``async with StatusServer(runtime, metrics) as server:`` inside the runtime's
    block; leaving it stops listening and closes every connection.

    Args:
        runtime: the runtime whose layer is reported.
        metrics: the metrics exposed on ``/metrics`` (refreshed from the layer per scrape).
        host: where to listen; loopback by default.
        port: 0 picks a free port; `port` tells which after start.
    """

    def __init__(
        self, runtime: Runtime, metrics: Metrics, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The ``http://host:port`` base address (append ``/metrics`` and so on)."""
        return f"http://{self.host}:{self.port}"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        async with serving(app, self.host, self.port) as self.port:
            yield self

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.refresh(self.runtime.layer)
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(
            body=encode(self.metrics.registry), headers={"Content-Type": content_type}
        )

    async def _health(self, request: web.Request) -> web.Response:
        health = Health.from_status(self.runtime.layer.status())
        body = {"status": health.status, "reasons": list(health.reasons)}
        return web.json_response(body, status=health.http_status)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.runtime.layer.status())
