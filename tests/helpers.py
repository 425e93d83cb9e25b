"""Small named helpers for layer-level tests: a layer-plus-clock factory, effect filters, asserts.

Everything here goes through `ReliabilityLayer`'s public API; nothing reaches into the core.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from tradeguard import OrderIntent, ReliabilityLayer, Settings, Side
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Effect, Transitioned
from tradeguard.testing import ManualClock

__all__ = [
    "ANY",
    "assert_one",
    "assert_transition",
    "buy",
    "count_of",
    "deadline",
    "make_layer",
    "make_settings",
    "mark",
    "moves",
    "of_type",
    "run_timers_until",
    "sell",
    "status_of",
    "time_limit",
    "transitions_of",
]

E = TypeVar("E")


class _Any:
    """Matches any scope (``None`` is a real scope: global)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def make_settings(**knob_overrides: Any) -> Settings:
    """`Settings` with the given fields changed (validated like any construction)."""
    return Settings(**knob_overrides)


def make_layer(**knob_overrides: Any) -> tuple[ReliabilityLayer, ManualClock]:
    """A layer on a fresh `ManualClock` at 0 with a seeded rng, and the clock that drives it."""
    clock = ManualClock()
    layer = ReliabilityLayer(
        make_settings(**knob_overrides), clock, rng=random.Random(0), wall_clock=clock.wall
    )
    return layer, clock


def of_type(effects: Iterable[Effect], cls: type[E]) -> list[E]:
    """The effects of one type, in order."""
    return [e for e in effects if isinstance(e, cls)]


def count_of(effects: Iterable[Effect], cls: type[Any]) -> int:
    """How many effects of one type."""
    return len(of_type(effects, cls))


def transitions_of(
    effects: Iterable[Effect], machine: str | None = None, *, scope: Any = ANY
) -> list[Transitioned]:
    """The `Transitioned` records, optionally of one machine and one scope, in order."""
    return [
        t
        for t in of_type(effects, Transitioned)
        if (machine is None or t.machine == machine) and (scope is ANY or t.scope == scope)
    ]


def moves(
    effects: Iterable[Effect], machine: str | None = None, *, scope: Any = ANY
) -> list[tuple[str, str, str]]:
    """``(source, dest, trigger)`` of each transition of ``machine``: compact to compare."""
    return [(t.source, t.dest, t.trigger) for t in transitions_of(effects, machine, scope=scope)]


def assert_one(effects: Sequence[Effect], cls: type[E]) -> E:
    """Exactly one effect of ``cls``; return it."""
    found = of_type(effects, cls)
    assert len(found) == 1, f"expected exactly one {cls.__name__}, got {found!r} in {effects!r}"
    return found[0]


def assert_transition(
    effects: Sequence[Effect],
    machine: str,
    source: str,
    dest: str,
    trigger: str,
    *,
    scope: Any = ANY,
    at: float | None = None,
) -> Transitioned:
    """Exactly one matching transition of ``machine`` (optionally at time ``at``); return it."""
    found = [
        t
        for t in transitions_of(effects, machine, scope=scope)
        if (t.source, t.dest, t.trigger) == (source, dest, trigger)
    ]
    assert len(found) == 1, (
        f"expected one {machine} {source}->{dest} ({trigger}), got {found!r} in {effects!r}"
    )
    if at is not None:
        assert found[0].at == at, f"{machine} {trigger} at {found[0].at!r}, expected {at!r}"
    return found[0]


def deadline(layer: ReliabilityLayer) -> float | None:
    """`next_deadline()`, with an infinite answer read as "none" (the documented ``None``)."""
    due = layer.next_deadline()
    return None if due is None or math.isinf(due) else due


def run_timers_until(layer: ReliabilityLayer, clock: ManualClock, until: float) -> list[Effect]:
    """Act as a timely shell: tick at every deadline up to ``until``, then move the clock there.

    Returns every effect, in order. The clock never passes a deadline without a tick at it.
    """
    effects: list[Effect] = []
    while (due := deadline(layer)) is not None and due <= until:
        if due > clock():
            clock.jump_to(due)
        effects += layer.tick()
    if until > clock():
        clock.jump_to(until)
    return effects


def mark(layer: ReliabilityLayer, *symbols: str) -> list[Effect]:
    """A fresh mark for each symbol, now."""
    effects: list[Effect] = []
    for symbol in symbols:
        effects += layer.observe(ev.MarkUpdate(symbol))
    return effects


def buy(symbol: str, quantity: str | int = 1) -> OrderIntent:
    """A BUY intent for ``quantity`` (written as text or int, stored as `Decimal`)."""
    return OrderIntent(symbol, Side.BUY, Decimal(quantity))


def sell(symbol: str, quantity: str | int = 1) -> OrderIntent:
    """A SELL intent for ``quantity`` (written as text or int, stored as `Decimal`)."""
    return OrderIntent(symbol, Side.SELL, Decimal(quantity))


def status_of(layer: ReliabilityLayer) -> dict[str, Any]:
    """A deep copy of `status()`, to compare before and after a call."""
    return copy.deepcopy(layer.status())


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than ``seconds``.

    Uses SIGALRM, so it interrupts a pure-Python infinite loop in the main thread.
    """

    def _expired(signum: int, frame: object) -> None:
        raise AssertionError(f"did not finish within {seconds}s (infinite loop?)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
