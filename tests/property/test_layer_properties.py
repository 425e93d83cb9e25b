"""The whole layer under random interleavings of every input (DESIGN §2, §3), with invariants.

A Hypothesis `RuleBasedStateMachine` drives one `ReliabilityLayer` on a `ManualClock` with every
observation kind, operator calls, time steps with and without `tick()`, `decide()` on random
intents, and restarts through `snapshot()` / `restore()`. A small reference model is built from
the effects the layer returns (and from the marks, halts and resets the test itself made):

1. No opening order is allowed while a restriction of its scope or the global scope is in
   force: a guard TRIPPED, a guard in COOLDOWN before its deadline, no mark yet, a mark older
   than the staleness threshold, or an operator halt (PAUSED or REDUCE_ONLY).
2. ``mode(symbol) >= mode()`` for every symbol.
3. A cooldown is never cut short nor stretched: its ``expire`` happens at entry + that guard's
   cooldown, unless the guard re-tripped or was reset first.
4. Every `Transitioned` is a row of its machine's definition, and continues from the state the
   machine's previous transition left it in.
5. ``snapshot()`` → JSON → ``restore()`` at the same time gives the same decisions and modes.
6. A snapshot kept current from ``snapshot_changes()`` (only the symbols changed since the
   last call, merged into what was saved) equals ``snapshot()``, except that a saved last
   mark may be older.

All times are multiples of 1/8 s (the error-rate window is 7.5 s, so its buckets are 1/8 s too)
and the reconnect jitter is 0, so every deadline is exact in binary and survives the wall-clock
conversion of a snapshot bit for bit: (3) and (5) can then demand exact equality.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tradeguard import (
    OrderIntent,
    ReliabilityLayer,
    Settings,
    Side,
    TradingMode,
)
from tradeguard.fsm import GLOBAL_GUARDS, SYMBOL_GUARDS
from tradeguard.fsm import events as ev
from tradeguard.fsm._definition import MachineDefinition
from tradeguard.fsm._machines import BREAKER, FEED, GUARD, HALT, MARK, MODE, PREVIEW
from tradeguard.fsm.effects import Effect, ModeChanged, Reconnect, Transitioned
from tradeguard.testing import ManualClock

ALLOW, REDUCE_ONLY, PAUSED = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED

SYMBOLS = ("BTC", "ETH", "SOL")
UNSEEN = "DOGE"  # only ever asked about, except by an operator reset or halt
CATEGORIES = ("orders", "accounts")
FEEDS = ("market", "user")

KNOBS: dict[str, Any] = {
    "api_error_rate_threshold": 0.5,
    "api_error_rate_min_calls": 3,
    "api_error_rate_window_seconds": 7.5,  # buckets of 7.5/60 = 0.125 s
    "api_rate_limit_usage_threshold": 0.9,
    "api_health_cooldown_seconds": 4.0,
    "mark_staleness_threshold_seconds": 5.0,
    "mark_staleness_cooldown_seconds": 3.0,
    "slippage_failure_pause_after": 2,
    "slippage_pause_seconds": 2.5,
    "validation_failure_escalate_after": 2,
    "validation_failure_cooldown_seconds": 3.5,
    "preview_failure_disable_after": 2,
    "broker_outage_max_failures": 2,
    "broker_outage_cooldown_seconds": 1.5,
    "order_reconciliation_drift_max_failures": 2,
    "circuit_failure_threshold": 3,
    "circuit_recovery_timeout": 2.0,
    "circuit_success_threshold": 2,
    "ws_reconnect_backoff_base": 0.5,
    "ws_reconnect_backoff_multiplier": 2.0,
    "ws_reconnect_backoff_max": 2.0,
    "ws_reconnect_jitter_pct": 0.0,
    "ws_reconnect_max_attempts": 1,
    "ws_reconnect_reset_seconds": 3.0,
    "ws_reconnect_pause_seconds": 2.0,
    "ws_message_stale_seconds": 2.5,
}
STALE_AFTER = KNOBS["mark_staleness_threshold_seconds"]

# Each restricting guard's cooldown, from the knob DESIGN §2.1 names for it.
COOLDOWN_OF = {
    "api_health": KNOBS["api_health_cooldown_seconds"],
    "reconciliation": KNOBS["api_health_cooldown_seconds"],
    "mark_staleness": KNOBS["mark_staleness_cooldown_seconds"],
    "slippage": KNOBS["slippage_pause_seconds"],
    "validation": KNOBS["validation_failure_cooldown_seconds"],
    "broker_outage": KNOBS["broker_outage_cooldown_seconds"],
    "websocket": KNOBS["ws_reconnect_pause_seconds"],
}
ALL_GUARDS = (*GLOBAL_GUARDS, *SYMBOL_GUARDS)

API_OUTCOMES = {
    "ok": (True, 200),
    "5xx": (False, 503),
    "429": (False, 429),
    "4xx": (False, 404),
    "timeout": (False, None),
}

# (side, quantity, position) asked of both layers when checking a restore.
PROBES = (
    (Side.BUY, Decimal(1), None),
    (Side.BUY, Decimal(1), Decimal(0)),
    (Side.SELL, Decimal(1), Decimal(2)),
    (Side.SELL, Decimal(3), Decimal(2)),
    (Side.BUY, Decimal(2), Decimal(-2)),
    (Side.SELL, Decimal(1), Decimal(-1)),
)

Key = tuple[str, "str | None"]


def definition_for(machine: str) -> MachineDefinition:
    """The definition a `Transitioned.machine` name belongs to."""
    if machine == "preview":
        return PREVIEW
    if machine == "mark_staleness":
        return MARK
    if machine in ALL_GUARDS:
        return GUARD
    if machine.startswith("breaker:"):
        return BREAKER
    if machine.startswith("feed:"):
        return FEED
    if machine == "mode":
        return MODE
    if machine == "operator":
        return HALT
    raise AssertionError(f"Transitioned names an unknown machine {machine!r}")


def is_declared(t: Transitioned) -> bool:
    """The transition is a row of its machine's table."""
    return any(
        spec.trigger == t.trigger
        and spec.dest.name == t.dest
        and t.source in {s.name for s in spec.sources}
        for spec in definition_for(t.machine).transitions
    )


def initial_state(machine: str, scope: str | None) -> str:
    """Where a machine starts; a symbol's mode starts REDUCE_ONLY (no mark yet)."""
    if machine == "mode" and scope is not None:
        return REDUCE_ONLY.name
    return definition_for(machine).initial.name


def reduces(side: Side, quantity: Decimal, position: Decimal | None) -> bool:
    """The order only reduces the given position (DESIGN §2.4)."""
    if position is None:
        return False
    reducible = position if side is Side.SELL else -position
    return 0 < quantity <= reducible


class LayerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.settings = Settings(**KNOBS)
        self.clock = ManualClock()
        self.layer = ReliabilityLayer(
            self.settings, self.clock, rng=random.Random(0), wall_clock=self.clock.wall
        )
        # The reference model, built from returned effects and from our own calls.
        self.state_of: dict[Key, str] = {}  # every machine, by (name, scope)
        self.cooldown_since: dict[Key, float] = {}  # guards in COOLDOWN: entry time
        self.last_mark: dict[str, float] = {}
        self.mark_reset_at: dict[str, float] = {}
        self.halted_until: dict[str | None, float] = {}  # inf: until resume
        self.halt_mode: dict[str | None, TradingMode] = {}  # PAUSED or REDUCE_ONLY
        self.started: set[str] = set()
        self.reconnect_pending: dict[str, bool] = {}
        self.last_at = -math.inf
        # True when a read (decide/mode) may have applied due timers whose effects the
        # layer keeps for the next observe()/tick(): the model may then lag behind.
        self.lagging = False
        # (6) A snapshot kept current from `snapshot_changes()`: the symbols saved so far.
        self.through: int | None = None
        self.saved_symbols: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def _next_deadline(self) -> float | None:
        due = self.layer.next_deadline()
        assert due is None or math.isfinite(due), f"next_deadline() is {due!r}, not None"
        return due

    def _due(self) -> bool:
        due = self._next_deadline()
        return due is not None and due <= self.clock()

    def _call(self, fn: Callable[[], list[Effect]]) -> list[Effect]:
        """Run an effect-returning call, feed its effects to the model, check the model."""
        effects = fn()
        self._absorb(effects)
        self.lagging = False
        self._check_model_is_current()
        return effects

    def _absorb(self, effects: list[Effect]) -> None:
        now = self.clock()
        previous: Effect | None = None
        for effect in effects:
            if isinstance(effect, Transitioned):
                self._absorb_transition(effect, now)
            elif isinstance(effect, ModeChanged):
                assert isinstance(previous, Transitioned), effects
                assert (previous.machine, previous.scope) == ("mode", effect.scope)
                assert (previous.source, previous.dest) == (effect.source.name, effect.dest.name)
            elif isinstance(effect, Reconnect):
                self.reconnect_pending[effect.feed] = True
            previous = effect

    def _absorb_transition(self, t: Transitioned, now: float) -> None:
        # (4) a declared row, continuing from where the machine was.
        assert is_declared(t), f"undeclared transition {t!r}"
        key = (t.machine, t.scope)
        assert t.source == self.state_of.get(key, initial_state(*key)), (
            f"{t!r} does not continue from {self.state_of.get(key)!r}"
        )
        self.state_of[key] = t.dest
        assert self.last_at <= t.at <= now, f"{t!r} out of order (last {self.last_at}, now {now})"
        self.last_at = t.at
        if t.machine in COOLDOWN_OF:
            # (3) a cooldown ends exactly at entry + cooldown.
            if t.trigger == "expire":
                since = self.cooldown_since.pop(key)
                assert t.at == since + COOLDOWN_OF[t.machine], (
                    f"{t!r}: cooldown entered at {since} should end at "
                    f"{since + COOLDOWN_OF[t.machine]}"
                )
            elif t.dest == "COOLDOWN":
                self.cooldown_since[key] = t.at
            else:
                self.cooldown_since.pop(key, None)
        if t.machine.startswith("feed:") and t.trigger in ("disconnected", "stale", "connected"):
            self.reconnect_pending[t.machine.removeprefix("feed:")] = False

    def _check_model_is_current(self) -> None:
        """Right after an effect-returning call nothing is due, so the model must be exact."""
        now = self.clock()
        assert not self._due()
        for symbol in (None, *SYMBOLS):
            names = GLOBAL_GUARDS if symbol is None else SYMBOL_GUARDS
            for name in names:
                seen = self.layer.guard(name, symbol)
                key = (name, symbol)
                assert seen.state.name == self.state_of.get(key, initial_state(*key)), (key, seen)
                if key in self.cooldown_since:
                    lifts = self.cooldown_since[key] + COOLDOWN_OF[name]
                    assert lifts > now, f"{key} should have expired at {lifts}"
                    assert seen.seconds_until_lift == lifts - now
        for scope, until in self.halted_until.items():
            if now < until:
                assert self.layer.mode(scope) >= self.halt_mode[scope]
            seen_halt = self.layer.guard("operator", scope)
            assert seen_halt.state.name == self.state_of.get(("operator", scope), "RUNNING")

    def _halted(self, scope: str | None) -> bool:
        return self.clock() < self.halted_until.get(scope, -math.inf)

    def _paused_by_halt(self, scope: str | None) -> bool:
        return self._halted(scope) and self.halt_mode[scope] is PAUSED

    def _restrictions(self, symbol: str) -> tuple[bool, list[str]]:
        """(paused, every restriction the model knows of) for ``symbol`` now.

        While the model may lag, an api_health TRIPPED is left out: its own timers can take it
        through COOLDOWN to HEALTHY inside a `decide()`. Every other restriction can only end
        through an input the test made itself (or at a deadline the model knows).
        """
        now = self.clock()
        paused = self._paused_by_halt(None) or self._paused_by_halt(symbol)
        found = ["halt"] if self._halted(None) or self._halted(symbol) else []
        if symbol not in self.last_mark:
            found.append("no mark")
        elif now >= max(self.last_mark[symbol], self.mark_reset_at.get(symbol, -1)) + STALE_AFTER:
            found.append("stale mark")
        for (name, scope), state in self.state_of.items():
            if name not in COOLDOWN_OF or scope not in (None, symbol):
                continue
            if state == "TRIPPED" and not (self.lagging and name == "api_health"):
                found.append(f"{name} TRIPPED")
            elif (
                state == "COOLDOWN" and now < self.cooldown_since[(name, scope)] + COOLDOWN_OF[name]
            ):
                found.append(f"{name} COOLDOWN")
        return paused, found

    def _answers(self, layer: ReliabilityLayer) -> list[object]:
        answers: list[object] = [layer.mode()]
        for symbol in (*SYMBOLS, UNSEEN):
            answers.append((symbol, layer.mode(symbol)))
            for side, quantity, position in PROBES:
                d = layer.decide(OrderIntent(symbol, side, quantity), position)
                answers.append(
                    (symbol, side, quantity, position, d.allowed, d.mode, d.max_quantity)
                )
        return answers

    # ------------------------------------------------------------------ observations

    @initialize()
    def first_marks(self) -> None:
        """BTC and ETH start with a mark; SOL waits for one, DOGE never gets one."""
        self.market_data_flows()

    @rule(
        category=st.sampled_from(CATEGORIES),
        outcome=st.sampled_from(["ok", "ok", "ok", *sorted(API_OUTCOMES)]),
    )
    def api_call(self, category: str, outcome: str) -> None:
        ok, status = API_OUTCOMES[outcome]
        self._call(lambda: self.layer.observe(ev.ApiCall(category, ok=ok, status=status)))

    @rule(usage=st.sampled_from([0.0, 0.5, 0.89, 0.9, 1.0]))
    def rate_limit_usage(self, usage: float) -> None:
        self._call(lambda: self.layer.observe(ev.RateLimitUsage(usage)))

    @rule(symbol=st.sampled_from(SYMBOLS))
    def mark_update(self, symbol: str) -> None:
        self.last_mark[symbol] = self.clock()
        self._call(lambda: self.layer.observe(ev.MarkUpdate(symbol)))

    @rule()
    def market_data_flows(self) -> None:
        """Fresh marks for BTC and ETH (SOL's market data is the flaky one)."""
        for symbol in ("BTC", "ETH"):
            self.mark_update(symbol)

    @rule(symbol=st.sampled_from(SYMBOLS), ok=st.booleans())
    def slippage_check(self, symbol: str, ok: bool) -> None:
        self._call(lambda: self.layer.observe(ev.SlippageCheck(symbol, ok=ok)))

    @rule(ok=st.booleans())
    def validation_check(self, ok: bool) -> None:
        self._call(lambda: self.layer.observe(ev.ValidationCheck(ok=ok)))

    @rule(ok=st.booleans())
    def preview_result(self, ok: bool) -> None:
        self._call(lambda: self.layer.observe(ev.PreviewResult(ok=ok)))

    @rule(kind=st.sampled_from(["balances", "positions"]), ok=st.booleans())
    def broker_read(self, kind: Literal["balances", "positions"], ok: bool) -> None:
        self._call(lambda: self.layer.observe(ev.BrokerRead(kind, ok=ok)))

    @rule(ids=st.sampled_from([(), (), (), ("a",), ("a", "b"), ("c",)]))
    def reconciliation_audit(self, ids: tuple[str, ...]) -> None:
        self._call(lambda: self.layer.observe(ev.ReconciliationAudit(ids)))

    @rule(feed=st.sampled_from(FEEDS), data=st.data())
    def feed_events(self, feed: str, data: st.DataObject) -> None:
        """A burst of events the feed's state allows, as a shell following the effects sends.

        A feed waiting for its backoff is waited for (the clock jumps to the next deadline),
        so feeds get far enough to degrade and come back.
        """
        for _ in range(data.draw(st.integers(1, 4), label="burst")):
            self._feed_event(feed, data)

    def _feed_event(self, feed: str, data: st.DataObject) -> None:
        for _ in range(3):
            # A timely shell has ticked before its socket reports anything, and has run the
            # effects a read kept (a `Reconnect` it is to act on may be among them).
            if self._due() or self.lagging:
                self._call(self.layer.tick)
            if feed not in self.started or not self._waiting(feed):
                break
            due = self._next_deadline()
            assert due is not None, f"feed {feed!r} waits for a reconnect that is never due"
            self.clock.jump_to(max(due, self.clock()))
        if feed not in self.started:
            self.started.add(feed)
            self._call(lambda: self.layer.observe(ev.FeedStarted(feed)))
            return
        state = self.layer.feed_state(feed).name
        options: list[str] = []
        if state == "CONNECTING" or (state == "DEGRADED" and self.reconnect_pending.get(feed)):
            options += ["connected", "disconnected"]
        elif state == "CONNECTED":
            options += ["message", "message", "disconnected", "gap", "dropped", "malformed"]
        if state != "CLOSED" and data.draw(st.integers(0, 59), label="close?") == 0:
            options = ["close"]
        if not options:
            return
        events: dict[str, ev.Observation] = {
            "connected": ev.FeedConnected(feed),
            "disconnected": ev.FeedDisconnected(feed, "refused"),
            "message": ev.FeedMessage(feed),
            "gap": ev.SequenceGap(feed, expected=7, received=9),
            "dropped": ev.MessagesDropped(feed, 3),
            "malformed": ev.MalformedMessage(feed, "not json"),
            "close": ev.FeedClosed(feed),
        }
        event = events[data.draw(st.sampled_from(options), label="event")]
        self._call(lambda: self.layer.observe(event))

    def _waiting(self, feed: str) -> bool:
        """The feed waits for a `Reconnect`: nothing the socket says is possible meanwhile."""
        state = self.layer.feed_state(feed).name
        return state == "BACKOFF" or (state == "DEGRADED" and not self.reconnect_pending.get(feed))

    # ------------------------------------------------------------------ operator

    @rule(
        resume=st.booleans(),
        symbol=st.sampled_from([None, None, *SYMBOLS, UNSEEN]),
        ttl=st.sampled_from([None, 1.0, 2.5, 6.0]),
        mode=st.sampled_from([PAUSED, REDUCE_ONLY]),
    )
    def halt_or_resume(
        self, resume: bool, symbol: str | None, ttl: float | None, mode: TradingMode
    ) -> None:
        if not resume:
            self.halted_until[symbol] = math.inf if ttl is None else self.clock() + ttl
            self.halt_mode[symbol] = mode
            self._call(lambda: self.layer.halt("property test", symbol, ttl, mode))
        elif self._halted(symbol):
            del self.halted_until[symbol]
            self._call(lambda: self.layer.resume(symbol))
        elif not self._due():
            # Nothing halted: a documented no-op that returns nothing and changes nothing.
            assert self.layer.resume(symbol) == []

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        """An operator reset: mostly of a guard that is restricting, sometimes of any guard."""
        restricting = sorted(
            (name, scope)
            for (name, scope), state in self.state_of.items()
            if name in ALL_GUARDS and state != "HEALTHY"
        )
        pick_restricting: bool = data.draw(st.booleans(), label="a restricting guard?")
        if restricting and pick_restricting:
            name, scope = data.draw(st.sampled_from(restricting), label="guard")
        else:
            name = data.draw(st.sampled_from(ALL_GUARDS), label="guard")
            scope = None
            if name in SYMBOL_GUARDS:
                scope = data.draw(st.sampled_from([*SYMBOLS, UNSEEN]), label="symbol")
        if name == "mark_staleness" and scope is not None:
            self.mark_reset_at[scope] = self.clock()
        self._call(lambda: self.layer.reset(name, scope))

    # ------------------------------------------------------------------ time

    @rule(seconds=st.sampled_from([0.125, 0.25, 0.5, 1.0, 2.5, 4.0, 7.5, 20.0]), tick=st.booleans())
    def advance(self, seconds: float, tick: bool) -> None:
        self.clock.advance(seconds)
        if tick:
            self._call(self.layer.tick)

    @rule()
    def tick_at_the_next_deadline(self) -> None:
        due = self._next_deadline()
        if due is not None:
            self.clock.jump_to(max(due, self.clock()))
            self._call(self.layer.tick)

    # ------------------------------------------------------------------ decisions

    @rule(
        symbol=st.sampled_from(["BTC", "BTC", "ETH", "ETH", "SOL", UNSEEN]),
        side=st.sampled_from(Side),
        quantity=st.sampled_from([Decimal("0.5"), Decimal(1), Decimal(2), Decimal(3)]),
        position=st.sampled_from(
            [None, Decimal(-2), Decimal(-1), Decimal(0), Decimal(1), Decimal(2)]
        ),
    )
    def decide(self, symbol: str, side: Side, quantity: Decimal, position: Decimal | None) -> None:
        if self._due():
            self.lagging = True
        paused, restrictions = self._restrictions(symbol)
        decision = self.layer.decide(OrderIntent(symbol, side, quantity), position)
        reducing = reduces(side, quantity, position)
        # (1) never an opening order while a restriction is in force; nothing when paused.
        if restrictions:
            assert not decision.allowed or reducing, (restrictions, decision)
        if paused:
            assert not decision.allowed, decision
        # DESIGN §2.4, read against the decision's own mode.
        assert decision.mode is self.layer.mode(symbol)
        if decision.mode is ALLOW:
            assert decision.allowed
        elif decision.mode is REDUCE_ONLY:
            assert decision.allowed == reducing, decision
        else:
            assert not decision.allowed
        if not decision.allowed:
            assert decision.reasons, decision

    # ------------------------------------------------------------------ restart

    @rule(switch=st.booleans())
    def restart(self, switch: bool) -> None:
        """(5) A restored layer answers exactly like the one it was saved from."""
        if self._due():
            self.lagging = True
        before = self._answers(self.layer)
        saved = json.loads(json.dumps(self.layer.snapshot(), allow_nan=False))
        restored = ReliabilityLayer.restore(
            self.settings, saved, self.clock, self.clock.wall, rng=random.Random(1)
        )
        assert self._answers(restored) == before
        if switch:  # carry on in the new process: what the old one still held is published
            self._call(self.layer.tick)
            self.layer = restored
            self.through = None  # a new layer numbers its own changes
            self.lagging = True  # the restored layer may hold effects of its own
            self.started.clear()
            self.reconnect_pending.clear()
            for key in [k for k in self.state_of if k[0].startswith("feed:")]:
                del self.state_of[key]

    # ------------------------------------------------------------------ invariants

    @invariant()
    def saved_changes_add_up_to_the_snapshot(self) -> None:
        """(6) The changed symbols, merged into what was saved, give `snapshot()`, except
        that a saved last mark may be older (a fresh mark changing no state is no change)."""
        changes = self.layer.snapshot_changes(self.through)
        assert changes.complete is (self.through is None)
        if changes.complete:
            self.saved_symbols = {}
        self.through = changes.through
        self.saved_symbols.update(changes.snapshot["symbols"])
        full = self.layer.snapshot()
        assert {k: v for k, v in changes.snapshot.items() if k != "symbols"} == {
            k: v for k, v in full.items() if k != "symbols"
        }
        assert self.saved_symbols.keys() == full["symbols"].keys()
        for symbol, current in full["symbols"].items():
            saved = copy.deepcopy(self.saved_symbols[symbol])
            saved_mark = saved["guards"]["mark_staleness"].pop("last_mark")
            current = copy.deepcopy(current)
            current_mark = current["guards"]["mark_staleness"].pop("last_mark")
            assert saved == current, symbol
            assert (saved_mark is None) is (current_mark is None), symbol
            assert saved_mark is None or saved_mark <= current_mark, symbol

    @invariant()
    def symbols_are_never_looser_than_global(self) -> None:
        """(2) mode(symbol) >= mode(), for every symbol, seen or not."""
        if self._due():
            self.lagging = True
        global_mode = self.layer.mode()
        for symbol in (*SYMBOLS, UNSEEN):
            assert self.layer.mode(symbol) >= global_mode
        assert self.layer.mode(UNSEEN) >= REDUCE_ONLY


LayerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLayerProperties = LayerMachine.TestCase
