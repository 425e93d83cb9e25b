"""The asyncio shell: drives the pure core over real sockets.

`Runtime` owns every task; `FeedClient` is the websocket market-data client; the embedded
simulated exchange lives in `tradeguard.io.exchange`.
"""

from tradeguard.io.feed import FeedClient, Ticker
from tradeguard.io.http_broker import CircuitOpen, HttpBroker
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

__all__ = [
    "CircuitOpen",
    "CycleReport",
    "EffectCallback",
    "FeedClient",
    "FeedControl",
    "Health",
    "HealthStatus",
    "HttpBroker",
    "LoopEvent",
    "LoopEventKind",
    "Metrics",
    "ProfileSample",
    "RandomStrategy",
    "Runtime",
    "StatusServer",
    "Strategy",
    "SyncBroker",
    "Ticker",
    "TradingLoop",
    "attach_metrics",
    "profile_span",
    "record_profile",
]
