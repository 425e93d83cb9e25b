"""``tradeguard demo``: the reference loop trading against the embedded exchange, broken on cue.

Starts the embedded Coinbase simulator (REST and websocket on 127.0.0.1, authentication on),
then an `Engine` around ccxt's own ``coinbase`` client, exactly as an engine author would put
tradeguard in front of their exchange: every request ccxt makes is signed with the simulator's
API key and reported to the layer through `CcxtBroker`. The reference `TradingLoop` trades a
few symbols with demo-length timings (cooldowns of seconds, not minutes). A scripted timeline
then breaks the exchange once per decision-matrix row and heals it again, while a printer
shows every guard transition, every mode change, the orders placed and the first refusal of
each restriction.
The runtime's ``/metrics``, ``/health`` and ``/status`` are served on an ephemeral port of
127.0.0.1 for the whole run; their URLs are printed first.

Each row's header says which row it is ("row 3/9") and when; on a terminal the story is in
colour (``NO_COLOR`` turns it off). A closing table gives, per row, the guards that tripped,
the most restrictive mode they caused, when every scope was back to ALLOW (seconds into the
run) and how many orders were refused meanwhile.

The closing check is independent of the layer's own answers: every order the exchange filled
is compared with the guard states at the moment the loop sent it. ``--seed`` fixes prices,
strategy choices, reconnect jitter and error draws; wall-clock timing still varies a little
from machine to machine, so two runs print the same story, not byte-identical text.
"""

from __future__ import annotations

import dataclasses
import random
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

import anyio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tradeguard.config import KNOBS, Settings
from tradeguard.fsm import (
    GLOBAL_GUARDS,
    SYMBOL_GUARDS,
    HaltState,
    OrderIntent,
    ReliabilityLayer,
    TradingMode,
)
from tradeguard.fsm.effects import Alert, ModeChanged, Reason, Transitioned
from tradeguard.fsm.views import LayerView
from tradeguard.io.broker import Balance, Broker, Order, OrderRequest, Preview, Product, Quote
from tradeguard.io.engine import Engine
from tradeguard.io.exchange import ExchangeFeedServer, Market, Venue
from tradeguard.io.exchange.rest_server import ExchangeRestServer
from tradeguard.io.loop import LoopEvent, TradingLoop

__all__ = ["DEMO_SETTINGS", "run_live_demo"]

# Demo-length timings: every cooldown a few seconds so each row trips and recovers on screen.
DEMO_SETTINGS = {
    "api_error_rate_window_seconds": 4.0,
    "api_error_rate_min_calls": 6,
    "api_health_cooldown_seconds": 3.0,
    # Breakers open after more failures than validation and preview need to trip, so those
    # two rows show their own guard rather than only the breaker they also strain.
    "circuit_failure_threshold": 8,
    "validation_failure_escalate_after": 3,
    "preview_failure_disable_after": 3,
    "circuit_recovery_timeout": 1.5,
    "mark_staleness_threshold_seconds": 1.5,
    "mark_staleness_cooldown_seconds": 2.0,
    "slippage_pause_seconds": 2.5,
    "validation_failure_cooldown_seconds": 2.5,
    "broker_outage_cooldown_seconds": 2.5,
    "ws_reconnect_backoff_base": 0.05,
    "ws_reconnect_backoff_max": 0.4,
    "ws_reconnect_max_attempts": 4,
    "ws_reconnect_reset_seconds": 2.0,
    "ws_reconnect_pause_seconds": 2.5,
    "ws_message_stale_seconds": 1.0,
    "health_check_interval": 1.0,
}
CYCLE_SECONDS = 0.2
BASE_DURATION = 50.0
_TRIPPED = ("TRIPPED", "DEGRADED", "OPEN", "HALTED", "REDUCED")
_MODE_STYLE = {
    TradingMode.ALLOW: "green",
    TradingMode.REDUCE_ONLY: "yellow",
    TradingMode.PAUSED: "bold red",
}


@dataclass
class _Row:
    """One decision-matrix row of the run, for the closing table."""

    name: str
    started: float  # seconds into the run
    guards: list[str] = field(default_factory=list)
    worst: TradingMode | None = None
    lifted: float | None = None  # seconds into the run when every scope was ALLOW again
    refused: int = 0


@dataclass
class _Demo:
    layer: ReliabilityLayer
    venue: Venue
    rest: ExchangeRestServer
    feed: ExchangeFeedServer
    symbols: list[str]
    out: TextIO
    started: float = field(default_factory=time.monotonic)
    placed: int = 0
    placed_opening: int = 0
    refused: int = 0
    violations: list[str] = field(default_factory=list)
    rows_tripped: set[str] = field(default_factory=set)
    modes_seen: set[TradingMode] = field(default_factory=set)
    engine: Engine | None = None
    scale: float = 1.0  # the timeline's stretch: --duration over the base duration
    rows: list[_Row] = field(default_factory=list)
    console: Console | None = None
    _last_refusal: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _modes: dict[str | None, TradingMode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.console is None:
            # Colour only on a terminal; rich honours NO_COLOR. soft_wrap in `say` keeps each
            # line whole in a pipe, as it was before colour.
            self.console = Console(file=self.out, highlight=False)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str, style: str = "") -> None:
        assert self.console is not None
        line = Text(f"{self.elapsed():6.1f}s  ")
        line.append(text, style=style)
        self.console.print(line, soft_wrap=True)
        self.out.flush()

    def begin_row(self, name: str, total: int, title: str) -> None:
        if not self.rows or self.rows[-1].name != name:
            self.rows.append(_Row(name, self.elapsed()))
        number = len(self.rows)
        self.say(f"=== [{name}] row {number}/{total}: {title}", style="bold cyan")

    # ------------------------------------------------------------------ printing

    def on_record(self, record: Transitioned | ModeChanged) -> None:
        if isinstance(record, ModeChanged):
            why = ", ".join(f"{r.guard} {r.state}" for r in record.reasons) or "nothing in force"
            scope = record.scope or "ALL SYMBOLS"
            self.modes_seen.add(record.dest)
            self._track_mode(record)
            self.say(
                f"  MODE {scope}: {record.source.name} -> {record.dest.name}  ({why})",
                style=_MODE_STYLE[record.dest],
            )
        elif record.machine != "mode":
            where = "" if record.scope is None else f"[{record.scope}]"
            move = f"{record.source} -> {record.dest} ({record.trigger})"
            tripped = record.dest in _TRIPPED
            self.say(f"  {record.machine}{where}: {move}", style="red" if tripped else "")
            if tripped:
                self.rows_tripped.add(record.machine.split(":")[0])
                if self.rows and record.machine not in self.rows[-1].guards:
                    self.rows[-1].guards.append(record.machine)

    def _track_mode(self, record: ModeChanged) -> None:
        """The closing table's mode and lift time: a row lifts when every scope is ALLOW."""
        self._modes[record.scope] = record.dest
        if not self.rows:
            return
        if record.dest is not TradingMode.ALLOW:
            row = self.rows[-1]
            row.worst = record.dest if row.worst is None else max(row.worst, record.dest)
            row.lifted = None
        elif all(mode is TradingMode.ALLOW for mode in self._modes.values()):
            for row in self.rows:
                if row.worst is not None and row.lifted is None:
                    row.lifted = self.elapsed()

    def on_loop_event(self, event: LoopEvent) -> None:
        if event.kind == "placed":
            self.placed += 1
        elif event.kind == "refused" and event.symbol is not None:
            self.refused += 1
            if self.rows:
                self.rows[-1].refused += 1
            found = event.decision.reasons if event.decision else ()
            guards = tuple(sorted({r.guard for r in found}))
            # One line per new set of restricting guards, not one per refused order.
            if self._last_refusal.get(event.symbol) != guards:
                self._last_refusal[event.symbol] = guards
                why = ", ".join(f"{r.guard} {r.state}" for r in found)
                self.say(f"  order refused on {event.symbol} ({why})", style="magenta")

    def on_alert(self, alert: Alert) -> None:
        style = "bold red" if alert.severity == "critical" else "red"
        self.say(f"  ! {alert.severity.upper()}: {alert.title}: {alert.detail}", style=style)

    def audit_sending(self, request: OrderRequest) -> None:
        """Independent of decide(): at the instant an order is sent, is it opening a position
        (judged from the exchange's own books) while anything restricts its symbol, or any
        order while an operator halt pauses it?"""
        held = self.venue.positions.get(request.symbol, Decimal(0))
        reducing = OrderIntent(request.symbol, request.side, request.quantity).reduces(held)
        view = self.layer.view()
        reasons = view.restrictions(request.symbol)
        unmarked = self.layer.settings.mark_staleness_allow_reduce_only
        paused = [f"{r.guard} {r.state}" for r in reasons if _pauses(view, r, unmarked)]
        if paused:  # PAUSED refuses closing orders too
            self.violations.append(f"{request.symbol}: order sent while {paused}")
        if reducing:
            return
        self.placed_opening += 1
        if reasons:
            restricting = [f"{r.guard} {r.state}" for r in reasons]
            self.violations.append(f"{request.symbol}: opening order while {restricting}")


def _pauses(view: LayerView, reason: Reason, reduce_only_without_mark: bool) -> bool:
    """Whether a restriction refuses closing orders too (PAUSED, not REDUCE_ONLY)."""
    if reason.guard == "operator":
        return reason.state == HaltState.HALTED
    scope = view.scope(reason.scope)
    guard = None if scope is None else scope.guards.get(reason.guard)
    # A symbol the layer never saw has no guards yet: its NO_MARK pauses per the knob.
    if guard is None:
        return not reduce_only_without_mark
    return guard.restriction is TradingMode.PAUSED


class _AuditedBroker:
    """The broker the loop trades through, with the demo's check at the moment of sending."""

    def __init__(self, broker: Broker, demo: _Demo) -> None:
        self._broker = broker
        self._demo = demo

    async def list_balances(self) -> list[Balance]:
        return await self._broker.list_balances()

    async def list_positions(self) -> dict[str, Decimal]:
        return await self._broker.list_positions()

    async def list_orders(self) -> list[Order]:
        return await self._broker.list_orders()

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        return await self._broker.get_best_bid_ask(symbols)

    async def get_ticker(self, symbol: str) -> Quote:
        return await self._broker.get_ticker(symbol)

    async def get_product(self, symbol: str) -> Product:
        return await self._broker.get_product(symbol)

    async def place_order(self, request: OrderRequest) -> Order:
        self._demo.audit_sending(request)
        return await self._broker.place_order(request)

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        return await self._broker.cancel_orders(order_ids)

    async def preview_order(self, request: OrderRequest) -> Preview:
        return await self._broker.preview_order(request)


Step = Callable[[_Demo], Awaitable[None] | None]


def _set_faults(**changes: Any) -> Step:
    def step(demo: _Demo) -> None:
        for name, value in changes.items():
            setattr(demo.venue.faults, name, value)

    return step


async def _ws_down(demo: _Demo) -> None:
    demo.feed.refuse_handshakes(503)
    await demo.feed.drop_all(1012)


def _freeze(symbol: str, frozen: bool) -> Step:
    return lambda demo: demo.venue.market.freeze(symbol, frozen)


def _drift(symbol: str) -> Step:
    def step(demo: _Demo) -> None:
        ghosts = demo.venue.inject_unknown_orders(symbol, 2)
        demo.say(f"  (the exchange now holds bot-owned orders the bot never placed: {ghosts})")

    return step


def _halt(symbol: str, seconds: float) -> Step:
    async def step(demo: _Demo) -> None:
        assert demo.engine is not None
        ttl = seconds * demo.scale
        await demo.engine.halt(f"operator: maintenance on {symbol}", symbol=symbol, ttl=ttl)

    return step


# (seconds into a 50 s run, matrix row, what happens, how)
def _timeline(symbols: list[str]) -> list[tuple[float, str, str, Step]]:
    first, second = symbols[0], symbols[1]
    two_pct = Decimal("0.02")
    return [
        (
            2.0,
            "api_health",
            "error storm: every REST call answers 503 (the loop's position reads fail first, "
            "so broker_outage trips beside api_health)",
            lambda d: d.rest.error_storm(1.0, 503),
        ),
        (4.0, "api_health", "the API answers again", lambda d: d.rest.error_storm(0.0)),
        (
            9.0,
            "api_health",
            "rate-limit burst: 429 with usage headers",
            lambda d: d.rest.rate_limited(True),
        ),
        (9.5, "api_health", "rate limit lifted", lambda d: d.rest.rate_limited(False)),
        (14.0, "mark_staleness", f"{first} marks freeze", _freeze(first, True)),
        (16.5, "mark_staleness", f"{first} marks flow again", _freeze(first, False)),
        (20.0, "slippage", "slippage spike: fills 2% from the mid", _set_faults(slippage=two_pct)),
        (21.5, "slippage", "slippage back to normal", _set_faults(slippage=Decimal(0))),
        (
            24.5,
            "validation",
            "validation infrastructure (product lookups) failing",
            _set_faults(failing_products=True),
        ),
        (26.0, "validation", "validation infrastructure back", _set_faults(failing_products=False)),
        (28.5, "preview", "order previews failing", _set_faults(failing_previews=True)),
        (
            30.0,
            "preview",
            "previews work again (preview stays off for the session)",
            _set_faults(failing_previews=False),
        ),
        (
            31.0,
            "broker_outage",
            "balance and position reads failing",
            _set_faults(failing_reads={"balances", "positions"}),
        ),
        (33.0, "broker_outage", "reads back", _set_faults(failing_reads=set())),
        (36.0, "reconciliation", "order drift at the exchange", _drift(second)),
        (39.5, "websocket", "websocket drops; handshakes refused with 503", _ws_down),
        (
            43.0,
            "websocket",
            "the websocket accepts connections again",
            lambda d: d.feed.refuse_handshakes(None),
        ),
        (
            46.5,
            "operator",
            f"operator halts {second} for 2 s: PAUSED, closing orders refused too",
            _halt(second, 2.0),
        ),
    ]


def demo_settings(environ: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """The environment's knobs with the demo's timings on top, and what to tell the reader.

    Raises:
        ConfigError: a knob in ``environ`` is bad (the demo refuses to run on it).
    """
    from_env = Settings.from_env(environ)
    settings = dataclasses.replace(from_env, **DEMO_SETTINGS)  # type: ignore[arg-type]
    overridden = [k for k in KNOBS if k.field in DEMO_SETTINGS]
    shown = ", ".join(f"{k.env}={getattr(settings, k.field):g}" for k in overridden)
    text = f"knobs: from the environment, except the demo's timings: {shown}"
    lines = textwrap.wrap(text, 96, subsequent_indent="  ", break_on_hyphens=False)
    ignored = sorted(k.env for k in overridden if k.env in environ)
    if ignored:
        text = f"knobs: the environment's values of {', '.join(ignored)} are not used"
        lines += textwrap.wrap(text, 96, subsequent_indent="  ", break_on_hyphens=False)
    return settings, lines


async def _run(
    seed: int, duration: float, symbols: list[str], out: TextIO, settings: Settings
) -> int:
    import ccxt.async_support as ccxt

    market = Market(symbols, random.Random(seed + 1))
    venue = Venue(market, random.Random(seed + 2))
    async with ExchangeRestServer(venue, rng=random.Random(seed + 3)) as rest:
        # The engine author's own client: ccxt's coinbase class, signing with the API key the
        # simulator handed out. Only its base URL differs from the real venue's.
        exchange = ccxt.coinbase(
            {
                "apiKey": rest.credentials.api_key,
                "secret": rest.credentials.api_secret,
                "timeout": 1000,  # ms
                "enableRateLimit": False,  # the demo's cycles are its own throttle
            }
        )
        exchange.urls["api"] = {"rest": rest.url}
        try:
            demo = await _engine(exchange, settings, seed, duration, symbols, out, rest, venue)
        finally:
            await exchange.close()
        return _summary(demo)


async def _engine(
    exchange: object,
    settings: Settings,
    seed: int,
    duration: float,
    symbols: list[str],
    out: TextIO,
    rest: ExchangeRestServer,
    venue: Venue,
) -> _Demo:
    demo: _Demo | None = None

    def on_alert(alert: Alert) -> None:
        if demo is not None:
            demo.on_alert(alert)

    async with (
        ExchangeFeedServer(venue.market, tick_interval=0.1, heartbeat_interval=0.25) as feed,
        Engine(
            settings,
            broker=exchange,
            symbols=symbols,
            feed_url=feed.url,
            rng=random.Random(seed),
            alert_sinks=(on_alert,),
            status_port=0,
            feed_options={"close_timeout": 0.2},
        ) as engine,
    ):
        demo = _Demo(engine.layer, venue, rest, feed, symbols, out, engine=engine)
        demo.say(f"tradeguard demo: {', '.join(symbols)} through ccxt's coinbase on {rest.url}")
        demo.say(f"  (authenticated: ES256 JWTs for {rest.credentials.api_key})")
        for path in ("metrics", "health", "status"):
            demo.say(f"{path}: {engine.status_url}/{path}")
        await _trade(demo, engine, seed, duration)
    assert demo is not None
    return demo


async def _trade(demo: _Demo, engine: Engine, seed: int, duration: float) -> None:
    symbols = demo.symbols
    scale = demo.scale = duration / BASE_DURATION
    records = engine.subscribe(max_buffer=100_000)
    audited = _AuditedBroker(engine.broker, demo)

    def on_event(event: LoopEvent) -> None:
        demo.on_loop_event(event)
        engine.metrics.on_loop_event(event)  # refused decisions, by reason

    loop = TradingLoop(
        engine.runtime, audited, symbols, rng=random.Random(seed + 4), on_event=on_event
    )
    async with anyio.create_task_group() as printer:
        printer.start_soon(_print_records, records, demo)
        await engine.start(loop.run, CYCLE_SECONDS)
        timeline = _timeline(symbols)
        total = len(dict.fromkeys(row for _, row, _, _ in timeline))
        for at, row, title, step in timeline:
            await anyio.sleep(max(0.0, demo.started + at * scale - time.monotonic()))
            demo.begin_row(row, total, title)
            result = step(demo)
            if result is not None:
                await result
        await anyio.sleep(max(0.0, demo.started + duration - time.monotonic()))
        printer.cancel_scope.cancel()


async def _print_records(records: Any, demo: _Demo) -> None:
    async with records:
        async for record in records:
            demo.on_record(record)


def _summary(demo: _Demo) -> int:
    rows = {*GLOBAL_GUARDS, *SYMBOL_GUARDS, "operator"}  # a row per guard, and a halt
    missed = sorted(rows - demo.rows_tripped)
    unseen = sorted(m.name for m in set(TradingMode) - demo.modes_seen)
    w = demo.out.write
    _table(demo)
    w("\nsummary\n")
    w(f"  guards tripped: {', '.join(sorted(demo.rows_tripped & rows))}\n")
    w(f"  modes seen: {', '.join(m.name for m in sorted(demo.modes_seen))}\n")
    w(f"  orders placed: {demo.placed} ({demo.placed_opening} opening); refused {demo.refused}\n")
    modes = " ".join(f"{s}={demo.layer.mode(s).name}" for s in demo.symbols)
    w(f"  final modes: global={demo.layer.mode().name} {modes}\n")
    w(f"  opening orders placed while restricted: {len(demo.violations)}\n")
    for violation in demo.violations:
        w(f"    {violation}\n")
    if missed:
        w(f"  rows that did not trip: {', '.join(missed)}\n")
    if unseen:
        w(f"  modes never reached: {', '.join(unseen)}\n")
    ok = not missed and not unseen and not demo.violations
    assert demo.console is not None
    verdict = Text("  result: ")
    verdict.append("OK" if ok else "FAILED", style="bold green" if ok else "bold red")
    demo.console.print(verdict, soft_wrap=True)
    return 0 if ok else 1


def _table(demo: _Demo) -> None:
    """Row by row: what tripped, the mode it caused, when it lifted, orders refused."""
    table = Table(title="rows", title_justify="left")
    table.add_column("row", justify="right")
    table.add_column("matrix row")
    table.add_column("guards tripped")
    table.add_column("mode")
    table.add_column("lifted at", justify="right")
    table.add_column("refused", justify="right")
    for number, row in enumerate(demo.rows, 1):
        mode = Text("-") if row.worst is None else Text(row.worst.name, _MODE_STYLE[row.worst])
        lifted = "-" if row.worst is None else "not yet" if row.lifted is None else None
        table.add_row(
            str(number),
            row.name,
            ", ".join(row.guards) or "-",
            mode,
            lifted or f"{row.lifted:.1f} s",
            str(row.refused),
        )
    assert demo.console is not None
    demo.out.write("\n")
    demo.console.print(table)


def run_live_demo(
    *,
    seed: int,
    duration: float,
    symbols: list[str],
    out: TextIO,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the live demo; 0 when every row tripped and no opening order slipped through.

    Raises:
        ValueError: a ``duration`` under 30 s.
        ConfigError: a bad knob in ``environ`` (default: none).
    """
    if duration < 30:
        raise ValueError(f"--duration must be at least 30 seconds, got {duration:g}")
    settings, lines = demo_settings(environ or {})
    for line in lines:
        out.write(line + "\n")
    return anyio.run(_run, seed, duration, symbols, out, settings)
