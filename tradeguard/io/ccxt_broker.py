"""`CcxtBroker`: the `Broker` protocol over any ``ccxt.async_support`` exchange (DESIGN §5).

Theory of operation.

1. One HTTP request, one observation. The broker wraps the exchange instance's own ``fetch``
   (every ccxt request goes through it, ``load_markets``' several included; a cached answer
   makes none) in `tradeguard.io.guarded_call`: the category's breaker admits the request
   first (a refusal raises `CircuitOpen` and nothing is sent), the request is timed, and
   exactly one ``ApiCall`` plus its ``RateLimitUsage`` is reported. The category comes from
   the request's URL path (`request_category`).
2. Per-request headers. ccxt keeps the last response's headers on the instance
   (``last_response_headers``), shared by every concurrent call, so it cannot say which
   request they belong to. Instead the wrapped ``fetch`` puts its own `GuardedCall` in a
   context variable, and the instance's ``on_rest_response`` hook (which ccxt calls inside
   ``fetch``, in the same task, once the status line and headers arrived) hands status and
   headers to whatever call that variable holds. Each asyncio task has its own context, so
   concurrent requests never see each other's call; each reports its own headers.
3. Failures become `BrokerError`. What ccxt raises is judged by the shell's one fault table
   (`tradeguard.io.faults.classify`), the real HTTP status preferred, and raised again as
   ``BrokerError(category, status, message)`` naming the request that failed, so the loop,
   the runtime's cancels and preflight catch one type. `CircuitOpen` passes through as is.
4. Submissions are idempotent by client order id and retried only on the API's faults (the
   core's rule), only when ``ORDER_SUBMISSION_RETRIES_ENABLED``; each retry asks the breaker
   again.

Symbols are the venue's market ids (``BTC-USD``), as the rest of tradeguard speaks them; the
broker maps them to ccxt's unified symbols (``BTC/USD``) through the loaded markets.

Positions. A spot venue has no positions: the position of a spot market the engine trades is
the *total* balance of its base currency (free plus what open orders hold: it is still owned),
so ``BTC-USD`` and ``BTC-USDC`` both report the BTC balance. Derivative markets among
``symbols`` are read with ``fetch_positions`` when the venue has it (``has['fetchPositions']``),
signed by side. With ``symbols=None`` every spot market whose base currency has a non-zero
balance is reported.

What each method asks ccxt (``load_markets`` first, once, wherever markets are needed):

==================  ===================================================================
list_balances       ``fetch_balance`` (``{"v3": True}`` on Coinbase: every accounts page)
list_positions      ``fetch_balance``; ``fetch_positions`` for derivative ``symbols``
list_orders         ``fetch_open_orders(params={"paginate": True})``
get_best_bid_ask    ``fetch_bids_asks`` (else ``fetch_tickers``)
get_ticker          ``fetch_ticker``
get_product         the loaded market's ``precision`` (no request once loaded)
get_server_time     ``fetch_time``
place_order         Coinbase: ``v3PrivatePostBrokerageOrders`` then ``fetch_order``;
                    elsewhere ``create_order(..., {"clientOrderId": ...})``
cancel_orders       ``cancel_orders`` (else ``cancel_order`` per id)
preview_order       Coinbase: ``v3PrivatePostBrokerageOrdersPreview``; elsewhere
                    ``fetch_order_book``, walked for the order's size
==================  ===================================================================
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Self, TypeVar, final
from urllib.parse import urlsplit

import anyio

from tradeguard.fsm import Side, api_fault
from tradeguard.io.broker import (
    Balance,
    BrokerError,
    CircuitOpen,
    Order,
    OrderRequest,
    OrderStatus,
    Preview,
    Product,
    Quote,
)
from tradeguard.io.faults import classify
from tradeguard.io.guarded import GuardedCall, ObservationSink, guarded_call

__all__ = ["CcxtBroker", "request_category"]

_T = TypeVar("_T")

# Marks an exchange instance a CcxtBroker has wrapped: wrapping twice would report twice.
_WRAPPED = "_tradeguard_wrapped"

# A refusal written in a 2xx body stands for a 400 (the fault table's rule for it).
_REFUSED = 400

_STATUSES = {
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.CANCELLED,
}

_ACCOUNT_WORDS = ("account", "balance", "position", "portfolio", "wallet", "transaction_summary")


def request_category(url: str) -> str:
    """The breaker category of one request, from its URL path.

    ``orders`` for any path naming orders (placing, listing, cancelling, previewing);
    ``accounts`` for accounts, balances, positions, portfolios and the fee summary; ``market``
    for everything else (products, books, tickers, time, currencies, exchange rates).
    """
    path = urlsplit(url).path.lower()
    if "order" in path:
        return "orders"
    if any(word in path for word in _ACCOUNT_WORDS):
        return "accounts"
    return "market"


@final
@dataclass(slots=True)
class _Trail:
    """The last request one broker method made: what its failure is reported against."""

    category: str | None = None
    status: int | None = None


@final
class CcxtBroker:
    """A `Broker` over a ``ccxt.async_support`` exchange, every HTTP request reported.

    The exchange stays the caller's: open and close it as usual (``await exchange.close()``).
    Building the broker wraps the instance's ``fetch`` and ``on_rest_response``; `detach`
    (or leaving ``async with broker:``, which the `Engine` does) puts them back, so the
    client works on its own again after the runtime it reported to has closed. One broker
    per exchange instance at a time.

    Example::

        exchange = ccxt.async_support.coinbase({"apiKey": key, "secret": secret})
        async with Runtime(layer) as runtime:
            broker = CcxtBroker(exchange, runtime, symbols=["BTC-USD"])
            balances = await broker.list_balances()

    Args:
        exchange: any ``ccxt.async_support`` exchange instance.
        runtime: where observations go and whose layer admits each request (a `Runtime`).
        symbols: the market ids the engine trades (``BTC-USD``): the positions reported. None:
            every spot market whose base currency has a balance.
        submission_retries: retry submissions failed by the API; ``None`` reads the
            ``ORDER_SUBMISSION_RETRIES_ENABLED`` knob from the layer's settings.
        max_submission_attempts: attempts per submission when retries are on (first included).
        retry_delay: seconds before the first retry; the n-th waits ``n`` times as long.
        categorize: the breaker category of a request URL (default `request_category`).

    Raises:
        ValueError: the exchange is already wrapped, or a bad attempt count or delay.
        TypeError: ``exchange`` has no ``fetch`` (not a ccxt exchange).
    """

    def __init__(
        self,
        exchange: Any,
        runtime: ObservationSink,
        *,
        symbols: Sequence[str] | None = None,
        submission_retries: bool | None = None,
        max_submission_attempts: int = 3,
        retry_delay: float = 0.05,
        categorize: Callable[[str], str] = request_category,
    ) -> None:
        if not callable(getattr(exchange, "fetch", None)) or not hasattr(exchange, "has"):
            raise TypeError(f"exchange must be a ccxt.async_support exchange, got {exchange!r}")
        if getattr(exchange, _WRAPPED, False):
            raise ValueError(f"exchange {exchange.id!r} is already wrapped by a CcxtBroker")
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of market ids, not one string {symbols!r}")
        attempts = max_submission_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(
                f"max_submission_attempts must be a whole number >= 1, got {attempts!r}"
            )
        if not (
            isinstance(retry_delay, int | float) and math.isfinite(retry_delay) and retry_delay >= 0
        ):
            raise ValueError(
                f"retry_delay must be a finite number of seconds >= 0, got {retry_delay!r}"
            )
        settings = runtime.layer.settings
        self.exchange = exchange
        self.symbols = None if symbols is None else tuple(symbols)
        self.submission_retries = (
            settings.order_submission_retries_enabled
            if submission_retries is None
            else submission_retries
        )
        self.max_submission_attempts = attempts
        self.retry_delay = float(retry_delay)
        self._runtime = runtime
        self._categorize = categorize
        # Per broker, not per module: the request in flight in this task, and the trail of
        # the broker method running in this task.
        self._request: contextvars.ContextVar[GuardedCall | None] = contextvars.ContextVar(
            "tradeguard_ccxt_request", default=None
        )
        self._trail: contextvars.ContextVar[_Trail | None] = contextvars.ContextVar(
            "tradeguard_ccxt_trail", default=None
        )
        self._install()

    # ------------------------------------------------------------------ the wrapping

    def _install(self) -> None:
        exchange = self.exchange
        send = exchange.fetch
        answered = exchange.on_rest_response
        request, trail_var = self._request, self._trail
        sink, categorize = self._runtime, self._categorize

        async def fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
            category = categorize(url)
            trail = trail_var.get()
            if trail is not None:
                trail.category, trail.status = category, None
            async with guarded_call(sink, category) as call:
                token = request.set(call)
                try:
                    return await send(url, method, headers, body)
                finally:
                    request.reset(token)
                    if trail is not None:
                        trail.status = call.status

        def on_rest_response(
            code: Any,
            reason: Any,
            url: Any,
            method: Any,
            response_headers: Any,
            response_body: Any,
            request_headers: Any,
            request_body: Any,
        ) -> Any:
            call = request.get()
            if call is not None and isinstance(code, int) and 100 <= code <= 599:
                call.response(code, response_headers if isinstance(response_headers, dict) else {})
            return answered(
                code,
                reason,
                url,
                method,
                response_headers,
                response_body,
                request_headers,
                request_body,
            )

        # What the instance itself held before (usually nothing: the class's methods).
        self._replaced = {
            name: exchange.__dict__[name]
            for name in ("fetch", "on_rest_response")
            if name in exchange.__dict__
        }
        exchange.fetch = fetch
        exchange.on_rest_response = on_rest_response
        setattr(exchange, _WRAPPED, True)

    def detach(self) -> None:
        """Unwrap the exchange: its requests are no longer admitted or reported.

        Safe to call twice. Call it when the runtime this broker reports to closes (leaving
        ``async with broker:`` does), before using the client on its own.
        """
        exchange = self.exchange
        if not getattr(exchange, _WRAPPED, False):
            return
        for name in ("fetch", "on_rest_response"):
            if name in self._replaced:
                setattr(exchange, name, self._replaced[name])
            else:
                exchange.__dict__.pop(name, None)
        exchange.__dict__.pop(_WRAPPED, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.detach()

    async def _venue(self, category: str, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run ccxt calls; what they raise becomes `BrokerError` (see the fault table)."""
        trail = _Trail()
        token = self._trail.set(trail)
        try:
            return await work()
        except BrokerError:  # CircuitOpen included: already ours
            raise
        except Exception as exc:
            failure = classify(exc, trail.status)
            if failure is None:
                raise  # a bug, not the venue
            where = trail.category or category
            raise BrokerError(where, failure.status, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._trail.reset(token)

    # ------------------------------------------------------------------ markets

    async def _markets(self) -> dict[str, Any]:
        markets = self.exchange.markets
        if not markets:
            markets = await self.exchange.load_markets()
        return dict(markets)

    async def _market(self, symbol: str, category: str) -> dict[str, Any]:
        """The ccxt market of a market id (``BTC-USD``); a unified symbol works too."""
        markets = await self._markets()
        if symbol in markets:
            return dict(markets[symbol])
        by_id = self.exchange.markets_by_id or {}
        found = by_id.get(symbol)
        if found:
            return dict(found[0] if isinstance(found, list) else found)
        raise BrokerError(
            category, None, f"{symbol!r} is not a market of {self.exchange.id!r} (not sent)"
        )

    # ------------------------------------------------------------------ Broker

    async def list_balances(self) -> list[Balance]:
        """Free funds per currency (``fetch_balance``; category ``accounts``).

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`).
        """

        async def work() -> list[Balance]:
            balance = await self._fetch_balance()
            free = balance.get("free") or {}
            return [
                Balance(str(currency), _decimal(amount, f"free[{currency!r}]"))
                for currency, amount in free.items()
                if amount is not None
            ]

        return await self._venue("accounts", work)

    async def list_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol (see the module's position rule; category ``accounts``).

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`).
        """

        async def work() -> dict[str, Decimal]:
            markets = await self._markets()
            balance = await self._fetch_balance()
            totals = balance.get("total") or {}
            positions: dict[str, Decimal] = {}
            derivatives: dict[str, str] = {}  # unified symbol -> market id
            if self.symbols is None:
                for market in markets.values():
                    held = totals.get(market.get("base"))
                    if market.get("spot") and held:
                        positions[str(market["id"])] = _decimal(held, market["base"])
            else:
                for symbol in self.symbols:
                    market = await self._market(symbol, "accounts")
                    if market.get("spot", True):
                        held = totals.get(market.get("base"))
                        positions[symbol] = Decimal(0) if not held else _decimal(held, symbol)
                    else:
                        derivatives[str(market["symbol"])] = symbol
            if derivatives and self.exchange.has.get("fetchPositions"):
                for item in await self.exchange.fetch_positions(list(derivatives)):
                    held_in = derivatives.get(item.get("symbol"))
                    if held_in is None:
                        continue
                    size = _decimal(item.get("contracts") or 0, f"{held_in} contracts")
                    positions[held_in] = -size if item.get("side") == "short" else size
            return positions

        return await self._venue("accounts", work)

    async def list_orders(self) -> list[Order]:
        """Every open order, all pages (``fetch_open_orders``, paginated; category ``orders``).

        Orders of types tradeguard does not model are kept, their ids intact and their venue
        type in ``Order.order_type``, so a reconciliation audit can match them.

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`).
        """

        async def work() -> list[Order]:
            await self._markets()
            found = await self.exchange.fetch_open_orders(None, None, None, {"paginate": True})
            orders: dict[str, Order] = {}
            for item in found:
                order = self._order(item)
                orders.setdefault(order.order_id, order)  # pages may overlap at their edges
            return list(orders.values())

        return await self._venue("orders", work)

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for ``symbols`` (``fetch_bids_asks``, else ``fetch_tickers``; ``market``).

        A symbol the venue left out (or quoted without both sides) is missing from the answer.

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`).
        """
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of symbols, not one string {symbols!r}")
        if not symbols:
            return {}

        async def work() -> dict[str, Quote]:
            unified = {}
            for symbol in symbols:
                unified[str((await self._market(symbol, "market"))["symbol"])] = symbol
            if self.exchange.has.get("fetchBidsAsks"):
                tickers = await self.exchange.fetch_bids_asks(list(unified))
            else:
                tickers = await self.exchange.fetch_tickers(list(unified))
            quotes = {}
            for name, ticker in tickers.items():
                asked = unified.get(name)
                quote = None if asked is None else _quote(asked, ticker)
                if asked is not None and quote is not None:
                    quotes[asked] = quote
            return quotes

        return await self._venue("market", work)

    async def get_ticker(self, symbol: str) -> Quote:
        """The quote for one symbol (``fetch_ticker``; category ``market``).

        Raises:
            BrokerError: a request failed, was refused (`CircuitOpen`), or the venue quoted no
                bid or no ask.
        """

        async def work() -> Quote:
            market = await self._market(symbol, "market")
            quote = _quote(symbol, await self.exchange.fetch_ticker(market["symbol"]))
            if quote is None:
                raise BrokerError("market", None, f"{symbol}: the ticker has no bid or no ask")
            return quote

        return await self._venue("market", work)

    async def get_product(self, symbol: str) -> Product:
        """The product's increments (category ``market``): the validation infrastructure.

        A Coinbase-like venue is asked every time (``GET /products/{id}``), so a failing
        product service trips the validation guard as it would in production; elsewhere the
        increments come from ccxt's loaded markets (no request once they are loaded).

        Raises:
            BrokerError: the request or loading the markets failed or was refused, or the
                answer gives no increments.
        """

        async def work() -> Product:
            market = await self._market(symbol, "market")
            if self._coinbase_like():
                answer = await self.exchange.v3PrivateGetBrokerageProductsProductId(
                    {"product_id": market.get("id", symbol)}
                )
                answered = answer if isinstance(answer, dict) else {}
                base, quote = answered.get("base_increment"), answered.get("quote_increment")
            else:
                precision = market.get("precision") or {}
                base, quote = precision.get("amount"), precision.get("price")
            return Product(
                symbol,
                self._increment(base, f"{symbol} amount precision"),
                self._increment(quote, f"{symbol} price precision"),
            )

        return await self._venue("market", work)

    async def get_server_time(self) -> datetime:
        """The venue's clock, timezone-aware (``fetch_time``; category ``market``).

        Raises:
            BrokerError: the request failed or was refused (`CircuitOpen`).
        """

        async def work() -> datetime:
            millis = await self.exchange.fetch_time()
            if isinstance(millis, bool) or not isinstance(millis, int | float):
                raise BrokerError("market", None, f"server time is not a number: {millis!r}")
            return datetime.fromtimestamp(millis / 1000, UTC)

        return await self._venue("market", work)

    async def place_order(self, request: OrderRequest) -> Order:
        """Place an order (category ``orders``), retrying the API's faults when enabled.

        Every attempt sends the same client order id, so a retry after a lost answer finds
        the order the first attempt placed instead of placing another. On a Coinbase-like
        venue the order goes to ``POST /orders`` as is (ccxt's ``create_order`` would replace
        the client order id and size a market buy in the quote currency); elsewhere through
        ``create_order`` with ``clientOrderId``.

        Raises:
            BrokerError: the last attempt failed, the venue rejected the order (never
                retried), or the breaker refused an attempt (`CircuitOpen`).
        """
        attempts = self.max_submission_attempts if self.submission_retries else 1
        attempt = 1
        while True:
            try:
                return await self._venue("orders", lambda: self._submit(request))
            except CircuitOpen:
                raise
            except BrokerError as err:
                if attempt >= attempts or not api_fault(err.status):
                    raise
            await anyio.sleep(self.retry_delay * attempt)
            attempt += 1

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel orders (``cancel_orders``, else one ``cancel_order`` each; ``orders``).

        Returns:
            The ids the venue cancelled.

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`).
        """
        if isinstance(order_ids, str):
            raise TypeError(f"order_ids must be a sequence of ids, not one string {order_ids!r}")
        if not order_ids:
            return []

        async def work() -> list[str]:
            await self._markets()
            if self.exchange.has.get("cancelOrders"):
                results = await self.exchange.cancel_orders(list(order_ids))
            else:
                results = [await self.exchange.cancel_order(i) for i in order_ids]
            cancelled = []
            for result in results:
                info = result.get("info") or {}
                if info.get("success", True) is False:
                    continue  # the venue kept this one (already filled, unknown)
                order_id = result.get("id") or info.get("order_id")
                if order_id:
                    cancelled.append(str(order_id))
            return cancelled

        return await self._venue("orders", work)

    async def preview_order(self, request: OrderRequest) -> Preview:
        """What the order would do, without placing it (category ``orders``).

        A Coinbase-like venue previews it (``POST /orders/preview``); the expected price is
        the preview's ``average_filled_price`` when sent, else its notional over its size,
        else the best price on the order's side. Elsewhere the order is walked through the
        order book (``fetch_order_book``; category ``market``).

        Raises:
            BrokerError: a request failed or was refused (`CircuitOpen`), the venue refused
                the preview (its ``errs``), or the book is too thin to fill the order.
        """
        if self._coinbase_like():
            return await self._venue("orders", lambda: self._venue_preview(request))
        return await self._venue("market", lambda: self._book_preview(request))

    async def _fetch_balance(self) -> dict[str, Any]:
        # Coinbase: the Advanced Trade accounts (v3, every page); ccxt's default is the v2 API.
        params = {"v3": True} if self._coinbase_like() else {}
        return dict(await self.exchange.fetch_balance(params))

    # ------------------------------------------------------------------ orders

    def _coinbase_like(self) -> bool:
        return callable(getattr(self.exchange, "v3PrivatePostBrokerageOrders", None)) and callable(
            getattr(self.exchange, "v3PrivatePostBrokerageOrdersPreview", None)
        )

    async def _submit(self, request: OrderRequest) -> Order:
        market = await self._market(request.symbol, "orders")
        if self._coinbase_like():
            body = {"client_order_id": request.client_order_id, **_order_body(request)}
            answer = await self.exchange.v3PrivatePostBrokerageOrders(body)
            if not isinstance(answer, dict) or answer.get("success") is False:
                raise BrokerError("orders", _REFUSED, f"order refused: {_refusal(answer)}")
            created = answer.get("success_response") or {}
            placed = Order(
                str(created.get("order_id") or answer.get("order_id") or ""),
                str(created.get("client_order_id") or request.client_order_id),
                request.symbol,
                request.side,
                request.quantity,
                OrderStatus.OPEN,
                request.limit_price,
                order_type=_coinbase_type(request),
            )
            # The create answer holds ids only; the order itself says whether it filled, and
            # at what price (the loop checks a fill's slippage). Placed either way: a failed
            # look-up returns what the create answer said.
            try:
                return await self._look_up(placed, market)
            except BrokerError:
                return placed
        kind = "market" if request.limit_price is None else "limit"
        price = None if request.limit_price is None else str(request.limit_price)
        created = await self.exchange.create_order(
            market["symbol"],
            kind,
            request.side.value.lower(),
            str(request.quantity),
            price,
            {"clientOrderId": request.client_order_id},
        )
        return self._order(created, request)

    async def _look_up(self, placed: Order, market: dict[str, Any]) -> Order:
        async def work() -> Order:
            found = await self.exchange.fetch_order(placed.order_id, market["symbol"])
            return self._order(found)

        order = await self._venue("orders", work)
        return order if order.order_id == placed.order_id else placed

    async def _venue_preview(self, request: OrderRequest) -> Preview:
        await self._market(request.symbol, "orders")
        answer = await self.exchange.v3PrivatePostBrokerageOrdersPreview(_order_body(request))
        if not isinstance(answer, dict):
            raise BrokerError("orders", None, f"preview answer is not an object: {answer!r}")
        errs = answer.get("errs") or []
        if errs or answer.get("success") is False:
            raise BrokerError("orders", _REFUSED, f"preview refused: {errs or _refusal(answer)}")
        bid, ask = _optional(answer, "best_bid"), _optional(answer, "best_ask")
        price = _optional(answer, "average_filled_price")
        if price is None:
            notional, size = _optional(answer, "quote_size"), _optional(answer, "base_size")
            if notional is not None and size:
                price = notional / size
        if price is None:
            price = ask if request.side is Side.BUY else bid
        if price is None:
            price = request.limit_price
        if price is None:
            raise BrokerError("orders", None, f"preview gives no price to expect: {answer!r}")
        slippage = _optional(answer, "slippage")
        if slippage is None:
            mid = (bid + ask) / 2 if bid and ask else None
            slippage = Decimal(0) if mid is None else abs(price - mid) / mid
        return Preview(request.symbol, request.side, request.quantity, price, slippage)

    async def _book_preview(self, request: OrderRequest) -> Preview:
        market = await self._market(request.symbol, "market")
        book = await self.exchange.fetch_order_book(market["symbol"])
        bids, asks = book.get("bids") or [], book.get("asks") or []
        if not bids or not asks:
            raise BrokerError("market", None, f"{request.symbol}: the book has an empty side")
        mid = (_decimal(bids[0][0], "bid") + _decimal(asks[0][0], "ask")) / 2
        levels = asks if request.side is Side.BUY else bids
        left, cost = request.quantity, Decimal(0)
        for level in levels:
            price, size = _decimal(level[0], "book price"), _decimal(level[1], "book size")
            if request.limit_price is not None and (
                price > request.limit_price
                if request.side is Side.BUY
                else price < request.limit_price
            ):
                break
            take = min(left, size)
            cost += take * price
            left -= take
            if left <= 0:
                break
        if left > 0:
            raise BrokerError(
                "market", None, f"{request.symbol}: the book cannot fill {request.quantity}"
            )
        expected = cost / request.quantity
        slippage = abs(expected - mid) / mid
        return Preview(request.symbol, request.side, request.quantity, expected, slippage)

    def _order(self, item: dict[str, Any], request: OrderRequest | None = None) -> Order:
        """A ccxt order structure as an `Order`; unmodelled types keep their ids."""
        info = item.get("info") or {}
        symbol = info.get("product_id") or self._market_id(item.get("symbol"))
        side_text = str(item.get("side") or info.get("side") or "").upper()
        side = Side[side_text] if side_text in Side.__members__ else None
        if side is None and request is not None:
            side = request.side
        status_text = str(item.get("status") or info.get("status") or "open").lower()
        config = info.get("order_configuration")
        venue_type = (
            next(iter(config))
            if isinstance(config, dict) and len(config) == 1
            else item.get("type")
        )
        amount = item.get("amount")
        price = item.get("price")
        average = item.get("average")
        filled = item.get("filled")
        return Order(
            str(item.get("id") or info.get("order_id") or ""),
            str(item.get("clientOrderId") or info.get("client_order_id") or ""),
            str(symbol or (request.symbol if request else "")),
            side if side is not None else Side.BUY,
            _decimal(amount, "amount") if amount is not None else Decimal(0),
            _STATUSES.get(status_text, OrderStatus.OPEN),
            _decimal(price, "price") if price and item.get("type") == "limit" else None,
            _decimal(average, "average") if average and filled else None,
            order_type=None if venue_type is None else str(venue_type),
        )

    def _market_id(self, unified: object) -> str | None:
        markets = self.exchange.markets or {}
        market = markets.get(unified) if isinstance(unified, str) else None
        return None if market is None else str(market["id"])

    def _increment(self, value: object, what: str) -> Decimal:
        if value is None:
            raise BrokerError("market", None, f"{what} is unknown")
        step = _decimal(value, what)
        mode = getattr(self.exchange, "precisionMode", None)
        tick_size = 4  # ccxt.base.decimal_to_precision.TICK_SIZE
        if mode != tick_size:  # DECIMAL_PLACES: the number of decimals, not the step
            step = Decimal(1).scaleb(-int(step))
        if not step > 0:
            raise BrokerError("market", None, f"{what} must be > 0, got {value!r}")
        return step


# ---------------------------------------------------------------------- pure helpers


def _decimal(value: object, what: str) -> Decimal:
    """A number from ccxt (a float, an int or a string) as a `Decimal`."""
    try:
        number = Decimal(str(value)) if isinstance(value, int | float | str) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or isinstance(value, bool):
        raise BrokerError("market", None, f"{what} is not a number: {value!r}")
    return number


def _optional(answer: dict[str, Any], key: str) -> Decimal | None:
    """An optional decimal field: absent, null, empty or zero is None."""
    value = answer.get(key)
    if value in (None, "", 0, "0"):
        return None
    number = _decimal(value, key)
    return number if number else None


def _quote(symbol: str, ticker: dict[str, Any]) -> Quote | None:
    bid, ask = ticker.get("bid"), ticker.get("ask")
    if not bid or not ask:
        return None
    when = None
    stamp = ticker.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        when = datetime.fromtimestamp(stamp / 1000, UTC)
    return Quote(symbol, _decimal(bid, "bid"), _decimal(ask, "ask"), when)


def _coinbase_type(request: OrderRequest) -> str:
    return "market_market_ioc" if request.limit_price is None else "limit_limit_gtc"


def _order_body(request: OrderRequest) -> dict[str, Any]:
    """The Advanced Trade create/preview body (without the client order id)."""
    terms = {"base_size": str(request.quantity)}
    if request.limit_price is not None:
        terms["limit_price"] = str(request.limit_price)
    return {
        "product_id": request.symbol,
        "side": request.side.value,
        "order_configuration": {_coinbase_type(request): terms},
    }


def _refusal(answer: object) -> str:
    if isinstance(answer, dict):
        inner = answer.get("error_response")
        details = inner if isinstance(inner, dict) else answer
        parts = [
            str(details[k])
            for k in ("error", "message", "failure_reason", "preview_failure_reason")
            if details.get(k)
        ]
        if parts:
            return ": ".join(parts)
    text = repr(answer)
    return text if len(text) <= 200 else f"{text[:197]}..."
