"""Coinbase Advanced Trade market-data messages: building and parsing, no I/O.

Shapes follow the venue's public websocket feed: a client sends
``{"type": "subscribe", "product_ids": [...], "channel": "ticker"}`` (and ``"heartbeats"``);
every message carries ``channel``, ``timestamp``, a per-connection ``sequence_num`` and a list
of ``events``. Ticker events (a ``snapshot`` first, then ``update`` events) hold ``tickers``
with ``product_id`` and ``price`` and, at the venue, the quote and 24-hour statistics
(``best_bid``, ``best_ask``, ``volume_24_h``, ...: `ticker_message` takes them as ``details``;
the parser reads only what the feed client needs). The embedded
exchange writes these and the feed client reads them, so the client works against the real
venue unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, final

from tradeguard.errors import MalformedFeedMessage

__all__ = [
    "FeedMessage",
    "MalformedFeedMessage",
    "Ticker",
    "heartbeat_message",
    "parse_message",
    "subscribe_message",
    "subscriptions_message",
    "ticker_message",
]

CHANNELS = ("ticker", "heartbeats")


@final
@dataclass(frozen=True, slots=True)
class Ticker:
    """One ticker update: a fresh price for ``symbol``."""

    symbol: str
    price: Decimal


@final
@dataclass(frozen=True, slots=True)
class FeedMessage:
    """A parsed message: its channel, sequence number and any tickers it carried."""

    channel: str
    sequence: int
    tickers: tuple[Ticker, ...] = ()


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def subscribe_message(channel: str, product_ids: list[str], *, unsubscribe: bool = False) -> str:
    """A subscribe (or unsubscribe) request for ``channel`` (``"heartbeats"`` takes no
    products)."""
    kind = "unsubscribe" if unsubscribe else "subscribe"
    body: dict[str, Any] = {"type": kind, "channel": channel}
    if channel != "heartbeats":
        body["product_ids"] = product_ids
    return json.dumps(body)


def ticker_message(
    sequence: int,
    prices: Mapping[str, Decimal],
    *,
    snapshot: bool = False,
    details: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """A ticker message carrying one ticker per symbol.

    Args:
        sequence: the connection's sequence number for this message.
        prices: the last price per symbol.
        snapshot: the first ticker message of a subscription (event type ``snapshot``).
        details: more ticker fields per symbol (``best_bid``, ``volume_24_h``, ...).
    """
    extra = details or {}
    tickers = [
        {"type": "ticker", "product_id": symbol, "price": str(price), **extra.get(symbol, {})}
        for symbol, price in prices.items()
    ]
    event = {"type": "snapshot" if snapshot else "update", "tickers": tickers}
    return json.dumps(
        {
            "channel": "ticker",
            "client_id": "",
            "timestamp": _stamp(None),
            "sequence_num": sequence,
            "events": [event],
        }
    )


def heartbeat_message(sequence: int, counter: int) -> str:
    """A heartbeat message."""
    now = _stamp(None)
    return json.dumps(
        {
            "channel": "heartbeats",
            "client_id": "",
            "timestamp": now,
            "sequence_num": sequence,
            "events": [{"current_time": now, "heartbeat_counter": counter}],
        }
    )


def subscriptions_message(sequence: int, subscribed: dict[str, list[str]]) -> str:
    """The acknowledgement a server sends after a subscribe."""
    return json.dumps(
        {
            "channel": "subscriptions",
            "client_id": "",
            "timestamp": _stamp(None),
            "sequence_num": sequence,
            "events": [{"subscriptions": subscribed}],
        }
    )


def parse_message(raw: str | bytes) -> FeedMessage:
    """Parse one message from the feed.

    Raises:
        MalformedFeedMessage: not JSON, or a required field is missing or of the wrong type.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedFeedMessage(f"not JSON: {err}") from None
    if not isinstance(body, dict):
        raise MalformedFeedMessage(f"expected an object, got {type(body).__name__}")
    channel = body.get("channel")
    sequence = body.get("sequence_num")
    events = body.get("events")
    if not isinstance(channel, str):
        raise MalformedFeedMessage(f"'channel' must be a string, got {channel!r}")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise MalformedFeedMessage(f"'sequence_num' must be an int >= 0, got {sequence!r}")
    if not isinstance(events, list):
        raise MalformedFeedMessage(f"'events' must be a list, got {events!r}")
    if channel != "ticker":
        return FeedMessage(channel, sequence)
    tickers = []
    for event in events:
        for item in event.get("tickers", []) if isinstance(event, dict) else [None]:
            tickers.append(_ticker(item))
    return FeedMessage(channel, sequence, tuple(tickers))


def _ticker(item: object) -> Ticker:
    if not isinstance(item, dict):
        raise MalformedFeedMessage(f"a ticker must be an object, got {item!r}")
    symbol, price = item.get("product_id"), item.get("price")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedFeedMessage(f"ticker 'product_id' must be a string, got {symbol!r}")
    try:
        # Only strings: a float price has already lost digits. Decimal(str) parses once.
        value = Decimal(price) if isinstance(price, str) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value <= 0:
        raise MalformedFeedMessage(f"ticker price for {symbol} must be > 0, got {price!r}")
    return Ticker(symbol, value)
