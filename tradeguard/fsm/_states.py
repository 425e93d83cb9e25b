"""The states of every machine kind, and the trading modes they produce (DESIGN §2)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["BreakerState", "FeedState", "GuardState", "HaltState", "TradingMode"]


class GuardState(StrEnum):
    """A guard's state (DESIGN §2.1).

    The preview guard uses HEALTHY and TRIPPED only. NO_MARK is mark_staleness's alone: a
    symbol whose first mark has not arrived, restricted exactly like a stale mark. UNSYNCED is
    the fleet guard's alone (DESIGN §7): a member that has not yet read its peers'
    restrictions, restricted like a trip.
    """

    HEALTHY = "HEALTHY"
    TRIPPED = "TRIPPED"
    COOLDOWN = "COOLDOWN"
    NO_MARK = "NO_MARK"
    UNSYNCED = "UNSYNCED"


class BreakerState(StrEnum):
    """A circuit breaker's state (DESIGN §2.3)."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class FeedState(StrEnum):
    """A websocket feed's state (DESIGN §2.2)."""

    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    BACKOFF = "BACKOFF"
    DEGRADED = "DEGRADED"
    CLOSED = "CLOSED"


class TradingMode(IntEnum):
    """What a scope may trade. Ordered: ``max()`` of modes is the most restrictive."""

    ALLOW = 0
    REDUCE_ONLY = 1
    PAUSED = 2


class HaltState(StrEnum):
    """An operator halt on a scope: none (RUNNING), PAUSED (HALTED) or REDUCE_ONLY (REDUCED)."""

    RUNNING = "RUNNING"
    HALTED = "HALTED"
    REDUCED = "REDUCED"
