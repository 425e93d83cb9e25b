"""The official Coinbase Advanced Trade SDK against `tradeguard exchange --tls`, unchanged.

``RESTClient`` always builds ``https://{base_url}`` and signs every request with the key the
exchange printed; ``REQUESTS_CA_BUNDLE`` makes ``requests`` trust the throwaway CA.
``WSClient`` subscribes to ticker and heartbeats over ``wss://``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from coinbase.rest import RESTClient
from coinbase.websocket import WSClient
from conftest import SYMBOLS, RunningExchange
from requests import HTTPError

from tradeguard.io.exchange.auth import ApiCredentials, build_jwt


@pytest.fixture
def client(exchange: RunningExchange, monkeypatch: pytest.MonkeyPatch) -> RESTClient:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", exchange.ca_file)
    return RESTClient(
        api_key=exchange.api_key, api_secret=exchange.api_secret, base_url=exchange.host_port
    )


def cid() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


def far_below(client: RESTClient, symbol: str = "BTC-USD") -> str:
    return str((Decimal(client.get_product(symbol).price) / 2).quantize(Decimal("0.01")))


# ---------------------------------------------------------------------- authentication


def test_a_missing_or_forged_jwt_is_refused_with_401(
    exchange: RunningExchange, client: RESTClient
) -> None:
    url = f"{exchange.rest_url}/api/v3/brokerage/accounts"
    missing = requests.get(url, verify=exchange.ca_file, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert "missing Authorization" in missing.json()["message"]
    # Same key name, another private key: the signature does not verify.
    forger = ApiCredentials(exchange.api_key, ApiCredentials.generate().api_secret)
    forged = RESTClient(
        api_key=forger.api_key, api_secret=forger.api_secret, base_url=exchange.host_port
    )
    with pytest.raises(HTTPError) as refused:
        forged.get_accounts()
    assert refused.value.response.status_code == 401
    assert "signature" in refused.value.response.json()["message"]


@pytest.mark.parametrize(
    ("uri", "age", "says"),
    [
        ("GET {host}/api/v3/brokerage/orders/historical/batch", 0, "does not match"),
        ("POST {host}/api/v3/brokerage/accounts", 0, "does not match"),
        ("GET {host}/api/v3/brokerage/accounts", 600, "expired"),
        ("GET {host}/api/v3/brokerage/accounts", -600, "not yet valid"),
    ],
)
def test_a_token_for_another_request_or_time_is_refused(
    exchange: RunningExchange, uri: str, age: int, says: str
) -> None:
    credentials = ApiCredentials(exchange.api_key, exchange.api_secret)
    token = build_jwt(credentials, uri.format(host=exchange.host_port), now=time.time() - age)
    response = requests.get(
        f"{exchange.rest_url}/api/v3/brokerage/accounts",
        headers={"Authorization": f"Bearer {token}"},
        verify=exchange.ca_file,
        timeout=5,
    )
    assert response.status_code == 401 and says in response.json()["message"]


def test_public_routes_need_no_token(exchange: RunningExchange) -> None:
    for path in ("/api/v3/brokerage/time", "/api/v3/brokerage/market/products", "/v2/currencies"):
        response = requests.get(f"{exchange.rest_url}{path}", verify=exchange.ca_file, timeout=5)
        assert response.status_code == 200, path


# ---------------------------------------------------------------------- products and market


def test_products_product_and_time(client: RESTClient) -> None:
    products = client.get_products()
    assert sorted(p.product_id for p in products.products) == sorted(SYMBOLS)
    assert products.num_products == len(SYMBOLS)
    btc = client.get_product("BTC-USD")
    assert (btc.base_currency_id, btc.quote_currency_id) == ("BTC", "USD")
    assert btc.product_type == "SPOT" and Decimal(btc.price) > 0
    assert Decimal(btc.base_increment) == Decimal("0.00000001")
    skew = int(client.get_unix_time().epoch_seconds) - time.time()
    assert abs(skew) < 5
    with pytest.raises(HTTPError) as unknown:
        client.get_product("NOPE-USD")
    assert unknown.value.response.status_code == 404


def test_best_bid_ask_ticker_book_and_candles(client: RESTClient) -> None:
    books = client.get_best_bid_ask(["BTC-USD", "ETH-USD"]).pricebooks
    assert [b.product_id for b in books] == ["BTC-USD", "ETH-USD"]
    assert Decimal(books[0].bids[0].price) < Decimal(books[0].asks[0].price)
    trades = client.get_market_trades("ETH-USD", limit=1)
    assert len(trades.trades) == 1 and trades.trades[0].product_id == "ETH-USD"
    assert Decimal(trades.best_bid) < Decimal(trades.best_ask)
    book = client.get_product_book("SOL-USD", limit=3)
    assert book.pricebook.product_id == "SOL-USD"
    assert len(book.pricebook.bids) == len(book.pricebook.asks) == 3
    now = int(time.time())
    candles = client.get_candles("BTC-USD", str(now - 300), str(now), "ONE_MINUTE").candles
    assert len(candles) == 5
    assert all(Decimal(c.low) <= Decimal(c.high) for c in candles)


def test_the_ticker_requires_a_limit(exchange: RunningExchange, client: RESTClient) -> None:
    with pytest.raises(HTTPError) as refused:
        client.get("/api/v3/brokerage/products/BTC-USD/ticker")
    assert refused.value.response.status_code == 400
    assert "'limit' is required" in refused.value.response.json()["message"]


# ---------------------------------------------------------------------- accounts


def test_accounts_page_by_limit_and_cursor(client: RESTClient) -> None:
    first = client.get_accounts(limit=4)
    assert len(first.accounts) == 4 and first.has_next and first.cursor
    second = client.get_accounts(limit=4, cursor=first.cursor)
    assert not second.has_next and second.cursor == ""
    accounts = [*first.accounts, *second.accounts]
    currencies = {a.currency for a in accounts}
    assert currencies == {"USD", *(s.split("-")[0] for s in SYMBOLS)}
    usd = next(a for a in accounts if a.currency == "USD")
    assert usd.type == "ACCOUNT_TYPE_FIAT" and usd.hold["value"] == "0"
    assert uuid.UUID(usd.uuid) and usd.available_balance["currency"] == "USD"
    assert client.get_account(usd.uuid).account.currency == "USD"


# ---------------------------------------------------------------------- orders


def test_market_orders_by_quote_and_by_base_size_fill_and_show_fills(client: RESTClient) -> None:
    bought = client.market_order_buy(cid(), "ETH-USD", quote_size="100")
    assert bought.success, bought
    order_id = bought.success_response["order_id"]
    order = client.get_order(order_id).order
    assert order.status == "FILLED" and order.order_type == "MARKET"
    assert order.order_configuration.market_market_ioc.quote_size == "100"
    assert Decimal(order.filled_size) * Decimal(order.average_filled_price) <= Decimal(100)
    sold = client.market_order_sell(cid(), "ETH-USD", base_size="0.5")
    assert sold.success
    fills = client.get_fills(order_ids=[order_id]).fills
    assert [f.order_id for f in fills] == [order_id]
    assert fills[0].side == "BUY" and fills[0].product_id == "ETH-USD"


def test_limit_gtc_gtd_ioc_and_cancel(client: RESTClient) -> None:
    price = far_below(client)
    gtc = client.limit_order_gtc(cid(), "BTC-USD", "BUY", base_size="0.01", limit_price=price)
    end = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gtd = client.limit_order_gtd(cid(), "BTC-USD", "BUY", "0.01", price, end)
    ioc = client.limit_order_ioc(cid(), "BTC-USD", "BUY", "0.01", price)
    assert gtc.success and gtd.success and ioc.success
    ids = [r.success_response["order_id"] for r in (gtc, gtd, ioc)]
    statuses = [client.get_order(i).order for i in ids]
    assert [o.status for o in statuses] == ["OPEN", "OPEN", "CANCELLED"]
    assert [o.time_in_force for o in statuses] == [
        "GOOD_UNTIL_CANCELLED",
        "GOOD_UNTIL_DATE_TIME",
        "IMMEDIATE_OR_CANCEL",
    ]
    assert statuses[1].order_configuration.limit_limit_gtd.end_time == end
    results = client.cancel_orders(ids).results
    assert [r.success for r in results] == [True, True, False]
    assert results[2].failure_reason == "UNKNOWN_CANCEL_ORDER"
    assert client.get_order(ids[0]).order.status == "CANCELLED"


def test_the_same_client_order_id_returns_the_same_order(client: RESTClient) -> None:
    client_id, price = cid(), far_below(client)
    first = client.limit_order_gtc(client_id, "SOL-USD", "SELL", "1", str(Decimal(price) * 4))
    again = client.limit_order_gtc(client_id, "SOL-USD", "SELL", "1", str(Decimal(price) * 4))
    assert first.success_response["order_id"] == again.success_response["order_id"]
    client.cancel_orders([first.success_response["order_id"]])


def test_list_orders_filters_and_pages(client: RESTClient) -> None:
    price = far_below(client, "DOGE-USD")
    placed = [
        client.limit_order_gtc(cid(), "DOGE-USD", "BUY", "1", price).success_response["order_id"]
        for _ in range(3)
    ]
    first = client.list_orders(order_status=["OPEN"], product_ids=["DOGE-USD"], limit=2)
    assert len(first.orders) == 2 and first.has_next and first.cursor
    rest = client.list_orders(
        order_status=["OPEN"], product_ids=["DOGE-USD"], limit=2, cursor=first.cursor
    )
    listed = [o.order_id for o in [*first.orders, *rest.orders]]
    assert sorted(listed) == sorted(placed) and not rest.has_next
    assert all(o.status == "OPEN" for o in first.orders)
    client.cancel_orders(placed)
    assert client.list_orders(order_status=["OPEN"], product_ids=["DOGE-USD"]).orders == []


def test_orders_of_types_tradeguard_does_not_model_rest_in_the_open_orders(
    client: RESTClient,
) -> None:
    price = far_below(client, "AVAX-USD")
    stop = client.stop_limit_order_gtc(
        cid(), "AVAX-USD", "SELL", "1", price, price, "STOP_DIRECTION_STOP_DOWN"
    )
    bracket = client.trigger_bracket_order_gtc(
        cid(), "AVAX-USD", "SELL", "1", str(Decimal(price) * 4), price
    )
    assert stop.success and bracket.success
    ids = {stop.success_response["order_id"], bracket.success_response["order_id"]}
    listed = client.list_orders(order_status=["OPEN"], product_ids=["AVAX-USD"]).orders
    kinds = {o.order_id: o.order_type for o in listed if o.order_id in ids}
    assert sorted(kinds.values()) == ["BRACKET", "STOP_LIMIT"]
    one = client.get_order(stop.success_response["order_id"]).order
    assert one.order_configuration.stop_limit_stop_limit_gtc.stop_price == price
    assert one.trigger_status == "STOP_PENDING"
    client.cancel_orders(sorted(ids))


def test_preview_needs_no_client_order_id(client: RESTClient) -> None:
    preview = client.preview_market_order_buy("BTC-USD", quote_size="50")
    assert Decimal(preview.base_size) > 0 and preview.errs == []
    assert Decimal(preview.best_bid) < Decimal(preview.best_ask)
    limit = client.preview_limit_order_gtc("BTC-USD", "SELL", "0.1", "1000000")
    assert Decimal(limit.order_total) > 0


def test_rejections_are_answered_like_the_venue(client: RESTClient) -> None:
    with pytest.raises(HTTPError) as unknown:
        client.market_order_buy(cid(), "NOPE-USD", quote_size="10")
    body = unknown.value.response.json()
    assert unknown.value.response.status_code == 404 and body["success"] is False
    assert set(body["error_response"]) >= {"error", "message", "error_details"}
    assert "unknown product" in body["error_response"]["message"]
    with pytest.raises(HTTPError) as bad:
        client.create_order(cid(), "BTC-USD", "BUY", {"made_up_order_type": {}})
    assert bad.value.response.status_code == 400
    assert bad.value.response.json()["error_response"]["error"] == "INVALID_ARGUMENT"


# ---------------------------------------------------------------------- websocket


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# The SDK builds a bare ssl.SSLContext() for wss:// (no verification); Python warns about it.
@pytest.mark.filterwarnings("ignore:ssl.*:DeprecationWarning")
def test_ws_client_gets_a_snapshot_then_updates_and_heartbeats(exchange: RunningExchange) -> None:
    messages: list[dict[str, object]] = []
    lock = threading.Lock()

    def on_message(raw: str) -> None:
        with lock:
            messages.append(json.loads(raw))

    def seen(channel: str) -> list[dict[str, object]]:
        with lock:
            return [m for m in messages if m.get("channel") == channel]

    ws = WSClient(
        api_key=exchange.api_key,
        api_secret=exchange.api_secret,
        base_url=exchange.ws_url,
        on_message=on_message,
    )
    ws.open()
    try:
        ws.subscribe(["BTC-USD", "ETH-USD"], ["ticker", "heartbeats"])
        wait_for(lambda: len(seen("ticker")) >= 3 and len(seen("heartbeats")) >= 1)
        tickers = seen("ticker")
        events = [e for m in tickers for e in m["events"]]  # type: ignore[attr-defined]
        assert events[0]["type"] == "snapshot"
        assert {e["type"] for e in events[1:]} == {"update"}
        ticker = events[0]["tickers"][0]
        for field in (
            "product_id",
            "price",
            "best_bid",
            "best_ask",
            "volume_24_h",
            "low_24_h",
            "high_24_h",
            "price_percent_chg_24_h",
        ):
            assert field in ticker, field
        assert Decimal(ticker["best_bid"]) < Decimal(ticker["best_ask"])
        ws.unsubscribe(["BTC-USD", "ETH-USD"], ["ticker"])
        wait_for(
            lambda: any(
                m["events"][0]["subscriptions"].get("ticker") == []  # type: ignore[index]
                for m in seen("subscriptions")
            )
        )
        time.sleep(0.3)  # a round already on the wire when the unsubscribe landed may follow
        count = len(seen("ticker"))
        time.sleep(0.8)  # three ticker rounds: none may arrive any more
        assert len(seen("ticker")) == count
    finally:
        ws.close()
