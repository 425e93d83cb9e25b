"""The core's deadline heap (`Timers`) and the tests' clock (`ManualClock`).

DESIGN §3: a deadline takes effect at its deadline; the core never sleeps, it says when
`tick()` is next due. STYLE §2: `ManualClock.advance()` rejects negatives and NaN.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeguard.fsm._timers import Timer, Timers
from tradeguard.fsm.effects import Effect
from tradeguard.testing import ManualClock


class Recorder:
    """A timer callback that remembers when it fired."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fired: list[float] = []

    def __call__(self, at: float) -> list[Effect]:
        self.fired.append(at)
        return []


def _timer(name: str = "t") -> tuple[Timer, Recorder]:
    recorder = Recorder(name)
    return Timer(recorder), recorder


def _drain(timers: Timers, now: float) -> list[tuple[Timer, float]]:
    popped = []
    while (p := timers.pop_due(now)) is not None:
        popped.append(p)
    return popped


# ---------------------------------------------------------------------------- Timers


def test_an_empty_heap_has_no_deadline() -> None:
    timers = Timers()
    assert timers.next_due() is None
    assert timers.pop_due(math.inf) is None
    assert len(timers) == 0


def test_timers_come_out_in_deadline_order() -> None:
    timers = Timers()
    late, _ = _timer("late")
    early, _ = _timer("early")
    middle, _ = _timer("middle")
    timers.arm(late, 5.0)
    timers.arm(early, 1.0)
    timers.arm(middle, 3.0)
    assert timers.next_due() == 1.0
    assert _drain(timers, 10.0) == [(early, 1.0), (middle, 3.0), (late, 5.0)]
    assert timers.next_due() is None


def test_pop_due_returns_only_timers_due_at_or_before_now() -> None:
    timers = Timers()
    first, _ = _timer()
    second, _ = _timer()
    timers.arm(first, 2.0)
    timers.arm(second, 2.5)
    assert timers.pop_due(1.999) is None
    assert first.due == 2.0, "a timer not yet due stays armed"
    assert timers.pop_due(2.0) == (first, 2.0), "a deadline takes effect at its deadline"
    assert timers.pop_due(2.0) is None
    assert timers.next_due() == 2.5


def test_pop_due_disarms_the_timer_and_hands_back_its_deadline() -> None:
    timers = Timers()
    timer, recorder = _timer()
    timers.arm(timer, 4.0)
    popped = timers.pop_due(100.0)
    assert popped is not None
    got, at = popped
    assert got is timer
    assert at == 4.0, "the deadline, not the time of the pop"
    assert timer.due is None
    assert timers.next_due() is None
    assert len(timers) == 0
    got.fire(at)
    assert recorder.fired == [4.0]


def test_a_popped_timer_can_be_armed_again() -> None:
    timers = Timers()
    timer, _ = _timer()
    timers.arm(timer, 1.0)
    assert timers.pop_due(1.0) == (timer, 1.0)
    timers.arm(timer, 7.0)
    assert timer.due == 7.0
    assert timers.next_due() == 7.0
    assert timers.pop_due(7.0) == (timer, 7.0)


def test_moving_a_deadline_later_costs_no_new_heap_entry() -> None:
    timers = Timers()
    timer, _ = _timer()
    timers.arm(timer, 1.0)
    assert len(timers) == 1
    for when in (2.0, 5.0, 9.0, 30.0):
        timers.arm(timer, when)
        assert len(timers) == 1
        assert timer.due == when
    assert timers.next_due() == 30.0, "the stale early entry is re-queued at the real deadline"
    assert len(timers) == 1
    assert timers.pop_due(29.0) is None
    assert timers.pop_due(30.0) == (timer, 30.0)
    assert len(timers) == 0


def test_moving_a_deadline_later_never_fires_at_the_old_deadline() -> None:
    timers = Timers()
    timer, _ = _timer()
    other, _ = _timer()
    timers.arm(timer, 1.0)
    timers.arm(other, 3.0)
    timers.arm(timer, 5.0)
    assert _drain(timers, 4.0) == [(other, 3.0)]
    assert timer.due == 5.0
    assert _drain(timers, 5.0) == [(timer, 5.0)]


def test_moving_a_deadline_earlier_supersedes_the_old_entry() -> None:
    timers = Timers()
    timer, _ = _timer()
    timers.arm(timer, 5.0)
    timers.arm(timer, 1.0)
    assert len(timers) == 2, "an earlier deadline needs its own entry"
    assert timer.due == 1.0
    assert timers.next_due() == 1.0
    assert timers.pop_due(1.0) == (timer, 1.0)
    # The superseded entry at 5.0 must not fire the timer a second time.
    assert timers.pop_due(100.0) is None
    assert timers.next_due() is None
    assert len(timers) == 0


def test_later_then_earlier_again_keeps_only_the_last_deadline() -> None:
    timers = Timers()
    timer, _ = _timer()
    timers.arm(timer, 5.0)
    timers.arm(timer, 10.0)
    timers.arm(timer, 7.0)
    assert timers.next_due() == 7.0
    timers.arm(timer, 3.0)
    assert _drain(timers, 100.0) == [(timer, 3.0)]


def test_disarm_drops_the_timer() -> None:
    timers = Timers()
    timer, recorder = _timer()
    timers.arm(timer, 2.0)
    Timers.disarm(timer)
    assert timer.due is None
    assert timers.next_due() is None
    assert timers.pop_due(100.0) is None
    assert len(timers) == 0, "the dropped entry is cleaned up when it surfaces"
    assert recorder.fired == []


def test_disarm_leaves_other_timers_alone() -> None:
    timers = Timers()
    dropped, _ = _timer()
    kept, _ = _timer()
    timers.arm(dropped, 1.0)
    timers.arm(kept, 2.0)
    Timers.disarm(dropped)
    assert timers.next_due() == 2.0
    assert _drain(timers, 10.0) == [(kept, 2.0)]


def test_a_disarmed_timer_armed_again_fires_once_at_its_new_deadline() -> None:
    timers = Timers()
    timer, _ = _timer()
    timers.arm(timer, 2.0)
    Timers.disarm(timer)
    timers.arm(timer, 6.0)
    assert timers.next_due() == 6.0
    assert _drain(timers, 100.0) == [(timer, 6.0)]
    timers.arm(timer, 8.0)
    Timers.disarm(timer)
    timers.arm(timer, 1.0)
    assert _drain(timers, 100.0) == [(timer, 1.0)]


def test_disarming_a_timer_that_was_never_armed_is_harmless() -> None:
    timer, _ = _timer()
    Timers.disarm(timer)
    assert timer.due is None


@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
        ),
        max_size=40,
    ),
    st.floats(0, 120, allow_nan=False),
)
def test_pop_due_agrees_with_the_last_arming_of_every_timer(
    ops: list[tuple[int, float | None]], now: float
) -> None:
    """Any sequence of arm/disarm: exactly the timers last armed at <= now come out, once
    each, in deadline order, with their last deadline."""
    timers = Timers()
    pool = [_timer(str(i))[0] for i in range(5)]
    last: dict[int, float | None] = {}
    for index, when in ops:
        if when is None:
            Timers.disarm(pool[index])
        else:
            timers.arm(pool[index], when)
        last[index] = when
    armed = {i: w for i, w in last.items() if w is not None}
    expected_next = min(armed.values(), default=None)
    assert timers.next_due() == expected_next
    popped = _drain(timers, now)
    assert [at for _, at in popped] == sorted(at for _, at in popped)
    assert sorted((pool.index(t), at) for t, at in popped) == sorted(
        (i, w) for i, w in armed.items() if w <= now
    )
    remaining = {i: w for i, w in armed.items() if w > now}
    assert timers.next_due() == min(remaining.values(), default=None)
    for i, timer in enumerate(pool):
        assert timer.due == remaining.get(i)


# ----------------------------------------------------------------------- ManualClock


def test_the_clock_starts_where_told_and_moves_only_when_told() -> None:
    clock = ManualClock(5.0)
    assert clock() == 5.0
    assert clock() == 5.0
    assert clock.advance(2.5) == 7.5
    assert clock() == 7.5
    assert clock.advance(0) == 7.5


def test_the_wall_clock_moves_with_the_monotonic_one() -> None:
    clock = ManualClock(0.0, wall_offset=1000.0)
    assert clock.wall() == 1000.0
    clock.advance(30.0)
    assert clock.wall() == 1030.0


@pytest.mark.parametrize("seconds", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_advance_refuses_negative_nan_and_infinite_seconds(seconds: float) -> None:
    clock = ManualClock(10.0)
    with pytest.raises(ValueError, match=r"ManualClock\.advance"):
        clock.advance(seconds)
    assert clock() == 10.0


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf])
def test_a_clock_cannot_start_at_a_non_finite_time(start: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        ManualClock(start)


def test_jump_to_moves_forward_to_the_time_given() -> None:
    clock = ManualClock(1.0)
    assert clock.jump_to(4.0) == 4.0
    assert clock() == 4.0
    assert clock.jump_to(4.0) == 4.0, "jumping to now is allowed"


@pytest.mark.parametrize("when", [3.999, 0.0, -100.0, math.nan, math.inf])
def test_jump_to_never_goes_backwards(when: float) -> None:
    clock = ManualClock(4.0)
    with pytest.raises(ValueError):
        clock.jump_to(when)
    assert clock() == 4.0


@given(st.floats(0, 1e9, allow_nan=False), st.floats(0, 1e9, allow_nan=False))
def test_jump_to_lands_exactly_on_a_deadline(start: float, distance: float) -> None:
    """A test jumps to a timer's deadline and expects the timer to be due there."""
    when = start + distance
    clock = ManualClock(start)
    assert clock.jump_to(when) == when
    assert clock() == when


def test_jump_to_lands_exactly_on_a_deadline_from_a_negative_start() -> None:
    """`ManualClock` accepts any finite start, so `jump_to` must still arrive at ``when``
    (``-1.0 + (1e-20 - -1.0)`` rounds to ``0.0``: adding the difference is not enough)."""
    clock = ManualClock(-1.0)
    assert clock.jump_to(1e-20) == 1e-20
    assert clock() == 1e-20
