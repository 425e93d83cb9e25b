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

__all__ = ["BreakerView", "FeedView", "GuardView", "HaltView", "LayerView", "ScopeView"]

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
class ScopeView:
    """The global scope (``symbol`` None) or one symbol.

    Attributes:
        symbol: the symbol, or ``None`` for the global scope.
        mode: the scope's own mode.
        effective_mode: what decides its orders: the larger of the global mode and its own.
        halt: its operator halt.
        guards: its guards by name.
        has_mark: whether its first mark arrived (always True for the global scope).
    """

    symbol: str | None
    mode: TradingMode
    effective_mode: TradingMode
    halt: HaltView
    guards: Mapping[str, GuardView]
    has_mark: bool = True

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
    """

    mode: TradingMode
    preview_enabled: bool
    global_scope: ScopeView
    symbols: Mapping[str, ScopeView]
    breakers: Mapping[str, BreakerView]
    feeds: Mapping[str, FeedView]
    next_deadline: float | None
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
        return cls(
            _mode(root.get("mode"), "status.mode"),
            preview,
            global_scope,
            MappingProxyType(symbols),
            MappingProxyType(breakers),
            MappingProxyType(feeds),
            _seconds(root.get("next_deadline"), "status.next_deadline"),
            MappingProxyType(dict(root)),
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
    )


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
