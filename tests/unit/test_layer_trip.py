"""`ReliabilityLayer.trip`: a guard tripped from outside (preflight) recovers by its own rule."""

from __future__ import annotations

import pytest
from helpers import make_layer, moves

from tradeguard import GuardState, TradingMode, UnknownGuard
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Alert


def test_a_tripped_api_health_restricts_until_an_api_call_shows_it_healthy() -> None:
    layer, clock = make_layer(api_health_cooldown_seconds=10.0)
    effects = layer.trip("api_health", "preflight: api_health view failed")
    assert moves(effects, "api_health") == [("HEALTHY", "TRIPPED", "trip")]
    assert any(isinstance(e, Alert) for e in effects)
    assert layer.mode() is TradingMode.REDUCE_ONLY
    layer.observe(ev.ApiCall("market", True, 200))
    assert layer.guard("api_health").state is GuardState.COOLDOWN
    clock.advance(10.0)
    layer.tick()
    assert layer.mode() is TradingMode.ALLOW


def test_a_symbol_whose_market_data_failed_starts_restricted_until_a_fresh_mark() -> None:
    layer, clock = make_layer(mark_staleness_cooldown_seconds=5.0)
    layer.trip("mark_staleness", "preflight: no fresh ticker", symbol="BTC-USD")
    layer.observe(ev.MarkUpdate("ETH-USD"))
    assert layer.mode("BTC-USD") is TradingMode.REDUCE_ONLY
    assert layer.mode("ETH-USD") is TradingMode.ALLOW
    layer.observe(ev.MarkUpdate("BTC-USD"))
    assert layer.guard("mark_staleness", "BTC-USD").state is GuardState.COOLDOWN
    clock.advance(5.0)
    assert layer.mode("BTC-USD") is TradingMode.ALLOW


def test_tripping_a_tripped_guard_changes_nothing() -> None:
    layer, _ = make_layer()
    layer.trip("api_health", "first")
    assert layer.trip("api_health", "again") == []


def test_trip_refuses_bad_names_and_changes_nothing() -> None:
    layer, _ = make_layer()
    before = layer.status()
    with pytest.raises(UnknownGuard, match="api_healt"):
        layer.trip("api_healt", "typo")
    with pytest.raises(ValueError, match="reason"):
        layer.trip("api_health", "")
    assert layer.status() == before
