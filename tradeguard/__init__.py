"""tradeguard: the reliability layer of an automated trading engine.

Only pure names are exported here, so ``import tradeguard`` loads no I/O; the asyncio shell
lives in `tradeguard.io`. ``from tradeguard import DeterministicBroker`` also works (the seed's
chaos examples import it from the package): it is loaded on first use, with the shell.
"""

from typing import Any

from tradeguard.config import Settings
from tradeguard.errors import (
    BrokerError,
    CircuitOpen,
    ConfigError,
    EngineAlreadyRunning,
    EngineNotRunning,
    InvalidObservation,
    InvalidRecord,
    InvalidSettings,
    InvalidSnapshot,
    InvalidTransition,
    MalformedFeedMessage,
    RuntimeClosed,
    RuntimeNotRunning,
    StoreError,
    StoreNotOpen,
    TradeguardError,
    UnknownFeed,
    UnknownGuard,
)
from tradeguard.fsm import (
    BreakerState,
    Decision,
    FeedState,
    GuardState,
    GuardStatus,
    OrderIntent,
    ReliabilityLayer,
    Side,
    TradingMode,
)
from tradeguard.fsm.effects import Reason


def __getattr__(name: str) -> Any:
    # importlib.metadata pulls in email and socket, and DeterministicBroker the asyncio shell:
    # both load only when asked for, so `import tradeguard` stays free of I/O modules.
    if name == "DeterministicBroker":
        from tradeguard.testing import DeterministicBroker

        return DeterministicBroker
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tradeguard")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0+unknown"
    raise AttributeError(f"module 'tradeguard' has no attribute {name!r}")


__all__ = [
    "BreakerState",
    "BrokerError",
    "CircuitOpen",
    "ConfigError",
    "Decision",
    "EngineAlreadyRunning",
    "EngineNotRunning",
    "FeedState",
    "GuardState",
    "GuardStatus",
    "InvalidObservation",
    "InvalidRecord",
    "InvalidSettings",
    "InvalidSnapshot",
    "InvalidTransition",
    "MalformedFeedMessage",
    "OrderIntent",
    "Reason",
    "ReliabilityLayer",
    "RuntimeClosed",
    "RuntimeNotRunning",
    "Settings",
    "Side",
    "StoreError",
    "StoreNotOpen",
    "TradeguardError",
    "TradingMode",
    "UnknownFeed",
    "UnknownGuard",
    "__version__",
]
