"""The layer's read model (`tradeguard.fsm.views`): typed values, one JSON reader (issue 12)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from helpers import make_layer

from tradeguard import GuardState, OrderIntent, Side, TradingMode
from tradeguard.errors import InvalidObservation
from tradeguard.fsm import BreakerState, FeedState, HaltState
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Reason
from tradeguard.fsm.views import LayerView

BTC, ETH = "BTC-USD", "ETH-USD"


def test_the_view_is_the_status_typed() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    layer.observe(ev.FeedStarted("market"))
    for _ in range(layer.settings.circuit_failure_threshold):
        layer.observe(ev.ApiCall("orders", ok=False, status=503))
    view = layer.view()
    assert view.to_json() == layer.status()
    assert view.mode is TradingMode.REDUCE_ONLY
    assert view.breakers["orders"].state is BreakerState.OPEN
    assert view.feeds["market"].state is FeedState.CONNECTING
    assert view.global_scope.guards["api_health"].state is GuardState.TRIPPED
    assert view.symbols[BTC].guards["mark_staleness"].state is GuardState.HEALTHY
    assert view.symbols[BTC].effective_mode is TradingMode.REDUCE_ONLY
    assert view.global_scope.halt.state is HaltState.RUNNING


def test_restrictions_are_the_reasons_a_refusal_carries() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    layer.halt("maintenance", symbol=BTC, ttl=60)
    for _ in range(layer.settings.broker_outage_max_failures):
        layer.observe(ev.BrokerRead(kind="positions", ok=False))
    refused = layer.decide(OrderIntent(BTC, Side.BUY, Decimal("1")), Decimal(0))
    assert not refused.allowed
    assert set(layer.view().restrictions(BTC)) == set(refused.reasons)
    # A symbol never seen is restricted by its missing mark, as decide() says.
    unseen = layer.decide(OrderIntent(ETH, Side.BUY, Decimal("1")), Decimal(0))
    assert set(layer.view().restrictions(ETH)) == set(unseen.reasons)
    assert Reason("mark_staleness", ETH, "NO_MARK", None) in layer.view().restrictions(ETH)


def test_a_reduce_only_halt_is_a_restriction_of_the_view() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    layer.halt("canary", mode=TradingMode.REDUCE_ONLY)
    halt = layer.view().global_scope.halt
    assert halt.in_force and halt.state is HaltState.REDUCED
    assert halt.mode is TradingMode.REDUCE_ONLY and halt.reason == "canary"
    assert [r.guard for r in layer.view().restrictions()] == ["operator"]


def test_a_bad_status_document_names_the_field() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    body = layer.status()
    body["symbols"][BTC]["guards"]["slippage"]["state"] = "WOBBLY"
    with pytest.raises(InvalidObservation, match=r"status\.symbols\.BTC-USD\.guards\.slippage"):
        LayerView.from_json(body)
    with pytest.raises(InvalidObservation, match=r"status must be an object"):
        LayerView.from_json([])


def test_the_view_cannot_be_changed() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    view = layer.view()
    with pytest.raises(AttributeError):
        view.mode = TradingMode.PAUSED  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.symbols[ETH] = view.symbols[BTC]  # type: ignore[index]
    mutated = view.to_json()
    mutated["mode"] = "PAUSED"
    assert view.to_json()["mode"] == "ALLOW"  # to_json gives a copy


def test_health_names_a_reduce_only_halt_read_from_the_view() -> None:
    from tradeguard.io.http_status import Health

    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    layer.halt("canary", mode=TradingMode.REDUCE_ONLY)
    health = Health.from_view(layer.view())
    assert health.status == "degraded"
    assert health.reasons == ("global mode REDUCE_ONLY: operator REDUCED (canary)",)
    assert Health.from_status(layer.status()) == health  # a runtime's /status reads the same
