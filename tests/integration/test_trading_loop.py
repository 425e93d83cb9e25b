"""The reference trading loop on a real runtime and the embedded exchange's books.

Every test drives a real `Runtime` and `ReliabilityLayer` against a `DeterministicBroker`. Where
a test needs the venue to misbehave in a way its own fault switches cannot (drop a symbol from
the batch, lose a response, count calls in flight, block a thread), a small broker wrapper
sits at the true edge, around the real broker.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
import pytest

from tradeguard import GuardState, OrderIntent, ReliabilityLayer, Settings, Side, TradingMode
from tradeguard.fsm.effects import CancelOrders, Effect, Transitioned
from tradeguard.io import (
    CycleReport,
    LoopEvent,
    RandomStrategy,
    Runtime,
    Strategy,
    SyncBroker,
    TradingLoop,
)
from tradeguard.io.broker import (
    BOT_PREFIX,
    Balance,
    Broker,
    BrokerError,
    Order,
    OrderRequest,
    OrderStatus,
    Preview,
    Product,
    Quote,
)
from tradeguard.io.exchange import Venue
from tradeguard.testing import DeterministicBroker

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
SYMBOLS = (BTC, ETH)


# ---------------------------------------------------------------------- helpers


class Always:
    """A strategy that proposes the same order for every symbol, every cycle."""

    def __init__(self, side: Side = Side.BUY, quantity: str = "0.01") -> None:
        self.side = side
        self.quantity = Decimal(quantity)

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        return OrderIntent(symbol, self.side, self.quantity)


class EdgeBroker:
    """Wraps the real broker at the edge: counts calls and calls in flight, injects faults.

    Attributes:
        fail: method name -> the exception that method raises instead of answering.
        drop_from_batch: symbols left out of every ``get_best_bid_ask`` answer.
        delay: seconds every call spends "on the wire" (so concurrent calls overlap).
        lose_place_responses: place the order as a resting limit, then raise TimeoutError.
    """

    def __init__(self, inner: DeterministicBroker, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.fail: dict[str, BaseException] = {}
        self.drop_from_batch: set[str] = set()
        self.delay = delay
        self.lose_place_responses = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.spans: list[tuple[str, float, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    async def _enter(self, method: str, *args: Any) -> float:
        self.calls.append((method, args))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic()
        try:
            if self.delay:
                await anyio.sleep(self.delay)
            if method in self.fail:
                raise self.fail[method]
        except BaseException:
            self._leave(method, started)
            raise
        return started

    def _leave(self, method: str, started: float) -> None:
        self.in_flight -= 1
        self.spans.append((method, started, time.monotonic()))

    async def list_balances(self) -> list[Balance]:
        started = await self._enter("list_balances")
        try:
            return await self.inner.list_balances()
        finally:
            self._leave("list_balances", started)

    async def list_positions(self) -> dict[str, Decimal]:
        started = await self._enter("list_positions")
        try:
            return await self.inner.list_positions()
        finally:
            self._leave("list_positions", started)

    async def list_orders(self) -> list[Order]:
        started = await self._enter("list_orders")
        try:
            return await self.inner.list_orders()
        finally:
            self._leave("list_orders", started)

    async def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        started = await self._enter("get_best_bid_ask", tuple(symbols))
        try:
            quotes = await self.inner.get_best_bid_ask(symbols)
            return {s: q for s, q in quotes.items() if s not in self.drop_from_batch}
        finally:
            self._leave("get_best_bid_ask", started)

    async def get_ticker(self, symbol: str) -> Quote:
        started = await self._enter("get_ticker", symbol)
        try:
            return await self.inner.get_ticker(symbol)
        finally:
            self._leave("get_ticker", started)

    async def get_product(self, symbol: str) -> Product:
        started = await self._enter("get_product", symbol)
        try:
            return await self.inner.get_product(symbol)
        finally:
            self._leave("get_product", started)

    async def place_order(self, request: OrderRequest) -> Order:
        started = await self._enter("place_order", request)
        try:
            if self.lose_place_responses:
                far = (await self.inner.get_ticker(request.symbol)).bid / 2
                resting = OrderRequest(
                    request.symbol,
                    request.side,
                    request.quantity,
                    request.client_order_id,
                    far.quantize(Decimal("0.01")),
                )
                await self.inner.place_order(resting)
                raise TimeoutError("the response was lost on the way back")
            return await self.inner.place_order(request)
        finally:
            self._leave("place_order", started)

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        started = await self._enter("cancel_orders", tuple(order_ids))
        try:
            return await self.inner.cancel_orders(order_ids)
        finally:
            self._leave("cancel_orders", started)

    async def preview_order(self, request: OrderRequest) -> Preview:
        started = await self._enter("preview_order", request)
        try:
            return await self.inner.preview_order(request)
        finally:
            self._leave("preview_order", started)


@dataclass
class Rig:
    layer: ReliabilityLayer
    runtime: Runtime
    loop: TradingLoop
    venue: Venue
    events: list[LoopEvent] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[LoopEvent]:
        return [e for e in self.events if e.kind == kind]

    def failed_calls(self, call: str) -> list[LoopEvent]:
        return [e for e in self.events if e.kind == "failed" and e.call == call]

    def counter(self, guard: str, key: str, symbol: str | None = None) -> int:
        status = self.layer.status()
        if symbol is None:
            value: int = status["global"]["guards"][guard][key]
        else:
            value = status["symbols"][symbol]["guards"][guard][key]
        return value

    def bot_orders(self) -> list[Order]:
        return [o for o in self.venue.orders.values() if o.client_order_id.startswith(BOT_PREFIX)]

    async def cycles(self, n: int) -> list[CycleReport]:
        return [await self.loop.run_cycle() for _ in range(n)]


@asynccontextmanager
async def trading(
    broker: Broker | SyncBroker,
    venue: Venue,
    symbols: Sequence[str] = SYMBOLS,
    *,
    strategy: Strategy | None = None,
    runtime_broker: Broker | None = None,
    **knobs: Any,
) -> AsyncIterator[Rig]:
    """A running runtime and a loop over ``broker``; ``venue`` is the books behind it."""
    layer = ReliabilityLayer(Settings(**knobs), time.monotonic, rng=random.Random(0))
    async with Runtime(layer, broker=runtime_broker) as runtime:
        rig: Rig
        loop = TradingLoop(
            runtime,
            broker,
            symbols,
            strategy=strategy,
            rng=random.Random(0),
            on_event=lambda event: rig.events.append(event),
        )
        rig = Rig(layer, runtime, loop, venue)
        runtime.on_effect(rig.effects.append)
        yield rig


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def state(layer: ReliabilityLayer, guard: str, symbol: str | None = None) -> GuardState:
    return layer.guard(guard, symbol).state


async def tripped(rig: Rig, guard: str, symbol: str | None = None) -> None:
    """Wait for ``guard``'s trip record (slippage and validation go on to COOLDOWN at once)."""

    def seen() -> bool:
        return any(
            isinstance(e, Transitioned)
            and (e.machine, e.scope, e.dest) == (guard, symbol, "TRIPPED")
            for e in rig.effects
        )

    await wait_until(seen)


# ---------------------------------------------------------------------- step a: reads


async def test_every_cycle_reads_positions_and_audits_the_orders_once() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        await rig.cycles(2)
        assert (edge.count("list_positions"), edge.count("list_orders")) == (2, 2)
        # One failing positions read per cycle: the outage counter moves by exactly one.
        broker.venue.faults.failing_reads = {"positions"}
        for expected in (1, 2):
            report = await rig.loop.run_cycle()
            assert rig.counter("broker_outage", "consecutive_failures") == expected
            assert report.broker_errors == 1
        broker.venue.faults.failing_reads = set()
        await rig.loop.run_cycle()
        assert rig.counter("broker_outage", "consecutive_failures") == 0
        # One dirty audit per cycle while drift is present.
        broker.venue.inject_unknown_orders(BTC)
        for expected in (1, 2):
            await rig.loop.run_cycle()
            assert rig.counter("reconciliation", "consecutive_dirty_audits") == expected


async def test_positions_and_the_audit_run_concurrently() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker, delay=0.05)
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        await rig.loop.run_cycle()
    spans = {name: (start, end) for name, start, end in edge.spans}
    positions, audit = spans["list_positions"], spans["list_orders"]
    assert positions[0] < audit[1] and audit[0] < positions[1]  # the two calls overlapped


async def test_a_failed_audit_is_not_reported_as_a_clean_one() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        broker.venue.inject_unknown_orders(BTC)
        await rig.loop.run_cycle()
        assert rig.counter("reconciliation", "consecutive_dirty_audits") == 1
        edge.fail["list_orders"] = BrokerError("orders", 503, "down")
        report = await rig.loop.run_cycle()
        assert report.broker_errors == 1
        assert len(rig.failed_calls("list_orders")) == 1
        # A clean audit would have reset the count; no answer leaves it where it was.
        assert rig.counter("reconciliation", "consecutive_dirty_audits") == 1
        assert report.placed == 2  # the cycle went on


# ---------------------------------------------------------------------- step b: quotes


async def test_one_batched_call_prices_every_symbol() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        reports = await rig.cycles(3)
    assert edge.count("get_best_bid_ask") == 3
    assert edge.count("get_ticker") == 0
    assert edge.calls[[n for n, _ in edge.calls].index("get_best_bid_ask")][1] == (SYMBOLS,)
    for report in reports:
        assert (report.quoted_batch, report.quoted_fallback) == (SYMBOLS, ())
        assert report.placed == 2


async def test_only_symbols_missing_from_the_batch_fall_back_to_their_ticker() -> None:
    broker = DeterministicBroker(("BTC-USD", "ETH-USD", "SOL-USD"), seed=1)
    edge = EdgeBroker(broker)
    edge.drop_from_batch = {ETH}
    symbols = ("BTC-USD", "ETH-USD", "SOL-USD")
    async with trading(edge, broker.venue, symbols, strategy=Always()) as rig:
        report = await rig.loop.run_cycle()
    assert report.quoted_batch == (BTC, "SOL-USD")
    assert report.quoted_fallback == (ETH,)
    assert [args for name, args in edge.calls if name == "get_ticker"] == [(ETH,)]
    assert report.placed == 3  # the fallback quote is traded like any other


async def test_a_symbol_the_venue_does_not_know_falls_back_fails_and_is_not_traded() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    symbols = (BTC, "DOGE-USD", ETH)
    async with trading(edge, broker.venue, symbols, strategy=Always()) as rig:
        report = await rig.loop.run_cycle()
        assert rig.layer.mode("DOGE-USD") is TradingMode.REDUCE_ONLY  # never marked
    assert (report.quoted_batch, report.quoted_fallback) == ((BTC, ETH), ())
    assert [args for name, args in edge.calls if name == "get_ticker"] == [("DOGE-USD",)]
    [failed] = rig.failed_calls("get_ticker")
    assert failed.symbol == "DOGE-USD" and "404" in failed.detail
    assert report.broker_errors == 1
    assert {o.symbol for o in rig.bot_orders()} == {BTC, ETH}


async def test_a_failed_batch_falls_back_to_every_symbols_ticker() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    edge.fail["get_best_bid_ask"] = TimeoutError("batch timed out")
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        report = await rig.loop.run_cycle()
    assert (report.quoted_batch, report.quoted_fallback) == ((), SYMBOLS)
    assert edge.count("get_ticker") == 2
    assert report.placed == 2


def _last_mark(rig: Any) -> float:
    return float(rig.layer.status()["symbols"][BTC]["guards"]["mark_staleness"]["last_mark"])


async def test_a_quote_with_a_new_venue_time_is_a_fresh_mark() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(broker, broker.venue, strategy=Always()) as rig:
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY  # no mark yet
        await rig.loop.run_cycle()
        assert rig.layer.mode(BTC) is TradingMode.ALLOW
        first = _last_mark(rig)
        await anyio.sleep(0.01)
        broker.market.step()  # the venue updates its prices
        await rig.loop.run_cycle()
        assert _last_mark(rig) > first


async def test_a_frozen_price_is_not_a_fresh_mark() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(broker, broker.venue, strategy=Always()) as rig:
        await rig.loop.run_cycle()
        first = _last_mark(rig)
        broker.market.freeze(BTC)
        broker.market.step()
        await anyio.sleep(0.01)
        await rig.loop.run_cycle()
        assert _last_mark(rig) == first  # same venue time: the mark ages towards stale


# ---------------------------------------------------------------------- step c: concurrency


async def test_calls_in_flight_reach_but_never_exceed_max_concurrent_rest_calls() -> None:
    symbols = tuple(f"S{i}-USD" for i in range(8))
    broker = DeterministicBroker(symbols, seed=1)
    edge = EdgeBroker(broker, delay=0.01)
    async with trading(
        edge, broker.venue, symbols, strategy=Always(), max_concurrent_rest_calls=3
    ) as rig:
        reports = await rig.cycles(2)
        assert edge.max_in_flight == 3
        # The health runner's reads share the same bound.
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(rig.loop.check_health)
            tasks.start_soon(rig.loop.run_cycle)
    assert edge.max_in_flight == 3
    assert [r.placed for r in reports] == [8, 8]


# ---------------------------------------------------------------------- step c: the layer decides


async def test_the_layer_is_asked_before_every_order() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(broker, broker.venue, strategy=Always()) as rig:
        await rig.loop.run_cycle()  # marks arrive: ALLOW
        placed_before = len(rig.bot_orders())
        rig.runtime.apply(rig.layer.halt("operator: maintenance"))
        report = await rig.loop.run_cycle()
        assert (report.placed, report.refused) == (0, 2)
        assert len(rig.bot_orders()) == placed_before  # nothing reached the venue
        for event in rig.of_kind("refused"):
            assert event.decision is not None and not event.decision.allowed
            assert event.decision.mode is TradingMode.PAUSED
            assert {r.guard for r in event.decision.reasons} == {"operator"}
            assert "operator" in event.detail
        rig.runtime.apply(rig.layer.resume())
        report = await rig.loop.run_cycle()
        assert report.placed == 2
    placed = rig.of_kind("placed")
    assert len(placed) == len(rig.bot_orders()) == 4
    for event in placed:
        assert event.decision is not None and event.decision.allowed
        assert event.order is not None and event.order.client_order_id.startswith(BOT_PREFIX)


async def test_a_guard_that_trips_while_an_order_is_checked_still_stops_it() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, [BTC], strategy=Always()) as rig:
        await rig.loop.run_cycle()
        before = len(rig.bot_orders())

        # The operator halts while the product lookup is on the wire: the last look sees it.
        async def halt_during_lookup(symbol: str) -> Product:
            rig.runtime.apply(rig.layer.halt("operator: mid-flight"))
            return await broker.get_product(symbol)

        edge.get_product = halt_during_lookup  # type: ignore[method-assign]
        report = await rig.loop.run_cycle()
    assert (report.placed, report.refused) == (0, 1)
    assert len(rig.bot_orders()) == before


async def test_no_opening_order_goes_out_while_broker_reads_keep_trading_reduce_only() -> None:
    broker = DeterministicBroker(seed=3)
    # Positions to reduce: long BTC, short ETH.
    await broker.place_order(OrderRequest(BTC, Side.BUY, Decimal("0.05"), "seed-1"))
    await broker.place_order(OrderRequest(ETH, Side.SELL, Decimal("0.05"), "seed-2"))
    async with trading(broker, broker.venue, broker_outage_cooldown_seconds=120) as rig:
        await rig.loop.run_cycle()
        broker.venue.faults.failing_reads = {"positions"}
        await rig.cycles(2)
        assert state(rig.layer, "broker_outage") is GuardState.HEALTHY
        orders_before_trip = len(rig.venue.orders)
        # The third failed read trips the guard before any order is decided: and with the
        # positions unknown, nothing goes out at all (fail closed).
        for _ in range(2):
            report = await rig.loop.run_cycle()
            assert state(rig.layer, "broker_outage") is GuardState.TRIPPED
            assert report.placed == 0
        assert len(rig.venue.orders) == orders_before_trip
        # Reads are back: the guard cools down and trading stays reduce-only.
        broker.venue.faults.failing_reads = set()
        opening_refused = reducing_placed = 0
        for _ in range(20):
            before = dict(broker.venue.positions)
            seen = len(rig.events)
            await rig.loop.run_cycle()
            assert state(rig.layer, "broker_outage") is GuardState.COOLDOWN
            assert rig.layer.mode() is TradingMode.REDUCE_ONLY
            after = broker.venue.positions
            for symbol in SYMBOLS:
                was, now = before.get(symbol, Decimal(0)), after.get(symbol, Decimal(0))
                assert abs(now) <= abs(was), f"{symbol} grew from {was} to {now}"
                assert now * was >= 0, f"{symbol} flipped from {was} to {now}"
            for event in rig.events[seen:]:
                if event.kind == "placed":
                    assert event.opening is False
                    reducing_placed += 1
                elif event.kind == "refused":
                    assert event.opening is True
                    opening_refused += 1
            broker.market.step()
    # The default strategy exercised both paths.
    assert reducing_placed > 0 and opening_refused > 0


# ---------------------------------------------------------------------- slippage


async def test_a_slippage_spike_fails_previews_and_trips_the_symbols_guard_after_three() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(broker, broker.venue, strategy=Always()) as rig:
        await rig.loop.run_cycle()
        placed = len(rig.bot_orders())
        broker.venue.faults.slippage = Decimal("0.02")
        for _ in range(2):
            report = await rig.loop.run_cycle()
            assert (report.placed, report.rejected) == (0, 2)
            assert state(rig.layer, "slippage", BTC) is GuardState.HEALTHY
        report = await rig.loop.run_cycle()
        assert (report.placed, report.rejected) == (0, 2)
        await tripped(rig, "slippage", BTC)
        await tripped(rig, "slippage", ETH)
        assert len(rig.bot_orders()) == placed  # a preview over the limit is never placed
        assert len(rig.of_kind("slippage")) == 6
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode() is TradingMode.ALLOW  # per symbol, not global
        report = await rig.loop.run_cycle()
        assert report.refused == 2  # opening BUYs from a long position: refused


async def test_without_preview_slippage_is_checked_on_the_fill() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(
        broker, broker.venue, [BTC], strategy=Always(), preview_failure_disable_after=1
    ) as rig:
        broker.venue.faults.failing_previews = True
        report = await rig.loop.run_cycle()
        assert not rig.layer.preview_enabled
        assert report.placed == 1  # a failed preview does not stop the order
        broker.venue.faults.slippage = Decimal("0.02")
        for _ in range(3):
            assert state(rig.layer, "slippage", BTC) is GuardState.HEALTHY
            report = await rig.loop.run_cycle()
            assert report.placed == 1  # only the fill shows the slippage
        await tripped(rig, "slippage", BTC)
        slipped = rig.of_kind("slippage")
        assert len(slipped) == 3
        assert all(e.order is not None and e.order.fill_price is not None for e in slipped)
        report = await rig.loop.run_cycle()
        assert (report.placed, report.refused) == (0, 1)


# ---------------------------------------------------------------------- preview


async def test_preview_failures_disable_preview_and_trading_goes_on_without_it() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, [BTC], strategy=Always()) as rig:
        broker.venue.faults.failing_previews = True
        for cycle in range(1, 6):
            report = await rig.loop.run_cycle()
            assert report.placed == 1
            assert rig.layer.preview_enabled is (cycle < 5)
        assert len(rig.failed_calls("preview_order")) == 5
        previews = edge.count("preview_order")
        reports = await rig.cycles(3)
        assert [r.placed for r in reports] == [1, 1, 1]
        assert edge.count("preview_order") == previews  # disabled: never called again
        # Preview failures never count as validation failures.
        assert rig.counter("validation", "consecutive_failures") == 0
        assert state(rig.layer, "validation") is GuardState.HEALTHY
        assert rig.layer.mode(BTC) is TradingMode.ALLOW


# ---------------------------------------------------------------------- validation


async def test_failing_product_lookups_trip_validation_after_five() -> None:
    broker = DeterministicBroker(seed=1)
    async with trading(broker, broker.venue, [BTC], strategy=Always()) as rig:
        broker.venue.faults.failing_products = True
        for _ in range(5):
            assert state(rig.layer, "validation") is GuardState.HEALTHY
            report = await rig.loop.run_cycle()
            assert (report.placed, report.failed, report.broker_errors) == (0, 1, 1)
        await tripped(rig, "validation")
        assert rig.bot_orders() == []
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        assert len(rig.failed_calls("get_product")) == 5


async def test_an_ordinary_rejection_is_not_an_infrastructure_failure() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, [BTC], strategy=Always(quantity="0.000000001")) as rig:
        report = await rig.loop.run_cycle()  # finer than the product's increment
        assert (report.placed, report.rejected, report.failed) == (0, 1, 0)
        assert "multiple" in rig.of_kind("rejected")[0].detail
        edge.fail["get_product"] = BrokerError("market", 404, "no such product")
        report = await rig.loop.run_cycle()  # the lookup answered "no": a rejection too
        assert (report.rejected, report.failed) == (1, 0)
        assert rig.counter("validation", "consecutive_failures") == 0
    assert rig.bot_orders() == []


# ---------------------------------------------------------------------- reconciliation


async def test_drift_is_audited_and_trips_reconciliation_after_three_cycles() -> None:
    broker = DeterministicBroker(seed=1)
    ghosts = broker.venue.inject_unknown_orders(ETH, 2)
    async with trading(broker, broker.venue, strategy=Always(), runtime_broker=broker) as rig:
        for cycle in (1, 2):
            report = await rig.loop.run_cycle()
            assert report.placed == 2
            assert rig.counter("reconciliation", "consecutive_dirty_audits") == cycle
            assert state(rig.layer, "reconciliation") is GuardState.HEALTHY
        report = await rig.loop.run_cycle()
        assert state(rig.layer, "reconciliation") is GuardState.TRIPPED
        assert (report.placed, report.refused) == (0, 2)  # more BUYs on a long: opening
        # The audit named exactly the ghosts, never the loop's own (filled) orders.
        await wait_until(lambda: any(isinstance(e, CancelOrders) for e in rig.effects))
        [cancel] = [e for e in rig.effects if isinstance(e, CancelOrders)]
        assert sorted(cancel.order_ids) == sorted(ghosts)
        # The runtime cancels them; the next audit is clean and the guard cools down.
        await wait_until(
            lambda: all(broker.venue.orders[g].status is OrderStatus.CANCELLED for g in ghosts)
        )
        await rig.loop.run_cycle()
        assert state(rig.layer, "reconciliation") is GuardState.COOLDOWN


async def test_a_lost_place_response_does_not_look_like_drift() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, [BTC], strategy=Always()) as rig:
        edge.lose_place_responses = True
        report = await rig.loop.run_cycle()
        assert (report.placed, report.failed) == (0, 1)
        [lost] = rig.failed_calls("place_order")
        assert "lost" in lost.detail
        resting = [o for o in rig.bot_orders() if o.status is OrderStatus.OPEN]
        assert len(resting) == 1  # the order did reach the venue
        assert resting[0].client_order_id in rig.loop.known_client_order_ids
        edge.lose_place_responses = False
        await rig.cycles(2)
        assert rig.counter("reconciliation", "consecutive_dirty_audits") == 0


# ---------------------------------------------------------------------- faults and cancellation


async def test_a_bug_in_the_broker_is_not_swallowed() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    edge.fail["list_positions"] = KeyError("a bug, not a fault of the world")
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        with pytest.RaisesGroup(KeyError, flatten_subgroups=True):
            await rig.loop.run_cycle()


async def test_cancellation_passes_through_a_call_in_flight() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker, delay=10.0)
    async with trading(edge, broker.venue, strategy=Always()) as rig:
        with anyio.move_on_after(0.05) as scope:
            await rig.loop.run_cycle()
        assert scope.cancelled_caught
        assert rig.events == []  # a cancelled call is not a failed one
        assert rig.counter("broker_outage", "consecutive_failures") == 0


# ---------------------------------------------------------------------- blocking brokers


class BlockingBroker:
    """A broker on a blocking SDK: plain methods over a `Venue`, recording where they ran."""

    def __init__(self, venue: Venue, on_call: Callable[[], None]) -> None:
        self.venue = venue
        self.on_call = on_call
        self.threads: set[int] = set()

    def _blocking(self) -> None:
        self.threads.add(threading.get_ident())
        self.on_call()
        time.sleep(0.002)  # the SDK's socket wait

    def list_balances(self) -> list[Balance]:
        self._blocking()
        return self.venue.list_balances()

    def list_positions(self) -> dict[str, Decimal]:
        self._blocking()
        return self.venue.list_positions()

    def list_orders(self) -> list[Order]:
        self._blocking()
        return self.venue.list_orders()

    def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        self._blocking()
        return self.venue.quotes(symbols)

    def get_ticker(self, symbol: str) -> Quote:
        self._blocking()
        return self.venue.quote(symbol)

    def get_product(self, symbol: str) -> Product:
        self._blocking()
        return self.venue.product(symbol)

    def place_order(self, request: OrderRequest) -> Order:
        self._blocking()
        return self.venue.place(request)

    def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        self._blocking()
        return self.venue.cancel(order_ids)

    def preview_order(self, request: OrderRequest) -> Preview:
        self._blocking()
        return self.venue.preview(request)


@pytest.mark.parametrize("dedicated", [True, False], ids=["dedicated", "default-limiter"])
async def test_a_blocking_broker_runs_in_worker_threads(dedicated: bool) -> None:
    venue = DeterministicBroker(seed=1).venue
    default_tokens_in_use: list[float] = []

    def on_call() -> None:  # runs in the worker thread: ask the event loop
        limiter = anyio.from_thread.run_sync(anyio.to_thread.current_default_thread_limiter)
        default_tokens_in_use.append(limiter.borrowed_tokens)

    broker = BlockingBroker(venue, on_call)
    async with trading(
        broker,
        venue,
        strategy=Always(),
        broker_calls_use_dedicated_executor=dedicated,
    ) as rig:
        reports = await rig.cycles(2)
        health = await rig.loop.check_health()
    assert [r.placed for r in reports] == [2, 2]
    assert health.detail.startswith("balances read")
    assert threading.get_ident() not in broker.threads  # never on the event loop's thread
    if dedicated:
        assert set(default_tokens_in_use) == {0}  # the loop's own limiter admitted them
    else:
        assert min(default_tokens_in_use) >= 1  # they shared anyio's default limiter


async def test_a_blocking_brokers_faults_become_observations_too() -> None:
    venue = DeterministicBroker(seed=1).venue
    broker = BlockingBroker(venue, lambda: None)
    async with trading(broker, venue, strategy=Always()) as rig:
        venue.faults.failing_reads = {"positions"}
        report = await rig.loop.run_cycle()
        assert report.broker_errors == 1
        assert rig.counter("broker_outage", "consecutive_failures") == 1


# ---------------------------------------------------------------------- running


async def test_run_cycles_on_its_interval_with_the_health_runner_beside_it() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, strategy=Always(), health_check_interval=0.02) as rig:
        await rig.runtime.start(rig.loop.run, 0.02)
        await wait_until(lambda: edge.count("get_best_bid_ask") >= 3)
        await wait_until(lambda: len(rig.of_kind("health")) >= 3)
        health = rig.of_kind("health")[-1]
        assert health.mode == "ALLOW" and "balances read" in health.detail
    # Leaving the runtime stopped the loop: no call is still running.
    assert edge.in_flight == 0


async def test_the_health_runners_balance_reads_are_broker_reads() -> None:
    broker = DeterministicBroker(seed=1)
    edge = EdgeBroker(broker)
    async with trading(edge, broker.venue, strategy=Always(), health_check_interval=0.02) as rig:
        await rig.runtime.start(rig.loop.run, 60.0)  # one cycle, then only the health runner
        await wait_until(lambda: len(rig.of_kind("health")) >= 2)
        broker.venue.faults.failing_reads = {"balances"}
        await wait_until(lambda: state(rig.layer, "broker_outage") is GuardState.TRIPPED)
        await wait_until(lambda: rig.of_kind("health")[-1].mode == "REDUCE_ONLY")
        assert "failed" in rig.of_kind("health")[-1].detail
        assert len(rig.failed_calls("list_balances")) >= 3
        assert edge.count("get_best_bid_ask") == 1


async def test_run_can_be_started_by_keyword_from_any_task_group() -> None:
    broker = DeterministicBroker(seed=1)
    async with (
        trading(broker, broker.venue, strategy=Always(), health_check_interval=0.02) as rig,
        anyio.create_task_group() as tasks,
    ):
        await tasks.start(lambda task_status: rig.loop.run(interval=0.01, task_status=task_status))
        await wait_until(lambda: len(rig.of_kind("placed")) >= 4)
        tasks.cancel_scope.cancel("test over")


# ---------------------------------------------------------------------- the default strategy


def test_the_default_strategy_opens_reduces_and_idles() -> None:
    strategy = RandomStrategy(random.Random(5), Decimal("0.01"))
    quote = Quote(BTC, Decimal("99"), Decimal("101"))
    long = [strategy.propose(BTC, quote, Decimal("0.004")) for _ in range(200)]
    intents = [i for i in long if i is not None]
    assert len(intents) < len(long)  # some cycles propose nothing
    reducing = [i for i in intents if i.side is Side.SELL]
    opening = [i for i in intents if i.side is Side.BUY]
    assert reducing and opening
    assert {i.quantity for i in reducing} == {Decimal("0.004")}  # never past flat
    assert {i.quantity for i in opening} == {Decimal("0.01")}
    flat = [strategy.propose(BTC, quote, None) for _ in range(50)]
    assert {i.side for i in flat if i is not None} == {Side.BUY, Side.SELL}


async def test_the_default_loop_places_opening_and_reducing_orders() -> None:
    broker = DeterministicBroker(seed=2)
    async with trading(broker, broker.venue) as rig:
        for _ in range(15):
            await rig.loop.run_cycle()
            broker.market.step()
    flags = {e.opening for e in rig.of_kind("placed")}
    assert flags == {True, False}


async def test_a_seeded_run_replays_exactly() -> None:
    async def run() -> list[tuple[str, str, Side, Decimal, Decimal | None]]:
        broker = DeterministicBroker(seed=9)
        async with trading(broker, broker.venue) as rig:
            for _ in range(8):
                await rig.loop.run_cycle()
                broker.market.step()
        return [
            (o.client_order_id, o.symbol, o.side, o.quantity, o.fill_price)
            for o in broker.venue.orders.values()
        ]

    first = await run()
    assert first and first == await run()


# ---------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("symbols", "order_size", "message"),
    [
        ((), Decimal("0.01"), "at least one symbol"),
        ((BTC, BTC), Decimal("0.01"), "unique"),
        ((BTC, ""), Decimal("0.01"), "non-empty"),
        ((BTC,), Decimal(0), "order_size"),
        ((BTC,), Decimal("NaN"), "order_size"),
    ],
)
async def test_bad_arguments_are_refused(
    symbols: tuple[str, ...], order_size: Decimal, message: str
) -> None:
    broker = DeterministicBroker()
    layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(0))
    async with Runtime(layer) as runtime:
        with pytest.raises(ValueError, match=message):
            TradingLoop(runtime, broker, symbols, order_size=order_size)


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), float("nan")])
async def test_a_bad_interval_is_refused(interval: float) -> None:
    broker = DeterministicBroker()
    async with trading(broker, broker.venue) as rig:
        with pytest.raises(ValueError, match="interval"):
            await rig.loop.run(interval)
