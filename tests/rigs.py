"""The shared engine rig: one `Engine` set-up for the tests that trade through it.

`engine_rig` enters an `Engine` over a broker with a seeded rng, collects its alerts and every
effect the runtime runs, and builds a reference `TradingLoop` with a `Buyer`. A test file adds
what only it needs by subclassing `EngineRig` (the venue it breaks, its fault plan) and passing
the subclass, with those extra fields bound, as ``make``. Importable as ``rigs`` like
``helpers`` (tests/conftest.py puts tests/ on the path).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import anyio

from tradeguard import GuardState, OrderIntent, ReliabilityLayer, Settings, Side
from tradeguard.fsm.effects import Alert, Effect, Transitioned
from tradeguard.io import Runtime, TradingLoop
from tradeguard.io.broker import Quote
from tradeguard.io.engine import Engine
from tradeguard.testing import ManualClock

__all__ = ["Buyer", "EngineRig", "engine_rig"]


class Buyer:
    """A small opening order on every symbol, every cycle: each one asks the layer."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent:
        return OrderIntent(symbol, Side.BUY, Decimal("0.01"))


@dataclass(kw_only=True)
class EngineRig:
    """A running engine, its trading loop, and what it did so far."""

    engine: Engine
    loop: TradingLoop
    clock: ManualClock | None = None
    effects: list[Effect] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def layer(self) -> ReliabilityLayer:
        return self.engine.layer

    @property
    def runtime(self) -> Runtime:
        return self.engine.runtime

    def state(self, guard: str, symbol: str | None = None) -> GuardState:
        return self.layer.guard(guard, symbol).state

    def moves(self, machine: str, scope: str | None = None) -> list[tuple[str, str, float]]:
        """(dest, trigger, at) of every transition of one machine so far."""
        return [
            (e.dest, e.trigger, e.at)
            for e in self.effects
            if isinstance(e, Transitioned) and e.machine == machine and e.scope == scope
        ]

    async def cycle_until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run trading cycles in real time until ``done()``; fail after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while not done():
                await self.loop.run_cycle()
                await anyio.sleep(0.01)


R = TypeVar("R", bound=EngineRig)


@asynccontextmanager
async def engine_rig(
    make: Callable[..., R],
    settings: Settings,
    broker: Any,
    symbols: Sequence[str],
    *,
    clock: ManualClock | None = None,
    **engine_options: Any,
) -> AsyncIterator[R]:
    """An `Engine` over ``broker`` (rng seeded 0, alerts collected), as the rig ``make`` builds.

    Args:
        make: `EngineRig` or a subclass, with the subclass's own fields already bound.
        clock: a manual clock for the layer (its wall clock too); real time if ``None``.
        engine_options: more keyword arguments for `Engine` (``feed_url``, ...).
    """
    alerts: list[Alert] = []
    if clock is not None:
        engine_options |= {"clock": clock, "wall_clock": clock.wall}
    async with Engine(
        settings,
        broker=broker,
        symbols=symbols,
        rng=random.Random(0),
        alert_sinks=(alerts.append,),
        **engine_options,
    ) as engine:
        rig = make(
            engine=engine,
            loop=engine.trading_loop(strategy=Buyer()),
            clock=clock,
            alerts=alerts,
        )
        engine.runtime.on_effect(rig.effects.append)
        yield rig
