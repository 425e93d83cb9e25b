"""Every decision-matrix row end to end over real sockets on 127.0.0.1 (issue 4).

The embedded exchange (REST and websocket) is broken through its own controls; the reference
loop trades through ccxt's own ``coinbase`` client wrapped by the `Engine` in a `CcxtBroker`
(authentication on); the `Runtime` runs the layer's effects, cancels included.
Each test asserts which guard fired, the mode that followed, what was cancelled at the
exchange, and the recovery after a short configured cooldown.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import ccxt.async_support as ccxt
import pytest
from rigs import EngineRig, engine_rig

from tradeguard import GuardState, Settings, Side, TradingMode
from tradeguard.io.broker import Broker, OrderRequest, OrderStatus
from tradeguard.io.exchange import ExchangeFeedServer, ExchangeRestServer, Market, Venue

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
SHORT = {
    "api_error_rate_window_seconds": 1.0,
    "api_error_rate_min_calls": 3,
    "api_health_cooldown_seconds": 0.3,
    "circuit_failure_threshold": 3,
    "circuit_recovery_timeout": 0.2,
    "mark_staleness_threshold_seconds": 0.3,
    "mark_staleness_cooldown_seconds": 0.2,
    "slippage_pause_seconds": 0.3,
    "validation_failure_escalate_after": 3,
    "validation_failure_cooldown_seconds": 0.3,
    "preview_failure_disable_after": 3,
    "broker_outage_cooldown_seconds": 0.3,
    "ws_reconnect_backoff_base": 0.01,
    "ws_reconnect_backoff_max": 0.04,
    "ws_reconnect_max_attempts": 2,
    "ws_reconnect_pause_seconds": 0.3,
    "ws_message_stale_seconds": 2.0,
}


@dataclass(kw_only=True)
class Rig(EngineRig):
    venue: Venue
    rest: ExchangeRestServer
    feed: ExchangeFeedServer

    @property
    def broker(self) -> Broker:
        return self.engine.broker

    def orders_at_venue(self, symbol: str) -> int:
        return sum(1 for o in self.venue.orders.values() if o.symbol == symbol)

    async def rest_order(self, symbol: str) -> str:
        """A bot-owned limit order resting far below the market."""
        far = (self.venue.market.prices[symbol] / 2).quantize(Decimal("0.01"))
        request = OrderRequest(symbol, Side.BUY, Decimal("0.01"), f"bot-rest-{symbol}", far)
        order = await self.broker.place_order(request)
        assert order.status is OrderStatus.OPEN
        return order.order_id


@asynccontextmanager
async def exchange(**knobs: Any) -> AsyncIterator[Rig]:
    settings = Settings(**{**SHORT, **knobs})
    market = Market([BTC, ETH], random.Random(1))
    venue = Venue(market, random.Random(2))
    async with (
        ExchangeRestServer(venue, rng=random.Random(3)) as rest,
        ExchangeFeedServer(market, tick_interval=0.02, heartbeat_interval=0.05) as feed_server,
    ):
        client = ccxt.coinbase(
            {
                "apiKey": rest.credentials.api_key,
                "secret": rest.credentials.api_secret,
                "timeout": 500,  # ms
                "enableRateLimit": False,
            }
        )
        client.urls["api"] = {"rest": rest.url}
        try:
            async with engine_rig(
                partial(Rig, venue=venue, rest=rest, feed=feed_server),
                settings,
                client,
                [BTC, ETH],
                feed_url=feed_server.url,
                feed_options={"close_timeout": 0.2},
            ) as rig:
                await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)
                yield rig
        finally:
            await client.close()


async def test_api_error_storm_alerts_a_failed_cancel_and_retries_it_when_the_api_answers() -> None:
    async with exchange() as rig:
        resting = await rig.rest_order(ETH)
        rig.rest.error_storm(1.0, 503)
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        # The cancel itself met the storm: it is not lost silently, the operator is told
        # which orders may still be open, and it is sent again once the API answers.
        await rig.cycle_until(lambda: any(a.title == "cancel failed" for a in rig.alerts))
        assert rig.venue.orders[resting].status is OrderStatus.OPEN
        rig.rest.error_storm(0.0)
        await rig.cycle_until(lambda: rig.venue.orders[resting].status is OrderStatus.CANCELLED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY  # cancelled while still restricted
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
        assert rig.state("api_health") is GuardState.HEALTHY


async def test_api_health_trip_cancels_open_bot_orders_at_the_exchange() -> None:
    async with exchange() as rig:
        resting = await rig.rest_order(ETH)
        rig.rest.set_usage(0.95)  # answers succeed, but the rate limit is nearly used up
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        await rig.cycle_until(lambda: rig.venue.orders[resting].status is OrderStatus.CANCELLED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        rig.rest.set_usage(0.1)
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)


async def test_a_429_burst_trips_api_health_through_rate_limit_usage() -> None:
    async with exchange() as rig:
        rig.rest.rate_limited(True)
        await rig.cycle_until(lambda: rig.state("api_health") is GuardState.TRIPPED)
        assert rig.layer.status()["global"]["guards"]["api_health"]["rate_limit_usage"] == 1.0
        rig.rest.rate_limited(False)
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)


async def test_frozen_marks_restrict_only_that_symbol_until_fresh_again() -> None:
    async with exchange() as rig:
        rig.venue.market.freeze(BTC)
        await rig.cycle_until(lambda: rig.state("mark_staleness", BTC) is GuardState.TRIPPED)
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode(ETH) is TradingMode.ALLOW
        before = rig.orders_at_venue(BTC)
        await rig.loop.run_cycle()
        assert rig.orders_at_venue(BTC) == before  # the opening BUY was refused
        rig.venue.market.freeze(BTC, False)
        await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)


async def test_a_slippage_spike_restricts_the_symbols_it_hit() -> None:
    async with exchange() as rig:
        rig.venue.faults.slippage = Decimal("0.02")
        await rig.cycle_until(lambda: rig.state("slippage", BTC) is not GuardState.HEALTHY)
        assert rig.layer.mode(BTC) is TradingMode.REDUCE_ONLY
        assert rig.layer.mode() is TradingMode.ALLOW  # a symbol's fault, not a global one
        rig.venue.faults.slippage = Decimal(0)
        await rig.cycle_until(lambda: rig.layer.mode(BTC) is TradingMode.ALLOW)


async def test_failing_validation_infrastructure_restricts_globally() -> None:
    async with exchange(circuit_failure_threshold=20) as rig:
        rig.venue.faults.failing_products = True
        await rig.cycle_until(lambda: rig.state("validation") is not GuardState.HEALTHY)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        rig.venue.faults.failing_products = False
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)


async def test_preview_failures_disable_preview_without_restricting_trading() -> None:
    async with exchange(circuit_failure_threshold=20, api_error_rate_threshold=0.9) as rig:
        rig.venue.faults.failing_previews = True
        await rig.cycle_until(lambda: not rig.layer.preview_enabled)
        assert rig.state("preview") is GuardState.TRIPPED
        assert rig.state("validation") is GuardState.HEALTHY  # never counted as validation
        rig.venue.faults.failing_previews = False
        placed = rig.orders_at_venue(BTC)
        await rig.cycle_until(lambda: rig.orders_at_venue(BTC) > placed)  # trades on unpreviewed


async def test_failing_position_reads_stop_opening_orders() -> None:
    async with exchange(circuit_failure_threshold=20) as rig:
        # A spot venue's positions are its balances (CcxtBroker derives them from the base
        # currencies' accounts): the failing read is the accounts read.
        rig.venue.faults.failing_reads = {"balances"}
        await rig.cycle_until(lambda: rig.state("broker_outage") is GuardState.TRIPPED)
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        placed = rig.orders_at_venue(BTC), rig.orders_at_venue(ETH)
        for _ in range(3):
            await rig.loop.run_cycle()
        assert (rig.orders_at_venue(BTC), rig.orders_at_venue(ETH)) == placed
        rig.venue.faults.failing_reads = set()
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)


async def test_order_drift_cancels_exactly_the_unknown_orders() -> None:
    async with exchange() as rig:
        open_before = {o.order_id for o in rig.venue.list_orders()}
        ghosts = rig.venue.inject_unknown_orders(ETH, 2)
        await rig.cycle_until(lambda: rig.state("reconciliation") is GuardState.TRIPPED)
        mode_at_trip = rig.layer.mode()
        await rig.cycle_until(
            lambda: all(rig.venue.orders[g].status is OrderStatus.CANCELLED for g in ghosts)
        )
        assert mode_at_trip is TradingMode.REDUCE_ONLY
        cancelled = {
            o.order_id for o in rig.venue.orders.values() if o.status is OrderStatus.CANCELLED
        }
        assert cancelled == set(ghosts)  # exactly the unknown ones
        assert open_before == set()  # the loop's own market orders had all filled
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)


async def test_websocket_max_reconnects_restrict_globally_until_reconnected() -> None:
    async with exchange() as rig:
        rig.feed.refuse_handshakes(503)
        await rig.feed.drop_all(1011)
        await rig.cycle_until(lambda: rig.layer.feed_state("market") == "DEGRADED")
        assert rig.state("websocket") is GuardState.TRIPPED
        assert rig.layer.mode() is TradingMode.REDUCE_ONLY
        rig.feed.refuse_handshakes(None)
        await rig.cycle_until(lambda: rig.layer.feed_state("market") == "CONNECTED")
        await rig.cycle_until(lambda: rig.layer.mode() is TradingMode.ALLOW)
