"""The asyncio shell: drives the pure core over real sockets.

`Runtime` owns every task; `FeedClient` is the websocket market-data client; the embedded
simulated exchange lives in `tradeguard.io.exchange`.
"""

from tradeguard.io.feed import FeedClient, Ticker
from tradeguard.io.http_broker import CircuitOpen, HttpBroker
from tradeguard.io.loop import (
    CycleReport,
    LoopEvent,
    LoopEventKind,
    RandomStrategy,
    Strategy,
    SyncBroker,
    TradingLoop,
)
from tradeguard.io.runtime import EffectCallback, FeedControl, Runtime

__all__ = [
    "CircuitOpen",
    "CycleReport",
    "EffectCallback",
    "FeedClient",
    "FeedControl",
    "HttpBroker",
    "LoopEvent",
    "LoopEventKind",
    "RandomStrategy",
    "Runtime",
    "Strategy",
    "SyncBroker",
    "Ticker",
    "TradingLoop",
]
