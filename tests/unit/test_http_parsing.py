"""The REST wire format `HttpBroker` reads and writes: pure functions, no sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tradeguard.fsm import Side
from tradeguard.io.broker import Balance, BrokerError, Order, OrderRequest, OrderStatus, Quote
from tradeguard.io.http_broker import (
    CircuitOpen,
    MalformedResponse,
    decode_json,
    describe_error,
    order_body,
    parse_balances,
    parse_cancel_results,
    parse_order,
    parse_order_created,
    parse_orders,
    parse_positions,
    parse_preview,
    parse_pricebooks,
    parse_product,
    parse_server_time,
    parse_ticker,
    rate_limit_usage,
)

MARKET = OrderRequest("BTC-USD", Side.BUY, Decimal("0.5"), "bot-1")
LIMIT = OrderRequest("ETH-USD", Side.SELL, Decimal("2"), "bot-2", Decimal("3100.5"))


def order_json(**changes: Any) -> dict[str, Any]:
    """A filled market order as the venue writes it, with fields changed or removed (None)."""
    body: dict[str, Any] = {
        "order_id": "ord-1",
        "client_order_id": "bot-1",
        "product_id": "BTC-USD",
        "side": "BUY",
        "status": "FILLED",
        "order_configuration": {"market_market_ioc": {"base_size": "0.5"}},
        "filled_size": "0.5",
        "average_filled_price": "100.05",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


# ---------------------------------------------------------------------- requests


def test_order_body_writes_market_and_limit_configurations_with_string_numbers() -> None:
    assert order_body(MARKET) == {
        "client_order_id": "bot-1",
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {"market_market_ioc": {"base_size": "0.5"}},
    }
    assert order_body(LIMIT)["order_configuration"] == {
        "limit_limit_gtc": {"base_size": "2", "limit_price": "3100.5"}
    }
    json.dumps(order_body(LIMIT))  # JSON-ready


# ---------------------------------------------------------------------- orders


def test_filled_market_order_parses() -> None:
    assert parse_order(order_json()) == Order(
        "ord-1",
        "bot-1",
        "BTC-USD",
        Side.BUY,
        Decimal("0.5"),
        OrderStatus.FILLED,
        None,
        Decimal("100.05"),
    )


def test_open_limit_order_has_no_fill_price() -> None:
    config = {"limit_limit_gtc": {"base_size": "2", "limit_price": "50"}}
    raw = order_json(
        status="OPEN",
        side="SELL",
        order_configuration=config,
        filled_size="0",
        average_filled_price="0",
    )
    order = parse_order(raw)
    assert (order.status, order.side) == (OrderStatus.OPEN, Side.SELL)
    assert (order.limit_price, order.fill_price) == (Decimal("50"), None)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (order_json(order_id=None), "order has no 'order_id'"),
        (order_json(client_order_id=""), "order.client_order_id must be a non-empty string"),
        (order_json(side="HOLD"), "order.side must be one of BUY, SELL"),
        (order_json(status="PENDING"), "order.status must be one of OPEN, FILLED, CANCELLED"),
        (order_json(filled_size=0.5), "order.filled_size must be a decimal number"),
        (order_json(filled_size="NaN"), "order.filled_size must be a decimal number"),
        (order_json(average_filled_price="0"), "order.average_filled_price must be > 0"),
        (
            order_json(order_configuration={"market_market_ioc": {"base_size": "-1"}}),
            "order.order_configuration.market_market_ioc.base_size must be > 0",
        ),
        (
            order_json(order_configuration={"stop_limit_stop_limit_gtc": {"base_size": "1"}}),
            "unknown order type 'stop_limit_stop_limit_gtc'",
        ),
        (
            order_json(
                order_configuration={
                    "market_market_ioc": {"base_size": "1"},
                    "limit_limit_gtc": {"base_size": "1", "limit_price": "1"},
                }
            ),
            "must hold one order type",
        ),
        (
            order_json(order_configuration={"limit_limit_gtc": {"base_size": "1"}}),
            "order.order_configuration.limit_limit_gtc has no 'limit_price'",
        ),
        ([], "order must be an object"),
    ],
)
def test_a_malformed_order_is_named(raw: object, named: str) -> None:
    with pytest.raises(MalformedResponse, match=named.replace(".", r"\.")):
        parse_order(raw)


def test_order_lists_name_the_index_of_the_bad_order() -> None:
    assert parse_orders({"orders": []}) == []
    with pytest.raises(MalformedResponse, match=r"orders\[1\] has no 'side'"):
        parse_orders({"orders": [order_json(), order_json(side=None)]})
    with pytest.raises(MalformedResponse, match="body has no 'orders'"):
        parse_orders({})


def test_order_created_needs_success_true() -> None:
    assert parse_order_created({"success": True, "success_response": order_json()}).order_id == (
        "ord-1"
    )
    with pytest.raises(MalformedResponse, match=r"body\.success must be true"):
        parse_order_created({"success": "yes", "success_response": order_json()})
    with pytest.raises(MalformedResponse, match=r"success_response\.product_id"):
        parse_order_created({"success": True, "success_response": order_json(product_id=7)})


def test_cancel_results_keep_only_successes() -> None:
    body = {
        "results": [
            {"success": True, "order_id": "a"},
            {"success": False, "order_id": "b", "failure_reason": "UNKNOWN_CANCEL_ORDER"},
        ]
    }
    assert parse_cancel_results(body) == ["a"]
    with pytest.raises(MalformedResponse, match=r"results\[0\]\.success must be true or false"):
        parse_cancel_results({"results": [{"success": "true", "order_id": "a"}]})


# ---------------------------------------------------------------------- accounts


def test_balances_and_positions_parse() -> None:
    accounts = {
        "accounts": [{"currency": "USD", "available_balance": {"value": "12.5", "currency": "USD"}}]
    }
    assert parse_balances(accounts) == [Balance("USD", Decimal("12.5"))]
    positions = {"positions": [{"product_id": "BTC-USD", "net_size": "-0.5"}]}
    assert parse_positions(positions) == {"BTC-USD": Decimal("-0.5")}


@pytest.mark.parametrize(
    ("parse", "raw", "named"),
    [
        (parse_balances, {"accounts": {}}, "body.accounts must be a list"),
        (parse_balances, {"accounts": [{"currency": "USD"}]}, "has no 'available_balance'"),
        (
            parse_balances,
            {"accounts": [{"currency": "USD", "available_balance": {"value": "lots"}}]},
            r"accounts\[0\]\.available_balance\.value must be a decimal number",
        ),
        (
            parse_positions,
            {"positions": [{"product_id": "X", "net_size": "1"}] * 2},
            r"positions\[1\]: 'X' is listed twice",
        ),
        (parse_positions, "positions", "body must be an object"),
    ],
)
def test_malformed_account_answers_are_named(parse: Any, raw: object, named: str) -> None:
    with pytest.raises(MalformedResponse, match=named):
        parse(raw)


# ---------------------------------------------------------------------- market


def test_pricebooks_take_the_best_level_and_skip_empty_books() -> None:
    body = {
        "pricebooks": [
            {
                "product_id": "BTC-USD",
                "bids": [{"price": "99.9", "size": "1"}, {"price": "99.8", "size": "3"}],
                "asks": [{"price": "100.1", "size": "1"}],
            },
            {"product_id": "ETH-USD", "bids": [], "asks": [{"price": "5", "size": "1"}]},
        ]
    }
    assert parse_pricebooks(body) == {
        "BTC-USD": Quote("BTC-USD", Decimal("99.9"), Decimal("100.1"))
    }
    with pytest.raises(MalformedResponse, match=r"pricebooks\[0\]\.asks\[0\]\.price must be > 0"):
        parse_pricebooks(
            {
                "pricebooks": [
                    {"product_id": "A", "bids": [{"price": "1"}], "asks": [{"price": "0"}]}
                ]
            }
        )


def test_ticker_and_product() -> None:
    ticker = {"best_bid": "9.99", "best_ask": "10.01", "trades": []}
    assert parse_ticker(ticker, "SOL-USD") == Quote("SOL-USD", Decimal("9.99"), Decimal("10.01"))
    with pytest.raises(MalformedResponse, match="body has no 'best_ask'"):
        parse_ticker({"best_bid": "1"}, "SOL-USD")
    product = {"product_id": "SOL-USD", "base_increment": "0.001", "quote_increment": "0.01"}
    assert parse_product(product, "SOL-USD").base_increment == Decimal("0.001")
    with pytest.raises(MalformedResponse, match="asked for 'BTC-USD'"):
        parse_product(product, "BTC-USD")


def test_preview_carries_the_request_and_the_venue_estimate() -> None:
    body = {"order_total": "50.025", "average_filled_price": "100.05", "slippage": "0.0005"}
    preview = parse_preview(body, MARKET)
    assert (preview.symbol, preview.side, preview.quantity) == ("BTC-USD", Side.BUY, Decimal("0.5"))
    assert (preview.expected_price, preview.slippage) == (Decimal("100.05"), Decimal("0.0005"))
    with pytest.raises(MalformedResponse, match=r"body\.slippage must be >= 0"):
        parse_preview({**body, "slippage": "-0.1"}, MARKET)


def test_server_time_is_timezone_aware() -> None:
    when = parse_server_time({"iso": "2024-05-01T12:00:00.000Z", "epochSeconds": "1714564800"})
    assert when == datetime(2024, 5, 1, 12, tzinfo=UTC)
    with pytest.raises(MalformedResponse, match="has no timezone"):
        parse_server_time({"iso": "2024-05-01T12:00:00", "epochSeconds": "1714564800"})
    with pytest.raises(MalformedResponse, match="not an ISO 8601 time"):
        parse_server_time({"iso": "yesterday", "epochSeconds": "1"})


# ---------------------------------------------------------------------- envelopes


def test_decode_json_refuses_what_is_not_json() -> None:
    assert decode_json(b'{"a": 1}') == {"a": 1}
    with pytest.raises(MalformedResponse, match="body is not JSON"):
        decode_json(b"<html>bad gateway</html>")
    with pytest.raises(MalformedResponse, match="body is not JSON"):
        decode_json(b"\xff\xfe")


@pytest.mark.parametrize(
    ("raw", "described"),
    [
        (b'{"error": "SERVICE_UNAVAILABLE", "message": "down"}', "SERVICE_UNAVAILABLE: down"),
        (
            b'{"success": false, "error_response": {"error": "NOT_FOUND", "message": "no"}}',
            "NOT_FOUND: no",
        ),
        (b'{"message": "only a message"}', "only a message"),
        (b"plain text failure\n", "'plain text failure'"),
        (b"", "empty body"),
    ],
)
def test_describe_error_reads_every_error_shape(raw: bytes, described: str) -> None:
    assert describe_error(raw) == described


@pytest.mark.parametrize(
    ("headers", "usage"),
    [
        ({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "25"}, 0.75),
        ({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "0"}, 1.0),
        ({"x-ratelimit-limit": "100", "x-ratelimit-remaining": "150"}, 0.0),  # clamped
        ({"x-ratelimit-limit": "100"}, None),
        ({"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0"}, None),
        ({"x-ratelimit-limit": "lots", "x-ratelimit-remaining": "1"}, None),
        ({"x-ratelimit-limit": "nan", "x-ratelimit-remaining": "1"}, None),
        ({}, None),
    ],
)
def test_rate_limit_usage_from_headers(headers: dict[str, str], usage: float | None) -> None:
    assert rate_limit_usage(headers) == usage


def test_circuit_open_is_a_broker_error_without_status() -> None:
    refused = CircuitOpen("orders")
    assert isinstance(refused, BrokerError)
    assert (refused.category, refused.status) == ("orders", None)
    assert "circuit breaker 'orders' refused the call" in str(refused)
