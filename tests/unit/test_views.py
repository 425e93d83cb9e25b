"""The layer's read model (`tradeguard.fsm.views`): typed values, one JSON reader (issue 12)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

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


def _feed_breaker_and_halted_status() -> dict[str, Any]:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate(BTC))
    layer.observe(ev.MarkUpdate(ETH))
    layer.observe(ev.FeedStarted("market"))
    layer.observe(ev.ApiCall("orders", ok=True, status=200))
    layer.halt("maintenance", symbol=ETH, ttl=60)
    return layer.status()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("mode",), "SOMETIMES", "status.mode must be one of ALLOW, REDUCE_ONLY, PAUSED, got "),
        (("preview_enabled",), 1, "status.preview_enabled must be true or false, got 1"),
        (("next_deadline",), "soon", "status.next_deadline must be a number of seconds or null"),
        (("symbols",), [], "status.symbols must be an object, got []"),
        (("symbols", BTC), None, "status.symbols.BTC-USD must be an object, got None"),
        (("symbols", BTC, "mode"), None, "status.symbols.BTC-USD.mode must be one of ALLOW, "),
        (("symbols", BTC, "effective_mode"), 2, "status.symbols.BTC-USD.effective_mode must"),
        (("symbols", BTC, "has_mark"), "yes", "status.symbols.BTC-USD.has_mark must be true or"),
        (("symbols", BTC, "peers"), {}, "status.symbols.BTC-USD.peers must be a list, got {}"),
        (("symbols", BTC, "peers"), [3], "status.symbols.BTC-USD.peers[0] must be an object"),
        (("symbols", BTC, "halt"), "RUNNING", "status.symbols.BTC-USD.halt must be an object"),
        (("symbols", ETH, "halt", "state"), "GONE", "status.symbols.ETH-USD.halt.state must be"),
        (("symbols", ETH, "halt", "reason"), 7, "status.symbols.ETH-USD.halt.reason must be a"),
        (("symbols", ETH, "halt", "until"), True, "status.symbols.ETH-USD.halt.until must be a"),
        (("symbols", BTC, "guards", "slippage"), 0, "status.symbols.BTC-USD.guards.slippage must"),
        (
            ("symbols", BTC, "guards", "slippage", "restriction"),
            "reduce_only",
            "status.symbols.BTC-USD.guards.slippage.restriction must be one of ALLOW, REDUCE_ONLY,"
            " PAUSED, got 'reduce_only'",
        ),
        (
            ("global", "guards", "api_health", "seconds_until_lift"),
            math.nan,
            "status.global.guards.api_health.seconds_until_lift must be a number of seconds or "
            "null, got nan",
        ),
        (("breakers", "orders", "state"), "SHUT", "status.breakers.orders.state must be one of"),
        (
            ("breakers", "orders", "consecutive_failures"),
            False,
            "status.breakers.orders.consecutive_failures must be a whole number >= 0, got False",
        ),
        (("feeds", "market", "messages"), -1, "status.feeds.market.messages must be a whole"),
        (("feeds", "market", "last_reason"), None, "status.feeds.market.last_reason must be a"),
    ],
)
def test_each_malformed_field_is_named_by_its_path(
    path: tuple[str, ...], value: object, message: str
) -> None:
    body = _feed_breaker_and_halted_status()
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(InvalidObservation) as raised:
        LayerView.from_json(body)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("global",), "status.global must be an object, got None"),
        (("symbols", BTC, "guards"), "status.symbols.BTC-USD.guards must be an object, got None"),
        (("symbols", BTC, "guards", "slippage", "state"), "status.symbols.BTC-USD.guards.slippage"),
        (("breakers", "orders", "state"), "status.breakers.orders.state must be one of CLOSED,"),
    ],
)
def test_a_missing_field_is_named_by_its_path(path: tuple[str, ...], message: str) -> None:
    body = _feed_breaker_and_halted_status()
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(InvalidObservation) as raised:
        LayerView.from_json(body)
    assert str(raised.value).startswith(message)


def test_the_first_malformed_field_is_the_one_named() -> None:
    body = _feed_breaker_and_halted_status()
    body["symbols"][ETH]["mode"] = "LATER"  # a later symbol: named second
    body["symbols"][BTC]["guards"]["mark_staleness"]["state"] = "LATER"  # a scope's guards
    body["symbols"][BTC]["mode"] = "LATER"  # come before its mode
    with pytest.raises(InvalidObservation, match=r"^status\.symbols\.BTC-USD\.guards\.mark_s"):
        LayerView.from_json(body)


def test_a_view_read_back_from_json_equals_the_layers_view() -> None:
    body = _feed_breaker_and_halted_status()
    view = LayerView.from_json(json.loads(json.dumps(body)))
    assert view == LayerView.from_json(body)
    assert view.to_json() == body
    eth = view.symbols[ETH].halt
    assert eth.in_force and eth.reason == "maintenance" and eth.seconds_until_lift == 60.0
    assert not view.symbols[BTC].halt.in_force and view.symbols[BTC].halt.reason == ""
    feed = view.feeds["market"]
    assert feed.state is FeedState.CONNECTING and feed.last_message_age is None


def test_a_guards_counters_are_its_other_fields_read_only() -> None:
    body = _feed_breaker_and_halted_status()
    body["symbols"][BTC]["guards"]["slippage"]["seconds_until_lift"] = 4  # an int is seconds too
    guard = LayerView.from_json(body).symbols[BTC].guards["slippage"]
    assert dict(guard.counters) == {"consecutive_failures": 0}
    assert guard.seconds_until_lift == 4.0 and type(guard.seconds_until_lift) is float
    with pytest.raises(TypeError):
        guard.counters["consecutive_failures"] = 1  # type: ignore[index]
    body["symbols"][BTC]["guards"]["slippage"]["consecutive_failures"] = 9
    assert guard.counters["consecutive_failures"] == 0  # a copy, not the document's dict
