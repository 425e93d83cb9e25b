"""The Coinbase Advanced Trade message codec the feed client and the exchange share."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tradeguard.io._coinbase import (
    MalformedFeedMessage,
    Ticker,
    heartbeat_message,
    parse_message,
    subscribe_message,
    subscriptions_message,
    ticker_message,
)


def test_subscribe_names_channel_and_products() -> None:
    assert json.loads(subscribe_message("ticker", ["BTC-USD"])) == {
        "type": "subscribe",
        "channel": "ticker",
        "product_ids": ["BTC-USD"],
    }
    assert "product_ids" not in json.loads(subscribe_message("heartbeats", ["BTC-USD"]))


def test_ticker_round_trips() -> None:
    raw = ticker_message(7, {"BTC-USD": Decimal("101.25"), "ETH-USD": Decimal("3.5")})
    message = parse_message(raw)
    assert message.channel == "ticker"
    assert message.sequence == 7
    assert message.tickers == (
        Ticker("BTC-USD", Decimal("101.25")),
        Ticker("ETH-USD", Decimal("3.5")),
    )


def test_heartbeats_and_subscriptions_parse_without_tickers() -> None:
    assert parse_message(heartbeat_message(3, 9)).tickers == ()
    assert parse_message(subscriptions_message(0, {"ticker": ["BTC-USD"]})).channel == (
        "subscriptions"
    )


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("}{ not json", "not JSON"),
        ("[1, 2]", "object"),
        ('{"sequence_num": 1, "events": []}', "channel"),
        ('{"channel": "ticker", "sequence_num": -1, "events": []}', "sequence_num"),
        ('{"channel": "ticker", "sequence_num": true, "events": []}', "sequence_num"),
        ('{"channel": "ticker", "sequence_num": 1, "events": {}}', "events"),
        ('{"channel": "ticker", "sequence_num": 1, "events": [{"tickers": [1]}]}', "ticker"),
        (
            '{"channel": "ticker", "sequence_num": 1, "events": '
            '[{"tickers": [{"product_id": "X", "price": "NaN"}]}]}',
            "price",
        ),
        (
            '{"channel": "ticker", "sequence_num": 1, "events": '
            '[{"tickers": [{"product_id": "X", "price": 5}]}]}',
            "price",
        ),
        (
            '{"channel": "ticker", "sequence_num": 1, "events": [{"tickers": [{"price": "5"}]}]}',
            "product_id",
        ),
    ],
)
def test_malformed_messages_name_what_is_wrong(raw: str, named: str) -> None:
    with pytest.raises(MalformedFeedMessage, match=named):
        parse_message(raw)


def test_unsubscribe_names_channel_and_products() -> None:
    assert json.loads(subscribe_message("ticker", ["ETH-USD"], unsubscribe=True)) == {
        "type": "unsubscribe",
        "channel": "ticker",
        "product_ids": ["ETH-USD"],
    }


def test_a_snapshot_with_the_venues_ticker_fields_still_parses() -> None:
    details = {"BTC-USD": {"best_bid": "99.95", "best_ask": "100.05", "volume_24_h": "12"}}
    raw = ticker_message(0, {"BTC-USD": Decimal("100")}, snapshot=True, details=details)
    (event,) = json.loads(raw)["events"]
    assert event["type"] == "snapshot"
    assert event["tickers"] == [
        {
            "type": "ticker",
            "product_id": "BTC-USD",
            "price": "100",
            "best_bid": "99.95",
            "best_ask": "100.05",
            "volume_24_h": "12",
        }
    ]
    assert parse_message(raw).tickers == (Ticker("BTC-USD", Decimal("100")),)
