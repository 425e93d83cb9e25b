"""Every machine object against a small hand-written reference model (DESIGN §2.1-§2.3).

Each `RuleBasedStateMachine` drives one guard, breaker or feed with a `ManualClock` and a
`Timers` heap, firing due timers the way `ReliabilityLayer._advance` does, and after every step
compares the effects, listener calls, state, counters and next deadline with its reference.
When two deadlines fall on the same instant either order is accepted (the design does not pick
one), so the reference explores both.

After every step, every `Transitioned` effect must name a (source, trigger, dest) that the
machine's definition declares.

The plain tests at the end pin down, one by one, the places where the code disagrees with
DESIGN.md or its own docstrings.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tradeguard.errors import InvalidTransition
from tradeguard.fsm._backoff import BackoffPolicy
from tradeguard.fsm._breaker import CircuitBreaker
from tradeguard.fsm._definition import MachineDefinition
from tradeguard.fsm._feed import Feed
from tradeguard.fsm._guards import (
    ApiHealthGuard,
    CountingGuard,
    MarkStalenessGuard,
    PreviewGuard,
    ReconciliationGuard,
    WebsocketGuard,
)
from tradeguard.fsm._machines import BREAKER, FEED, GUARD, MARK, PREVIEW
from tradeguard.fsm._states import BreakerState, FeedState, GuardState, TradingMode
from tradeguard.fsm._timers import Timers
from tradeguard.fsm.effects import (
    Alert,
    CancelOpenOrders,
    CancelOrders,
    CloseConnection,
    DisablePreview,
    Effect,
    MaxAttemptsExceeded,
    ModeChanged,
    Reconnect,
    Transitioned,
)
from tradeguard.fsm.events import ApiCall
from tradeguard.testing import ManualClock

STATEFUL = settings(max_examples=75, stateful_step_count=40, deadline=None, derandomize=False)

Norm = tuple[Any, ...]
Call = tuple[str, bool, float]

# --------------------------------------------------------------------------- helpers


def norm(effect: Effect) -> Norm:
    """An effect as a plain tuple of the fields the references predict."""
    match effect:
        case Transitioned():
            e = effect
            return ("T", e.machine, e.scope, e.source, e.dest, e.trigger, e.at)
        case Alert():
            return ("Alert", effect.severity)
        case CancelOpenOrders():
            return ("CancelOpenOrders",)
        case CancelOrders():
            return ("CancelOrders", effect.order_ids)
        case DisablePreview():
            return ("DisablePreview",)
        case MaxAttemptsExceeded():
            return ("MaxAttemptsExceeded", effect.feed, effect.pause_seconds)
        case Reconnect():
            return ("Reconnect", effect.feed, effect.attempt)
        case CloseConnection():
            return ("CloseConnection", effect.feed)
        case ModeChanged():
            return ("ModeChanged", effect.scope, effect.source, effect.dest)
    raise AssertionError(f"unexpected effect {effect!r}")


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Element-wise equality; numbers compared with a tiny tolerance, tuples recursively."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if not same(x, y):
                return False
        elif (
            isinstance(x, int | float)
            and isinstance(y, int | float)
            and not isinstance(x, bool)
            and not isinstance(y, bool)
        ):
            if not close(float(x), float(y)):
                return False
        elif x != y:
            return False
    return True


def check_declared(definition: MachineDefinition, effects: Sequence[Effect]) -> None:
    """Every recorded transition is a row of the machine's definition."""
    for effect in effects:
        if isinstance(effect, Transitioned):
            source = definition.states[effect.source]
            dests = [spec.dest.name for spec in definition.targets(source, effect.trigger)]
            assert effect.dest in dests, (
                f"{effect} is not declared by the {definition.name!r} definition "
                f"(declared from {effect.source} on {effect.trigger!r}: {dests})"
            )


def run_due(timers: Timers, now: float) -> list[Effect]:
    """Fire every timer due by ``now`` at its own deadline, as `ReliabilityLayer._advance`."""
    effects: list[Effect] = []
    while (popped := timers.pop_due(now)) is not None:
        timer, at = popped
        effects += timer.fire(at)
    return effects


class Reference:
    """A hand-written model. Steps append the effects they predict to ``out``."""

    def __init__(self, machine: str, scope: str | None) -> None:
        self.machine = machine
        self.scope = scope
        self.out: list[Norm] = []
        self.calls: list[Call] = []

    def deadlines(self) -> dict[str, float]:
        return {}

    def on_deadline(self, name: str, at: float) -> None:
        raise AssertionError(f"no deadline {name}")

    def moved(self, source: str, dest: str, trigger: str, at: float) -> None:
        self.out.append(("T", self.machine, self.scope, source, dest, trigger, at))

    def take(self) -> list[Norm]:
        out, self.out = self.out, []
        return out


def timed_outcomes(ref: Reference, now: float) -> list[Reference]:
    """Every way the reference can play its deadlines up to ``now``, earliest first;
    deadlines on the same instant are tried in every order."""
    due = {name: when for name, when in ref.deadlines().items() if when <= now}
    if not due:
        return [ref]
    first = min(due.values())
    names = sorted(name for name, when in due.items() if when == first)
    outcomes = []
    for name in names:
        branch = copy.deepcopy(ref) if len(names) > 1 else ref
        branch.on_deadline(name, first)
        outcomes += timed_outcomes(branch, now)
    return outcomes


times = st.one_of(
    st.integers(0, 40).map(float),
    st.floats(0, 150, allow_nan=False, allow_infinity=False),
)


class ModelMachine(RuleBasedStateMachine):
    """What every machine test shares: clock, timers, listener, and the comparisons."""

    definition: ClassVar[MachineDefinition]
    ref: Any

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.timers = Timers()
        self.calls: list[Call] = []

    def listener(self, name: str, flag: bool, at: float) -> list[Effect]:
        self.calls.append((name, flag, at))
        return []

    def now(self) -> float:
        return self.clock()

    def expect(self, effects: list[Effect]) -> None:
        """Compare what a direct call returned with what the reference predicted."""
        assert isinstance(effects, list), "mutating methods return a list, never None"
        check_declared(self.definition, effects)
        actual = [norm(e) for e in effects]
        expected = self.ref.take()
        assert same(actual, expected), f"effects {actual} != reference {expected}"
        assert same(self.calls, self.ref.calls), f"listener {self.calls} != {self.ref.calls}"

    def pass_time(self) -> list[Effect]:
        """Fire the due timers and pick the reference outcome that matches."""
        now = self.now()
        effects = run_due(self.timers, now)
        check_declared(self.definition, effects)
        actual = [norm(e) for e in effects]
        outcomes = timed_outcomes(self.ref, now)
        for outcome in outcomes:
            if same(actual, outcome.out) and same(self.calls, outcome.calls):
                outcome.take()
                self.ref = outcome
                return effects
        raise AssertionError(
            f"at {now}: timers gave {actual} (listener {self.calls}); "
            f"reference expected one of {[o.out for o in outcomes]} "
            f"(listener {[o.calls for o in outcomes]})"
        )

    @rule(seconds=times)
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.pass_time()

    @rule()
    def time_reaches_the_next_deadline(self) -> None:
        due = self.timers.next_due()
        if due is None:
            return
        assert due > self.now(), "a due timer was left unfired"
        self.clock.jump_to(due)
        self.pass_time()

    @invariant()
    def next_deadline_matches_the_reference(self) -> None:
        expected = min(self.ref.deadlines().values(), default=None)
        assert close(self.timers.next_due(), expected), (
            f"next deadline {self.timers.next_due()} != reference {expected}"
        )


# ============================================================ DESIGN §2.1: the guards

H, T, C = "HEALTHY", "TRIPPED", "COOLDOWN"
N = "NO_MARK"


class GuardRef(Reference):
    """HEALTHY -> TRIPPED -> COOLDOWN -> HEALTHY with an eager cooldown deadline."""

    def __init__(self, name: str, scope: str | None, cooldown: float) -> None:
        super().__init__(name, scope)
        self.state = H
        self.cooldown = cooldown
        self.cooldown_at: float | None = None

    def go(self, dest: str, trigger: str, at: float) -> None:
        self.moved(self.state, dest, trigger, at)
        self.state = dest
        self.cooldown_at = at + self.cooldown if dest == C else None

    def deadlines(self) -> dict[str, float]:
        return {} if self.cooldown_at is None else {"cooldown": self.cooldown_at}

    def on_deadline(self, name: str, at: float) -> None:
        assert name == "cooldown" and self.state == C
        self.go(H, "expire", at)

    def reset(self, at: float) -> None:
        self.go(H, "reset", at)


class GuardMachine(ModelMachine):
    """What every guard's model shares: the operator reset rule and the state invariant."""

    definition = GUARD
    guard: Any

    def reset_is_modelled(self) -> bool:
        """Whether the reference models a reset now (some resets are tests of their own)."""
        return True

    def after_reset(self) -> None:
        """Forget what a reset makes the guard forget (before the effects are compared)."""

    @rule()
    def reset(self) -> None:
        if not self.reset_is_modelled():
            return
        effects = self.guard.reset(self.now())
        self.ref.reset(self.now())
        self.after_reset()
        self.expect(effects)

    @invariant()
    def guard_matches_the_reference(self) -> None:
        assert self.guard.state is GuardState[self.ref.state]
        assert self.guard.restricting == (
            self.ref.state != H and self.guard.restriction is not TradingMode.ALLOW
        )
        assert close(self.guard.lifts_at, self.ref.cooldown_at if self.ref.state == C else None)


# ---------------------------------------------- counting guards: slippage, validation, broker


class CountingRef(GuardRef):
    def __init__(self, scope: str | None, threshold: int, cooldown: float, at_once: bool) -> None:
        super().__init__("slippage", scope, cooldown)
        self.threshold = threshold
        self.at_once = at_once
        self.failures = 0

    def observe(self, ok: bool, at: float) -> None:
        if ok:
            self.failures = 0
            if self.state == T:
                self.go(C, "recover", at)
            return
        self.failures += 1
        if self.state == T or self.failures < self.threshold:
            return
        self.go(T, "trip", at)
        self.out.append(("Alert", "critical"))
        if self.at_once:
            self.failures = 0
            self.go(C, "recover", at)

    def reset(self, at: float) -> None:
        self.failures = 0
        super().reset(at)


class CountingGuardMachine(GuardMachine):
    @initialize(
        threshold=st.integers(1, 4),
        cooldown=st.integers(1, 90).map(float),
        at_once=st.booleans(),
        scope=st.sampled_from([None, "BTC-USD"]),
    )
    def build(self, threshold: int, cooldown: float, at_once: bool, scope: str | None) -> None:
        self.guard = CountingGuard(
            "slippage",
            scope,
            self.timers,
            threshold=threshold,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown,
            recovers_at_once=at_once,
            alert_title="slippage guard failing",
        )
        self.ref = CountingRef(scope, threshold, cooldown, at_once)

    @rule(ok=st.booleans())
    def observe(self, ok: bool) -> None:
        effects = self.guard.observe(ok, self.now())
        self.ref.observe(ok, self.now())
        self.expect(effects)

    @invariant()
    def failures_match(self) -> None:
        assert self.guard.failures == self.ref.failures
        if self.ref.at_once:
            assert self.guard.state is not GuardState.TRIPPED, "recovers at once: never rests"


TestCountingGuard = CountingGuardMachine.TestCase
TestCountingGuard.settings = STATEFUL


# ------------------------------------------------------------------------- reconciliation


class ReconciliationRef(GuardRef):
    def __init__(self, threshold: int, cooldown: float) -> None:
        super().__init__("reconciliation", None, cooldown)
        self.threshold = threshold
        self.dirty = 0
        self.asked: set[str] = set()

    def observe(self, unknown: tuple[str, ...], at: float) -> None:
        if not unknown:
            self.dirty = 0
            self.asked.clear()
            if self.state == T:
                self.go(C, "recover", at)
            return
        self.dirty += 1
        if self.state == T:
            fresh = tuple(i for i in unknown if i not in self.asked)
            if fresh:
                self.asked.update(fresh)
                self.out.append(("CancelOrders", fresh))
            return
        if self.dirty < self.threshold:
            return
        self.go(T, "trip", at)
        self.asked.update(unknown)
        self.out += [("CancelOrders", unknown), ("Alert", "critical")]

    def reset(self, at: float) -> None:
        self.dirty = 0
        self.asked.clear()
        super().reset(at)


class ReconciliationMachine(GuardMachine):
    @initialize(threshold=st.integers(1, 4), cooldown=st.integers(1, 90).map(float))
    def build(self, threshold: int, cooldown: float) -> None:
        self.guard = ReconciliationGuard(
            None, self.timers, threshold=threshold, cooldown_seconds=cooldown
        )
        self.ref = ReconciliationRef(threshold, cooldown)
        self.cancelled: set[str] = set()

    @rule(ids=st.sets(st.sampled_from(["o1", "o2", "o3", "o4", "o5"]), max_size=3))
    def audit(self, ids: set[str]) -> None:
        unknown = tuple(sorted(ids))
        effects = self.guard.observe(unknown, self.now())
        self.ref.observe(unknown, self.now())
        self.expect(effects)
        if not unknown:
            self.cancelled.clear()
        for effect in effects:
            if isinstance(effect, CancelOrders):
                assert not self.cancelled & set(effect.order_ids), "an id asked for twice"
                self.cancelled.update(effect.order_ids)

    def after_reset(self) -> None:
        self.cancelled.clear()

    @invariant()
    def audits_match(self) -> None:
        assert self.guard.dirty_audits == self.ref.dirty


TestReconciliationGuard = ReconciliationMachine.TestCase
TestReconciliationGuard.settings = STATEFUL


# -------------------------------------------------------------------------------- preview


class PreviewRef(GuardRef):
    def __init__(self, threshold: int) -> None:
        super().__init__("preview", None, 0.0)
        self.threshold = threshold
        self.failures = 0

    def observe(self, ok: bool, at: float) -> None:
        if self.state == T:
            return
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.go(T, "trip", at)
            self.out += [("DisablePreview",), ("Alert", "warning")]

    def reset(self, at: float) -> None:
        self.failures = 0
        super().reset(at)


class PreviewMachine(GuardMachine):
    definition = PREVIEW

    @initialize(threshold=st.integers(1, 5))
    def build(self, threshold: int) -> None:
        self.guard = PreviewGuard(self.timers, threshold=threshold)
        self.ref = PreviewRef(threshold)

    @rule(ok=st.booleans())
    def observe(self, ok: bool) -> None:
        effects = self.guard.observe(ok, self.now())
        self.ref.observe(ok, self.now())
        self.expect(effects)

    @invariant()
    def preview_matches(self) -> None:
        assert self.guard.failures == self.ref.failures
        assert self.guard.enabled == (self.ref.state == H)
        assert self.guard.state is not GuardState.COOLDOWN
        assert not self.guard.restricting, "a disabled preview restricts no trading"
        assert self.timers.next_due() is None, "preview never recovers by itself"


TestPreviewGuard = PreviewMachine.TestCase
TestPreviewGuard.settings = STATEFUL


# ------------------------------------------------------------------------- mark staleness


class MarkRef(GuardRef):
    def __init__(self, threshold: float, cooldown: float) -> None:
        super().__init__("mark_staleness", "BTC-USD", cooldown)
        self.state = N  # never traded blind: no mark yet restricts like a stale one
        self.threshold = threshold
        self.last_mark: float | None = None
        self.stale_at: float | None = None

    def deadlines(self) -> dict[str, float]:
        found = super().deadlines()
        if self.stale_at is not None:
            found["stale"] = self.stale_at
        return found

    def on_deadline(self, name: str, at: float) -> None:
        if name != "stale":
            super().on_deadline(name, at)
            return
        self.stale_at = None
        if self.state != T:
            self.go(T, "trip", at)
            self.out.append(("Alert", "warning"))

    def mark(self, at: float) -> None:
        self.last_mark = at
        self.stale_at = at + self.threshold
        if self.state == N:
            self.go(H, "mark", at)
        elif self.state == T:
            self.go(C, "recover", at)

    def reset(self, at: float) -> None:
        # A reset cannot invent a mark: without one the guard goes back to NO_MARK.
        self.go(H if self.last_mark is not None else N, "reset", at)


class MarkStalenessMachine(GuardMachine):
    definition = MARK

    @initialize(
        threshold=st.integers(1, 60).map(float),
        cooldown=st.integers(1, 120).map(float),
        reduce_only=st.booleans(),
    )
    def build(self, threshold: float, cooldown: float, reduce_only: bool) -> None:
        restriction = TradingMode.REDUCE_ONLY if reduce_only else TradingMode.PAUSED
        self.guard = MarkStalenessGuard(
            "BTC-USD",
            self.timers,
            threshold=threshold,
            restriction=restriction,
            cooldown_seconds=cooldown,
        )
        self.ref = MarkRef(threshold, cooldown)

    @rule()
    def mark(self) -> None:
        effects = self.guard.observe(self.now())
        self.ref.mark(self.now())
        self.expect(effects)

    def reset_is_modelled(self) -> bool:
        # A reset while the mark is stale is its own test below
        # (test_a_mark_staleness_reset_while_stale_restricts_again).
        return self.ref.state != T

    @invariant()
    def staleness_matches(self) -> None:
        assert self.guard.last_mark == self.ref.last_mark
        if self.ref.last_mark is None:
            assert self.guard.state is GuardState.NO_MARK, "no mark yet is this guard's state"
            assert self.guard.restricting
        elif self.guard.state is not GuardState.TRIPPED:
            # Tripped at the instant the mark went stale, not later.
            assert self.now() < self.ref.last_mark + self.ref.threshold


TestMarkStalenessGuard = MarkStalenessMachine.TestCase
TestMarkStalenessGuard.settings = STATEFUL


# ----------------------------------------------------------------------------- api health

CALL_KINDS = ("ok", "5xx", "429", "4xx", "timeout")
COUNTED_ERRORS = frozenset({"5xx", "429", "timeout"})  # DESIGN §2.1: never a 4xx


def api_call(category: str, kind: str) -> ApiCall:
    match kind:
        case "ok":
            return ApiCall(category, True, 200)
        case "5xx":
            return ApiCall(category, False, 503)
        case "429":
            return ApiCall(category, False, 429)
        case "4xx":
            return ApiCall(category, False, 404)
        case "timeout":
            return ApiCall(category, False, None)
    raise AssertionError(kind)


class ApiRef(GuardRef):
    """The window is ``window / 60``-wide buckets (bucket ``i`` covers ``[i*w, (i+1)*w)``); a
    call leaves once all of its bucket is older than the window. The trip condition is checked
    at every observation, and, while the error rate is high, when the oldest bucket leaves. A
    usage reading above 0 ages out (is read as 0) one window after it was observed."""

    def __init__(
        self,
        window: float,
        min_calls: int,
        rate_threshold: float,
        usage_threshold: float,
        cooldown: float,
    ) -> None:
        super().__init__("api_health", None, cooldown)
        self.window = window
        self.width = window / 60
        self.min_calls = min_calls
        self.rate_threshold = rate_threshold
        self.usage_threshold = usage_threshold
        self.window_calls: list[tuple[int, bool]] = []
        self.usage = 0.0
        self.open: set[str] = set()
        self.drain_at: float | None = None
        self.usage_until: float | None = None

    def deadlines(self) -> dict[str, float]:
        found = super().deadlines()
        if self.drain_at is not None:
            found["drain"] = self.drain_at
        if self.usage_until is not None:
            found["usage"] = self.usage_until
        return found

    def on_deadline(self, name: str, at: float) -> None:
        if name == "usage":
            self.usage, self.usage_until = 0.0, None
        elif name == "drain":
            self.drain_at = None
        else:
            super().on_deadline(name, at)
            return
        self.evict(at)
        self.evaluate(at)

    def evict(self, at: float) -> None:
        horizon = at - self.window
        self.window_calls = [(i, e) for i, e in self.window_calls if (i + 1) * self.width > horizon]

    @property
    def n_calls(self) -> int:
        return len(self.window_calls)

    @property
    def n_errors(self) -> int:
        return sum(e for _, e in self.window_calls)

    def rate_high(self) -> bool:
        calls = self.n_calls
        return calls >= self.min_calls and self.n_errors >= self.rate_threshold * calls

    def evaluate(self, at: float) -> None:
        rate_high = self.rate_high()
        faulty = rate_high or self.usage >= self.usage_threshold or bool(self.open)
        if rate_high and self.window_calls:
            self.drain_at = (self.window_calls[0][0] + 1) * self.width + self.window
        else:
            self.drain_at = None
        if faulty and self.state != T:
            self.go(T, "trip", at)
            self.out += [("CancelOpenOrders",), ("Alert", "critical")]
        elif not faulty and self.state == T:
            self.go(C, "recover", at)

    def call(self, kind: str, at: float) -> None:
        self.window_calls.append((int(at // self.width), kind in COUNTED_ERRORS))
        self.evict(at)
        self.evaluate(at)

    def observe_usage(self, usage: float, at: float) -> None:
        self.usage = usage
        self.usage_until = at + self.window if usage > 0 else None
        self.evict(at)
        self.evaluate(at)

    def breaker(self, category: str, is_open: bool, at: float) -> None:
        if is_open:
            self.open.add(category)
        else:
            self.open.discard(category)
        self.evict(at)
        self.evaluate(at)

    def reset(self, at: float) -> None:
        self.window_calls = []
        self.usage = 0.0
        self.drain_at = None
        self.usage_until = None
        super().reset(at)
        if self.open:
            self.evaluate(at)


class ApiHealthSignalsMachine(GuardMachine):
    """Rate-limit usage and breaker states (no calls: the error rate stays out of it)."""

    @initialize(
        window=st.sampled_from([30.0, 60.0, 120.0]),
        min_calls=st.integers(1, 6),
        rate_threshold=st.sampled_from([0.2, 0.5, 0.75]),
        usage_threshold=st.sampled_from([0.5, 0.9, 1.0]),
        cooldown=st.integers(1, 300).map(float),
    )
    def build(
        self,
        window: float,
        min_calls: int,
        rate_threshold: float,
        usage_threshold: float,
        cooldown: float,
    ) -> None:
        self.guard = ApiHealthGuard(
            self.timers,
            window=window,
            min_calls=min_calls,
            rate_threshold=rate_threshold,
            usage_threshold=usage_threshold,
            cooldown_seconds=cooldown,
        )
        self.ref = ApiRef(window, min_calls, rate_threshold, usage_threshold, cooldown)

    @rule(usage=st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0)))
    def usage(self, usage: float) -> None:
        effects = self.guard.observe_usage(usage, self.now())
        self.ref.observe_usage(usage, self.now())
        self.expect(effects)

    @rule(category=st.sampled_from(["orders", "accounts"]), is_open=st.booleans())
    def breaker(self, category: str, is_open: bool) -> None:
        effects = self.guard.breaker_changed(category, is_open, self.now())
        self.ref.breaker(category, is_open, self.now())
        self.expect(effects)

    @invariant()
    def signals_match(self) -> None:
        assert self.guard.usage == self.ref.usage
        assert self.guard.open_breakers == self.ref.open
        if self.ref.open:
            assert self.guard.state is GuardState.TRIPPED, "any open breaker trips api_health"


TestApiHealthSignals = ApiHealthSignalsMachine.TestCase
TestApiHealthSignals.settings = STATEFUL


class ApiHealthMachine(ApiHealthSignalsMachine):
    """Everything, the error rate over the sliding window included."""

    @rule(kind=st.sampled_from(CALL_KINDS), repeat=st.integers(1, 4))
    def api_calls(self, kind: str, repeat: int) -> None:
        for _ in range(repeat):
            effects = self.guard.observe_call(api_call("orders", kind), self.now())
            self.ref.call(kind, self.now())
            self.expect(effects)
            assert (self.guard.calls, self.guard.errors) == (self.ref.n_calls, self.ref.n_errors)


TestApiHealth = ApiHealthMachine.TestCase
TestApiHealth.settings = STATEFUL


# ------------------------------------------------------------------------------ websocket


class WebsocketRef(GuardRef):
    def __init__(self, cooldown: float) -> None:
        super().__init__("websocket", None, cooldown)
        self.degraded: set[str] = set()

    def feed_degraded(self, feed: str, is_degraded: bool, at: float) -> None:
        if not is_degraded:
            self.degraded.discard(feed)
            if not self.degraded and self.state == T:
                self.go(C, "recover", at)
            return
        self.degraded.add(feed)
        exceeded = ("MaxAttemptsExceeded", feed, self.cooldown)
        if self.state == T:
            self.out.append(exceeded)
            return
        self.go(T, "trip", at)
        self.out += [exceeded, ("Alert", "critical")]


class WebsocketMachine(GuardMachine):
    @initialize(cooldown=st.integers(1, 300).map(float))
    def build(self, cooldown: float) -> None:
        self.guard = WebsocketGuard(self.timers, cooldown_seconds=cooldown)
        self.ref = WebsocketRef(cooldown)

    @rule(feed=st.sampled_from(["market", "user", "orders"]))
    def feed_enters_degraded(self, feed: str) -> None:
        if feed in self.ref.degraded:
            return  # a feed tells only when it enters DEGRADED
        effects = self.guard.feed_degraded(feed, True, self.now())
        self.ref.feed_degraded(feed, True, self.now())
        self.expect(effects)

    @rule(feed=st.sampled_from(["market", "user", "orders"]))
    def feed_leaves_degraded(self, feed: str) -> None:
        if feed not in self.ref.degraded:
            return
        effects = self.guard.feed_degraded(feed, False, self.now())
        self.ref.feed_degraded(feed, False, self.now())
        self.expect(effects)

    def reset_is_modelled(self) -> bool:
        # A reset while a feed is still DEGRADED is its own test below
        # (test_a_websocket_reset_while_a_feed_is_degraded_restricts_again).
        return not self.ref.degraded

    @invariant()
    def degraded_feeds_match(self) -> None:
        assert self.guard.degraded == self.ref.degraded
        if self.ref.degraded:
            assert self.guard.state is GuardState.TRIPPED


TestWebsocketGuard = WebsocketMachine.TestCase
TestWebsocketGuard.settings = STATEFUL


# ======================================================= DESIGN §2.3: the circuit breaker

CL, OP, HO = "CLOSED", "OPEN", "HALF_OPEN"


class BreakerRef(Reference):
    def __init__(self, category: str, failures: int, timeout: float, successes: int) -> None:
        super().__init__(f"breaker:{category}", None)
        self.category = category
        self.failure_threshold = failures
        self.recovery_timeout = timeout
        self.success_threshold = successes
        self.state = CL
        self.failures = 0
        self.successes = 0
        self.probes = 0
        self.open_until: float | None = None

    def go(self, dest: str, trigger: str, at: float) -> None:
        source = self.state
        self.moved(source, dest, trigger, at)
        self.state = dest
        self.failures = self.successes = self.probes = 0
        self.open_until = at + self.recovery_timeout if dest == OP else None
        if (source == OP) != (dest == OP):
            self.calls.append((self.category, dest == OP, at))

    def deadlines(self) -> dict[str, float]:
        return {} if self.open_until is None else {"recovery": self.open_until}

    def on_deadline(self, name: str, at: float) -> None:
        assert name == "recovery" and self.state == OP
        self.go(HO, "expire", at)

    def admit(self) -> bool:
        if self.state == CL:
            return True
        if self.state == OP or self.probes >= self.success_threshold:
            return False
        self.probes += 1
        return True

    def observe(self, kind: str, at: float) -> None:
        failed = kind in COUNTED_ERRORS
        if self.state == CL:
            if not failed:
                self.failures = 0
                return
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.go(OP, "trip", at)
            return
        if self.state == OP:
            return
        if self.probes:
            self.probes -= 1
        if failed:
            self.go(OP, "trip", at)
            return
        self.successes += 1
        if self.successes >= self.success_threshold:
            self.go(CL, "close", at)

    def reset(self, at: float) -> None:
        self.go(CL, "reset", at)


class BreakerMachine(ModelMachine):
    definition = BREAKER

    @initialize(
        failures=st.integers(1, 5),
        timeout=st.integers(1, 60).map(float),
        successes=st.integers(1, 3),
    )
    def build(self, failures: int, timeout: float, successes: int) -> None:
        self.breaker = CircuitBreaker(
            "orders",
            self.timers,
            self.listener,
            failure_threshold=failures,
            recovery_timeout=timeout,
            success_threshold=successes,
        )
        self.ref = BreakerRef("orders", failures, timeout, successes)

    @rule(kind=st.sampled_from(CALL_KINDS))
    def call_finishes(self, kind: str) -> None:
        before = self.ref.state
        effects = self.breaker.observe(api_call("orders", kind), self.now())
        self.ref.observe(kind, self.now())
        self.expect(effects)
        if kind == "4xx":
            assert self.breaker.state is not BreakerState.OPEN or before == OP, "a 4xx tripped"
            assert not any(isinstance(e, Transitioned) and e.trigger == "trip" for e in effects)

    @rule()
    def admit(self) -> None:
        state = self.ref.state
        admitted = self.breaker.admit()
        assert admitted == self.ref.admit()
        if state == OP:
            assert not admitted, "OPEN admits nothing"
        if state == HO:
            assert self.breaker.probes_in_flight <= self.breaker.success_threshold

    @rule()
    def reset(self) -> None:
        effects = self.breaker.reset(self.now())
        self.ref.reset(self.now())
        self.expect(effects)

    @invariant()
    def breaker_matches(self) -> None:
        b, r = self.breaker, self.ref
        assert b.state is BreakerState[r.state]
        assert (b.failures, b.successes, b.probes_in_flight) == (r.failures, r.successes, r.probes)
        assert b.probes_in_flight <= b.success_threshold, "too many concurrent probes"
        assert close(b.reopens_at, r.open_until)
        # The listener heard "open" exactly when the breaker became OPEN, and "not open" when
        # it stopped being OPEN: so the last thing it heard is the current openness.
        flags = [flag for _, flag, _ in self.calls]
        assert all(a != b for a, b in itertools.pairwise(flags)), flags
        assert (flags[-1] if flags else False) == (b.state is BreakerState.OPEN)


TestCircuitBreaker = BreakerMachine.TestCase
TestCircuitBreaker.settings = STATEFUL


# ======================================================= DESIGN §2.2: the websocket feed

DIS, CONNING, CONN, BO, DEG, CLOSED = (
    "DISCONNECTED",
    "CONNECTING",
    "CONNECTED",
    "BACKOFF",
    "DEGRADED",
    "CLOSED",
)


def reference_raw(policy: BackoffPolicy, attempt: int) -> float:
    delay = policy.base
    for _ in range(attempt):
        if delay >= policy.max:
            break
        delay *= policy.multiplier
    return min(delay, policy.max)


class FeedRef(Reference):
    def __init__(
        self,
        name: str,
        policy: BackoffPolicy,
        seed: int,
        max_attempts: int,
        reset_seconds: float,
        stale_seconds: float,
    ) -> None:
        super().__init__(f"feed:{name}", None)
        self.name = name
        self.policy = policy
        self.rng = random.Random(seed)
        self.max_attempts = max_attempts
        self.reset_seconds = reset_seconds
        self.stale_seconds = stale_seconds
        self.state = DIS
        self.attempts = 0
        self.messages = 0
        self.disconnects = 0
        self.retry_at: float | None = None
        self.reset_at: float | None = None
        self.stale_at: float | None = None
        self.stable_resets = 0
        self.last_drop_at = 0.0

    def go(self, dest: str, trigger: str, at: float) -> None:
        self.moved(self.state, dest, trigger, at)
        self.state = dest

    def deadlines(self) -> dict[str, float]:
        found = {"retry": self.retry_at, "reset": self.reset_at, "stale": self.stale_at}
        return {name: when for name, when in found.items() if when is not None}

    def on_deadline(self, name: str, at: float) -> None:
        if name == "retry":
            self.retry_at = None
            self.attempts += 1
            if self.state == BO:
                self.go(CONNING, "retry", at)
            self.out.append(("Reconnect", self.name, self.attempts))
        elif name == "reset":
            self.reset_at = None
            self.attempts = 0
            self.stable_resets += 1
        else:
            assert name == "stale" and self.state == CONN
            self.stale_at = None
            self.out.append(("CloseConnection", self.name))
            self.drop("stale", at)

    def legal(self, event: str) -> bool:
        allowed = {
            "start": {DIS},
            "connected": {CONNING, DEG},
            "disconnected": {CONNING, CONN, DEG},
            "message": {CONN},
            "close": {DIS, CONNING, CONN, BO, DEG},
        }
        return self.state in allowed[event]

    def exhausted(self) -> bool:
        return self.max_attempts > 0 and self.attempts >= self.max_attempts

    def delay(self, attempt: int | None) -> float:
        p = self.policy
        raw = p.max if attempt is None else reference_raw(p, attempt)
        low = raw * (1 - p.jitter_pct)
        high = min(raw * (1 + p.jitter_pct), p.max)
        return low + (high - low) * self.rng.random()

    def drop(self, trigger: str, at: float) -> None:
        was_degraded = self.state == DEG
        exhausted = self.exhausted()
        if was_degraded:
            assert exhausted, "DEGRADED with attempts left cannot happen"
        dest = DEG if exhausted else BO
        self.go(dest, trigger, at)
        self.disconnects += 1
        self.reset_at = self.stale_at = None
        self.retry_at = at + self.delay(self.attempts if dest == BO else None)
        self.last_drop_at = at
        if dest == DEG and not was_degraded:
            self.calls.append((self.name, True, at))

    def start(self, at: float) -> None:
        self.go(CONNING, "start", at)

    def connected(self, at: float) -> None:
        self.go(CONN, "connected", at)
        self.reset_at = at + self.reset_seconds
        self.stale_at = at + self.stale_seconds
        # The listener hears "not degraded" on every connect, not only when leaving DEGRADED
        # (`_feed.DegradedListener`: a guard restored TRIPPED has no degraded feed to wait for).
        self.calls.append((self.name, False, at))

    def message(self, at: float) -> None:
        self.messages += 1
        self.stale_at = at + self.stale_seconds

    def close(self, at: float) -> None:
        was_degraded = self.state == DEG
        self.go(CLOSED, "close", at)
        self.retry_at = self.reset_at = self.stale_at = None
        if was_degraded:
            self.calls.append((self.name, False, at))


class FeedMachine(ModelMachine):
    definition = FEED

    @initialize(
        base=st.sampled_from([0.5, 1.0, 2.0]),
        multiplier=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
        cap_ratio=st.sampled_from([1.0, 4.0, 10.0, 30.0]),
        jitter=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
        max_attempts=st.integers(0, 4),
        reset_seconds=st.integers(5, 60).map(float),
        stale_seconds=st.integers(3, 30).map(float),
        seed=st.integers(0, 2**32 - 1),
    )
    def build(
        self,
        base: float,
        multiplier: float,
        cap_ratio: float,
        jitter: float,
        max_attempts: int,
        reset_seconds: float,
        stale_seconds: float,
        seed: int,
    ) -> None:
        policy = BackoffPolicy(
            base=base, multiplier=multiplier, max=base * cap_ratio, jitter_pct=jitter
        )
        self.feed = Feed(
            "market",
            self.timers,
            random.Random(seed),
            self.listener,
            policy=policy,
            max_attempts=max_attempts,
            reset_seconds=reset_seconds,
            stale_seconds=stale_seconds,
        )
        self.ref = FeedRef("market", policy, seed, max_attempts, reset_seconds, stale_seconds)
        self.last_attempt = 0

    # ------------------------------------------------------------- driving the feed

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.feed.status(self.now()),
            self.timers.next_due(),
            list(self.calls),
        )

    def event(self, name: str, act: Callable[[], list[Effect]], apply: Callable[[], None]) -> None:
        """Send one lifecycle event: legal ones must match the reference, the others must
        raise `InvalidTransition` and change nothing at all."""
        if not self.ref.legal(name):
            before = self.snapshot()
            state = self.feed.state
            try:
                act()
            except InvalidTransition as err:
                assert err.state == state.name
            else:
                raise AssertionError(f"{name!r} from {state.name} did not raise")
            assert self.snapshot() == before, f"a refused {name!r} changed the feed"
            return
        effects = act()
        apply()
        self.expect(effects)

    @rule()
    def start(self) -> None:
        now = self.now()
        self.event("start", lambda: self.feed.start(now), lambda: self.ref.start(now))

    @rule()
    def connected(self) -> None:
        if self.ref.state == DEG and self.ref.retry_at is not None:
            # The shell reports a connection in DEGRADED only for an attempt it was asked to
            # make; before the retry fires, see test_a_connection_in_degraded_cancels_the_retry.
            return
        now = self.now()
        self.event("connected", lambda: self.feed.connected(now), lambda: self.ref.connected(now))

    @rule(reason=st.sampled_from(["refused", "reset by peer", "tls error"]))
    def disconnected(self, reason: str) -> None:
        now = self.now()
        source, attempts = self.ref.state, self.ref.attempts
        self.event(
            "disconnected",
            lambda: self.feed.disconnected(reason, now),
            lambda: self.ref.drop("disconnected", now),
        )
        if source in (CONNING, CONN):
            # DEGRADED exactly when a drop finds the attempts used up (0 = unlimited).
            exhausted = self.feed.max_attempts > 0 and attempts >= self.feed.max_attempts
            assert (self.feed.state is FeedState.DEGRADED) == exhausted
        if source in (CONNING, CONN, DEG):
            assert self.feed.status(now)["last_reason"] == reason

    @rule()
    def message(self) -> None:
        now = self.now()
        self.event("message", lambda: self.feed.message(now), lambda: self.ref.message(now))

    @rule()
    def close(self) -> None:
        now = self.now()
        self.event("close", lambda: self.feed.close(now), lambda: self.ref.close(now))

    def expect(self, effects: list[Effect]) -> None:
        super().expect(effects)
        self.check_retry()

    def pass_time(self) -> list[Effect]:
        """Reconnect effects carry increasing attempt numbers until a stable-connection reset.
        (Within one pass a reset always comes first: after a Reconnect only a `connected`
        event, never a timer, can make the connection stable again.)"""
        resets_before = self.ref.stable_resets
        effects = super().pass_time()
        self.check_retry()
        if self.ref.stable_resets != resets_before:
            self.last_attempt = 0
        for effect in effects:
            if isinstance(effect, Reconnect):
                assert effect.feed == "market"
                assert effect.attempt == self.last_attempt + 1, (effect, self.last_attempt)
                self.last_attempt = effect.attempt
        return effects

    def check_retry(self) -> None:
        """Every retry delay is at most the backoff max. The reference then adopts the feed's
        own retry deadline (they agree within rounding), so the two never drift by an ulp."""
        if self.ref.retry_at is None:
            return
        assert self.feed.retry_at is not None
        assert close(self.feed.retry_at, self.ref.retry_at), (
            f"retry at {self.feed.retry_at}, reference {self.ref.retry_at}"
        )
        self.ref.retry_at = self.feed.retry_at
        delay = self.feed.retry_at - self.ref.last_drop_at
        assert delay <= self.feed.policy.max * (1 + 1e-12), f"delay {delay} above max"

    @invariant()
    def feed_matches(self) -> None:
        f, r = self.feed, self.ref
        assert f.state is FeedState[r.state]
        assert (f.attempts, f.messages, f.disconnects) == (r.attempts, r.messages, r.disconnects)
        assert close(f.retry_at, r.retry_at)
        if r.state == CLOSED:
            assert self.timers.next_due() is None, "a closed feed keeps no timer"
        if r.state == DEG:
            assert f.attempts_exhausted()
        # "Degraded" is heard once per entry into DEGRADED, and the last thing the listener
        # heard is whether the feed is DEGRADED now.
        degraded = [flag for _, flag, _ in self.calls]
        assert not any(a and b for a, b in itertools.pairwise(degraded)), degraded
        assert (degraded[-1] if degraded else False) == (f.state is FeedState.DEGRADED)


TestFeed = FeedMachine.TestCase
TestFeed.settings = STATEFUL


# ================================= where the code disagrees with DESIGN.md or its docstrings


def api_guard(timers: Timers) -> ApiHealthGuard:
    return ApiHealthGuard(
        timers,
        window=60.0,
        min_calls=10,
        rate_threshold=0.2,
        usage_threshold=0.9,
        cooldown_seconds=300.0,
    )


TRIP_AT_1 = [
    ("T", "api_health", None, "HEALTHY", "TRIPPED", "trip", 1.0),
    ("CancelOpenOrders",),
    ("Alert", "critical"),
]


@pytest.mark.parametrize("kind", ["ok", "4xx"])
def test_api_health_trips_when_a_non_error_completes_the_minimum_calls(kind: str) -> None:
    """DESIGN §2.1: api_health trips when the error rate over the window is >= the threshold
    once the minimum number of calls is in it. Nine 5xx and then one call that is not an
    error make 10 calls at 90% errors: the trip condition holds from that call on."""
    guard = api_guard(Timers())
    for _ in range(9):
        assert guard.observe_call(api_call("orders", "5xx"), 0.0) == []
    effects = guard.observe_call(api_call("orders", kind), 1.0)
    assert (guard.calls, guard.errors) == (10, 9)
    assert guard.state is GuardState.TRIPPED
    assert [norm(e) for e in effects] == TRIP_AT_1


def test_api_health_trips_when_a_success_pushes_old_successes_out_of_the_window() -> None:
    """The same rule when the minimum is met because old successes left the window: at
    t=61 the 100 successes of t=0 are gone and the window holds 10 errors and 1 success."""
    guard = api_guard(Timers())
    for _ in range(100):
        guard.observe_call(api_call("orders", "ok"), 0.0)
    for _ in range(10):
        guard.observe_call(api_call("orders", "5xx"), 30.0)
    assert not guard.restricting  # 10 errors in 110 calls
    guard.observe_call(api_call("orders", "ok"), 61.0)
    assert (guard.calls, guard.errors) == (11, 10)
    assert guard.state is GuardState.TRIPPED


def test_api_health_judges_a_usage_report_on_the_calls_still_in_the_window() -> None:
    """`ApiHealthGuard`: a bucket leaves the window once all of it is older than the window.
    At t=70 the 100 successes of t=0 have left; 10 errors in 10 calls are >= 20%, so the
    evaluation a usage report triggers must trip (it counted the departed successes)."""
    guard = api_guard(Timers())
    for _ in range(100):
        guard.observe_call(api_call("orders", "ok"), 0.0)
    for _ in range(10):
        guard.observe_call(api_call("orders", "5xx"), 30.0)
    assert not guard.restricting  # 10 errors in 110 calls
    guard.observe_usage(0.1, 70.0)
    assert guard.state is GuardState.TRIPPED
    assert guard.errors == guard.calls == 10


def test_a_mark_staleness_reset_while_stale_restricts_again() -> None:
    """`MarkStalenessGuard` trips when a symbol's mark is older than the threshold, eagerly.
    After an operator reset with still no fresh mark the mark is still older than that: the
    guard must restrict again (at once, or at the latest one threshold after the reset),
    not stay HEALTHY until some mark arrives, which would trade on a stale mark."""
    timers = Timers()
    guard = MarkStalenessGuard(
        "BTC-USD",
        timers,
        threshold=30.0,
        restriction=TradingMode.REDUCE_ONLY,
        cooldown_seconds=120.0,
    )
    guard.observe(0.0)
    run_due(timers, 30.0)
    assert guard.state is GuardState.TRIPPED
    guard.reset(40.0)
    run_due(timers, 70.0)
    assert guard.state is GuardState.TRIPPED
    assert guard.restricting


def test_a_websocket_reset_while_a_feed_is_degraded_restricts_again() -> None:
    """`WebsocketGuard` trips *while* any feed is DEGRADED. A reset while one still is must
    leave it restricting (api_health's reset keeps counting open breakers the same way)."""
    guard = WebsocketGuard(Timers(), cooldown_seconds=300.0)
    guard.feed_degraded("market", True, 0.0)
    effects = guard.reset(1.0)
    assert norm(effects[0]) == ("T", "websocket", None, "TRIPPED", "HEALTHY", "reset", 1.0)
    assert guard.degraded == {"market"}
    assert guard.restricting


def degraded_feed(timers: Timers, calls: list[Call]) -> Feed:
    """A feed with one allowed attempt, driven into DEGRADED with its retry pending."""

    def listener(name: str, flag: bool, at: float) -> list[Effect]:
        calls.append((name, flag, at))
        return []

    feed = Feed(
        "market",
        timers,
        random.Random(0),
        listener,
        policy=BackoffPolicy(base=1.0, multiplier=2.0, max=4.0, jitter_pct=0.0),
        max_attempts=1,
        reset_seconds=60.0,
        stale_seconds=15.0,
    )
    feed.start(0.0)
    feed.disconnected("refused", 0.0)
    assert [norm(e) for e in run_due(timers, 1.0)][-1] == ("Reconnect", "market", 1)
    feed.disconnected("refused", 1.0)
    assert feed.state is FeedState.DEGRADED
    assert feed.retry_at == 5.0
    return feed


def test_a_connection_in_degraded_cancels_the_retry() -> None:
    """`Feed`: DEGRADED keeps reconnecting and returns to CONNECTED when one succeeds. Once
    CONNECTED the pending retry must not fire: a `Reconnect` while connected asks the shell
    for a second connection and counts an attempt that was never made."""
    timers, calls = Timers(), list[Call]()
    feed = degraded_feed(timers, calls)
    feed.connected(2.0)
    assert feed.state is FeedState.CONNECTED
    assert feed.retry_at is None
    effects = run_due(timers, 10.0)
    assert not any(isinstance(e, Reconnect) for e in effects)
    assert feed.attempts == 1
    assert feed.state is FeedState.CONNECTED


@pytest.mark.parametrize("closed", [False, True], ids=["before-start", "after-close"])
def test_a_refused_feed_event_changes_nothing(closed: bool) -> None:
    """STYLE §2, validate then mutate: an event the state forbids raises `InvalidTransition`
    and leaves the feed exactly as it was (CLOSED is terminal), `last_reason` included."""
    timers = Timers()
    feed = Feed(
        "market",
        timers,
        random.Random(0),
        lambda name, flag, at: [],
        policy=BackoffPolicy(base=1.0, multiplier=2.0, max=4.0, jitter_pct=0.0),
        max_attempts=3,
        reset_seconds=60.0,
        stale_seconds=15.0,
    )
    if closed:
        feed.start(0.0)
        feed.disconnected("first", 0.0)
        feed.close(0.5)
    before = feed.status(1.0)
    with pytest.raises(InvalidTransition):
        feed.disconnected("too late", 1.0)
    assert feed.status(1.0) == before
