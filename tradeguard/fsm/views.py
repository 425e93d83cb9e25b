"""The layer's read model: frozen, typed values of every machine at one instant.

`ReliabilityLayer.view()` returns a `LayerView`; `status()` is its `to_json()`. Readers (the
metrics, ``/health`` and ``/status``, ``tradeguard status``, the demo, the trading loop's health
runner) read these values and never pick a dict apart by string key: the JSON is read in one
place, `LayerView.from_json`, which also rebuilds a view from a runtime's ``/status`` or a
stored snapshot's status, naming the first field that is missing or malformed.

Active restrictions are `Reason` values, the same ones a refusal carries.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Final, TypeVar, final

from tradeguard.errors import InvalidObservation
from tradeguard.fsm._states import BreakerState, FeedState, GuardState, HaltState, TradingMode
from tradeguard.fsm.effects import Reason

__all__ = [
    "BreakerView",
    "FeedView",
    "FleetView",
    "GuardView",
    "HaltView",
    "LayerView",
    "LocalRestriction",
    "MemberView",
    "PeerView",
    "ScopeView",
]

_E = TypeVar("_E", bound=Enum)


@final
@dataclass(frozen=True, slots=True)
class HaltView:
    """A scope's operator halt.

    Attributes:
        state: RUNNING (no halt), HALTED (paused) or REDUCED (reduce-only).
        mode: what the halt imposes now (ALLOW while RUNNING).
        reason: the operator's reason while a halt is in force.
        until: the monotonic deadline of a time-limited halt, else ``None``.
        seconds_until_lift: time left of a time-limited halt, else ``None``.
    """

    state: HaltState
    mode: TradingMode
    reason: str
    until: float | None
    seconds_until_lift: float | None

    @property
    def in_force(self) -> bool:
        """Whether a halt restricts the scope."""
        return self.state is not HaltState.RUNNING


@final
@dataclass(frozen=True, slots=True)
class GuardView:
    """One guard of one scope.

    Attributes:
        name: the guard's name (``api_health``, ``mark_staleness``, ...).
        state: its `GuardState`.
        restriction: the mode it imposes while not HEALTHY.
        seconds_until_lift: time left in COOLDOWN, ``None`` otherwise.
        counters: the guard's own figures (error rate, consecutive failures, ...), read-only.
    """

    name: str
    state: GuardState
    restriction: TradingMode
    seconds_until_lift: float | None
    counters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def restricting(self) -> bool:
        """Whether the guard restricts trading now (preview never does: it only disables)."""
        return self.state is not GuardState.HEALTHY and self.restriction is not TradingMode.ALLOW


@final
@dataclass(frozen=True, slots=True)
class LocalRestriction:
    """A restriction this member's own guards or operator put in force, as a fleet publishes
    it (`ReliabilityLayer.local_restrictions`, DESIGN §7).

    Attributes:
        guard: the guard's name, or ``"operator"`` for a halt.
        scope: the symbol, or ``None`` for global.
        mode: what it imposes (REDUCE_ONLY or PAUSED).
        state: the guard's state (``TRIPPED``, ``COOLDOWN``) or the halt's (``HALTED``,
            ``REDUCED``).
        lifts_at: when it lifts, as a WALL-clock time; ``None`` while the fault holds or for
            a halt without ttl.
    """

    guard: str
    scope: str | None
    mode: TradingMode
    state: str
    lifts_at: float | None


@final
@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer's restriction as applied to one scope of this layer.

    Attributes:
        name: ``guard@member``, the name its `Reason` carries.
        member: the peer.
        guard: the peer's guard, or ``"operator"``.
        mode: what it imposes here.
        state: the peer's state (``COOLDOWN`` too for a dead member's open-ended one).
        until: its monotonic deadline here, ``None`` while open-ended.
        seconds_until_lift: time left, ``None`` while open-ended.
    """

    name: str
    member: str
    guard: str
    mode: TradingMode
    state: str
    until: float | None
    seconds_until_lift: float | None


@final
@dataclass(frozen=True, slots=True)
class MemberView:
    """A peer the layer heard from: its last heartbeat (wall clock) and whether it is alive."""

    member: str
    heartbeat: float
    seconds_since_heartbeat: float
    alive: bool


@final
@dataclass(frozen=True, slots=True)
class FleetView:
    """The fleet membership: this member and the peers it heard from.

    Attributes:
        member: this layer's member name (``None`` when peers' restrictions were restored
            without a fleet joined).
        state: the fleet guard's state (``None`` likewise).
        link_up: whether the link to Redis is up.
        synced: whether the member has read every restriction since the link came up.
        grace_until: the monotonic time the fleet guard trips if Redis stays away.
        members: each peer heard from.
        peer_restrictions: how many peer restrictions are in force.
    """

    member: str | None
    state: GuardState | None
    link_up: bool | None
    synced: bool | None
    grace_until: float | None
    members: Mapping[str, MemberView]
    peer_restrictions: int


@final
@dataclass(frozen=True, slots=True)
class ScopeView:
    """The global scope (``symbol`` None) or one symbol.

    Attributes:
        symbol: the symbol, or ``None`` for the global scope.
        mode: the scope's own mode.
        effective_mode: what decides its orders: the larger of the global mode and its own.
        halt: its operator halt.
        guards: its guards by name.
        has_mark: whether its first mark arrived (always True for the global scope).
        peers: the peers' restrictions in force on it (a fleet only), by name.
    """

    symbol: str | None
    mode: TradingMode
    effective_mode: TradingMode
    halt: HaltView
    guards: Mapping[str, GuardView]
    has_mark: bool = True
    peers: tuple[PeerView, ...] = ()

    def restrictions(self) -> tuple[Reason, ...]:
        """Every restriction in force in this scope alone, as the reasons of a refusal."""
        found = [
            Reason(g.name, self.symbol, g.state.value, g.seconds_until_lift)
            for g in self.guards.values()
            if g.restricting
        ]
        if self.halt.in_force:
            halt = self.halt
            found.append(Reason("operator", self.symbol, halt.state.value, halt.seconds_until_lift))
        found.extend(Reason(p.name, self.symbol, p.state, p.seconds_until_lift) for p in self.peers)
        return tuple(found)


@final
@dataclass(frozen=True, slots=True)
class BreakerView:
    """One endpoint category's circuit breaker."""

    category: str
    state: BreakerState
    consecutive_failures: int
    half_open_successes: int
    probes_in_flight: int


@final
@dataclass(frozen=True, slots=True)
class FeedView:
    """One websocket feed.

    Attributes:
        last_message_age: seconds since its last message, ``None`` before the first.
        retry_at: the monotonic time of its next attempt while backing off, else ``None``.
    """

    name: str
    state: FeedState
    attempts: int
    max_attempts: int
    messages: int
    disconnects: int
    sequence_gaps: int
    dropped_messages: int
    malformed_messages: int
    last_message_age: float | None
    last_reason: str
    retry_at: float | None


@final
@dataclass(frozen=True, slots=True)
class LayerView:
    """Every machine of a layer at one instant.

    Attributes:
        mode: the global mode.
        preview_enabled: whether order previews are still on.
        global_scope: the global scope.
        symbols: each symbol's scope.
        breakers: each category's breaker.
        feeds: each feed.
        next_deadline: when the layer next needs `tick()`, or ``None``.
        fleet: the fleet membership, ``None`` without a fleet.
    """

    mode: TradingMode
    preview_enabled: bool
    global_scope: ScopeView
    symbols: Mapping[str, ScopeView]
    breakers: Mapping[str, BreakerView]
    feeds: Mapping[str, FeedView]
    next_deadline: float | None
    fleet: FleetView | None = None
    _json: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def scope(self, symbol: str | None = None) -> ScopeView | None:
        """The global scope, or ``symbol``'s (``None`` for a symbol the layer never saw)."""
        return self.global_scope if symbol is None else self.symbols.get(symbol)

    def restrictions(self, symbol: str | None = None) -> tuple[Reason, ...]:
        """What restricts ``symbol`` (global restrictions included), or the global scope.

        A symbol the layer never saw is restricted by ``mark_staleness`` in ``NO_MARK``.
        """
        found = self.global_scope.restrictions()
        if symbol is None:
            return found
        scope = self.symbols.get(symbol)
        if scope is None:
            return (*found, Reason("mark_staleness", symbol, GuardState.NO_MARK.value, None))
        return (*found, *scope.restrictions())

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form (what ``status()``, ``/status`` and snapshots' readers see)."""
        return copy.deepcopy(dict(self._json))

    @classmethod
    def from_json(cls, body: object) -> LayerView:
        """Read a status document (``status()``, a runtime's ``/status``).

        Every field is checked, always in the same order, and the first one missing or
        malformed is named by its path.

        Raises:
            InvalidObservation: a field is missing or of the wrong kind (named by its path).
        """
        if not isinstance(body, dict):
            raise _wrong("status", "an object", body)
        global_scope = _scope(_obj(body.get("global"), "status", "global"), None, "status.global")
        symbols = {
            symbol: _scope(
                _obj(scope, "status.symbols", symbol), symbol, f"status.symbols.{symbol}"
            )
            for symbol, scope in _obj(body.get("symbols"), "status", "symbols").items()
        }
        breakers = {
            category: _breaker(category, _obj(b, "status.breakers", category))
            for category, b in _obj(body.get("breakers"), "status", "breakers").items()
        }
        feeds = {
            name: _feed(name, _obj(f, "status.feeds", name))
            for name, f in _obj(body.get("feeds"), "status", "feeds").items()
        }
        preview = body.get("preview_enabled")
        if not isinstance(preview, bool):
            raise _wrong("status.preview_enabled", "true or false", preview)
        fleet = body.get("fleet")
        return cls(
            _pick(_MODES, body.get("mode"), "status", "mode"),
            preview,
            global_scope,
            MappingProxyType(symbols),
            MappingProxyType(breakers),
            MappingProxyType(feeds),
            _seconds(body.get("next_deadline"), "status", "next_deadline"),
            fleet=None if fleet is None else _fleet(_obj(fleet, "status", "fleet")),
            _json=MappingProxyType(dict(body)),
        )


# ---------------------------------------------------------------------- the one JSON reader
#
# A view of 1,000 symbols takes some 20,000 checks, so a check does no more than it must when
# the field is right: a type test and, for a state or mode, one dict lookup by name (not
# `Enum.__members__`, which builds a proxy on every access). Each check gets the path of the
# object it reads (``where``) and the field's ``key``: the field's full path, and the names
# expected, are spelled out only in the error.


def _by_name(kind: type[_E]) -> Mapping[str, _E]:
    """``kind``'s members by name, as the status document spells them (`status()` writes
    ``.name``). A plain dict: `MappingProxyType.get` costs half as much again."""
    return dict(kind.__members__)


_MODES: Final = _by_name(TradingMode)
_GUARD_STATES: Final = _by_name(GuardState)
_HALT_STATES: Final = _by_name(HaltState)
_BREAKER_STATES: Final = _by_name(BreakerState)
_FEED_STATES: Final = _by_name(FeedState)


def _wrong(where: str, expected: str, value: object) -> InvalidObservation:
    return InvalidObservation(f"{where} must be {expected}, got {value!r}")


def _obj(value: object, where: str, key: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise _wrong(f"{where}.{key}", "an object", value)


def _pick(names: Mapping[str, _E], value: object, where: str, key: str) -> _E:
    """The member named ``value``. (``TradingMode.ALLOW`` is falsy: test for ``None``.)"""
    if isinstance(value, str):
        member = names.get(value)
        if member is not None:
            return member
    raise _wrong(f"{where}.{key}", f"one of {', '.join(names)}", value)


def _seconds(value: object, where: str, key: str) -> float | None:
    if value is None:
        return None
    if type(value) is float:  # the usual case, and quick: only NaN to refuse
        if value == value:  # not NaN
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    raise _wrong(f"{where}.{key}", "a number of seconds or null", value)


def _count(value: object, where: str, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _wrong(f"{where}.{key}", "a whole number >= 0", value)


def _text(value: object, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    raise _wrong(f"{where}.{key}", "a string", value)


def _maybe_bool(value: object, where: str, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _wrong(f"{where}.{key}", "true, false or null", value)


def _scope(scope: dict[str, Any], symbol: str | None, where: str) -> ScopeView:
    halt = _obj(scope.get("halt"), where, "halt")
    in_guards = f"{where}.guards"
    guards = {
        name: _guard(name, _obj(guard, in_guards, name), f"{in_guards}.{name}")
        for name, guard in _obj(scope.get("guards"), where, "guards").items()
    }
    mode = _pick(_MODES, scope.get("mode"), where, "mode")
    effective = scope.get("effective_mode", scope.get("mode"))
    has_mark = scope.get("has_mark", True)
    if not isinstance(has_mark, bool):
        raise _wrong(f"{where}.has_mark", "true or false", has_mark)
    peers = scope.get("peers", [])
    if not isinstance(peers, list):
        raise _wrong(f"{where}.peers", "a list", peers)
    return ScopeView(
        symbol,
        mode,
        _pick(_MODES, effective, where, "effective_mode"),
        _halt(halt, where),
        MappingProxyType(guards),
        has_mark,
        tuple(
            _peer(_obj(p, where, f"peers[{i}]"), f"{where}.peers[{i}]") for i, p in enumerate(peers)
        )
        if peers
        else (),
    )


# A scope without an operator halt, as most are, gets this one value (it is frozen): building
# a frozen value costs ~0.2 µs a field, and a view of 1,000 symbols would hold 1,000 of them.
_RUNNING: Final = HaltView(HaltState.RUNNING, TradingMode.ALLOW, "", None, None)


def _halt(halt: dict[str, Any], where: str) -> HaltView:
    state = _pick(_HALT_STATES, halt.get("state"), where, "halt.state")
    mode = _pick(_MODES, halt.get("mode", "ALLOW"), where, "halt.mode")
    reason = _text(halt.get("reason", ""), where, "halt.reason")
    until = _seconds(halt.get("until"), where, "halt.until")
    lift = _seconds(halt.get("seconds_until_lift"), where, "halt.seconds_until_lift")
    running = state is HaltState.RUNNING and mode is TradingMode.ALLOW and reason == ""
    if running and until is None and lift is None:
        return _RUNNING
    return HaltView(state, mode, reason, until, lift)


def _peer(peer: dict[str, Any], where: str) -> PeerView:
    return PeerView(
        _text(peer.get("name"), where, "name"),
        _text(peer.get("member"), where, "member"),
        _text(peer.get("guard"), where, "guard"),
        _pick(_MODES, peer.get("mode"), where, "mode"),
        _text(peer.get("state"), where, "state"),
        _seconds(peer.get("until"), where, "until"),
        _seconds(peer.get("seconds_until_lift"), where, "seconds_until_lift"),
    )


def _fleet(fleet: dict[str, Any]) -> FleetView:
    where = "status.fleet"
    member = fleet.get("member")
    state = fleet.get("state")
    members = {
        name: _member(name, _obj(m, f"{where}.members", name), f"{where}.members.{name}")
        for name, m in _obj(fleet.get("members", {}), where, "members").items()
    }
    return FleetView(
        None if member is None else _text(member, where, "member"),
        None if state is None else _pick(_GUARD_STATES, state, where, "state"),
        _maybe_bool(fleet.get("link_up"), where, "link_up"),
        _maybe_bool(fleet.get("synced"), where, "synced"),
        _seconds(fleet.get("grace_until"), where, "grace_until"),
        MappingProxyType(members),
        _count(fleet.get("peer_restrictions", 0), where, "peer_restrictions"),
    )


def _member(name: str, member: dict[str, Any], where: str) -> MemberView:
    heartbeat = _seconds(member.get("heartbeat"), where, "heartbeat")
    since = _seconds(member.get("seconds_since_heartbeat"), where, "seconds_since_heartbeat")
    alive = member.get("alive")
    if heartbeat is None or since is None or not isinstance(alive, bool):
        raise InvalidObservation(
            f"{where} must have a heartbeat, seconds_since_heartbeat and alive, got {member!r}"
        )
    return MemberView(name, heartbeat, since, alive)


def _guard(name: str, guard: dict[str, Any], where: str) -> GuardView:
    state = _pick(_GUARD_STATES, guard.get("state"), where, "state")
    restriction = _pick(_MODES, guard.get("restriction"), where, "restriction")
    lift = _seconds(guard.get("seconds_until_lift"), where, "seconds_until_lift")
    counters = dict(guard)  # the rest of the guard's fields (a copy and three deletions cost
    del counters["state"], counters["restriction"]  # less than a filtering comprehension)
    counters.pop("seconds_until_lift", None)
    return GuardView(name, state, restriction, lift, MappingProxyType(counters))


def _breaker(category: str, breaker: dict[str, Any]) -> BreakerView:
    where = f"status.breakers.{category}"
    return BreakerView(
        category,
        _pick(_BREAKER_STATES, breaker.get("state"), where, "state"),
        _count(breaker.get("consecutive_failures", 0), where, "consecutive_failures"),
        _count(breaker.get("half_open_successes", 0), where, "half_open_successes"),
        _count(breaker.get("probes_in_flight", 0), where, "probes_in_flight"),
    )


def _feed(name: str, feed: dict[str, Any]) -> FeedView:
    where = f"status.feeds.{name}"
    return FeedView(
        name,
        _pick(_FEED_STATES, feed.get("state"), where, "state"),
        _count(feed.get("attempts", 0), where, "attempts"),
        _count(feed.get("max_attempts", 0), where, "max_attempts"),
        _count(feed.get("messages", 0), where, "messages"),
        _count(feed.get("disconnects", 0), where, "disconnects"),
        _count(feed.get("sequence_gaps", 0), where, "sequence_gaps"),
        _count(feed.get("dropped_messages", 0), where, "dropped_messages"),
        _count(feed.get("malformed_messages", 0), where, "malformed_messages"),
        _seconds(feed.get("last_message_age"), where, "last_message_age"),
        _text(feed.get("last_reason", ""), where, "last_reason"),
        _seconds(feed.get("retry_at"), where, "retry_at"),
    )
