"""The fleet's pure core (DESIGN §7, issue 14): the fleet guard and peers' restrictions."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from tests.helpers import (
    assert_one,
    assert_transition,
    buy,
    deadline,
    make_layer,
    make_settings,
    mark,
    run_timers_until,
    sell,
    status_of,
)
from tradeguard import GuardState, ReliabilityLayer, TradingMode
from tradeguard.errors import InvalidObservation, InvalidSnapshot, UnknownGuard
from tradeguard.fsm import events as ev
from tradeguard.fsm._states import HaltState
from tradeguard.fsm.effects import Alert, Reason
from tradeguard.fsm.views import LayerView, LocalRestriction
from tradeguard.testing import ManualClock

A, B = "host-a:1", "host-b:2"
FLEET_URL = "redis://127.0.0.1:6379/0"


def joined(**knobs: object) -> tuple[ReliabilityLayer, ManualClock]:
    """A layer that joined a fleet as member A and synced, with BTC-USD and ETH-USD marked
    (marks that stay fresh for the whole test)."""
    layer, clock = make_layer(**{"mark_staleness_threshold_seconds": 1e6, **knobs})
    layer.observe(ev.FleetJoined(A))
    layer.observe(ev.FleetSynced())
    mark(layer, "BTC-USD", "ETH-USD")
    return layer, clock


def restrict(
    clock: ManualClock,
    *,
    member: str = B,
    guard: str = "api_health",
    scope: str | None = None,
    mode: TradingMode = TradingMode.REDUCE_ONLY,
    state: str = "TRIPPED",
    lifts_in: float | None = None,
    heartbeat_ago: float = 0.0,
) -> ev.PeerRestriction:
    lifts_at = None if lifts_in is None else clock.wall() + lifts_in
    return ev.PeerRestriction(
        member, guard, scope, mode, state, lifts_at, clock.wall() - heartbeat_ago
    )


# ------------------------------------------------------------------ peers' restrictions


def test_a_peer_restriction_restricts_decide_with_the_guard_at_member_reason() -> None:
    layer, clock = joined()
    assert layer.decide(buy("BTC-USD")).allowed
    effects = layer.observe(restrict(clock, state="COOLDOWN", lifts_in=30.0))
    assert_transition(effects, "api_health@host-b:2", "HEALTHY", "COOLDOWN", "peer_restrict")
    decision = layer.decide(buy("BTC-USD"), position=Decimal(0))
    assert not decision.allowed
    assert decision.mode is TradingMode.REDUCE_ONLY
    assert decision.reasons == (Reason("api_health@host-b:2", None, "COOLDOWN", 30.0),)
    assert layer.decide(sell("BTC-USD"), position=Decimal(1)).allowed  # reducing still goes
    status = layer.guard("api_health@host-b:2")
    assert (status.state, status.restriction, status.seconds_until_lift) == (
        GuardState.COOLDOWN,
        TradingMode.REDUCE_ONLY,
        30.0,
    )


def test_a_peer_restriction_lifts_at_its_wall_deadline_without_a_query() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock, state="COOLDOWN", lifts_in=30.0))
    assert deadline(layer) == pytest.approx(clock() + 30.0)
    effects = run_timers_until(layer, clock, clock() + 30.0)
    assert_transition(effects, "api_health@host-b:2", "COOLDOWN", "HEALTHY", "expire", at=30.0)
    assert layer.mode() is TradingMode.ALLOW
    assert layer.decide(buy("BTC-USD")).allowed
    assert layer.guard("api_health@host-b:2").state is GuardState.HEALTHY


def test_a_late_decide_applies_the_peer_deadline_first() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock, state="COOLDOWN", lifts_in=10.0))
    clock.advance(9.0)
    assert not layer.decide(buy("BTC-USD"), position=Decimal(0)).allowed
    clock.advance(1.0)
    assert layer.decide(buy("BTC-USD")).allowed
    assert_transition(layer.tick(), "api_health@host-b:2", "COOLDOWN", "HEALTHY", "expire")


def test_a_paused_peer_restriction_on_a_symbol_pauses_that_symbol_only() -> None:
    layer, clock = joined()
    obs = restrict(
        clock, guard="operator", scope="BTC-USD", mode=TradingMode.PAUSED, state="HALTED"
    )
    effects = layer.observe(obs)
    assert_transition(effects, "operator@host-b:2", "RUNNING", "HALTED", "peer_restrict")
    refused = layer.decide(sell("BTC-USD"), position=Decimal(1))
    assert not refused.allowed
    assert refused.mode is TradingMode.PAUSED
    assert refused.reasons == (Reason("operator@host-b:2", "BTC-USD", "HALTED", None),)
    assert layer.decide(buy("ETH-USD")).allowed
    assert layer.mode() is TradingMode.ALLOW
    status = layer.guard("operator@host-b:2", "BTC-USD")
    assert (status.state, status.restriction) == (HaltState.HALTED, TradingMode.PAUSED)


def test_allow_from_a_peer_is_refused_when_built() -> None:
    with pytest.raises(InvalidObservation, match="ALLOW"):
        ev.PeerRestriction(B, "api_health", None, TradingMode.ALLOW, "TRIPPED", None, 1.0)


def test_a_peer_never_loosens_a_local_restriction() -> None:
    layer, clock = joined()
    layer.halt("maintenance", symbol="BTC-USD")
    layer.observe(restrict(clock, scope=None, state="COOLDOWN", lifts_in=5.0))
    layer.observe(ev.PeerLifted(B, "api_health", None))
    assert layer.mode("BTC-USD") is TradingMode.PAUSED
    assert layer.guard("operator", "BTC-USD").state is HaltState.HALTED


def test_a_symbol_scope_tightens_a_peers_global_restriction() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock, state="TRIPPED"))
    layer.observe(restrict(clock, guard="slippage", scope="BTC-USD", mode=TradingMode.PAUSED))
    assert layer.mode("BTC-USD") is TradingMode.PAUSED
    assert layer.mode("ETH-USD") is TradingMode.REDUCE_ONLY


def test_peer_lifted_lifts_at_once() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    effects = layer.observe(ev.PeerLifted(B, "api_health", None))
    assert_transition(effects, "api_health@host-b:2", "TRIPPED", "HEALTHY", "peer_lift")
    assert layer.decide(buy("BTC-USD")).allowed
    assert layer.observe(ev.PeerLifted(B, "api_health", None)) == []  # nothing left to lift


def test_a_replacement_follows_the_peer_and_a_repeat_changes_nothing() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    assert layer.observe(restrict(clock)) == []  # a resync sends it again
    effects = layer.observe(restrict(clock, state="COOLDOWN", lifts_in=60.0))
    assert_transition(effects, "api_health@host-b:2", "TRIPPED", "COOLDOWN", "peer_restrict")
    assert layer.guard("api_health@host-b:2").seconds_until_lift == 60.0


def test_a_deadline_already_past_lifts_the_restriction() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    effects = layer.observe(restrict(clock, state="COOLDOWN", lifts_in=-1.0))
    assert_transition(effects, "api_health@host-b:2", "TRIPPED", "HEALTHY", "expire")
    assert layer.mode() is TradingMode.ALLOW


def test_the_members_own_restrictions_echoed_back_are_ignored() -> None:
    layer, clock = joined()
    assert layer.observe(restrict(clock, member=A)) == []
    assert layer.mode() is TradingMode.ALLOW


# ------------------------------------------------------------------ the dead-member rule


def test_a_dead_members_open_ended_restriction_becomes_a_cooldown_from_its_last_heartbeat() -> None:
    layer, clock = joined()  # ttl 15 s; api_health cooldown 300 s
    layer.observe(restrict(clock, heartbeat_ago=5.0))
    # Known dead when its last heartbeat is 15 s old: 10 s from now, not earlier.
    assert deadline(layer) == pytest.approx(10.0)
    assert run_timers_until(layer, clock, 9.999) == []
    assert layer.guard("api_health@host-b:2").state is GuardState.TRIPPED
    effects = run_timers_until(layer, clock, 10.0)
    assert_transition(effects, "api_health@host-b:2", "TRIPPED", "COOLDOWN", "member_dead")
    # 300 s from the last heartbeat (5 s before the start), never forever.
    assert layer.guard("api_health@host-b:2").seconds_until_lift == pytest.approx(285.0)
    effects = run_timers_until(layer, clock, 295.0)
    assert_transition(effects, "api_health@host-b:2", "COOLDOWN", "HEALTHY", "expire")
    assert layer.mode() is TradingMode.ALLOW


def test_heartbeats_keep_an_open_ended_restriction_in_force() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    for _ in range(10):
        clock.advance(10.0)
        layer.observe(ev.PeerHeartbeat(B, clock.wall()))
        assert layer.tick() == []
    assert layer.guard("api_health@host-b:2").state is GuardState.TRIPPED
    assert layer.mode() is TradingMode.REDUCE_ONLY


def test_a_heartbeat_after_death_makes_the_restriction_open_ended_again() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    run_timers_until(layer, clock, 20.0)
    assert layer.guard("api_health@host-b:2").state is GuardState.COOLDOWN
    effects = layer.observe(ev.PeerHeartbeat(B, clock.wall()))
    assert_transition(effects, "api_health@host-b:2", "COOLDOWN", "TRIPPED", "member_alive")
    assert layer.guard("api_health@host-b:2").seconds_until_lift is None
    assert layer.observe(ev.PeerHeartbeat(B, clock.wall() - 100)) == []  # never moves back


def test_a_restriction_from_a_long_dead_member_lifts_at_once() -> None:
    layer, clock = joined()
    effects = layer.observe(restrict(clock, heartbeat_ago=1000.0))
    assert_transition(effects, "api_health@host-b:2", "TRIPPED", "HEALTHY", "member_dead")
    assert layer.mode() is TradingMode.ALLOW


def test_an_open_ended_operator_halt_of_a_dead_member_lasts_the_member_ttl() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock, guard="operator", mode=TradingMode.PAUSED, state="HALTED"))
    assert run_timers_until(layer, clock, 14.999) == []
    assert layer.mode() is TradingMode.PAUSED
    effects = run_timers_until(layer, clock, 15.0)
    assert_transition(effects, "operator@host-b:2", "HALTED", "RUNNING", "member_dead", at=15.0)
    assert layer.mode() is TradingMode.ALLOW


def test_the_cli_operators_fleet_wide_halt_holds_until_resumed() -> None:
    layer, clock = joined()
    halt = restrict(
        clock, member="operator", guard="operator", mode=TradingMode.PAUSED, state="HALTED"
    )
    layer.observe(halt)
    run_timers_until(layer, clock, 10_000.0)
    assert layer.mode() is TradingMode.PAUSED
    layer.observe(ev.PeerLifted("operator", "operator", None))
    assert layer.mode() is TradingMode.ALLOW


# ------------------------------------------------------------------ the fleet guard


def test_unsynced_restricts_until_fleet_synced() -> None:
    layer, _ = make_layer()
    mark(layer, "BTC-USD")
    effects = layer.observe(ev.FleetJoined(A))
    assert layer.mode() is TradingMode.REDUCE_ONLY
    refused = layer.decide(buy("BTC-USD"), position=Decimal(0))
    assert refused.reasons == (Reason("fleet", None, "UNSYNCED", None),)
    assert layer.guard("fleet").state is GuardState.UNSYNCED
    assert effects  # the mode change is recorded
    effects = layer.observe(ev.FleetSynced())
    assert_transition(effects, "fleet", "UNSYNCED", "HEALTHY", "sync")
    assert layer.decide(buy("BTC-USD")).allowed


def test_redis_lost_trips_only_after_the_grace_then_cools_down_after_resync() -> None:
    layer, clock = joined()  # grace 5 s, ttl (the fleet cooldown) 15 s
    assert layer.observe(ev.FleetLink(up=False)) == []
    assert deadline(layer) == 5.0
    clock.advance(4.9)
    assert layer.decide(buy("BTC-USD")).allowed
    effects = run_timers_until(layer, clock, 5.0)
    assert_transition(effects, "fleet", "HEALTHY", "TRIPPED", "trip", at=5.0)
    alert = assert_one(effects, Alert)
    assert (alert.severity, alert.title) == ("critical", "fleet: Redis lost")
    assert layer.mode() is TradingMode.REDUCE_ONLY
    layer.observe(ev.FleetLink(up=True))
    assert layer.guard("fleet").state is GuardState.TRIPPED  # recovery needs a resync
    clock.advance(1.0)
    effects = layer.observe(ev.FleetSynced())
    assert_transition(effects, "fleet", "TRIPPED", "COOLDOWN", "recover", at=6.0)
    assert layer.guard("fleet").seconds_until_lift == 15.0
    effects = run_timers_until(layer, clock, 21.0)
    assert_transition(effects, "fleet", "COOLDOWN", "HEALTHY", "expire", at=21.0)
    assert layer.decide(buy("BTC-USD")).allowed


def test_a_link_back_within_the_grace_trips_nothing() -> None:
    layer, clock = joined()
    layer.observe(ev.FleetLink(up=False))
    clock.advance(3.0)
    layer.observe(ev.FleetLink(up=True))
    layer.observe(ev.FleetSynced())
    assert run_timers_until(layer, clock, 100.0) == []
    assert layer.guard("fleet").state is GuardState.HEALTHY


def test_a_repeated_link_down_does_not_push_the_grace_back() -> None:
    layer, clock = joined()
    layer.observe(ev.FleetLink(up=False))
    clock.advance(3.0)
    layer.observe(ev.FleetLink(up=False))
    assert deadline(layer) == 5.0


def test_local_guards_keep_working_while_the_fleet_guard_is_tripped() -> None:
    layer, clock = joined()
    layer.observe(ev.FleetLink(up=False))
    run_timers_until(layer, clock, 5.0)
    for _ in range(3):
        layer.observe(ev.SlippageCheck("BTC-USD", ok=False))
    assert layer.guard("slippage", "BTC-USD").state is GuardState.COOLDOWN
    layer.halt("stop", symbol="ETH-USD")
    assert layer.mode("ETH-USD") is TradingMode.PAUSED
    reasons = layer.decide(buy("BTC-USD"), position=Decimal(0)).reasons
    assert [r.guard for r in reasons] == ["fleet", "slippage"]


def test_fleet_events_before_joining_are_refused_and_change_nothing() -> None:
    layer, _ = make_layer()
    before = status_of(layer)
    with pytest.raises(InvalidObservation, match="FleetSynced before FleetJoined"):
        layer.observe(ev.FleetSynced())
    with pytest.raises(InvalidObservation, match="FleetLink before FleetJoined"):
        layer.observe(ev.FleetLink(up=False))
    with pytest.raises(UnknownGuard):
        layer.guard("fleet")
    assert status_of(layer) == before


def test_a_reset_cannot_invent_a_sync() -> None:
    layer, clock = joined()
    layer.observe(ev.FleetLink(up=False))
    run_timers_until(layer, clock, 5.0)
    assert_transition(layer.reset("fleet"), "fleet", "TRIPPED", "UNSYNCED", "reset")
    layer.observe(ev.FleetSynced())
    assert_transition(layer.reset("fleet"), "fleet", "HEALTHY", "HEALTHY", "reset")


# ------------------------------------------------------------------ local_restrictions


def test_local_restrictions_are_this_members_own_only() -> None:
    layer, clock = make_layer()
    mark(layer, "BTC-USD")
    layer.observe(ev.FleetJoined(A))  # UNSYNCED: the fleet guard restricts
    layer.observe(ev.MarkUpdate("SOL-USD"))
    layer.observe(restrict(clock))  # a peer's
    layer.observe(ev.ApiCall("orders", ok=False, status=503))
    layer.observe(ev.MarkUpdate("ETH-USD"))  # a symbol scope exists and is marked
    layer.decide(buy("NEW-USD"))  # NO_MARK: never published
    layer.halt("maintenance", ttl=60.0, mode=TradingMode.REDUCE_ONLY)
    for _ in range(3):
        layer.observe(ev.SlippageCheck("ETH-USD", ok=False))
    assert layer.local_restrictions() == (
        LocalRestriction("operator", None, TradingMode.REDUCE_ONLY, "REDUCED", clock.wall() + 60),
        LocalRestriction(
            "slippage", "ETH-USD", TradingMode.REDUCE_ONLY, "COOLDOWN", clock.wall() + 60
        ),
    )
    layer.observe(ev.SlippageCheck("NEW-USD", ok=True))  # a scope in NO_MARK
    assert all(r.scope != "NEW-USD" for r in layer.local_restrictions())


def test_local_restrictions_of_a_trip_have_no_deadline() -> None:
    layer, _ = joined()
    layer.trip("api_health", "preflight: API down")
    layer.halt("stop", symbol="BTC-USD")
    assert layer.local_restrictions() == (
        LocalRestriction("api_health", None, TradingMode.REDUCE_ONLY, "TRIPPED", None),
        LocalRestriction("operator", "BTC-USD", TradingMode.PAUSED, "HALTED", None),
    )


# ------------------------------------------------------------------ status, view, snapshot


def test_status_and_view_show_peers_and_the_fleet_guard() -> None:
    layer, clock = joined()
    layer.observe(
        restrict(clock, guard="slippage", scope="BTC-USD", lifts_in=20.0, state="COOLDOWN")
    )
    status = layer.status()
    json.dumps(status)
    assert status["global"]["guards"]["fleet"]["state"] == "HEALTHY"
    assert status["fleet"]["member"] == A
    assert status["fleet"]["members"][B]["alive"] is True
    (peer,) = status["symbols"]["BTC-USD"]["peers"]
    assert (peer["name"], peer["seconds_until_lift"]) == ("slippage@host-b:2", 20.0)
    view = layer.view()
    assert view.fleet is not None and view.fleet.state is GuardState.HEALTHY
    assert view.restrictions("BTC-USD") == (
        Reason("slippage@host-b:2", "BTC-USD", "COOLDOWN", 20.0),
    )
    assert LayerView.from_json(json.loads(json.dumps(status))).to_json() == status


def test_a_layer_without_a_fleet_shows_exactly_what_it_did() -> None:
    layer, _ = make_layer()
    mark(layer, "BTC-USD")
    assert "fleet" not in layer.status()
    assert "peers" not in layer.status()["symbols"]["BTC-USD"]
    assert "fleet" not in layer.snapshot()
    assert layer.view().fleet is None


def test_a_snapshot_round_trip_keeps_peer_restrictions_with_their_remaining_time() -> None:
    layer, clock = joined(fleet_redis_url=FLEET_URL)
    layer.observe(restrict(clock, state="COOLDOWN", lifts_in=100.0))
    layer.observe(restrict(clock, member="host-c:3", guard="slippage", scope="BTC-USD"))
    clock.advance(40.0)
    layer.observe(ev.PeerHeartbeat("host-c:3", clock.wall()))
    saved = json.loads(json.dumps(layer.snapshot()))
    later = ManualClock(1000.0, wall_offset=clock.wall() + 10.0 - 1000.0)  # restarted 10 s on
    restored = ReliabilityLayer.restore(
        make_settings(fleet_redis_url=FLEET_URL), saved, later, later.wall, rng=random.Random(0)
    )
    assert restored.guard("api_health@host-b:2").seconds_until_lift == pytest.approx(50.0)
    c = restored.guard("slippage@host-c:3", "BTC-USD")
    assert (c.state, c.seconds_until_lift) == (GuardState.TRIPPED, None)
    # A restarted member has not synced: the fleet guard restricts until it does.
    assert restored.guard("fleet").state is GuardState.UNSYNCED
    assert restored.mode() is TradingMode.REDUCE_ONLY
    # host-c's last heartbeat was 10 s before the restart: dead 5 s later, then a cooldown.
    run_timers_until(restored, later, 1005.0)
    assert restored.guard("slippage@host-c:3", "BTC-USD").state is GuardState.COOLDOWN


def test_a_restored_trip_or_cooldown_of_the_fleet_guard_comes_back_tripped() -> None:
    layer, clock = joined(fleet_redis_url=FLEET_URL)
    layer.observe(ev.FleetLink(up=False))
    run_timers_until(layer, clock, 5.0)
    layer.observe(ev.FleetSynced())
    assert layer.guard("fleet").state is GuardState.COOLDOWN
    restored = ReliabilityLayer.restore(
        make_settings(fleet_redis_url=FLEET_URL), layer.snapshot(), clock, clock.wall
    )
    assert restored.guard("fleet").state is GuardState.TRIPPED
    # Without a fleet configured the guard is not restored (no shell would ever sync it).
    plain = ReliabilityLayer.restore(make_settings(), layer.snapshot(), clock, clock.wall)
    assert plain.mode() is TradingMode.ALLOW


def test_a_malformed_fleet_snapshot_is_refused() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    saved = layer.snapshot()
    saved["fleet"]["peers"][0]["mode"] = "ALLOW"
    with pytest.raises(InvalidSnapshot):
        ReliabilityLayer.restore(make_settings(), saved, clock, clock.wall)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: ev.FleetJoined("a b"), "'a b'"),
        (lambda: ev.FleetJoined("a|b"), "'a|b'"),
        (lambda: ev.FleetLink(up=1), "1"),  # type: ignore[arg-type]
        (lambda: ev.PeerHeartbeat(B, float("nan")), "nan"),
        (lambda: ev.PeerLifted(B, "fleet", None), "'fleet'"),
        (lambda: ev.PeerLifted(B, "api_health", "BTC-USD"), "'BTC-USD'"),
        (lambda: ev.PeerLifted(B, "slippage", None), "per symbol"),
        (
            lambda: ev.PeerRestriction(B, "api_health", None, 1, "TRIPPED", None, 1.0),  # type: ignore[arg-type]
            "1",
        ),
        (
            lambda: ev.PeerRestriction(
                B, "api_health", None, TradingMode.PAUSED, "NO_MARK", None, 1.0
            ),
            "'NO_MARK'",
        ),
        (
            lambda: ev.PeerRestriction(
                B, "api_health", None, TradingMode.PAUSED, "COOLDOWN", None, 1.0
            ),
            "None",
        ),
        (
            lambda: ev.PeerRestriction(
                B, "api_health", None, TradingMode.PAUSED, "TRIPPED", 5.0, 1.0
            ),
            "5.0",
        ),
        (
            lambda: ev.PeerRestriction(
                B, "api_health", None, TradingMode.PAUSED, "TRIPPED", None, float("inf")
            ),
            "inf",
        ),
    ],
)
def test_bad_fleet_input_raises_naming_the_value(build: object, named: str) -> None:
    with pytest.raises(InvalidObservation) as raised:
        build()  # type: ignore[operator]
    assert named in str(raised.value)


def test_bad_queries_and_operator_calls_on_peers_raise_and_change_nothing() -> None:
    layer, clock = joined()
    layer.observe(restrict(clock))
    before = status_of(layer)
    with pytest.raises(UnknownGuard, match="'bogus@host-b:2'"):
        layer.guard("bogus@host-b:2")
    with pytest.raises(InvalidObservation, match="'BTC-USD'"):
        layer.guard("api_health@host-b:2", "BTC-USD")
    with pytest.raises(InvalidObservation, match="api_health@host-b:2"):
        layer.reset("api_health@host-b:2")
    with pytest.raises(InvalidObservation, match="api_health@host-b:2"):
        layer.trip("api_health@host-b:2", "no")
    with pytest.raises(InvalidObservation, match="'BTC-USD'"):
        layer.guard("fleet", "BTC-USD")
    assert status_of(layer) == before
