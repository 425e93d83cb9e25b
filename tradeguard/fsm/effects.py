"""Effects: what the core asks of the shell, returned in execution order (DESIGN §3).

Commands (``CancelOpenOrders``, ``Alert``, ``Reconnect``) are work for the shell; records in
the past tense (``Transitioned``, ``ModeChanged``) are to publish. The core never performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, final

from tradeguard.fsm._states import TradingMode

__all__ = [
    "Alert",
    "CancelOpenOrders",
    "CancelOrders",
    "CloseConnection",
    "DisablePreview",
    "Effect",
    "MaxAttemptsExceeded",
    "ModeChanged",
    "Reason",
    "Reconnect",
    "Transitioned",
]

Severity = Literal["info", "warning", "critical"]


@final
@dataclass(frozen=True, slots=True)
class Reason:
    """Why a scope is restricted: machine-readable, one per restriction in force.

    Attributes:
        guard: the guard's name, or ``"operator"`` for a halt; every one can be asked about
            with ``layer.guard(guard, scope)``. A symbol whose first mark has not arrived is
            restricted by ``"mark_staleness"`` in state ``"NO_MARK"``.
        scope: the symbol, or ``None`` for global.
        state: the state that restricts (``GuardState.TRIPPED``, ``GuardState.NO_MARK``, or
            the halt's ``"HALTED"`` / ``"REDUCED"``).
        seconds_until_lift: seconds until it may lift; ``None`` while the fault is present.
    """

    guard: str
    scope: str | None
    state: str
    seconds_until_lift: float | None


@final
@dataclass(frozen=True, slots=True)
class Transitioned:
    """A machine changed state (or an operator reset it). ``at`` is monotonic seconds."""

    machine: str
    scope: str | None
    source: str
    dest: str
    trigger: str
    at: float


@final
@dataclass(frozen=True, slots=True)
class ModeChanged:
    """A scope's own trading mode changed; ``reasons`` are the restrictions now in force."""

    scope: str | None
    source: TradingMode
    dest: TradingMode
    reasons: tuple[Reason, ...]


@final
@dataclass(frozen=True, slots=True)
class CancelOpenOrders:
    """Cancel every open order the bot owns."""

    reason: str


@final
@dataclass(frozen=True, slots=True)
class CancelOrders:
    """Cancel these orders (bot-owned orders unknown locally)."""

    order_ids: tuple[str, ...]
    reason: str


@final
@dataclass(frozen=True, slots=True)
class Alert:
    """Tell the operator."""

    severity: Severity
    title: str
    detail: str


@final
@dataclass(frozen=True, slots=True)
class DisablePreview:
    """Stop previewing orders for the rest of the session (until an operator reset)."""

    reason: str


@final
@dataclass(frozen=True, slots=True)
class MaxAttemptsExceeded:
    """``feed`` exceeded its reconnect attempts: call ``on_max_attempts_exceeded``."""

    feed: str
    pause_seconds: float


@final
@dataclass(frozen=True, slots=True)
class Reconnect:
    """Open a new connection for ``feed`` now, then report its outcome."""

    feed: str
    attempt: int


@final
@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close ``feed``'s connection (the core declared it dead); do not report the close."""

    feed: str
    reason: str


Effect = (
    Transitioned
    | ModeChanged
    | CancelOpenOrders
    | CancelOrders
    | Alert
    | DisablePreview
    | MaxAttemptsExceeded
    | Reconnect
    | CloseConnection
)
