"""The broker interface the shell trades through, and the values it speaks in.

Method names follow the seed's engine (``list_balances``, ``list_positions``,
``get_best_bid_ask``, ``get_ticker``), so a chaos plan written against the original names the
same methods. Every method is ``async``. A broker raises `BrokerError` (or `OSError`,
`TimeoutError`) when the venue fails; the caller turns that into an observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, final, runtime_checkable

from tradeguard.errors import BrokerError, CircuitOpen
from tradeguard.fsm import Side

__all__ = [
    "BOT_PREFIX",
    "Balance",
    "Broker",
    "BrokerError",
    "CircuitOpen",
    "Order",
    "OrderRequest",
    "OrderStatus",
    "Preview",
    "Product",
    "Quote",
]


# The client order ids of the orders the bot owns start with this: cancels on a trip touch only
# these, and reconciliation audits only these.
BOT_PREFIX = "bot-"


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    OPEN = "OPEN"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"


@final
@dataclass(frozen=True, slots=True)
class Balance:
    """Funds in one currency."""

    currency: str
    available: Decimal


@final
@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and ask for a symbol."""

    symbol: str
    bid: Decimal
    ask: Decimal
    # When the venue last updated the price; None when the venue does not say. A quote whose
    # time has not moved is not a fresh mark: a frozen price must go stale.
    time: datetime | None = None

    @property
    def mid(self) -> Decimal:
        """The mid price."""
        return (self.bid + self.ask) / 2


@final
@dataclass(frozen=True, slots=True)
class Product:
    """What validation needs about a product: its size and price increments."""

    symbol: str
    base_increment: Decimal
    quote_increment: Decimal


@final
@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order to place. ``client_order_id`` makes a retried submission idempotent."""

    symbol: str
    side: Side
    quantity: Decimal
    client_order_id: str
    limit_price: Decimal | None = None  # None: a market order


@final
@dataclass(frozen=True, slots=True)
class Order:
    """An order as the venue knows it."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    status: OrderStatus
    limit_price: Decimal | None = None
    fill_price: Decimal | None = None
    # The venue's own name for the order type ("limit", "stop_limit", "twap"...), when the
    # broker knows it; None for the types this module models (market, limit GTC) when the
    # broker does not say. An order of a type we do not model keeps its ids, so a
    # reconciliation audit can still match (and cancel) it.
    order_type: str | None = None


@final
@dataclass(frozen=True, slots=True)
class Preview:
    """What an order would do: its expected fill and slippage against the mid (a fraction)."""

    symbol: str
    side: Side
    quantity: Decimal
    expected_price: Decimal
    slippage: Decimal


@runtime_checkable
class Broker(Protocol):
    """What the runtime and the reference loop need from a venue."""

    async def list_balances(self) -> list[Balance]:
        """Funds per currency."""
        ...

    async def list_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol (long > 0); symbols with none may be absent."""
        ...

    async def list_orders(self) -> list[Order]:
        """The bot's open orders at the venue."""
        ...

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for many symbols in one call; a symbol may be missing from the answer."""
        ...

    async def get_ticker(self, symbol: str) -> Quote:
        """The quote for one symbol."""
        ...

    async def get_product(self, symbol: str) -> Product:
        """The product's increments; the validation infrastructure's lookup."""
        ...

    async def place_order(self, request: OrderRequest) -> Order:
        """Place an order; the same ``client_order_id`` twice places it once."""
        ...

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel orders; returns the ids that were open and are now cancelled."""
        ...

    async def preview_order(self, request: OrderRequest) -> Preview:
        """What the order would do, without placing it."""
        ...
