"""`Runtime`: the asyncio shell that drives a `ReliabilityLayer` (DESIGN §3, STYLE §2).

Theory of operation. The runtime owns one anyio task group for its lifetime. Observations
are applied synchronously by whoever calls `observe` (one event loop, so one writer): the layer
returns its effects and they are queued, in order, for the one executor task, with no `await`
in between. A timer task sleeps until `next_deadline()` on the layer's own clock and calls
`tick()`; an observation that moves the deadline earlier wakes it. The executor hands
feed-bound effects (`Reconnect`, `CloseConnection`, `MaxAttemptsExceeded`) to the feed client
that owns that feed, performs the broker work (`CancelOpenOrders` cancels the bot's open
orders, `CancelOrders` the listed ones) and hands `Alert`s to the alert sinks, then gives every
effect to the registered callbacks and every transition record to the subscribers. A callback
that raises crashes the runtime: the error leaves ``async with`` instead of being logged and
lost. A cancel the venue refuses is not a crash: the broker already reported the failed call
to the layer, the runtime raises an alert saying which orders may still be open and reports
`CancelFailed`; the layer keeps it (in snapshots too) and asks for the cancel again as soon as
the API answers again (a breaker closes, or api_health recovers).

Under load (issue 15) the executor takes everything queued at once and acts on safety effects
before the bookkeeping queued ahead of them: cancels (`CancelOpenOrders`, `CancelOrders`)
first, then `Alert`s, each kind in order; callbacks and subscribers still get every effect in
the order it was queued. The timer task applies due timers a slice at a time, and every task
lets the others run between slices, so a burst (1,000 marks going stale at once) never holds
the event loop for long.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, Self, final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tradeguard.errors import RuntimeClosed, RuntimeNotRunning
from tradeguard.fsm import ReliabilityLayer, TradingMode
from tradeguard.fsm.effects import (
    Alert,
    CancelOpenOrders,
    CancelOrders,
    CloseConnection,
    Effect,
    MaxAttemptsExceeded,
    ModeChanged,
    Reconnect,
    Transitioned,
)
from tradeguard.fsm.events import CancelFailed, Observation
from tradeguard.io import profiling
from tradeguard.io.broker import BOT_PREFIX, Broker, BrokerError

__all__ = [
    "AlertSink",
    "BrokerFactory",
    "EffectCallback",
    "FeedControl",
    "Record",
    "Runtime",
    "StartingMode",
    "log_alert",
]

log = logging.getLogger("tradeguard.io.runtime")

# Effects the executor runs between two yields to the event loop.
_FAIR_SHARE = 32
# Timers applied per pass of the timer task: about 0.5-1 ms of the layer's work (10-20 µs a
# timer that moves a symbol's mode), so a mass expiry never holds the event loop for long: a
# task waiting for the loop waits at most two passes (issue 15).
_TIMER_SLICE = 50
# What one call queued: the sequence number of its first effect, and the effects in order.
_Batch = tuple[int, tuple[Effect, ...]]


@dataclass(slots=True, eq=False)
class _Queued:
    """An effect the executor took: its sequence number and whether it was acted on yet."""

    seq: int
    effect: Effect
    acted: bool = False


EffectCallback = Callable[[Effect], Awaitable[None] | None]
AlertSink = Callable[[Alert], Awaitable[None] | None]
Record = Transitioned | ModeChanged
# Builds the broker of a runtime from the runtime itself (a broker that reports every call).
BrokerFactory = Callable[["Runtime"], Broker]


def log_alert(alert: Alert) -> None:
    """The default alert sink: a log record at the alert's severity."""
    level = {"info": logging.INFO, "warning": logging.WARNING}.get(alert.severity, logging.ERROR)
    log.log(level, "ALERT %s: %s", alert.title, alert.detail)


class StartingMode(Protocol):
    """What sets the layer's starting mode (a `tradeguard.io.preflight.PreflightReport`)."""

    def apply(self, layer: ReliabilityLayer) -> list[Effect]:
        """Trip what the startup checks found broken; returns the effects."""
        ...


class FeedControl(Protocol):
    """What a feed client offers the runtime for its feed's effects."""

    def reconnect(self, attempt: int) -> None:
        """Open a new connection now."""

    def close_connection(self, reason: str) -> None:
        """Close the open connection; do not report the close."""

    def max_attempts_exceeded(self, pause_seconds: float) -> None:
        """The feed exceeded its reconnect attempts."""


@final
class Runtime(anyio.AsyncContextManagerMixin):
    """Drives a layer: applies observations, runs its timers, executes its effects.

    Use as ``async with Runtime(layer) as runtime:``; leaving the block cancels and awaits
    every task it started.
    """

    def __init__(
        self,
        layer: ReliabilityLayer,
        *,
        broker: Broker | BrokerFactory | None = None,
        alert_sinks: tuple[AlertSink, ...] = (log_alert,),
        bot_prefix: str = BOT_PREFIX,
        preflight: StartingMode | None = None,
    ) -> None:
        self.layer = layer
        self.alert_sinks = alert_sinks
        self.bot_prefix = bot_prefix
        self._preflight = preflight
        self._subscribers: list[MemoryObjectSendStream[Record]] = []
        self._clock = layer.clock
        # Effects travel as the lists they were queued in, each with the sequence number of
        # its first effect (the order it was queued in).
        self._send, self._receive = anyio.create_memory_object_stream[_Batch](math.inf)
        self._callbacks: list[EffectCallback] = []
        self._feeds: dict[str, FeedControl] = {}
        self._wake = anyio.Event()
        self._sleeping_until = math.inf
        self._task_group: TaskGroup | None = None
        self._timer_scope = anyio.CancelScope()
        self._closed = False
        self._profile_sink: profiling.ProfileSink | None = None
        # Effects queued so far, and how many of the first queued have all run (safety effects
        # may run before bookkeeping queued ahead of them, so this is a low-water mark, not a
        # count): an operator call waits until its own have run.
        self._queued = 0
        self._executed = 0
        self._progress = anyio.Event()
        self._progress_awaited = False  # someone waits on `_progress` (replaced once set)
        # A broker that reports its calls needs the runtime it reports to: a factory gets the
        # finished runtime here, so nothing is patched onto it after construction.
        self.broker: Broker | None = (
            broker if broker is None or isinstance(broker, Broker) else broker(self)
        )

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        try:
            async with anyio.create_task_group() as core:
                core.start_soon(self._execute_effects)
                if self._preflight is not None:
                    # The starting mode comes first: nothing trades before it is in force.
                    self._publish(self._preflight.apply(self.layer))
                await core.start(self._run_timer)  # returns once the first deadline is armed
                try:
                    async with anyio.create_task_group() as tasks:
                        self._task_group = tasks
                        try:
                            yield self
                        finally:
                            self._task_group = None
                            tasks.cancel_scope.cancel("runtime closed")
                finally:
                    # Tasks that stopped (a feed reporting FeedClosed) may have queued effects:
                    # the executor runs them all, then ends when the stream closes.
                    self._closed = True
                    self._send.close()
                    self._timer_scope.cancel("runtime closed")
        finally:
            for subscriber in self._subscribers:
                subscriber.close()  # subscribers' iterations end

    @property
    def closed(self) -> bool:
        """True once the block was left: nothing can be observed any more (effects queued
        before may still be running, such as a cancel whose calls then go unreported)."""
        return self._closed

    # ------------------------------------------------------------------ inputs

    def observe(self, observation: Observation) -> list[Effect]:
        """Apply one observation now; its effects are queued for execution in order."""
        self._require_open()
        effects = self.layer.observe(observation)
        self._publish(effects)
        return effects

    def apply(self, effects: list[Effect]) -> None:
        """Queue effects a call on the layer returned outside `observe`."""
        self._publish(effects)

    def alert(self, alert: Alert) -> None:
        """Send ``alert`` to the alert sinks, queued behind the effects already pending.

        For what the shell sees that no guard judges (the venue refused our credentials): it
        runs like an `Alert` effect of the layer, callbacks included.
        """
        self._require_open()
        self._publish([alert])

    # Operator calls are async, like `start`: each returns once its effects have run (the
    # cancels of a halt sent, its records published), so an operator script can go on knowing
    # the restriction is in force and acted on.

    async def halt(
        self,
        reason: str,
        symbol: str | None = None,
        ttl: float | None = None,
        mode: TradingMode = TradingMode.PAUSED,
    ) -> list[Effect]:
        """Operator halt (see `ReliabilityLayer.halt`; ``mode=TradingMode.REDUCE_ONLY`` for a
        reduce-only halt); returns its effects once they ran.

        Raises:
            InvalidObservation: bad arguments (nothing changed).
            RuntimeClosed: the runtime is closed.
        """
        self._require_open()
        return await self._run_now(self.layer.halt(reason, symbol, ttl, mode))

    async def resume(self, symbol: str | None = None) -> list[Effect]:
        """Lift an operator halt (see `ReliabilityLayer.resume`); returns its effects once
        they ran."""
        self._require_open()
        return await self._run_now(self.layer.resume(symbol))

    async def reset(self, guard: str, symbol: str | None = None) -> list[Effect]:
        """Operator reset of a guard (see `ReliabilityLayer.reset`); returns its effects once
        they ran."""
        self._require_open()
        return await self._run_now(self.layer.reset(guard, symbol))

    async def _run_now(self, effects: list[Effect]) -> list[Effect]:
        self._publish(effects)
        target = self._queued
        while self._executed < target:
            self._progress_awaited = True
            await self._progress.wait()
        return effects

    def clock_moved(self) -> None:
        """The layer's clock jumped (a `ManualClock` advanced in a test): re-check deadlines now.

        The timer sleeps on the event loop for as long as the layer's clock says is left;
        with a manual clock that time never passes by itself, so a test advances the clock and
        calls this (`tradeguard.testing.advance` does both and waits for the effects to run).
        """
        self._wake.set()

    def _require_open(self) -> None:
        # Checked before the layer changes: a closed runtime could not run the effects.
        if self._closed:
            raise RuntimeClosed("Runtime is closed: nothing can be observed or run any more")

    def _publish(self, effects: list[Effect]) -> None:
        if effects and self._closed:
            raise RuntimeClosed(f"Runtime is closed; these effects cannot run: {effects!r}")
        if effects:
            # A copy: the caller gets ``effects`` back and may extend it.
            self._send.send_nowait((self._queued, tuple(effects)))
            self._queued += len(effects)
        deadline = self.layer.next_deadline()
        if deadline is not None and deadline < self._sleeping_until:
            self._wake.set()

    # ------------------------------------------------------------------ wiring

    async def start(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Start ``fn`` as a task the runtime owns; returns what it passes to ``started()``.

        The task's profile spans go to the runtime's profile sink (see `route_profiles`),
        wherever ``start`` was called from.
        """
        if self._task_group is None:
            raise RuntimeNotRunning("Runtime is not running: use `async with Runtime(layer)`")
        with self.profiled():  # the task copies this context when it starts
            return await self._task_group.start(fn, *args)

    @property
    def profile_sink(self) -> profiling.ProfileSink | None:
        """Where the profile spans of work under this runtime go (see `route_profiles`)."""
        return self._profile_sink

    def route_profiles(self, sink: profiling.ProfileSink | None) -> None:
        """Record the profile spans of work under this runtime into ``sink`` (``None``: stop).

        Work under the runtime: tasks started with `start` from now on, and every cycle and
        health check of a `tradeguard.io.TradingLoop` over it, whoever awaits them.
        `tradeguard.io.attach_metrics` (and so the `Engine`) routes them to its metrics.
        """
        self._profile_sink = sink

    def profiled(self) -> AbstractContextManager[None]:
        """A block whose profile spans go to the runtime's profile sink, when it has one
        (it then wins over a sink active around the block); else the block changes nothing."""
        sink = self._profile_sink
        return nullcontext() if sink is None else profiling.activate(sink)

    def on_effect(self, callback: EffectCallback) -> None:
        """Call ``callback`` (sync or async) with every effect, in order."""
        self._callbacks.append(callback)

    def subscribe(self, max_buffer: int = 1000) -> MemoryObjectReceiveStream[Record]:
        """A stream of every `Transitioned` and `ModeChanged` from now on, in order.

        Use ``async with runtime.subscribe() as records: async for record in records``. It
        ends when the runtime closes. A subscriber that falls ``max_buffer`` records behind is
        cut off (its stream ends, with a warning logged): the runtime never blocks on it and
        never buffers without bound.
        """
        send, receive = anyio.create_memory_object_stream[Record](max_buffer)
        self._subscribers.append(send)
        return receive

    def attach_feed(self, name: str, control: FeedControl) -> None:
        """Route ``name``'s feed effects to ``control``."""
        if name in self._feeds:
            raise ValueError(f"feed {name!r} already has a client attached")
        self._feeds[name] = control

    def detach_feed(self, name: str) -> None:
        """Stop routing ``name``'s feed effects."""
        self._feeds.pop(name, None)

    # ------------------------------------------------------------------ tasks

    async def _run_timer(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with self._timer_scope:
            await self._timer_loop(task_status)

    async def _timer_loop(self, task_status: TaskStatus[None]) -> None:
        started = False
        while True:
            self._wake = anyio.Event()
            deadline = self.layer.next_deadline()
            self._sleeping_until = math.inf if deadline is None else deadline
            if not started:
                task_status.started()
                started = True
            delay = self._sleeping_until - self._clock()
            if delay > 0:
                with anyio.move_on_after(None if math.isinf(delay) else delay):
                    await self._wake.wait()
            self._publish(self.layer.tick(max_timers=_TIMER_SLICE))
            due = self.layer.next_deadline()
            if due is not None and due <= self._clock():
                # More are due (1,000 marks going stale together): the next pass applies
                # them, after the other tasks (the executor with any cancel) had their turn.
                await anyio.lowlevel.checkpoint()

    async def _execute_effects(self) -> None:
        # Everything ready is taken at once, not one effect per loop pass, and re-taken after
        # each step. Running an effect has two parts: acting on it (the broker's cancel, the
        # alert sinks, a feed's reconnect) and publishing it (callbacks such as metrics and the
        # archive, then subscribers). A safety effect acts as soon as it is taken, ahead of
        # bookkeeping queued before it; publishing keeps the order effects were queued in, so
        # callbacks and subscribers still see every effect in order (STYLE §2).
        pending: deque[_Queued] = deque()  # every effect taken and not yet published, in order
        # The safety effects among them not yet acted on: cancels first (they protect the
        # account; a burst of 1,000 stale-mark alerts must not hold one back), then alerts.
        cancels: deque[_Queued] = deque()
        alerts: deque[_Queued] = deque()
        received = 0  # sequence number of the first effect still in the stream
        ran = 0

        def take(batch: _Batch) -> None:
            nonlocal received
            first, effects = batch
            received = first + len(effects)
            for seq, effect in enumerate(effects, first):
                queued = _Queued(seq, effect)
                pending.append(queued)
                if isinstance(effect, CancelOpenOrders | CancelOrders):
                    cancels.append(queued)
                elif isinstance(effect, Alert):
                    alerts.append(queued)

        async with self._receive:
            while True:
                while True:
                    try:
                        take(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if cancels or alerts:
                    await self._act(cancels.popleft() if cancels else alerts.popleft())
                    ran += 1
                    if ran % _FAIR_SHARE == 0:
                        await anyio.lowlevel.checkpoint()  # sinks that never wait, a burst
                    continue
                if not pending:
                    try:
                        take(await self._receive.receive())
                    except anyio.EndOfStream:
                        return
                    continue
                queued = pending.popleft()
                await self._act(queued)
                for callback in self._callbacks:
                    result = callback(queued.effect)
                    if result is not None and inspect.isawaitable(result):
                        await result
                if isinstance(queued.effect, Transitioned | ModeChanged):
                    self._notify(queued.effect)
                # Every effect before the first one still pending has run.
                self._executed = pending[0].seq if pending else received
                if self._progress_awaited:  # (an event per effect costs 2 µs: only if awaited)
                    self._progress_awaited = False
                    self._progress.set()
                    self._progress = anyio.Event()
                ran += 1
                if ran % _FAIR_SHARE == 0:
                    # Callbacks that never wait would hold the loop through a burst of
                    # thousands of effects: let the other tasks (and the clock) run.
                    await anyio.lowlevel.checkpoint()

    async def _act(self, queued: _Queued) -> None:
        if not queued.acted:
            queued.acted = True
            self._route(queued.effect)
            await self._perform(queued.effect)

    async def _perform(self, effect: Effect) -> None:
        match effect:
            case CancelOpenOrders():
                await self._cancel(None, effect.reason)
            case CancelOrders():
                await self._cancel(effect.order_ids, effect.reason)
            case Alert():
                await self._alert(effect)
            case _:
                pass

    async def _cancel(self, order_ids: tuple[str, ...] | None, reason: str) -> None:
        if self.broker is None:
            return
        try:
            if order_ids is None:
                open_orders = await self.broker.list_orders()
                order_ids = tuple(
                    o.order_id for o in open_orders if o.client_order_id.startswith(self.bot_prefix)
                )
            if order_ids:
                cancelled = await self.broker.cancel_orders(order_ids)
                log.info("cancelled %d order(s) (%s)", len(cancelled), reason)
        except (BrokerError, OSError, TimeoutError) as err:  # cancellation passes through
            # The broker already reported the failed call to the layer; say what may be left,
            # and hand the request to the layer, which asks again once the API answers again.
            if not self._closed:  # closed: nothing could run the retry any more
                self._publish(self.layer.observe(CancelFailed(order_ids or None, reason)))
            which = "every open bot order" if order_ids is None else ", ".join(order_ids)
            detail = f"{which}: {err} ({reason}); retried when the API answers again"
            await self._alert(Alert("critical", "cancel failed", detail))

    async def _alert(self, alert: Alert) -> None:
        for sink in self.alert_sinks:
            result = sink(alert)
            if inspect.isawaitable(result):
                await result

    def _notify(self, record: Record) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(record)
            except anyio.WouldBlock:
                log.warning("a transition subscriber fell behind and was cut off")
                subscriber.close()
                self._subscribers.remove(subscriber)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(subscriber)  # the subscriber went away

    def _route(self, effect: Effect) -> None:
        match effect:
            case Reconnect() if (feed := self._feeds.get(effect.feed)) is not None:
                feed.reconnect(effect.attempt)
            case CloseConnection() if (feed := self._feeds.get(effect.feed)) is not None:
                feed.close_connection(effect.reason)
            case MaxAttemptsExceeded() if (feed := self._feeds.get(effect.feed)) is not None:
                feed.max_attempts_exceeded(effect.pause_seconds)
            case _:
                pass
