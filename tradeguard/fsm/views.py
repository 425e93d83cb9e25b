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
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar, final

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

_E = TypeVar("_E", bound=StrEnum)


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

        Raises:
            InvalidObservation: a field is missing or of the wrong kind (named by its path).
        """
        root = _obj(body, "status")
        global_scope = _scope(_obj(root.get("global"), "status.global"), None, "status.global")
        symbols = {
            symbol: _scope(
                _obj(scope, f"status.symbols.{symbol}"), symbol, f"status.symbols.{symbol}"
            )
            for symbol, scope in _obj(root.get("symbols"), "status.symbols").items()
        }
        breakers = {
            category: _breaker(category, _obj(b, f"status.breakers.{category}"))
            for category, b in _obj(root.get("breakers"), "status.breakers").items()
        }
        feeds = {
            name: _feed(name, _obj(f, f"status.feeds.{name}"))
            for name, f in _obj(root.get("feeds"), "status.feeds").items()
        }
        preview = root.get("preview_enabled")
        if not isinstance(preview, bool):
            raise InvalidObservation(
                f"status.preview_enabled must be true or false, got {preview!r}"
            )
        fleet = root.get("fleet")
        return cls(
            _mode(root.get("mode"), "status.mode"),
            preview,
            global_scope,
            MappingProxyType(symbols),
            MappingProxyType(breakers),
            MappingProxyType(feeds),
            _seconds(root.get("next_deadline"), "status.next_deadline"),
            fleet=None if fleet is None else _fleet(_obj(fleet, "status.fleet")),
            _json=MappingProxyType(dict(root)),
        )


# ---------------------------------------------------------------------- the one JSON reader


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidObservation(f"{where} must be an object, got {value!r}")
    return value


def _choice(value: object, kind: type[_E], where: str) -> _E:
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    names = ", ".join(kind.__members__)
    raise InvalidObservation(f"{where} must be one of {names}, got {value!r}")


def _mode(value: object, where: str) -> TradingMode:
    if isinstance(value, str) and value in TradingMode.__members__:
        return TradingMode[value]
    names = ", ".join(TradingMode.__members__)
    raise InvalidObservation(f"{where} must be one of {names}, got {value!r}")


def _seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidObservation(f"{where} must be a number of seconds or null, got {value!r}")
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidObservation(f"{where} must be a whole number >= 0, got {value!r}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidObservation(f"{where} must be a string, got {value!r}")
    return value


def _scope(scope: dict[str, Any], symbol: str | None, where: str) -> ScopeView:
    halt = _obj(scope.get("halt"), f"{where}.halt")
    guards = {
        name: _guard(name, _obj(g, f"{where}.guards.{name}"), f"{where}.guards.{name}")
        for name, g in _obj(scope.get("guards"), f"{where}.guards").items()
    }
    mode = _mode(scope.get("mode"), f"{where}.mode")
    effective = scope.get("effective_mode", scope.get("mode"))
    has_mark = scope.get("has_mark", True)
    if not isinstance(has_mark, bool):
        raise InvalidObservation(f"{where}.has_mark must be true or false, got {has_mark!r}")
    peers = scope.get("peers", [])
    if not isinstance(peers, list):
        raise InvalidObservation(f"{where}.peers must be a list, got {peers!r}")
    return ScopeView(
        symbol,
        mode,
        _mode(effective, f"{where}.effective_mode"),
        HaltView(
            _choice(halt.get("state"), HaltState, f"{where}.halt.state"),
            _mode(halt.get("mode", "ALLOW"), f"{where}.halt.mode"),
            _text(halt.get("reason", ""), f"{where}.halt.reason"),
            _seconds(halt.get("until"), f"{where}.halt.until"),
            _seconds(halt.get("seconds_until_lift"), f"{where}.halt.seconds_until_lift"),
        ),
        MappingProxyType(guards),
        has_mark,
        tuple(
            _peer(_obj(p, f"{where}.peers[{i}]"), f"{where}.peers[{i}]")
            for i, p in enumerate(peers)
        ),
    )


def _peer(peer: dict[str, Any], where: str) -> PeerView:
    return PeerView(
        _text(peer.get("name"), f"{where}.name"),
        _text(peer.get("member"), f"{where}.member"),
        _text(peer.get("guard"), f"{where}.guard"),
        _mode(peer.get("mode"), f"{where}.mode"),
        _text(peer.get("state"), f"{where}.state"),
        _seconds(peer.get("until"), f"{where}.until"),
        _seconds(peer.get("seconds_until_lift"), f"{where}.seconds_until_lift"),
    )


def _maybe_bool(value: object, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidObservation(f"{where} must be true, false or null, got {value!r}")
    return value


def _fleet(fleet: dict[str, Any]) -> FleetView:
    where = "status.fleet"
    member = fleet.get("member")
    state = fleet.get("state")
    members = {
        name: _member(name, _obj(m, f"{where}.members.{name}"), f"{where}.members.{name}")
        for name, m in _obj(fleet.get("members", {}), f"{where}.members").items()
    }
    return FleetView(
        None if member is None else _text(member, f"{where}.member"),
        None if state is None else _choice(state, GuardState, f"{where}.state"),
        _maybe_bool(fleet.get("link_up"), f"{where}.link_up"),
        _maybe_bool(fleet.get("synced"), f"{where}.synced"),
        _seconds(fleet.get("grace_until"), f"{where}.grace_until"),
        MappingProxyType(members),
        _count(fleet.get("peer_restrictions", 0), f"{where}.peer_restrictions"),
    )


def _member(name: str, member: dict[str, Any], where: str) -> MemberView:
    heartbeat = _seconds(member.get("heartbeat"), f"{where}.heartbeat")
    since = _seconds(member.get("seconds_since_heartbeat"), f"{where}.seconds_since_heartbeat")
    alive = member.get("alive")
    if heartbeat is None or since is None or not isinstance(alive, bool):
        raise InvalidObservation(
            f"{where} must have a heartbeat, seconds_since_heartbeat and alive, got {member!r}"
        )
    return MemberView(name, heartbeat, since, alive)


_GUARD_FIELDS = frozenset({"state", "restriction", "seconds_until_lift"})


def _guard(name: str, guard: dict[str, Any], where: str) -> GuardView:
    counters = {k: v for k, v in guard.items() if k not in _GUARD_FIELDS}
    return GuardView(
        name,
        _choice(guard.get("state"), GuardState, f"{where}.state"),
        _mode(guard.get("restriction"), f"{where}.restriction"),
        _seconds(guard.get("seconds_until_lift"), f"{where}.seconds_until_lift"),
        MappingProxyType(counters),
    )


def _breaker(category: str, breaker: dict[str, Any]) -> BreakerView:
    where = f"status.breakers.{category}"
    return BreakerView(
        category,
        _choice(breaker.get("state"), BreakerState, f"{where}.state"),
        _count(breaker.get("consecutive_failures", 0), f"{where}.consecutive_failures"),
        _count(breaker.get("half_open_successes", 0), f"{where}.half_open_successes"),
        _count(breaker.get("probes_in_flight", 0), f"{where}.probes_in_flight"),
    )


def _feed(name: str, feed: dict[str, Any]) -> FeedView:
    where = f"status.feeds.{name}"

    def count(key: str) -> int:
        return _count(feed.get(key, 0), f"{where}.{key}")

    return FeedView(
        name,
        _choice(feed.get("state"), FeedState, f"{where}.state"),
        count("attempts"),
        count("max_attempts"),
        count("messages"),
        count("disconnects"),
        count("sequence_gaps"),
        count("dropped_messages"),
        count("malformed_messages"),
        _seconds(feed.get("last_message_age"), f"{where}.last_message_age"),
        _text(feed.get("last_reason", ""), f"{where}.last_reason"),
        _seconds(feed.get("retry_at"), f"{where}.retry_at"),
    )
