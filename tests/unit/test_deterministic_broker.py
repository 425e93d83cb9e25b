"""`DeterministicBroker`: the Broker protocol in memory, with real fills and the venue's faults."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import pytest

from tradeguard.fsm import Side
from tradeguard.io.broker import BOT_PREFIX, Broker, BrokerError, OrderRequest, OrderStatus
from tradeguard.io.exchange import Market, Venue
from tradeguard.testing import DeterministicBroker

pytestmark = pytest.mark.anyio

BTC = "BTC-USD"


def request(
    side: Side, quantity: str, client_id: str, limit: str | None = None, symbol: str = BTC
) -> OrderRequest:
    price = None if limit is None else Decimal(limit)
    return OrderRequest(symbol, side, Decimal(quantity), client_id, price)


async def usd(broker: DeterministicBroker) -> Decimal:
    return {b.currency: b.available for b in await broker.list_balances()}["USD"]


# ---------------------------------------------------------------------- the protocol


async def test_it_is_a_broker_with_the_documented_defaults() -> None:
    broker = DeterministicBroker()
    assert isinstance(broker, Broker)
    assert sorted(broker.market.prices) == ["BTC-USD", "ETH-USD"]
    assert broker.market is broker.venue.market
    assert await usd(broker) == Decimal("1000000")
    assert await broker.list_positions() == {}
    assert await broker.list_orders() == []


async def test_the_same_seed_replays_prices_and_order_ids() -> None:
    def run(seed: int) -> tuple[dict[str, Decimal], str]:
        broker = DeterministicBroker(seed=seed)
        broker.market.step()
        order = broker.venue.place(request(Side.BUY, "1", "bot-a"))
        return dict(broker.market.prices), order.order_id

    assert run(7) == run(7)
    assert run(7) != run(8)


async def test_an_existing_venue_is_shared_not_copied() -> None:
    venue = Venue(Market(["SOL-USD"], random.Random(1)), random.Random(2), cash=Decimal(5))
    broker = DeterministicBroker(venue=venue)
    assert broker.venue is venue
    assert await usd(broker) == Decimal(5)
    await broker.place_order(request(Side.BUY, "0.01", "bot-sol", symbol="SOL-USD"))
    assert venue.positions == {"SOL-USD": Decimal("0.01")}


async def test_no_symbols_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        DeterministicBroker(symbols=())


# ---------------------------------------------------------------------- quotes


async def test_quotes_straddle_the_market_and_move_with_it() -> None:
    broker = DeterministicBroker(seed=3)
    quote = await broker.get_ticker(BTC)
    assert quote.bid < broker.market.prices[BTC] < quote.ask
    for _ in range(20):
        broker.market.step()
    assert (await broker.get_ticker(BTC)).mid != quote.mid


async def test_the_batch_leaves_out_unknown_symbols_and_the_ticker_refuses_them() -> None:
    broker = DeterministicBroker()
    quotes = await broker.get_best_bid_ask([BTC, "NOPE-USD", "ETH-USD"])
    assert sorted(quotes) == [BTC, "ETH-USD"]
    assert quotes[BTC] == await broker.get_ticker(BTC)
    with pytest.raises(BrokerError) as err:
        await broker.get_ticker("NOPE-USD")
    assert (err.value.category, err.value.status) == ("market", 404)


async def test_a_product_has_the_venues_increments() -> None:
    product = await DeterministicBroker().get_product(BTC)
    assert product.symbol == BTC
    assert product.base_increment > 0 and product.quote_increment > 0


# ---------------------------------------------------------------------- fills


async def test_a_market_buy_fills_at_the_ask_and_moves_position_and_cash() -> None:
    broker = DeterministicBroker(seed=1)
    ask = (await broker.get_ticker(BTC)).ask
    order = await broker.place_order(request(Side.BUY, "0.5", "bot-1"))
    assert order.status is OrderStatus.FILLED
    assert order.fill_price == ask
    assert await broker.list_positions() == {BTC: Decimal("0.5")}
    assert await usd(broker) == Decimal("1000000") - Decimal("0.5") * ask
    assert await broker.list_orders() == []  # filled, not open


async def test_a_reducing_sell_reduces_the_position_and_pays_at_the_bid() -> None:
    broker = DeterministicBroker(seed=1)
    await broker.place_order(request(Side.BUY, "0.5", "bot-1"))
    cash = await usd(broker)
    bid = (await broker.get_ticker(BTC)).bid
    sell = await broker.place_order(request(Side.SELL, "0.2", "bot-2"))
    assert sell.fill_price == bid
    assert await broker.list_positions() == {BTC: Decimal("0.3")}
    assert await usd(broker) == cash + Decimal("0.2") * bid
    await broker.place_order(request(Side.SELL, "0.3", "bot-3"))
    assert await broker.list_positions() == {}  # flat symbols are absent


async def test_a_sell_from_flat_opens_a_short() -> None:
    broker = DeterministicBroker()
    await broker.place_order(request(Side.SELL, "0.1", "bot-short"))
    assert await broker.list_positions() == {BTC: Decimal("-0.1")}


async def test_the_same_client_order_id_places_one_order() -> None:
    broker = DeterministicBroker()
    first = await broker.place_order(request(Side.BUY, "1", "bot-once"))
    again = await broker.place_order(request(Side.BUY, "1", "bot-once"))
    assert again == first
    assert await broker.list_positions() == {BTC: Decimal("1")}
    assert len(broker.venue.orders) == 1


async def test_a_resting_limit_order_is_open_until_cancelled() -> None:
    broker = DeterministicBroker()
    resting = await broker.place_order(request(Side.BUY, "1", "bot-rest", limit="50"))
    assert resting.status is OrderStatus.OPEN
    assert [o.order_id for o in await broker.list_orders()] == [resting.order_id]
    assert await broker.list_positions() == {}  # nothing filled
    assert await broker.cancel_orders([resting.order_id, "ord-unknown"]) == [resting.order_id]
    assert await broker.list_orders() == []
    assert broker.venue.orders[resting.order_id].status is OrderStatus.CANCELLED
    assert await broker.cancel_orders([resting.order_id]) == []  # no longer open


async def test_a_crossing_limit_order_fills_at_once() -> None:
    broker = DeterministicBroker()
    order = await broker.place_order(request(Side.BUY, "1", "bot-cross", limit="1000"))
    assert order.status is OrderStatus.FILLED


# ---------------------------------------------------------------------- preview and slippage


async def test_a_preview_prices_the_order_without_placing_it() -> None:
    broker = DeterministicBroker()
    quote = await broker.get_ticker(BTC)
    preview = await broker.preview_order(request(Side.BUY, "1", "bot-p"))
    assert preview.expected_price == quote.ask
    assert preview.slippage == pytest.approx(Decimal("0.0005"), abs=Decimal("0.0001"))
    assert broker.venue.orders == {}
    assert await broker.list_positions() == {}


async def test_a_slippage_spike_shows_in_the_preview_and_in_the_fill() -> None:
    broker = DeterministicBroker()
    quote = await broker.get_ticker(BTC)
    broker.venue.faults.slippage = Decimal("0.02")
    preview = await broker.preview_order(request(Side.SELL, "1", "bot-s"))
    assert preview.slippage > Decimal("0.02")
    order = await broker.place_order(request(Side.SELL, "1", "bot-s"))
    assert order.fill_price == preview.expected_price
    assert order.fill_price is not None and order.fill_price < quote.bid * Decimal("0.99")


# ---------------------------------------------------------------------- faults


def _reads(kind: str) -> Callable[[DeterministicBroker], None]:
    return lambda b: b.venue.faults.failing_reads.add(kind)


FAULTS: dict[str, tuple[Callable[[DeterministicBroker], None], str, str, int]] = {
    "balances": (_reads("balances"), "list_balances", "accounts", 503),
    "positions": (_reads("positions"), "list_positions", "accounts", 503),
    "previews": (
        lambda b: setattr(b.venue.faults, "failing_previews", True),
        "preview",
        "orders",
        500,
    ),
    "products": (
        lambda b: setattr(b.venue.faults, "failing_products", True),
        "get_product",
        "market",
        500,
    ),
}


async def _call(broker: DeterministicBroker, method: str) -> object:
    match method:
        case "list_balances":
            return await broker.list_balances()
        case "list_positions":
            return await broker.list_positions()
        case "preview":
            return await broker.preview_order(request(Side.BUY, "1", "bot-f"))
        case "get_product":
            return await broker.get_product(BTC)
        case "place_bad_quantity":
            return await broker.place_order(request(Side.BUY, "0", "bot-zero"))
        case "place_no_client_id":
            return await broker.place_order(request(Side.BUY, "1", ""))
        case _:
            raise AssertionError(method)


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_each_venue_fault_raises_a_broker_error_with_its_category_and_status(
    fault: str,
) -> None:
    flip, method, category, status = FAULTS[fault]
    broker = DeterministicBroker()
    await _call(broker, method)  # works before the fault
    flip(broker)
    with pytest.raises(BrokerError) as err:
        await _call(broker, method)
    assert (err.value.category, err.value.status) == (category, status)


async def test_a_fault_touches_only_its_own_call() -> None:
    broker = DeterministicBroker()
    broker.venue.faults.failing_reads = {"positions"}
    broker.venue.faults.failing_products = True
    assert await usd(broker) == Decimal("1000000")
    assert (await broker.preview_order(request(Side.BUY, "1", "bot-x"))).slippage >= 0
    order = await broker.place_order(request(Side.BUY, "1", "bot-x"))
    assert order.status is OrderStatus.FILLED  # placing needs no product lookup


@pytest.mark.parametrize("method", ["place_bad_quantity", "place_no_client_id"])
async def test_a_malformed_order_is_refused_with_400(method: str) -> None:
    broker = DeterministicBroker()
    with pytest.raises(BrokerError) as err:
        await _call(broker, method)
    assert (err.value.category, err.value.status) == ("orders", 400)
    assert broker.venue.orders == {}


# ---------------------------------------------------------------------- drift


async def test_drift_orders_are_open_bot_owned_orders_nobody_placed() -> None:
    broker = DeterministicBroker(seed=2)
    ghosts = broker.venue.inject_unknown_orders(BTC, 2)
    open_orders = await broker.list_orders()
    assert sorted(o.order_id for o in open_orders) == sorted(ghosts)
    for order in open_orders:
        assert order.client_order_id.startswith(BOT_PREFIX)
        assert order.status is OrderStatus.OPEN
    assert await broker.list_positions() == {}  # far from the market: never filled
    assert sorted(await broker.cancel_orders(ghosts)) == sorted(ghosts)
