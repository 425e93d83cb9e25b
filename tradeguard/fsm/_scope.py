"""A scope (global, or one symbol): its guards, its operator halt and its own trading mode.

A scope's own mode is the most restrictive restriction among its guards (for a symbol, its
mark_staleness guard starts in NO_MARK: never traded blind) and its halt (DESIGN §2.4). The
mode is itself a machine (`MODE`), moved only by `Scope.refresh`, which records why. A
symbol's *effective* mode is the larger of the global mode and its own, so a symbol can
tighten the global mode and never loosen it; a global trip costs one transition, not one per
symbol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from tradeguard.fsm._guards import Guard, MarkStalenessGuard, ToMono, ToWall
from tradeguard.fsm._machines import HALT, MODE
from tradeguard.fsm._states import GuardState, HaltState, TradingMode
from tradeguard.fsm._timers import Timer, Timers, seconds_until
from tradeguard.fsm.effects import Alert, Effect, ModeChanged, Reason

if TYPE_CHECKING:
    from tradeguard.fsm._fleet import PeerHold

__all__ = ["Halt", "Scope"]

_ALLOW, _REDUCE_ONLY, _PAUSED = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED
_MODE_TRIGGER = {_ALLOW: "allow", _REDUCE_ONLY: "restrict", _PAUSED: "pause"}


_HALT_MODE = {
    HaltState.RUNNING: _ALLOW,
    HaltState.HALTED: _PAUSED,
    HaltState.REDUCED: _REDUCE_ONLY,
}
_HALT_TRIGGER = {_PAUSED: "halt", _REDUCE_ONLY: "reduce"}


@final
class Halt:
    """An operator halt on one scope: a model of `HALT`, with an optional time limit.

    HALTED pauses the scope; REDUCED (an operator reduce-only halt, for a canary) lets only
    reducing orders through.
    """

    __slots__ = ("_timer", "_timers", "reason", "scope", "state")

    def __init__(self, scope: str | None, timers: Timers) -> None:
        self.scope = scope
        self.state = HaltState.RUNNING
        self.reason = ""
        self._timers = timers
        self._timer = Timer(self._expired, scope)

    @property
    def until(self) -> float | None:
        """When a time-limited halt lifts by itself."""
        return self._timer.due

    @property
    def mode(self) -> TradingMode:
        """The mode the halt imposes: ALLOW while RUNNING."""
        return _HALT_MODE[self.state]

    @property
    def halted(self) -> bool:
        """True while a halt of either mode is in force."""
        return self.state is not HaltState.RUNNING

    def halt(self, reason: str, until: float | None, at: float, mode: TradingMode) -> list[Effect]:
        """Halt in ``mode`` (PAUSED or REDUCE_ONLY), or re-halt with a new reason, mode, limit."""
        effects = self._fire(_HALT_TRIGGER[mode], at)
        self.reason = reason
        if until is None:
            Timers.disarm(self._timer)
        else:
            self._timers.arm(self._timer, until)
        where = "all symbols" if self.scope is None else self.scope
        kind = "halt" if mode is _PAUSED else "reduce-only halt"
        title = f"operator {kind}: {where}"
        return [*effects, Alert("warning", title, reason)]

    def resume(self, at: float) -> list[Effect]:
        """Lift the halt now; a no-op (no effects) when none is in force."""
        if not self.halted:
            return []
        Timers.disarm(self._timer)
        self.reason = ""
        return self._fire("resume", at)

    def _expired(self, at: float) -> list[Effect]:
        self.reason = ""
        return self._fire("expire", at)

    def _fire(self, trigger: str, at: float) -> list[Effect]:
        return [HALT.transition(self, trigger, "operator", self.scope, at)]

    def seconds_left(self, now: float) -> float | None:
        """Seconds until a time-limited halt lifts; ``None`` without a limit or a halt."""
        return seconds_until(self._timer.due, now)

    def view(self, now: float) -> dict[str, Any]:
        """JSON-ready view: state, mode, reason, deadline and the seconds left."""
        # `_name_`, not `.name`: the enum property costs 0.4 µs, and status(), view() and
        # snapshots read a few names per symbol (1,000 symbols: a millisecond of the loop).
        return {
            "state": self.state._name_,
            "mode": self.mode._name_,
            "reason": self.reason,
            "until": self.until,
            "seconds_until_lift": self.seconds_left(now),
        }

    def dump(self, to_wall: ToWall) -> dict[str, Any]:
        """JSON-ready saved state."""
        until = self._timer.due
        return {
            "state": self.state._name_,
            "reason": self.reason,
            "until": None if until is None else to_wall(until),
        }

    def load(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        """Restore what `dump` saved."""
        self.state = HaltState[saved["state"]]
        self.reason = str(saved.get("reason", ""))
        if self.halted and saved.get("until") is not None:
            self._timers.arm(self._timer, to_mono(saved["until"]))


@final
class Scope:
    """The guards, halt and own mode of the global scope or of one symbol.

    Attributes:
        symbol: the symbol, or ``None`` for the global scope.
        state: the scope's own `TradingMode` (its `MODE` machine's state).
        guards: its guards by name.
        mark: a symbol's mark-staleness guard (``None`` for the global scope).
        peers: the restrictions peers of a fleet put in force on this scope, by their name
            (``guard@member``, DESIGN §7), or ``None`` when there are none; they only add
            to the scope's own mode.
    """

    __slots__ = ("guards", "halt", "mark", "peers", "state", "symbol")

    def __init__(self, symbol: str | None, guards: list[Guard], timers: Timers) -> None:
        self.symbol = symbol
        self.guards = {g.name: g for g in guards}
        found = self.guards.get("mark_staleness")
        self.mark = found if isinstance(found, MarkStalenessGuard) else None
        self.halt = Halt(symbol, timers)
        # None until a peer restricts this scope: an empty dict per symbol would cost 0.6 MB
        # per 10,000 symbols of a layer without a fleet.
        self.peers: dict[str, PeerHold] | None = None
        self.state = _ALLOW
        # A symbol's machine starts where its rules put it: its mark_staleness guard starts in
        # NO_MARK (REDUCE_ONLY, or PAUSED per RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY), and no
        # transition is recorded for a scope that did not exist (`MODE.other_starts`).
        self.state = self.own_mode()

    @property
    def awaiting_first_mark(self) -> bool:
        """A symbol whose first mark has not arrived (never traded blind)."""
        return self.mark is not None and self.mark.state is GuardState.NO_MARK

    def own_mode(self) -> TradingMode:
        """The most restrictive restriction in force in this scope alone."""
        mode = self.halt.mode
        for guard in self.guards.values():
            if guard.restriction > mode and guard.restricting:
                mode = guard.restriction
        if self.peers:
            for hold in self.peers.values():
                if hold.mode > mode:
                    mode = hold.mode
        return mode

    def reasons(self, now: float) -> list[Reason]:
        """Every restriction in force in this scope, with the time until it may lift."""
        found: list[Reason] = []
        for guard in self.guards.values():
            if guard.restricting:
                left = seconds_until(guard.lifts_at, now)
                found.append(Reason(guard.name, self.symbol, guard.state, left))
        if self.halt.halted:
            left = self.halt.seconds_left(now)
            found.append(Reason("operator", self.symbol, self.halt.state, left))
        if self.peers:
            found.extend(hold.reason(now) for _, hold in sorted(self.peers.items()))
        return found

    def refresh(self, at: float) -> list[Effect]:
        """Move the mode machine to the scope's own mode; record the change and why."""
        new = self.own_mode()
        source = self.state
        if new is source:
            return []
        record = MODE.transition(self, _MODE_TRIGGER[new], "mode", self.symbol, at)
        return [record, ModeChanged(self.symbol, source, new, tuple(self.reasons(at)))]

    def dump(self, to_wall: ToWall) -> dict[str, Any]:
        """JSON-ready saved state of the scope's guards and halt."""
        return {
            "mode": self.state._name_,  # (`_name_`: see `Halt.view`)
            "halt": self.halt.dump(to_wall),
            "guards": {name: g.dump(to_wall) for name, g in self.guards.items()},
        }

    def load(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        """Restore what `dump` saved; the mode follows from what was restored."""
        self.halt.load(saved.get("halt", {"state": "RUNNING"}), to_mono)
        for name, guard_saved in saved.get("guards", {}).items():
            self.guards[name].load(guard_saved, to_mono)
        self.state = self.own_mode()

    def status(self, now: float) -> dict[str, Any]:
        """JSON-ready view of the scope."""
        guards = {}
        for name, g in self.guards.items():
            guards[name] = {
                "state": g.state._name_,  # (`_name_`: see `Halt.view`)
                "restriction": g.restriction._name_,
                "seconds_until_lift": seconds_until(g.lifts_at, now),
                **g.counters(),
            }
        view: dict[str, Any] = {
            "mode": self.state._name_,
            "halt": self.halt.view(now),
            "guards": guards,
        }
        if self.mark is not None:
            view["has_mark"] = not self.awaiting_first_mark
        if self.peers:  # only with a fleet: a layer without one shows exactly what it did
            view["peers"] = [
                {
                    "name": name,
                    "member": hold.member,
                    "guard": hold.guard,
                    "mode": hold.mode.name,
                    "state": hold.state,
                    "until": hold.lifts_at,
                    "seconds_until_lift": seconds_until(hold.lifts_at, now),
                }
                for name, hold in sorted(self.peers.items())
            ]
        return view
