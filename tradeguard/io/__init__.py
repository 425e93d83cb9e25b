"""The asyncio shell: drives the pure core over real sockets.

`Runtime` owns every task; `FeedClient` is the websocket market-data client; the embedded
simulated exchange lives in `tradeguard.io.exchange`.
"""

from tradeguard.io.feed import FeedClient, Ticker
from tradeguard.io.runtime import EffectCallback, FeedControl, Runtime

__all__ = ["EffectCallback", "FeedClient", "FeedControl", "Runtime", "Ticker"]
