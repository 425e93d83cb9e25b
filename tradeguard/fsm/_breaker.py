"""Circuit breaker per endpoint category (DESIGN §2.3).

CLOSED counts consecutive failures (5xx, 429, timeouts, connection errors; a 4xx client error
shows the API is up and counts as a success). At the threshold it trips OPEN and refuses every
call; an eager timer moves it to HALF_OPEN after the recovery timeout. HALF_OPEN admits at most
``success_threshold`` probe calls at a time: that many successes close it, one failure re-opens
it. The shell asks `admit()` before each call so refused calls never touch the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

from tradeguard.fsm._machines import BREAKER
from tradeguard.fsm._states import BreakerState
from tradeguard.fsm._timers import Timer, Timers
from tradeguard.fsm.effects import Effect
from tradeguard.fsm.events import ApiCall

__all__ = ["CircuitBreaker"]

_CLOSED, _OPEN, _HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# Told whenever the breaker starts or stops being OPEN (the api_health guard listens).
OpenListener = Callable[[str, bool, float], list[Effect]]
# Told when the breaker closes: calls in its category get through again.
CloseListener = Callable[[float], list[Effect]]


def _nothing(at: float) -> list[Effect]:
    return []


@final
class CircuitBreaker:
    """One endpoint category's breaker: a model of `BREAKER`."""

    __slots__ = (
        "_on_close",
        "_on_open",
        "_timer",
        "_timers",
        "category",
        "failure_threshold",
        "failures",
        "probes_in_flight",
        "recovery_timeout",
        "state",
        "success_threshold",
        "successes",
    )

    def __init__(
        self,
        category: str,
        timers: Timers,
        on_open: OpenListener,
        *,
        failure_threshold: int,
        recovery_timeout: float,
        success_threshold: int,
        on_close: CloseListener = _nothing,
    ) -> None:
        self.category = category
        self.state = _CLOSED
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.success_threshold = success_threshold
        self.failures = 0
        self.successes = 0
        self.probes_in_flight = 0
        self._timers = timers
        self._on_open = on_open
        self._on_close = on_close
        self._timer = Timer(self._recovery_due)

    @property
    def machine(self) -> str:
        """The name its transitions are recorded under."""
        return f"breaker:{self.category}"

    @property
    def reopens_at(self) -> float | None:
        """When an OPEN breaker goes HALF_OPEN."""
        return self._timer.due

    def admit(self) -> bool:
        """Whether a call may go out now; in HALF_OPEN, a True reserves a probe slot."""
        if self.state is _CLOSED:
            return True
        if self.state is _OPEN or self.probes_in_flight >= self.success_threshold:
            return False
        self.probes_in_flight += 1
        return True

    def abandon(self) -> None:
        """A HALF_OPEN probe was given up before its outcome was known (its caller was
        cancelled): free its slot without counting a failure; nothing else changes."""
        if self.state is _HALF and self.probes_in_flight:
            self.probes_in_flight -= 1

    def observe(self, call: ApiCall, at: float) -> list[Effect]:
        """Count one finished call in this category."""
        failed = call.counts_as_error
        state = self.state
        if state is _CLOSED:
            if not failed:
                self.failures = 0
                return []
            self.failures += 1
            return self._fire("trip", at) if self.failures >= self.failure_threshold else []
        if state is _OPEN:
            return []  # a call made despite the breaker; only the timer ends OPEN
        if self.probes_in_flight:
            self.probes_in_flight -= 1
        if failed:
            return self._fire("trip", at)
        self.successes += 1
        return self._fire("close", at) if self.successes >= self.success_threshold else []

    def _recovery_due(self, at: float) -> list[Effect]:
        return self._fire("expire", at) if self.state is _OPEN else []

    def reset(self, at: float) -> list[Effect]:
        """Operator reset: CLOSED with nothing counted."""
        return self._fire("reset", at)

    def _fire(self, trigger: str, at: float) -> list[Effect]:
        source = self.state
        record = BREAKER.transition(self, trigger, self.machine, None, at)
        self.failures = self.successes = self.probes_in_flight = 0
        if self.state is _OPEN:
            self._timers.arm(self._timer, at + self.recovery_timeout)
        else:
            Timers.disarm(self._timer)
        effects: list[Effect] = [record]
        if (source is _OPEN) != (self.state is _OPEN):
            effects += self._on_open(self.category, self.state is _OPEN, at)
        if self.state is _CLOSED:
            effects += self._on_close(at)
        return effects

    def load(self, saved: dict[str, Any], to_mono: Callable[[float], float]) -> None:
        """Restore a saved state; an OPEN breaker keeps its remaining recovery time."""
        self.state = BreakerState[saved["state"]]
        if self.state is _OPEN:
            reopens = saved.get("reopens_at")
            due = to_mono(reopens) if reopens is not None else to_mono(0.0) + self.recovery_timeout
            self._timers.arm(self._timer, due)

    def status(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "state": self.state.name,
            "consecutive_failures": self.failures,
            "half_open_successes": self.successes,
            "probes_in_flight": self.probes_in_flight,
        }
