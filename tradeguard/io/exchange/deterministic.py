"""`DeterministicBroker`: the `Broker` protocol in memory, on the embedded exchange's books.

No sockets and no sleeping: every method answers from a `Venue` at once, so a test or the demo
trades against exactly the books the REST server would serve. Orders fill against a seeded
`Market`, and fills move positions and the USD balance (the original's mock broker did
neither, so a reduce-only path could never be exercised against it). Faults are the venue's
own switches (``broker.venue.faults``): a faulted call raises the venue's `BrokerError`
unchanged, so its category and status reach the caller exactly as the venue chose them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import final

from tradeguard.io.broker import Balance, Order, OrderRequest, Preview, Product, Quote
from tradeguard.io.exchange.market import Market
from tradeguard.io.exchange.venue import Venue

__all__ = ["DeterministicBroker"]


@final
class DeterministicBroker:
    """An in-memory broker over a `Venue`: seeded prices, real fills, the venue's faults.

    Move prices with ``broker.market.step()``; break the venue with ``broker.venue.faults``
    (failing reads, previews, product lookups, a slippage spike) and
    ``broker.venue.inject_unknown_orders`` (reconciliation drift).

    Args:
        symbols: the market's symbols; each starts at the market's opening price.
        seed: seeds the market's price walk and the venue's order ids: the same seed and the
            same calls give the same prices, ids and fills.
        cash: the starting USD balance.
        venue: trade on this venue instead of building one (``symbols``, ``seed`` and
            ``cash`` are then unused): two brokers, or a broker and the REST server, can
            share one set of books.

    Raises:
        ValueError: no symbols.
    """

    def __init__(
        self,
        symbols: Iterable[str] = ("BTC-USD", "ETH-USD"),
        *,
        seed: int = 0,
        cash: Decimal = Decimal("1000000"),
        venue: Venue | None = None,
    ) -> None:
        if venue is None:
            # One seed, two independent streams: moving the market never shifts order ids.
            root = random.Random(seed)
            market = Market(symbols, random.Random(root.getrandbits(64)))
            venue = Venue(market, random.Random(root.getrandbits(64)), cash=cash)
        self.venue = venue
        self.market = venue.market

    async def list_balances(self) -> list[Balance]:
        """Funds per currency.

        Raises:
            BrokerError: the venue's balance reads are failing.
        """
        return self.venue.list_balances()

    async def list_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol held (long > 0); flat symbols are absent.

        Raises:
            BrokerError: the venue's position reads are failing.
        """
        return self.venue.list_positions()

    async def list_orders(self) -> list[Order]:
        """Every open order at the venue, the bot's (``BOT_PREFIX``) and others'."""
        return self.venue.list_orders()

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for every known symbol asked for; unknown symbols are left out."""
        return self.venue.quotes(symbols)

    async def get_ticker(self, symbol: str) -> Quote:
        """The quote for one symbol.

        Raises:
            BrokerError: an unknown symbol (404).
        """
        return self.venue.quote(symbol)

    async def get_product(self, symbol: str) -> Product:
        """The product's size and price increments.

        Raises:
            BrokerError: product lookups are failing (500), or an unknown symbol (404).
        """
        return self.venue.product(symbol)

    async def place_order(self, request: OrderRequest) -> Order:
        """Place an order: a market order (or a crossing limit) fills at once and settles.

        The same ``client_order_id`` twice places one order and returns it both times.

        Raises:
            BrokerError: an unknown symbol, or a malformed request (400).
        """
        return self.venue.place(request)

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel orders; returns the ids that were open and are now cancelled."""
        return self.venue.cancel(order_ids)

    async def preview_order(self, request: OrderRequest) -> Preview:
        """The fill the order would get now and its slippage against the mid.

        Raises:
            BrokerError: previews are failing (500), an unknown symbol, or a bad request.
        """
        return self.venue.preview(request)
