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

from tradeguard.fsm import BreakerState, FeedState, TradingMode
from tradeguard.fsm.effects import Reason
from tradeguard.fsm.views import LayerView, ScopeView
from tradeguard.io._http import serving
from tradeguard.io.metrics import GLOBAL_SCOPE, Metrics
from tradeguard.io.runtime import Runtime

__all__ = ["Health", "HealthStatus", "StatusServer"]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]


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
    def from_view(cls, view: LayerView) -> Health:
        """Judge a layer's `LayerView` (``layer.view()``)."""
        unhealthy: list[str] = []
        degraded: list[str] = []
        scopes = [(GLOBAL_SCOPE, view.global_scope), *view.symbols.items()]
        for scope, scope_view in scopes:
            if scope_view.mode is TradingMode.ALLOW:
                continue
            reasons = scope_view.restrictions()
            why = ", ".join(_describe(r, scope_view) for r in reasons) or "no reason given"
            line = f"{scope} mode {scope_view.mode.name}: {why}"
            if scope_view.symbol is None and scope_view.mode is TradingMode.PAUSED:
                unhealthy.append(line)
            else:
                degraded.append(line)
        for name, feed in view.feeds.items():
            if feed.state is FeedState.DEGRADED:
                unhealthy.append(f"feed {name} DEGRADED after {feed.attempts} reconnect attempts")
        for category, breaker in view.breakers.items():
            if breaker.state is BreakerState.OPEN:
                unhealthy.append(f"circuit breaker {category} OPEN")
        if not view.preview_enabled:
            degraded.append("preview disabled")
        verdict: HealthStatus = "unhealthy" if unhealthy else "degraded" if degraded else "healthy"
        return cls(verdict, (*unhealthy, *degraded))

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Health:
        """Judge a ``ReliabilityLayer.status()`` document (a runtime's ``/status``).

        Raises:
            InvalidObservation: the document is not a status (the bad field is named).
        """
        return cls.from_view(LayerView.from_json(status))

    @property
    def http_status(self) -> int:
        """200 when healthy or degraded (still serving), 503 when unhealthy."""
        return 503 if self.status == "unhealthy" else 200


def _describe(reason: Reason, scope: ScopeView) -> str:
    left = reason.seconds_until_lift
    lifts = "" if left is None else f" (may lift in {left:.1f} s)"
    said = f" ({scope.halt.reason})" if reason.guard == "operator" else ""
    return f"{reason.guard} {reason.state}{said}{lifts}"


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
        health = Health.from_view(self.runtime.layer.view())
        body = {"status": health.status, "reasons": list(health.reasons)}
        return web.json_response(body, status=health.http_status)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.runtime.layer.status())
