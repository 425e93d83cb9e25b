"""Issue 11, pure core: NO_MARK as a state, queryable reasons, configured API categories,
operator reduce-only halts, a no-op resume and TypeErrors for wrong argument types
(DESIGN §2.1, §2.4, §3)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.helpers import (
    assert_transition,
    buy,
    make_layer,
    make_settings,
    mark,
    run_timers_until,
    sell,
    status_of,
)
from tradeguard import GuardState, InvalidObservation, ReliabilityLayer, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.fsm._states import HaltState
from tradeguard.fsm.effects import Alert, Reason
from tradeguard.testing import ManualClock

D = Decimal
ALLOW, REDUCE_ONLY, PAUSED = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED
NO_MARK, HEALTHY = GuardState.NO_MARK, GuardState.HEALTHY
NO_STALENESS: dict[str, Any] = {"mark_staleness_threshold_seconds": 100_000.0}
STRICT: dict[str, Any] = {"mark_staleness_allow_reduce_only": False}


def _restart(layer: ReliabilityLayer, clock: ManualClock, **knobs: Any) -> ReliabilityLayer:
    saved = json.loads(json.dumps(layer.snapshot(), allow_nan=False))
    return ReliabilityLayer.restore(make_settings(**knobs), saved, clock, clock.wall)


# ============================================================ item 6: NO_MARK is a state


class TestNoMark:
    def test_a_never_marked_symbol_is_no_mark_for_guard_and_status(self) -> None:
        layer, _ = make_layer()
        layer.observe(ev.SlippageCheck("ETH", ok=True))  # ETH has a scope, BTC none
        for symbol in ("BTC", "ETH"):
            seen = layer.guard("mark_staleness", symbol)
            assert (seen.state, seen.restriction, seen.seconds_until_lift) == (
                NO_MARK,
                REDUCE_ONLY,
                None,
            )
        guards = status_of(layer)["symbols"]["ETH"]["guards"]
        assert guards["mark_staleness"]["state"] == "NO_MARK"
        assert guards["mark_staleness"]["restriction"] == "REDUCE_ONLY"

    def test_the_first_mark_is_an_audited_transition_to_healthy(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        clock.advance(2)
        effects = mark(layer, "BTC")
        assert_transition(
            effects, "mark_staleness", "NO_MARK", "HEALTHY", "mark", scope="BTC", at=2.0
        )
        assert_transition(effects, "mode", "REDUCE_ONLY", "ALLOW", "allow", scope="BTC", at=2.0)
        assert layer.guard("mark_staleness", "BTC").state is HEALTHY
        assert mark(layer, "BTC") == []  # later marks change nothing

    @pytest.mark.parametrize("seen", [False, True], ids=["unseen", "seen"])
    def test_no_mark_pauses_closing_orders_like_a_stale_mark_when_reduce_only_is_off(
        self, seen: bool
    ) -> None:
        # Found: with RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY=0 a never-marked symbol still let
        # closing orders through while a stale one did not.
        layer, _ = make_layer(**STRICT)
        if seen:
            layer.observe(ev.SlippageCheck("BTC", ok=True))
        refused = layer.decide(sell("BTC"), position=D(1))
        assert (refused.allowed, refused.mode) == (False, PAUSED)
        assert refused.reasons == (Reason("mark_staleness", "BTC", "NO_MARK", None),)
        assert layer.mode("BTC") is PAUSED
        assert layer.guard("mark_staleness", "BTC").restriction is PAUSED

    def test_no_mark_allows_closing_orders_when_reduce_only_is_on(self) -> None:
        layer, _ = make_layer()
        assert layer.decide(sell("BTC"), position=D(1)).allowed
        assert not layer.decide(buy("BTC"), position=D(0)).allowed

    def test_a_symbol_mode_starts_where_no_mark_puts_it(self) -> None:
        strict, _ = make_layer(**STRICT)
        strict.observe(ev.SlippageCheck("BTC", ok=True))
        assert status_of(strict)["symbols"]["BTC"]["mode"] == "PAUSED"
        effects = mark(strict, "BTC")
        assert_transition(effects, "mode", "PAUSED", "ALLOW", "allow", scope="BTC")

    def test_a_restored_never_marked_symbol_is_still_no_mark(self) -> None:
        layer, clock = make_layer(**STRICT)
        layer.observe(ev.SlippageCheck("BTC", ok=True))
        restored = _restart(layer, clock, **STRICT)
        assert restored.guard("mark_staleness", "BTC").state is NO_MARK
        assert restored.mode("BTC") is PAUSED
        assert_transition(mark(restored, "BTC"), "mark_staleness", "NO_MARK", "HEALTHY", "mark")

    def test_an_older_snapshot_saying_healthy_without_a_mark_restores_no_mark(self) -> None:
        layer, clock = make_layer()
        layer.observe(ev.SlippageCheck("BTC", ok=True))
        saved = json.loads(json.dumps(layer.snapshot()))
        saved["symbols"]["BTC"]["guards"]["mark_staleness"]["state"] = "HEALTHY"
        restored = ReliabilityLayer.restore(make_settings(), saved, clock, clock.wall)
        assert restored.guard("mark_staleness", "BTC").state is NO_MARK  # never looser

    def test_a_snapshot_giving_another_guard_no_mark_is_refused(self) -> None:
        layer, clock = make_layer()
        saved = json.loads(json.dumps(layer.snapshot()))
        saved["global"]["guards"]["api_health"]["state"] = "NO_MARK"
        with pytest.raises(InvalidObservation, match=r"api_health.*NO_MARK"):
            ReliabilityLayer.restore(make_settings(), saved, clock, clock.wall)

    def test_a_reset_cannot_invent_a_mark(self) -> None:
        layer, _ = make_layer()
        layer.trip("mark_staleness", "preflight: no market data", "BTC")
        assert layer.guard("mark_staleness", "BTC").state is GuardState.TRIPPED
        effects = layer.reset("mark_staleness", "BTC")
        assert_transition(effects, "mark_staleness", "TRIPPED", "NO_MARK", "reset", scope="BTC")
        assert layer.mode("BTC") is REDUCE_ONLY


# ==================================================== item 7: every Reason name is queryable


class TestReasonsCanBeQueried:
    def test_every_reason_of_a_refusal_names_something_guard_answers(self) -> None:
        layer, clock = make_layer(broker_outage_max_failures=1)
        mark(layer, "BTC")
        layer.observe(ev.BrokerRead("balances", ok=False))
        layer.halt("desk review", symbol="BTC", ttl=30.0)
        layer.halt("canary", ttl=60.0, mode=REDUCE_ONLY)
        clock.advance(5)
        for symbol in ("BTC", "NEVER_SEEN"):
            refused = layer.decide(buy(symbol), position=D(0))
            assert refused.reasons
            for reason in refused.reasons:
                seen = layer.guard(reason.guard, reason.scope)
                assert (seen.name, seen.scope, seen.state) == (
                    reason.guard,
                    reason.scope,
                    reason.state,
                )
                assert seen.seconds_until_lift == reason.seconds_until_lift

    def test_the_operator_answers_for_global_and_symbols(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        assert layer.guard("operator").state is HaltState.RUNNING
        assert layer.guard("operator", "NEVER_SEEN").restriction is ALLOW
        layer.halt("exchange maintenance", symbol="BTC", ttl=20.0)
        clock.advance(5)
        seen = layer.guard("operator", "BTC")
        assert (seen.state, seen.restriction, seen.reason, seen.seconds_until_lift) == (
            HaltState.HALTED,
            PAUSED,
            "exchange maintenance",
            15.0,
        )
        assert layer.guard("operator").state is HaltState.RUNNING

    def test_the_operator_is_not_reset_or_tripped_like_a_guard(self) -> None:
        layer, _ = make_layer()
        with pytest.raises(InvalidObservation, match="resume"):
            layer.reset("operator", "BTC")
        with pytest.raises(InvalidObservation, match="halt"):
            layer.trip("operator", "x")


# ============================================== item 8: API categories are a configured set


class TestApiCategories:
    def test_an_unknown_category_is_refused_naming_the_known_ones(self) -> None:
        layer, _ = make_layer()
        message = r"'ordrs'; expected one of: accounts, market, orders"
        with pytest.raises(InvalidObservation, match=message):
            layer.observe(ev.ApiCall("ordrs", ok=False, status=503))
        with pytest.raises(InvalidObservation, match=message):
            layer.admit("ordrs")
        assert status_of(layer)["breakers"] == {}  # no breaker was made for the typo

    def test_configured_categories_are_the_known_ones(self) -> None:
        layer, _ = make_layer(api_categories="orders,market_data")
        layer.observe(ev.ApiCall("market_data", ok=True, status=200))
        assert layer.admit("orders")
        with pytest.raises(InvalidObservation, match="market_data, orders"):
            layer.admit("accounts")

    def test_the_shells_categories_stay_within_the_default_set(self) -> None:
        from tradeguard.io.ccxt_broker import request_category
        from tradeguard.testing.chaos import _CATEGORIES

        known = set(make_settings().api_categories.split(","))
        urls = [
            "https://api.coinbase.com/api/v3/brokerage/orders",
            "https://api.coinbase.com/api/v3/brokerage/accounts",
            "https://api.coinbase.com/api/v3/brokerage/products/BTC-USD/ticker",
            "https://api.coinbase.com/api/v3/brokerage/time",
        ]
        assert {request_category(url) for url in urls} <= known
        assert set(_CATEGORIES.values()) <= known


# ============================================ item 4: an operator halt in REDUCE_ONLY mode


class TestOperatorReduceOnly:
    def test_a_reduce_only_halt_lets_only_reducing_orders_through(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        clock.advance(1)
        effects = layer.halt("canary for 24 h", ttl=86_400.0, mode=REDUCE_ONLY)
        assert_transition(effects, "operator", "RUNNING", "REDUCED", "reduce", scope=None, at=1.0)
        assert any(isinstance(e, Alert) and "reduce-only" in e.title for e in effects)
        assert layer.mode() is REDUCE_ONLY
        assert layer.decide(sell("BTC"), position=D(2)).allowed
        refused = layer.decide(buy("BTC"), position=D(2))
        assert not refused.allowed
        assert refused.reasons == (Reason("operator", None, "REDUCED", 86_400.0),)

    def test_status_shows_the_halt_mode_and_remaining_time(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        layer.halt("canary", symbol="BTC", ttl=100.0, mode=REDUCE_ONLY)
        clock.advance(40)
        halt = status_of(layer)["symbols"]["BTC"]["halt"]
        assert halt == {
            "state": "REDUCED",
            "mode": "REDUCE_ONLY",
            "reason": "canary",
            "until": 100.0,
            "seconds_until_lift": 60.0,
        }

    def test_a_halt_can_switch_mode_audited(self) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("incident")
        effects = layer.halt("incident contained", mode=REDUCE_ONLY)
        assert_transition(effects, "operator", "HALTED", "REDUCED", "reduce")
        assert_transition(effects, "mode", "PAUSED", "REDUCE_ONLY", "restrict")
        effects = layer.halt("incident again")
        assert_transition(effects, "operator", "REDUCED", "HALTED", "halt")

    def test_a_reduce_only_halt_expires_and_survives_a_restart(self) -> None:
        layer, clock = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("canary", symbol="BTC", ttl=10.0, mode=REDUCE_ONLY)
        clock.advance(4)
        restored = _restart(layer, clock, **NO_STALENESS)
        seen = restored.guard("operator", "BTC")
        assert (seen.state, seen.restriction, seen.seconds_until_lift) == (
            HaltState.REDUCED,
            REDUCE_ONLY,
            6.0,
        )
        effects = run_timers_until(restored, clock, 10.0)
        assert_transition(effects, "operator", "REDUCED", "RUNNING", "expire", scope="BTC", at=10.0)
        assert restored.mode("BTC") is ALLOW

    def test_a_symbol_is_never_looser_than_a_global_pause(self) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("global", mode=PAUSED)
        layer.halt("canary", symbol="BTC", mode=REDUCE_ONLY)
        assert layer.mode("BTC") is PAUSED
        assert not layer.decide(sell("BTC"), position=D(1)).allowed


# ===================================================== item 13: resume of nothing is a no-op


class TestResumeNothing:
    @pytest.mark.parametrize("symbol", [None, "BTC", "NEVER_SEEN"])
    def test_resume_with_nothing_halted_returns_no_effects_and_changes_nothing(
        self, symbol: str | None
    ) -> None:
        layer, _ = make_layer()
        mark(layer, "BTC")
        before = status_of(layer)
        assert layer.resume(symbol) == []
        assert status_of(layer) == before

    def test_resume_lifts_a_reduce_only_halt_once_then_is_a_no_op(self) -> None:
        layer, _ = make_layer(**NO_STALENESS)
        mark(layer, "BTC")
        layer.halt("canary", mode=REDUCE_ONLY)
        assert_transition(layer.resume(), "operator", "REDUCED", "RUNNING", "resume")
        assert layer.resume() == []


# ================================================ item 14: wrong types get a named TypeError


class TestWrongTypes:
    def test_decide_with_a_dict_names_the_expected_type(self) -> None:
        layer, _ = make_layer()
        bad: Any = {"symbol": "BTC"}
        with pytest.raises(TypeError, match=r"^decide\(\) intent must be an OrderIntent, got dict"):
            layer.decide(bad)

    def test_observe_with_a_non_observation_names_the_expected_type(self) -> None:
        layer, _ = make_layer()
        bad: Any = {"category": "orders"}
        with pytest.raises(TypeError, match=r"observe\(\) takes an observation.*got dict"):
            layer.observe(bad)

    @pytest.mark.parametrize("position", [1, 1.0, "1"], ids=["int", "float", "str"])
    def test_a_position_that_is_not_a_decimal_is_a_type_error(self, position: Any) -> None:
        layer, _ = make_layer()
        with pytest.raises(TypeError, match=r"position must be a Decimal or None"):
            layer.decide(sell("BTC"), position=position)

    def test_a_non_finite_position_is_still_a_value_error(self) -> None:
        layer, _ = make_layer()
        with pytest.raises(InvalidObservation, match="finite"):
            layer.decide(sell("BTC"), position=D("NaN"))
