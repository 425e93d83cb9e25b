"""The pure core: every machine of tradeguard, with no I/O, no wall clock and no globals.

Imports only the standard library, `transitions` and `tradeguard.config`; `tradeguard.io`
drives it through `ReliabilityLayer`'s public methods.
"""

from tradeguard.fsm import effects, events
from tradeguard.fsm._backoff import BackoffPolicy
from tradeguard.fsm._definition import MachineDefinition, Spec
from tradeguard.fsm._faults import api_fault
from tradeguard.fsm._layer import (
    GLOBAL_GUARDS,
    SYMBOL_GUARDS,
    GuardStatus,
    ReliabilityLayer,
    SnapshotChanges,
)
from tradeguard.fsm._machines import DEFINITIONS
from tradeguard.fsm._orders import Decision, OrderIntent, Side
from tradeguard.fsm._states import BreakerState, FeedState, GuardState, HaltState, TradingMode

__all__ = [
    "DEFINITIONS",
    "GLOBAL_GUARDS",
    "SYMBOL_GUARDS",
    "BackoffPolicy",
    "BreakerState",
    "Decision",
    "FeedState",
    "GuardState",
    "GuardStatus",
    "HaltState",
    "MachineDefinition",
    "OrderIntent",
    "ReliabilityLayer",
    "Side",
    "SnapshotChanges",
    "Spec",
    "TradingMode",
    "api_fault",
    "effects",
    "events",
]
