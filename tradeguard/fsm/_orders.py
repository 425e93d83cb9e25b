"""Order intents and the layer's decisions on them (DESIGN §2.4)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import final

from tradeguard.errors import InvalidObservation
from tradeguard.fsm._states import TradingMode
from tradeguard.fsm.effects import Reason

__all__ = ["Decision", "OrderIntent", "Side"]


class Side(StrEnum):
    """Which way an order trades."""

    BUY = "BUY"
    SELL = "SELL"


@final
@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order the engine wants to place, asked about before it goes out.

    Raises:
        InvalidObservation: an empty symbol, a side that is not a `Side`, or a quantity that
            is not a finite `Decimal` > 0.
    """

    symbol: str
    side: Side
    quantity: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise InvalidObservation(f"OrderIntent.symbol must be non-empty, got {self.symbol!r}")
        if not isinstance(self.side, Side):
            raise InvalidObservation(f"OrderIntent.side must be a Side, got {self.side!r}")
        quantity = self.quantity
        if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= 0:
            raise InvalidObservation(
                f"OrderIntent.quantity must be a finite Decimal > 0, got {quantity!r}"
            )


@final
@dataclass(frozen=True, slots=True)
class Decision:
    """The layer's answer on one order.

    Attributes:
        allowed: whether the order may go out.
        mode: the symbol's effective mode when decided.
        reasons: every restriction in force on the symbol (empty in ALLOW).
        max_quantity: the largest quantity allowed now (``None`` = no limit from the layer).
    """

    allowed: bool
    mode: TradingMode
    reasons: tuple[Reason, ...] = ()
    max_quantity: Decimal | None = None
