"""The reference trading loop: what the seed's engine does each cycle, asked of the layer first.

Theory of operation. One cycle (`TradingLoop.run_cycle`) runs four steps:

1. Reads, concurrently in one task group: the positions (`BrokerRead("positions", ok)`) and
   the open-order audit. The audit reports the bot-owned orders (client order id starting
   with the runtime's bot prefix) whose client ids this loop never sent, as
   `ReconciliationAudit(unknown order ids)`; an empty tuple is a clean audit. A failed audit
   observes nothing: no answer is not a clean answer.
2. Quotes: one batched ``get_best_bid_ask`` for every symbol; a symbol missing from its answer
   (every symbol, if the batch call failed) falls back to its own ``get_ticker``. A quote whose
   venue time moved since the last one (or that carries no time) is a fresh mark
   (`MarkUpdate`); a quote with an unchanged time is a frozen price, and its mark goes stale.
3. Orders. The strategy proposes at most one order per quoted symbol, called in symbol order
   before any task starts, so a seeded run proposes the same orders however the tasks are
   scheduled. Each proposal then runs as its own task: ask ``decide()`` (with the position, or
   ``None`` when the read failed: fail closed) before spending any call on it; look the
   product up (the validation infrastructure: `ValidationCheck`); preview it while preview is
   enabled (`PreviewResult`, and the slippage guard's verdict `SlippageCheck`, which stops the
   order when it fails); ask ``decide()`` once more and send with no ``await`` in between, so
   a guard that tripped while the order was being checked still stops it; and when no preview
   priced the order, check the fill's slippage against the quote's mid.
4. A `CycleReport` sums the cycle up; every step also reports a `LoopEvent` to ``on_event``.

Profiling. The seed's hot paths are timed with `tradeguard.io.profiling.profile_span`:
``fetch_positions`` (step 1), ``strategy_decision`` (the proposals of step 3),
``order_placement`` (step 3's order tasks), ``pre_trade_validation`` (per order, from the
first ``decide()`` through the preview) and ``equity_computation`` (the health runner's
balance read). They are recorded into the profile sink of the loop's runtime
(`Runtime.route_profiles`; `attach_metrics` and the `Engine` route them to their metrics),
whoever awaits the cycle; with none, where a `tradeguard.io.metrics.Metrics` is active
(``with metrics.activate():``); elsewhere they only measure.

Faults. A broker call that raises `BrokerError`, `OSError` or `TimeoutError` is caught at the
call and becomes the observation named above (when one applies) and a ``"failed"`` event; it
never ends the cycle. Cancellation, and any other exception (a bug, not a fault of the world),
passes through. Two answers are not infrastructure failures: a product lookup refused with a
4xx other than 429 (the infrastructure worked and said no: the order is rejected,
``ValidationCheck(ok=True)``), and a failed preview, which is counted by the preview guard
only, never as a validation failure; the order then goes out unpreviewed and its slippage is
checked on the fill, exactly as once the guard has disabled preview.

Client order ids are recorded as known before the order is sent: a response lost on the way
back must not make the loop's own order look like drift in the next audit.

Concurrency and the dedicated executor. Every broker call goes through one helper, under one
`anyio.Semaphore` of ``max_concurrent_rest_calls`` permits, so no more calls than that are ever
in flight, whichever step (or the health runner) makes them. The helper awaits coroutine
functions (as `inspect.iscoroutinefunction` tells them) directly and runs any other callable in
a worker thread with `anyio.to_thread.run_sync`, so a broker built on a blocking SDK works
unchanged and never blocks the event loop. With ``broker_calls_use_dedicated_executor`` those
threads are admitted by an `anyio.CapacityLimiter` of ``max_concurrent_rest_calls`` tokens that
belongs to this loop: broker calls never queue behind, nor starve, the other users of anyio's
process-wide default limiter (file I/O, DNS, other libraries); without it they share that
default limiter. anyio keeps one pool of worker threads either way: the limiter, not a second
pool, is what isolates broker calls, which gives the original's dedicated thread pool its
guarantee with no pool to shut down. A thread is never abandoned on cancellation: cancellation
waits for the blocking call to return, so an order that may have been sent is never forgotten
mid-flight.
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, final, get_args

import anyio
from anyio.abc import TaskStatus

from tradeguard.fsm import Decision, OrderIntent, Side
from tradeguard.fsm.events import (
    BrokerRead,
    MarkUpdate,
    PreviewResult,
    ReconciliationAudit,
    SlippageCheck,
    ValidationCheck,
)
from tradeguard.io.broker import (
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
from tradeguard.io.profiling import profile_span
from tradeguard.io.runtime import Runtime

__all__ = [
    "CycleReport",
    "LoopEvent",
    "LoopEventKind",
    "RandomStrategy",
    "Strategy",
    "SyncBroker",
    "TradingLoop",
]

# What a broker raises when the world fails; everything else is a bug and passes through.
_FAULTS = (BrokerError, OSError, TimeoutError)
_ZERO = Decimal(0)

LoopEventKind = Literal["placed", "refused", "rejected", "slippage", "failed", "health"]
_KINDS = frozenset(get_args(LoopEventKind))


@final
@dataclass(frozen=True, slots=True)
class LoopEvent:
    """Something the loop did or saw, delivered synchronously to ``on_event``.

    Attributes:
        kind: ``"placed"`` (an order went out), ``"refused"`` (the layer said no; see
            ``decision.reasons``), ``"rejected"`` (the loop dropped the order: a quantity off
            the product's increment, a refused product, or a preview over the slippage limit),
            ``"slippage"`` (a slippage check failed: on a preview, or on a fill),
            ``"failed"`` (a broker call failed; ``call`` names it), ``"health"`` (the health
            runner read balances; ``mode`` is the global trading mode).
        symbol: the symbol concerned, or ``None`` for a global event.
        detail: a short human-readable account.
        call: the broker method of a ``"failed"`` event.
        intent: the order the event concerns, if any.
        decision: the layer's decision, on ``"placed"`` and ``"refused"``.
        order: the venue's order, on ``"placed"`` (and a ``"slippage"`` found on a fill).
        mode: the global mode's name, on ``"health"``.
        opening: on ``"placed"`` and ``"refused"``: whether the order opens or adds to a
            position rather than reducing it (reducing: the opposite side, at most the
            position); ``None`` when the position was unknown.

    Raises:
        ValueError: an unknown kind.
    """

    kind: LoopEventKind
    symbol: str | None = None
    detail: str = ""
    call: str | None = None
    intent: OrderIntent | None = None
    decision: Decision | None = None
    order: Order | None = None
    mode: str | None = None
    opening: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"LoopEvent.kind must be one of {sorted(_KINDS)}, got {self.kind!r}")


@final
@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did.

    Attributes:
        placed: orders sent and accepted by the venue.
        refused: proposals the layer refused (before the checks, or at the last look).
        rejected: proposals the loop dropped itself (see `LoopEvent` ``"rejected"``).
        failed: proposals not placed because a broker call they needed failed (the product
            lookup or the placement itself).
        broker_errors: broker calls that failed during the cycle, of every kind.
        quoted_batch: symbols priced by the batched quote call, in symbol order.
        quoted_fallback: symbols priced by their own ticker call, in symbol order.
        duration: seconds the cycle took.
    """

    placed: int
    refused: int
    rejected: int
    failed: int
    broker_errors: int
    quoted_batch: tuple[str, ...]
    quoted_fallback: tuple[str, ...]
    duration: float


class Strategy(Protocol):
    """Proposes orders; the loop asks the layer before any of them goes out."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        """At most one order for ``symbol`` this cycle.

        Args:
            symbol: the symbol.
            quote: its quote, fetched this cycle.
            position: its signed position (long > 0), or ``None`` if the read failed.

        Returns:
            An intent for ``symbol``, or ``None`` to leave it alone this cycle.
        """
        ...


@final
class RandomStrategy:
    """The default strategy: small seeded orders, some opening a position and some reducing it.

    Each call draws one number: below ``idle_share`` nothing is proposed; then, with a
    position held, below ``idle_share + reduce_share`` an order reduces it (opposite side, at
    most the position); otherwise an order opens further (the position's side, or a random side
    when flat or unknown) for ``order_size``.

    Args:
        rng: the random source; seed it to replay a run.
        order_size: the quantity of every opening order (and the cap of a reducing one).
        reduce_share: the share of calls that reduce a held position.
        idle_share: the share of calls that propose nothing.

    Raises:
        ValueError: ``order_size`` is not a finite `Decimal` > 0, or the shares are not
            ratios summing to at most 1.
    """

    def __init__(
        self,
        rng: random.Random,
        order_size: Decimal,
        *,
        reduce_share: float = 0.4,
        idle_share: float = 0.2,
    ) -> None:
        _require_size(order_size)
        if not (0 <= reduce_share <= 1 and 0 <= idle_share <= 1 and reduce_share + idle_share <= 1):
            raise ValueError(
                "RandomStrategy shares must be in [0, 1] and sum to at most 1, got "
                f"reduce_share={reduce_share!r}, idle_share={idle_share!r}"
            )
        self._rng = rng
        self._size = order_size
        self._reduce = reduce_share
        self._idle = idle_share

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        """Nothing, a reducing order or an opening order (see the class docstring)."""
        roll = self._rng.random()
        if roll < self._idle:
            return None
        if position is None or position == 0:
            return OrderIntent(symbol, self._rng.choice((Side.BUY, Side.SELL)), self._size)
        if roll < self._idle + self._reduce:
            side = Side.SELL if position > 0 else Side.BUY
            return OrderIntent(symbol, side, min(self._size, abs(position)))
        return OrderIntent(symbol, Side.BUY if position > 0 else Side.SELL, self._size)


class SyncBroker(Protocol):
    """A broker whose methods block (a vendor's synchronous SDK): the loop runs them in threads.

    The methods are those of `tradeguard.io.broker.Broker`, without ``async``. A broker may
    also mix the two: each method is checked on its own.
    """

    def list_balances(self) -> list[Balance]:
        """Funds per currency."""
        ...

    def list_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol (long > 0)."""
        ...

    def list_orders(self) -> list[Order]:
        """Open orders at the venue."""
        ...

    def get_best_bid_ask(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Quotes for many symbols in one call; a symbol may be missing from the answer."""
        ...

    def get_ticker(self, symbol: str) -> Quote:
        """The quote for one symbol."""
        ...

    def get_product(self, symbol: str) -> Product:
        """The product's increments."""
        ...

    def place_order(self, request: OrderRequest) -> Order:
        """Place an order; the same ``client_order_id`` twice places it once."""
        ...

    def cancel_orders(self, order_ids: Sequence[str]) -> list[str]:
        """Cancel orders; returns the ids that were open and are now cancelled."""
        ...

    def preview_order(self, request: OrderRequest) -> Preview:
        """What the order would do, without placing it."""
        ...


@dataclass(slots=True)
class _Tally:
    """One cycle's counts; written only by that cycle's tasks."""

    placed: int = 0
    refused: int = 0
    rejected: int = 0
    failed: int = 0
    broker_errors: int = 0


@final
@dataclass(frozen=True, slots=True)
class _Plan:
    """One proposal on its way: what the loop knew when the strategy proposed it."""

    intent: OrderIntent
    quote: Quote
    position: Decimal | None
    client_order_id: str

    @property
    def opening(self) -> bool | None:
        """Whether the order opens or adds to the position; ``None`` if it is unknown."""
        if self.position is None:
            return None
        return not self.intent.reduces(self.position)


@final
class TradingLoop:
    """The reference trading loop over one broker, guarded by ``runtime``'s layer.

    Settings come from ``runtime.layer.settings``; the bot prefix of client order ids from
    ``runtime.bot_prefix``. Run one cycle with `run_cycle`, or every few seconds with `run`
    (``await runtime.start(loop.run, 5.0)``).

    Args:
        runtime: the running `Runtime`; observations go through it, so their effects run.
        broker: an async `Broker`, a blocking `SyncBroker`, or a mix (see the module
            docstring on threads and the dedicated executor).
        symbols: the symbols traded, each at most once.
        strategy: proposes orders; by default a `RandomStrategy` drawing from ``rng``.
        order_size: the default strategy's order size.
        rng: seeds the default strategy and the client order ids. Seed it to replay a run,
            but never reuse a seed against a live venue: ids would repeat, and a venue that
            deduplicates by client order id would answer with the old order.
        on_event: called synchronously with every `LoopEvent`; what it raises ends the cycle.

    Raises:
        ValueError: no symbols, an empty or repeated symbol, or a bad ``order_size``.
    """

    def __init__(
        self,
        runtime: Runtime,
        broker: Broker | SyncBroker,
        symbols: Sequence[str],
        *,
        strategy: Strategy | None = None,
        order_size: Decimal = Decimal("0.01"),
        rng: random.Random | None = None,
        on_event: Callable[[LoopEvent], None] | None = None,
    ) -> None:
        symbols = tuple(symbols)
        if not symbols:
            raise ValueError("TradingLoop needs at least one symbol")
        for symbol in symbols:
            if not isinstance(symbol, str) or not symbol.strip():
                raise ValueError(f"TradingLoop symbols must be non-empty strings, got {symbol!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"TradingLoop symbols must be unique, got {symbols!r}")
        _require_size(order_size)
        self._runtime = runtime
        self._layer = runtime.layer
        self._settings = runtime.layer.settings
        self._prefix = runtime.bot_prefix
        self._broker = broker
        self._symbols = symbols
        self._quote_times: dict[str, datetime] = {}
        # Unseeded only when the caller does not care to replay: ids then differ per process.
        rng = rng if rng is not None else random.Random()
        self._strategy: Strategy = (
            strategy if strategy is not None else RandomStrategy(rng, order_size)
        )
        self._on_event = on_event
        self._session = f"{rng.getrandbits(32):08x}"
        self._numbers = itertools.count(1)
        self._known: set[str] = set()
        self._max_slippage = Decimal(repr(self._settings.slippage_max_pct))
        permits = self._settings.max_concurrent_rest_calls
        self._calls = anyio.Semaphore(permits)
        self._limiter = (
            anyio.CapacityLimiter(permits)
            if self._settings.broker_calls_use_dedicated_executor
            else None  # anyio's default limiter
        )
        self._cycle_lock = anyio.Lock()

    @property
    def known_client_order_ids(self) -> frozenset[str]:
        """Client order ids this loop sent whose orders may still be open at the venue."""
        return frozenset(self._known)

    # ------------------------------------------------------------------ running

    async def run(
        self, interval: float, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run a cycle every ``interval`` seconds, and the health runner, until cancelled.

        Ready (``task_status.started()``) once the health runner is started, before the first
        cycle. A cycle that overruns its interval is followed at once by the next, never by a
        burst catching up. The health runner reads balances every ``health_check_interval``
        seconds (see `check_health`).

        Raises:
            ValueError: ``interval`` is not a finite number of seconds > 0.
        """
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ValueError(f"interval must be seconds > 0, got {interval!r}")
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be seconds > 0, got {interval!r}")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._every, self._settings.health_check_interval, self.check_health)
            task_status.started()
            await self._every(interval, self.run_cycle)

    @staticmethod
    async def _every(interval: float, action: Callable[[], Awaitable[object]]) -> None:
        due = anyio.current_time()
        while True:
            await action()
            due = max(due + interval, anyio.current_time())
            await anyio.sleep_until(due)

    async def check_health(self) -> LoopEvent:
        """Read balances (`BrokerRead("balances", ok)`) and report the global mode.

        Returns:
            The ``"health"`` event, also given to ``on_event``.
        """
        try:
            with self._runtime.profiled(), profile_span("equity_computation"):
                # A raise is recorded as result=error.
                balances: list[Balance] = await self._call(self._broker.list_balances)
        except _FAULTS as err:
            self._runtime.observe(BrokerRead("balances", ok=False))
            self._emit(LoopEvent("failed", detail=f"list_balances: {err}", call="list_balances"))
            detail = f"balances read failed: {err}"
        else:
            self._runtime.observe(BrokerRead("balances", ok=True))
            detail = f"balances read: {len(balances)} currencies"
        mode = self._layer.mode().name
        event = LoopEvent("health", detail=detail, mode=mode)
        self._emit(event)
        return event

    # ------------------------------------------------------------------ one cycle

    async def run_cycle(self) -> CycleReport:
        """Run one cycle (see the module docstring); concurrent calls run one after another.

        Returns:
            What the cycle did. Broker faults never end a cycle: they are in the report, the
            events and the layer's observations.
        """
        async with self._cycle_lock:
            with self._runtime.profiled():
                return await self._run_cycle()

    async def _run_cycle(self) -> CycleReport:
        started = time.perf_counter()
        tally = _Tally()
        positions: dict[str, Decimal] | None = None

        async def read_positions() -> None:
            nonlocal positions
            positions = await self._read_positions(tally)

        async with anyio.create_task_group() as reads:
            reads.start_soon(read_positions)
            reads.start_soon(self._audit_orders, tally)
        batch, fallback = await self._quotes(tally)
        quotes = batch | fallback
        plans: list[_Plan] = []
        with profile_span("strategy_decision"):
            for symbol in self._symbols:  # in symbol order: proposals replay exactly
                quote = quotes.get(symbol)
                if quote is None:
                    continue
                self._observe_mark(quote)
                position = None if positions is None else positions.get(symbol, _ZERO)
                intent = self._strategy.propose(symbol, quote, position)
                if intent is None:
                    continue
                if intent.symbol != symbol:
                    raise ValueError(f"strategy proposed {intent!r} when asked about {symbol!r}")
                plans.append(_Plan(intent, quote, position, self._next_client_order_id()))
        with profile_span("order_placement"):
            async with anyio.create_task_group() as orders:
                for plan in plans:
                    orders.start_soon(self._trade, plan, tally)
        return CycleReport(
            placed=tally.placed,
            refused=tally.refused,
            rejected=tally.rejected,
            failed=tally.failed,
            broker_errors=tally.broker_errors,
            quoted_batch=tuple(s for s in self._symbols if s in batch),
            quoted_fallback=tuple(s for s in self._symbols if s in fallback),
            duration=time.perf_counter() - started,
        )

    async def _read_positions(self, tally: _Tally) -> dict[str, Decimal] | None:
        try:
            with profile_span("fetch_positions"):  # a raise is recorded as result=error
                positions: dict[str, Decimal] = await self._call(self._broker.list_positions)
        except _FAULTS as err:
            self._runtime.observe(BrokerRead("positions", ok=False))
            self._call_failed(tally, "list_positions", err)
            return None  # unknown positions: decide() fails closed
        self._runtime.observe(BrokerRead("positions", ok=True))
        return positions

    async def _audit_orders(self, tally: _Tally) -> None:
        try:
            open_orders: list[Order] = await self._call(self._broker.list_orders)
        except _FAULTS as err:
            self._call_failed(tally, "list_orders", err)
            return  # no answer is not a clean audit: observe nothing
        unknown = tuple(
            order.order_id
            for order in open_orders
            if order.client_order_id.startswith(self._prefix)
            and order.client_order_id not in self._known
        )
        self._runtime.observe(ReconciliationAudit(unknown))

    async def _quotes(self, tally: _Tally) -> tuple[dict[str, Quote], dict[str, Quote]]:
        batch: dict[str, Quote] = {}
        try:
            answer: dict[str, Quote] = await self._call(
                self._broker.get_best_bid_ask, self._symbols
            )
        except _FAULTS as err:
            self._call_failed(tally, "get_best_bid_ask", err)
        else:
            batch = {s: answer[s] for s in self._symbols if s in answer}
        fallback: dict[str, Quote] = {}

        async def ticker(symbol: str) -> None:
            try:
                fallback[symbol] = await self._call(self._broker.get_ticker, symbol)
            except _FAULTS as err:
                self._call_failed(tally, "get_ticker", err, symbol)

        missing = [s for s in self._symbols if s not in batch]
        if missing:
            async with anyio.create_task_group() as tickers:
                for symbol in missing:
                    tickers.start_soon(ticker, symbol)
        return batch, fallback

    async def _trade(self, plan: _Plan, tally: _Tally) -> None:
        intent, symbol = plan.intent, plan.intent.symbol
        with profile_span("pre_trade_validation"):
            decision = self._layer.decide(intent, plan.position)
            if not decision.allowed:
                self._refused(tally, plan, decision)
                return
            if not await self._validate(plan, tally):
                return
            previewed = await self._preview(plan, tally)
            if previewed is None:
                return  # previewed, and over the slippage limit
        request = OrderRequest(symbol, intent.side, intent.quantity, plan.client_order_id)
        async with self._calls:
            # The last look: nothing is awaited between this answer and the send, so a guard
            # that tripped while this order was being checked still stops it.
            decision = self._layer.decide(intent, plan.position)
            if not decision.allowed:
                self._refused(tally, plan, decision)
                return
            # Known before it is sent: a lost response must not look like drift.
            self._known.add(plan.client_order_id)
            try:
                order: Order = await self._invoke(self._broker.place_order, request)
            except _FAULTS as err:
                self._call_failed(tally, "place_order", err, symbol, intent)
                tally.failed += 1
                return
        if order.status is not OrderStatus.OPEN:
            self._known.discard(plan.client_order_id)  # settled: it can never be open again
        tally.placed += 1
        self._emit(
            LoopEvent(
                "placed",
                symbol,
                f"{intent.side} {intent.quantity} {symbol}: {order.status}",
                intent=intent,
                decision=decision,
                order=order,
                opening=plan.opening,
            )
        )
        if not previewed and order.fill_price is not None:
            self._check_fill(plan, order, order.fill_price)

    async def _validate(self, plan: _Plan, tally: _Tally) -> bool:
        """The validation infrastructure's product lookup; True when the order may go on."""
        intent, symbol = plan.intent, plan.intent.symbol
        try:
            product: Product = await self._call(self._broker.get_product, symbol)
        except _FAULTS as err:
            if _is_refusal(err):
                # The infrastructure worked and said no: an ordinary rejection.
                self._runtime.observe(ValidationCheck(ok=True))
                self._reject(tally, plan, f"product lookup refused: {err}")
                return False
            self._runtime.observe(ValidationCheck(ok=False))
            self._call_failed(tally, "get_product", err, symbol, intent)
            tally.failed += 1
            return False
        self._runtime.observe(ValidationCheck(ok=True))
        step = product.base_increment
        if step > 0 and intent.quantity % step != 0:
            self._reject(tally, plan, f"quantity {intent.quantity} is not a multiple of {step}")
            return False
        return True

    async def _preview(self, plan: _Plan, tally: _Tally) -> bool | None:
        """Preview while enabled: True if priced and within the limit, False if not
        previewed (disabled, or the preview failed), None if over the slippage limit."""
        if not self._layer.preview_enabled:
            return False
        intent, symbol = plan.intent, plan.intent.symbol
        request = OrderRequest(symbol, intent.side, intent.quantity, plan.client_order_id)
        try:
            preview: Preview = await self._call(self._broker.preview_order, request)
        except _FAULTS as err:
            # Counted by the preview guard only; the order goes on, checked on its fill.
            self._runtime.observe(PreviewResult(ok=False))
            self._call_failed(tally, "preview_order", err, symbol, intent)
            return False
        self._runtime.observe(PreviewResult(ok=True))
        ok = preview.slippage <= self._max_slippage
        self._runtime.observe(SlippageCheck(symbol, ok=ok))
        if ok:
            return True
        detail = f"preview slippage {preview.slippage:.4%} > {self._max_slippage:.4%}"
        self._emit(LoopEvent("slippage", symbol, detail, intent=intent))
        self._reject(tally, plan, detail)
        return None

    def _check_fill(self, plan: _Plan, order: Order, fill_price: Decimal) -> None:
        mid = plan.quote.mid
        slippage = abs(fill_price - mid) / mid
        ok = slippage <= self._max_slippage
        self._runtime.observe(SlippageCheck(plan.intent.symbol, ok=ok))
        if not ok:
            detail = f"fill slippage {slippage:.4%} > {self._max_slippage:.4%}"
            self._emit(
                LoopEvent("slippage", plan.intent.symbol, detail, intent=plan.intent, order=order)
            )

    # ------------------------------------------------------------------ calls

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call one broker method under the semaphore (see the module docstring)."""
        async with self._calls:
            return await self._invoke(method, *args)

    async def _invoke(self, method: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        return await anyio.to_thread.run_sync(method, *args, limiter=self._limiter)

    def _observe_mark(self, quote: Quote) -> None:
        if quote.time is not None:
            if self._quote_times.get(quote.symbol) == quote.time:
                return  # the venue has not updated this price: not a fresh mark
            self._quote_times[quote.symbol] = quote.time
        self._runtime.observe(MarkUpdate(quote.symbol))

    def _next_client_order_id(self) -> str:
        return f"{self._prefix}{self._session}-{next(self._numbers):06d}"

    # ------------------------------------------------------------------ reporting

    def _emit(self, event: LoopEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _call_failed(
        self,
        tally: _Tally,
        call: str,
        err: Exception,
        symbol: str | None = None,
        intent: OrderIntent | None = None,
    ) -> None:
        tally.broker_errors += 1
        self._emit(LoopEvent("failed", symbol, f"{call}: {err}", call=call, intent=intent))

    def _refused(self, tally: _Tally, plan: _Plan, decision: Decision) -> None:
        tally.refused += 1
        guards = ", ".join(sorted({r.guard for r in decision.reasons})) or "none given"
        detail = f"{decision.mode.name}: {guards}"
        symbol = plan.intent.symbol
        self._emit(
            LoopEvent(
                "refused",
                symbol,
                detail,
                intent=plan.intent,
                decision=decision,
                opening=plan.opening,
            )
        )

    def _reject(self, tally: _Tally, plan: _Plan, detail: str) -> None:
        tally.rejected += 1
        self._emit(LoopEvent("rejected", plan.intent.symbol, detail, intent=plan.intent))


def _is_refusal(err: Exception) -> bool:
    """A 4xx answer other than 429: the venue worked and refused (the caller's fault)."""
    status = err.status if isinstance(err, BrokerError) else None
    return status is not None and 400 <= status < 500 and status != 429


def _require_size(size: object) -> None:
    if not isinstance(size, Decimal) or not size.is_finite() or size <= 0:
        raise ValueError(f"order_size must be a finite Decimal > 0, got {size!r}")
