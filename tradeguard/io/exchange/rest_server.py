"""The embedded exchange's REST half: Coinbase Advanced Trade-shaped endpoints over a `Venue`.

Listens on 127.0.0.1 (an ephemeral port unless told otherwise). Paths and bodies follow the
venue's brokerage API (``/api/v3/brokerage/...``), prices and sizes written as strings, so
`tradeguard.io.http_broker.HttpBroker` talks to this server and to the real venue alike.

Routes, by the name `request_counts` counts them under, and the breaker category a client
files them in:

==============  =======  ===============================================  ==========
name            method   path (under ``/api/v3/brokerage``)               category
==============  =======  ===============================================  ==========
time            GET      ``/time``                                        market
accounts        GET      ``/accounts``                                    accounts
positions       GET      ``/cfm/positions``                               accounts
list_orders     GET      ``/orders/historical/batch?order_status=OPEN``   orders
best_bid_ask    GET      ``/best_bid_ask?product_ids=A&product_ids=B``    market
ticker          GET      ``/products/{product_id}/ticker``                market
product         GET      ``/products/{product_id}``                       market
create_order    POST     ``/orders``                                      orders
batch_cancel    POST     ``/orders/batch_cancel``                         orders
preview_order   POST     ``/orders/preview``                              orders
==============  =======  ===============================================  ==========

A request no route matches is counted under ``"unmatched"``.

Two kinds of fault. Venue faults (failing reads, previews and product lookups, a slippage
spike, orders the bot never placed) live on `server.venue` and reach every client of the
venue; a `BrokerError` the venue raises is answered with its status and an ``{"error",
"message"}`` body. Transport faults live here and hit every request before the venue sees it,
in this order: latency, a hang, a 429 storm, an error storm. `lose_responses` is the fault a
retrying client must survive: the venue acts on the request, then the answer is lost.

Every response carries ``x-ratelimit-limit`` and ``x-ratelimit-remaining``.
"""

from __future__ import annotations

import collections
import json
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, Self, final

import anyio
from aiohttp import web

from tradeguard.fsm import Side
from tradeguard.io.broker import BrokerError, Order, OrderRequest, OrderStatus
from tradeguard.io.exchange.venue import Venue

__all__ = ["API_PREFIX", "ExchangeRestServer"]

API_PREFIX = "/api/v3/brokerage"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequest(ValueError):
    """A request body or query the server cannot read: answered 400."""


@final
class ExchangeRestServer(anyio.AsyncContextManagerMixin):
    """A local REST server trading against a `Venue`, with transport fault controls.

    Use as ``async with ExchangeRestServer(venue, rng=random.Random(seed)) as server:``;
    leaving the block closes every connection (a request hung by `hang` is answered 503).

    Args:
        venue: the books every order and read goes to.
        host: where to listen; loopback only.
        port: 0 picks a free port; `port` tells which after start.
        rng: the random source of `error_storm`; seed it to replay a run.
        rate_limit: the limit reported in ``x-ratelimit-limit``.
    """

    def __init__(
        self,
        venue: Venue,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random,
        rate_limit: int = 100,
    ) -> None:
        if isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1:
            raise ValueError(f"rate_limit must be a whole number >= 1, got {rate_limit!r}")
        self.venue = venue
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.request_counts: collections.Counter[str] = collections.Counter()
        self._rng = rng
        self._storm_rate = 0.0
        self._storm_status = 503
        self._rate_limited = False
        self._usage = 0.0
        self._latency = 0.0
        self._hung: anyio.Event | None = None
        self._lost = 0
        self._lost_status = 503
        self._omitted: frozenset[str] = frozenset()
        self._closing = False
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The ``http://`` address clients use as their base URL."""
        return f"http://{self.host}:{self.port}"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        await self.start()
        try:
            yield self
        finally:
            with anyio.move_on_after(5, shield=True):
                await self.stop()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening (again, on the same port after a `stop`)."""
        if self._runner is not None:
            return
        self._closing = False
        app = web.Application(middlewares=[self._faults])
        self._add_routes(app.router)
        # No access log: tests make thousands of requests. A short shutdown timeout: a request
        # still running at shutdown is cancelled instead of holding the exit for a minute.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening and close every connection; ends a `hang` (held requests get 503)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        self.hang(False)  # hung handlers answer 503 now instead of at the shutdown timeout
        await runner.cleanup()

    # ------------------------------------------------------------------ fault controls

    def error_storm(self, rate: float, status: int = 503) -> None:
        """Fail each request with ``status`` with probability ``rate`` (0 turns it off).

        Each request draws once from the injected rng while the rate is above 0, so a seeded
        rng replays the same failures.
        """
        if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):  # NaN fails too
            raise ValueError(f"error_storm rate must be 0..1, got {rate!r}")
        self._storm_rate = float(rate)
        self._storm_status = _error_status(status)

    def rate_limited(self, on: bool = True) -> None:
        """Answer every request 429 with ``x-ratelimit-remaining: 0`` (or stop)."""
        self._rate_limited = on

    def set_usage(self, fraction: float) -> None:
        """Report ``fraction`` of the rate limit used on every normal response (0..1)."""
        if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"usage must be 0..1, got {fraction!r}")
        self._usage = float(fraction)

    def set_latency(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (0 turns it off)."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {seconds!r}")
        self._latency = float(seconds)

    def hang(self, on: bool = True) -> None:
        """Hold every request unanswered until ``hang(False)``, the client gives up or shutdown.

        Requests held when it is turned off are then served normally.
        """
        if on and self._hung is None:
            self._hung = anyio.Event()
        elif not on and self._hung is not None:
            self._hung.set()
            self._hung = None

    def lose_responses(self, count: int, status: int = 503) -> None:
        """Let the venue act on the next ``count`` requests, then answer each with ``status``.

        The client sees a failure although its order was placed: what a retry must survive
        without placing the order twice.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"lose_responses count must be a whole number >= 0, got {count!r}")
        self._lost = count
        self._lost_status = _error_status(status)

    def omit_from_batch(self, symbols: Iterable[str]) -> None:
        """Leave ``symbols`` out of every ``best_bid_ask`` answer (empty: leave none out)."""
        self._omitted = frozenset(symbols)

    def reset_counts(self) -> None:
        """Forget every request counted so far."""
        self.request_counts.clear()

    # ------------------------------------------------------------------ transport

    @web.middleware
    async def _faults(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        self.request_counts[route] += 1
        response = await self._answer(request, handler)
        response.headers["x-ratelimit-limit"] = str(self.rate_limit)
        if "x-ratelimit-remaining" not in response.headers:
            remaining = round(self.rate_limit * (1 - self._usage))
            response.headers["x-ratelimit-remaining"] = str(remaining)
        return response

    async def _answer(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self._latency:
            await anyio.sleep(self._latency)
        if (hung := self._hung) is not None:
            await hung.wait()
        if self._closing:
            return _error(503, "server shutting down")
        if self._rate_limited:
            limited = _error(429, "rate limit exceeded (transport fault control)")
            limited.headers["x-ratelimit-remaining"] = "0"
            return limited
        # Draw only while a storm is on, so turning one on starts a replayable sequence.
        if self._storm_rate and self._rng.random() < self._storm_rate:
            return _error(self._storm_status, "error storm (transport fault control)")
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as err:  # the router's own 404/405
            response = _error(err.status, err.reason)
        except BrokerError as err:
            response = _error(err.status or 500, _venue_message(err))
        except _BadRequest as err:
            response = _error(400, str(err))
        if self._lost:
            self._lost -= 1
            return _error(self._lost_status, "response lost (transport fault control)")
        return response

    # ------------------------------------------------------------------ routes

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX
        router.add_get(f"{p}/time", self._time, name="time")
        router.add_get(f"{p}/accounts", self._accounts, name="accounts")
        router.add_get(f"{p}/cfm/positions", self._positions, name="positions")
        router.add_get(f"{p}/orders/historical/batch", self._list_orders, name="list_orders")
        router.add_get(f"{p}/best_bid_ask", self._best_bid_ask, name="best_bid_ask")
        router.add_get(f"{p}/products/{{product_id}}/ticker", self._ticker, name="ticker")
        router.add_get(f"{p}/products/{{product_id}}", self._product, name="product")
        router.add_post(f"{p}/orders", self._create_order, name="create_order")
        router.add_post(f"{p}/orders/batch_cancel", self._batch_cancel, name="batch_cancel")
        router.add_post(f"{p}/orders/preview", self._preview_order, name="preview_order")

    async def _time(self, request: web.Request) -> web.Response:
        # The venue's clock is the wall clock by definition: clients compare theirs to it.
        now = datetime.now(UTC)
        return web.json_response(
            {
                "iso": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "epochSeconds": str(int(now.timestamp())),
                "epochMillis": str(int(now.timestamp() * 1000)),
            }
        )

    async def _accounts(self, request: web.Request) -> web.Response:
        accounts = [
            {
                "currency": b.currency,
                "available_balance": {"value": str(b.available), "currency": b.currency},
            }
            for b in self.venue.list_balances()
        ]
        return web.json_response({"accounts": accounts, "has_next": False})

    async def _positions(self, request: web.Request) -> web.Response:
        positions = [
            {"product_id": symbol, "net_size": str(size)}
            for symbol, size in self.venue.list_positions().items()
        ]
        return web.json_response({"positions": positions})

    async def _list_orders(self, request: web.Request) -> web.Response:
        wanted = request.query.getall("order_status", [])
        try:
            statuses = {OrderStatus(s) for s in wanted}
        except ValueError:
            raise _BadRequest(f"unknown order_status in {wanted!r}") from None
        orders = [o for o in self.venue.orders.values() if not statuses or o.status in statuses]
        return web.json_response({"orders": [_order_json(o) for o in orders], "has_next": False})

    async def _best_bid_ask(self, request: web.Request) -> web.Response:
        # No product_ids asks for every product, as at the real venue.
        symbols = request.query.getall("product_ids", []) or sorted(self.venue.market.prices)
        quotes = self.venue.quotes([s for s in symbols if s not in self._omitted])
        books = [
            {
                "product_id": q.symbol,
                "bids": [{"price": str(q.bid), "size": "1"}],
                "asks": [{"price": str(q.ask), "size": "1"}],
                "time": _iso(q.time),
            }
            for q in quotes.values()
        ]
        return web.json_response({"pricebooks": books})

    async def _ticker(self, request: web.Request) -> web.Response:
        quote = self.venue.quote(request.match_info["product_id"])
        return web.json_response(
            {
                "best_bid": str(quote.bid),
                "best_ask": str(quote.ask),
                "time": _iso(quote.time),
                "trades": [],
            }
        )

    async def _product(self, request: web.Request) -> web.Response:
        product = self.venue.product(request.match_info["product_id"])
        return web.json_response(
            {
                "product_id": product.symbol,
                "base_increment": str(product.base_increment),
                "quote_increment": str(product.quote_increment),
            }
        )

    async def _create_order(self, request: web.Request) -> web.Response:
        try:
            order = self.venue.place(_order_request(await _json_body(request)))
        except _BadRequest as err:
            return _rejected(400, "INVALID_ARGUMENT", str(err))
        except BrokerError as err:
            if err.status is None or err.status >= 500:
                raise
            return _rejected(err.status, _error_name(err.status), _venue_message(err))
        return web.json_response({"success": True, "success_response": _order_json(order)})

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("order_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadRequest(f"'order_ids' must be a list of strings, got {ids!r}")
        cancelled = set(self.venue.cancel(ids))
        results = [
            {"success": True, "order_id": i}
            if i in cancelled
            else {"success": False, "order_id": i, "failure_reason": "UNKNOWN_CANCEL_ORDER"}
            for i in ids
        ]
        return web.json_response({"results": results})

    async def _preview_order(self, request: web.Request) -> web.Response:
        order_request = _order_request(await _json_body(request))
        preview = self.venue.preview(order_request)
        return web.json_response(
            {
                "order_total": str(preview.expected_price * preview.quantity),
                "average_filled_price": str(preview.expected_price),
                "slippage": str(preview.slippage),
            }
        )


# ---------------------------------------------------------------------- bodies


def _error_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"a fault status must be an HTTP error status 400..599, got {status!r}")
    return status


def _error_name(status: int) -> str:
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": _error_name(status), "message": message}, status=status)


def _rejected(status: int, error: str, message: str) -> web.Response:
    body = {
        "success": False,
        "error_response": {"error": error, "message": message, "error_details": message},
    }
    return web.json_response(body, status=status)


def _venue_message(err: BrokerError) -> str:
    # BrokerError keeps only its formatted text; drop the prefix it added so the client's own
    # BrokerError does not repeat it.
    where = "no response" if err.status is None else f"HTTP {err.status}"
    return str(err).removeprefix(f"{err.category}: {where}: ")


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text())
    except ValueError as err:
        raise _BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise _BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    return body


def _order_request(body: dict[str, Any]) -> OrderRequest:
    """Read a create or preview body. Types and shape only: the venue judges the values."""
    client_id, symbol, side = body.get("client_order_id"), body.get("product_id"), body.get("side")
    if not isinstance(client_id, str):
        raise _BadRequest(f"'client_order_id' must be a string, got {client_id!r}")
    if not isinstance(symbol, str) or not symbol:
        raise _BadRequest(f"'product_id' must be a non-empty string, got {symbol!r}")
    if side not in ("BUY", "SELL"):
        raise _BadRequest(f"'side' must be 'BUY' or 'SELL', got {side!r}")
    config = body.get("order_configuration")
    if not isinstance(config, dict) or len(config) != 1:
        raise _BadRequest(f"'order_configuration' must hold one order type, got {config!r}")
    kind, terms = next(iter(config.items()))
    if kind not in ("market_market_ioc", "limit_limit_gtc") or not isinstance(terms, dict):
        raise _BadRequest(f"unsupported order configuration {kind!r}")
    size = _decimal(terms, "base_size")
    limit = _decimal(terms, "limit_price") if kind == "limit_limit_gtc" else None
    return OrderRequest(symbol, Side(side), size, client_id, limit)


def _decimal(terms: dict[str, Any], key: str) -> Decimal:
    text = terms.get(key)
    try:
        value = Decimal(text) if isinstance(text, str) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise _BadRequest(f"{key!r} must be a decimal number written as a string, got {text!r}")
    return value


def _order_json(order: Order) -> dict[str, Any]:
    size = str(order.quantity)
    if order.limit_price is None:
        config: dict[str, Any] = {"market_market_ioc": {"base_size": size}}
    else:
        config = {"limit_limit_gtc": {"base_size": size, "limit_price": str(order.limit_price)}}
    filled = order.fill_price is not None
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "product_id": order.symbol,
        "side": order.side.value,
        "status": order.status.value,
        "order_configuration": config,
        # The venue writes "0" for an order with no fill yet.
        "filled_size": size if filled else "0",
        "average_filled_price": str(order.fill_price) if filled else "0",
    }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")
