"""ccxt's ``coinbase`` class against `tradeguard exchange --tls`, unchanged but for its URL.

ccxt trusts the throwaway CA through ``exchange.ssl_context``. Choices a caller makes:
``options["fetchBalance"] = "v3PrivateGetBrokerageAccounts"`` (the v3 accounts, paged by
ccxt itself), and a market buy is sized in quote currency: ``params={"cost": ...}`` (or the
option ``createMarketBuyOrderRequiresPrice=False`` with the cost as the amount), because
the venue's market buy takes ``quote_size``. Our client order ids go in as
``params={"client_order_id": ...}`` (ccxt ignores ``clientOrderId`` for this venue).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import ccxt.async_support as ccxt
import pytest
from ccxt.base.errors import AuthenticationError, BadRequest, ExchangeError
from conftest import SYMBOLS, RunningExchange

from tradeguard.io.exchange.auth import ApiCredentials

pytestmark = pytest.mark.anyio


def make(exchange: RunningExchange, secret: str | None = None) -> Any:
    client = ccxt.coinbase({"apiKey": exchange.api_key, "secret": secret or exchange.api_secret})
    client.urls["api"]["rest"] = exchange.rest_url
    client.ssl_context = exchange.ssl_context()
    client.options["fetchBalance"] = "v3PrivateGetBrokerageAccounts"
    return client


@pytest.fixture
async def cx(exchange: RunningExchange) -> AsyncIterator[Any]:
    client = make(exchange)
    try:
        await client.load_markets()
        yield client
    finally:
        await client.close()


def cid() -> str:
    return f"ccxt-test-{uuid.uuid4().hex[:12]}"


async def far_below(cx: Any, symbol: str) -> float:
    ticker = await cx.fetch_ticker(symbol)
    return round(ticker["bid"] / 2, 2)


async def test_load_markets_reads_every_product(cx: Any) -> None:
    assert sorted(cx.markets) == sorted(s.replace("-", "/") for s in SYMBOLS)
    btc = cx.market("BTC/USD")
    assert btc["id"] == "BTC-USD" and btc["spot"] and btc["active"]
    assert btc["precision"]["amount"] == 1e-08 and btc["precision"]["price"] == 0.01
    assert "USD" in cx.currencies and "BTC" in cx.currencies


async def test_a_forged_or_missing_jwt_raises_authentication_error(
    exchange: RunningExchange,
) -> None:
    forged = make(exchange, ApiCredentials.generate().api_secret)
    try:
        # load_markets reads the fee tier with the key: refused there already.
        with pytest.raises(AuthenticationError, match="signature"):
            await forged.fetch_balance()
    finally:
        await forged.close()
    anonymous = make(exchange)
    anonymous.headers = {"Authorization": "Bearer not-a-jwt"}
    try:
        with pytest.raises(AuthenticationError, match="malformed JWT"):
            await anonymous.fetch_open_orders(params={"usePrivate": True})
    finally:
        await anonymous.close()


async def test_fetch_time_and_tickers(cx: Any) -> None:
    assert abs(await cx.fetch_time() - datetime.now(UTC).timestamp() * 1000) < 5000
    v3 = await cx.fetch_time({"method": "v3PublicGetBrokerageTime"})
    assert abs(v3 - datetime.now(UTC).timestamp() * 1000) < 5000
    ticker = await cx.fetch_ticker("ETH/USD")
    assert ticker["bid"] < ticker["ask"] and ticker["last"] > 0
    private = await cx.fetch_ticker("ETH/USD", {"usePrivate": True})
    assert private["bid"] < private["ask"]
    books = await cx.fetch_bids_asks(["BTC/USD", "SOL/USD"])
    assert sorted(books) == ["BTC/USD", "SOL/USD"]
    assert all(t["bid"] < t["ask"] for t in books.values())
    tickers = await cx.fetch_tickers()
    assert sorted(tickers) == sorted(cx.markets)


async def test_fetch_balance_pages_through_the_accounts(
    cx: Any, exchange: RunningExchange, admin: Any
) -> None:
    before = (await admin.requests())["routes"].get("accounts", 0)
    balance = await cx.fetch_balance({"limit": 2})
    assert set(balance["total"]) == {"USD", *(s.split("-")[0] for s in SYMBOLS)}
    assert balance["USD"]["free"] > 0 and balance["USD"]["used"] == 0
    assert (await admin.requests())["routes"]["accounts"] - before == 3  # six accounts, pages of 2


async def test_market_orders_by_base_and_by_cost(cx: Any) -> None:
    sold = await cx.create_order(
        "SOL/USD", "market", "sell", 0.25, None, {"client_order_id": cid()}
    )
    bought = await cx.create_order("SOL/USD", "market", "buy", None, None, {"cost": 50})
    by_amount = await cx.create_order(
        "SOL/USD", "market", "buy", 20, None, {"createMarketBuyOrderRequiresPrice": False}
    )
    for placed in (sold, bought, by_amount):
        order = await cx.fetch_order(placed["id"])
        assert order["status"] == "closed" and order["type"] == "market"
        assert order["filled"] > 0 and order["average"] > 0
    cost = (await cx.fetch_order(bought["id"]))["info"]["order_configuration"]
    assert cost == {"market_market_ioc": {"quote_size": "50"}}
    trades = await cx.fetch_my_trades("SOL/USD")
    assert {bought["id"], sold["id"], by_amount["id"]} <= {t["order"] for t in trades}


async def test_limit_gtc_gtd_ioc_and_cancel(cx: Any) -> None:
    price = await far_below(cx, "BTC/USD")
    end = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gtc_id = cid()
    gtc = await cx.create_order("BTC/USD", "limit", "buy", 0.01, price, {"client_order_id": gtc_id})
    gtd = await cx.create_order(
        "BTC/USD", "limit", "buy", 0.01, price, {"timeInForce": "GTD", "end_time": end}
    )
    ioc = await cx.create_order("BTC/USD", "limit", "buy", 0.01, price, {"timeInForce": "IOC"})
    orders = [await cx.fetch_order(o["id"]) for o in (gtc, gtd, ioc)]
    assert [o["status"] for o in orders] == ["open", "open", "canceled"]
    assert [o["timeInForce"] for o in orders] == ["GTC", "GTD", "IOC"]
    assert orders[0]["clientOrderId"] == gtc_id and orders[0]["price"] == price
    open_ids = {o["id"] for o in await cx.fetch_open_orders("BTC/USD")}
    assert {gtc["id"], gtd["id"]} <= open_ids and ioc["id"] not in open_ids
    cancelled = await cx.cancel_orders([gtc["id"], gtd["id"]])
    assert [c["id"] for c in cancelled] == [gtc["id"], gtd["id"]]
    with pytest.raises(BadRequest):  # ccxt refuses a batch where one cancel failed
        await cx.cancel_order(ioc["id"])
    assert (await cx.fetch_order(gtd["id"]))["status"] == "canceled"


async def test_open_orders_page_with_limit_and_cursor(cx: Any) -> None:
    price = await far_below(cx, "ETH/USD")
    placed = [
        (await cx.create_order("ETH/USD", "limit", "buy", 0.1, price))["id"] for _ in range(3)
    ]
    first = await cx.fetch_open_orders("ETH/USD", None, 2)
    # ccxt hangs the next cursor on the first raw order (then sorts the parsed ones).
    (cursor,) = [o["info"]["cursor"] for o in first if "cursor" in o["info"]]
    assert len(first) == 2 and cursor
    rest = await cx.fetch_open_orders("ETH/USD", None, 2, {"cursor": cursor})
    assert sorted(o["id"] for o in [*first, *rest]) == sorted(placed)
    assert not any("cursor" in o["info"] for o in rest)  # the last page
    await cx.cancel_orders(placed)


async def test_a_stop_limit_order_shows_in_the_open_orders(cx: Any) -> None:
    price = await far_below(cx, "AVAX/USD")
    stop = await cx.create_order(
        "AVAX/USD", "limit", "sell", 1, price, {"stopPrice": price, "client_order_id": cid()}
    )
    listed = {o["id"]: o for o in await cx.fetch_open_orders("AVAX/USD")}
    order = listed[stop["id"]]
    assert order["status"] == "open" and order["triggerPrice"] == price
    assert order["info"]["order_type"] == "STOP_LIMIT"
    assert "stop_limit_stop_limit_gtc" in order["info"]["order_configuration"]
    await cx.cancel_order(stop["id"])


async def test_a_rejected_order_raises(cx: Any) -> None:
    ask = (await cx.fetch_ticker("BTC/USD"))["ask"]
    with pytest.raises(ExchangeError, match="post-only limit price would cross"):
        await cx.create_order("BTC/USD", "limit", "buy", 0.01, ask * 2, {"postOnly": True})
