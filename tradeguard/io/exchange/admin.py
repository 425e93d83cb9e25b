"""The embedded exchange's admin API: fault controls over plain HTTP, in Toxiproxy's spirit.

Served on its own port (so its requests are not venue requests and are never faulted):

==========  ==================  ==========================================================
method      path                what
==========  ==================  ==========================================================
POST        ``/admin/faults``   ``{"status": 503}`` (any 5xx; ``"rate"`` 0..1, default 1)
                                or ``{"status": 429}`` (rate-limited, with headers) and/or
                                ``{"latency_ms": N}``: every REST call, until DELETE
DELETE      ``/admin/faults``   every REST fault off
POST        ``/admin/feed``     ``{"action": "drop" | "refuse" | "silence" | "resume"}``
GET         ``/admin/requests`` ``{"total": N, "routes": {name: N}}`` REST requests so far
DELETE      ``/admin/requests`` forget the counts
==========  ==================  ==========================================================

``drop`` closes every websocket with 1011; ``refuse`` answers new handshakes 503 (or
``"status"``); ``silence`` stops every message, heartbeats included; ``resume`` undoes
``refuse`` and ``silence``. Bad input is answered 400 ``{"error": ...}`` naming what was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, Self, final

import anyio
from aiohttp import web

from tradeguard.io._http import serving
from tradeguard.io.exchange.feed_server import ExchangeFeedServer
from tradeguard.io.exchange.rest_server import ExchangeRestServer

__all__ = ["ADMIN_PREFIX", "AdminServer"]

ADMIN_PREFIX = "/admin"
_FAULT_KEYS = frozenset({"status", "rate", "latency_ms"})
_FEED_ACTIONS = ("drop", "refuse", "silence", "resume")


class _AdminInputError(ValueError):
    """Admin input that cannot be applied: answered 400 with this message."""


@final
class AdminServer(anyio.AsyncContextManagerMixin):
    """Plain-HTTP controls over a REST and a feed server.

    Args:
        rest: the REST server whose transport faults and counts it drives.
        feed: the websocket server whose faults it drives.
        host: where to listen; loopback only.
        port: 0 picks a free port; `port` tells which after start.
    """

    def __init__(
        self,
        rest: ExchangeRestServer,
        feed: ExchangeFeedServer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.rest = rest
        self.feed = feed
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The admin base URL; controls live under it (``{url}/faults``, ...)."""
        return f"http://{self.host}:{self.port}{ADMIN_PREFIX}"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        app = web.Application()
        app.router.add_post(f"{ADMIN_PREFIX}/faults", self._set_faults)
        app.router.add_delete(f"{ADMIN_PREFIX}/faults", self._clear_faults)
        app.router.add_post(f"{ADMIN_PREFIX}/feed", self._feed)
        app.router.add_get(f"{ADMIN_PREFIX}/requests", self._requests)
        app.router.add_delete(f"{ADMIN_PREFIX}/requests", self._reset_requests)
        async with serving(app, self.host, self.port) as self.port:
            yield self

    # ------------------------------------------------------------------ handlers

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await _object(request)
            unknown = sorted(set(body) - _FAULT_KEYS)
            if unknown or not body:
                raise _AdminInputError(
                    f"unknown fault keys {unknown!r}; expected any of status, rate, latency_ms"
                    if unknown
                    else "empty fault: give status and/or latency_ms"
                )
            status, rate, latency = _fault_values(body)
        except _AdminInputError as err:
            return _bad(str(err))
        if latency is not None:
            self.rest.set_latency(latency)
        if status == 429:
            self.rest.rate_limited(True)
        elif status is not None:
            self.rest.error_storm(rate, status)
        return web.json_response({"applied": body})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.rest.error_storm(0)
        self.rest.rate_limited(False)
        self.rest.set_latency(0)
        return web.json_response({"cleared": True})

    async def _feed(self, request: web.Request) -> web.Response:
        try:
            body = await _object(request)
            action = body.get("action")
            if action not in _FEED_ACTIONS:
                raise _AdminInputError(
                    f"'action' must be one of {', '.join(_FEED_ACTIONS)}, got {action!r}"
                )
            status = body.get("status", 503)
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise _AdminInputError(f"'status' must be an HTTP error status, got {status!r}")
        except _AdminInputError as err:
            return _bad(str(err))
        if action == "drop":
            await self.feed.drop_all(1011, "dropped by admin control")
        elif action == "refuse":
            self.feed.refuse_handshakes(status)
        elif action == "silence":
            self.feed.go_silent(True)
        else:
            self.feed.go_silent(False)
            self.feed.refuse_handshakes(None)
        return web.json_response({"action": action})

    async def _requests(self, request: web.Request) -> web.Response:
        counts = dict(sorted(self.rest.request_counts.items()))
        return web.json_response({"total": sum(counts.values()), "routes": counts})

    async def _reset_requests(self, request: web.Request) -> web.Response:
        self.rest.reset_counts()
        return web.json_response({"total": 0, "routes": {}})


def _fault_values(body: dict[str, Any]) -> tuple[int | None, float, float | None]:
    status = body.get("status")
    if status is not None and (
        isinstance(status, bool)
        or not isinstance(status, int)
        or not (status == 429 or 500 <= status <= 599)
    ):
        raise _AdminInputError(f"'status' must be 429 or a 5xx status, got {status!r}")
    rate = body.get("rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise _AdminInputError(f"'rate' must be a number 0..1, got {rate!r}")
    latency_ms = body.get("latency_ms")
    latency = None
    if latency_ms is not None:
        if (
            isinstance(latency_ms, bool)
            or not isinstance(latency_ms, int | float)
            or not math.isfinite(latency_ms)
            or latency_ms < 0
        ):
            raise _AdminInputError(f"'latency_ms' must be a number >= 0, got {latency_ms!r}")
        latency = latency_ms / 1000
    return status, float(rate), latency


async def _object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text())
    except ValueError as err:
        raise _AdminInputError(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise _AdminInputError(f"body must be a JSON object, got {type(body).__name__}")
    return body


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
