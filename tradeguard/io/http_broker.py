"""`HttpBroker`: the `Broker` protocol over the venue's REST API, every call reported.

Theory of operation (DESIGN §2.3, STYLE §2 "faults become observations at the edge"):

1. Ask first. Every HTTP attempt starts with ``layer.admit(category)``; a refusal raises
   `CircuitOpen` without touching the network and without observing anything (the breaker
   refused the call; the API did nothing).
2. One attempt, one report. The request runs under ``timeout`` seconds, then exactly one
   ``ApiCall(category, ok, status, latency)`` is observed: ``ok`` for a 2xx, ``status`` None
   for a timeout or a connection failure. A 4xx is reported as it is; the layer knows a client
   error is not the API's fault. Then ``RateLimitUsage(1 - remaining / limit)`` when the
   response carries the rate-limit headers.
3. Then judge. A failed attempt raises `BrokerError` (status None for a timeout or connection
   failure), so a caller catches one type. A 2xx body is parsed strictly by the pure
   ``parse_*`` functions below; anything malformed raises `BrokerError` naming what was wrong.
4. Submissions retry only when enabled, only on failures that may be transient (5xx, 429, a
   timeout, a connection failure), always with the same ``client_order_id`` (the venue places
   it once), after ``retry_delay * attempt`` seconds. A 4xx is never retried: the same request
   would be refused again. Each retry asks the breaker again, so a breaker that opens mid-way
   stops the retries with `CircuitOpen`.

At most ``max_concurrent_rest_calls`` (a knob) requests are in flight at once; latency counts
from when a request got its slot.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Self, TypeVar, final
from urllib.parse import quote

import aiohttp
import anyio

from tradeguard.fsm import BreakerState, Side, api_fault
from tradeguard.fsm.events import ApiCall, RateLimitUsage
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
from tradeguard.io.guarded import ObservationSink

__all__ = [
    "CircuitOpen",
    "HttpBroker",
    "MalformedResponse",
    "ObservationSink",
    "decode_json",
    "describe_error",
    "order_body",
    "parse_balances",
    "parse_cancel_results",
    "parse_order",
    "parse_order_created",
    "parse_orders",
    "parse_positions",
    "parse_preview",
    "parse_pricebooks",
    "parse_product",
    "parse_server_time",
    "parse_ticker",
    "rate_limit_usage",
]

_API = "/api/v3/brokerage"
_T = TypeVar("_T")


class MalformedResponse(ValueError):
    """A response body that is not shaped as the API documents it."""


@final
@dataclass(frozen=True, slots=True)
class _Answer:
    """What one HTTP attempt got: a status and body, or why it got none."""

    status: int | None
    headers: Mapping[str, str] | None = None
    raw: bytes = b""
    failure: str = ""


@final
class HttpBroker(anyio.AsyncContextManagerMixin):
    """A `Broker` over HTTP that reports every attempt to the reliability layer.

    Use as ``async with HttpBroker(server_url, runtime) as broker:``; the block owns the HTTP
    session and closes it on exit.

    Args:
        base_url: the venue's address, ``http://host:port`` (the API path is added).
        runtime: where observations go and whose layer admits calls (a `Runtime`).
        timeout: seconds one attempt may take, connecting and reading included.
        submission_retries: retry failed order submissions; ``None`` reads the
            ``ORDER_SUBMISSION_RETRIES_ENABLED`` knob from the layer's settings.
        max_submission_attempts: attempts per submission when retries are on (first included).
        retry_delay: seconds before the first retry; the n-th waits ``n`` times as long.

    Raises:
        ValueError: a bad URL, timeout, attempt count or delay.
    """

    def __init__(
        self,
        base_url: str,
        runtime: ObservationSink,
        *,
        timeout: float = 5.0,
        submission_retries: bool | None = None,
        max_submission_attempts: int = 3,
        retry_delay: float = 0.05,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
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
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.submission_retries = (
            settings.order_submission_retries_enabled
            if submission_retries is None
            else submission_retries
        )
        self.max_submission_attempts = attempts
        self.retry_delay = float(retry_delay)
        self._runtime = runtime
        self._max_in_flight = settings.max_concurrent_rest_calls
        self._session: aiohttp.ClientSession | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._session is not None:
            raise RuntimeError("HttpBroker is already open")
        # No aiohttp timeout: each attempt runs under an anyio deadline, so a timeout is a
        # cancel scope like any other and never leaks a half-read response.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._session = session
        self._limiter = anyio.CapacityLimiter(self._max_in_flight)
        try:
            yield self
        finally:
            self._session = None
            with anyio.move_on_after(5, shield=True):
                await session.close()

    # ------------------------------------------------------------------ Broker

    async def list_balances(self) -> list[Balance]:
        """Funds per currency (category ``accounts``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        return await self._call("accounts", "GET", "/accounts", parse_balances)

    async def list_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol (category ``accounts``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        return await self._call("accounts", "GET", "/cfm/positions", parse_positions)

    async def list_orders(self) -> list[Order]:
        """Open orders at the venue (category ``orders``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        params = [("order_status", "OPEN")]
        return await self._call(
            "orders", "GET", "/orders/historical/batch", parse_orders, params=params
        )

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for ``symbols`` in one call (category ``market``).

        A symbol the venue left out is missing from the answer; ask `get_ticker` for it.

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of symbols, not one string {symbols!r}")
        if not symbols:
            return {}  # an empty query would ask the venue for every product
        params = [("product_ids", s) for s in symbols]
        quotes = await self._call("market", "GET", "/best_bid_ask", parse_pricebooks, params=params)
        return {s: q for s, q in quotes.items() if s in symbols}

    async def get_ticker(self, symbol: str) -> Quote:
        """The quote for one symbol (category ``market``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        path = f"/products/{quote(symbol, safe='')}/ticker"
        return await self._call("market", "GET", path, lambda b: parse_ticker(b, symbol))

    async def get_product(self, symbol: str) -> Product:
        """The product's increments (category ``market``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        path = f"/products/{quote(symbol, safe='')}"
        return await self._call("market", "GET", path, lambda b: parse_product(b, symbol))

    async def get_server_time(self) -> datetime:
        """The venue's clock, timezone-aware (category ``market``): for clock-skew checks.

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        return await self._call("market", "GET", "/time", parse_server_time)

    async def place_order(self, request: OrderRequest) -> Order:
        """Place an order (category ``orders``), retrying transient failures when enabled.

        Every attempt sends the same ``client_order_id``, so a retry after a lost answer
        returns the order the first attempt placed instead of placing another.

        Raises:
            BrokerError: the last attempt failed, the venue rejected the order (a 4xx, never
                retried), or the breaker refused an attempt (`CircuitOpen`).
        """
        payload = order_body(request)
        attempts = self.max_submission_attempts if self.submission_retries else 1
        attempt = 1
        while True:
            try:
                return await self._call(
                    "orders", "POST", "/orders", parse_order_created, payload=payload
                )
            except CircuitOpen:
                raise
            except BrokerError as err:
                if attempt >= attempts or not _transient(err.status):
                    raise
            await anyio.sleep(self.retry_delay * attempt)
            attempt += 1

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel orders (category ``orders``); returns the ids the venue cancelled.

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        if isinstance(order_ids, str):
            raise TypeError(f"order_ids must be a sequence of ids, not one string {order_ids!r}")
        if not order_ids:
            return []
        payload = {"order_ids": list(order_ids)}
        return await self._call(
            "orders", "POST", "/orders/batch_cancel", parse_cancel_results, payload=payload
        )

    async def preview_order(self, request: OrderRequest) -> Preview:
        """What the order would do, without placing it (category ``orders``).

        Raises:
            BrokerError: the call failed or was refused (`CircuitOpen`).
        """
        return await self._call(
            "orders",
            "POST",
            "/orders/preview",
            lambda b: parse_preview(b, request),
            payload=order_body(request),
        )

    # ------------------------------------------------------------------ one call

    async def _call(
        self,
        category: str,
        method: str,
        path: str,
        parse: Callable[[object], _T],
        *,
        params: list[tuple[str, str]] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> _T:
        status, raw = await self._attempt(category, method, path, params, payload)
        try:
            body = decode_json(raw)
            if isinstance(body, dict) and body.get("success") is False:
                # A 2xx that says it failed: the venue refused the request in the body.
                raise BrokerError(category, status, describe_error(raw))
            return parse(body)
        except MalformedResponse as err:
            raise BrokerError(category, status, f"malformed response: {err}") from None

    async def _attempt(
        self,
        category: str,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        payload: dict[str, Any] | None,
    ) -> tuple[int, bytes]:
        """One HTTP attempt, observed; returns a 2xx status and body or raises BrokerError."""
        session, limiter = self._open()
        layer = self._runtime.layer
        async with limiter:
            if not layer.admit(category):
                raise CircuitOpen(category)
            probing = layer.breaker_state(category) is BreakerState.HALF_OPEN
            # Latency is the network's: the event loop's clock, not the layer's (which a test
            # may drive by hand).
            started = anyio.current_time()
            try:
                answer = await self._send(
                    session, method, self.base_url + _API + path, params, payload
                )
            except anyio.get_cancelled_exc_class():
                # Outside HALF_OPEN a call the caller abandoned says nothing about the API: it
                # is not reported.
                if probing:
                    self._abandon_probe(category, anyio.current_time() - started)
                raise
            latency = anyio.current_time() - started
        status = answer.status
        ok = status is not None and 200 <= status < 300
        # ApiCall cannot carry ok=False with a status below 400: a 1xx or 3xx answer (redirects
        # are not followed) is no usable response, reported like a failed connection.
        reported = status if status is not None and (ok or status >= 400) else None
        self._runtime.observe(ApiCall(category, ok, reported, latency))
        if answer.headers is not None and (usage := rate_limit_usage(answer.headers)) is not None:
            self._runtime.observe(RateLimitUsage(usage))
        if status is None:
            raise BrokerError(category, None, answer.failure)
        if not ok:
            raise BrokerError(category, status, describe_error(answer.raw))
        return status, answer.raw

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        params: list[tuple[str, str]] | None,
        payload: dict[str, Any] | None,
    ) -> _Answer:
        try:
            with anyio.move_on_after(self.timeout):
                async with session.request(
                    method, url, params=params, json=payload, allow_redirects=False
                ) as response:
                    raw = await response.read()
                    return _Answer(response.status, response.headers, raw)
        except (aiohttp.ClientError, OSError) as err:  # OSError includes TimeoutError
            return _Answer(None, failure=f"connection failed: {type(err).__name__}: {err}")
        return _Answer(None, failure=f"no answer within {self.timeout:g}s")

    def _abandon_probe(self, category: str, latency: float) -> None:
        # The caller cancelled a HALF_OPEN probe. The layer frees a probe slot only when the
        # probe's outcome is observed; a slot never freed would leave the breaker refusing every
        # call for good. Report it failed: the breaker re-opens and its own timer heals it.
        with contextlib.suppress(RuntimeError):  # the runtime already closed: nothing to heal
            self._runtime.observe(ApiCall(category, False, None, latency))

    def _open(self) -> tuple[aiohttp.ClientSession, anyio.CapacityLimiter]:
        if self._session is None or self._limiter is None:
            raise RuntimeError("HttpBroker is not open: use `async with HttpBroker(...)`")
        return self._session, self._limiter


def _transient(status: int | None) -> bool:
    """Whether a failed submission may succeed if sent again: the API's faults, not ours."""
    return api_fault(status)


# ---------------------------------------------------------------------- the wire format
#
# Pure functions: JSON in, values out. Each raises MalformedResponse naming the path of the
# first field that is missing or of the wrong shape (``accounts[1].available_balance.value``).


def decode_json(raw: bytes) -> object:
    """Decode a response body.

    Raises:
        MalformedResponse: not UTF-8 JSON.
    """
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedResponse(f"body is not JSON ({err}): {_show(raw)}") from None


def describe_error(raw: bytes) -> str:
    """A one-line account of an error body, whatever its shape.

    Reads ``{"error", "message"}`` and ``{"success": false, "error_response": {...}}``; any
    other body is quoted (shortened).
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        inner = body.get("error_response")
        details = inner if isinstance(inner, dict) else body
        parts = [str(details[k]) for k in ("error", "message") if details.get(k)]
        if parts:
            return ": ".join(parts)
    text = raw.decode("utf-8", errors="replace").strip()
    return _show(text) if text else "empty body"


def rate_limit_usage(headers: Mapping[str, str]) -> float | None:
    """The share of the rate limit in use, ``1 - remaining / limit``, clamped to 0..1.

    Returns:
        ``None`` unless both ``x-ratelimit-limit`` (> 0) and ``x-ratelimit-remaining`` (>= 0)
        are present and numeric: an advisory header that does not parse must not fail a call
        that succeeded.
    """
    limit_text = headers.get("x-ratelimit-limit")
    remaining_text = headers.get("x-ratelimit-remaining")
    if limit_text is None or remaining_text is None:
        return None
    try:
        limit, remaining = float(limit_text), float(remaining_text)
    except ValueError:
        return None
    if not (math.isfinite(limit) and math.isfinite(remaining) and limit > 0 and remaining >= 0):
        return None
    return min(1.0, max(0.0, 1.0 - remaining / limit))


def order_body(request: OrderRequest) -> dict[str, Any]:
    """The create (and preview) body of an order request."""
    size = str(request.quantity)
    if request.limit_price is None:
        config: dict[str, Any] = {"market_market_ioc": {"base_size": size}}
    else:
        terms = {"base_size": size, "limit_price": str(request.limit_price)}
        config = {"limit_limit_gtc": terms}
    return {
        "client_order_id": request.client_order_id,
        "product_id": request.symbol,
        "side": request.side.value,
        "order_configuration": config,
    }


def parse_balances(body: object) -> list[Balance]:
    """``{"accounts": [{"currency", "available_balance": {"value"}}]}`` → balances."""
    accounts = _list(_object(body, "body"), "accounts", "body")
    balances = []
    for i, item in enumerate(accounts):
        where = f"accounts[{i}]"
        account = _object(item, where)
        currency = _text(account, "currency", where)
        available = _object(
            _member(account, "available_balance", where), f"{where}.available_balance"
        )
        balances.append(
            Balance(currency, _number(available, "value", f"{where}.available_balance"))
        )
    return balances


def parse_positions(body: object) -> dict[str, Decimal]:
    """``{"positions": [{"product_id", "net_size"}]}`` → signed size per symbol."""
    positions: dict[str, Decimal] = {}
    for i, item in enumerate(_list(_object(body, "body"), "positions", "body")):
        where = f"positions[{i}]"
        position = _object(item, where)
        symbol = _text(position, "product_id", where)
        if symbol in positions:
            raise MalformedResponse(f"{where}: {symbol!r} is listed twice")
        positions[symbol] = _number(position, "net_size", where)
    return positions


def parse_orders(body: object) -> list[Order]:
    """``{"orders": [order, ...]}`` → orders (see `parse_order`)."""
    orders = _list(_object(body, "body"), "orders", "body")
    return [parse_order(item, f"orders[{i}]") for i, item in enumerate(orders)]


def parse_order(item: object, where: str = "order") -> Order:
    """One order object.

    Its ``order_configuration`` holds ``market_market_ioc`` or ``limit_limit_gtc`` terms; a
    ``filled_size`` of 0 means no fill (the venue then writes ``average_filled_price`` "0").
    """
    order = _object(item, where)
    side = _choice(order, "side", where, Side)
    status = _choice(order, "status", where, OrderStatus)
    config = _object(_member(order, "order_configuration", where), f"{where}.order_configuration")
    if len(config) != 1:
        raise MalformedResponse(
            f"{where}.order_configuration must hold one order type, got {sorted(config)}"
        )
    kind, terms_value = next(iter(config.items()))
    terms_where = f"{where}.order_configuration.{kind}"
    terms = _object(terms_value, terms_where)
    quantity = _number(terms, "base_size", terms_where, positive=True)
    if kind == "market_market_ioc":
        limit = None
    elif kind == "limit_limit_gtc":
        limit = _number(terms, "limit_price", terms_where, positive=True)
    else:
        raise MalformedResponse(f"{where}.order_configuration: unknown order type {kind!r}")
    filled = _number(order, "filled_size", where, at_least_zero=True)
    fill_price = None
    if filled > 0:
        fill_price = _number(order, "average_filled_price", where, positive=True)
    return Order(
        _text(order, "order_id", where),
        _text(order, "client_order_id", where),
        _text(order, "product_id", where),
        side,
        quantity,
        status,
        limit,
        fill_price,
    )


def parse_order_created(body: object) -> Order:
    """``{"success": true, "success_response": order}`` → the order placed."""
    answer = _object(body, "body")
    if _member(answer, "success", "body") is not True:
        raise MalformedResponse(f"body.success must be true, got {_show(answer['success'])}")
    return parse_order(_member(answer, "success_response", "body"), "success_response")


def parse_pricebooks(body: object) -> dict[str, Quote]:
    """``{"pricebooks": [{"product_id", "bids": [{"price"}], "asks": [...]}]}`` → quotes.

    A book with no bids or no asks gives no quote: the symbol is missing from the answer.
    """
    quotes: dict[str, Quote] = {}
    for i, item in enumerate(_list(_object(body, "body"), "pricebooks", "body")):
        where = f"pricebooks[{i}]"
        book = _object(item, where)
        symbol = _text(book, "product_id", where)
        bids, asks = _list(book, "bids", where), _list(book, "asks", where)
        if not bids or not asks:
            continue
        best = []
        for side, levels in (("bids", bids), ("asks", asks)):
            level = f"{where}.{side}[0]"
            best.append(_number(_object(levels[0], level), "price", level, positive=True))
        quotes[symbol] = Quote(symbol, best[0], best[1], _optional_time(book, "time", where))
    return quotes


def parse_ticker(body: object, symbol: str) -> Quote:
    """``{"best_bid", "best_ask", "trades"}`` → the quote of ``symbol``."""
    ticker = _object(body, "body")
    bid = _number(ticker, "best_bid", "body", positive=True)
    ask = _number(ticker, "best_ask", "body", positive=True)
    return Quote(symbol, bid, ask, _optional_time(ticker, "time", "body"))


def parse_product(body: object, symbol: str) -> Product:
    """``{"product_id", "base_increment", "quote_increment"}`` → the product ``symbol``."""
    product = _object(body, "body")
    answered = _text(product, "product_id", "body")
    if answered != symbol:
        raise MalformedResponse(f"body.product_id is {answered!r}, asked for {symbol!r}")
    return Product(
        symbol,
        _number(product, "base_increment", "body", positive=True),
        _number(product, "quote_increment", "body", positive=True),
    )


def parse_cancel_results(body: object) -> list[str]:
    """``{"results": [{"success", "order_id"}]}`` → the ids cancelled."""
    cancelled = []
    for i, item in enumerate(_list(_object(body, "body"), "results", "body")):
        where = f"results[{i}]"
        result = _object(item, where)
        success = _member(result, "success", where)
        if not isinstance(success, bool):
            raise MalformedResponse(f"{where}.success must be true or false, got {_show(success)}")
        order_id = _text(result, "order_id", where)
        if success:
            cancelled.append(order_id)
    return cancelled


def parse_preview(body: object, request: OrderRequest) -> Preview:
    """``{"order_total", "average_filled_price", "slippage"}`` → the preview of ``request``."""
    preview = _object(body, "body")
    _number(preview, "order_total", "body", at_least_zero=True)
    price = _number(preview, "average_filled_price", "body", positive=True)
    slippage = _number(preview, "slippage", "body", at_least_zero=True)
    return Preview(request.symbol, request.side, request.quantity, price, slippage)


def parse_server_time(body: object) -> datetime:
    """``{"iso", "epochSeconds"}`` → the venue's time, timezone-aware."""
    answer = _object(body, "body")
    _number(answer, "epochSeconds", "body", at_least_zero=True)
    return _time(_text(answer, "iso", "body"), "body.iso")


def _time(iso: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise MalformedResponse(f"{where} is not an ISO 8601 time: {iso!r}") from None
    if when.tzinfo is None:
        raise MalformedResponse(f"{where} has no timezone: {iso!r}")
    return when


def _optional_time(obj: dict[str, Any], key: str, where: str) -> datetime | None:
    """An optional ISO 8601 time: absent or null is None, anything else must parse."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}.{key} must be an ISO 8601 string, got {_show(value)}")
    return _time(value, f"{where}.{key}")


# ---------------------------------------------------------------------- strict readers


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"{where} must be an object, got {_show(value)}")
    return value


def _member(obj: dict[str, Any], key: str, where: str) -> object:
    if key not in obj:
        raise MalformedResponse(f"{where} has no {key!r}")
    return obj[key]


def _list(obj: dict[str, Any], key: str, where: str) -> list[object]:
    value = _member(obj, key, where)
    if not isinstance(value, list):
        raise MalformedResponse(f"{where}.{key} must be a list, got {_show(value)}")
    return value


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = _member(obj, key, where)
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"{where}.{key} must be a non-empty string, got {_show(value)}")
    return value


_E = TypeVar("_E", Side, OrderStatus)


def _choice(obj: dict[str, Any], key: str, where: str, kind: type[_E]) -> _E:
    value = _member(obj, key, where)
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    names = ", ".join(kind.__members__)
    raise MalformedResponse(f"{where}.{key} must be one of {names}, got {_show(value)}")


def _number(
    obj: dict[str, Any],
    key: str,
    where: str,
    *,
    positive: bool = False,
    at_least_zero: bool = False,
) -> Decimal:
    """A decimal written as a string (the API never sends prices or sizes as JSON numbers)."""
    value = _member(obj, key, where)
    try:
        number = Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise MalformedResponse(
            f"{where}.{key} must be a decimal number written as a string, got {_show(value)}"
        )
    if positive and not number > 0:
        raise MalformedResponse(f"{where}.{key} must be > 0, got {_show(value)}")
    if at_least_zero and not number >= 0:
        raise MalformedResponse(f"{where}.{key} must be >= 0, got {_show(value)}")
    return number
