"""The chaos harness (`tradeguard.testing.chaos`).

Three parts: the seed's two examples, run as the seed wrote them (imports aside); one test per
point where the harness does better than the original; and every preset tripping its guard
through a real `Runtime` and `TradingLoop` over `DeterministicBroker`, plus the websocket
helpers against a real `ExchangeFeedServer` and `FeedClient` on 127.0.0.1.
"""

from __future__ import annotations

import inspect
import math
import random
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import anyio
import pytest

from tradeguard import GuardState, OrderIntent, ReliabilityLayer, Settings, Side, TradingMode
from tradeguard.fsm import BreakerState
from tradeguard.fsm.effects import (
    CancelOrders,
    CloseConnection,
    DisablePreview,
    Effect,
    Transitioned,
)
from tradeguard.fsm.events import ApiCall, Observation, RateLimitUsage
from tradeguard.io import FeedClient, Runtime, TradingLoop
from tradeguard.io.broker import (
    BOT_PREFIX,
    Balance,
    Broker,
    BrokerError,
    Order,
    OrderRequest,
    OrderStatus,
    Quote,
)
from tradeguard.io.exchange import ExchangeFeedServer, Market
from tradeguard.testing import (
    BROKER_METHODS,
    CallRecord,
    ChaosBroker,
    DeterministicBroker,
    FaultAction,
    FaultPlan,
    api_outage_scenario,
    broker_read_failure_scenario,
    fault_after,
    fault_always,
    fault_once,
    fault_randomly,
    fault_sequence,
    order_drift_scenario,
    preview_failure_scenario,
    rate_limit_scenario,
    slippage_spike_scenario,
    stale_marks_scenario,
    validation_failure_scenario,
    websocket_accept,
    websocket_drop,
    websocket_refuse,
    websocket_restore,
    websocket_resume,
    websocket_silence,
)

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
SYMBOLS = (BTC, ETH)
REQUEST = OrderRequest(BTC, Side.BUY, Decimal("0.01"), f"{BOT_PREFIX}chaos-test-1")

# One call of each Broker method: its arguments and the category its faults are filed under.
CALLS: dict[str, tuple[tuple[Any, ...], str]] = {
    "list_balances": ((), "accounts"),
    "list_positions": ((), "accounts"),
    "list_orders": ((), "orders"),
    "place_order": ((REQUEST,), "orders"),
    "cancel_orders": ((["ord-none"],), "orders"),
    "preview_order": ((REQUEST,), "orders"),
    "get_best_bid_ask": ((SYMBOLS,), "market"),
    "get_ticker": ((BTC,), "market"),
    "get_product": ((BTC,), "market"),
}


def no_sleep(seconds: float) -> None:
    """The no-op sleep the seed recommends: delays pass in no time."""


async def outcome(call: Awaitable[Any]) -> Any:
    """The answer, or the name of the exception raised instead."""
    try:
        return await call
    except Exception as err:
        return type(err).__name__


class SyncBooks:
    """A blocking broker (a vendor SDK): two sync methods over a venue's books."""

    def __init__(self) -> None:
        self.venue = DeterministicBroker(seed=1).venue

    def list_balances(self) -> list[Balance]:
        return self.venue.list_balances()

    def get_ticker(self, symbol: str) -> Quote:
        return self.venue.quote(symbol)


# ---------------------------------------------------------------------- the seed's examples


async def test_seed_example_outage_after_two_balance_reads() -> None:
    plan = FaultPlan().add(
        "list_balances",
        fault_after(2, raise_exc=TimeoutError("broker read timeout")),
    )
    broker = ChaosBroker(DeterministicBroker(), plan)
    assert (await broker.list_balances())[0].currency == "USD"
    assert (await broker.list_balances())[0].currency == "USD"
    with pytest.raises(TimeoutError, match="broker read timeout"):
        await broker.list_balances()


async def test_seed_example_api_outage_preset() -> None:
    broker = ChaosBroker(DeterministicBroker(), api_outage_scenario())
    for method, (args, category) in CALLS.items():
        with pytest.raises(BrokerError) as info:
            await getattr(broker, method)(*args)
        assert (info.value.category, info.value.status) == (category, 503), method


# ---------------------------------------------------------------------- better than the original


async def test_async_methods_stay_coroutine_functions_and_await_the_delay() -> None:
    slept: list[float] = []

    async def async_sleep(seconds: float) -> None:
        slept.append(seconds)
        await anyio.lowlevel.checkpoint()

    plan = FaultPlan().add("list_balances", fault_once(delay_seconds=0.25, raise_exc=TimeoutError))
    broker = ChaosBroker(DeterministicBroker(), plan, sleep_func=async_sleep)
    # TradingLoop awaits coroutine functions and runs anything else in a thread.
    assert inspect.iscoroutinefunction(broker.list_balances)
    pending = broker.list_balances()
    assert inspect.isawaitable(pending) and slept == []  # nothing happens before the await
    with pytest.raises(TimeoutError):
        await pending
    assert slept == [0.25]
    assert await outcome(broker.list_balances()) != "TimeoutError"


async def test_a_sync_sleep_func_also_delays_async_methods_and_latency_alone_passes_through() -> (
    None
):
    slept: list[float] = []
    plan = FaultPlan().add("get_ticker", fault_always(delay_seconds=0.5))
    broker = ChaosBroker(DeterministicBroker(), plan, sleep_func=slept.append)
    quote = await broker.get_ticker(BTC)
    assert quote.symbol == BTC  # a pure latency fault: the real answer, late
    assert slept == [0.5]
    assert plan.log[0].fault == "delay 0.5s"


def test_sync_methods_stay_sync_and_sleep_with_a_sync_sleep_func() -> None:
    slept: list[float] = []
    action = fault_after(1, delay_seconds=0.5, raise_exc=ConnectionResetError)
    broker = ChaosBroker(
        SyncBooks(), FaultPlan().add("list_balances", action), sleep_func=slept.append
    )
    assert not inspect.iscoroutinefunction(broker.list_balances)
    assert broker.list_balances()[0].currency == "USD"
    with pytest.raises(ConnectionResetError):
        broker.list_balances()
    assert slept == [0.5]


def test_a_sync_method_refuses_an_async_sleep_func() -> None:
    async def async_sleep(seconds: float) -> None:
        await anyio.lowlevel.checkpoint()

    plan = FaultPlan().add("list_balances", fault_once(delay_seconds=0.1))
    broker = ChaosBroker(SyncBooks(), plan, sleep_func=async_sleep)
    with pytest.raises(TypeError, match="sync sleep_func"):
        broker.list_balances()


async def test_a_sync_broker_in_a_worker_thread_reports_through_the_event_loop() -> None:
    layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(0))
    async with Runtime(layer, alert_sinks=()) as runtime:
        plan = FaultPlan().add("list_balances", fault_always(raise_exc=TimeoutError))
        broker = ChaosBroker(SyncBooks(), plan, observe=runtime.observe)
        loop = TradingLoop(runtime, broker, SYMBOLS, rng=random.Random(0))
        await loop.check_health()  # runs the sync method in a worker thread
    assert layer.status()["breakers"]["accounts"]["consecutive_failures"] == 1
    assert layer.status()["global"]["guards"]["broker_outage"]["consecutive_failures"] == 1


async def test_fault_after_lets_exactly_n_calls_through_then_faults_every_later_call() -> None:
    # The original faulted once, on call n itself.
    plan = FaultPlan().add("list_orders", fault_after(3, raise_exc=TimeoutError))
    broker = ChaosBroker(DeterministicBroker(), plan)
    outcomes = [await outcome(broker.list_orders()) for _ in range(7)]
    assert outcomes == [[], [], [], *["TimeoutError"] * 4]


async def test_fault_after_with_times_faults_that_many_calls_as_the_original_took_it() -> None:
    # Found: the original's presets pass times=, which raised ValueError here.
    plan = FaultPlan().add("list_orders", fault_after(2, raise_exc=TimeoutError, times=2))
    broker = ChaosBroker(DeterministicBroker(), plan)
    outcomes = [await outcome(broker.list_orders()) for _ in range(6)]
    assert outcomes == [[], [], "TimeoutError", "TimeoutError", [], []]
    with pytest.raises(ValueError, match=r"FaultAction\.times must .* got 0"):
        fault_after(2, raise_exc=TimeoutError, times=0)


async def test_an_exception_class_raises_a_fresh_instance_per_fault() -> None:
    plan = FaultPlan().add("get_ticker", fault_always(raise_exc=TimeoutError))
    broker = ChaosBroker(DeterministicBroker(), plan)
    raised = []
    for _ in range(3):
        with pytest.raises(TimeoutError) as info:
            await broker.get_ticker(BTC)
        raised.append(info.value)
    assert len({id(e) for e in raised}) == 3
    assert len({id(e.__traceback__) for e in raised}) == 3


@pytest.mark.parametrize(
    "original",
    [
        BrokerError("market", 503, "down"),  # its __init__ cannot take its own args back
        TimeoutError("slow"),
        ConnectionResetError(104, "reset by peer"),
    ],
    ids=["BrokerError", "TimeoutError", "OSError-with-errno"],
)
async def test_an_exception_instance_is_raised_as_a_fresh_copy_sharing_no_traceback(
    original: BaseException,
) -> None:
    original.add_note("a note")
    plan = FaultPlan().add("get_product", fault_always(raise_exc=original))
    broker = ChaosBroker(DeterministicBroker(), plan)
    raised = []
    for _ in range(2):
        with pytest.raises(type(original)) as info:
            await broker.get_product(BTC)
        raised.append(info.value)
    first, second = raised
    assert first is not original and second is not original and first is not second
    assert str(first) == str(second) == str(original)
    assert vars(first) == vars(original) or isinstance(original, OSError)
    assert original.__traceback__ is None  # the configured instance is never raised
    # Each copy carries one raise's traceback: nothing piles up across faults.
    assert len(traceback.extract_tb(first.__traceback__)) == len(
        traceback.extract_tb(second.__traceback__)
    )
    first.add_note("only on the first")
    assert second.__notes__ == original.__notes__ == ["a note"]


def test_a_plan_naming_a_method_the_broker_lacks_fails_at_construction() -> None:
    # The original silently injected nothing.
    plan = FaultPlan().add("list_balance", fault_once(raise_exc=TimeoutError))
    with pytest.raises(ValueError, match="'list_balance'") as info:
        ChaosBroker(DeterministicBroker(), plan)
    assert "list_balances, list_orders, list_positions" in str(info.value)


def test_a_preset_on_a_broker_lacking_a_method_fails_at_construction() -> None:
    with pytest.raises(ValueError) as info:
        ChaosBroker(SyncBooks(), api_outage_scenario())
    message = str(info.value)
    assert "'preview_order'" in message and "'list_positions'" in message
    assert message.endswith("its public methods: get_ticker, list_balances")


async def test_an_action_shared_by_two_plans_is_exhausted_in_each_separately() -> None:
    action = fault_once(raise_exc=TimeoutError)
    plans = [FaultPlan().add("list_orders", action) for _ in range(2)]
    for plan in plans:
        broker = ChaosBroker(DeterministicBroker(), plan)
        assert [await outcome(broker.list_orders()) for _ in range(2)] == ["TimeoutError", []]
    assert [plan.faults_injected() for plan in plans] == [1, 1]


async def _fault_pattern(plan: FaultPlan, calls: int = 60) -> list[bool]:
    broker = ChaosBroker(DeterministicBroker(), plan)
    return [await outcome(broker.get_ticker(BTC)) == "TimeoutError" for _ in range(calls)]


async def test_seeded_random_faults_replay_exactly() -> None:
    action = fault_randomly(0.3, seed=7, raise_exc=TimeoutError)
    first = await _fault_pattern(FaultPlan().add("get_ticker", action))
    again = await _fault_pattern(FaultPlan().add("get_ticker", action))
    other = fault_randomly(0.3, seed=8, raise_exc=TimeoutError)
    different = await _fault_pattern(FaultPlan().add("get_ticker", other))
    assert first == again
    assert first != different
    assert 0 < sum(first) < len(first)


async def test_random_state_is_per_plan_so_interleaved_plans_replay_too() -> None:
    action = fault_randomly(0.5, seed=3, raise_exc=TimeoutError)
    alone = await _fault_pattern(FaultPlan().add("get_ticker", action), calls=20)
    brokers = [
        ChaosBroker(DeterministicBroker(), FaultPlan().add("get_ticker", action)) for _ in range(2)
    ]
    interleaved: list[list[bool]] = [[], []]
    for _ in range(20):
        for broker, pattern in zip(brokers, interleaved, strict=True):
            pattern.append(await outcome(broker.get_ticker(BTC)) == "TimeoutError")
    assert interleaved == [alone, alone]


async def test_the_call_log_records_every_call_and_whether_it_was_faulted() -> None:
    plan = (
        FaultPlan()
        .add("get_ticker", fault_sequence(None, TimeoutError("slow")))
        .add("list_orders", [])  # planned with no action: counted and logged only
    )
    broker = ChaosBroker(DeterministicBroker(), plan)
    await broker.get_ticker(BTC)
    with pytest.raises(TimeoutError):
        await broker.get_ticker(symbol=ETH)
    await broker.get_ticker(BTC)
    await broker.list_orders()
    await broker.list_positions()  # not planned: not the plan's to log
    assert plan.log == [
        CallRecord("get_ticker", 1, None, (BTC,)),
        CallRecord("get_ticker", 2, "raise TimeoutError('slow')", (), {"symbol": ETH}),
        CallRecord("get_ticker", 3, None, (BTC,)),
        CallRecord("list_orders", 1, None, ()),
    ]
    assert plan.methods == ("get_ticker", "list_orders")
    assert (plan.calls("get_ticker"), plan.calls("list_orders"), plan.calls("place_order")) == (
        3,
        1,
        0,
    )
    assert plan.faults_injected() == plan.faults_injected("get_ticker") == 1
    assert plan.faults_injected("list_orders") == plan.faults_injected("place_order") == 0


async def test_transform_calls_through_and_alters_the_real_answer() -> None:
    def empty_wallet(balances: list[Balance]) -> list[Balance]:
        return [replace(b, available=Decimal(0)) for b in balances]

    plan = FaultPlan().add("list_balances", fault_once(transform=empty_wallet))
    broker = ChaosBroker(DeterministicBroker(cash=Decimal(500)), plan)
    assert await broker.list_balances() == [Balance("USD", Decimal(0))]
    assert await broker.list_balances() == [Balance("USD", Decimal(500))]
    assert plan.log[0].fault == "transform empty_wallet"


async def test_return_value_answers_without_calling_through() -> None:
    canned = Order(
        "ord-canned", REQUEST.client_order_id, BTC, Side.BUY, Decimal("0.01"), OrderStatus.OPEN
    )
    plan = FaultPlan().add("place_order", fault_once(return_value=canned))
    inner = DeterministicBroker()
    broker = ChaosBroker(inner, plan)
    assert await broker.place_order(REQUEST) is canned
    assert inner.venue.orders == {}  # the venue never saw the order
    assert (await broker.place_order(REQUEST)).status is OrderStatus.FILLED


async def test_a_predicate_limits_the_action_to_the_calls_it_accepts() -> None:
    def eth_only(symbol: str) -> bool:
        return symbol == ETH

    plan = FaultPlan().add("get_ticker", fault_always(raise_exc=TimeoutError, predicate=eth_only))
    broker = ChaosBroker(DeterministicBroker(), plan)
    results = [await outcome(broker.get_ticker(s)) for s in (BTC, ETH, BTC, ETH)]
    assert [r if isinstance(r, str) else r.symbol for r in results] == [
        BTC,
        "TimeoutError",
        BTC,
        "TimeoutError",
    ]


async def test_times_caps_the_faults_and_earlier_actions_take_precedence() -> None:
    plan = FaultPlan().add(
        "list_orders",
        [
            FaultAction(after_calls=1, times=2, raise_exc=TimeoutError),
            fault_always(raise_exc=ConnectionResetError),
        ],
    )
    broker = ChaosBroker(DeterministicBroker(), plan)
    outcomes = [await outcome(broker.list_orders()) for _ in range(5)]
    assert outcomes == [
        "ConnectionResetError",  # the first action waits one call; the second applies
        "TimeoutError",
        "TimeoutError",
        "ConnectionResetError",  # the first is exhausted after two faults
        "ConnectionResetError",
    ]


async def test_fault_sequence_gives_one_outcome_per_call_then_lets_calls_through() -> None:
    canned = [Order("ord-x", "x", BTC, Side.BUY, Decimal(1), OrderStatus.OPEN)]
    plan = FaultPlan().add(
        "list_orders",
        fault_sequence(
            TimeoutError,
            None,
            fault_once(return_value=canned),
            BrokerError("orders", 502, "bad gateway"),
        ),
    )
    broker = ChaosBroker(DeterministicBroker(), plan)
    outcomes = [await outcome(broker.list_orders()) for _ in range(6)]
    assert outcomes == ["TimeoutError", [], canned, "BrokerError", [], []]


@pytest.mark.parametrize("container", [list, tuple])
async def test_fault_sequence_takes_one_list_as_the_original_did(
    container: Callable[[list[Any]], Any],
) -> None:
    # Found: the original's fault_sequence([a, b]) raised ValueError here.
    outcomes = container([TimeoutError, None, BrokerError("orders", 502, "bad gateway")])
    plan = FaultPlan().add("list_orders", fault_sequence(outcomes))
    broker = ChaosBroker(DeterministicBroker(), plan)
    assert [await outcome(broker.list_orders()) for _ in range(4)] == [
        "TimeoutError",
        [],
        "BrokerError",
        [],
    ]
    assert fault_sequence(outcomes) == fault_sequence(*outcomes)
    with pytest.raises(ValueError, match="outcome 1 must be an exception"):
        fault_sequence(TimeoutError, [TimeoutError])  # type: ignore[arg-type]


def test_fault_sequence_refuses_outcomes_that_cannot_apply_to_exactly_one_call() -> None:
    with pytest.raises(ValueError, match="outcome 1"):
        fault_sequence(None, fault_always(raise_exc=TimeoutError))
    with pytest.raises(ValueError, match="outcome 0"):
        fault_sequence(fault_once(raise_exc=TimeoutError, probability=0.5, seed=1))
    with pytest.raises(ValueError, match="outcome 0 must be an exception"):
        fault_sequence("boom")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"after_calls": -1, "raise_exc": TimeoutError}, "FaultAction.after_calls"),
        ({"after_calls": True, "raise_exc": TimeoutError}, "FaultAction.after_calls"),
        ({"times": -1, "raise_exc": TimeoutError}, "FaultAction.times"),
        ({"times": 0, "raise_exc": TimeoutError}, "FaultAction.times"),
        ({"delay_seconds": math.nan}, "FaultAction.delay_seconds"),
        ({"delay_seconds": -0.5}, "FaultAction.delay_seconds"),
        ({"delay_seconds": math.inf}, "FaultAction.delay_seconds"),
        ({"probability": 1.5, "raise_exc": TimeoutError}, "FaultAction.probability"),
        ({"probability": -0.1, "raise_exc": TimeoutError}, "FaultAction.probability"),
        ({"probability": math.nan, "raise_exc": TimeoutError}, "FaultAction.probability"),
        ({"seed": 1.5, "raise_exc": TimeoutError}, "FaultAction.seed"),
        ({"raise_exc": "boom"}, "FaultAction.raise_exc"),
        ({"raise_exc": int}, "FaultAction.raise_exc"),
        ({"transform": 3}, "FaultAction.transform"),
        ({"predicate": 3, "raise_exc": TimeoutError}, "FaultAction.predicate"),
        ({"raise_exc": TimeoutError, "return_value": None}, "got raise_exc, return_value"),
        ({"return_value": None, "transform": str}, "got return_value, transform"),
        ({"raise_exc": TimeoutError, "transform": str}, "got raise_exc, transform"),
        ({}, "needs an outcome"),
    ],
)
def test_fault_action_rejects_bad_fields_naming_them(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        FaultAction(**fields)


def test_helpers_plans_and_brokers_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sets after_calls, times"):
        fault_once(after_calls=2, times=3, raise_exc=TimeoutError)
    with pytest.raises(ValueError, match=r"FaultAction\.after_calls"):
        fault_after(-1, raise_exc=TimeoutError)
    with pytest.raises(ValueError, match=r"FaultAction\.probability"):
        fault_randomly(2.0, seed=1, raise_exc=TimeoutError)
    for method in ("_private", "", "not a name", 3):
        with pytest.raises(ValueError, match="public method name"):
            FaultPlan().add(method, fault_once(raise_exc=TimeoutError))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected FaultAction"):
        FaultPlan().add("list_orders", [TimeoutError])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="FaultPlan"):
        ChaosBroker(DeterministicBroker(), None)  # type: ignore[arg-type]
    for preset in (
        lambda: slippage_spike_scenario(Decimal("NaN")),
        lambda: stale_marks_scenario(""),
        lambda: order_drift_scenario(BTC, count=0),
    ):
        with pytest.raises(ValueError):
            preset()


async def test_answers_report_the_configured_usage_or_none() -> None:
    seen: list[Observation] = []
    broker = ChaosBroker(DeterministicBroker(), FaultPlan(), observe=seen.append, answer_usage=0.2)
    await broker.get_ticker(BTC)
    assert seen == [ApiCall("market", True, 200), RateLimitUsage(0.2)]
    seen.clear()
    quiet = ChaosBroker(DeterministicBroker(), FaultPlan(), observe=seen.append, answer_usage=None)
    await quiet.get_ticker(BTC)
    assert seen == [ApiCall("market", True, 200)]
    for bad in (1.5, math.nan, True):
        with pytest.raises(ValueError, match=r"answer_usage must be 0\.\.1 or None, got"):
            ChaosBroker(DeterministicBroker(), FaultPlan(), answer_usage=bad)


async def test_observe_reports_calls_the_way_ccxt_broker_does() -> None:
    seen: list[Observation] = []
    plan = FaultPlan().add(
        "list_orders",
        fault_sequence(
            BrokerError("orders", 503, "down"),
            BrokerError("orders", 429, "slow down"),
            TimeoutError,
            ValueError("a bug, not the venue"),
            None,
        ),
    )
    broker = ChaosBroker(DeterministicBroker(), plan, observe=seen.append)
    for _ in range(5):
        await outcome(broker.list_orders())
    await broker.get_ticker(BTC)  # a protocol method the plan does not name: reported too
    assert seen == [
        ApiCall("orders", False, 503),
        ApiCall("orders", False, 429),
        RateLimitUsage(1.0),
        ApiCall("orders", False, None),
        ApiCall("orders", True, 200),
        RateLimitUsage(0.0),  # an answer carries the venue's usage, as its headers would
        ApiCall("market", True, 200),
        RateLimitUsage(0.0),
    ]


async def test_real_venue_failures_are_reported_like_injected_ones() -> None:
    seen: list[Observation] = []
    inner = DeterministicBroker()
    broker = ChaosBroker(inner, FaultPlan(), observe=seen.append)
    inner.venue.faults.failing_reads = {"balances"}
    with pytest.raises(BrokerError):
        await broker.list_balances()
    assert seen == [ApiCall("accounts", False, 503)]


async def test_without_report_passthrough_only_injected_faults_are_reported() -> None:
    # For a wrapped CcxtBroker, which reports its own calls.
    seen: list[Observation] = []
    error = BrokerError("market", 500, "lookup failing")
    inner = DeterministicBroker()
    plan = FaultPlan().add("get_product", fault_once(raise_exc=error))
    broker = ChaosBroker(inner, plan, observe=seen.append, report_passthrough=False)
    assert await outcome(broker.get_product(BTC)) == "BrokerError"
    await broker.get_product(BTC)
    inner.venue.faults.failing_reads = {"balances"}
    assert await outcome(broker.list_balances()) == "BrokerError"
    assert seen == [ApiCall("market", False, 500)]


def test_every_attribute_of_the_wrapped_broker_is_reachable() -> None:
    inner = DeterministicBroker()
    broker = ChaosBroker(inner, FaultPlan().add("list_orders", []))
    assert broker.venue is inner.venue and broker.market is inner.market
    assert broker.wrapped is inner
    assert isinstance(broker, Broker)
    assert {"venue", "list_orders"} <= set(dir(broker))
    with pytest.raises(AttributeError):
        _ = broker.no_such_attribute


def test_broker_methods_are_the_broker_protocols() -> None:
    assert set(BROKER_METHODS) == set(CALLS)
    assert all(callable(getattr(Broker, m)) for m in BROKER_METHODS)


# ---------------------------------------------------------------------- presets trip their guards


class Always:
    """Proposes a small buy for every symbol, every cycle."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        return OrderIntent(symbol, Side.BUY, Decimal("0.01"))


class Idle:
    """Proposes nothing: the cycle only reads."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        return None


_GUARDS = {
    "api_health",
    "validation",
    "preview",
    "broker_outage",
    "reconciliation",
    "websocket",
    "mark_staleness",
    "slippage",
}


@dataclass
class Rig:
    layer: ReliabilityLayer
    runtime: Runtime
    loop: TradingLoop
    broker: DeterministicBroker
    chaos: ChaosBroker
    effects: list[Effect] = field(default_factory=list)

    def trips(self) -> set[tuple[str, str | None]]:
        """(guard, scope) of every guard trip so far."""
        return {
            (e.machine, e.scope)
            for e in self.effects
            if isinstance(e, Transitioned) and e.machine in _GUARDS and e.dest == "TRIPPED"
        }

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await self.loop.run_cycle()


@asynccontextmanager
async def guarded(plan: FaultPlan, *, strategy: Any = None, **knobs: Any) -> AsyncIterator[Rig]:
    """A running runtime and loop over the chaos broker, which reports to the runtime."""
    broker = DeterministicBroker(seed=1)
    layer = ReliabilityLayer(Settings(**knobs), time.monotonic, rng=random.Random(0))
    async with Runtime(layer, alert_sinks=()) as runtime:
        chaos = ChaosBroker(broker, plan, sleep_func=no_sleep, observe=runtime.observe)
        loop = TradingLoop(
            runtime, chaos, SYMBOLS, strategy=strategy or Always(), rng=random.Random(0)
        )
        rig = Rig(layer, runtime, loop, broker, chaos)
        runtime.on_effect(rig.effects.append)
        yield rig


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def test_api_outage_opens_the_breakers_and_trips_api_health() -> None:
    async with guarded(api_outage_scenario(), circuit_failure_threshold=2) as rig:
        await rig.cycles(2)
        await wait_until(lambda: ("api_health", None) in rig.trips())
        assert rig.trips() == {("api_health", None)}
        for category in ("accounts", "orders", "market"):
            assert rig.layer.breaker_state(category) is BreakerState.OPEN
        assert any(
            isinstance(e, Transitioned) and e.machine == "breaker:market" and e.dest == "OPEN"
            for e in rig.effects
        )
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY


async def test_rate_limit_trips_api_health_on_full_usage() -> None:
    async with guarded(rate_limit_scenario()) as rig:
        await rig.cycles(1)
        await wait_until(lambda: ("api_health", None) in rig.trips())
        assert rig.trips() == {("api_health", None)}
        api_health = rig.layer.status()["global"]["guards"]["api_health"]
        assert api_health["rate_limit_usage"] == 1.0


async def test_slippage_spike_trips_the_slippage_guard_per_symbol_and_spares_fills() -> None:
    async with guarded(slippage_spike_scenario(), slippage_failure_pause_after=2) as rig:
        await rig.cycles(2)
        await wait_until(lambda: {("slippage", BTC), ("slippage", ETH)} <= rig.trips())
        assert rig.trips() == {("slippage", BTC), ("slippage", ETH)}
        assert rig.broker.venue.orders == {}  # every order was stopped at its preview
        # Only previews lie: a fill is at the real touch.
        order = await rig.chaos.place_order(REQUEST)
        assert order.fill_price == rig.broker.venue.quote(BTC).ask


async def test_stale_marks_trip_mark_staleness_for_that_symbol_only() -> None:
    plan = stale_marks_scenario(BTC)
    async with guarded(plan, strategy=Idle(), mark_staleness_threshold_seconds=0.3) as rig:
        with anyio.fail_after(5):
            while ("mark_staleness", BTC) not in rig.trips():
                rig.broker.market.step()  # every price moves, BTC's included
                await rig.loop.run_cycle()
                await anyio.sleep(0.02)
        assert rig.trips() == {("mark_staleness", BTC)}
        assert rig.layer.guard("mark_staleness", ETH).state is GuardState.HEALTHY
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode(ETH) is TradingMode.ALLOW
    assert plan.faults_injected("get_best_bid_ask") > 1


async def test_preview_failures_disable_preview() -> None:
    async with guarded(preview_failure_scenario(), preview_failure_disable_after=2) as rig:
        await rig.cycles(1)
        await wait_until(lambda: ("preview", None) in rig.trips())
        assert rig.trips() == {("preview", None)}
        assert not rig.layer.preview_enabled
        assert any(isinstance(e, DisablePreview) for e in rig.effects)


async def test_broker_read_failures_trip_broker_outage() -> None:
    # Timeouts are API faults too: a high call minimum keeps the error rate from also
    # tripping api_health, so only the read guard is in play.
    plan = broker_read_failure_scenario()
    async with guarded(plan, broker_outage_max_failures=2, api_error_rate_min_calls=100) as rig:
        await rig.cycles(2)
        await wait_until(lambda: ("broker_outage", None) in rig.trips())
        assert rig.trips() == {("broker_outage", None)}


async def test_validation_failures_trip_validation() -> None:
    async with guarded(validation_failure_scenario(), validation_failure_escalate_after=2) as rig:
        await rig.cycles(1)
        await wait_until(lambda: ("validation", None) in rig.trips())
        assert rig.trips() == {("validation", None)}


async def test_order_drift_trips_reconciliation_and_asks_to_cancel_the_unknown_orders() -> None:
    plan = order_drift_scenario(BTC)
    async with guarded(plan, order_reconciliation_drift_max_failures=2) as rig:
        await rig.cycles(2)
        await wait_until(lambda: ("reconciliation", None) in rig.trips())
        assert rig.trips() == {("reconciliation", None)}
        await wait_until(lambda: any(isinstance(e, CancelOrders) for e in rig.effects))
        [cancel] = [e for e in rig.effects if isinstance(e, CancelOrders)]
        assert cancel.order_ids == ("chaos-drift-0001", "chaos-drift-0002")


# ---------------------------------------------------------------------- websocket helpers

FAST_FEED = {
    "ws_reconnect_backoff_base": 0.01,
    "ws_reconnect_backoff_max": 0.04,
    "ws_reconnect_max_attempts": 3,
    "ws_reconnect_reset_seconds": 5.0,
    "ws_message_stale_seconds": 0.3,
    "ws_reconnect_pause_seconds": 0.3,
}


@dataclass
class LiveFeed:
    layer: ReliabilityLayer
    server: ExchangeFeedServer
    client: FeedClient
    effects: list[Effect] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        feeds: dict[str, Any] = self.layer.status()["feeds"]
        return dict(feeds["market"])


@asynccontextmanager
async def live_feed() -> AsyncIterator[LiveFeed]:
    """A connected feed: the exchange's feed server, a runtime and a client on 127.0.0.1."""
    layer = ReliabilityLayer(Settings(**FAST_FEED), time.monotonic, rng=random.Random(1))
    market = Market(SYMBOLS, random.Random(2))
    async with (
        ExchangeFeedServer(market, tick_interval=0.02, heartbeat_interval=0.05) as server,
        Runtime(layer, alert_sinks=()) as runtime,
    ):
        client = FeedClient(runtime, server.url, SYMBOLS, close_timeout=0.5)
        feed = LiveFeed(layer, server, client)
        runtime.on_effect(feed.effects.append)
        await runtime.start(client.run)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        yield feed


async def test_websocket_drop_disconnects_clients_which_reconnect() -> None:
    async with live_feed() as feed:
        await websocket_drop(feed.server, 1011)
        await wait_until(lambda: feed.server.connections_accepted == 2)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        assert "close 1011" in feed.status()["last_reason"]


async def test_websocket_refuse_keeps_clients_out_until_accepted_again() -> None:
    async with live_feed() as feed:
        websocket_refuse(feed.server, 503)
        await websocket_drop(feed.server)
        await wait_until(lambda: feed.status()["state"] == "DEGRADED")
        assert feed.layer.guard("websocket").state is GuardState.TRIPPED
        assert "HTTP 503" in feed.status()["last_reason"]
        websocket_accept(feed.server)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")


async def test_websocket_silence_gets_the_stream_closed_and_resume_brings_it_back() -> None:
    async with live_feed() as feed:
        websocket_silence(feed.server)
        await wait_until(lambda: any(isinstance(e, CloseConnection) for e in feed.effects))
        websocket_resume(feed.server)
        await wait_until(lambda: feed.server.connections_accepted >= 2)
        await wait_until(lambda: feed.status()["state"] == "CONNECTED")
        before = feed.status()["messages"]
        await wait_until(lambda: feed.status()["messages"] > before)


async def test_websocket_restore_undoes_refusal_and_silence_and_helpers_check_arguments() -> None:
    server = ExchangeFeedServer(Market(SYMBOLS, random.Random(0)))
    websocket_refuse(server, 429)
    websocket_silence(server)
    assert (server.refuse_status, server.silent) == (429, True)
    websocket_restore(server)
    assert (server.refuse_status, server.silent) == (None, False)
    with pytest.raises(ValueError, match=r"400\.\.599"):
        websocket_refuse(server, 200)
    with pytest.raises(ValueError, match="close code"):
        await websocket_drop(server, 1005)  # "no status": never sent on the wire
