"""The embedded exchange's books: balances, positions and orders, filled against the market.

Pure and synchronous: the REST server and `DeterministicBroker` both trade against a `Venue`,
so the simulated exchange behaves the same over HTTP and in memory. Venue-level faults live
here (they reach both): failing balance or position reads, failing previews, failing product
lookups (the validation infrastructure), a slippage spike on fills, and bot-owned orders the
bot never placed (reconciliation drift), open orders of types tradeguard's `Order` does not
model (stop-limit, bracket: `ForeignOrder`). Transport faults (5xx storms, 429, latency,
timeouts) belong to the REST server.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, final

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

__all__ = ["BOT_PREFIX", "Fill", "ForeignOrder", "Venue", "VenueFaults"]

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
@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: every order that fills here fills whole, in one fill."""

    entry_id: str
    trade_id: str
    order_id: str
    symbol: str
    side: Side
    price: Decimal
    size: Decimal
    time: datetime


@final
@dataclass(frozen=True, slots=True)
class ForeignOrder:
    """An order of a type `Order` does not model (a stop-limit, a bracket), as placed.

    It rests untriggered until cancelled: the simulator never triggers stops.
    ``configuration`` is the venue's ``order_configuration`` object, one key, verbatim.
    """

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    configuration: Mapping[str, Any]
    created: datetime
    status: OrderStatus = OrderStatus.OPEN


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
        # What `Order` leaves out, per order id: the wire order_configuration, creation
        # time, a GTD order's end, and which cancelled orders in fact expired.
        self.configurations: dict[str, Mapping[str, Any]] = {}
        self.created: dict[str, datetime] = {}
        self.expiry: dict[str, datetime] = {}
        self.expired: set[str] = set()
        self.fills: list[Fill] = []
        self.foreign: dict[str, ForeignOrder] = {}
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
        """Every open order `Order` models (foreign ones are in `foreign`)."""
        self.expire_due()
        return [o for o in self.orders.values() if o.status is OrderStatus.OPEN]

    def quote(self, symbol: str) -> Quote:
        """Best bid and ask: the market price ± half the spread."""
        self._price(symbol)
        bid, ask = self.market.bid_ask(symbol)
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

    def quantity_for(self, symbol: str, side: Side, quote_size: Decimal) -> Decimal:
        """The base quantity ``quote_size`` of quote currency buys (or sells) at market now."""
        price = self.fill_price(symbol, side)
        return (quote_size / price).quantize(_QTY_STEP, rounding=ROUND_DOWN)

    def place(
        self,
        request: OrderRequest,
        *,
        configuration: Mapping[str, Any] | None = None,
        immediate: bool = False,
        expires: datetime | None = None,
    ) -> Order:
        """Place an order; a marketable one fills at once. Idempotent by client order id.

        Args:
            request: what to trade; ``limit_price`` None is a market order.
            configuration: the wire ``order_configuration`` to report for it (default: the
                one `request` implies, market IOC or limit GTC).
            immediate: a limit order that does not cross at once is cancelled (IOC/FOK).
            expires: a resting limit order expires then (GTD).

        Raises:
            BrokerError: an unknown product (404) or a bad quantity or client id (400).
        """
        self._check(request)
        known = self._by_client_id.get(request.client_order_id)
        if known is not None and known in self.orders:
            return self.orders[known]
        if known is not None:
            raise BrokerError(
                "orders", 409, f"client_order_id {request.client_order_id!r} already used"
            )
        order_id = self._new_id()
        self._by_client_id[request.client_order_id] = order_id
        self.created[order_id] = datetime.now(UTC)
        if configuration is not None:
            self.configurations[order_id] = configuration
        limit = request.limit_price
        marketable = limit is None or self._crosses(request.symbol, request.side, limit)
        if marketable:
            price = self.fill_price(request.symbol, request.side)
            self._settle(request.symbol, request.side, request.quantity, price)
            status, fill = OrderStatus.FILLED, price
            number = len(self.fills) + 1
            # No rng draw here: order ids must not shift because an order filled.
            self.fills.append(
                Fill(
                    f"fill-{number:06d}",
                    str(uuid.UUID(int=number, version=4)),
                    order_id,
                    request.symbol,
                    request.side,
                    price,
                    request.quantity,
                    self.created[order_id],
                )
            )
        elif immediate:
            status, fill = OrderStatus.CANCELLED, None
        else:
            status, fill = OrderStatus.OPEN, None
            if expires is not None:
                self.expiry[order_id] = expires
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

    def place_foreign(
        self, symbol: str, side: Side, client_order_id: str, configuration: Mapping[str, Any]
    ) -> ForeignOrder:
        """Rest an order of a type `Order` does not model; idempotent by client order id.

        Raises:
            BrokerError: an unknown product (404), a missing client id or a configuration
                that is not one order type (400).
        """
        self._price(symbol)
        if not client_order_id:
            raise BrokerError("orders", 400, "client_order_id is required")
        if len(configuration) != 1:
            raise BrokerError(
                "orders", 400, f"order_configuration must hold one type, got {configuration!r}"
            )
        known = self._by_client_id.get(client_order_id)
        if known is not None and known in self.foreign:
            return self.foreign[known]
        if known is not None:
            raise BrokerError("orders", 409, f"client_order_id {client_order_id!r} already used")
        order_id = self._new_id()
        self._by_client_id[client_order_id] = order_id
        order = ForeignOrder(
            order_id, client_order_id, symbol, side, dict(configuration), datetime.now(UTC)
        )
        self.foreign[order_id] = order
        return order

    def inject_foreign_order(
        self, symbol: str, kind: str = "stop_limit_stop_limit_gtc"
    ) -> ForeignOrder:
        """Open a stop-limit (or bracket) sell far below the market, as a human would place."""
        price = self._price(symbol)
        stop = (price / 2).quantize(_PRICE_STEP)
        terms: dict[str, Any] = {"base_size": "0.001", "limit_price": str(stop)}
        if kind.startswith("stop_limit"):
            terms |= {"stop_price": str(stop), "stop_direction": "STOP_DIRECTION_STOP_DOWN"}
        elif kind.startswith("trigger_bracket"):
            terms |= {"limit_price": str(price * 2), "stop_trigger_price": str(stop)}
        else:
            raise ValueError(
                f"inject_foreign_order kind must be a stop_limit_* or trigger_bracket_* "
                f"configuration, got {kind!r}"
            )
        client_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        return self.place_foreign(symbol, Side.SELL, client_id, {kind: terms})

    def cancel(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel open orders (foreign ones too); returns the ids that were open."""
        self.expire_due()
        cancelled = []
        for order_id in order_ids:
            order = self.orders.get(order_id)
            foreign = self.foreign.get(order_id)
            if order is not None and order.status is OrderStatus.OPEN:
                self.orders[order_id] = replace(order, status=OrderStatus.CANCELLED)
                cancelled.append(order_id)
            elif foreign is not None and foreign.status is OrderStatus.OPEN:
                self.foreign[order_id] = replace(foreign, status=OrderStatus.CANCELLED)
                cancelled.append(order_id)
        return cancelled

    def expire_due(self, now: datetime | None = None) -> list[str]:
        """Cancel every GTD order whose end time has passed; returns their ids."""
        now = now or datetime.now(UTC)
        due = [i for i, end in self.expiry.items() if end <= now]
        for order_id in due:
            del self.expiry[order_id]
            order = self.orders[order_id]
            if order.status is OrderStatus.OPEN:
                self.orders[order_id] = replace(order, status=OrderStatus.CANCELLED)
                self.expired.add(order_id)
        return due

    def _new_id(self) -> str:
        return f"ord-{next(self._numbers):06d}-{self._rng.randrange(16**6):06x}"

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
