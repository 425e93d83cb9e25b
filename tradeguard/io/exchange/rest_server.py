"""The embedded exchange's REST half: Coinbase Advanced Trade-shaped endpoints over a `Venue`.

Listens on 127.0.0.1 (an ephemeral port unless told otherwise). Paths and bodies follow the
venue's brokerage API (``/api/v3/brokerage/...``), prices and sizes written as strings, so
`tradeguard.io.http_broker.HttpBroker` talks to this server and to the real venue alike.

Routes, by the name `request_counts` counts them under (paths under ``/api/v3/brokerage``
unless they start with ``/v2``; ``market_*`` routes are the public twins of the private ones):

======================  ======  =====================================================
name                    method  path
======================  ======  =====================================================
time                    GET     ``/time`` (public)
accounts, account       GET     ``/accounts?limit=&cursor=``, ``/accounts/{uuid}``
positions               GET     ``/cfm/positions``
list_orders             GET     ``/orders/historical/batch?order_status=&product_ids=&limit=``
fills                   GET     ``/orders/historical/fills?order_ids=&product_ids=&limit=``
get_order               GET     ``/orders/historical/{order_id}``
best_bid_ask            GET     ``/best_bid_ask?product_ids=A&product_ids=B``
product_book            GET     ``/product_book?product_id=&limit=``
products, product       GET     ``/products``, ``/products/{product_id}``
ticker                  GET     ``/products/{product_id}/ticker?limit=`` (limit required)
candles                 GET     ``/products/{product_id}/candles?start=&end=&granularity=``
transaction_summary     GET     ``/transaction_summary`` (the fee tier ccxt reads)
market_*                GET     ``/market/products...``, ``/market/product_book`` (public)
create_order            POST    ``/orders``
batch_cancel            POST    ``/orders/batch_cancel``
preview_order           POST    ``/orders/preview`` (no client_order_id needed)
v2_*                    GET     ``/v2/time``, ``/v2/currencies[/crypto]``, ``/v2/exchange-rates``
======================  ======  =====================================================

Order types: market IOC (by ``base_size``, or ``quote_size`` converted at the fill price),
limit GTC / GTD (expires at ``end_time``) / IOC (``sor_limit_ioc``) / FOK, all on the
`Venue`'s books; stop-limit and bracket orders rest verbatim as `ForeignOrder` (never
triggered), so an open-order list can hold orders tradeguard's `Order` does not model.
Pagination (accounts, orders, fills): ``limit`` and ``cursor``, an opaque offset; answers
carry ``has_next`` and the next ``cursor`` (``""`` at the end).

A request no route matches is counted under ``"unmatched"``.

Two kinds of fault. Venue faults (failing reads, previews and product lookups, a slippage
spike, orders the bot never placed) live on `server.venue` and reach every client of the
venue; a `BrokerError` the venue raises is answered with its status and an ``{"error",
"message"}`` body. Transport faults live here and hit every request before the venue sees it,
in this order: latency, a hang, a 429 storm, an error storm. `lose_responses` is the fault a
retrying client must survive: the venue acts on the request, then the answer is lost.

Every response carries ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and
``x-ratelimit-reset``.

Authentication (``auth=True``, the default): every ``/api/v3/brokerage`` route except
``/time`` and ``/market/...`` needs ``Authorization: Bearer <JWT>`` signed by `credentials`
(`tradeguard.io.exchange.auth`); anything else is answered 401 ``{"error": "unauthorized",
...}`` — the lower-case id ccxt's ``coinbase`` maps to ``AuthenticationError``. The ``/v2``
routes ccxt's ``load_markets`` reads are public. ``tls=True`` serves HTTPS with a throwaway CA
(`ca_file`). Faults injected by the transport (an error storm, a lost response, shutdown) are
answered with a plain-text body, as a load balancer would, so a client maps them by status;
the venue's own errors are JSON.

What the simulator does not reproduce: fees (all zero), holds, stop triggers (stop-limit and
bracket orders rest untriggered), partial fills, real 24-hour statistics (since start),
futures and portfolios; a create-order rejection keeps its 4xx status.
"""

from __future__ import annotations

import collections
import json
import math
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self, final

import anyio
from aiohttp import web

from tradeguard.io.broker import BrokerError, OrderRequest
from tradeguard.io.exchange import _wire as wire
from tradeguard.io.exchange.auth import ApiCredentials, AuthError, verify_jwt
from tradeguard.io.exchange.tls import ServerTls
from tradeguard.io.exchange.venue import Venue

__all__ = ["API_PREFIX", "ExchangeRestServer"]

API_PREFIX = "/api/v3/brokerage"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_BadRequest = wire.BadRequest
_PUBLIC = (f"{API_PREFIX}/time", f"{API_PREFIX}/market/")
_GRANULARITY = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
_ERROR_IDS = {
    400: "INVALID_ARGUMENT",
    401: "unauthorized",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "rate_limit_exceeded",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


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
        auth: require a bearer JWT signed by `credentials` on private routes.
        tls: serve HTTPS: True makes a throwaway CA the server owns (removed on `stop`); a
            `ServerTls` is used as given (its owner removes it).
        credentials: the one API key accepted (default: generated at construction).
    """

    def __init__(
        self,
        venue: Venue,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random,
        rate_limit: int = 100,
        auth: bool = True,
        tls: bool | ServerTls = False,
        credentials: ApiCredentials | None = None,
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
        self.auth = auth
        self.credentials = credentials or ApiCredentials.generate()
        self._tls_wanted = tls is not False
        self._tls: ServerTls | None = tls if isinstance(tls, ServerTls) else None
        self._owns_tls = tls is True
        self._started_at = datetime.now(UTC)

    @property
    def url(self) -> str:
        """The ``http://`` (or ``https://``) address clients use as their base URL."""
        scheme = "https" if self._tls_wanted else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The PEM file of the CA that signed the server certificate (None without TLS)."""
        return None if self._tls is None else self._tls.ca_file

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
            if self._tls_wanted and self._tls is None:
                self._tls = ServerTls()
            context = None if self._tls is None else self._tls.server_context()
            site = web.TCPSite(runner, self.host, self.port, ssl_context=context)
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
        try:
            await runner.cleanup()
        finally:
            if self._owns_tls and self._tls is not None:
                self._tls.close()
                self._tls = None

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
        # Epoch seconds at which the window resets: the venue's windows are one second.
        response.headers.setdefault("x-ratelimit-reset", str(int(time.time()) + 1))
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
            return _transport_error(503, "server shutting down")
        if self._rate_limited:
            limited = _error(429, "rate limit exceeded (transport fault control)")
            limited.headers["x-ratelimit-remaining"] = "0"
            return limited
        # Draw only while a storm is on, so turning one on starts a replayable sequence.
        if self._storm_rate and self._rng.random() < self._storm_rate:
            return _transport_error(self._storm_status, "error storm (transport fault control)")
        if self.auth and _private(request.path):
            try:
                verify_jwt(
                    self.credentials,
                    request.headers.get("Authorization"),
                    method=request.method,
                    path=request.path,
                )
            except AuthError as err:
                return _error(401, str(err))
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
            return _transport_error(self._lost_status, "response lost (transport fault control)")
        return response

    # ------------------------------------------------------------------ routes

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX
        get, post = router.add_get, router.add_post
        get(f"{p}/time", self._time, name="time")
        get(f"{p}/accounts", self._accounts, name="accounts")
        get(f"{p}/accounts/{{account_uuid}}", self._account, name="account")
        get(f"{p}/cfm/positions", self._positions, name="positions")
        get(f"{p}/orders/historical/batch", self._list_orders, name="list_orders")
        get(f"{p}/orders/historical/fills", self._fills, name="fills")
        get(f"{p}/orders/historical/{{order_id}}", self._get_order, name="get_order")
        get(f"{p}/best_bid_ask", self._best_bid_ask, name="best_bid_ask")
        get(f"{p}/product_book", self._product_book, name="product_book")
        get(f"{p}/products", self._products, name="products")
        get(f"{p}/products/{{product_id}}/ticker", self._ticker, name="ticker")
        get(f"{p}/products/{{product_id}}/candles", self._candles, name="candles")
        get(f"{p}/products/{{product_id}}", self._product, name="product")
        get(f"{p}/transaction_summary", self._transaction_summary, name="transaction_summary")
        get(f"{p}/market/product_book", self._product_book, name="market_product_book")
        get(f"{p}/market/products", self._products, name="market_products")
        get(f"{p}/market/products/{{product_id}}/ticker", self._ticker, name="market_ticker")
        get(f"{p}/market/products/{{product_id}}/candles", self._candles, name="market_candles")
        get(f"{p}/market/products/{{product_id}}", self._product, name="market_product")
        post(f"{p}/orders", self._create_order, name="create_order")
        post(f"{p}/orders/batch_cancel", self._batch_cancel, name="batch_cancel")
        post(f"{p}/orders/preview", self._preview_order, name="preview_order")
        # The v2 "track" API: public data ccxt's load_markets reads besides the products.
        get("/v2/time", self._v2_time, name="v2_time")
        get("/v2/currencies", self._v2_currencies, name="v2_currencies")
        get("/v2/currencies/crypto", self._v2_crypto, name="v2_crypto_currencies")
        get("/v2/exchange-rates", self._v2_rates, name="v2_exchange_rates")

    # --------------------------------------------------------------- market data

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

    async def _v2_time(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        iso = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        return web.json_response({"data": {"iso": iso, "epoch": int(now.timestamp())}})

    def _currencies(self) -> list[str]:
        codes = {part for s in self.venue.market.prices for part in s.split("-", 1)}
        return sorted(codes | {"USD"})

    async def _v2_currencies(self, request: web.Request) -> web.Response:
        fiat = [
            {"id": c, "name": wire.currency_name(c), "min_size": "0.01"}
            for c in self._currencies()
            if wire.is_fiat(c)
        ]
        return web.json_response({"data": fiat})

    async def _v2_crypto(self, request: web.Request) -> web.Response:
        crypto = [
            {
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tradeguard-asset/{c}")),
                "code": c,
                "name": wire.currency_name(c),
                "color": "#0052FF",
                "sort_index": index,
                "exponent": 8,
                "type": "crypto",
                "address_regex": "",
            }
            for index, c in enumerate(c for c in self._currencies() if not wire.is_fiat(c))
        ]
        return web.json_response({"data": crypto})

    async def _v2_rates(self, request: web.Request) -> web.Response:
        rates = {"USD": "1"}
        for symbol, price in sorted(self.venue.market.prices.items()):
            base, _, quote = symbol.partition("-")
            if quote == "USD":
                rates[base] = str((1 / price).quantize(Decimal("1e-12")))
        return web.json_response({"data": {"currency": "USD", "rates": rates}})

    def _product_body(self, symbol: str) -> dict[str, Any]:
        product = self.venue.product(symbol)
        return wire.product_json(
            self.venue.market, symbol, product.base_increment, product.quote_increment
        )

    async def _products(self, request: web.Request) -> web.Response:
        kind = request.query.get("product_type", "SPOT")
        wanted = _many(request, "product_ids")
        symbols = [] if kind != "SPOT" else sorted(self.venue.market.prices)
        if wanted:
            symbols = [s for s in symbols if s in wanted]
        offset = _query_int(request, "offset", 0, 0, 1_000_000)
        limit = _query_int(request, "limit", len(symbols) or 1, 1, 1_000_000)
        page = symbols[offset : offset + limit]
        products = [self._product_body(s) for s in page]
        return web.json_response({"products": products, "num_products": len(symbols)})

    async def _product(self, request: web.Request) -> web.Response:
        return web.json_response(self._product_body(request.match_info["product_id"]))

    async def _ticker(self, request: web.Request) -> web.Response:
        symbol = request.match_info["product_id"]
        if "limit" not in request.query:
            raise _BadRequest("'limit' is required (how many recent trades to return)")
        limit = _query_int(request, "limit", 1, 1, 1000)
        quote = self.venue.quote(symbol)
        # The market's last move stands for the latest trade; the trader's fills follow.
        last = {
            "trade_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{symbol}/{_iso(quote.time)}")),
            "product_id": symbol,
            "price": str(self.venue.market.prices[symbol]),
            "size": "1",
            "time": _iso(quote.time),
            "side": "BUY",
            "exchange": "",
        }
        fills = [
            {
                "trade_id": f.trade_id,
                "product_id": symbol,
                "price": str(f.price),
                "size": str(f.size),
                "time": _iso(f.time),
                "side": f.side.value,
                "exchange": "",
            }
            for f in reversed(self.venue.fills)
            if f.symbol == symbol
        ]
        return web.json_response(
            {
                "trades": [last, *fills][:limit],
                "best_bid": str(quote.bid),
                "best_ask": str(quote.ask),
                # Not in the venue's body: the quote's own time, which freshness checks need.
                "time": _iso(quote.time),
            }
        )

    async def _candles(self, request: web.Request) -> web.Response:
        symbol = request.match_info["product_id"]
        self.venue.quote(symbol)  # 404 for an unknown product
        price = self.venue.market.prices[symbol]
        granularity = request.query.get("granularity", "")
        step = _GRANULARITY.get(granularity)
        if step is None:
            raise _BadRequest(
                f"'granularity' must be one of {', '.join(_GRANULARITY)}, got {granularity!r}"
            )
        start = _optional_int(request, "start", 0, 10**11)
        end = _optional_int(request, "end", 0, 10**11)
        if start is None or end is None or end <= start:
            raise _BadRequest("'start' and 'end' must be epoch seconds with start < end")
        count = (end - start) // step
        limit = _query_int(request, "limit", 350, 1, 350)
        if count > 350:
            raise _BadRequest(f"{count} candles requested; at most 350 per request")
        # Flat candles at the current price: the simulator keeps no price history.
        candles = [
            {
                "start": str(end - (i + 1) * step),
                "low": str(price),
                "high": str(price),
                "open": str(price),
                "close": str(price),
                "volume": "0",
            }
            for i in range(min(count, limit))
        ]
        return web.json_response({"candles": candles})

    async def _best_bid_ask(self, request: web.Request) -> web.Response:
        # No product_ids asks for every product, as at the real venue.
        symbols = _many(request, "product_ids") or sorted(self.venue.market.prices)
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

    async def _product_book(self, request: web.Request) -> web.Response:
        symbol = request.query.get("product_id", "")
        if not symbol:
            raise _BadRequest("'product_id' is required")
        quote = self.venue.quote(symbol)
        depth = _query_int(request, "limit", 5, 1, 500)
        tick = Decimal("0.01")
        bids = [{"price": str(quote.bid - i * tick), "size": "1"} for i in range(depth)]
        asks = [{"price": str(quote.ask + i * tick), "size": "1"} for i in range(depth)]
        spread = quote.ask - quote.bid
        return web.json_response(
            {
                "pricebook": {
                    "product_id": symbol,
                    "bids": bids,
                    "asks": asks,
                    "time": _iso(quote.time),
                },
                "last": str(self.venue.market.prices[symbol]),
                "mid_market": str(quote.mid),
                "spread_bps": str((spread / quote.mid * 10000).quantize(Decimal("0.01"))),
                "spread_absolute": str(spread),
            }
        )

    # ------------------------------------------------------------------ accounts

    def _account_list(self) -> list[dict[str, Any]]:
        balances = {b.currency: b.available for b in self.venue.list_balances()}
        # A base currency's balance is the venue's signed position in its USD product: the
        # simulator lets positions go short, which a spot account never does.
        for code in self._currencies():
            if code not in balances:
                balances[code] = self.venue.positions.get(f"{code}-USD", Decimal(0))
        return [
            wire.account_json(
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"tradeguard-account/{code}")),
                code,
                balances[code],
                self._started_at,
            )
            for code in sorted(balances)
        ]

    async def _accounts(self, request: web.Request) -> web.Response:
        accounts = self._account_list()
        limit = _query_int(request, "limit", 49, 1, 250)
        page, cursor = _page(request, accounts, limit)
        return web.json_response(
            {"accounts": page, "has_next": bool(cursor), "cursor": cursor, "size": len(page)}
        )

    async def _account(self, request: web.Request) -> web.Response:
        wanted = request.match_info["account_uuid"]
        for account in self._account_list():
            if account["uuid"] == wanted:
                return web.json_response({"account": account})
        raise BrokerError("accounts", 404, f"unknown account {wanted!r}")

    async def _positions(self, request: web.Request) -> web.Response:
        positions = [
            {"product_id": symbol, "net_size": str(size)}
            for symbol, size in self.venue.list_positions().items()
        ]
        return web.json_response({"positions": positions})

    async def _transaction_summary(self, request: web.Request) -> web.Response:
        volume = sum((f.price * f.size for f in self.venue.fills), Decimal(0))
        return web.json_response(
            {
                "total_volume": float(volume),
                "total_fees": 0,
                "fee_tier": {
                    "pricing_tier": "Simulator",
                    "usd_from": "0",
                    "usd_to": "",
                    # The simulator charges no fees: its fills carry commission 0.
                    "taker_fee_rate": "0",
                    "maker_fee_rate": "0",
                    "aop_from": "",
                    "aop_to": "",
                },
                "margin_rate": None,
                "goods_and_services_tax": None,
                "advanced_trade_only_volume": float(volume),
                "advanced_trade_only_fees": 0,
                "coinbase_pro_volume": 0,
                "coinbase_pro_fees": 0,
                "total_balance": "",
                "has_promo_fee": False,
            }
        )

    # ------------------------------------------------------------------ orders

    def _order_views(self) -> list[dict[str, Any]]:
        """Every order, newest first, as the venue reports them."""
        self.venue.expire_due()
        views = [wire.order_json(self.venue, o) for o in self.venue.orders.values()]
        views += [wire.foreign_order_json(o) for o in self.venue.foreign.values()]
        # Ids sort in placement order; newest first, as the venue lists them.
        views.sort(key=lambda v: str(v["order_id"]), reverse=True)
        return views

    async def _list_orders(self, request: web.Request) -> web.Response:
        statuses = set(_many(request, "order_status"))
        known = {"OPEN", "FILLED", "CANCELLED", "EXPIRED", "FAILED", "PENDING", "QUEUED"}
        if statuses - known:
            raise _BadRequest(
                f"unknown order_status {sorted(statuses - known)!r}; expected any of "
                f"{', '.join(sorted(known))}"
            )
        products = set(_many(request, "product_ids") + _many(request, "product_id"))
        ids = set(_many(request, "order_ids"))
        sides = set(_many(request, "order_side"))
        types = set(_many(request, "order_types"))
        orders = [
            v
            for v in self._order_views()
            if (not statuses or v["status"] in statuses)
            and (not products or v["product_id"] in products)
            and (not ids or v["order_id"] in ids)
            and (not sides or v["side"] in sides)
            and (not types or v["order_type"] in types)
        ]
        limit = _query_int(request, "limit", 1000, 1, 1000)
        page, cursor = _page(request, orders, limit)
        return web.json_response(
            {"orders": page, "sequence": "0", "has_next": bool(cursor), "cursor": cursor}
        )

    async def _get_order(self, request: web.Request) -> web.Response:
        wanted = request.match_info["order_id"]
        for view in self._order_views():
            if view["order_id"] == wanted:
                return web.json_response({"order": view})
        raise BrokerError("orders", 404, f"order with this orderID was not found: {wanted!r}")

    async def _fills(self, request: web.Request) -> web.Response:
        products = set(_many(request, "product_ids") + _many(request, "product_id"))
        orders = set(_many(request, "order_ids"))
        trades = set(_many(request, "trade_ids"))
        fills = [
            wire.fill_json(f)
            for f in reversed(self.venue.fills)
            if (not products or f.symbol in products)
            and (not orders or f.order_id in orders)
            and (not trades or f.trade_id in trades)
        ]
        limit = _query_int(request, "limit", 1000, 1, 1000)
        page, cursor = _page(request, fills, limit)
        return web.json_response({"fills": page, "cursor": cursor})

    def _venue_request(self, terms: wire.OrderTerms, client_order_id: str) -> OrderRequest:
        quantity = terms.base_size
        if quantity is None:
            assert terms.quote_size is not None  # order_terms reads one of the two
            if not terms.quote_size > 0:
                raise BrokerError("orders", 400, f"quote_size must be > 0, got {terms.quote_size}")
            quantity = self.venue.quantity_for(terms.symbol, terms.side, terms.quote_size)
        return OrderRequest(terms.symbol, terms.side, quantity, client_order_id, terms.limit_price)

    async def _create_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        config = body.get("order_configuration")
        try:
            terms = wire.order_terms(body, client_id_required=True)
            if terms.end_time is not None and terms.end_time <= datetime.now(UTC):
                raise _BadRequest(f"'end_time' {_iso(terms.end_time)} is in the past")
            if terms.kind in wire.FOREIGN_KINDS:
                foreign = self.venue.place_foreign(
                    terms.symbol, terms.side, terms.client_order_id, terms.configuration
                )
                order_id, client_id = foreign.order_id, foreign.client_order_id
            else:
                venue_request = self._venue_request(terms, terms.client_order_id)
                if (
                    terms.post_only
                    and venue_request.limit_price is not None
                    and self._crosses(venue_request)
                ):
                    raise BrokerError("orders", 400, "post-only limit price would cross the book")
                order = self.venue.place(
                    venue_request,
                    configuration=terms.configuration,
                    immediate=terms.kind in ("sor_limit_ioc", "limit_limit_fok"),
                    expires=terms.end_time,
                )
                order_id, client_id = order.order_id, order.client_order_id
        except _BadRequest as err:
            return _rejected(400, "INVALID_ARGUMENT", str(err), config)
        except BrokerError as err:
            if err.status is None or err.status >= 500:
                raise
            return _rejected(err.status, _error_name(err.status), _venue_message(err), config)
        return web.json_response(
            {
                "success": True,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order_id,
                "success_response": {
                    "order_id": order_id,
                    "product_id": terms.symbol,
                    "side": terms.side.value,
                    "client_order_id": client_id,
                    "attached_order_id": "",
                },
                "order_configuration": config,
            }
        )

    def _crosses(self, order: OrderRequest) -> bool:
        quote = self.venue.quote(order.symbol)
        assert order.limit_price is not None
        if order.side.value == "BUY":
            return order.limit_price >= quote.ask
        return order.limit_price <= quote.bid

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("order_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadRequest(f"'order_ids' must be a list of strings, got {ids!r}")
        cancelled = set(self.venue.cancel(ids))
        results = [
            {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": i}
            if i in cancelled
            else {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": i}
            for i in ids
        ]
        return web.json_response({"results": results})

    async def _preview_order(self, request: web.Request) -> web.Response:
        # The venue's preview takes no client_order_id: the SDK never sends one.
        terms = wire.order_terms(await _json_body(request), client_id_required=False)
        quote = self.venue.quote(terms.symbol)
        if terms.kind in wire.FOREIGN_KINDS:
            size = terms.base_size or Decimal(0)
            price = terms.limit_price or quote.mid
            slippage = Decimal(0)
        else:
            preview = self.venue.preview(
                self._venue_request(terms, terms.client_order_id or "preview")
            )
            size, price, slippage = preview.quantity, preview.expected_price, preview.slippage
        total = size * price
        return web.json_response(
            {
                "order_total": str(total),
                "commission_total": "0",
                "errs": [],
                "warning": [],
                "quote_size": str(total),
                "base_size": str(size),
                "best_bid": str(quote.bid),
                "best_ask": str(quote.ask),
                "is_max": False,
                "order_margin_total": "0",
                "leverage": "1",
                "long_leverage": "1",
                "short_leverage": "1",
                "slippage": str(slippage),
                "preview_id": str(uuid.uuid4()),
                "average_filled_price": str(price),
            }
        )


# ---------------------------------------------------------------------- bodies


def _private(path: str) -> bool:
    return path.startswith(f"{API_PREFIX}/") and not (
        path == _PUBLIC[0] or path.startswith(_PUBLIC[1])
    )


def _many(request: web.Request, name: str) -> list[str]:
    """A repeated query parameter; also accepts one comma-separated value."""
    return [part for value in request.query.getall(name, []) for part in value.split(",") if part]


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    value = _optional_int(request, name, low, high)
    return default if value is None else value


def _optional_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    """A whole-number query parameter within low..high, or None when absent."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"{name!r} must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"{name!r} must be {low}..{high}, got {value}")
    return value


def _page(
    request: web.Request, items: list[dict[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], str]:
    """One page from the ``cursor`` on, and the cursor of the next page ("" at the end)."""
    text = request.query.get("cursor") or "0"
    try:
        offset = int(text)
    except ValueError:
        raise _BadRequest(f"'cursor' {text!r} is not a cursor this server handed out") from None
    if offset < 0:
        raise _BadRequest(f"'cursor' {text!r} is not a cursor this server handed out")
    end = offset + limit
    return items[offset:end], str(end) if end < len(items) else ""


def _transport_error(status: int, message: str) -> web.Response:
    # Plain text, as a proxy in front of the API answers: clients classify it by status.
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return web.Response(status=status, text=f"{status} {phrase}: {message}\n")


def _error_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"a fault status must be an HTTP error status 400..599, got {status!r}")
    return status


def _error_name(status: int) -> str:
    known = _ERROR_IDS.get(status)
    if known is not None:
        return known
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def _error(status: int, message: str) -> web.Response:
    body = {"error": _error_name(status), "error_details": message, "message": message}
    return web.json_response(body, status=status)


def _rejected(status: int, error: str, message: str, config: object) -> web.Response:
    body = {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {
            "error": error,
            "message": message,
            "error_details": message,
            "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
            "new_order_failure_reason": "UNKNOWN_FAILURE_REASON",
        },
        "order_configuration": config,
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


def _iso(when: datetime | None) -> str | None:
    return wire.iso(when)
