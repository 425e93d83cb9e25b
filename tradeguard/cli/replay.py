"""``tradeguard replay``: a scripted replay, in virtual time, of every decision-matrix row.

No sockets and no sleeping: a `ManualClock` jumps from one deadline to the next, marks and
heartbeats keep flowing in the background, and each scripted fault is fed to the layer as the
observations a real shell would make. Every effect is printed as a timeline line; after each
step a sample opening order and a sample reducing order are decided. The replay ends with a
check that no opening order was allowed while its symbol was restricted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TextIO, assert_never

from tradeguard.config import KNOBS, Settings
from tradeguard.fsm import GLOBAL_GUARDS, SYMBOL_GUARDS, OrderIntent, ReliabilityLayer, Side
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import (
    Alert,
    CancelOpenOrders,
    CancelOrders,
    CloseConnection,
    DisablePreview,
    Effect,
    MaxAttemptsExceeded,
    ModeChanged,
    Reconnect,
    Transitioned,
)
from tradeguard.testing import ManualClock

__all__ = ["run_replay"]

SYMBOLS = ("BTC-USD", "ETH-USD")
FEED = "market"
MARK_EVERY = 5.0  # seconds between background marks and heartbeats
POSITION = Decimal("0.5")  # every symbol is held long, so a SELL reduces and a BUY opens


@dataclass
class _World:
    """What the replay's pretend exchange is doing: which marks flow, whether the feed works."""

    frozen: set[str] = field(default_factory=set)
    feed_up: bool = True
    connected: bool = False


Action = Callable[[ReliabilityLayer, _World], list[Effect]]


@dataclass(frozen=True)
class _Step:
    at: float
    row: str
    title: str
    action: Action


def _many(observation: ev.Observation, times: int) -> Action:
    def act(layer: ReliabilityLayer, world: _World) -> list[Effect]:
        effects: list[Effect] = []
        for _ in range(times):
            effects += layer.observe(observation)
        return effects

    return act


def _freeze(symbol: str, frozen: bool) -> Action:
    def act(layer: ReliabilityLayer, world: _World) -> list[Effect]:
        (world.frozen.add if frozen else world.frozen.discard)(symbol)
        return layer.observe(ev.MarkUpdate(symbol)) if not frozen else []

    return act


def _feed_down(layer: ReliabilityLayer, world: _World) -> list[Effect]:
    world.feed_up = False
    world.connected = False
    return layer.observe(ev.FeedDisconnected(FEED, "close 1006 (abnormal)"))


def _feed_up(layer: ReliabilityLayer, world: _World) -> list[Effect]:
    world.feed_up = True
    return []


def _halt(layer: ReliabilityLayer, world: _World) -> list[Effect]:
    return layer.halt("operator: exchange maintenance", symbol="ETH-USD", ttl=90)


def _script() -> list[_Step]:
    drift = ev.ReconciliationAudit(("bot-7f3a", "bot-91c2"))
    return [
        _Step(
            20,
            "api_health",
            "5xx storm on the orders endpoint",
            _many(ev.ApiCall("orders", False, 503), 6),
        ),
        _Step(
            60,
            "api_health",
            "orders endpoint answers again (half-open probes)",
            _many(ev.ApiCall("orders", True, 200), 2),
        ),
        _Step(420, "mark_staleness", "ETH-USD marks stop arriving", _freeze("ETH-USD", True)),
        _Step(480, "mark_staleness", "ETH-USD marks resume", _freeze("ETH-USD", False)),
        _Step(
            640,
            "slippage",
            "three slippage-guard failures on BTC-USD",
            _many(ev.SlippageCheck("BTC-USD", False), 3),
        ),
        _Step(
            720,
            "validation",
            "validation infrastructure fails five times",
            _many(ev.ValidationCheck(False), 5),
        ),
        _Step(920, "preview", "order preview fails five times", _many(ev.PreviewResult(False), 5)),
        _Step(
            940,
            "broker_outage",
            "three balance reads time out",
            _many(ev.BrokerRead("balances", False), 3),
        ),
        _Step(
            980,
            "broker_outage",
            "a balance read succeeds",
            _many(ev.BrokerRead("balances", True), 1),
        ),
        _Step(
            1120,
            "reconciliation",
            "three audits find bot-owned orders unknown locally",
            _many(drift, 3),
        ),
        _Step(
            1150, "reconciliation", "the next audit is clean", _many(ev.ReconciliationAudit(()), 1)
        ),
        _Step(1480, "websocket", "the market-data websocket drops and stays down", _feed_down),
        _Step(2200, "websocket", "the exchange accepts connections again", _feed_up),
        _Step(2560, "operator", "operator halts ETH-USD for 90 s", _halt),
    ]


END = 2700.0


def _describe(effect: Effect) -> str:
    match effect:
        case Transitioned():
            where = "" if effect.scope is None else f"[{effect.scope}]"
            return f"{effect.machine}{where}: {effect.source} -> {effect.dest} ({effect.trigger})"
        case ModeChanged():
            why = ", ".join(f"{r.guard} {r.state}" for r in effect.reasons) or "nothing in force"
            scope = effect.scope or "global"
            return f"MODE {scope}: {effect.source.name} -> {effect.dest.name} ({why})"
        case CancelOpenOrders():
            return f"! cancel all open orders ({effect.reason})"
        case CancelOrders():
            return f"! cancel orders {', '.join(effect.order_ids)}"
        case Alert():
            return f"! ALERT {effect.severity}: {effect.title}: {effect.detail}"
        case DisablePreview():
            return f"! preview disabled ({effect.reason})"
        case MaxAttemptsExceeded():
            return f"! on_max_attempts_exceeded({effect.feed!r}, pause={effect.pause_seconds:g}s)"
        case Reconnect():
            return f"reconnect {effect.feed} (attempt {effect.attempt})"
        case CloseConnection():
            return f"close {effect.feed} ({effect.reason})"
        case _:
            assert_never(effect)


class _Replay:
    def __init__(self, seed: int, out: TextIO) -> None:
        self.clock = ManualClock()
        self.settings = Settings()
        self.layer = ReliabilityLayer(
            self.settings, self.clock, rng=random.Random(seed), wall_clock=self.clock.wall
        )
        self.world = _World()
        self.out = out
        self.rows_hit: dict[str, int] = {}
        self.opening_allowed_while_restricted = 0
        self.decisions = 0

    def say(self, text: str) -> None:
        self.out.write(f"t={self.clock():7.1f}s  {text}\n")

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            # A mode machine's Transitioned is shown by the ModeChanged that follows it.
            if not (isinstance(effect, Transitioned) and effect.machine == "mode"):
                self.say(f"    {_describe(effect)}")
            if isinstance(effect, Reconnect):
                self._reconnect()
            elif isinstance(effect, Transitioned):
                self.rows_hit[effect.machine.split(":")[0]] = 1

    def _reconnect(self) -> None:
        # The pretend exchange answers the attempt at once.
        if self.world.feed_up:
            self.world.connected = True
            self.run(self.layer.observe(ev.FeedConnected(FEED)))
        else:
            self.run(self.layer.observe(ev.FeedDisconnected(FEED, "connection refused")))

    def background(self) -> None:
        """Marks for unfrozen symbols and a heartbeat, while the feed is connected."""
        if not self.world.connected:
            return  # marks arrive over the feed: none while it is down
        self.run(self.layer.observe(ev.FeedMessage(FEED)))
        for symbol in SYMBOLS:
            if symbol not in self.world.frozen:
                self.run(self.layer.observe(ev.MarkUpdate(symbol)))

    def sample(self) -> None:
        modes = "  ".join(f"{s}={self.layer.mode(s).name}" for s in SYMBOLS)
        self.say(f"    modes: global={self.layer.mode().name}  {modes}")
        for symbol in SYMBOLS:
            opening = self.layer.decide(OrderIntent(symbol, Side.BUY, Decimal("0.1")), POSITION)
            reducing = self.layer.decide(OrderIntent(symbol, Side.SELL, Decimal("0.1")), POSITION)
            self.decisions += 2
            if opening.allowed and self._restricted(symbol):
                self.opening_allowed_while_restricted += 1
            why = ", ".join(
                f"{r.guard}{'' if r.scope is None else '@' + r.scope} {r.state}"
                + ("" if r.seconds_until_lift is None else f" lifts in {r.seconds_until_lift:g}s")
                for r in opening.reasons
            )
            verdict = "allowed" if opening.allowed else f"REFUSED ({why})"
            self.say(
                f"    BUY 0.1 {symbol}: {verdict}; SELL 0.1 (reduce): "
                f"{'allowed' if reducing.allowed else 'REFUSED'}"
            )

    def _restricted(self, symbol: str) -> bool:
        """From the guard states alone (not the mode): is anything restricting ``symbol``?"""
        return bool(self.layer.view().restrictions(symbol))

    def advance_to(self, when: float) -> None:
        """Move time to ``when``, stopping at every mark time and every deadline on the way."""
        while self.clock() < when:
            next_mark = (self.clock() // MARK_EVERY + 1) * MARK_EVERY
            deadline = self.layer.next_deadline()
            stop = min(when, next_mark, deadline if deadline is not None else when)
            self.clock.jump_to(max(stop, self.clock()))
            self.run(self.layer.tick())
            if self.clock() == next_mark:
                self.background()

    def main(self) -> int:
        self.say("tradeguard replay: every decision-matrix row, replayed in virtual time")
        self.say(f"symbols {', '.join(SYMBOLS)}; position {POSITION} long in each")
        self.run(self.layer.observe(ev.FeedStarted(FEED)))
        self.world.connected = True
        self.run(self.layer.observe(ev.FeedConnected(FEED)))
        self.background()
        self.sample()
        for step in _script():
            self.advance_to(step.at)
            self.say(f"=== [{step.row}] {step.title}")
            self.run(step.action(self.layer, self.world))
            self.sample()
        self.advance_to(END)
        self.say("=== end of replay")
        self.sample()
        return self.summary()

    def summary(self) -> int:
        expected = {*GLOBAL_GUARDS, *SYMBOL_GUARDS, "operator"}
        missed = sorted(expected - set(self.rows_hit))
        self.out.write("\nsummary\n")
        self.out.write(f"  guards that transitioned: {', '.join(sorted(self.rows_hit))}\n")
        self.out.write(
            "  not replayed: the preflight row (startup checks: run `tradeguard preflight`)\n"
        )
        self.out.write(
            f"  sample orders decided: {self.decisions}; opening orders allowed while "
            f"restricted: {self.opening_allowed_while_restricted}\n"
        )
        ok = not missed and self.opening_allowed_while_restricted == 0
        if missed:
            self.out.write(f"  MISSING rows: {', '.join(missed)}\n")
        self.out.write(f"  result: {'OK' if ok else 'FAILED'}\n")
        return 0 if ok else 1


def run_replay(seed: int, out: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """Play the script; returns 0 when every row was hit and no opening order slipped through.

    The script is timed for the seed's default knobs, so it always runs on them: the
    environment's knobs are checked (a bad one raises `ConfigError`) and, where set, named as
    not used.
    """
    given = environ or {}
    Settings.from_env(given)
    ignored = sorted(k.env for k in KNOBS if k.env in given)
    if ignored:
        out.write(f"knobs: the replay runs on the defaults; not used: {', '.join(ignored)}\n")
    return _Replay(seed, out).main()
