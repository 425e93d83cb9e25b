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

_ZERO = Decimal(0)


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

    def reducible(self, position: Decimal | None) -> Decimal:
        """The largest quantity of this side that reduces ``position`` (signed, long > 0).

        Returns:
            ``|position|`` when this side is opposite to the position; ``0`` when it is the
            same side, the position is flat, or it is unknown (``None``).
        """
        if position is None:
            return _ZERO
        reducible = position if self.side is Side.SELL else -position
        return reducible if reducible > _ZERO else _ZERO

    def reduces(self, position: Decimal | None) -> bool:
        """The one rule for "does this order reduce the position" (DESIGN §2.4): the opposite
        side and ``quantity <= |position|``. A bigger order would flip the position; an
        unknown position (``None``) never counts as reduced (fail closed)."""
        return self.quantity <= self.reducible(position)


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
