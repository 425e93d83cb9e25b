"""`Engine`: the one assembly of layer, runtime, broker, feed, metrics, status and store.

Theory of operation (DESIGN §6). An engine author brings two things: settings and the exchange
client they already have. `Engine` builds everything else from `Settings` when its block
starts, in dependency order, and closes it in reverse on exit:

1. the event store (``store_path``, default ``GPT_TRADER_STORE_PATH``), when one is configured,
   and the layer restored from it (never more permissive than it stopped); else a fresh layer;
2. the broker. A ccxt exchange is wrapped in a `CcxtBroker`; a factory gets the runtime to
   report to; a ready `Broker` is used as it is. A broker that is an async context manager is
   entered here, outside the runtime: effects still queued when the runtime closes (a cancel
   on a late trip) run through it;
3. the `Runtime` (its timers and effect executor), with the recorder registered first so the
   archive sees every effect in the order it ran;
4. metrics (a registry of the engine's own unless one is given) and, when ``status_port`` is
   set, the ``/metrics``, ``/health``, ``/status`` server;
5. the fleet link (`tradeguard.io.fleet.Fleet`), when ``GPT_TRADER_FLEET_REDIS_URL`` is set:
   the member starts REDUCE_ONLY (the ``fleet`` guard, UNSYNCED) until it has read every
   restriction in force in the fleet, then follows its peers and publishes its own;
6. the websocket feed client, when ``feed_url`` is set.

Operator calls and refusals are archived when a store is configured: `decide`, `halt`,
`resume`, `reset` and the loops made by `trading_loop` record themselves. Refusals, through
`decide` or a loop, are also counted in the metrics (``refused_decisions_total``). The layer's
`decide()` stays synchronous and cheap; the archive write runs on a task the engine owns.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, final

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from tradeguard.config import Settings
from tradeguard.errors import EngineAlreadyRunning, EngineNotRunning
from tradeguard.fsm import Decision, OrderIntent, ReliabilityLayer, TradingMode
from tradeguard.fsm.effects import Effect
from tradeguard.io.broker import Broker
from tradeguard.io.runtime import AlertSink, BrokerFactory, Runtime, StartingMode, log_alert

if TYPE_CHECKING:
    from tradeguard.io.feed import FeedClient
    from tradeguard.io.fleet import Fleet
    from tradeguard.io.loop import TradingLoop
    from tradeguard.io.metrics import Metrics
    from tradeguard.io.store import EventStore, StoreRecorder

__all__ = ["Engine", "EngineNotRunning"]


# What the archive task writes: ("refusal", symbol, decision, intent) or ("operator", action,
# fields). Kept as tuples: built on the hot path of a refusal, read once by the writer.
_Archived = tuple[str, Any, Any, Any]


@final
class Engine(anyio.AsyncContextManagerMixin):
    """Everything an engine needs around its exchange client, built from `Settings`.

    Use as::

        async with Engine(settings, broker=exchange, symbols=["BTC-USD"]) as engine:
            decision = engine.decide(OrderIntent("BTC-USD", Side.BUY, Decimal("0.01")), pos)

    Args:
        settings: every knob (`Settings.from_env()`).
        broker: a `ccxt.async_support` exchange (wrapped in `CcxtBroker`), a
            `Broker`, or a factory ``(runtime) -> Broker`` for a broker that reports its
            calls to the runtime.
        symbols: the symbols traded (the feed subscribes to these).
        feed_url: the market-data websocket (``ws://``/``wss://``); ``None``: no feed.
        clock: monotonic seconds for the layer's timers.
        wall_clock: wall-clock seconds for persisted deadlines and the archive.
        rng: the layer's random source (reconnect jitter); seed it to replay a run.
        alert_sinks: where alerts go (a log record each by default).
        metrics: the `tradeguard.io.metrics.Metrics` to feed; ``None`` makes one with a
            registry of its own.
        status_port: serve ``/metrics``, ``/health`` and ``/status`` on this port of
            ``status_host`` (0: any free port); ``None``: no status server.
        status_host: where the status server listens.
        store_path: the SQLite event store; ``None`` reads ``GPT_TRADER_STORE_PATH`` (empty:
            no store).
        start_fresh: move an unreadable store aside instead of refusing to start.
        preflight: a preflight report whose starting mode is put in force first.
        feed_options: more keyword arguments for the `FeedClient` (``close_timeout``,
            ``on_max_attempts_exceeded``, ...).
        broker_options: more keyword arguments for the `CcxtBroker` a ccxt exchange is
            wrapped in (``timeout``, ...).
        freeze_gc: once everything is built, collect garbage and `gc.freeze()` what is
            alive (the exchange client, the layer, the imported modules), so the collector's
            full passes, which hold the event loop, no longer walk it; unfrozen on exit. It
            is the whole process's collector: off unless the host asks (docs/operations.md).

    Raises:
        TypeError: ``broker`` is none of the accepted kinds, or ``settings`` is not `Settings`.
        ValueError: no symbols, or an empty or repeated one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker | BrokerFactory | Any,
        symbols: Sequence[str],
        feed_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        alert_sinks: tuple[AlertSink, ...] = (log_alert,),
        metrics: Metrics | None = None,
        status_port: int | None = None,
        status_host: str = "127.0.0.1",
        store_path: str | Path | None = None,
        start_fresh: bool = False,
        preflight: StartingMode | None = None,
        feed_options: dict[str, Any] | None = None,
        broker_options: dict[str, Any] | None = None,
        freeze_gc: bool = False,
    ) -> None:
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tradeguard.Settings, got {settings!r}")
        if isinstance(symbols, str):
            raise TypeError(f"symbols must be a sequence of symbols, not one string {symbols!r}")
        chosen = tuple(symbols)
        if not chosen or not all(isinstance(s, str) and s.strip() for s in chosen):
            raise ValueError(f"symbols must be non-empty strings, got {symbols!r}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"symbols must not repeat, got {symbols!r}")
        self.settings = settings
        self.symbols = chosen
        self.feed_url = feed_url
        self.status_host = status_host
        self.status_port = status_port
        self._broker_source = _broker_source(broker, chosen, broker_options or {})
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng
        self._alert_sinks = alert_sinks
        self._metrics = metrics
        self._store_path = store_path if store_path is not None else settings.store_path or None
        self._start_fresh = start_fresh
        self._preflight = preflight
        self._feed_options = dict(feed_options or {})
        self._freeze_gc = freeze_gc
        self._parts: _Parts | None = None

    # ------------------------------------------------------------------ the parts

    @property
    def layer(self) -> ReliabilityLayer:
        """The reliability layer (restored from the store when one is configured)."""
        return self._running().runtime.layer

    @property
    def runtime(self) -> Runtime:
        """The runtime that drives the layer and executes its effects."""
        return self._running().runtime

    @property
    def broker(self) -> Broker:
        """The broker the runtime cancels through and the engine trades through."""
        broker = self._running().runtime.broker
        assert broker is not None  # the engine always builds its runtime with one
        return broker

    @property
    def metrics(self) -> Metrics:
        """The `tradeguard.io.metrics.Metrics` the engine feeds."""
        return self._running().metrics

    @property
    def status_url(self) -> str | None:
        """``http://host:port`` of the status server, or ``None`` without one."""
        return self._running().status_url

    @property
    def feed(self) -> FeedClient | None:
        """The `tradeguard.io.feed.FeedClient`, or ``None`` without a ``feed_url``."""
        return self._running().feed

    @property
    def fleet(self) -> Fleet | None:
        """The `tradeguard.io.fleet.Fleet` link, or ``None`` without a fleet Redis URL."""
        return self._running().fleet

    @property
    def store(self) -> EventStore | None:
        """The open `tradeguard.io.store.EventStore`, or ``None`` without one."""
        return self._running().store

    # ------------------------------------------------------------------ what the engine does

    def decide(self, intent: OrderIntent, position: Decimal | None = None) -> Decision:
        """The layer's decision on ``intent`` (see `ReliabilityLayer.decide`); a refusal is
        counted in the metrics (``refused_decisions_total``) and archived when a store is
        configured, as the refusals of `trading_loop` are."""
        parts = self._running()
        decision = parts.runtime.layer.decide(intent, position)
        if not decision.allowed:
            parts.metrics.count_refusal(decision)
            parts.archive.put(("refusal", intent.symbol, decision, intent))
        return decision

    async def halt(
        self,
        reason: str,
        symbol: str | None = None,
        ttl: float | None = None,
        mode: TradingMode = TradingMode.PAUSED,
    ) -> list[Effect]:
        """Operator halt (see `Runtime.halt`; ``mode=TradingMode.REDUCE_ONLY`` for a
        reduce-only halt): archived; returns its effects once they ran."""
        parts = self._running()
        effects = await parts.runtime.halt(reason, symbol, ttl, mode)
        parts.operator("halt", reason=reason, symbol=symbol, ttl=ttl, mode=mode.name)
        return effects

    async def resume(self, symbol: str | None = None) -> list[Effect]:
        """Lift an operator halt (see `Runtime.resume`); archived; a no-op when none is in
        force."""
        parts = self._running()
        effects = await parts.runtime.resume(symbol)
        parts.operator("resume", symbol=symbol)
        return effects

    async def reset(self, guard: str, symbol: str | None = None) -> list[Effect]:
        """Operator reset of a guard (see `Runtime.reset`); archived."""
        parts = self._running()
        effects = await parts.runtime.reset(guard, symbol)
        parts.operator("reset", guard=guard, symbol=symbol)
        return effects

    def trading_loop(self, **options: Any) -> TradingLoop:
        """A reference `tradeguard.io.loop.TradingLoop` over the engine's broker and symbols.

        Its refusals are archived when a store is configured and counted in the metrics;
        an ``on_event`` in ``options`` is called too. Start it with
        ``await engine.start(loop.run, cycle_seconds)``.
        """
        from tradeguard.io.loop import LoopEvent, TradingLoop

        parts = self._running()
        theirs: Callable[[LoopEvent], None] | None = options.pop("on_event", None)

        def on_event(event: LoopEvent) -> None:
            parts.metrics.on_loop_event(event)
            if event.kind == "refused" and event.decision is not None:
                parts.archive.put(("refusal", event.symbol, event.decision, event.intent))
            if theirs is not None:
                theirs(event)

        broker = parts.runtime.broker
        assert broker is not None
        return TradingLoop(parts.runtime, broker, self.symbols, on_event=on_event, **options)

    async def start(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Start ``fn`` as a task the runtime owns, with the engine's metrics active (so its
        profile spans are recorded); returns what it passes to ``started()``."""
        parts = self._running()
        with parts.metrics.activate():
            return await parts.runtime.start(fn, *args)

    def subscribe(self, max_buffer: int = 1000) -> MemoryObjectReceiveStream[Any]:
        """Transition and mode-change records, as `Runtime.subscribe`."""
        return self._running().runtime.subscribe(max_buffer)

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._parts is not None:
            raise EngineAlreadyRunning("this Engine is already running; build another")
        from tradeguard.io.metrics import Metrics, attach_metrics

        async with AsyncExitStack() as stack:
            store, recorder, layer = await self._open_store_and_layer(stack)
            archive = _Archive(recorder)
            if recorder is not None:
                # Its task group is left after the runtime: the writer drains what the
                # runtime's last moments archived, then ends when the queue closes.
                writers = await stack.enter_async_context(anyio.create_task_group())
                await writers.start(archive.write)
                stack.callback(archive.close)
            runtime = Runtime(
                layer,
                broker=self._broker_source,
                alert_sinks=self._alert_sinks,
                preflight=self._preflight,
            )
            if isinstance(runtime.broker, AbstractAsyncContextManager):
                # Entered before the runtime, so it closes after the runtime's last effect.
                await stack.enter_async_context(runtime.broker)
            if recorder is not None:
                runtime.on_effect(recorder.on_effect)
            await stack.enter_async_context(runtime)
            metrics = self._metrics if self._metrics is not None else Metrics()
            await attach_metrics(runtime, metrics)
            parts = _Parts(runtime, metrics, store, archive)
            if self.status_port is not None:
                from tradeguard.io.http_status import StatusServer

                server = StatusServer(
                    runtime, metrics, host=self.status_host, port=self.status_port
                )
                await stack.enter_async_context(server)
                parts.status_url = server.url
            if self.settings.fleet_redis_url:
                from tradeguard.io.fleet import Fleet

                # After the runtime (it observes through it), before the feed: the member is
                # held REDUCE_ONLY by the fleet guard before any market data moves it.
                parts.fleet = await stack.enter_async_context(
                    Fleet(
                        runtime,
                        self.settings,
                        metrics=metrics,
                        rng=self._rng,
                        wall_clock=self._wall_clock,
                    )
                )
            if self.feed_url is not None:
                from tradeguard.io.feed import FeedClient

                parts.feed = FeedClient(runtime, self.feed_url, self.symbols, **self._feed_options)
                await runtime.start(parts.feed.run)
            metrics.track_buffers(store=store, feeds=() if parts.feed is None else (parts.feed,))
            if self._freeze_gc:
                _freeze_what_lives(stack)
            self._parts = parts
            try:
                yield self
            finally:
                self._parts = None

    async def _open_store_and_layer(
        self, stack: AsyncExitStack
    ) -> tuple[EventStore | None, StoreRecorder | None, ReliabilityLayer]:
        if not self._store_path:
            layer = ReliabilityLayer(
                self.settings, self._clock, rng=self._rng, wall_clock=self._wall_clock
            )
            return None, None, layer
        from tradeguard.io.store import EventStore, StoreRecorder, open_layer

        store = await stack.enter_async_context(
            EventStore(self._store_path, start_fresh=self._start_fresh)
        )
        layer = await open_layer(
            self.settings, store, clock=self._clock, wall_clock=self._wall_clock, rng=self._rng
        )
        return store, StoreRecorder(store, layer, self._wall_clock), layer

    def _running(self) -> _Parts:
        if self._parts is None:
            raise EngineNotRunning("the Engine is not running: use `async with Engine(...)`")
        return self._parts


@final
class _Archive:
    """Refusals and operator actions on their way to the store, written by one task."""

    def __init__(self, recorder: StoreRecorder | None) -> None:
        self._recorder = recorder
        # A full queue means the store cannot keep up: fail loudly rather than drop records.
        self._send, self._receive = anyio.create_memory_object_stream[_Archived](10_000)

    def put(self, item: _Archived) -> None:
        if self._recorder is not None:
            self._send.send_nowait(item)

    def close(self) -> None:
        self._send.close()

    async def write(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            # Handed to the store's thread without waiting for each write: records queued
            # together share a transaction, so a burst of refusals is archived at the
            # store's group-commit rate, not one commit per refusal.
            async for kind, first, second, third in self._receive:
                assert self._recorder is not None  # only queued with a recorder
                if kind == "refusal":
                    self._recorder.refusal_nowait(first, second, intent=third)
                else:
                    self._recorder.operator_nowait(first, **second)


@final
class _Parts:
    """What a running engine holds; gone when its block ends."""

    def __init__(
        self, runtime: Runtime, metrics: Metrics, store: EventStore | None, archive: _Archive
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.store = store
        self.archive = archive
        self.status_url: str | None = None
        self.feed: FeedClient | None = None
        self.fleet: Fleet | None = None

    def operator(self, action: str, **fields: Any) -> None:
        self.archive.put(("operator", action, fields, None))


def _broker_source(
    broker: object, symbols: tuple[str, ...], options: dict[str, Any]
) -> Broker | BrokerFactory:
    if isinstance(broker, Broker):
        return broker
    if _is_ccxt_exchange(broker):
        from tradeguard.io.ccxt_broker import CcxtBroker

        exchange = broker
        return lambda runtime: CcxtBroker(exchange, runtime, symbols=symbols, **options)
    if callable(broker):
        factory: BrokerFactory = broker
        return factory
    raise TypeError(
        "broker must be a ccxt.async_support exchange, a tradeguard.io.Broker or a factory "
        f"(runtime) -> Broker, got {broker!r}"
    )


def _is_ccxt_exchange(obj: object) -> bool:
    # Checked by module name so that an engine without ccxt never imports it.
    return any(
        cls.__module__.startswith("ccxt.") and cls.__name__ == "Exchange"
        for cls in type(obj).__mro__
    )


def _freeze_what_lives(stack: AsyncExitStack) -> None:
    """Set what is alive after start-up aside from the collector until the engine stops.

    Measured (bench/bench_gc.py, 5,000 symbols, ccxt loaded): each full collection 3-7x
    shorter, memory unchanged. Collected first, or today's garbage would be kept for good.
    """
    gc.collect()
    gc.freeze()
    stack.callback(gc.unfreeze)
