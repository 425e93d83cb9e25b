"""The fleet (DESIGN §7): the ``fleet`` guard, and the restrictions peers put in force here.

Theory of operation. Many members trade one account; each publishes the restrictions its own
guards and operator put in force (`ReliabilityLayer.local_restrictions`) and applies its peers'
as restrictions of its own scopes, so `decide()` stays local and reads the same per-scope
modes as ever. The shell (``tradeguard.io.fleet``) does the Redis I/O; everything that is a
decision lives here.

- `FleetGuard` is a model of `FLEET`: UNSYNCED from `FleetJoined` until `FleetSynced`;
  ``FleetLink(up=False)`` arms an eager grace timer, and if the link is still down when it
  passes the guard trips (REDUCE_ONLY, critical alert); a resync leads to COOLDOWN
  (``GPT_TRADER_FLEET_MEMBER_TTL_SECONDS``), then HEALTHY.
- `PeerHold` is one peer restriction ``(member, guard, scope)``; `Peers` keeps them all and
  their timers. Wall-clock deadlines are converted to the layer's monotonic clock when they
  are observed (and on restore), then are eager deadlines like any cooldown.
- The dead-member rule: an open-ended hold (TRIPPED, or a halt without ttl) of a member whose
  last heartbeat is older than the member ttl becomes a cooldown of that guard's own cooldown
  length counted from the last heartbeat: never lifted before the member is known dead (an
  eager timer at heartbeat + ttl), never held forever. A later heartbeat (the member was cut
  off, not dead) makes it open-ended again. The reserved member ``"operator"`` (the CLI's
  fleet-wide halt) never heartbeats and is never dead: its halts hold until resumed.
- Nothing from a peer loosens a local restriction: holds only add to a scope's own mode.
  A peer may replace or lift its own earlier restriction, which is the peer's truth.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, final

from tradeguard.config import Settings
from tradeguard.fsm._definition import MachineDefinition
from tradeguard.fsm._guards import Guard, ToMono
from tradeguard.fsm._machines import FLEET
from tradeguard.fsm._states import GuardState, HaltState, TradingMode
from tradeguard.fsm._timers import Timer, Timers, seconds_until
from tradeguard.fsm.effects import Alert, Effect, Reason, Transitioned
from tradeguard.fsm.events import PeerRestriction

if TYPE_CHECKING:
    from tradeguard.fsm._scope import Scope

__all__ = ["OPERATOR_MEMBER", "FleetGuard", "PeerHold", "Peers", "peer_cooldowns"]

_HEALTHY, _TRIPPED, _COOLDOWN = GuardState.HEALTHY, GuardState.TRIPPED, GuardState.COOLDOWN
_UNSYNCED = GuardState.UNSYNCED
OPERATOR_MEMBER = "operator"
"""The member name the CLI publishes fleet-wide halts as: it never heartbeats, never dies."""
# How a hold's state reads as an enum for `GuardStatus` (a halt's states are `HaltState`).
_STATE_ENUM: dict[str, GuardState | HaltState] = {
    "TRIPPED": _TRIPPED,
    "COOLDOWN": _COOLDOWN,
    "HALTED": HaltState.HALTED,
    "REDUCED": HaltState.REDUCED,
}


def peer_cooldowns(settings: Settings) -> dict[str, float]:
    """Each shareable guard's own cooldown: how long a dead member's open-ended restriction
    still holds, counted from its last heartbeat. An operator halt without ttl uses the member
    ttl (a halt has no cooldown of its own)."""
    s = settings
    return {
        "api_health": s.api_health_cooldown_seconds,
        "reconciliation": s.api_health_cooldown_seconds,
        "validation": s.validation_failure_cooldown_seconds,
        "broker_outage": s.broker_outage_cooldown_seconds,
        "websocket": s.ws_reconnect_pause_seconds,
        "mark_staleness": s.mark_staleness_cooldown_seconds,
        "slippage": s.slippage_pause_seconds,
        "operator": s.fleet_member_ttl_seconds,
    }


class FleetGuard(Guard):
    """The global ``fleet`` guard: a model of `FLEET`, with the Redis-lost grace timer.

    Attributes:
        member: this layer's member name.
        link_up: the last `FleetLink` said the link is up (assumed up at the join).
        has_synced: `FleetSynced` was seen since the link last went down.
    """

    definition: ClassVar[MachineDefinition] = FLEET
    __slots__ = ("_grace", "grace_seconds", "has_synced", "link_up", "member")

    def __init__(
        self, timers: Timers, *, member: str, grace_seconds: float, cooldown_seconds: float
    ) -> None:
        super().__init__(
            "fleet",
            None,
            timers,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown_seconds,
        )
        self.state = _UNSYNCED
        self.member = member
        self.grace_seconds = grace_seconds
        self.link_up = True
        self.has_synced = False
        self._grace = Timer(self._grace_over)

    def synced(self) -> bool:
        """Condition of `FLEET`'s reset: a reset cannot invent a sync."""
        return self.link_up and self.has_synced

    @property
    def grace_until(self) -> float | None:
        """When the guard trips if the link stays down (monotonic), else ``None``."""
        return self._grace.due

    def link(self, up: bool, at: float) -> list[Effect]:
        """The link went up or down. Down starts the grace period once (a repeated report
        does not push it back); up ends it. Neither is a transition."""
        if up:
            self.link_up = True
            Timers.disarm(self._grace)
        elif self.link_up:
            self.link_up = False
            self.has_synced = False  # a member that lost the stream must read the hash again
            self._timers.arm(self._grace, at + self.grace_seconds)
        return []

    def sync(self, at: float) -> list[Effect]:
        """The shell read every restriction in force (only possible over a live link)."""
        self.link_up = True
        self.has_synced = True
        Timers.disarm(self._grace)
        if self.state is _UNSYNCED:
            return self._fire("sync", at)
        if self.state is _TRIPPED:
            return self._fire("recover", at)
        return []  # HEALTHY stays; COOLDOWN keeps cooling down

    def _grace_over(self, at: float) -> list[Effect]:
        if self.link_up or self.state is _TRIPPED:
            return []
        detail = (
            f"no Redis for {self.grace_seconds:g}s: member {self.member!r} can no longer hear "
            "its peers' trips; restricting to REDUCE_ONLY"
        )
        return [*self._fire("trip", at), Alert("critical", "fleet: Redis lost", detail)]

    def counters(self) -> dict[str, Any]:
        return {"member": self.member, "link_up": self.link_up, "synced": self.has_synced}

    def load(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        """Restore: a restarted member has not synced. A saved trip or cooldown comes back
        TRIPPED (a resync then starts a full cooldown: never more permissive); anything else
        comes back UNSYNCED.

        Raises:
            ValueError: the saved state is not one of `FLEET`'s.
        """
        state = GuardState[saved["state"]]
        if state not in self.definition.used_states:
            raise ValueError(f"fleet: saved state {state.name} is not one of its states")
        self.state = _TRIPPED if state in (_TRIPPED, _COOLDOWN) else _UNSYNCED


@final
class PeerHold:
    """One restriction a peer has in force, applied to one scope of this layer.

    Attributes:
        name: ``f"{guard}@{member}"``, what `Reason.guard` carries and `guard()` answers to.
        state: the peer's state (``TRIPPED``, ``COOLDOWN``, ``HALTED``, ``REDUCED``); a dead
            member's open-ended hold reads ``COOLDOWN``.
        lifts_at: the monotonic time it lifts, ``None`` while open-ended.
        open_ended: the peer said it has no deadline (the dead-member rule applies).
        origin_state: the state the peer said, kept while the dead-member rule cools it down.
    """

    __slots__ = (
        "guard",
        "lifts_at",
        "member",
        "mode",
        "name",
        "open_ended",
        "origin_state",
        "scope",
        "state",
        "timer",
    )

    def __init__(self, member: str, guard: str, scope: str | None) -> None:
        self.member = member
        self.guard = guard
        self.scope = scope
        self.name = f"{guard}@{member}"
        self.mode = TradingMode.REDUCE_ONLY
        self.state = ""
        self.origin_state = ""
        self.lifts_at: float | None = None
        self.open_ended = False
        self.timer = Timer(_nothing, scope)

    @property
    def lifted_state(self) -> str:
        """How the peer's machine reads when the hold is not in force (an audit record's
        source when it is applied, its dest when it lifts)."""
        return HaltState.RUNNING.value if self.guard == "operator" else _HEALTHY.value

    @property
    def state_enum(self) -> GuardState | HaltState:
        """The state as `GuardStatus` shows it."""
        return _STATE_ENUM[self.state]

    def reason(self, now: float) -> Reason:
        """The hold as the reason of a refusal."""
        return Reason(self.name, self.scope, self.state, seconds_until(self.lifts_at, now))


def _nothing(at: float) -> list[Effect]:
    return []


# A hold's key: (member, guard, scope).
_Key = tuple[str, str, str | None]


@final
class Peers:
    """Every peer restriction applied to this layer, with the peers' heartbeats.

    Args:
        timers: the layer's timers (every deadline is eager).
        scope_of: the layer's scope for a symbol (``None``: global), made if new.
        wall_offset: wall-clock minus monotonic seconds now (the layer's two clocks).
        settings: the knobs (the member ttl and each guard's cooldown).
    """

    __slots__ = ("_cooldowns", "_offset", "_scope_of", "_timers", "_ttl", "heartbeats", "holds")

    def __init__(
        self,
        timers: Timers,
        scope_of: Callable[[str | None], Scope],
        wall_offset: Callable[[], float],
        settings: Settings,
    ) -> None:
        self._timers = timers
        self._scope_of = scope_of
        self._offset = wall_offset
        self._ttl = settings.fleet_member_ttl_seconds
        self._cooldowns = peer_cooldowns(settings)
        self.holds: dict[_Key, PeerHold] = {}
        self.heartbeats: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self.holds or self.heartbeats)

    def find(self, member: str, guard: str, scope: str | None) -> PeerHold | None:
        """The hold of ``(member, guard, scope)``, if one is in force."""
        return self.holds.get((member, guard, scope))

    # ------------------------------------------------------------------ observations

    def restrict(self, obs: PeerRestriction, at: float) -> list[Effect]:
        """Apply (or replace) a peer's restriction; a deadline already past lifts it. Its
        heartbeat counts as one (`heartbeat`)."""
        effects = self.heartbeat(obs.member, obs.heartbeat_at, at)
        key = (obs.member, obs.guard, obs.scope)
        hold = self.holds.get(key)
        lifts_at = None if obs.lifts_at is None else obs.lifts_at - self._offset()
        if lifts_at is not None and lifts_at <= at:
            return effects if hold is None else effects + self._remove(hold, "expire", at)
        if hold is None:
            hold = PeerHold(obs.member, obs.guard, obs.scope)
            hold.timer = Timer(partial(self._due, hold), obs.scope)
            source = hold.lifted_state
        elif (
            hold.mode is obs.mode
            and hold.origin_state == obs.state
            and hold.open_ended == (lifts_at is None)
            and (lifts_at is None or hold.lifts_at == lifts_at)
        ):
            return effects  # the same restriction again (a resync): nothing changed
        else:
            source = hold.state
        hold.mode = obs.mode
        hold.state = hold.origin_state = obs.state
        hold.lifts_at = lifts_at
        hold.open_ended = lifts_at is None
        self.holds[key] = hold
        scope = self._scope_of(obs.scope)
        if scope.peers is None:
            scope.peers = {}
        scope.peers[hold.name] = hold
        record = Transitioned(hold.name, hold.scope, source, hold.state, "peer_restrict", at)
        return [*effects, record, *self._arm(hold, at)]

    def lifted(self, member: str, guard: str, scope: str | None, at: float) -> list[Effect]:
        """The peer lifted it: it lifts here at once (a no-op if it is not in force)."""
        hold = self.holds.get((member, guard, scope))
        return [] if hold is None else self._remove(hold, "peer_lift", at)

    def heartbeat(self, member: str, wall: float, at: float) -> list[Effect]:
        """A peer is alive at wall time ``wall``: its open-ended holds wait for a later death
        (and one the dead-member rule was cooling down holds open-ended again)."""
        if not self._heard(member, wall):
            return []
        effects: list[Effect] = []
        for hold in list(self.holds.values()):
            if hold.member != member or not hold.open_ended:
                continue
            if hold.lifts_at is not None:  # cooling down as dead, but it is alive
                source = hold.state
                hold.state = hold.origin_state
                hold.lifts_at = None
                effects.append(
                    Transitioned(hold.name, hold.scope, source, hold.state, "member_alive", at)
                )
            effects += self._arm(hold, at)
        return effects

    def _heard(self, member: str, wall: float) -> bool:
        """Note a heartbeat; a heartbeat never moves back. True when it moved forward."""
        last = self.heartbeats.get(member)
        if last is not None and wall <= last:
            return False
        self.heartbeats[member] = wall
        return True

    # ------------------------------------------------------------------ deadlines

    def _arm(self, hold: PeerHold, at: float) -> list[Effect]:
        """Arm the hold's one timer: its lift, or the moment its member would be dead."""
        if hold.lifts_at is not None:
            self._timers.arm(hold.timer, hold.lifts_at)
            return []
        if hold.member == OPERATOR_MEMBER:
            Timers.disarm(hold.timer)  # a fleet-wide halt without ttl holds until resumed
            return []
        death = self.heartbeats[hold.member] + self._ttl - self._offset()
        if death <= at:
            return self._dead(hold, at)
        self._timers.arm(hold.timer, death)
        return []

    def _due(self, hold: PeerHold, at: float) -> list[Effect]:
        if self.holds.get((hold.member, hold.guard, hold.scope)) is not hold:
            return []  # lifted meanwhile
        if hold.lifts_at is not None:
            return self._remove(hold, "expire", at)
        return self._arm(hold, at)  # the member's death is due, unless it heartbeat since

    def _dead(self, hold: PeerHold, at: float) -> list[Effect]:
        """The dead-member rule: a cooldown of the guard's length from the last heartbeat."""
        lifts_at = self.heartbeats[hold.member] + self._cooldowns[hold.guard] - self._offset()
        if lifts_at <= at:
            return self._remove(hold, "member_dead", at)
        source = hold.state
        hold.state = _COOLDOWN.value
        hold.lifts_at = lifts_at
        self._timers.arm(hold.timer, lifts_at)
        return [Transitioned(hold.name, hold.scope, source, hold.state, "member_dead", at)]

    def _remove(self, hold: PeerHold, trigger: str, at: float) -> list[Effect]:
        del self.holds[(hold.member, hold.guard, hold.scope)]
        scope = self._scope_of(hold.scope)
        if scope.peers is not None:
            scope.peers.pop(hold.name, None)
            if not scope.peers:
                scope.peers = None
        Timers.disarm(hold.timer)
        return [Transitioned(hold.name, hold.scope, hold.state, hold.lifted_state, trigger, at)]

    # ------------------------------------------------------------------ persistence

    def dump(self, to_wall: Callable[[float], float]) -> dict[str, Any]:
        """JSON-ready: every hold with its deadline as a wall-clock time, and the heartbeats."""
        return {
            "heartbeats": dict(sorted(self.heartbeats.items())),
            "peers": [
                {
                    "member": h.member,
                    "guard": h.guard,
                    "scope": h.scope,
                    "mode": h.mode.name,
                    "state": h.origin_state,
                    "lifts_at": None if h.lifts_at is None or h.open_ended else to_wall(h.lifts_at),
                }
                for h in sorted(self.holds.values(), key=lambda h: (h.name, h.scope or ""))
            ],
        }

    def load(self, saved: dict[str, Any], at: float) -> list[Effect]:
        """Restore what `dump` saved, as if each restriction were observed again now (a dead
        member's open-ended holds are judged by its saved heartbeat).

        Raises:
            ValueError, KeyError, TypeError: the saved data is malformed.
        """
        for member, wall in saved.get("heartbeats", {}).items():
            self._heard(str(member), float(wall))
        effects: list[Effect] = []
        for p in saved.get("peers", []):
            member = p["member"]
            obs = PeerRestriction(
                member,
                p["guard"],
                p["scope"],
                TradingMode[p["mode"]],
                p["state"],
                p["lifts_at"],
                self.heartbeats.get(member, 0.0),
            )
            effects += self.restrict(obs, at)
        return effects
