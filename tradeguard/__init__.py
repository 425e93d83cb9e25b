"""tradeguard: the reliability layer of an automated trading engine.

Only pure names are exported here, so ``import tradeguard`` loads no I/O; the asyncio shell
lives in `tradeguard.io`.
"""

from importlib.metadata import PackageNotFoundError, version

from tradeguard.config import Settings
from tradeguard.errors import (
    ConfigError,
    InvalidObservation,
    InvalidTransition,
    TradeguardError,
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

try:
    __version__ = version("tradeguard")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "BreakerState",
    "ConfigError",
    "Decision",
    "FeedState",
    "GuardState",
    "GuardStatus",
    "InvalidObservation",
    "InvalidTransition",
    "OrderIntent",
    "Reason",
    "ReliabilityLayer",
    "Settings",
    "Side",
    "TradeguardError",
    "TradingMode",
    "UnknownGuard",
    "__version__",
]
