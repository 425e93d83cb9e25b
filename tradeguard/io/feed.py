"""`FeedClient`: a real websocket market-data client driven by the pure feed machine.

Theory of operation (DESIGN §2.2). The client never decides when to reconnect: it reports
what happened to the layer (started, connected, disconnected with why, every message) and
waits for the layer's `Reconnect` effect, whose delay comes from the backoff policy and the
injected random source. When the layer declares a connected stream silent it sends
`CloseConnection`; the client closes without reporting the close (the layer already knows).

Faults become observations right at the edge: a refused handshake (503, 429), a refused
connection, a close with any code (1012/1013 "retry later" included) are all
`FeedDisconnected` and end in a backoff, never in a crash or a stopped loop. Malformed
messages and sequence gaps are counted and the stream goes on.

Keeping up (issue 15). A socket read can hold a thousand frames; the reader yields to other
tasks every `CHECKPOINT_FRAMES` frames, so the consumer and the timers are never starved by
one read. Tickers are conflated by symbol: the buffer holds at most the latest ticker per
symbol, and `next_ticker()` returns them in the order of their latest update. A newer ticker
replacing an unread one is not a loss (a mark only needs the latest price) and is counted in
`tickers_conflated` only. A *drop* is a latest ticker lost unread: with `queue_size` symbols
buffered, a ticker for another symbol evicts the symbol updated longest ago; only these are
reported as `MessagesDropped`. With `queue_size` at least the number of subscribed symbols,
an idle consumer loses nothing. Observations are batched the same way: the frames handled
between two yields of the reader become one `FeedMessage` (with their count) and one
`MarkUpdate` per symbol they priced, observed as soon as the reader yields (a mark is the fact
"a fresh price was seen now"). The batch is observed before any timer that fell due while
it was read can run (the task that observes it was woken first), so a stream that delivered
just before its silence deadline is never closed as silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import final

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tradeguard.fsm import events as ev
from tradeguard.io._coinbase import (
    CHANNELS,
    MalformedFeedMessage,
    Ticker,
    parse_message,
    subscribe_message,
)
from tradeguard.io._ws import direct_connection
from tradeguard.io.runtime import Runtime

__all__ = ["FeedClient", "Ticker"]

log = logging.getLogger("tradeguard.io.feed")

# Frames the reader handles before it yields to other tasks (the consumer, the timers).
CHECKPOINT_FRAMES = 64

# Close codes a server uses to say "come back later": reconnect through the backoff as usual.
RETRY_LATER_CODES = {1012: "service restart", 1013: "try again later"}

GapCallback = Callable[[str, int, int], None]
MaxAttemptsCallback = Callable[[str, float], None]


@final
class FeedClient:
    """A market-data websocket client for one feed, owned by a `Runtime`.

    Args:
        runtime: the runtime whose layer the client reports to.
        url: the ``ws://`` / ``wss://`` address.
        product_ids: the symbols to subscribe to (ticker and heartbeats channels).
        name: the feed's name in the layer (``feed:<name>``).
        queue_size: symbols whose latest ticker is buffered for the consumer; a ticker for one
            more symbol evicts the symbol updated longest ago (counted as dropped).
        open_timeout: seconds a connection attempt may take.
        close_timeout: seconds a close handshake may take before the socket is aborted.
        on_gap: called with ``(feed, expected, received)`` on a sequence gap.
        on_max_attempts_exceeded: called with ``(feed, pause_seconds)`` when the feed
            enters DEGRADED.
        proxy: passed to `websockets` (15 or newer); ``None`` connects directly.

    Raises:
        ValueError: bad arguments, or a ``proxy`` with a `websockets` too old to use one (the
            official Coinbase SDK pins ``websockets<14``, and both must share one environment).
    """

    def __init__(
        self,
        runtime: Runtime,
        url: str,
        product_ids: Sequence[str],
        *,
        name: str = "market",
        queue_size: int = 1000,
        open_timeout: float = 5.0,
        close_timeout: float = 1.0,
        on_gap: GapCallback | None = None,
        on_max_attempts_exceeded: MaxAttemptsCallback | None = None,
        proxy: str | None = None,
    ) -> None:
        products = list(product_ids)
        if not products or not all(isinstance(p, str) and p.strip() for p in products):
            raise ValueError(f"product_ids must be non-empty symbols, got {product_ids!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        self._connect_options = direct_connection(proxy)  # fails early on an unusable proxy
        self.runtime = runtime
        self.url = url
        self.name = name
        self.product_ids = products
        self.queue_size = queue_size
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.on_gap = on_gap
        self.on_max_attempts_exceeded = on_max_attempts_exceeded
        self.proxy = proxy
        self.connects = 0
        self.tickers_received = 0
        self.tickers_conflated = 0
        self.tickers_dropped = 0
        self._subscribed = set(products)
        # Latest ticker per symbol, in the order of its latest update (dicts keep order).
        self._ticks: dict[str, Ticker] = {}
        # Since the last observed batch: messages read, and the symbols they priced.
        self._unreported = 0
        self._marks: dict[str, None] = {}
        self._batch_due = anyio.Event()
        self._tick_ready = anyio.Event()
        self._reconnect_due = anyio.Event()
        self._read_scope: anyio.CancelScope | None = None
        self._expected_sequence: int | None = None

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, stream, and reconnect when the layer says so, until cancelled.

        Start it in the runtime: ``await runtime.start(client.run)``.
        """
        self.runtime.attach_feed(self.name, self)
        try:
            self.runtime.observe(ev.FeedStarted(self.name))
            task_status.started()
            while True:
                await self._session()
                await self._reconnect_due.wait()
                self._reconnect_due = anyio.Event()
        finally:
            self.runtime.detach_feed(self.name)
            self.runtime.observe(ev.FeedClosed(self.name))

    async def _session(self) -> None:
        try:
            connection = await connect(
                self.url,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                ping_interval=None,  # liveness is the layer's stale timer on data/heartbeats
                **self._connect_options,
            )
        except InvalidStatus as err:
            self._report_drop(f"handshake refused: HTTP {err.response.status_code}")
            return
        except (OSError, TimeoutError, InvalidHandshake) as err:  # cancellation passes through
            self._report_drop(f"connect failed: {type(err).__name__}: {err}")
            return
        try:
            await self._stream(connection)
        finally:
            await self._close(connection)

    async def _stream(self, connection: ClientConnection) -> None:
        try:
            for channel in CHANNELS:
                await connection.send(subscribe_message(channel, self.product_ids))
        except ConnectionClosed:
            self._report_drop(_describe_close(connection))
            return
        self.connects += 1
        self._expected_sequence = None
        self.runtime.observe(ev.FeedConnected(self.name))
        with anyio.CancelScope() as scope:
            self._read_scope = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._observe_batches_forever)
                await self._read(connection)
                tg.cancel_scope.cancel("feed stream ended")
        self._read_scope = None
        if scope.cancel_called:
            # The layer asked for this close (the feed is no longer CONNECTED): what the last
            # frames priced still counts; that they arrived cannot be reported any more.
            self._unreported = 0
            self._observe_batch()
            return  # the layer already counts the close
        self._observe_batch()  # the last frames, before the close is reported
        self._report_drop(_describe_close(connection))

    async def _read(self, connection: ClientConnection) -> None:
        frames = 0
        try:
            async for raw in connection:
                self._on_message(raw)
                frames += 1
                if frames >= CHECKPOINT_FRAMES:
                    frames = 0
                    await anyio.sleep(0)  # a long socket read must not starve the consumer
        except ConnectionClosed:
            pass  # reported by the caller, from the close code

    async def _observe_batches_forever(self) -> None:
        # Runs only when the reader yields (its buffered frames are handled, or a checkpoint),
        # so one batch of frames becomes one FeedMessage and one MarkUpdate per symbol.
        while True:
            await self._batch_due.wait()
            self._batch_due = anyio.Event()
            self._observe_batch()

    def _observe_batch(self) -> None:
        observe = self.runtime.observe
        if self._unreported:
            count, self._unreported = self._unreported, 0
            observe(ev.FeedMessage(self.name, count))  # anything at all proves it alive
        marks, self._marks = self._marks, {}
        for symbol in marks:
            observe(ev.MarkUpdate(symbol))

    async def _close(self, connection: ClientConnection) -> None:
        with anyio.move_on_after(self.close_timeout, shield=True):
            await connection.close()
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.abort()

    def _report_drop(self, reason: str) -> None:
        log.info("feed %s disconnected: %s", self.name, reason)
        self.runtime.observe(ev.FeedDisconnected(self.name, reason))

    # ------------------------------------------------------------------ messages

    def _on_message(self, raw: str | bytes) -> None:
        observe = self.runtime.observe
        self._unreported += 1
        if not self._batch_due.is_set():
            self._batch_due.set()
        try:
            message = parse_message(raw)
        except MalformedFeedMessage as err:
            log.warning("feed %s: malformed message skipped: %s", self.name, err)
            observe(ev.MalformedMessage(self.name, str(err)))
            return
        expected = self._expected_sequence
        if expected is not None and message.sequence != expected:
            if message.sequence < expected:
                detail = f"sequence went back from {expected - 1} to {message.sequence}"
                log.warning("feed %s: %s; message skipped", self.name, detail)
                observe(ev.MalformedMessage(self.name, detail))
                return
            observe(ev.SequenceGap(self.name, expected, message.sequence))
            if self.on_gap is not None:
                self.on_gap(self.name, expected, message.sequence)
        self._expected_sequence = message.sequence + 1
        if not message.tickers:
            return
        subscribed, ticks, marks = self._subscribed, self._ticks, self._marks
        received = conflated = dropped = 0
        for ticker in message.tickers:
            symbol = ticker.symbol
            if symbol not in subscribed:
                continue
            received += 1
            marks[symbol] = None
            if ticks.pop(symbol, None) is not None:
                conflated += 1  # a newer price for the same symbol: nothing lost
            elif len(ticks) >= self.queue_size:
                del ticks[next(iter(ticks))]  # the symbol updated longest ago, lost unread
                dropped += 1
            ticks[symbol] = ticker  # (re)inserted last: arrival order of the latest update
        if not received:
            return
        self.tickers_received += received
        self.tickers_conflated += conflated
        if dropped:
            self.tickers_dropped += dropped
            observe(ev.MessagesDropped(self.name, dropped))
        self._tick_ready.set()

    async def next_ticker(self) -> Ticker:
        """The buffered ticker whose latest update is oldest, waiting for one if none is.

        Only the latest ticker per symbol is kept: one the consumer has not read yet is
        replaced by a newer one for the same symbol.
        """
        while not self._ticks:
            self._tick_ready = anyio.Event()
            await self._tick_ready.wait()
        ticks = self._ticks
        return ticks.pop(next(iter(ticks)))

    @property
    def buffered(self) -> int:
        """Symbols whose latest ticker waits for the consumer (at most `queue_size`)."""
        return len(self._ticks)

    # ------------------------------------------------------------------ FeedControl

    def reconnect(self, attempt: int) -> None:
        """The layer's backoff delay passed: connect again."""
        self._reconnect_due.set()

    def close_connection(self, reason: str) -> None:
        """The layer declared the stream dead: close it without reporting the close."""
        log.info("feed %s: closing: %s", self.name, reason)
        if self._read_scope is not None:
            self._read_scope.cancel()

    def max_attempts_exceeded(self, pause_seconds: float) -> None:
        """The feed entered DEGRADED: tell the user's callback, once per entry."""
        if self.on_max_attempts_exceeded is not None:
            self.on_max_attempts_exceeded(self.name, pause_seconds)


def _describe_close(connection: ClientConnection) -> str:
    # The sans-I/O protocol object: websockets 13 has no close_code on the connection itself.
    code = connection.protocol.close_code
    if code is None:
        return "connection lost"
    reason = connection.protocol.close_reason or ""
    if code in RETRY_LATER_CODES:
        return f"close {code} ({RETRY_LATER_CODES[code]}, retry later) {reason}".rstrip()
    return f"close {code} {reason}".rstrip()
