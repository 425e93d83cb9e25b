"""The asyncio shell: drives the pure core over real sockets.

`Engine` assembles everything around the exchange client an engine already has; `Runtime` owns
every task; `CcxtBroker` reports every request of a ccxt exchange; `FeedClient` is the websocket
market-data client; the embedded Coinbase simulator lives in `tradeguard.io.exchange`.

Every name loads its module on first use, so importing a value module such as
`tradeguard.io.broker` does not pull in aiohttp, websockets, prometheus_client or ccxt.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradeguard.io.broker import Broker, CircuitOpen
    from tradeguard.io.ccxt_broker import CcxtBroker
    from tradeguard.io.engine import Engine, EngineNotRunning
    from tradeguard.io.feed import FeedClient, Ticker
    from tradeguard.io.fleet import Fleet
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
    "Fleet",
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

# Which submodule defines each exported name. ccxt is an extra and slow to import, aiohttp,
# websockets and prometheus_client are heavy: each loads only when one of its names is asked for.
_SOURCES = {
    "Broker": "broker",
    "CcxtBroker": "ccxt_broker",
    "CircuitOpen": "broker",
    "CycleReport": "loop",
    "EffectCallback": "runtime",
    "Engine": "engine",
    "Fleet": "fleet",
    "EngineNotRunning": "engine",
    "FeedClient": "feed",
    "FeedControl": "runtime",
    "GuardedCall": "guarded",
    "Health": "http_status",
    "HealthStatus": "http_status",
    "LoopEvent": "loop",
    "LoopEventKind": "loop",
    "Metrics": "metrics",
    "ObservationSink": "guarded",
    "ProfileSample": "profiling",
    "RandomStrategy": "loop",
    "Runtime": "runtime",
    "StatusServer": "http_status",
    "Strategy": "loop",
    "SyncBroker": "loop",
    "Ticker": "feed",
    "TradingLoop": "loop",
    "attach_metrics": "metrics",
    "guarded_call": "guarded",
    "profile_span": "profiling",
    "record_profile": "profiling",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{source}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
