"""The engine under chaos, one test per decision-matrix row, in virtual time.

The equivalent of the seed's ``test_strategy_engine_chaos.py``: the reference `TradingLoop`
trades through a `ChaosBroker` over `DeterministicBroker`, driven by a real `Runtime` whose
layer reads a `ManualClock`. The knobs are the seed's defaults, so every cooldown is its real
length (300 s, 120 s, ...) and passes in no real time. Each test asserts which guard fired,
the mode that followed, what was cancelled, and the recovery exactly when the cooldown ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import pytest
from rigs import EngineRig, engine_rig

from tradeguard import GuardState, Settings, TradingMode
from tradeguard.fsm.effects import CancelOpenOrders, CancelOrders
from tradeguard.io import FeedClient, Runtime
from tradeguard.io.exchange import ExchangeFeedServer
from tradeguard.testing import (
    ChaosBroker,
    DeterministicBroker,
    FaultPlan,
    ManualClock,
    advance,
    api_outage_scenario,
    broker_read_failure_scenario,
    order_drift_scenario,
    preview_failure_scenario,
    rate_limit_scenario,
    slippage_spike_scenario,
    stale_marks_scenario,
    validation_failure_scenario,
    websocket_drop,
    websocket_refuse,
    websocket_restore,
)

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
CYCLE = 1.0  # virtual seconds between trading cycles


@dataclass(kw_only=True)
class Rig(EngineRig):
    clock: ManualClock
    broker: DeterministicBroker
    plan: FaultPlan

    async def cycle(self) -> None:
        """One trading cycle, then one virtual second; the venue's prices move."""
        self.broker.market.step()
        await self.loop.run_cycle()
        await advance(self.runtime, self.clock, CYCLE)

    async def cycle_until(self, done: Callable[[], bool], limit: int = 400) -> float:
        """Cycle until ``done()``; returns the virtual time it took. Fails after ``limit``."""
        start = self.clock()
        for _ in range(limit):
            if done():
                return self.clock() - start
            await self.cycle()
        raise AssertionError(f"not done after {limit} cycles ({self.clock() - start:g} s)")

    def cooldown(self, machine: str, scope: str | None = None) -> float:
        """Virtual seconds between the last entry into COOLDOWN and the expiry after it."""
        moves = self.moves(machine, scope)
        entered = max(at for dest, _, at in moves if dest == "COOLDOWN")
        expired = min(at for dest, trig, at in moves if trig == "expire" and at >= entered)
        return expired - entered


@asynccontextmanager
async def engine(
    plan: FaultPlan, *, answer_usage: float | None = 0.05, **knobs: Any
) -> AsyncIterator[Rig]:
    broker = DeterministicBroker((BTC, ETH), seed=1)

    def chaos_broker(runtime: Runtime) -> ChaosBroker:
        # The runtime's cancels meet the same chaos as the loop.
        return ChaosBroker(
            broker,
            plan,
            observe=runtime.observe,
            sleep_func=lambda _: None,
            answer_usage=answer_usage,
        )

    # The fault starts once the engine trades normally: hold the plan's actions back (its
    # methods stay planned, so the chaos broker wraps them), warm up, then put them back.
    held = {method: plan.actions(method) for method in plan.methods}
    plan.clear()
    async with engine_rig(
        partial(Rig, broker=broker, plan=plan),
        Settings(**knobs),
        chaos_broker,
        (BTC, ETH),
        clock=ManualClock(),
    ) as rig:
        await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)
        for method, actions in held.items():
            plan.add(method, actions)
        yield rig


async def test_api_outage_trips_api_health_cancels_and_recovers_after_300s() -> None:
    async with engine(api_outage_scenario()) as rig:
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        assert rig.layer.status()["global"]["guards"]["api_health"]["error_rate"] >= 0.2
        # The breakers open too once their categories have failed often enough in a row.
        await rig.cycle_until(lambda: rig.layer.breaker_state("accounts") == "OPEN")
        assert "accounts" in rig.layer.status()["global"]["guards"]["api_health"]["open_breakers"]
        assert sum(isinstance(e, CancelOpenOrders) for e in rig.effects) == 1
        assert any(a.title == "cancel failed" for a in rig.alerts)  # the outage ate the cancel
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("api_health") == 300.0


async def test_rate_limit_burst_trips_api_health_on_usage() -> None:
    async with engine(rate_limit_scenario()) as rig:
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        status = rig.layer.status()["global"]["guards"]["api_health"]
        assert status["rate_limit_usage"] == 1.0
        rig.plan.clear()
        # The venue answers again: each answer reports a low usage, which replaces the burst's.
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("api_health") == 300.0


async def test_a_rate_limit_reading_ages_out_when_the_venue_goes_quiet() -> None:
    # Found: after a 429 burst api_health stayed TRIPPED for good with usage 1.0. Here the
    # answers carry no rate-limit headers at all: the burst's reading must age out by itself.
    async with engine(rate_limit_scenario(), answer_usage=None) as rig:
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        rig.plan.clear()
        took = await rig.cycle_until(lambda: rig.state("api_health") is GuardState.COOLDOWN)
        assert took <= 61.0  # RISK_API_ERROR_RATE_WINDOW_SECONDS (60) after the last 429
        assert rig.layer.status()["global"]["guards"]["api_health"]["rate_limit_usage"] == 0.0
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("api_health") == 300.0


async def test_stale_marks_restrict_that_symbol_only_then_recover_after_120s() -> None:
    plan = stale_marks_scenario(BTC)
    async with engine(plan) as rig:
        took = await rig.cycle_until(lambda: rig.state("mark_staleness", BTC) is GuardState.TRIPPED)
        assert took <= 31.0  # the 30 s threshold, found by an eager timer
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode(ETH) is TradingMode.ALLOW
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)
        assert rig.cooldown("mark_staleness", BTC) == 120.0


async def test_slippage_spike_restricts_the_symbol_for_60s() -> None:
    plan = slippage_spike_scenario()
    async with engine(plan) as rig:
        await rig.cycle_until(lambda: rig.state("slippage", BTC) is not GuardState.HEALTHY)
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode() is TradingMode.ALLOW
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)
        assert rig.cooldown("slippage", BTC) == 60.0


async def test_validation_failures_restrict_globally_for_180s() -> None:
    plan = validation_failure_scenario()
    async with engine(plan, api_error_rate_threshold=0.99) as rig:
        await rig.cycle_until(lambda: rig.state("validation") is not GuardState.HEALTHY)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        assert rig.state("api_health") is GuardState.HEALTHY  # this row's own guard fired
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("validation") == 180.0


async def test_preview_failures_disable_preview_and_trading_goes_on() -> None:
    plan = preview_failure_scenario()
    async with engine(plan, api_error_rate_threshold=0.99) as rig:
        await rig.cycle_until(lambda: not rig.layer.preview_enabled)
        assert rig.state("preview") is GuardState.TRIPPED
        assert rig.state("validation") is GuardState.HEALTHY  # never a validation failure
        assert rig.layer.mode() is TradingMode.ALLOW
        rig.plan.clear()
        await rig.cycle()
        assert not rig.layer.preview_enabled  # disabled for the session
        await rig.runtime.reset("preview")
        assert rig.layer.preview_enabled


async def test_broker_read_failures_restrict_until_a_read_works_then_120s() -> None:
    plan = broker_read_failure_scenario()
    async with engine(plan, api_error_rate_min_calls=100) as rig:
        await rig.cycle_until(lambda: rig.state("broker_outage") is GuardState.TRIPPED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        placed = len(rig.broker.venue.orders)
        await rig.cycle()
        assert len(rig.broker.venue.orders) == placed  # no opening order while restricted
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("broker_outage") == 120.0


async def test_order_drift_cancels_the_unknown_orders_and_recovers_after_300s() -> None:
    plan = order_drift_scenario(ETH, count=2)
    async with engine(plan) as rig:
        await rig.cycle_until(lambda: rig.state("reconciliation") is GuardState.TRIPPED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        cancels = [e for e in rig.effects if isinstance(e, CancelOrders)]
        assert [c.order_ids for c in cancels] == [("chaos-drift-0001", "chaos-drift-0002")]
        rig.plan.clear()
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.cooldown("reconciliation") == 300.0


async def test_websocket_max_reconnects_restrict_globally_until_connected_then_300s() -> None:
    async with (
        # Virtual seconds race real heartbeats here: a generous silence limit keeps a loaded
        # machine from declaring the live stream dead while virtual time jumps.
        engine(FaultPlan(), ws_message_stale_seconds=60.0) as rig,
        ExchangeFeedServer(rig.broker.market, tick_interval=0.02) as server,
    ):
        feed = FeedClient(rig.runtime, server.url, [BTC, ETH], close_timeout=0.2)
        await rig.runtime.start(feed.run)
        with anyio.fail_after(5):
            while rig.layer.feed_state("market") != "CONNECTED":
                await anyio.sleep(0.01)
        websocket_refuse(server)
        await websocket_drop(server)
        with anyio.fail_after(10):
            while rig.layer.feed_state("market") != "DEGRADED":
                await advance(rig.runtime, rig.clock, 5.0)  # backoff passes virtually
                await anyio.sleep(0.02)  # the real connection attempt is refused
        assert rig.state("websocket") is GuardState.TRIPPED
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        reconnects = [m for m in rig.moves("feed:market") if m[1] == "retry"]
        assert len(reconnects) == 10  # GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS
        websocket_restore(server)
        with anyio.fail_after(10):
            while rig.layer.feed_state("market") != "CONNECTED":
                await advance(rig.runtime, rig.clock, 5.0)
                await anyio.sleep(0.02)
        # Virtual time passes in 5 s steps with real heartbeats in between, so the
        # connected feed is never mistaken for a silent one while its cooldown runs.
        for _ in range(61):
            await advance(rig.runtime, rig.clock, 5.0)
            await anyio.sleep(0.06)
        assert rig.layer.mode() is TradingMode.ALLOW
        # Reconnect times are jittered fractions of a second: compare to the float's rounding.
        assert rig.cooldown("websocket") == pytest.approx(300.0, abs=1e-9)
