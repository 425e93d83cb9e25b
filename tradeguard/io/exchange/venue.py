"""The embedded exchange's books: balances, positions and orders, filled against the market.

Pure and synchronous: the REST server and `DeterministicBroker` both trade against a `Venue`,
so the simulated exchange behaves the same over HTTP and in memory. Venue-level faults live
here (they reach both): failing balance or position reads, failing previews, failing product
lookups (the validation infrastructure), a slippage spike on fills, and bot-owned orders the
bot never placed (reconciliation drift). Transport faults (5xx storms, 429, latency,
timeouts) belong to the REST server.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import final

from tradeguard.fsm import Side
from tradeguard.io.broker import (
    BOT_PREFIX,
    Balance,
    BrokerError,
    Order,
    OrderRequest,
    OrderStatus,
    Preview,
    Product,
    Quote,
)
from tradeguard.io.exchange.market import Market

__all__ = ["BOT_PREFIX", "Venue", "VenueFaults"]

_HALF_SPREAD = Decimal("0.0005")
_PRICE_STEP = Decimal("0.01")
_QTY_STEP = Decimal("0.00000001")


@dataclass
class VenueFaults:
    """Switches a test or the demo flips to break the venue on purpose."""

    failing_reads: set[str] = field(default_factory=set)  # "balances" and/or "positions"
    failing_previews: bool = False
    failing_products: bool = False  # the validation infrastructure's product lookups
    slippage: Decimal = Decimal(0)  # extra slippage on every fill, as a fraction


@final
class Venue:
    """Accounts and orders of one trader at the embedded exchange.

    Args:
        market: the prices orders fill against.
        rng: seeds the order ids.
        cash: starting USD balance.
    """

    def __init__(
        self, market: Market, rng: random.Random, *, cash: Decimal = Decimal("1000000")
    ) -> None:
        self.market = market
        self.faults = VenueFaults()
        self.balances: dict[str, Decimal] = {"USD": cash}
        self.positions: dict[str, Decimal] = {}
        self.orders: dict[str, Order] = {}
        self._by_client_id: dict[str, str] = {}
        self._rng = rng
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------------ reads

    def list_balances(self) -> list[Balance]:
        """Funds per currency."""
        self._fail_read("balances")
        return [Balance(c, v) for c, v in sorted(self.balances.items())]

    def list_positions(self) -> dict[str, Decimal]:
        """Signed positions of every symbol held."""
        self._fail_read("positions")
        return {s: q for s, q in sorted(self.positions.items()) if q != 0}

    def _fail_read(self, kind: str) -> None:
        if kind in self.faults.failing_reads:
            raise BrokerError("accounts", 503, f"{kind} read failing (venue fault control)")

    def list_orders(self) -> list[Order]:
        """Every open order."""
        return [o for o in self.orders.values() if o.status is OrderStatus.OPEN]

    def quote(self, symbol: str) -> Quote:
        """Best bid and ask: the market price ± half the spread."""
        price = self._price(symbol)
        bid = (price * (1 - _HALF_SPREAD)).quantize(_PRICE_STEP)
        ask = (price * (1 + _HALF_SPREAD)).quantize(_PRICE_STEP)
        return Quote(symbol, bid, ask, self.market.updated[symbol])

    def quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for every known symbol asked for (unknown ones are left out)."""
        return {s: self.quote(s) for s in symbols if s in self.market.prices}

    def product(self, symbol: str) -> Product:
        """What validation needs about a product: its size and price increments."""
        if self.faults.failing_products:
            raise BrokerError("market", 500, "product lookup failing (venue fault control)")
        self._price(symbol)
        return Product(symbol, _QTY_STEP, _PRICE_STEP)

    def _price(self, symbol: str) -> Decimal:
        price = self.market.prices.get(symbol)
        if price is None:
            raise BrokerError("market", 404, f"unknown product {symbol!r}")
        return price

    # ------------------------------------------------------------------ orders

    def fill_price(self, symbol: str, side: Side) -> Decimal:
        """Where a market order would fill now, slippage spike included."""
        quote = self.quote(symbol)
        touch = quote.ask if side is Side.BUY else quote.bid
        worse = 1 + self.faults.slippage if side is Side.BUY else 1 - self.faults.slippage
        return (touch * worse).quantize(_PRICE_STEP)

    def preview(self, request: OrderRequest) -> Preview:
        """What the order would do, without placing it."""
        if self.faults.failing_previews:
            raise BrokerError("orders", 500, "preview failing (venue fault control)")
        self._check(request)
        price = self.fill_price(request.symbol, request.side)
        mid = self.quote(request.symbol).mid
        slippage = abs(price - mid) / mid
        return Preview(request.symbol, request.side, request.quantity, price, slippage)

    def place(self, request: OrderRequest) -> Order:
        """Place an order; a market order fills at once. Idempotent by client order id."""
        self._check(request)
        known = self._by_client_id.get(request.client_order_id)
        if known is not None:
            return self.orders[known]
        order_id = f"ord-{next(self._numbers):06d}-{self._rng.randrange(16**6):06x}"
        self._by_client_id[request.client_order_id] = order_id
        limit = request.limit_price
        marketable = limit is None or self._crosses(request.symbol, request.side, limit)
        if marketable:
            price = self.fill_price(request.symbol, request.side)
            self._settle(request.symbol, request.side, request.quantity, price)
            status, fill = OrderStatus.FILLED, price
        else:
            status, fill = OrderStatus.OPEN, None
        order = Order(
            order_id,
            request.client_order_id,
            request.symbol,
            request.side,
            request.quantity,
            status,
            request.limit_price,
            fill,
        )
        self.orders[order_id] = order
        return order

    def cancel(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel open orders; returns the ids that were open."""
        cancelled = []
        for order_id in order_ids:
            order = self.orders.get(order_id)
            if order is not None and order.status is OrderStatus.OPEN:
                self.orders[order_id] = replace(order, status=OrderStatus.CANCELLED)
                cancelled.append(order_id)
        return cancelled

    def inject_unknown_orders(self, symbol: str, count: int = 1) -> list[str]:
        """Drift: open bot-owned limit orders the bot never placed (far from the market)."""
        ids = []
        for _ in range(count):
            client_id = f"{BOT_PREFIX}ghost-{self._rng.randrange(16**8):08x}"
            far = (self._price(symbol) / 2).quantize(_PRICE_STEP)
            order = self.place(OrderRequest(symbol, Side.BUY, Decimal("0.001"), client_id, far))
            ids.append(order.order_id)
        return ids

    def _crosses(self, symbol: str, side: Side, limit: Decimal) -> bool:
        quote = self.quote(symbol)
        return limit >= quote.ask if side is Side.BUY else limit <= quote.bid

    def _check(self, request: OrderRequest) -> None:
        self._price(request.symbol)
        if not request.quantity > 0:
            raise BrokerError("orders", 400, f"quantity must be > 0, got {request.quantity}")
        if not request.client_order_id:
            raise BrokerError("orders", 400, "client_order_id is required")

    def _settle(self, symbol: str, side: Side, quantity: Decimal, price: Decimal) -> None:
        signed = quantity if side is Side.BUY else -quantity
        self.positions[symbol] = self.positions.get(symbol, Decimal(0)) + signed
        self.balances["USD"] = self.balances.get("USD", Decimal(0)) - signed * price
