"""The seed's decision matrix, row by row, through `ReliabilityLayer`'s public API only.

Grouped by DESIGN section: §2.1 (one class per guard row of the matrix), §2.2 (websocket), §2.4
(`decide()` and modes), operator calls, §3 (timers applied by `decide()`, `next_deadline()`,
`status()`, bad input, restore). Time is a `ManualClock`; knobs are shortened per test so
that exact deadlines are easy to read.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from helpers import (
    assert_one,
    assert_transition,
    buy,
    count_of,
    make_layer,
    make_settings,
    mark,
    moves,
    of_type,
    run_timers_until,
    sell,
    status_of,
    time_limit,
    transitions_of,
)

from tradeguard import (
    GuardState,
    InvalidObservation,
    InvalidTransition,
    OrderIntent,
    Reason,
    ReliabilityLayer,
    Side,
    TradingMode,
    UnknownGuard,
)
from tradeguard.fsm import events as ev
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
)
from tradeguard.testing import ManualClock

ALLOW, REDUCE_ONLY, PAUSED = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED
HEALTHY, TRIPPED, COOLDOWN = GuardState.HEALTHY, GuardState.TRIPPED, GuardState.COOLDOWN
D = Decimal

# Marks that never go stale within a test, so only the guard under test restricts.
NO_STALENESS = {"mark_staleness_threshold_seconds": 100_000.0}

ALL_GUARD_NAMES = (
    "api_health",
    "broker_outage",
    "mark_staleness",
    "preview",
    "reconciliation",
    "slippage",
    "validation",
    "websocket",
)


def _fail(category: str = "orders") -> ev.ApiCall:
    return ev.ApiCall(category, ok=False, status=503)


def _ok(category: str = "orders") -> ev.ApiCall:
    return ev.ApiCall(category, ok=True, status=200)


def _observe_all(layer: ReliabilityLayer, observations: list[Any]) -> list[Effect]:
    effects: list[Effect] = []
    for observation in observations:
        effects += layer.observe(observation)
    return effects


# =========================================================================== §2.1 api_health

# A 30 s window (0.5 s buckets), 4 calls minimum, 50% errors, 10 s cooldown; breakers far off.
API = {
    "api_error_rate_window_seconds": 30.0,
    "api_error_rate_min_calls": 4,
    "api_error_rate_threshold": 0.5,
    "api_health_cooldown_seconds": 10.0,
    "circuit_failure_threshold": 1000,
    **NO_STALENESS,
}


class TestApiHealth:
    def test_errors_below_the_minimum_number_of_calls_never_trip(self) -> None:
        layer, _ = make_layer(**API)
        effects = _observe_all(layer, [_fail()] * 3)
        assert effects == []
        assert layer.guard("api_health").state is HEALTHY
        assert layer.mode() is ALLOW

    def test_error_rate_at_the_threshold_trips_once_min_calls_are_in_the_window(self) -> None:
        layer, _ = make_layer(**API)
        assert _observe_all(layer, [_ok(), _ok(), _fail()]) == []
        effects = layer.observe(_fail())  # 2 errors of 4 calls: exactly 50%
        assert_transition(effects, "api_health", "HEALTHY", "TRIPPED", "trip", scope=None, at=0.0)
        assert_one(effects, CancelOpenOrders)
        assert_one(effects, Alert)
        assert layer.mode() is REDUCE_ONLY

    @pytest.mark.parametrize(
        ("threshold", "calls", "errors"),
        [("0.2", 15, 3), ("0.07", 100, 7), ("0.14", 50, 7), ("0.17", 300, 51)],
    )
    def test_an_error_rate_exactly_at_the_threshold_trips(
        self, threshold: str, calls: int, errors: int
    ) -> None:
        # "error rate ... >= RISK_API_ERROR_RATE_THRESHOLD": 7 errors in 100 calls is 7%,
        # which is >= a threshold written "0.07" (a float product must not decide otherwise).
        layer, _ = make_layer(
            **{
                **API,
                "api_error_rate_threshold": float(threshold),
                "api_error_rate_min_calls": calls,
            }
        )
        effects = _observe_all(layer, [_ok()] * (calls - errors) + [_fail()] * errors)
        assert moves(effects, "api_health") == [("HEALTHY", "TRIPPED", "trip")]
        assert layer.status()["global"]["guards"]["api_health"]["calls_in_window"] == calls

    def test_error_rate_below_the_threshold_does_not_trip(self) -> None:
        layer, _ = make_layer(**API)
        effects = _observe_all(layer, [_ok(), _ok(), _ok(), _fail(), _ok(), _fail(), _ok()])
        assert effects == []  # 2 errors of 7 calls
        assert layer.guard("api_health").state is HEALTHY

    def test_a_success_that_completes_min_calls_trips_when_the_rate_is_already_high(self) -> None:
        # DESIGN §2.1: trips when the error rate >= threshold "once a minimum number of calls
        # is in the window". After 3 errors and 1 success the window holds 4 calls, 75% errors.
        layer, _ = make_layer(**API)
        _observe_all(layer, [_fail()] * 3)
        effects = layer.observe(_ok())
        assert_transition(effects, "api_health", "HEALTHY", "TRIPPED", "trip")
        assert layer.mode() is REDUCE_ONLY

    @pytest.mark.parametrize(
        "call",
        [
            ev.ApiCall("orders", ok=False, status=500),
            ev.ApiCall("orders", ok=False, status=503),
            ev.ApiCall("orders", ok=False, status=429),
            ev.ApiCall("orders", ok=False, status=None),  # timeout or connection failure
        ],
        ids=["500", "503", "429", "timeout"],
    )
    def test_server_errors_rate_limits_and_timeouts_count_as_errors(self, call: ev.ApiCall) -> None:
        layer, _ = make_layer(**API)
        effects = _observe_all(layer, [call] * 4)
        assert moves(effects, "api_health") == [("HEALTHY", "TRIPPED", "trip")]

    def test_client_errors_never_trip_the_guard_nor_a_breaker(self) -> None:
        layer, _ = make_layer(**{**API, "circuit_failure_threshold": 3})
        client_errors = [
            ev.ApiCall(category, ok=False, status=status)
            for category in ("orders", "accounts")
            for status in (400, 401, 403, 404, 409, 422)
        ]
        effects = _observe_all(layer, client_errors * 5)
        assert effects == []
        assert layer.guard("api_health").state is HEALTHY
        assert layer.breaker_state("orders").name == "CLOSED"
        assert layer.breaker_state("accounts").name == "CLOSED"
        assert layer.mode() is ALLOW

    def test_rate_limit_usage_at_the_threshold_trips(self) -> None:
        layer, _ = make_layer(**{**API, "api_rate_limit_usage_threshold": 0.8})
        assert layer.observe(ev.RateLimitUsage(0.79)) == []
        effects = layer.observe(ev.RateLimitUsage(0.8))
        assert moves(effects, "api_health") == [("HEALTHY", "TRIPPED", "trip")]
        assert_one(effects, CancelOpenOrders)
        assert_one(effects, Alert)
        assert layer.mode() is REDUCE_ONLY
        effects = layer.observe(ev.RateLimitUsage(0.3))
        assert moves(effects, "api_health") == [("TRIPPED", "COOLDOWN", "recover")]

    def test_an_open_circuit_breaker_trips_the_guard_until_it_stops_being_open(self) -> None:
        layer, clock = make_layer(
            **{**API, "api_error_rate_min_calls": 1000, "circuit_failure_threshold": 3},
            circuit_recovery_timeout=5.0,
        )
        assert _observe_all(layer, [_fail("orders")] * 2) == []
        clock.advance(1)
        effects = layer.observe(_fail("orders"))
        assert_transition(effects, "breaker:orders", "CLOSED", "OPEN", "trip", at=1.0)
        assert_transition(effects, "api_health", "HEALTHY", "TRIPPED", "trip", at=1.0)
        assert_one(effects, CancelOpenOrders)
        assert layer.mode() is REDUCE_ONLY
        # The breaker goes HALF_OPEN by its own timer: no breaker is OPEN, the guard recovers.
        effects = run_timers_until(layer, clock, 6.0)
        assert_transition(effects, "breaker:orders", "OPEN", "HALF_OPEN", "expire", at=6.0)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=6.0)
        assert layer.mode() is REDUCE_ONLY

    def test_trip_effects_are_emitted_once_per_trip_while_the_fault_persists(self) -> None:
        layer, clock = make_layer(**{**API, "circuit_failure_threshold": 20})
        effects: list[Effect] = []
        for _ in range(60):  # errors all along; a breaker opens midway; usage high too
            effects += layer.observe(_fail())
            effects += layer.observe(ev.RateLimitUsage(0.99))
            clock.advance(0.25)
            effects += layer.tick()
        assert layer.breaker_state("orders").name in ("OPEN", "HALF_OPEN")
        assert moves(effects, "api_health") == [("HEALTHY", "TRIPPED", "trip")]
        assert count_of(effects, CancelOpenOrders) == 1
        assert count_of(effects, Alert) == 1

    def test_cooldown_holds_reduce_only_for_exactly_the_cooldown_and_ends_via_tick(self) -> None:
        layer, clock = make_layer(**API)
        mark(layer, "BTC")
        layer.observe(ev.RateLimitUsage(0.95))
        clock.advance(2)
        effects = layer.observe(ev.RateLimitUsage(0.1))
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=2.0)
        assert layer.next_deadline() == 12.0
        assert layer.guard("api_health").seconds_until_lift == 10.0
        assert run_timers_until(layer, clock, 11.75) == []
        assert layer.guard("api_health").state is COOLDOWN
        assert layer.mode() is REDUCE_ONLY
        assert layer.mode("BTC") is REDUCE_ONLY
        assert not layer.decide(buy("BTC"), position=D(0)).allowed
        clock.jump_to(12.0)
        effects = layer.tick()
        assert_transition(effects, "api_health", "COOLDOWN", "HEALTHY", "expire", at=12.0)
        changed = assert_one(effects, ModeChanged)
        assert (changed.scope, changed.source, changed.dest) == (None, REDUCE_ONLY, ALLOW)
        assert layer.mode() is ALLOW
        assert layer.decide(buy("BTC"), position=D(0)).allowed

    def test_a_fault_during_cooldown_trips_again_and_restarts_the_cooldown(self) -> None:
        layer, clock = make_layer(**API)
        layer.observe(ev.RateLimitUsage(0.95))
        clock.advance(1)
        layer.observe(ev.RateLimitUsage(0.1))  # COOLDOWN until 11
        clock.advance(4)
        effects = layer.observe(ev.RateLimitUsage(0.95))
        assert_transition(effects, "api_health", "COOLDOWN", "TRIPPED", "trip", at=5.0)
        assert_one(effects, CancelOpenOrders)  # a new trip: its effects again, once
        assert_one(effects, Alert)
        assert layer.guard("api_health").seconds_until_lift is None
        clock.advance(1)
        effects = layer.observe(ev.RateLimitUsage(0.1))  # COOLDOWN until 16, not 11
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=6.0)
        assert run_timers_until(layer, clock, 15.5) == []
        assert layer.mode() is REDUCE_ONLY
        effects = run_timers_until(layer, clock, 16.0)
        assert_transition(effects, "api_health", "COOLDOWN", "HEALTHY", "expire", at=16.0)
        assert layer.mode() is ALLOW

    def test_a_rate_limit_reading_ages_out_after_the_window_without_a_query(self) -> None:
        # Found: after a 429 burst the guard stayed TRIPPED for good with usage 1.0.
        layer, clock = make_layer(**API)  # window 30 s, cooldown 10 s
        layer.observe(ev.RateLimitUsage(1.0))
        assert layer.guard("api_health").state is TRIPPED
        assert layer.next_deadline() == 30.0  # eager: the reading's expiry is a deadline
        assert run_timers_until(layer, clock, 29.75) == []
        effects = run_timers_until(layer, clock, 30.0)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=30.0)
        assert status_of(layer)["global"]["guards"]["api_health"]["rate_limit_usage"] == 0.0
        effects = run_timers_until(layer, clock, 40.0)
        assert_transition(effects, "api_health", "COOLDOWN", "HEALTHY", "expire", at=40.0)
        assert layer.mode() is ALLOW

    def test_a_rate_limit_reading_ages_out_at_the_venues_reset_when_sooner(self) -> None:
        layer, clock = make_layer(**API)
        clock.advance(1)
        layer.observe(ev.RateLimitUsage(1.0, reset_after=2.5))
        assert layer.next_deadline() == 3.5
        effects = run_timers_until(layer, clock, 3.5)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=3.5)
        # A reset later than the window does not stretch the reading past the window.
        layer.observe(ev.RateLimitUsage(1.0, reset_after=3600.0))
        effects = run_timers_until(layer, clock, 33.5)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=33.5)

    def test_a_fresh_reading_replaces_the_old_one_and_its_age(self) -> None:
        layer, clock = make_layer(**API)
        layer.observe(ev.RateLimitUsage(1.0))
        clock.advance(20)
        layer.observe(ev.RateLimitUsage(0.95))  # still over: the reading now ages out at 50
        assert run_timers_until(layer, clock, 49.5) == []
        assert layer.guard("api_health").state is TRIPPED
        clock.advance(0.25)
        effects = layer.observe(ev.RateLimitUsage(0.1))  # a low reading from a success
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=49.75)

    def test_bad_reset_after_is_refused_naming_the_value(self) -> None:
        for bad in (-1.0, math.nan, math.inf, True, "1"):
            with pytest.raises(ValueError, match=r"reset_after.*" + re.escape(repr(bad))):
                ev.RateLimitUsage(0.5, reset_after=bad)  # type: ignore[arg-type]

    def test_errors_leave_the_window_and_the_guard_recovers_without_new_calls(self) -> None:
        layer, clock = make_layer(**API)
        _observe_all(layer, [_fail()] * 4)
        assert layer.guard("api_health").state is TRIPPED
        effects = run_timers_until(layer, clock, 60.0)
        recovered = assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover")
        # The window is 30 s, counted in buckets of window/60.
        assert 30.0 <= recovered.at <= 30.5
        assert_transition(
            effects, "api_health", "COOLDOWN", "HEALTHY", "expire", at=recovered.at + 10.0
        )
        assert layer.mode() is ALLOW

    @pytest.mark.parametrize("window", [60.0, 30.0, 10.0, 6.0, 1.0])
    def test_error_rate_recovery_terminates_for_any_window_length(self, window: float) -> None:
        # Found: with a window whose bucket width (window/60) is not exact in binary, the
        # timer that re-checks the window re-arms itself at the same instant forever.
        layer, clock = make_layer(**{**API, "api_error_rate_window_seconds": window})
        _observe_all(layer, [_fail()] * 4)
        clock.advance(window * 2)
        with time_limit(2):
            layer.tick()
        assert layer.guard("api_health").state is not TRIPPED


# =========================================================================== §2.1 mark_staleness

MARK = {"mark_staleness_threshold_seconds": 30.0, "mark_staleness_cooldown_seconds": 20.0}


class TestMarkStaleness:
    def test_a_symbol_without_a_mark_is_reduce_only_and_refuses_opening_orders(self) -> None:
        layer, _ = make_layer(**MARK)
        assert layer.mode() is ALLOW
        assert layer.mode("BTC") is REDUCE_ONLY  # never observed at all
        refused = layer.decide(buy("BTC"), position=D(0))
        assert not refused.allowed
        assert refused.mode is REDUCE_ONLY
        assert any(r.scope == "BTC" and r.state == "NO_MARK" for r in refused.reasons)
        assert layer.decide(sell("BTC", 1), position=D(2)).allowed  # a reduce is fine
        layer.observe(ev.SlippageCheck("BTC", ok=True))  # seen, but still no mark
        assert layer.mode("BTC") is REDUCE_ONLY
        mark(layer, "BTC")
        assert layer.mode("BTC") is ALLOW
        assert layer.decide(buy("BTC"), position=D(0)).allowed

    def test_a_stale_mark_trips_at_exactly_last_mark_plus_threshold_without_any_query(
        self,
    ) -> None:
        layer, clock = make_layer(**MARK)
        clock.advance(5)
        mark(layer, "BTC")
        assert layer.next_deadline() == 35.0
        clock.jump_to(34.5)
        assert layer.tick() == []
        clock.jump_to(60.0)  # late: nobody asked in between
        effects = layer.tick()
        assert_transition(effects, "mark_staleness", "HEALTHY", "TRIPPED", "trip", at=35.0)
        assert_one(effects, Alert)
        assert layer.mode("BTC") is REDUCE_ONLY
        assert layer.mode() is ALLOW

    def test_a_late_mark_trips_at_the_deadline_and_cools_down_from_its_own_time(self) -> None:
        # DESIGN §3: a deadline takes effect at its deadline; a recovery is seen by the call
        # that sees it, and the cooldown starts at that call's time.
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        clock.advance(45)  # no tick since the deadline at 30
        effects = mark(layer, "BTC")
        assert [
            (t.source, t.dest, t.trigger, t.at) for t in transitions_of(effects, "mark_staleness")
        ] == [
            ("HEALTHY", "TRIPPED", "trip", 30.0),
            ("TRIPPED", "COOLDOWN", "recover", 45.0),
        ]
        assert layer.guard("mark_staleness", "BTC").seconds_until_lift == 20.0
        assert layer.next_deadline() == 65.0

    def test_a_timely_tick_trips_at_the_deadline(self) -> None:
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        effects = run_timers_until(layer, clock, 30.0)
        assert_transition(effects, "mark_staleness", "HEALTHY", "TRIPPED", "trip", at=30.0)

    def test_fresh_marks_push_the_staleness_deadline_back(self) -> None:
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        clock.advance(20)
        mark(layer, "BTC")
        assert layer.next_deadline() == 50.0
        assert run_timers_until(layer, clock, 49.5) == []
        assert layer.mode("BTC") is ALLOW

    def test_a_stale_mark_pauses_the_symbol_when_reduce_only_is_not_allowed(self) -> None:
        layer, clock = make_layer(**MARK, mark_staleness_allow_reduce_only=False)
        mark(layer, "BTC")
        clock.advance(25)
        mark(layer, "ETH")
        run_timers_until(layer, clock, 31.0)
        assert layer.mode("BTC") is PAUSED
        refused = layer.decide(sell("BTC", 1), position=D(2))
        assert (refused.allowed, refused.mode, refused.max_quantity) == (False, PAUSED, D(0))
        assert layer.mode("ETH") is ALLOW
        assert layer.mode() is ALLOW
        # Issue 11: no mark yet is restricted exactly like a stale mark, PAUSED here.
        assert layer.mode("NEVER_SEEN") is PAUSED

    def test_a_fresh_mark_cools_down_then_allows(self) -> None:
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        run_timers_until(layer, clock, 40.0)
        effects = mark(layer, "BTC")
        assert_transition(effects, "mark_staleness", "TRIPPED", "COOLDOWN", "recover", at=40.0)
        assert layer.guard("mark_staleness", "BTC").seconds_until_lift == 20.0
        assert run_timers_until(layer, clock, 59.5) == []
        assert layer.mode("BTC") is REDUCE_ONLY
        assert not layer.decide(buy("BTC"), position=D(0)).allowed
        effects = run_timers_until(layer, clock, 60.0)
        assert_transition(effects, "mark_staleness", "COOLDOWN", "HEALTHY", "expire", at=60.0)
        assert layer.mode("BTC") is ALLOW


# =========================================================================== §2.1 slippage

SLIP = {"slippage_failure_pause_after": 3, "slippage_pause_seconds": 15.0, **NO_STALENESS}


class TestSlippage:
    def test_consecutive_failures_restrict_only_that_symbol_for_the_pause(self) -> None:
        layer, clock = make_layer(**SLIP)
        mark(layer, "BTC", "ETH")
        clock.advance(1)
        assert _observe_all(layer, [ev.SlippageCheck("BTC", ok=False)] * 2) == []
        assert layer.mode("BTC") is ALLOW
        effects = layer.observe(ev.SlippageCheck("BTC", ok=False))
        assert moves(effects, "slippage", scope="BTC") == [
            ("HEALTHY", "TRIPPED", "trip"),
            ("TRIPPED", "COOLDOWN", "recover"),  # its checks stop while it restricts
        ]
        assert_one(effects, Alert)
        assert layer.mode("BTC") is REDUCE_ONLY
        assert layer.mode("ETH") is ALLOW
        assert layer.mode() is ALLOW
        assert layer.guard("slippage", "BTC").seconds_until_lift == 15.0
        assert layer.guard("slippage", "ETH").state is HEALTHY
        assert run_timers_until(layer, clock, 15.75) == []
        assert layer.mode("BTC") is REDUCE_ONLY
        effects = run_timers_until(layer, clock, 16.0)
        assert_transition(effects, "slippage", "COOLDOWN", "HEALTHY", "expire", at=16.0)
        assert layer.mode("BTC") is ALLOW

    def test_a_success_resets_the_count_and_counts_are_per_symbol(self) -> None:
        layer, _ = make_layer(**SLIP)
        mark(layer, "BTC", "ETH")
        fail_btc, fail_eth = ev.SlippageCheck("BTC", ok=False), ev.SlippageCheck("ETH", ok=False)
        ok_btc = ev.SlippageCheck("BTC", ok=True)
        effects = _observe_all(layer, [fail_btc, fail_btc, ok_btc, fail_btc, fail_btc])
        effects += _observe_all(layer, [fail_eth, fail_eth])
        assert effects == []
        assert layer.mode("BTC") is ALLOW
        assert layer.mode("ETH") is ALLOW
        effects = layer.observe(fail_btc)
        assert moves(effects, "slippage", scope="BTC")[0] == ("HEALTHY", "TRIPPED", "trip")
        assert layer.mode("ETH") is ALLOW


# =========================================================================== §2.1 validation

VAL = {
    "validation_failure_escalate_after": 4,
    "validation_failure_cooldown_seconds": 25.0,
    "preview_failure_disable_after": 2,
    **NO_STALENESS,
}


class TestValidation:
    def test_consecutive_failures_restrict_every_symbol(self) -> None:
        layer, clock = make_layer(**VAL)
        mark(layer, "BTC")
        assert _observe_all(layer, [ev.ValidationCheck(ok=False)] * 3) == []
        clock.advance(2)
        effects = layer.observe(ev.ValidationCheck(ok=False))
        assert moves(effects, "validation") == [
            ("HEALTHY", "TRIPPED", "trip"),
            ("TRIPPED", "COOLDOWN", "recover"),
        ]
        assert_one(effects, Alert)
        # One global mode transition, not one per symbol (DESIGN §2.4).
        assert [(t.scope, t.dest) for t in transitions_of(effects, "mode")] == [
            (None, "REDUCE_ONLY")
        ]
        assert layer.mode() is REDUCE_ONLY
        assert layer.mode("BTC") is REDUCE_ONLY
        assert layer.mode("NEVER_SEEN") is REDUCE_ONLY
        assert run_timers_until(layer, clock, 26.5) == []
        effects = run_timers_until(layer, clock, 27.0)
        assert_transition(effects, "validation", "COOLDOWN", "HEALTHY", "expire", at=27.0)
        assert layer.mode() is ALLOW

    def test_a_success_resets_the_count(self) -> None:
        layer, _ = make_layer(**VAL)
        fail, ok = ev.ValidationCheck(ok=False), ev.ValidationCheck(ok=True)
        assert _observe_all(layer, [fail, fail, fail, ok, fail, fail, fail]) == []
        assert layer.mode() is ALLOW

    def test_preview_failures_never_count_as_validation_failures_unlike_the_original(
        self,
    ) -> None:
        # The original escalated preview failures into a global pause (DESIGN §2.1).
        layer, _ = make_layer(**VAL)
        fail = ev.ValidationCheck(ok=False)
        _observe_all(layer, [fail] * 3)
        effects = _observe_all(layer, [ev.PreviewResult(ok=False)] * 10)
        assert transitions_of(effects, "validation") == []
        assert layer.guard("validation").state is HEALTHY
        assert layer.mode() is ALLOW
        # ...nor do they reset the validation count: the 4th validation failure trips.
        effects = layer.observe(fail)
        assert moves(effects, "validation")[0] == ("HEALTHY", "TRIPPED", "trip")


# =========================================================================== §2.1 preview

PREV = {"preview_failure_disable_after": 3}


class TestPreview:
    def test_preview_is_disabled_after_consecutive_failures_without_restricting(self) -> None:
        layer, clock = make_layer(**PREV)
        assert _observe_all(layer, [ev.PreviewResult(ok=False)] * 2) == []
        assert layer.preview_enabled
        effects = layer.observe(ev.PreviewResult(ok=False))
        assert moves(effects, "preview") == [("HEALTHY", "TRIPPED", "trip")]
        assert_one(effects, DisablePreview)
        assert_one(effects, Alert)
        assert of_type(effects, ModeChanged) == []
        assert not layer.preview_enabled
        assert layer.mode() is ALLOW
        # Disabled for the session: results and time change nothing.
        effects = _observe_all(layer, [ev.PreviewResult(ok=True), ev.PreviewResult(ok=False)])
        clock.advance(100_000)
        effects += layer.tick()
        assert effects == []
        assert not layer.preview_enabled

    def test_a_success_resets_the_count(self) -> None:
        layer, _ = make_layer(**PREV)
        fail = ev.PreviewResult(ok=False)
        _observe_all(layer, [fail, fail, ev.PreviewResult(ok=True), fail, fail])
        assert layer.preview_enabled

    def test_operator_reset_re_enables_preview_with_the_count_forgotten(self) -> None:
        layer, clock = make_layer(**PREV)
        _observe_all(layer, [ev.PreviewResult(ok=False)] * 3)
        clock.advance(7)
        effects = layer.reset("preview")
        assert_transition(effects, "preview", "TRIPPED", "HEALTHY", "reset", at=7.0)
        assert layer.preview_enabled
        assert _observe_all(layer, [ev.PreviewResult(ok=False)] * 2) == []
        assert layer.preview_enabled


# =========================================================================== §2.1 broker_outage

BROKER = {
    "broker_outage_max_failures": 3,
    "broker_outage_cooldown_seconds": 40.0,
    **NO_STALENESS,
}


class TestBrokerOutage:
    def test_consecutive_failed_reads_restrict_globally(self) -> None:
        layer, _ = make_layer(**BROKER)
        reads = [ev.BrokerRead("balances", ok=False), ev.BrokerRead("positions", ok=False)]
        assert _observe_all(layer, reads) == []
        effects = layer.observe(ev.BrokerRead("balances", ok=False))
        assert moves(effects, "broker_outage") == [("HEALTHY", "TRIPPED", "trip")]
        assert_one(effects, Alert)
        assert layer.mode() is REDUCE_ONLY
        # The fault persists: no second alert, still TRIPPED (no time-based recovery).
        more = _observe_all(layer, [ev.BrokerRead("positions", ok=False)] * 5)
        assert more == []
        assert layer.guard("broker_outage").state is TRIPPED

    def test_a_failing_kind_is_not_hidden_by_the_other_kinds_successes(self) -> None:
        # The original counted one streak: a positions read that works every cycle reset it,
        # so balances could fail forever without the guard ever tripping.
        layer, _ = make_layer(**BROKER)
        effects: list[Effect] = []
        for _ in range(3):
            effects += layer.observe(ev.BrokerRead("balances", ok=False))
            effects += layer.observe(ev.BrokerRead("positions", ok=True))
        assert moves(effects, "broker_outage") == [("HEALTHY", "TRIPPED", "trip")]
        assert layer.guard("broker_outage").state is TRIPPED  # positions working is not enough
        recovered = layer.observe(ev.BrokerRead("balances", ok=True))
        assert moves(recovered, "broker_outage") == [("TRIPPED", "COOLDOWN", "recover")]

    def test_a_successful_read_cools_down_then_allows(self) -> None:
        layer, clock = make_layer(**BROKER)
        _observe_all(layer, [ev.BrokerRead("positions", ok=False)] * 3)
        clock.advance(5)
        effects = layer.observe(ev.BrokerRead("positions", ok=True))
        assert_transition(effects, "broker_outage", "TRIPPED", "COOLDOWN", "recover", at=5.0)
        assert run_timers_until(layer, clock, 44.5) == []
        assert layer.mode() is REDUCE_ONLY
        effects = run_timers_until(layer, clock, 45.0)
        assert_transition(effects, "broker_outage", "COOLDOWN", "HEALTHY", "expire", at=45.0)
        assert layer.mode() is ALLOW

    def test_a_success_between_failures_resets_the_count(self) -> None:
        layer, _ = make_layer(**BROKER)
        fail, ok = ev.BrokerRead("balances", ok=False), ev.BrokerRead("balances", ok=True)
        assert _observe_all(layer, [fail, fail, ok, fail, fail]) == []
        assert layer.mode() is ALLOW


# =========================================================================== §2.1 reconciliation

REC = {
    "order_reconciliation_drift_max_failures": 3,
    "api_health_cooldown_seconds": 50.0,
    **NO_STALENESS,
}


class TestReconciliation:
    def test_three_dirty_audits_cancel_the_unknown_orders_and_alert(self) -> None:
        layer, _ = make_layer(**REC)
        first = [ev.ReconciliationAudit(("o1",)), ev.ReconciliationAudit(("o1", "o2"))]
        assert _observe_all(layer, first) == []
        effects = layer.observe(ev.ReconciliationAudit(("o1", "o2")))
        assert moves(effects, "reconciliation") == [("HEALTHY", "TRIPPED", "trip")]
        cancel = assert_one(effects, CancelOrders)
        assert cancel.order_ids == ("o1", "o2")
        assert_one(effects, Alert)
        assert layer.mode() is REDUCE_ONLY
        # The same orders again: not cancelled twice; a newly found one is.
        assert layer.observe(ev.ReconciliationAudit(("o1", "o2"))) == []
        effects = layer.observe(ev.ReconciliationAudit(("o2", "o3")))
        assert [c.order_ids for c in of_type(effects, CancelOrders)] == [("o3",)]

    def test_a_clean_audit_cools_down_for_the_api_health_cooldown(self) -> None:
        layer, clock = make_layer(**REC)
        _observe_all(layer, [ev.ReconciliationAudit(("o1",))] * 3)
        clock.advance(2)
        effects = layer.observe(ev.ReconciliationAudit(()))
        assert_transition(effects, "reconciliation", "TRIPPED", "COOLDOWN", "recover", at=2.0)
        assert layer.guard("reconciliation").seconds_until_lift == 50.0
        assert run_timers_until(layer, clock, 51.5) == []
        assert layer.mode() is REDUCE_ONLY
        effects = run_timers_until(layer, clock, 52.0)
        assert_transition(effects, "reconciliation", "COOLDOWN", "HEALTHY", "expire", at=52.0)
        assert layer.mode() is ALLOW

    def test_a_clean_audit_before_the_threshold_resets_the_count(self) -> None:
        layer, _ = make_layer(**REC)
        dirty, clean = ev.ReconciliationAudit(("o1",)), ev.ReconciliationAudit()
        assert _observe_all(layer, [dirty, dirty, clean, dirty, dirty]) == []
        assert layer.mode() is ALLOW


# =========================================================================== §2.2 websocket

WS = {
    "ws_reconnect_max_attempts": 3,
    "ws_reconnect_backoff_base": 1.0,
    "ws_reconnect_backoff_multiplier": 2.0,
    "ws_reconnect_backoff_max": 4.0,
    "ws_reconnect_jitter_pct": 0.25,
    "ws_reconnect_pause_seconds": 30.0,
    "ws_message_stale_seconds": 5.0,
    "ws_reconnect_reset_seconds": 20.0,
    **NO_STALENESS,
}


def _until_reconnect(layer: ReliabilityLayer, clock: ManualClock) -> tuple[list[Effect], float]:
    """Tick at each deadline until a `Reconnect` comes out; return the effects and when."""
    effects: list[Effect] = []
    for _ in range(10):
        due = layer.next_deadline()
        assert due is not None and math.isfinite(due), "no reconnect scheduled"
        clock.jump_to(due)
        effects += layer.tick()
        if of_type(effects, Reconnect):
            return effects, clock()
    raise AssertionError(f"no Reconnect after 10 deadlines: {effects!r}")


def _degrade(layer: ReliabilityLayer, clock: ManualClock) -> list[Effect]:
    """Start feed 'market' and fail every attempt until it is DEGRADED; all effects."""
    effects = layer.observe(ev.FeedStarted("market"))
    while layer.feed_state("market").name != "DEGRADED":
        effects += layer.observe(ev.FeedDisconnected("market", "refused"))
        if layer.feed_state("market").name != "DEGRADED":
            effects += _until_reconnect(layer, clock)[0]
    return effects


class TestWebsocket:
    def test_a_failing_feed_degrades_after_exactly_max_attempts_reconnects(self) -> None:
        layer, clock = make_layer(**WS)
        effects = layer.observe(ev.FeedStarted("market"))
        assert moves(effects, "feed:market") == [("DISCONNECTED", "CONNECTING", "start")]
        attempts = []
        for _ in range(3):
            dropped_at = clock()
            effects = layer.observe(ev.FeedDisconnected("market", "refused"))
            assert moves(effects, "feed:market") == [("CONNECTING", "BACKOFF", "disconnected")]
            assert layer.mode() is ALLOW
            effects, reconnect_at = _until_reconnect(layer, clock)
            assert moves(effects, "feed:market") == [("BACKOFF", "CONNECTING", "retry")]
            attempts.append(assert_one(effects, Reconnect).attempt)
            # base 1 s, doubling, capped at 4 s, ±25%: never above the cap.
            assert 0.75 <= reconnect_at - dropped_at <= 4.0
        assert attempts == [1, 2, 3]
        effects = layer.observe(ev.FeedDisconnected("market", "refused"))
        assert moves(effects, "feed:market") == [("CONNECTING", "DEGRADED", "disconnected")]
        exceeded = assert_one(effects, MaxAttemptsExceeded)
        assert (exceeded.feed, exceeded.pause_seconds) == ("market", 30.0)
        assert moves(effects, "websocket") == [("HEALTHY", "TRIPPED", "trip")]
        assert layer.mode() is REDUCE_ONLY
        assert layer.mode("BTC") is REDUCE_ONLY
        # DEGRADED keeps reconnecting at the longest delay; the callback is not asked again.
        later: list[Effect] = []
        for _ in range(4):
            dropped_at = clock()
            step, reconnect_at = _until_reconnect(layer, clock)
            later += step
            assert 3.0 <= reconnect_at - dropped_at <= 4.0
            later += layer.observe(ev.FeedDisconnected("market", "refused"))
        assert count_of(later, MaxAttemptsExceeded) == 0
        assert layer.feed_state("market").name == "DEGRADED"
        assert layer.guard("websocket").state is TRIPPED

    def test_a_degraded_feed_that_connects_cools_down_for_the_reconnect_pause(self) -> None:
        layer, clock = make_layer(**WS)
        _degrade(layer, clock)
        _, _ = _until_reconnect(layer, clock)
        connected_at = clock()
        effects = layer.observe(ev.FeedConnected("market"))
        assert moves(effects, "feed:market") == [("DEGRADED", "CONNECTED", "connected")]
        assert_transition(effects, "websocket", "TRIPPED", "COOLDOWN", "recover", at=connected_at)
        assert layer.guard("websocket").seconds_until_lift == 30.0
        effects = []
        while clock() + 2 < connected_at + 30:  # a live feed: a message every 2 s
            effects += run_timers_until(layer, clock, clock() + 2)
            effects += layer.observe(ev.FeedMessage("market"))
        assert transitions_of(effects, "websocket") == []
        assert layer.mode() is REDUCE_ONLY
        effects = run_timers_until(layer, clock, connected_at + 30)
        assert_transition(
            effects, "websocket", "COOLDOWN", "HEALTHY", "expire", at=connected_at + 30
        )
        assert layer.mode() is ALLOW
        assert layer.feed_state("market").name == "CONNECTED"

    def test_a_batch_of_messages_counts_each_and_proves_the_stream_alive_once(self) -> None:
        layer, clock = make_layer(**WS)
        layer.observe(ev.FeedStarted("market"))
        layer.observe(ev.FeedConnected("market"))
        clock.advance(3)
        assert layer.observe(ev.FeedMessage("market", count=64)) == []
        assert layer.observe(ev.FeedMessage("market")) == []
        assert layer.status()["feeds"]["market"]["messages"] == 65
        assert layer.next_deadline() == 8.0  # silence is counted from the batch
        for bad in (0, -1, True, 1.5):
            with pytest.raises(InvalidObservation, match=r"FeedMessage\.count"):
                ev.FeedMessage("market", count=bad)  # type: ignore[arg-type]

    def test_a_silent_connected_feed_is_closed_and_backs_off(self) -> None:
        layer, clock = make_layer(**WS)
        layer.observe(ev.FeedStarted("market"))
        layer.observe(ev.FeedConnected("market"))
        clock.advance(3)
        assert layer.observe(ev.FeedMessage("market")) == []
        assert layer.next_deadline() == 8.0
        assert run_timers_until(layer, clock, 7.5) == []
        effects = run_timers_until(layer, clock, 8.0)
        close = assert_one(effects, CloseConnection)
        assert close.feed == "market"
        assert_transition(effects, "feed:market", "CONNECTED", "BACKOFF", "stale", at=8.0)
        assert effects.index(close) < effects.index(transitions_of(effects, "feed:market")[0])
        assert layer.mode() is ALLOW  # one silent spell is not a degradation
        effects, _ = _until_reconnect(layer, clock)
        assert assert_one(effects, Reconnect).feed == "market"

    def test_no_reconnect_is_asked_for_a_feed_that_is_connected(self) -> None:
        # Found: a DEGRADED feed that connects keeps its armed retry timer, which later asks
        # the shell to open a second connection while the first one is up.
        layer, clock = make_layer(**WS)
        _degrade(layer, clock)
        assert layer.feed_state("market").name == "DEGRADED"
        layer.observe(ev.FeedConnected("market"))
        effects: list[Effect] = []
        for _ in range(4):
            effects += run_timers_until(layer, clock, clock() + 2)
            effects += layer.observe(ev.FeedMessage("market"))
        assert layer.feed_state("market").name == "CONNECTED"
        assert of_type(effects, Reconnect) == []


class TestWebsocketAttempts:
    def test_a_connection_that_stays_up_for_the_reset_time_resets_the_attempts(self) -> None:
        layer, clock = make_layer(**WS)
        layer.observe(ev.FeedStarted("market"))
        for _ in range(2):  # two failed reconnects: one short of degrading
            layer.observe(ev.FeedDisconnected("market"))
            _until_reconnect(layer, clock)
        layer.observe(ev.FeedConnected("market"))
        up_since = clock()
        while clock() < up_since + 20:  # stable for ws_reconnect_reset_seconds
            run_timers_until(layer, clock, clock() + 2)
            layer.observe(ev.FeedMessage("market"))
        layer.observe(ev.FeedDisconnected("market"))
        effects, _ = _until_reconnect(layer, clock)
        assert assert_one(effects, Reconnect).attempt == 1  # counting from scratch
        assert layer.feed_state("market").name == "CONNECTING"

    def test_a_connection_that_drops_at_once_keeps_climbing_towards_degraded(self) -> None:
        layer, clock = make_layer(**WS)
        layer.observe(ev.FeedStarted("market"))
        attempts = []
        effects: list[Effect] = []
        while layer.feed_state("market").name != "DEGRADED":
            effects += layer.observe(ev.FeedDisconnected("market"))
            if layer.feed_state("market").name == "DEGRADED":
                break
            step, _ = _until_reconnect(layer, clock)
            attempts.append(assert_one(step, Reconnect).attempt)
            effects += layer.observe(ev.FeedConnected("market"))  # up, then down at once
            clock.advance(1)
        assert attempts == [1, 2, 3]
        assert count_of(effects, MaxAttemptsExceeded) == 1

    def test_zero_max_attempts_means_the_feed_never_degrades(self) -> None:
        layer, clock = make_layer(**{**WS, "ws_reconnect_max_attempts": 0})
        layer.observe(ev.FeedStarted("market"))
        effects: list[Effect] = []
        for _ in range(25):
            effects += layer.observe(ev.FeedDisconnected("market"))
            effects += _until_reconnect(layer, clock)[0]
        assert layer.feed_state("market").name == "CONNECTING"
        assert of_type(effects, MaxAttemptsExceeded) == []
        assert layer.mode() is ALLOW

    def test_the_guard_recovers_only_when_no_feed_is_degraded(self) -> None:
        layer, clock = make_layer(**{**WS, "ws_reconnect_max_attempts": 1})
        effects: list[Effect] = []
        for feed in ("market", "user"):
            effects += layer.observe(ev.FeedStarted(feed))
            effects += layer.observe(ev.FeedDisconnected(feed))
        effects += run_timers_until(layer, clock, clock() + 2)
        for feed in ("market", "user"):
            effects += layer.observe(ev.FeedDisconnected(feed))
        assert [m.feed for m in of_type(effects, MaxAttemptsExceeded)] == ["market", "user"]
        assert moves(effects, "websocket") == [("HEALTHY", "TRIPPED", "trip")]
        retries = run_timers_until(layer, clock, clock() + 4)  # DEGRADED retries: 3..4 s
        assert sorted(r.feed for r in of_type(retries, Reconnect)) == ["market", "user"]
        effects = layer.observe(ev.FeedConnected("market"))
        assert transitions_of(effects, "websocket") == []  # "user" is still degraded
        assert layer.mode() is REDUCE_ONLY
        effects = layer.observe(ev.FeedConnected("user"))
        assert moves(effects, "websocket") == [("TRIPPED", "COOLDOWN", "recover")]


# =========================================================================== §2.4 decide()

RESTRICT_GLOBALLY = {"broker_outage_max_failures": 1, "broker_outage_cooldown_seconds": 40.0}


def _reduce_only_layer() -> tuple[ReliabilityLayer, ManualClock]:
    """A layer whose global mode is REDUCE_ONLY (broker reads failing), BTC marked."""
    layer, clock = make_layer(**RESTRICT_GLOBALLY, **NO_STALENESS)
    mark(layer, "BTC")
    layer.observe(ev.BrokerRead("positions", ok=False))
    assert layer.mode("BTC") is REDUCE_ONLY
    return layer, clock


class TestDecide:
    @pytest.mark.parametrize("position", [None, D(0), D(3), D(-3)])
    @pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
    def test_allow_mode_allows_any_order(self, side: Side, position: Decimal | None) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        decision = layer.decide(OrderIntent("BTC", side, D("7.5")), position=position)
        assert (decision.allowed, decision.mode, decision.reasons) == (True, ALLOW, ())

    @pytest.mark.parametrize(
        ("intent", "position"),
        [
            (sell("BTC", "0.5"), D(2)),
            (sell("BTC", 2), D(2)),
            (buy("BTC", "1.5"), D("-1.5")),
            (buy("BTC", "0.001"), D("-1")),
        ],
    )
    def test_reduce_only_allows_an_order_that_reduces_the_position(
        self, intent: OrderIntent, position: Decimal
    ) -> None:
        layer, _ = _reduce_only_layer()
        decision = layer.decide(intent, position=position)
        assert decision.allowed
        assert decision.mode is REDUCE_ONLY
        assert decision.max_quantity == abs(position)

    @pytest.mark.parametrize(
        ("intent", "position"),
        [(sell("BTC", "2.5"), D(2)), (buy("BTC", 2), D("-1.5"))],
    )
    def test_reduce_only_refuses_a_flip_with_the_position_as_max_quantity(
        self, intent: OrderIntent, position: Decimal
    ) -> None:
        layer, _ = _reduce_only_layer()
        decision = layer.decide(intent, position=position)
        assert not decision.allowed
        assert decision.mode is REDUCE_ONLY
        assert decision.max_quantity == abs(position)

    @pytest.mark.parametrize(
        ("intent", "position"),
        [(buy("BTC", 1), D(2)), (sell("BTC", 1), D(-2)), (buy("BTC", 1), D(0))],
        ids=["adds-to-long", "adds-to-short", "opens-from-flat"],
    )
    def test_reduce_only_refuses_an_order_that_does_not_reduce(
        self, intent: OrderIntent, position: Decimal
    ) -> None:
        layer, _ = _reduce_only_layer()
        decision = layer.decide(intent, position=position)
        assert (decision.allowed, decision.max_quantity) == (False, D(0))

    def test_reduce_only_refuses_when_the_position_is_unknown(self) -> None:
        layer, _ = _reduce_only_layer()
        decision = layer.decide(sell("BTC", 1), position=None)
        assert not decision.allowed
        assert decision.mode is REDUCE_ONLY

    def test_paused_refuses_reducing_orders_too(self) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("maintenance", symbol="BTC")
        decision = layer.decide(sell("BTC", 1), position=D(2))
        assert (decision.allowed, decision.mode, decision.max_quantity) == (False, PAUSED, D(0))

    def test_refusal_reasons_name_guard_scope_state_and_seconds_until_lift(self) -> None:
        layer, clock = make_layer(
            **RESTRICT_GLOBALLY,
            **NO_STALENESS,
            slippage_failure_pause_after=1,
            slippage_pause_seconds=15.0,
        )
        mark(layer, "BTC")
        layer.observe(ev.BrokerRead("balances", ok=False))
        refused = layer.decide(buy("BTC"), position=D(0))
        assert refused.reasons == (Reason("broker_outage", None, "TRIPPED", None),)
        clock.advance(10)
        layer.observe(ev.BrokerRead("balances", ok=True))  # COOLDOWN until 50
        layer.observe(ev.SlippageCheck("BTC", ok=False))  # BTC: COOLDOWN until 25
        layer.halt("desk review", symbol="BTC", ttl=8.0)  # until 18
        clock.advance(5)
        refused = layer.decide(buy("BTC"), position=D(0))
        assert not refused.allowed
        assert set(refused.reasons) == {
            Reason("broker_outage", None, "COOLDOWN", 35.0),
            Reason("slippage", "BTC", "COOLDOWN", 10.0),
            Reason("operator", "BTC", "HALTED", 3.0),
        }
        assert all(isinstance(r.state, str) for r in refused.reasons)

    def test_the_no_mark_reason_is_spelled_as_documented(self) -> None:
        # `Reason.guard`: a symbol whose first mark has not arrived is restricted by
        # "mark_staleness" in state "NO_MARK", seen or never seen.
        layer, _ = make_layer()
        layer.observe(ev.SlippageCheck("ETH", ok=True))
        for symbol in ("BTC", "ETH"):
            refused = layer.decide(buy(symbol), position=D(0))
            assert refused.reasons == (Reason("mark_staleness", symbol, "NO_MARK", None),)

    def test_a_symbol_is_never_looser_than_global(self) -> None:
        layer, _ = _reduce_only_layer()
        assert layer.guard("mark_staleness", "BTC").state is HEALTHY
        assert layer.mode() is REDUCE_ONLY
        assert layer.decide(buy("BTC"), position=D(0)).mode is REDUCE_ONLY
        layer.halt("incident")
        for symbol in ("BTC", "NEVER_SEEN"):
            assert layer.mode(symbol) is PAUSED
            assert not layer.decide(sell(symbol), position=D(5)).allowed
        layer.resume()
        layer.halt("symbol review", symbol="BTC")  # tighter than global: stays tighter
        assert layer.mode() is REDUCE_ONLY
        assert layer.mode("BTC") is PAUSED


# =========================================================================== operator calls


class TestOperator:
    def test_halt_pauses_every_symbol_until_resume(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        clock.advance(3)
        effects = layer.halt("exchange maintenance")
        assert_transition(effects, "operator", "RUNNING", "HALTED", "halt", scope=None, at=3.0)
        assert_one(effects, Alert)
        assert layer.mode() is PAUSED
        refused = layer.decide(sell("BTC"), position=D(1))
        assert not refused.allowed
        assert refused.reasons == (Reason("operator", None, "HALTED", None),)
        assert layer.next_deadline() == 100_000.0  # BTC's staleness: the halt has no deadline
        effects = layer.resume()
        assert_transition(effects, "operator", "HALTED", "RUNNING", "resume", at=3.0)
        assert layer.mode() is ALLOW
        assert layer.decide(buy("BTC"), position=D(0)).allowed

    def test_a_symbol_halt_pauses_only_that_symbol(self) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC", "ETH")
        effects = layer.halt("bad fills", symbol="BTC")
        assert_transition(effects, "operator", "RUNNING", "HALTED", "halt", scope="BTC")
        assert (layer.mode(), layer.mode("BTC"), layer.mode("ETH")) == (ALLOW, PAUSED, ALLOW)
        layer.resume("BTC")
        assert layer.mode("BTC") is ALLOW

    def test_a_halt_with_a_ttl_lifts_itself_at_the_deadline_via_tick(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        clock.advance(3)
        layer.halt("cool off", ttl=12.0)
        assert layer.next_deadline() == 15.0
        clock.advance(5)
        refused = layer.decide(buy("BTC"), position=D(0))
        assert refused.reasons == (Reason("operator", None, "HALTED", 7.0),)
        assert run_timers_until(layer, clock, 14.5) == []
        assert layer.mode() is PAUSED
        effects = run_timers_until(layer, clock, 15.0)
        assert_transition(effects, "operator", "HALTED", "RUNNING", "expire", at=15.0)
        assert layer.mode() is ALLOW

    def test_a_new_halt_replaces_the_time_limit(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("short", ttl=5.0)
        effects = layer.halt("until further notice")
        assert_transition(effects, "operator", "HALTED", "HALTED", "halt", scope=None)
        assert run_timers_until(layer, clock, 50.0) == []
        assert layer.mode() is PAUSED
        layer.halt("a last minute", ttl=60.0)
        effects = run_timers_until(layer, clock, 110.0)
        assert_transition(effects, "operator", "HALTED", "RUNNING", "expire", at=110.0)
        assert layer.mode() is ALLOW

    def test_reset_of_api_health_trips_again_while_a_breaker_is_open(self) -> None:
        layer, _ = make_layer(circuit_failure_threshold=2)
        _observe_all(layer, [_fail("orders")] * 2)
        effects = layer.reset("api_health")
        assert moves(effects, "api_health") == [
            ("TRIPPED", "HEALTHY", "reset"),
            ("HEALTHY", "TRIPPED", "trip"),
        ]
        assert layer.mode() is REDUCE_ONLY

    def test_reset_of_a_tripped_guard_is_audited_as_a_transition(self) -> None:
        layer, clock = make_layer(**BROKER)
        _observe_all(layer, [ev.BrokerRead("balances", ok=False)] * 3)
        clock.advance(4)
        effects = layer.reset("broker_outage")
        assert_transition(effects, "broker_outage", "TRIPPED", "HEALTHY", "reset", at=4.0)
        changed = assert_one(effects, ModeChanged)
        assert (changed.source, changed.dest) == (REDUCE_ONLY, ALLOW)
        assert layer.mode() is ALLOW
        # The count is forgotten too: it takes three new failures to trip again.
        assert _observe_all(layer, [ev.BrokerRead("balances", ok=False)] * 2) == []

    def test_reset_of_a_cooling_symbol_guard_lifts_it_now(self) -> None:
        layer, clock = make_layer(**SLIP)
        mark(layer, "BTC")
        _observe_all(layer, [ev.SlippageCheck("BTC", ok=False)] * 3)
        clock.advance(2)
        effects = layer.reset("slippage", symbol="BTC")
        assert_transition(effects, "slippage", "COOLDOWN", "HEALTHY", "reset", scope="BTC", at=2.0)
        assert layer.mode("BTC") is ALLOW
        assert run_timers_until(layer, clock, 30.0) == []  # the old cooldown does not fire

    def test_reset_of_the_websocket_guard_trips_again_while_a_feed_is_degraded(self) -> None:
        layer, clock = make_layer(**WS)
        _degrade(layer, clock)
        effects = layer.reset("websocket")
        assert moves(effects, "websocket") == [
            ("TRIPPED", "HEALTHY", "reset"),
            ("HEALTHY", "TRIPPED", "trip"),
        ]
        assert of_type(effects, MaxAttemptsExceeded) == []  # once per feed entering DEGRADED
        assert layer.mode() is REDUCE_ONLY

    def test_reset_of_a_stale_mark_guard_trips_again_while_no_mark_arrives(self) -> None:
        # Found: the eager staleness timer already fired; after a reset no timer is left,
        # so a symbol with no fresh mark trades as ALLOW forever (DESIGN §2.1: HEALTHY
        # observes, and "no fresh mark for the threshold" still holds).
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        run_timers_until(layer, clock, 31.0)
        layer.reset("mark_staleness", symbol="BTC")
        run_timers_until(layer, clock, 31.0 + 30.0)
        assert layer.guard("mark_staleness", "BTC").state is TRIPPED
        assert not layer.decide(buy("BTC"), position=D(0)).allowed


# =========================================================================== §3 timers and reads


class TestTimers:
    @pytest.mark.parametrize("drain", ["tick", "observe"])
    def test_decide_applies_a_due_deadline_and_its_effects_are_not_lost(self, drain: str) -> None:
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        clock.advance(45)  # past the staleness deadline (30) and no tick
        refused = layer.decide(buy("BTC"), position=D(0))
        assert not refused.allowed
        assert refused.mode is REDUCE_ONLY
        assert Reason("mark_staleness", "BTC", "TRIPPED", None) in refused.reasons
        if drain == "tick":
            effects = layer.tick()
        else:
            effects = layer.observe(ev.ValidationCheck(ok=True))
        assert_transition(effects, "mark_staleness", "HEALTHY", "TRIPPED", "trip", at=30.0)
        assert_one(effects, Alert)
        changed = assert_one(effects, ModeChanged)
        assert (changed.scope, changed.dest) == ("BTC", REDUCE_ONLY)
        assert layer.tick() == []  # returned once, not twice

    def test_next_deadline_is_none_when_no_timer_is_armed(self) -> None:
        # DESIGN §3 and the docstring: "when tick() is next needed, or None if never".
        layer, _ = make_layer()
        assert layer.next_deadline() is None

    def test_next_deadline_is_the_earliest_armed_deadline(self) -> None:
        layer, clock = make_layer(**MARK, slippage_failure_pause_after=1)
        mark(layer, "BTC")  # stale at 30
        clock.advance(1)
        layer.observe(ev.SlippageCheck("BTC", ok=False))  # cooldown until 61
        layer.halt("short", ttl=5.0)  # until 6
        assert layer.next_deadline() == 6.0
        run_timers_until(layer, clock, 6.0)
        assert layer.next_deadline() == 30.0
        run_timers_until(layer, clock, 30.0)
        assert layer.next_deadline() == 61.0

    def test_status_is_strict_json(self) -> None:
        # status() is documented JSON-ready; an infinite float is not JSON.
        layer, _ = make_layer()
        json.dumps(layer.status(), allow_nan=False)
        busy, _ = _busy_layer()
        assert json.loads(json.dumps(busy.status(), allow_nan=False)) == busy.status()
        json.dumps(busy.snapshot(), allow_nan=False)

    def test_status_after_a_deadline_passed_shows_the_deadline_applied(self) -> None:
        # DESIGN §2.1: COOLDOWN ends at its deadline "not discovered lazily on the next query";
        # mode() and guard() apply a due deadline first, status() must agree with them.
        layer, clock = make_layer(validation_failure_escalate_after=1)
        layer.observe(ev.ValidationCheck(ok=False))
        clock.advance(500)  # past the 180 s cooldown, no tick
        status = layer.status()
        assert status["global"]["guards"]["validation"]["state"] == "HEALTHY"
        assert status["mode"] == "ALLOW"
        assert layer.mode() is ALLOW


# =========================================================================== §3 bad input


def _busy_layer() -> tuple[ReliabilityLayer, ManualClock]:
    """A layer with something in every part of status(), and no deadline due now."""
    layer, clock = make_layer(
        broker_outage_max_failures=1,
        slippage_failure_pause_after=1,
        mark_staleness_threshold_seconds=1000.0,
    )
    mark(layer, "BTC", "ETH")
    layer.observe(ev.BrokerRead("positions", ok=False))
    layer.observe(ev.SlippageCheck("ETH", ok=False))
    layer.observe(ev.ApiCall("orders", ok=False, status=503))
    layer.observe(ev.FeedStarted("market"))
    layer.halt("review", symbol="BTC", ttl=100.0)
    clock.advance(1)
    due = layer.next_deadline()
    assert due is not None and due > clock()
    return layer, clock


BadCall = Callable[[ReliabilityLayer], object]
# Values of the wrong type, typed Any so the calls below read as a caller's mistake would.
A_FLOAT: Any = 1.0
A_LIST: Any = ["o1"]
A_STRING: Any = "orders"
A_INT: Any = 123
A_DICT: Any = {"symbol": "BTC", "side": "BUY", "quantity": "1"}

BAD_INPUT: list[tuple[str, BadCall, type[Exception], list[str]]] = [
    ("usage-nan", lambda L: L.observe(ev.RateLimitUsage(math.nan)), ValueError, ["usage"]),
    ("usage-above-1", lambda L: L.observe(ev.RateLimitUsage(1.5)), ValueError, ["usage"]),
    ("mark-empty-symbol", lambda L: L.observe(ev.MarkUpdate("")), ValueError, ["symbol"]),
    (
        "slippage-blank-symbol",
        lambda L: L.observe(ev.SlippageCheck("  ", ok=False)),
        ValueError,
        ["symbol"],
    ),
    ("mode-empty-symbol", lambda L: L.mode(""), ValueError, ["symbol"]),
    ("halt-empty-symbol", lambda L: L.halt("x", symbol=""), ValueError, ["symbol"]),
    ("halt-empty-reason", lambda L: L.halt(""), ValueError, ["reason"]),
    ("halt-ttl-zero", lambda L: L.halt("x", ttl=0), ValueError, ["ttl"]),
    ("halt-ttl-negative", lambda L: L.halt("x", ttl=-1.0), ValueError, ["ttl"]),
    ("halt-ttl-nan", lambda L: L.halt("x", ttl=math.nan), ValueError, ["ttl"]),
    ("halt-ttl-inf", lambda L: L.halt("x", ttl=math.inf), ValueError, ["ttl"]),
    ("halt-ttl-bool", lambda L: L.halt("x", ttl=True), TypeError, ["ttl", "True"]),
    ("guard-empty-symbol", lambda L: L.guard("mark_staleness", ""), ValueError, ["symbol"]),
    ("quantity-zero", lambda L: L.decide(buy("BTC", 0)), ValueError, ["quantity"]),
    ("quantity-negative", lambda L: L.decide(buy("BTC", -1)), ValueError, ["quantity"]),
    ("quantity-nan", lambda L: L.decide(buy("BTC", "NaN")), ValueError, ["quantity"]),
    ("quantity-inf", lambda L: L.decide(buy("BTC", "Infinity")), ValueError, ["quantity"]),
    (
        "quantity-float",
        lambda L: L.decide(OrderIntent("BTC", Side.BUY, A_FLOAT)),
        ValueError,
        ["quantity"],
    ),
    ("intent-empty-symbol", lambda L: L.decide(buy("", 1)), ValueError, ["symbol"]),
    (
        "position-nan",
        lambda L: L.decide(sell("BTC"), position=D("NaN")),
        ValueError,
        ["position"],
    ),
    (
        "position-float",
        lambda L: L.decide(sell("BTC"), position=A_FLOAT),
        TypeError,
        ["position", "Decimal", "float", "1.0"],
    ),
    ("api-empty-category", lambda L: L.observe(ev.ApiCall("", ok=False)), ValueError, ["category"]),
    (
        "api-ok-with-503",
        lambda L: L.observe(ev.ApiCall("orders", ok=True, status=503)),
        ValueError,
        ["status"],
    ),
    (
        "api-negative-latency",
        lambda L: L.observe(ev.ApiCall("orders", ok=True, latency=-1.0)),
        ValueError,
        ["latency"],
    ),
    (
        "broker-bad-kind",
        lambda L: L.observe(ev.BrokerRead(A_STRING, ok=False)),
        ValueError,
        ["kind"],
    ),
    (
        "audit-list-not-tuple",
        lambda L: L.observe(ev.ReconciliationAudit(A_LIST)),
        ValueError,
        ["unknown_order_ids"],
    ),
    ("not-an-observation", lambda L: L.observe(A_STRING), TypeError, ["observation", "'orders'"]),
    (
        "unknown-guard",
        lambda L: L.guard("mark_stalenes", "BTC"),
        LookupError,
        ["mark_stalenes", *ALL_GUARD_NAMES],
    ),
    ("reset-unknown-guard", lambda L: L.reset("api"), LookupError, ["'api'", *ALL_GUARD_NAMES]),
    ("symbol-guard-without-symbol", lambda L: L.guard("slippage"), ValueError, ["symbol"]),
    ("global-guard-with-symbol", lambda L: L.guard("api_health", "BTC"), ValueError, ["symbol"]),
    ("reset-global-with-symbol", lambda L: L.reset("validation", "BTC"), ValueError, ["symbol"]),
    ("message-unknown-feed", lambda L: L.observe(ev.FeedMessage("user")), LookupError, ["user"]),
    (
        "message-not-connected",
        lambda L: L.observe(ev.FeedMessage("market")),
        RuntimeError,
        ["message"],
    ),
    ("start-feed-twice", lambda L: L.observe(ev.FeedStarted("market")), RuntimeError, ["start"]),
    # Issue 11 item 8: categories are a configured set, not a new breaker per spelling.
    (
        "api-call-unknown-category",
        lambda L: L.observe(ev.ApiCall("ordrs", ok=False, status=503)),
        ValueError,
        ["'ordrs'", "accounts, market, orders", "GPT_TRADER_API_CATEGORIES"],
    ),
    ("admit-unknown-category", lambda L: L.admit("ordrs"), ValueError, ["'ordrs'", "orders"]),
    ("breaker-unknown-category", lambda L: L.breaker_state("ordrs"), ValueError, ["'ordrs'"]),
    # Issue 11 item 4: a halt is PAUSED or REDUCE_ONLY, nothing else.
    ("halt-mode-allow", lambda L: L.halt("x", mode=ALLOW), ValueError, ["PAUSED", "REDUCE_ONLY"]),
    ("halt-mode-str", lambda L: L.halt("x", mode=A_STRING), TypeError, ["mode", "'orders'"]),
    ("reset-operator", lambda L: L.reset("operator"), ValueError, ["operator", "resume"]),
    ("trip-operator", lambda L: L.trip("operator", "x", "BTC"), ValueError, ["halt"]),
    # Issue 11 item 14: a wrong type is a TypeError naming what was expected.
    (
        "decide-dict",
        lambda L: L.decide(A_DICT),
        TypeError,
        ["decide() intent must be an OrderIntent, got dict", "'symbol'"],
    ),
    ("guard-name-int", lambda L: L.guard(A_INT), TypeError, ["guard name", "str", "123"]),
    ("guard-symbol-int", lambda L: L.guard("slippage", A_INT), TypeError, ["symbol", "123"]),
    ("mode-int", lambda L: L.mode(A_INT), TypeError, ["symbol must be a str, got int 123"]),
    ("halt-reason-int", lambda L: L.halt(A_INT), TypeError, ["reason", "str", "123"]),
    ("halt-symbol-int", lambda L: L.halt("x", symbol=A_INT), TypeError, ["symbol", "123"]),
    ("halt-ttl-str", lambda L: L.halt("x", ttl=A_STRING), TypeError, ["ttl", "'orders'"]),
    ("resume-symbol-int", lambda L: L.resume(A_INT), TypeError, ["symbol", "123"]),
    ("admit-int", lambda L: L.admit(A_INT), TypeError, ["category", "123"]),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("call", "error", "named"),
        [case[1:] for case in BAD_INPUT],
        ids=[case[0] for case in BAD_INPUT],
    )
    def test_bad_input_raises_a_named_error_and_changes_nothing(
        self, call: BadCall, error: type[Exception], named: list[str]
    ) -> None:
        layer, _ = _busy_layer()
        before = status_of(layer)
        modes = [layer.mode(s) for s in (None, "BTC", "ETH")]
        with pytest.raises(error) as raised:
            call(layer)
        for word in named:
            assert word in str(raised.value)
        assert status_of(layer) == before
        assert [layer.mode(s) for s in (None, "BTC", "ETH")] == modes
        assert layer.tick() == []  # nothing was queued either

    def test_errors_are_tradeguard_errors_of_the_documented_kinds(self) -> None:
        layer, _ = _busy_layer()
        with pytest.raises(UnknownGuard):
            layer.guard("nope")
        with pytest.raises(InvalidTransition):
            layer.observe(ev.FeedMessage("market"))  # the feed is not connected
        with pytest.raises(InvalidObservation):
            layer.mode("")
        with pytest.raises(InvalidObservation):
            layer.admit("ordrs")

    def test_a_clock_going_backwards_is_refused_and_changes_nothing(self) -> None:
        now = [10.0]
        layer = ReliabilityLayer(
            make_settings(validation_failure_escalate_after=1),
            lambda: now[0],
            rng=random.Random(0),
        )
        layer.observe(ev.MarkUpdate("BTC"))
        layer.observe(ev.ValidationCheck(ok=False))
        before = status_of(layer)
        now[0] = 9.0
        calls: list[Callable[[], object]] = [
            lambda: layer.observe(ev.ValidationCheck(ok=True)),
            layer.tick,
            lambda: layer.halt("x"),
            lambda: layer.reset("validation"),
        ]
        for call in calls:
            with pytest.raises(ValueError, match="clock"):
                call()
        now[0] = 10.0
        assert status_of(layer) == before


# =========================================================================== §3 restore


class TestRestore:
    def test_a_restored_websocket_guard_recovers_when_a_feed_connects_again(self) -> None:
        # snapshot(): "a websocket guard that was restricting stays so until a feed connects
        # again". Found: the restored guard never learns that any feed connected.
        layer, clock = make_layer(**WS)
        _degrade(layer, clock)
        settings = make_settings(**WS)
        saved = json.loads(json.dumps(layer.snapshot()))
        restored = ReliabilityLayer.restore(settings, saved, clock, clock.wall)
        assert restored.mode() is REDUCE_ONLY
        restored.observe(ev.FeedStarted("market"))
        effects = restored.observe(ev.FeedConnected("market"))
        assert moves(effects, "websocket") == [("TRIPPED", "COOLDOWN", "recover")]

    def test_a_restored_api_health_guard_recovers_when_errors_leave_the_window(self) -> None:
        # ApiHealthGuard: "a timer re-checks when the oldest bucket leaves, so recovery is seen
        # even if calls stop". Found: restore() does not re-arm that timer.
        layer, clock = make_layer(**API)
        _observe_all(layer, [_fail()] * 4)
        saved = json.loads(json.dumps(layer.snapshot()))
        restored = ReliabilityLayer.restore(make_settings(**API), saved, clock, clock.wall)
        assert restored.guard("api_health").state is TRIPPED
        run_timers_until(layer, clock, 35.0)  # recovered at 30.5, cooling down until 40.5
        restored.tick()
        assert layer.guard("api_health").state is COOLDOWN
        assert restored.guard("api_health").state is COOLDOWN

    def test_a_restored_rate_limit_reading_keeps_its_age(self) -> None:
        layer, clock = make_layer(**API)
        layer.observe(ev.RateLimitUsage(1.0))  # ages out at 30
        clock.advance(10)
        restored, new_clock = _restart(layer, clock, downtime=5.0, **API)
        assert restored.guard("api_health").state is TRIPPED
        assert restored.next_deadline() == 5_015.0  # 15 s of its 30 s were left
        effects = run_timers_until(restored, new_clock, 5_015.0)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=5_015.0)


def _restart(
    layer: ReliabilityLayer, clock: ManualClock, downtime: float, **knobs: Any
) -> tuple[ReliabilityLayer, ManualClock]:
    """Save ``layer``; restore it in a new process whose monotonic clock starts at 5000 s and
    whose wall clock is ``downtime`` seconds past the save."""
    saved = json.loads(json.dumps(layer.snapshot(), allow_nan=False))
    start = 5_000.0
    new_clock = ManualClock(start, wall_offset=clock.wall() + downtime - start)
    restored = ReliabilityLayer.restore(
        make_settings(**knobs), saved, new_clock, new_clock.wall, rng=random.Random(0)
    )
    return restored, new_clock


class TestRestartKeepsRestrictions:
    def test_a_cooldown_keeps_its_remaining_time_across_a_restart(self) -> None:
        knobs = {
            "validation_failure_escalate_after": 1,
            "validation_failure_cooldown_seconds": 25.0,
        }
        layer, clock = make_layer(**knobs)
        layer.observe(ev.ValidationCheck(ok=False))  # COOLDOWN until 25
        clock.advance(10)
        restored, new_clock = _restart(layer, clock, downtime=4.0, **knobs)
        assert restored.guard("validation").state is COOLDOWN
        assert restored.guard("validation").seconds_until_lift == 11.0
        assert restored.next_deadline() == 5_011.0
        assert run_timers_until(restored, new_clock, 5_010.5) == []
        assert restored.mode() is REDUCE_ONLY
        effects = run_timers_until(restored, new_clock, 5_011.0)
        assert_transition(effects, "validation", "COOLDOWN", "HEALTHY", "expire", at=5_011.0)
        assert restored.mode() is ALLOW

    def test_a_deadline_that_passed_during_downtime_takes_effect_on_restore(self) -> None:
        knobs = {
            "validation_failure_escalate_after": 1,
            "validation_failure_cooldown_seconds": 25.0,
        }
        layer, clock = make_layer(**knobs)
        layer.observe(ev.ValidationCheck(ok=False))
        clock.advance(10)
        restored, _ = _restart(layer, clock, downtime=100.0, **knobs)
        effects = restored.tick()
        assert moves(effects, "validation") == [("COOLDOWN", "HEALTHY", "expire")]
        assert restored.mode() is ALLOW

    def test_halts_survive_a_restart_with_their_remaining_time(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("incident")
        layer.halt("desk review", symbol="BTC", ttl=30.0)
        clock.advance(10)
        restored, new_clock = _restart(layer, clock, downtime=5.0, **NO_STALENESS)
        refused = restored.decide(sell("BTC"), position=D(1))
        assert (refused.allowed, refused.mode) == (False, PAUSED)
        assert set(refused.reasons) == {
            Reason("operator", None, "HALTED", None),
            Reason("operator", "BTC", "HALTED", 15.0),
        }
        restored.resume()
        assert restored.mode() is ALLOW
        assert restored.mode("BTC") is PAUSED
        effects = run_timers_until(restored, new_clock, 5_015.0)
        assert_transition(effects, "operator", "HALTED", "RUNNING", "expire", at=5_015.0)
        assert restored.mode("BTC") is ALLOW

    def test_a_mark_that_went_stale_during_downtime_restricts_after_restore(self) -> None:
        layer, clock = make_layer(**MARK)
        mark(layer, "BTC")
        layer.observe(ev.SlippageCheck("ETH", ok=True))  # seen, never marked
        clock.advance(10)
        restored, _ = _restart(layer, clock, downtime=30.0, **MARK)
        assert restored.mode("BTC") is REDUCE_ONLY
        assert restored.guard("mark_staleness", "BTC").state is TRIPPED
        assert restored.mode("ETH") is REDUCE_ONLY
        assert not restored.decide(buy("ETH"), position=D(0)).allowed

    def test_an_open_breaker_stays_open_for_its_remaining_recovery_time(self) -> None:
        knobs = {"circuit_failure_threshold": 2, "circuit_recovery_timeout": 30.0}
        layer, clock = make_layer(**knobs)
        _observe_all(layer, [_fail("orders")] * 2)
        clock.advance(10)
        restored, new_clock = _restart(layer, clock, downtime=5.0, **knobs)
        assert restored.breaker_state("orders").name == "OPEN"
        assert restored.guard("api_health").state is TRIPPED
        assert not restored.admit("orders")
        effects = run_timers_until(restored, new_clock, 5_015.0)
        assert_transition(effects, "breaker:orders", "OPEN", "HALF_OPEN", "expire", at=5_015.0)
        assert_transition(effects, "api_health", "TRIPPED", "COOLDOWN", "recover", at=5_015.0)
