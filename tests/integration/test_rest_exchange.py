"""The REST half of the embedded exchange through `HttpBroker`, over real sockets on 127.0.0.1.

Every endpoint round-trips; every transport fault control and every venue fault reaches the
layer as the observations its breakers and guards need (DESIGN §2.1 api_health, §2.3); order
submissions retry only when enabled and never place an order twice. Short timings throughout;
tests wait for conditions with a deadline, never for a fixed sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import anyio
import pytest

from tradeguard import GuardState, ReliabilityLayer, Settings, Side, TradingMode
from tradeguard.fsm import BreakerState
from tradeguard.fsm.effects import Effect
from tradeguard.fsm.events import ApiCall, Observation, RateLimitUsage
from tradeguard.io import CircuitOpen, HttpBroker, Runtime
from tradeguard.io.broker import BOT_PREFIX, Broker, BrokerError, OrderRequest, OrderStatus
from tradeguard.io.exchange import ExchangeRestServer, Market, Venue
from tradeguard.io.exchange.rest_server import API_PREFIX

pytestmark = pytest.mark.anyio

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
SERVER_SEED = 3
FAST = {
    "circuit_failure_threshold": 3,
    "circuit_recovery_timeout": 30.0,
    "api_health_cooldown_seconds": 5.0,
}


@dataclass
class Recorder:
    """The runtime as the broker sees it: keeps every observation, then applies it."""

    runtime: Runtime
    seen: list[Observation] = field(default_factory=list)
    hooks: list[Callable[[Observation], None]] = field(default_factory=list)

    @property
    def layer(self) -> ReliabilityLayer:
        return self.runtime.layer

    def observe(self, observation: Observation) -> list[Effect]:
        self.seen.append(observation)
        effects = self.runtime.observe(observation)
        for hook in self.hooks:
            hook(observation)
        return effects

    def calls(self, category: str | None = None) -> list[ApiCall]:
        return [
            o
            for o in self.seen
            if isinstance(o, ApiCall) and (category is None or o.category == category)
        ]

    def outcomes(self, category: str) -> list[tuple[bool, int | None]]:
        return [(c.ok, c.status) for c in self.calls(category)]

    def usages(self) -> list[float]:
        return [o.usage for o in self.seen if isinstance(o, RateLimitUsage)]


@dataclass
class Exchange:
    """Everything a test touches."""

    layer: ReliabilityLayer
    venue: Venue
    server: ExchangeRestServer
    recorder: Recorder
    broker: HttpBroker


@asynccontextmanager
async def exchange(
    *, timeout: float = 2.0, retries: bool | None = None, **knobs: Any
) -> AsyncIterator[Exchange]:
    """A REST server on 127.0.0.1, a runtime and a broker talking to it; all closed on exit."""
    layer = ReliabilityLayer(Settings(**{**FAST, **knobs}), time.monotonic, rng=random.Random(0))
    venue = Venue(Market(SYMBOLS, random.Random(1)), random.Random(2))
    async with (
        ExchangeRestServer(venue, rng=random.Random(SERVER_SEED)) as server,
        Runtime(layer) as runtime,
    ):
        recorder = Recorder(runtime)
        async with HttpBroker(
            server.url, recorder, timeout=timeout, submission_retries=retries, retry_delay=0.01
        ) as broker:
            yield Exchange(layer, venue, server, recorder, broker)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def market(symbol: str, side: Side, quantity: str, client_id: str) -> OrderRequest:
    return OrderRequest(symbol, side, Decimal(quantity), client_id)


def limit(symbol: str, side: Side, quantity: str, price: str, client_id: str) -> OrderRequest:
    return OrderRequest(symbol, side, Decimal(quantity), client_id, Decimal(price))


# ---------------------------------------------------------------------- every endpoint


async def test_balances_and_positions_after_fills() -> None:
    async with exchange() as ex:
        assert [(b.currency, b.available) for b in await ex.broker.list_balances()] == [
            ("USD", Decimal("1000000"))
        ]
        assert await ex.broker.list_positions() == {}
        bought = await ex.broker.place_order(market("BTC-USD", Side.BUY, "0.5", "bot-1"))
        sold = await ex.broker.place_order(market("BTC-USD", Side.SELL, "1", "bot-2"))
        assert (bought.status, sold.status) == (OrderStatus.FILLED, OrderStatus.FILLED)
        assert await ex.broker.list_positions() == {"BTC-USD": Decimal("-0.5")}
        (usd,) = await ex.broker.list_balances()
        assert bought.fill_price is not None and sold.fill_price is not None
        assert usd.available == Decimal("1000000") - Decimal("0.5") * bought.fill_price + (
            sold.fill_price
        )
        assert ex.recorder.outcomes("accounts") == [(True, 200)] * 4


async def test_market_and_limit_orders_and_the_open_order_list() -> None:
    async with exchange() as ex:
        filled = await ex.broker.place_order(market("ETH-USD", Side.BUY, "2", "bot-m"))
        assert filled == ex.venue.orders[filled.order_id]
        assert filled.limit_price is None and filled.fill_price is not None
        resting = await ex.broker.place_order(limit("ETH-USD", Side.BUY, "1", "50", "bot-l"))
        assert resting.status is OrderStatus.OPEN
        assert (resting.limit_price, resting.fill_price) == (Decimal("50"), None)
        assert await ex.broker.list_orders() == [resting]
        crossing = await ex.broker.place_order(limit("ETH-USD", Side.BUY, "1", "200", "bot-x"))
        assert crossing.status is OrderStatus.FILLED
        assert crossing.fill_price is not None and crossing.fill_price < Decimal("200")


async def test_placing_the_same_client_id_twice_returns_the_same_order() -> None:
    async with exchange() as ex:
        request = market("BTC-USD", Side.BUY, "0.25", "bot-same")
        first = await ex.broker.place_order(request)
        again = await ex.broker.place_order(request)
        assert again == first
        assert ex.server.request_counts["create_order"] == 2
        assert len(ex.venue.orders) == 1
        assert await ex.broker.list_positions() == {"BTC-USD": Decimal("0.25")}


async def test_cancel_returns_only_the_orders_it_cancelled() -> None:
    async with exchange() as ex:
        resting = await ex.broker.place_order(limit("SOL-USD", Side.SELL, "1", "500", "bot-c"))
        assert await ex.broker.cancel_orders([resting.order_id, "ord-nope"]) == [resting.order_id]
        assert await ex.broker.cancel_orders([resting.order_id]) == []
        assert ex.venue.orders[resting.order_id].status is OrderStatus.CANCELLED
        assert await ex.broker.list_orders() == []
        assert await ex.broker.cancel_orders([]) == []  # nothing to send
        assert ex.server.request_counts["batch_cancel"] == 2


async def test_batched_quotes_with_and_without_omitted_symbols() -> None:
    async with exchange() as ex:
        quotes = await ex.broker.get_best_bid_ask([*SYMBOLS, "DOGE-USD"])
        assert quotes == {s: ex.venue.quote(s) for s in SYMBOLS}  # unknown ones left out
        ex.server.omit_from_batch(["ETH-USD"])
        partial = await ex.broker.get_best_bid_ask(SYMBOLS)
        assert sorted(partial) == ["BTC-USD", "SOL-USD"]
        # The per-symbol fallback a caller uses for what the batch left out.
        assert await ex.broker.get_ticker("ETH-USD") == ex.venue.quote("ETH-USD")
        ex.server.omit_from_batch([])
        assert sorted(await ex.broker.get_best_bid_ask(SYMBOLS)) == sorted(SYMBOLS)
        assert await ex.broker.get_best_bid_ask([]) == {}
        assert ex.server.request_counts["best_bid_ask"] == 3


async def test_ticker_product_and_server_time() -> None:
    async with exchange() as ex:
        quote = await ex.broker.get_ticker("SOL-USD")
        assert quote == ex.venue.quote("SOL-USD") and quote.bid < quote.ask
        assert await ex.broker.get_product("BTC-USD") == ex.venue.product("BTC-USD")
        venue_time = await ex.broker.get_server_time()
        assert abs((venue_time - datetime.now(UTC)).total_seconds()) < 5
        assert ex.recorder.outcomes("market") == [(True, 200)] * 3


async def test_preview_shows_a_slippage_spike() -> None:
    async with exchange() as ex:
        request = market("BTC-USD", Side.BUY, "1", "bot-p")
        calm = await ex.broker.preview_order(request)
        assert calm.expected_price == ex.venue.quote("BTC-USD").ask
        assert calm.slippage < Decimal("0.001")
        ex.venue.faults.slippage = Decimal("0.02")
        spiked = await ex.broker.preview_order(request)
        assert spiked.slippage > Decimal("0.02")
        assert spiked.expected_price > calm.expected_price
        assert (spiked.symbol, spiked.side, spiked.quantity) == ("BTC-USD", Side.BUY, Decimal(1))
        assert ex.venue.orders == {}  # a preview places nothing


async def test_every_response_carries_rate_limit_headers() -> None:
    async with exchange() as ex, aiohttp.ClientSession() as session:
        for path in ("/accounts", "/no/such/route", "/products/DOGE-USD"):
            async with session.get(f"{ex.server.url}{API_PREFIX}{path}") as response:
                assert response.headers["x-ratelimit-limit"] == "100"
                assert response.headers["x-ratelimit-remaining"] == "100"
                body = await response.json()
        assert response.status == 404 and set(body) == {"error", "message"}
        assert ex.server.request_counts == {"accounts": 1, "unmatched": 1, "product": 1}
        ex.server.reset_counts()
        assert ex.server.request_counts == {}
        await ex.broker.list_balances()
        assert ex.recorder.usages() == [0.0]
        (call,) = ex.recorder.calls()
        assert call == ApiCall("accounts", True, 200, call.latency)
        assert ex.recorder.seen == [call, RateLimitUsage(0.0)]


# ---------------------------------------------------------------------- transport faults


async def test_error_storm_opens_the_breaker_and_then_calls_never_leave() -> None:
    async with exchange() as ex:
        ex.server.error_storm(1.0)
        for _ in range(3):  # circuit_failure_threshold
            with pytest.raises(BrokerError) as failed:
                await ex.broker.list_balances()
            assert failed.value.status == 503 and not isinstance(failed.value, CircuitOpen)
        assert ex.recorder.outcomes("accounts") == [(False, 503)] * 3
        assert ex.layer.breaker_state("accounts") is BreakerState.OPEN
        counts, seen = dict(ex.server.request_counts), len(ex.recorder.seen)
        with pytest.raises(CircuitOpen) as refused:
            await ex.broker.list_positions()
        assert refused.value.status is None and "refused" in str(refused.value)
        assert isinstance(refused.value, BrokerError)
        assert ex.server.request_counts == counts  # the network was never touched
        assert len(ex.recorder.seen) == seen  # and nothing was observed
        assert ex.layer.guard("api_health").state is GuardState.TRIPPED
        assert ex.layer.mode() is TradingMode.REDUCE_ONLY
        ex.server.error_storm(0)
        assert await ex.broker.get_ticker("BTC-USD")  # other categories have their own breaker


async def test_error_storm_draws_every_request_from_the_injected_rng() -> None:
    async with exchange(circuit_failure_threshold=100) as ex:
        ex.server.error_storm(0.5, status=500)
        outcomes = []
        for _ in range(20):
            try:
                await ex.broker.get_ticker("BTC-USD")
            except BrokerError as err:
                outcomes.append(err.status)
            else:
                outcomes.append(200)
        replay = random.Random(SERVER_SEED)
        assert outcomes == [500 if replay.random() < 0.5 else 200 for _ in range(20)]
        assert {200, 500} == set(outcomes)
        assert [s for _, s in ex.recorder.outcomes("market")] == outcomes


async def test_rate_limited_reports_full_usage_and_trips_api_health() -> None:
    async with exchange() as ex:
        ex.server.rate_limited(True)
        with pytest.raises(BrokerError) as limited:
            await ex.broker.list_orders()
        assert limited.value.status == 429
        assert ex.recorder.outcomes("orders") == [(False, 429)]
        assert ex.recorder.usages() == [1.0]
        assert ex.layer.guard("api_health").state is GuardState.TRIPPED
        assert ex.layer.mode() is TradingMode.REDUCE_ONLY
        ex.server.rate_limited(False)
        assert await ex.broker.list_orders() == []
        assert ex.recorder.usages() == [1.0, 0.0]
        assert ex.layer.guard("api_health").state is GuardState.COOLDOWN


async def test_high_usage_on_successful_calls_trips_api_health() -> None:
    async with exchange() as ex:
        ex.server.set_usage(0.95)
        await ex.broker.get_ticker("BTC-USD")
        assert ex.recorder.outcomes("market") == [(True, 200)]
        assert ex.recorder.usages() == [pytest.approx(0.95)]
        assert ex.layer.guard("api_health").state is GuardState.TRIPPED
        assert ex.layer.mode() is TradingMode.REDUCE_ONLY


async def test_latency_is_measured_per_call() -> None:
    async with exchange() as ex:
        await ex.broker.get_ticker("BTC-USD")
        ex.server.set_latency(0.1)
        await ex.broker.get_ticker("BTC-USD")
        fast, slow = ex.recorder.calls("market")
        assert fast.latency is not None and slow.latency is not None
        assert slow.latency >= 0.1 > fast.latency


async def test_hang_past_the_timeout_is_a_failure_without_status() -> None:
    async with exchange(timeout=0.2) as ex:
        ex.server.hang(True)
        with pytest.raises(BrokerError) as hung:
            await ex.broker.list_orders()
        assert hung.value.status is None and "no answer within 0.2s" in str(hung.value)
        (call,) = ex.recorder.calls("orders")
        assert (call.ok, call.status) == (False, None)
        assert call.latency is not None and call.latency >= 0.15
        assert ex.recorder.usages() == []  # no response, no headers
        ex.server.hang(False)
        assert await ex.broker.list_orders() == []


async def test_server_down_is_a_connection_failure_then_back() -> None:
    async with exchange() as ex:
        await ex.broker.get_ticker("BTC-USD")
        await ex.server.stop()
        with pytest.raises(BrokerError) as down:
            await ex.broker.get_ticker("BTC-USD")
        assert down.value.status is None and "connection failed" in str(down.value)
        assert ex.recorder.outcomes("market")[-1] == (False, None)
        await ex.server.start()
        assert await ex.broker.get_ticker("BTC-USD") == ex.venue.quote("BTC-USD")


async def test_a_cancelled_probe_reopens_the_breaker_instead_of_leaking_its_slot() -> None:
    async with exchange(timeout=5.0, circuit_recovery_timeout=0.05) as ex:
        ex.server.error_storm(1.0)
        for _ in range(3):
            with pytest.raises(BrokerError):
                await ex.broker.list_orders()
        ex.server.error_storm(0)
        await wait_until(lambda: ex.layer.breaker_state("orders") is BreakerState.HALF_OPEN)
        ex.server.hang(True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(ex.broker.list_orders)
            await wait_until(lambda: ex.server.request_counts["list_orders"] == 4)
            tg.cancel_scope.cancel("the caller gave up")
        assert ex.recorder.outcomes("orders")[-1] == (False, None)
        assert ex.layer.breaker_state("orders") is BreakerState.OPEN
        ex.server.hang(False)
        await wait_until(lambda: ex.layer.breaker_state("orders") is BreakerState.HALF_OPEN)
        assert await ex.broker.list_orders() == []  # the probe slot was freed


# ---------------------------------------------------------------------- venue faults


async def test_failing_reads_answer_503_per_kind() -> None:
    async with exchange() as ex:
        ex.venue.faults.failing_reads = {"balances"}
        with pytest.raises(BrokerError) as failed:
            await ex.broker.list_balances()
        assert failed.value.status == 503 and "balances read failing" in str(failed.value)
        assert await ex.broker.list_positions() == {}
        ex.venue.faults.failing_reads = {"positions"}
        with pytest.raises(BrokerError, match="positions read failing"):
            await ex.broker.list_positions()
        assert ex.recorder.outcomes("accounts") == [(False, 503), (True, 200), (False, 503)]


async def test_failing_previews_and_product_lookups_answer_500() -> None:
    async with exchange() as ex:
        ex.venue.faults.failing_previews = True
        with pytest.raises(BrokerError, match="preview failing") as preview:
            await ex.broker.preview_order(market("BTC-USD", Side.BUY, "1", "bot-p"))
        ex.venue.faults.failing_products = True
        with pytest.raises(BrokerError, match="product lookup failing") as product:
            await ex.broker.get_product("BTC-USD")
        assert (preview.value.status, product.value.status) == (500, 500)
        assert (preview.value.category, product.value.category) == ("orders", "market")


async def test_client_errors_are_observed_but_never_trip_anything() -> None:
    async with exchange() as ex:
        for _ in range(5):
            with pytest.raises(BrokerError) as unknown:
                await ex.broker.get_ticker("DOGE-USD")
            assert unknown.value.status == 404 and "unknown product 'DOGE-USD'" in str(
                unknown.value
            )
        assert ex.recorder.outcomes("market") == [(False, 404)] * 5
        assert ex.layer.breaker_state("market") is BreakerState.CLOSED
        assert ex.layer.guard("api_health").state is GuardState.HEALTHY


async def test_drift_orders_the_bot_never_placed_show_in_the_open_orders() -> None:
    async with exchange() as ex:
        ghosts = ex.venue.inject_unknown_orders("BTC-USD", count=2)
        listed = await ex.broker.list_orders()
        assert [o.order_id for o in listed] == ghosts
        assert all(o.client_order_id.startswith(BOT_PREFIX) for o in listed)


# ---------------------------------------------------------------------- submission retries


async def test_retries_off_by_default_one_attempt_on_503() -> None:
    async with exchange() as ex:
        assert ex.broker.submission_retries is False  # the knob's default
        ex.server.error_storm(1.0)
        with pytest.raises(BrokerError) as failed:
            await ex.broker.place_order(market("BTC-USD", Side.BUY, "1", "bot-r"))
        assert failed.value.status == 503
        assert ex.server.request_counts["create_order"] == 1
        assert ex.venue.orders == {}


async def test_retry_after_a_lost_answer_places_the_order_once() -> None:
    async with exchange(order_submission_retries_enabled=True) as ex:
        assert ex.broker.submission_retries is True  # read from the knob
        ex.server.lose_responses(2)
        request = market("BTC-USD", Side.BUY, "1", "bot-lost")
        order = await ex.broker.place_order(request)
        assert ex.server.request_counts["create_order"] == 3
        assert ex.recorder.outcomes("orders") == [(False, 503), (False, 503), (True, 200)]
        # The venue acted on the first attempt; the retries carried the same client id.
        assert list(ex.venue.orders.values()) == [order]
        assert order.client_order_id == "bot-lost"
        assert await ex.broker.list_positions() == {"BTC-USD": Decimal(1)}


async def test_retry_through_an_error_storm_that_ends() -> None:
    async with exchange(retries=True) as ex:
        ex.server.error_storm(1.0)

        def calm_after_two_failures(observation: Observation) -> None:
            if ex.recorder.outcomes("orders") == [(False, 503)] * 2:
                ex.server.error_storm(0)

        ex.recorder.hooks.append(calm_after_two_failures)
        order = await ex.broker.place_order(market("ETH-USD", Side.SELL, "3", "bot-storm"))
        assert ex.server.request_counts["create_order"] == 3
        assert list(ex.venue.orders) == [order.order_id]


async def test_retries_stop_at_the_maximum_attempts() -> None:
    async with exchange(retries=True) as ex:
        ex.server.error_storm(1.0, status=502)
        with pytest.raises(BrokerError) as failed:
            await ex.broker.place_order(market("BTC-USD", Side.BUY, "1", "bot-max"))
        assert failed.value.status == 502 and not isinstance(failed.value, CircuitOpen)
        assert ex.server.request_counts["create_order"] == ex.broker.max_submission_attempts == 3


async def test_retries_stop_when_the_breaker_opens() -> None:
    async with exchange() as ex:
        patient = HttpBroker(
            ex.server.url,
            ex.recorder,
            submission_retries=True,
            max_submission_attempts=5,
            retry_delay=0.0,
        )
        async with patient:
            ex.server.error_storm(1.0)
            with pytest.raises(CircuitOpen):
                await patient.place_order(market("BTC-USD", Side.BUY, "1", "bot-open"))
        assert ex.server.request_counts["create_order"] == 3  # circuit_failure_threshold


@pytest.mark.parametrize(
    ("request_", "status", "says"),
    [
        (market("DOGE-USD", Side.BUY, "1", "bot-4xx"), 404, "unknown product"),
        (market("BTC-USD", Side.BUY, "-1", "bot-4xx"), 400, "quantity must be > 0"),
    ],
)
async def test_a_rejected_order_is_never_retried(
    request_: OrderRequest, status: int, says: str
) -> None:
    async with exchange(retries=True) as ex:
        with pytest.raises(BrokerError) as rejected:
            await ex.broker.place_order(request_)
        assert rejected.value.status == status and says in str(rejected.value)
        assert ex.server.request_counts["create_order"] == 1
        assert ex.recorder.outcomes("orders") == [(False, status)]
        assert ex.layer.breaker_state("orders") is BreakerState.CLOSED


# ---------------------------------------------------------------------- lifecycle


async def test_broker_speaks_the_protocol_and_only_while_open() -> None:
    async with exchange() as ex:
        closed = HttpBroker(ex.server.url, ex.recorder)
        assert isinstance(closed, Broker)
        with pytest.raises(RuntimeError, match="not open"):
            await closed.list_balances()
        assert ex.server.request_counts == {}
        with pytest.raises(ValueError, match="base_url"):
            HttpBroker("127.0.0.1:80", ex.recorder)


async def test_shutdown_with_a_hung_request_closes_everything_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    statuses: list[int | None] = []
    with anyio.fail_after(5):
        async with exchange(timeout=30.0) as ex:
            ex.server.hang(True)

            async def read() -> None:
                try:
                    await ex.broker.list_balances()
                except BrokerError as err:
                    statuses.append(err.status)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await wait_until(lambda: ex.server.request_counts["accounts"] == 1)
                await ex.server.stop()
    assert statuses == [503]
    assert asyncio.all_tasks() == before
