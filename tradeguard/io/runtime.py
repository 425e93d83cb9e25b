"""`Runtime`: the asyncio shell that drives a `ReliabilityLayer` (DESIGN §3, STYLE §2).

Theory of operation. The runtime owns one anyio task group for its lifetime. Observations
are applied synchronously by whoever calls `observe` (one event loop, so one writer): the layer
returns its effects and they are queued, in order, for the one executor task, with no `await`
in between. A timer task sleeps until `next_deadline()` on the layer's own clock and calls
`tick()`; an observation that moves the deadline earlier wakes it. The executor hands
feed-bound effects (`Reconnect`, `CloseConnection`, `MaxAttemptsExceeded`) to the feed client
that owns that feed, then gives every effect to the registered callbacks. A callback that
raises crashes the runtime: the error leaves ``async with`` instead of being logged and lost.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol, Self, final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from tradeguard.fsm import ReliabilityLayer
from tradeguard.fsm.effects import CloseConnection, Effect, MaxAttemptsExceeded, Reconnect
from tradeguard.fsm.events import Observation

__all__ = ["EffectCallback", "FeedControl", "Runtime"]

EffectCallback = Callable[[Effect], Awaitable[None] | None]


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

    def __init__(self, layer: ReliabilityLayer) -> None:
        self.layer = layer
        self._clock = layer.clock
        self._send, self._receive = anyio.create_memory_object_stream[Effect](math.inf)
        self._callbacks: list[EffectCallback] = []
        self._feeds: dict[str, FeedControl] = {}
        self._wake = anyio.Event()
        self._sleeping_until = math.inf
        self._task_group: TaskGroup | None = None
        self._timer_scope = anyio.CancelScope()
        self._closed = False

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        async with anyio.create_task_group() as core:
            core.start_soon(self._execute_effects)
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

    # ------------------------------------------------------------------ inputs

    def observe(self, observation: Observation) -> list[Effect]:
        """Apply one observation now; its effects are queued for execution in order."""
        effects = self.layer.observe(observation)
        self._publish(effects)
        return effects

    def apply(self, effects: list[Effect]) -> None:
        """Queue effects an operator call on the layer returned (`halt`, `resume`, `reset`)."""
        self._publish(effects)

    def _publish(self, effects: list[Effect]) -> None:
        if effects and self._closed:
            raise RuntimeError(f"Runtime is closed; these effects cannot run: {effects!r}")
        for effect in effects:
            self._send.send_nowait(effect)
        deadline = self.layer.next_deadline()
        if deadline is not None and deadline < self._sleeping_until:
            self._wake.set()

    # ------------------------------------------------------------------ wiring

    async def start(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        """Start ``fn`` as a task the runtime owns; returns what it passes to ``started()``."""
        if self._task_group is None:
            raise RuntimeError("Runtime is not running: use `async with Runtime(layer)`")
        return await self._task_group.start(fn, *args)

    def on_effect(self, callback: EffectCallback) -> None:
        """Call ``callback`` (sync or async) with every effect, in order."""
        self._callbacks.append(callback)

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
            self._publish(self.layer.tick())

    async def _execute_effects(self) -> None:
        async with self._receive:
            async for effect in self._receive:
                self._route(effect)
                for callback in self._callbacks:
                    result = callback(effect)
                    if inspect.isawaitable(result):
                        await result

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
