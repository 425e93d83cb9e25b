"""`CcxtBroker` over ccxt's own ``coinbase`` class against the embedded simulator (DESIGN §5).

Real sockets on 127.0.0.1; ccxt signs every private request with the simulator's generated
ES256 key. Each HTTP request is one observation with its own category, status, latency and
rate-limit headers; the simulator's request counter is the referee.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import ccxt.async_support as ccxt
import pytest
from seen import Seen

from tradeguard import GuardState, ReliabilityLayer, Settings, Side
from tradeguard.fsm import BreakerState
from tradeguard.fsm.effects import Alert, Effect
from tradeguard.fsm.events import ApiCall, Observation, RateLimitUsage
from tradeguard.io import CcxtBroker, CircuitOpen, Runtime
from tradeguard.io.broker import Broker, BrokerError, OrderRequest, OrderStatus
from tradeguard.io.ccxt_broker import request_category
from tradeguard.io.exchange import ExchangeRestServer, Market, Venue
from tradeguard.io.exchange.auth import ApiCredentials
from tradeguard.testing.chaos import ChaosBroker, FaultPlan, fault_always

pytestmark = pytest.mark.anyio

SYMBOLS = ["BTC-USD", "ETH-USD"]


@dataclass
class Setup:
    server: ExchangeRestServer
    venue: Venue
    seen: Seen
    exchange: Any
    broker: CcxtBroker
    sunk: list[Alert]

    def requests(self) -> int:
        return sum(self.server.request_counts.values())


@asynccontextmanager
async def setup(
    *, secret: str | None = None, retries: bool | None = None, **knobs: Any
) -> AsyncIterator[Setup]:
    settings = Settings(**{"circuit_failure_threshold": 3, **knobs})
    layer = ReliabilityLayer(settings, time.monotonic, rng=random.Random(0))
    venue = Venue(Market(SYMBOLS, random.Random(1)), random.Random(2))
    sunk: list[Alert] = []
    async with (
        ExchangeRestServer(venue, rng=random.Random(3)) as server,
        Runtime(layer, alert_sinks=(sunk.append,)) as runtime,
    ):
        credentials = server.credentials
        exchange = ccxt.coinbase(
            {
                "apiKey": credentials.api_key,
                "secret": secret or credentials.api_secret,
                "enableRateLimit": False,  # short timings: the simulator does not throttle
            }
        )
        exchange.urls["api"] = {"rest": server.url}
        try:
            seen = Seen(runtime)
            broker = CcxtBroker(
                exchange, seen, symbols=["BTC-USD"], submission_retries=retries, retry_delay=0.01
            )
            yield Setup(server, venue, seen, exchange, broker, sunk)
        finally:
            await exchange.close()


async def loaded(s: Setup) -> None:
    """Load the markets (several requests) and forget their observations."""
    await s.broker.get_product("BTC-USD")
    s.seen.forget()
    s.server.reset_counts()


async def test_is_a_broker_and_round_trips_every_method() -> None:
    async with setup() as s:
        assert isinstance(s.broker, Broker)
        assert (await s.broker.get_server_time()).tzinfo is not None
        product = await s.broker.get_product("BTC-USD")
        assert product.base_increment > 0 and product.quote_increment > 0
        ticker = await s.broker.get_ticker("BTC-USD")
        assert ticker.bid < ticker.ask
        assert set(await s.broker.get_best_bid_ask(SYMBOLS)) == set(SYMBOLS)
        preview = await s.broker.preview_order(
            OrderRequest("BTC-USD", Side.BUY, Decimal("0.1"), "bot-p")
        )
        assert preview.expected_price >= ticker.bid and preview.slippage >= 0
        bought = await s.broker.place_order(
            OrderRequest("BTC-USD", Side.BUY, Decimal("0.5"), "bot-1")
        )
        assert (bought.status, bought.client_order_id) == (OrderStatus.FILLED, "bot-1")
        assert bought.fill_price is not None
        assert await s.broker.list_positions() == {"BTC-USD": Decimal("0.5")}
        resting = await s.broker.place_order(
            OrderRequest("BTC-USD", Side.BUY, Decimal("0.1"), "bot-2", Decimal("1"))
        )
        assert resting.status is OrderStatus.OPEN
        assert [o.order_id for o in await s.broker.list_orders()] == [resting.order_id]
        assert await s.broker.cancel_orders([resting.order_id]) == [resting.order_id]
        assert await s.broker.list_orders() == []
        balances = {b.currency: b.available for b in await s.broker.list_balances()}
        assert balances["BTC"] == Decimal("0.5")


async def test_load_markets_is_one_observation_per_request() -> None:
    async with setup() as s:
        await s.broker.get_product("BTC-USD")  # loads the markets: several requests
        assert s.requests() > 1
        assert len(s.seen.calls()) == s.requests()
        assert {c.category for c in s.seen.calls()} <= {"market", "accounts"}
        s.seen.forget()
        s.server.reset_counts()
        await s.exchange.load_markets()  # cached: no request, no observation
        assert s.requests() == 0 and s.seen.calls() == []


async def test_product_lookups_reach_the_venue_so_a_failing_product_service_is_seen() -> None:
    async with setup() as s:
        await loaded(s)
        await s.broker.get_product("BTC-USD")
        assert s.server.request_counts["product"] == 1  # asked, not read from ccxt's cache
        s.venue.faults.failing_products = True
        with pytest.raises(BrokerError) as failed:
            await s.broker.get_product("BTC-USD")
        assert failed.value.status == 500 and failed.value.category == "market"
        assert [(c.category, c.ok, c.status) for c in s.seen.calls()][-1] == ("market", False, 500)


async def test_a_503_storm_trips_api_health_one_api_call_per_request() -> None:
    async with setup(circuit_failure_threshold=50) as s:
        await loaded(s)
        s.server.error_storm(1.0, 503)
        for _ in range(12):
            with pytest.raises(BrokerError) as failed:
                await s.broker.get_ticker("BTC-USD")
            assert failed.value.status == 503 and failed.value.category == "market"
        assert s.requests() == 12
        assert [(c.category, c.ok, c.status) for c in s.seen.calls()] == [
            ("market", False, 503)
        ] * 12
        assert s.seen.layer.guard("api_health").state is GuardState.TRIPPED


async def test_an_open_breaker_refuses_without_a_request() -> None:
    async with setup() as s:
        await loaded(s)
        s.server.error_storm(1.0, 503)
        for _ in range(3):
            with pytest.raises(BrokerError):
                await s.broker.get_ticker("BTC-USD")
        assert s.seen.layer.breaker_state("market") is BreakerState.OPEN
        s.server.error_storm(0.0)
        before, reported = s.requests(), len(s.seen.calls())
        with pytest.raises(CircuitOpen):
            await s.broker.get_ticker("BTC-USD")
        assert s.requests() == before and len(s.seen.calls()) == reported
        # Other categories still answer.
        assert await s.broker.list_orders() == []


async def test_a_429_raises_usage_from_its_headers() -> None:
    async with setup() as s:
        await loaded(s)
        s.server.rate_limited()
        with pytest.raises(BrokerError) as failed:
            await s.broker.list_balances()
        assert (failed.value.category, failed.value.status) == ("accounts", 429)
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, 429)]
        assert s.seen.usages() == [1.0]
        assert s.seen.layer.guard("api_health").state is GuardState.TRIPPED


async def test_usage_and_latency_of_a_success() -> None:
    async with setup() as s:
        await loaded(s)
        s.server.set_usage(0.4)
        s.server.set_latency(0.05)
        await s.broker.get_ticker("BTC-USD")
        (call,) = s.seen.calls()
        assert (call.category, call.ok, call.status) == ("market", True, 200)
        assert call.latency is not None and call.latency >= 0.05
        assert s.seen.usages() == [pytest.approx(0.4)]


async def test_a_wrong_secret_is_an_authentication_error_and_a_critical_alert() -> None:
    wrong = ApiCredentials.generate().api_secret
    async with setup(secret=wrong) as s:
        with pytest.raises(BrokerError) as failed:
            await s.broker.list_balances()  # load_markets' first private request fails
        assert (failed.value.category, failed.value.status) == ("accounts", 401)
        assert isinstance(failed.value.__cause__, ccxt.AuthenticationError)
        refused = [c for c in s.seen.calls() if not c.ok]
        assert [(c.category, c.status) for c in refused] == [("accounts", 401)]
        assert not refused[0].counts_as_error  # the caller's fault, not an outage
        (alert,) = s.seen.alerts
        assert alert.severity == "critical"
        with anyio.fail_after(2):
            while alert not in s.sunk:  # the runtime delivered it to its alert sinks
                await anyio.sleep(0.005)


async def test_concurrent_requests_each_report_their_own_headers() -> None:
    async with setup() as s:
        await loaded(s)
        s.server.set_latency(0.3)
        s.server.set_usage(0.1)
        results: dict[str, object] = {}

        async def balances() -> None:
            results["balances"] = await s.broker.list_balances()

        async def server_time() -> None:
            results["time"] = await s.broker.get_server_time()

        async with anyio.create_task_group() as tg:
            tg.start_soon(balances)  # answered first, at usage 0.1
            with anyio.fail_after(2):
                while s.server.request_counts["accounts"] == 0:
                    await anyio.sleep(0.005)
            await anyio.sleep(0.15)
            tg.start_soon(server_time)  # in flight while the first answers
            with anyio.fail_after(2):
                while not s.seen.calls():
                    await anyio.sleep(0.002)
            s.server.set_usage(0.7)  # before the second answers
        assert set(results) == {"balances", "time"}
        pairs = [
            (a.category, u.usage)
            for a, u in zip(s.seen.observed[::2], s.seen.observed[1::2], strict=True)
            if isinstance(a, ApiCall) and isinstance(u, RateLimitUsage)
        ]
        assert pairs == [("accounts", pytest.approx(0.1)), ("market", pytest.approx(0.7))]


async def test_an_order_type_we_do_not_model_is_kept() -> None:
    async with setup() as s:
        foreign = s.venue.inject_foreign_order("BTC-USD")
        (order,) = await s.broker.list_orders()
        assert (order.order_id, order.client_order_id) == (
            foreign.order_id,
            foreign.client_order_id,
        )
        assert order.order_type == "stop_limit_stop_limit_gtc"
        assert order.status is OrderStatus.OPEN
        assert await s.broker.cancel_orders([order.order_id]) == [order.order_id]


async def test_open_orders_are_read_past_one_page() -> None:
    async with setup() as s:
        await loaded(s)
        ids = s.venue.inject_unknown_orders("BTC-USD", 130)
        orders = await s.broker.list_orders()
        assert sorted(o.order_id for o in orders) == sorted(ids)
        assert s.server.request_counts["list_orders"] >= 2
        assert (
            len([c for c in s.seen.calls() if c.category == "orders"])
            == (s.server.request_counts["list_orders"])
        )


async def test_a_lost_answer_is_retried_once_placed() -> None:
    async with setup(retries=True) as s:
        await loaded(s)
        s.server.lose_responses(1)
        order = await s.broker.place_order(
            OrderRequest("BTC-USD", Side.BUY, Decimal("0.1"), "bot-retry", Decimal("1"))
        )
        assert order.client_order_id == "bot-retry"
        assert s.server.request_counts["create_order"] == 2
        assert len(s.venue.orders) == 1  # the same client order id placed it once
        assert [(c.ok, c.status) for c in s.seen.calls()][:2] == [(False, 503), (True, 200)]


async def test_no_retry_when_retries_are_off() -> None:
    async with setup(retries=False) as s:
        await loaded(s)
        s.server.lose_responses(1)
        with pytest.raises(BrokerError) as failed:
            await s.broker.place_order(
                OrderRequest("BTC-USD", Side.BUY, Decimal("0.1"), "bot-once", Decimal("1"))
            )
        assert failed.value.status == 503
        assert s.server.request_counts["create_order"] == 1


async def test_the_chaos_harness_wraps_it_like_any_broker() -> None:
    async with setup() as s:
        plan = FaultPlan().add(
            "get_ticker", fault_always(raise_exc=BrokerError("market", 503, "injected"))
        )
        chaos = ChaosBroker(s.broker, plan, observe=s.seen.observe, report_passthrough=False)
        with pytest.raises(BrokerError, match="injected"):
            await chaos.get_ticker("BTC-USD")
        assert s.requests() == 0  # injected: the venue never saw it
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, 503)]
        assert await chaos.list_orders() == []  # not planned: straight through, reported once
        assert len(s.seen.calls()) == 1 + s.requests()


def test_request_categories() -> None:
    base = "https://api.coinbase.com"
    assert request_category(f"{base}/api/v3/brokerage/orders/batch_cancel") == "orders"
    assert request_category(f"{base}/api/v3/brokerage/orders/historical/batch?x=1") == "orders"
    assert request_category(f"{base}/api/v3/brokerage/accounts?limit=250") == "accounts"
    assert request_category(f"{base}/api/v3/brokerage/cfm/positions") == "accounts"
    assert request_category(f"{base}/api/v3/brokerage/transaction_summary") == "accounts"
    assert request_category(f"{base}/api/v3/brokerage/market/products") == "market"
    assert request_category(f"{base}/v2/currencies") == "market"
    assert request_category(f"{base}/api/v3/brokerage/time") == "market"


def test_an_exchange_is_wrapped_once() -> None:
    class Sink:
        layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(0))

        def observe(self, observation: Observation) -> list[Effect]:
            return []

    exchange = ccxt.coinbase()
    CcxtBroker(exchange, Sink())
    with pytest.raises(ValueError, match="already wrapped by a CcxtBroker"):
        CcxtBroker(exchange, Sink())
    with pytest.raises(TypeError, match=r"must be a ccxt\.async_support exchange"):
        CcxtBroker(object(), Sink())


async def test_leaving_the_broker_hands_the_client_back_unwrapped() -> None:
    async with setup() as s:
        await loaded(s)
        async with s.broker:
            await s.broker.get_server_time()
        assert len(s.seen.calls()) == 1
        await s.exchange.fetch_time()  # the caller's own request: no longer the layer's
        assert len(s.seen.calls()) == 1 and s.requests() == 2
        s.broker.detach()  # twice is harmless
        again = CcxtBroker(s.exchange, s.seen, symbols=["BTC-USD"])  # a new runtime may wrap it
        await again.get_server_time()
        assert len(s.seen.calls()) == 2
