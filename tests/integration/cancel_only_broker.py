"""`CancelOnlyBroker`: a broker that only takes cancels, and says when one reached it.

Shared by tests/integration/test_load.py and bench/bench_load.py: the load scenarios measure
or order the moment a trip's `CancelOpenOrders` reaches the broker (its first call,
`list_orders`); every other broker call is a bug in the scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from tradeguard.io.broker import Balance, Broker, Order, OrderRequest, Preview, Product, Quote


class CancelOnlyBroker(Broker):
    """Calls ``on_cancel()`` when a cancel reaches it; every other read or order raises."""

    def __init__(self, on_cancel: Callable[[], None]) -> None:
        self._on_cancel = on_cancel

    async def list_orders(self) -> list[Order]:
        self._on_cancel()
        return []

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        return list(order_ids)

    async def list_balances(self) -> list[Balance]:
        raise NotImplementedError

    async def list_positions(self) -> dict[str, Decimal]:
        raise NotImplementedError

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        raise NotImplementedError

    async def get_ticker(self, symbol: str) -> Quote:
        raise NotImplementedError

    async def get_product(self, symbol: str) -> Product:
        raise NotImplementedError

    async def place_order(self, request: OrderRequest) -> Order:
        raise NotImplementedError

    async def preview_order(self, request: OrderRequest) -> Preview:
        raise NotImplementedError
