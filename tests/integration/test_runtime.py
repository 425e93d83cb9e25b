"""The Runtime drives a layer on real time: timers, effects, sinks, subscribers, shutdown."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import anyio
import pytest

from tradeguard import ReliabilityLayer, Settings, TradingMode
from tradeguard.fsm import Side
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Alert, Effect, ModeChanged, Transitioned
from tradeguard.io import Runtime
from tradeguard.io.broker import OrderRequest, OrderStatus
from tradeguard.testing import DeterministicBroker

pytestmark = pytest.mark.anyio


def fast_layer(**knobs: object) -> ReliabilityLayer:
    settings = Settings(**{"slippage_pause_seconds": 0.2, **knobs})  # type: ignore[arg-type]
    return ReliabilityLayer(settings, time.monotonic, rng=random.Random(0))


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def test_a_cooldown_ends_on_time_without_anyone_asking() -> None:
    layer = fast_layer()
    async with Runtime(layer) as runtime, runtime.subscribe() as records:
        runtime.observe(ev.MarkUpdate("BTC-USD"))
        started = time.monotonic()
        for _ in range(3):
            runtime.observe(ev.SlippageCheck("BTC-USD", False))
        modes = []
        with anyio.fail_after(5):
            async for record in records:
                if isinstance(record, ModeChanged):
                    modes.append(record.dest)
                    if modes[-2:] == [TradingMode.REDUCE_ONLY, TradingMode.ALLOW]:
                        break
        elapsed = time.monotonic() - started
    assert modes == [TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.ALLOW]
    assert 0.2 <= elapsed < 2.0  # the cooldown, not a poll or a query, ended it


async def test_an_earlier_deadline_wakes_the_sleeping_timer() -> None:
    layer = fast_layer()
    async with Runtime(layer) as runtime:
        assert layer.next_deadline() is None  # the timer sleeps with nothing to wait for
        await runtime.halt("maintenance", symbol="BTC-USD", ttl=0.1)
        await wait_until(lambda: layer.status()["symbols"]["BTC-USD"]["halt"]["state"] == "RUNNING")


async def test_alerts_reach_every_sink_sync_and_async_in_order() -> None:
    seen_sync: list[str] = []
    seen_async: list[str] = []

    async def slow_sink(alert: Alert) -> None:
        await anyio.sleep(0.01)
        seen_async.append(alert.title)

    layer = fast_layer()
    sinks = (lambda alert: seen_sync.append(alert.title), slow_sink)
    async with Runtime(layer, alert_sinks=sinks) as runtime:
        for _ in range(5):
            runtime.observe(ev.ValidationCheck(False))
        await runtime.halt("operator test")
        await wait_until(lambda: len(seen_async) == 2)
    assert (
        seen_sync
        == seen_async
        == ["validation infrastructure failing", "operator halt: all symbols"]
    )


async def test_api_health_trip_cancels_the_bots_open_orders_through_the_broker() -> None:
    broker = DeterministicBroker(seed=3)
    resting = await broker.place_order(
        OrderRequest("BTC-USD", Side.BUY, Decimal("0.01"), "bot-rest-1", Decimal("1"))
    )
    foreign = await broker.place_order(
        OrderRequest("BTC-USD", Side.BUY, Decimal("0.01"), "manual-1", Decimal("1"))
    )
    layer = fast_layer(circuit_failure_threshold=2)
    async with Runtime(layer, broker=broker) as runtime:
        for _ in range(2):
            runtime.observe(ev.ApiCall("orders", False, 503))
        await wait_until(
            lambda: broker.venue.orders[resting.order_id].status is OrderStatus.CANCELLED
        )
    assert layer.guard("api_health").state == "TRIPPED"
    assert broker.venue.orders[foreign.order_id].status is OrderStatus.OPEN  # not the bot's


async def test_reconciliation_cancels_exactly_the_unknown_orders() -> None:
    broker = DeterministicBroker(seed=4)
    ghosts = broker.venue.inject_unknown_orders("ETH-USD", 2)
    layer = fast_layer()
    async with Runtime(layer, broker=broker) as runtime:
        for _ in range(3):
            runtime.observe(ev.ReconciliationAudit(tuple(ghosts)))
        await wait_until(
            lambda: all(broker.venue.orders[g].status is OrderStatus.CANCELLED for g in ghosts)
        )


async def test_a_failed_cancel_alerts_instead_of_crashing() -> None:
    broker = DeterministicBroker(seed=5)
    alerts: list[Alert] = []
    layer = fast_layer()
    async with Runtime(layer, broker=broker, alert_sinks=(alerts.append,)) as runtime:
        runtime.observe(ev.ReconciliationAudit(("ord-missing",)))
        for _ in range(2):
            runtime.observe(ev.ReconciliationAudit(("ord-missing",)))
        await wait_until(lambda: any(a.title == "order reconciliation drift" for a in alerts))
    # An id the venue does not know is simply not cancelled: no crash, the runtime closed cleanly.
    assert layer.guard("reconciliation").state == "TRIPPED"


async def test_subscribers_get_every_record_in_order_and_end_with_the_runtime() -> None:
    layer = fast_layer()
    got: list[Transitioned | ModeChanged] = []
    effects: list[Effect] = []
    async with Runtime(layer) as runtime:
        runtime.on_effect(effects.append)
        records = runtime.subscribe()

        async def drain() -> None:
            async with records:
                async for record in records:
                    got.append(record)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            runtime.observe(ev.MarkUpdate("BTC-USD"))
            for _ in range(3):
                runtime.observe(ev.BrokerRead("positions", False))
            await wait_until(lambda: len(got) >= 4)
            tg.cancel_scope.cancel()
    expected = [e for e in effects if isinstance(e, Transitioned | ModeChanged)]
    assert got == expected[: len(got)]


async def test_a_subscriber_that_falls_behind_is_cut_off_not_buffered_forever() -> None:
    layer = fast_layer()
    async with Runtime(layer) as runtime:
        records = runtime.subscribe(max_buffer=2)
        runtime.observe(ev.MarkUpdate("BTC-USD"))
        for _ in range(3):
            runtime.observe(ev.BrokerRead("positions", False))
        await anyio.wait_all_tasks_blocked()  # the executor has run every effect
        received = []
        async with records:
            async for record in records:
                received.append(record)
    assert len(received) == 2  # the buffer, then the end of the stream


async def test_a_crashing_callback_leaves_async_with_as_an_exception_group() -> None:
    def explode(effect: Effect) -> None:
        raise RuntimeError("callback bug")

    layer = fast_layer()
    with pytest.raises(ExceptionGroup) as caught:
        async with Runtime(layer) as runtime:
            runtime.on_effect(explode)
            await runtime.halt("trigger an effect")
            await anyio.sleep(1)
    assert caught.group_contains(RuntimeError, match="callback bug")


async def test_observing_after_close_is_refused_loudly() -> None:
    layer = fast_layer()
    async with Runtime(layer) as runtime:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await runtime.halt("too late")


async def test_operator_calls_are_awaited_and_return_once_their_effects_ran() -> None:
    ran: list[Effect] = []

    async def slow_callback(effect: Effect) -> None:
        await anyio.sleep(0.01)  # the executor is slower than the caller
        ran.append(effect)

    layer = fast_layer()
    async with Runtime(layer) as runtime:
        runtime.on_effect(slow_callback)
        halted = await runtime.halt("maintenance", symbol="BTC-USD")
        assert halted and ran == halted  # every effect ran before the call returned
        resumed = await runtime.resume("BTC-USD")
        assert ran == [*halted, *resumed]
