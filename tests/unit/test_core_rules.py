"""Rules written once in the core (issue 12): the firing choke point, "does this order
reduce the position", refusal reasons built once per change, failed cancels kept and asked
for again by the layer (saved in snapshots), and a HALF_OPEN probe slot freed without a
fake failure."""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from helpers import make_layer, of_type
from transitions import Machine

from tradeguard import InvalidObservation, OrderIntent, ReliabilityLayer, Side, TradingMode
from tradeguard.fsm import BreakerState, GuardState
from tradeguard.fsm import events as ev
from tradeguard.fsm._definition import MachineDefinition
from tradeguard.fsm._machines import DEFINITIONS
from tradeguard.fsm.effects import CancelOpenOrders, CancelOrders, Reason, Transitioned

# ------------------------------------------------------------------ the firing choke point


class _Model:
    """A model for both engines; every condition of the definitions answers ``flag``."""

    def __init__(self, state: Enum, flag: bool) -> None:
        self.state = state
        self.flag = flag

    def __getattr__(self, name: str) -> Any:  # the condition methods named in the tables
        return lambda: self.flag


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
def test_firing_takes_the_same_rows_as_the_transitions_library(
    definition: MachineDefinition,
) -> None:
    reference = Machine(
        model=None,
        states=definition.states,
        transitions=[
            {
                "trigger": s.trigger,
                "source": list(s.sources),
                "dest": s.dest,
                **({"conditions": s.condition} if s.condition else {}),
            }
            for s in definition.transitions
        ],
        initial=definition.initial,
        auto_transitions=False,
    )
    for state in definition.used_states:
        for trigger in definition.triggers:
            if not definition.targets(state, trigger):
                continue
            for flag in (True, False):
                ours, theirs = _Model(state, flag), _Model(state, flag)
                taken = definition.fire(ours, trigger, definition.name, None)
                assert taken == reference.events[trigger].trigger(theirs)
                assert ours.state is theirs.state, (state, trigger, flag)


def test_transition_records_what_it_fired() -> None:
    definition = next(d for d in DEFINITIONS if d.name == "guard")
    model = _Model(GuardState.HEALTHY, True)
    record = definition.transition(model, "trip", "slippage", "BTC-USD", 12.5)
    assert record == Transitioned("slippage", "BTC-USD", "HEALTHY", "TRIPPED", "trip", 12.5)
    assert model.state is GuardState.TRIPPED


# ------------------------------------------------------------------ OrderIntent.reduces


@pytest.mark.parametrize(
    ("side", "quantity", "position", "reduces"),
    [
        (Side.SELL, "0.5", "1", True),
        (Side.SELL, "1", "1", True),  # closing exactly
        (Side.SELL, "1.5", "1", False),  # would flip the position
        (Side.BUY, "0.5", "1", False),  # adds to a long
        (Side.BUY, "0.5", "-1", True),
        (Side.BUY, "2", "-1", False),
        (Side.SELL, "0.5", "0", False),  # flat: nothing to reduce
        (Side.SELL, "0.5", None, False),  # unknown: fail closed
    ],
)
def test_reduces_is_the_opposite_side_within_the_position(
    side: Side, quantity: str, position: str | None, reduces: bool
) -> None:
    intent = OrderIntent("BTC-USD", side, Decimal(quantity))
    held = None if position is None else Decimal(position)
    assert intent.reduces(held) is reduces


# ------------------------------------------------------------------ refusals built once


def _restricted(symbol: str = "BTC-USD") -> tuple[ReliabilityLayer, Any]:
    layer, clock = make_layer()
    layer.observe(ev.MarkUpdate(symbol))
    for _ in range(3):
        layer.observe(ev.SlippageCheck(symbol, False))  # TRIPPED, then COOLDOWN (60 s)
    return layer, clock


def test_a_refusal_in_cooldown_counts_down_with_the_clock() -> None:
    layer, clock = _restricted()
    buy = OrderIntent("BTC-USD", Side.BUY, Decimal("1"))
    first = layer.decide(buy, Decimal("0"))
    assert first.reasons == (Reason("slippage", "BTC-USD", GuardState.COOLDOWN, 60.0),)
    assert layer.decide(buy, Decimal("0")) is first  # same instant: the same answer
    clock.advance(10)
    later = layer.decide(buy, Decimal("0"))
    assert later.reasons == (Reason("slippage", "BTC-USD", GuardState.COOLDOWN, 50.0),)
    assert (later.allowed, later.mode, later.max_quantity) == (
        False,
        TradingMode.REDUCE_ONLY,
        Decimal(0),
    )


def test_a_refusal_follows_every_change_of_the_restrictions() -> None:
    layer, _ = make_layer()
    layer.observe(ev.MarkUpdate("BTC-USD"))
    buy = OrderIntent("BTC-USD", Side.BUY, Decimal("1"))
    for _ in range(3):
        layer.observe(ev.BrokerRead("positions", False))
    assert [r.guard for r in layer.decide(buy, Decimal("0")).reasons] == ["broker_outage"]
    layer.halt("maintenance", "BTC-USD")
    decision = layer.decide(buy, Decimal("0"))
    assert decision.mode is TradingMode.PAUSED
    assert [r.guard for r in decision.reasons] == ["broker_outage", "operator"]
    layer.resume("BTC-USD")
    layer.observe(ev.BrokerRead("positions", True))  # recovers: COOLDOWN, with a deadline
    (reason,) = layer.decide(buy, Decimal("0")).reasons
    assert (reason.state, reason.seconds_until_lift) == (GuardState.COOLDOWN, 120.0)


def test_a_reducing_order_in_reduce_only_is_allowed_with_its_limit() -> None:
    layer, _ = _restricted()
    decision = layer.decide(OrderIntent("BTC-USD", Side.SELL, Decimal("0.5")), Decimal("2"))
    assert (decision.allowed, decision.max_quantity) == (True, Decimal("2"))


# ------------------------------------------------------------------ failed cancels


def _api_tripped_by_a_breaker() -> tuple[ReliabilityLayer, Any]:
    layer, clock = make_layer(circuit_failure_threshold=2, circuit_success_threshold=1)
    for _ in range(2):
        layer.observe(ev.ApiCall("orders", False, 503))
    assert layer.breaker_state("orders") is BreakerState.OPEN
    assert layer.guard("api_health").state is GuardState.TRIPPED
    return layer, clock


def test_failed_cancels_are_asked_for_again_when_api_health_leaves_tripped() -> None:
    layer, clock = _api_tripped_by_a_breaker()
    assert layer.observe(ev.CancelFailed(None, "api_health: breaker open")) == []
    assert layer.observe(ev.CancelFailed(("o-1", "o-2"), "reconciliation")) == []
    assert layer.pending_cancels == (
        (None, "api_health: breaker open"),
        (("o-1", "o-2"), "reconciliation"),
    )
    clock.advance(30)
    effects = layer.tick()  # the breaker goes HALF_OPEN: api_health leaves TRIPPED
    retries = [e for e in effects if isinstance(e, CancelOpenOrders | CancelOrders)]
    assert retries == [
        CancelOpenOrders("retry: api_health: breaker open"),
        CancelOrders(("o-1", "o-2"), "retry: reconciliation"),
    ]
    recovered = next(e for e in effects if isinstance(e, Transitioned) and e.source == "TRIPPED")
    assert recovered.machine == "api_health"
    assert effects.index(recovered) < effects.index(retries[0])  # right after the record
    assert layer.pending_cancels == ()


def test_a_failed_cancel_is_asked_for_again_when_a_breaker_closes() -> None:
    layer, clock = _api_tripped_by_a_breaker()
    clock.advance(30)
    layer.tick()
    assert layer.breaker_state("orders") is BreakerState.HALF_OPEN
    layer.observe(ev.CancelFailed(("o-3",), "retry: reconciliation"))  # failed again
    effects = layer.observe(ev.ApiCall("orders", True, 200))  # the probe closes the breaker
    assert layer.breaker_state("orders") is BreakerState.CLOSED
    assert of_type(effects, CancelOrders) == [
        CancelOrders(("o-3",), "retry: retry: reconciliation")
    ]
    assert layer.pending_cancels == ()
    assert of_type(layer.observe(ev.ApiCall("orders", True, 200)), CancelOrders) == []


def test_a_failed_cancel_is_asked_for_again_when_a_rate_limit_trip_clears() -> None:
    layer, _ = make_layer()
    layer.observe(ev.RateLimitUsage(0.95))
    assert layer.guard("api_health").state is GuardState.TRIPPED
    layer.observe(ev.CancelFailed(None, "api_health: rate-limit usage 95%"))
    effects = layer.observe(ev.RateLimitUsage(0.1))
    assert of_type(effects, CancelOpenOrders) == [
        CancelOpenOrders("retry: api_health: rate-limit usage 95%")
    ]


def test_pending_cancels_survive_a_snapshot_round_trip() -> None:
    layer, clock = _api_tripped_by_a_breaker()
    layer.observe(ev.CancelFailed(None, "api_health"))
    layer.observe(ev.CancelFailed(("o-9",), "reconciliation"))
    saved = layer.snapshot()
    assert saved["pending_cancels"] == [
        {"order_ids": None, "reason": "api_health"},
        {"order_ids": ["o-9"], "reason": "reconciliation"},
    ]
    restored = ReliabilityLayer.restore(layer.settings, saved, clock, clock.wall)
    assert restored.pending_cancels == layer.pending_cancels
    clock.advance(30)
    effects = restored.tick()  # HALF_OPEN: api_health leaves TRIPPED
    assert [e for e in effects if isinstance(e, CancelOpenOrders | CancelOrders)] == [
        CancelOpenOrders("retry: api_health"),
        CancelOrders(("o-9",), "retry: reconciliation"),
    ]


def test_a_snapshot_with_a_bad_pending_cancel_is_refused() -> None:
    layer, clock = make_layer()
    saved = {**layer.snapshot(), "pending_cancels": [{"order_ids": [], "reason": "x"}]}
    with pytest.raises(InvalidObservation, match="pending cancel"):
        ReliabilityLayer.restore(layer.settings, saved, clock, clock.wall)


@pytest.mark.parametrize(
    ("order_ids", "reason"), [((), "r"), (("",), "r"), (["o-1"], "r"), (None, " ")]
)
def test_cancel_failed_refuses_bad_fields(order_ids: Any, reason: str) -> None:
    with pytest.raises(InvalidObservation, match="CancelFailed"):
        ev.CancelFailed(order_ids, reason)


# ------------------------------------------------------------------ probe slots


def test_an_abandoned_probe_frees_its_slot_without_counting_a_failure() -> None:
    layer, clock = make_layer(circuit_failure_threshold=1, circuit_success_threshold=1)
    layer.observe(ev.ApiCall("orders", False, 503))
    clock.advance(30)
    layer.tick()
    assert layer.breaker_state("orders") is BreakerState.HALF_OPEN
    assert layer.admit("orders")
    assert not layer.admit("orders")  # the one probe slot is taken
    calls_before = layer.status()["global"]["guards"]["api_health"]["calls_in_window"]
    assert layer.observe(ev.ProbeAbandoned("orders")) == []
    assert layer.breaker_state("orders") is BreakerState.HALF_OPEN
    assert layer.status()["global"]["guards"]["api_health"]["calls_in_window"] == calls_before
    assert layer.admit("orders")  # the slot is free again


def test_an_abandoned_probe_outside_half_open_changes_nothing() -> None:
    layer, _ = make_layer()
    before = layer.status()
    assert layer.observe(ev.ProbeAbandoned("orders")) == []
    assert layer.status() == before


def test_probe_abandoned_names_a_known_category() -> None:
    layer, _ = make_layer()
    with pytest.raises(InvalidObservation, match="unknown API category"):
        layer.observe(ev.ProbeAbandoned("nope"))
