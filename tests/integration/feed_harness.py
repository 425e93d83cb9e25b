"""A real feed on 127.0.0.1: the embedded exchange's websocket server, a runtime, a client.

Short timings throughout (backoff base 10 ms); tests wait for conditions with a deadline,
never for a fixed sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from tradeguard import ReliabilityLayer, Settings
from tradeguard.fsm.effects import Effect, Transitioned
from tradeguard.io import FeedClient, Runtime
from tradeguard.io.exchange import ExchangeFeedServer, Market

SYMBOLS = ["BTC-USD", "ETH-USD"]

FAST = {
    "ws_reconnect_backoff_base": 0.01,
    "ws_reconnect_backoff_max": 0.04,
    "ws_reconnect_max_attempts": 3,
    "ws_reconnect_reset_seconds": 5.0,
    # Long enough that a loaded machine never mistakes a live stream for a silent one; the
    # silence test sets its own.
    "ws_message_stale_seconds": 2.0,
    "ws_reconnect_pause_seconds": 0.3,
}


@dataclass
class Feed:
    """Everything a feed test touches."""

    layer: ReliabilityLayer
    runtime: Runtime
    server: ExchangeFeedServer
    client: FeedClient
    effects: list[Effect] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    exceeded: list[tuple[str, float]] = field(default_factory=list)

    def feed_transitions(self) -> list[tuple[str, str, str]]:
        """(source, trigger, dest) of every feed transition so far."""
        return [
            (e.source, e.trigger, e.dest)
            for e in self.effects
            if isinstance(e, Transitioned) and e.machine == "feed:market"
        ]

    def status(self) -> dict[str, Any]:
        """The feed's entry in the layer's status."""
        feeds: dict[str, Any] = self.layer.status()["feeds"]
        return dict(feeds["market"])


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


@asynccontextmanager
async def running_feed(queue_size: int = 1000, **knobs: Any) -> AsyncIterator[Feed]:
    """A connected feed: exchange server, runtime and client, all torn down on exit."""
    settings = Settings(**{**FAST, **knobs})
    layer = ReliabilityLayer(settings, time.monotonic, rng=random.Random(1))
    market = Market(SYMBOLS, random.Random(2))
    async with (
        ExchangeFeedServer(market, tick_interval=0.02, heartbeat_interval=0.05) as server,
        Runtime(layer) as runtime,
    ):
        feed: Feed
        client = FeedClient(
            runtime,
            server.url,
            SYMBOLS,
            queue_size=queue_size,
            close_timeout=0.5,
            on_gap=lambda *gap: feed.gaps.append(gap),
            on_max_attempts_exceeded=lambda *args: feed.exceeded.append(args),
        )
        feed = Feed(layer, runtime, server, client)
        runtime.on_effect(feed.effects.append)
        await runtime.start(client.run)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        yield feed
