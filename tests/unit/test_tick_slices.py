"""`tick(max_timers=n)`: a shell bounds the work of one call and keeps every guarantee.

Issue 15: 1,000 marks going stale together made one `tick()` hold the event loop for 11-30 ms.
The runtime now applies due timers in slices; these tests pin down that a slice changes
nothing about what happens, only how much of it one call does.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradeguard import OrderIntent, ReliabilityLayer, Settings, Side, TradingMode
from tradeguard.errors import InvalidObservation
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Effect, ModeChanged
from tradeguard.testing import ManualClock

SYMBOLS = [f"S{i:03d}-USD" for i in range(250)]
STALE_AFTER = 5.0


def _all_fresh() -> tuple[ReliabilityLayer, ManualClock]:
    clock = ManualClock()
    settings = Settings(mark_staleness_threshold_seconds=STALE_AFTER)
    layer = ReliabilityLayer(settings, clock=clock, wall_clock=clock.wall)
    for symbol in SYMBOLS:
        layer.observe(ev.MarkUpdate(symbol))
    clock.advance(STALE_AFTER + 1)  # every mark is stale now
    return layer, clock


def _moved(effects: list[Effect]) -> set[str | None]:
    return {e.scope for e in effects if isinstance(e, ModeChanged)}


def test_slices_add_up_to_one_whole_tick() -> None:
    whole_layer, _ = _all_fresh()
    whole = whole_layer.tick()
    sliced_layer, _ = _all_fresh()
    sliced: list[Effect] = []
    calls = 0
    while (part := sliced_layer.tick(max_timers=40)) or calls == 0:
        sliced += part
        calls += 1
    assert sliced == whole
    assert calls == 7  # 250 timers, 40 a call
    assert sliced_layer.snapshot() == whole_layer.snapshot()


def test_a_slice_applies_at_most_that_many_timers_and_leaves_the_rest_due() -> None:
    layer, clock = _all_fresh()
    effects = layer.tick(max_timers=100)
    assert len(_moved(effects)) == 100
    deadline = layer.next_deadline()
    assert deadline is not None and deadline <= clock()  # the shell is told to call again
    assert sum(layer.mode(s) is TradingMode.ALLOW for s in SYMBOLS) == 0  # reads catch up


def test_a_decision_between_slices_sees_every_stale_mark() -> None:
    layer, _ = _all_fresh()
    layer.tick(max_timers=1)
    # The last symbol's timer was not applied by the slice; decide() applies it first.
    decision = layer.decide(OrderIntent(SYMBOLS[-1], Side.BUY, Decimal("1")), Decimal("0"))
    assert not decision.allowed
    assert [r.guard for r in decision.reasons] == ["mark_staleness"]
    # ... and the effects of what it applied are handed over by the next call, not lost.
    rest = layer.tick(max_timers=1)
    assert len(_moved(rest)) == len(SYMBOLS) - 1
    assert layer.tick(max_timers=1) == []


def test_an_observation_between_slices_comes_after_the_due_timers() -> None:
    layer, _ = _all_fresh()
    layer.tick(max_timers=10)
    effects = layer.observe(ev.MarkUpdate(SYMBOLS[0]))
    # Every remaining stale mark is applied first, then the fresh mark starts a cooldown.
    assert len(_moved(effects)) == len(SYMBOLS) - 10
    assert layer.guard("mark_staleness", SYMBOLS[0]).state.name == "COOLDOWN"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_max_timers_must_be_a_whole_number_of_at_least_one(bad: object) -> None:
    layer, _ = _all_fresh()
    if bad is None:
        assert layer.tick(max_timers=None)  # None: no limit
        return
    with pytest.raises(InvalidObservation, match="max_timers"):
        layer.tick(max_timers=bad)  # type: ignore[arg-type]
    assert len(_moved(layer.tick())) == len(SYMBOLS)  # nothing was applied by the bad call
