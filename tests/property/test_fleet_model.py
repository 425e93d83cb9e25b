"""The fleet guard and peers' restrictions (DESIGN §7) against a small reference model.

A `RuleBasedStateMachine` drives a `ReliabilityLayer` through its public API as a timely shell
would (a tick at every deadline), with fleet and peer observations in any order, and after
every step compares the fleet guard's state, every peer restriction's state and time left, and
the modes with a reference written from the rules of issue 14:

- UNSYNCED until `FleetSynced`; Redis lost longer than the grace trips; a resync cools down
  for the member ttl; a reset without a sync goes back to UNSYNCED.
- A peer restriction ends at its deadline; an open-ended one of a member whose heartbeat is
  older than the ttl cools down for its guard's cooldown from that heartbeat; a newer
  heartbeat makes it open-ended again; ``operator`` (the CLI) never dies; `PeerLifted` lifts.
- The modes are the most restrictive of all of that (nothing else restricts in this run).

Times are whole seconds, so wall and monotonic times convert exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.helpers import make_settings, mark, run_timers_until
from tradeguard import GuardState, ReliabilityLayer, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.fsm._states import HaltState
from tradeguard.testing import ManualClock

GRACE, TTL = 5.0, 15.0
COOLDOWN = {"api_health": 40.0, "slippage": 20.0, "operator": TTL}
SCOPE_OF = {"api_health": None, "slippage": "BTC-USD", "operator": None}
MEMBERS = ("b", "c", "operator")
KNOBS = {
    "fleet_lost_grace_seconds": GRACE,
    "fleet_member_ttl_seconds": TTL,
    "api_health_cooldown_seconds": COOLDOWN["api_health"],
    "slippage_pause_seconds": COOLDOWN["slippage"],
    "mark_staleness_threshold_seconds": 1e9,
}
STATEFUL = settings(max_examples=75, stateful_step_count=40, deadline=None)


@dataclass
class Hold:
    mode: TradingMode
    origin: str
    state: str
    lifts: float | None  # monotonic
    open_ended: bool


class FleetModel(RuleBasedStateMachine):
    """The layer and the reference, side by side."""

    @initialize()
    def start(self) -> None:
        self.clock = ManualClock(0.0, wall_offset=1_800_000_000.0)
        self.layer = ReliabilityLayer(
            make_settings(**KNOBS), self.clock, rng=random.Random(0), wall_clock=self.clock.wall
        )
        mark(self.layer, "BTC-USD")
        self.layer.observe(ev.FleetJoined("a"))
        self.state = "UNSYNCED"
        self.link_up, self.synced = True, False
        self.grace: float | None = None
        self.cooldown: float | None = None
        self.heartbeats: dict[str, float] = {}  # wall
        self.holds: dict[tuple[str, str], Hold] = {}

    # ------------------------------------------------------------------ reference helpers

    def wall(self, mono: float) -> float:
        return mono + self.clock.wall_offset

    def mono(self, wall: float) -> float:
        return wall - self.clock.wall_offset

    def judge(self, key: tuple[str, str], now: float) -> None:
        """Apply the dead-member rule to one hold at ``now`` (at its death time if due)."""
        hold = self.holds.get(key)
        member, guard = key
        if hold is None or hold.lifts is not None or member == "operator":
            return
        death = self.mono(self.heartbeats[member]) + TTL
        if death > now:
            return
        lifts = self.mono(self.heartbeats[member]) + COOLDOWN[guard]
        if lifts <= now:
            del self.holds[key]
        else:
            hold.state, hold.lifts = "COOLDOWN", lifts

    def heard(self, member: str, wall: float, now: float) -> None:
        if member in self.heartbeats and wall <= self.heartbeats[member]:
            return
        self.heartbeats[member] = wall
        for key, hold in self.holds.items():
            if key[0] == member and hold.open_ended:
                hold.state, hold.lifts = hold.origin, None
        for key in list(self.holds):
            if key[0] == member:
                self.judge(key, now)

    # ------------------------------------------------------------------ rules

    @rule(seconds=st.integers(0, 30))
    def time_passes(self, seconds: int) -> None:
        until = self.clock() + seconds
        run_timers_until(self.layer, self.clock, until)
        # Reference: the fleet guard (grace and cooldown are independent of the holds).
        cooled = self.cooldown is not None and self.cooldown <= until
        if (
            self.state == "COOLDOWN"
            and cooled
            and (self.grace is None or self.cooldown < self.grace)
        ):  # type: ignore[operator]
            self.state, self.cooldown = "HEALTHY", None
        if self.grace is not None and self.grace <= until:
            if self.state != "TRIPPED":
                self.state, self.cooldown = "TRIPPED", None
            self.grace = None
        if self.state == "COOLDOWN" and self.cooldown is not None and self.cooldown <= until:
            self.state, self.cooldown = "HEALTHY", None
        # Reference: each hold, in its own deadline order.
        for key in list(self.holds):
            while (hold := self.holds.get(key)) is not None:
                if hold.lifts is not None:
                    if hold.lifts <= until:
                        del self.holds[key]
                    break
                if key[0] == "operator":
                    break
                death = self.mono(self.heartbeats[key[0]]) + TTL
                if death > until:
                    break
                self.judge(key, death)

    @rule()
    def sync(self) -> None:
        self.layer.observe(ev.FleetSynced())
        self.link_up, self.synced, self.grace = True, True, None
        if self.state == "UNSYNCED":
            self.state = "HEALTHY"
        elif self.state == "TRIPPED":
            self.state, self.cooldown = "COOLDOWN", self.clock() + TTL

    @rule(up=st.booleans())
    def link(self, up: bool) -> None:
        self.layer.observe(ev.FleetLink(up=up))
        if up:
            self.link_up, self.grace = True, None
        elif self.link_up:
            self.link_up, self.synced, self.grace = False, False, self.clock() + GRACE

    @rule()
    def reset(self) -> None:
        self.layer.reset("fleet")
        self.state = "HEALTHY" if self.link_up and self.synced else "UNSYNCED"
        self.cooldown = None

    @rule(
        member=st.sampled_from(MEMBERS),
        guard=st.sampled_from(sorted(COOLDOWN)),
        paused=st.booleans(),
        lifts_in=st.none() | st.integers(-5, 60),
        heartbeat_ago=st.integers(0, 40),
    )
    def restrict(
        self, member: str, guard: str, paused: bool, lifts_in: int | None, heartbeat_ago: int
    ) -> None:
        now = self.clock()
        mode = TradingMode.PAUSED if paused else TradingMode.REDUCE_ONLY
        if guard == "operator":
            state = "HALTED" if paused else "REDUCED"
        else:
            state = "TRIPPED" if lifts_in is None else "COOLDOWN"
        lifts_at = None if lifts_in is None else self.wall(now + lifts_in)
        heartbeat = self.wall(now - heartbeat_ago)
        obs = ev.PeerRestriction(member, guard, SCOPE_OF[guard], mode, state, lifts_at, heartbeat)
        self.layer.observe(obs)
        self.heard(member, heartbeat, now)
        key = (member, guard)
        if lifts_in is not None and lifts_in <= 0:
            self.holds.pop(key, None)
            return
        lifts = None if lifts_in is None else now + lifts_in
        old = self.holds.get(key)
        if (
            old is not None
            and old.mode is mode
            and old.origin == state
            and old.open_ended == (lifts is None)
            and (lifts is None or old.lifts == lifts)
        ):
            return
        self.holds[key] = Hold(mode, state, state, lifts, lifts is None)
        self.judge(key, now)

    @rule(member=st.sampled_from(MEMBERS), guard=st.sampled_from(sorted(COOLDOWN)))
    def lift(self, member: str, guard: str) -> None:
        self.layer.observe(ev.PeerLifted(member, guard, SCOPE_OF[guard]))
        self.holds.pop((member, guard), None)

    @rule(member=st.sampled_from(MEMBERS), ago=st.integers(-5, 40))
    def heartbeat(self, member: str, ago: int) -> None:
        wall = self.wall(self.clock() - ago)
        self.layer.observe(ev.PeerHeartbeat(member, wall))
        self.heard(member, wall, self.clock())

    # ------------------------------------------------------------------ comparisons

    @invariant()
    def fleet_guard_matches(self) -> None:
        status = self.layer.guard("fleet")
        assert status.state is GuardState[self.state]
        expected_left = None if self.state != "COOLDOWN" else self.cooldown - self.clock()  # type: ignore[operator]
        assert status.seconds_until_lift == expected_left

    @invariant()
    def holds_match(self) -> None:
        now = self.clock()
        for member in MEMBERS:
            for guard, scope in SCOPE_OF.items():
                status = self.layer.guard(f"{guard}@{member}", scope)
                hold = self.holds.get((member, guard))
                if hold is None:
                    lifted = HaltState.RUNNING if guard == "operator" else GuardState.HEALTHY
                    assert (status.state, status.restriction) == (lifted, TradingMode.ALLOW)
                    continue
                assert status.state.value == hold.state, (member, guard)
                assert status.restriction is hold.mode
                left = None if hold.lifts is None else hold.lifts - now
                assert status.seconds_until_lift == left, (member, guard)

    @invariant()
    def modes_match(self) -> None:
        fleet = TradingMode.ALLOW if self.state == "HEALTHY" else TradingMode.REDUCE_ONLY
        global_mode = max(
            [fleet, *(h.mode for (_, g), h in self.holds.items() if SCOPE_OF[g] is None)]
        )
        symbol = max([global_mode, *(h.mode for (_, g), h in self.holds.items() if SCOPE_OF[g])])
        assert self.layer.mode() is global_mode
        assert self.layer.mode("BTC-USD") is symbol

    @invariant()
    def local_restrictions_never_show_the_fleet_or_peers(self) -> None:
        assert self.layer.local_restrictions() == ()


TestFleetModel = FleetModel.TestCase
TestFleetModel.settings = STATEFUL


@pytest.mark.parametrize("heartbeat_ago", [0, 14, 15, 100])
def test_the_dead_member_rule_never_lifts_before_death_is_known(heartbeat_ago: int) -> None:
    clock = ManualClock()
    layer = ReliabilityLayer(make_settings(**KNOBS), clock, wall_clock=clock.wall)
    obs = ev.PeerRestriction(
        "b",
        "api_health",
        None,
        TradingMode.REDUCE_ONLY,
        "TRIPPED",
        None,
        clock.wall() - heartbeat_ago,
    )
    layer.observe(obs)
    death = max(0.0, TTL - heartbeat_ago)
    lifts = COOLDOWN["api_health"] - heartbeat_ago
    if lifts > 0:
        run_timers_until(layer, clock, max(0.0, min(death, lifts) - 1))
        assert layer.mode() is TradingMode.REDUCE_ONLY
    run_timers_until(layer, clock, max(death, lifts))
    assert layer.mode() is TradingMode.ALLOW
