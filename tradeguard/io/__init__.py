"""The asyncio shell: drives the pure core over real sockets.

`Runtime` owns every task; `FeedClient` is the websocket market-data client; the embedded
simulated exchange lives in `tradeguard.io.exchange`.
"""

from typing import TYPE_CHECKING, Any

from tradeguard.io.broker import CircuitOpen
from tradeguard.io.feed import FeedClient, Ticker
from tradeguard.io.guarded import GuardedCall, ObservationSink, guarded_call
from tradeguard.io.http_broker import HttpBroker
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
    "CcxtBroker",
    "CircuitOpen",
    "CycleReport",
    "EffectCallback",
    "FeedClient",
    "FeedControl",
    "GuardedCall",
    "Health",
    "HealthStatus",
    "HttpBroker",
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
