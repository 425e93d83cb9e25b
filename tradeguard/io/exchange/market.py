"""The embedded exchange's market: prices that wander, seeded, shared by its servers."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import final

__all__ = ["Market"]

_START = Decimal("100")
_STEP = Decimal("0.001")  # at most 0.1% per step
_HALF_SPREAD = Decimal("0.0005")
_PRICE_STEP = Decimal("0.01")
# Each step trades this much of the base currency: a made-up but steady 24-hour volume.
_VOLUME_PER_STEP = Decimal("1.5")


@final
class Market:
    """Prices for a set of symbols, moved one seeded random step at a time.

    A frozen symbol keeps its price and its update time, and gets no ticker (its marks go
    stale). The update times are wall-clock: they are what the venue reports as a quote's time.
    """

    def __init__(self, symbols: Iterable[str], rng: random.Random) -> None:
        self.prices: dict[str, Decimal] = {s: _START for s in symbols}
        if not self.prices:
            raise ValueError("a market needs at least one symbol")
        self.frozen: set[str] = set()
        started = datetime.now(UTC)
        self.updated: dict[str, datetime] = dict.fromkeys(self.prices, started)
        # Since start stands in for "the last 24 hours" (the tickers' *_24_h fields).
        self.opening: dict[str, Decimal] = dict(self.prices)
        self.low: dict[str, Decimal] = dict(self.prices)
        self.high: dict[str, Decimal] = dict(self.prices)
        self.volume: dict[str, Decimal] = dict.fromkeys(self.prices, Decimal(0))
        self._rng = rng

    def step(self) -> dict[str, Decimal]:
        """Move every unfrozen price one step; return the prices that moved."""
        moved = {}
        now = datetime.now(UTC)
        for symbol, price in self.prices.items():
            if symbol in self.frozen:
                continue
            change = _STEP * Decimal(self._rng.uniform(-1, 1)).quantize(Decimal("0.0001"))
            moved[symbol] = self.prices[symbol] = (price * (1 + change)).quantize(Decimal("0.01"))
            self.updated[symbol] = now
            self.low[symbol] = min(self.low[symbol], moved[symbol])
            self.high[symbol] = max(self.high[symbol], moved[symbol])
            self.volume[symbol] += _VOLUME_PER_STEP
        return moved

    def bid_ask(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Best bid and ask: the price ± half the spread (KeyError for an unknown symbol)."""
        price = self.prices[symbol]
        bid = (price * (1 - _HALF_SPREAD)).quantize(_PRICE_STEP)
        ask = (price * (1 + _HALF_SPREAD)).quantize(_PRICE_STEP)
        return bid, ask

    def change_percent(self, symbol: str) -> Decimal:
        """The price change since start, in percent."""
        opening = self.opening[symbol]
        return ((self.prices[symbol] - opening) / opening * 100).quantize(Decimal("0.0001"))

    def freeze(self, symbol: str, frozen: bool = True) -> None:
        """Stop (or restart) ``symbol``'s price updates."""
        if symbol not in self.prices:
            raise KeyError(f"unknown symbol {symbol!r}; the market has {sorted(self.prices)}")
        (self.frozen.add if frozen else self.frozen.discard)(symbol)
