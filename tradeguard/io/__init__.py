"""The asyncio shell: drives the pure core over real sockets.

`Engine` assembles everything around the exchange client an engine already has; `Runtime` owns
every task; `CcxtBroker` reports every request of a ccxt exchange; `FeedClient` is the websocket
market-data client; the embedded Coinbase simulator lives in `tradeguard.io.exchange`.
"""

from typing import TYPE_CHECKING, Any

from tradeguard.io.broker import Broker, CircuitOpen
from tradeguard.io.engine import Engine, EngineNotRunning
from tradeguard.io.feed import FeedClient, Ticker
from tradeguard.io.guarded import GuardedCall, ObservationSink, guarded_call
from tradeguard.io.http_status import Health, HealthStatus, StatusServer
from tradeguard.io.loop import (
    CycleReport,
    LoopEvent,
    LoopEventKind,
    RandomStrategy,
    Strategy,
    SyncBroker,
    TradingLoop,
)
from tradeguard.io.metrics import Metrics, attach_metrics
from tradeguard.io.profiling import ProfileSample, profile_span, record_profile
from tradeguard.io.runtime import EffectCallback, FeedControl, Runtime

if TYPE_CHECKING:
    from tradeguard.io.ccxt_broker import CcxtBroker

__all__ = [
    "Broker",
    "CcxtBroker",
    "CircuitOpen",
    "CycleReport",
    "EffectCallback",
    "Engine",
    "EngineNotRunning",
    "FeedClient",
    "FeedControl",
    "GuardedCall",
    "Health",
    "HealthStatus",
    "LoopEvent",
    "LoopEventKind",
    "Metrics",
    "ObservationSink",
    "ProfileSample",
    "RandomStrategy",
    "Runtime",
    "StatusServer",
    "Strategy",
    "SyncBroker",
    "Ticker",
    "TradingLoop",
    "attach_metrics",
    "guarded_call",
    "profile_span",
    "record_profile",
]


def __getattr__(name: str) -> Any:
    # ccxt is an extra and slow to import: load `CcxtBroker` only when asked for.
    if name == "CcxtBroker":
        from tradeguard.io.ccxt_broker import CcxtBroker

        return CcxtBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
