"""The Advanced Trade wire format by hand: JSON bodies the REST server writes and reads.

Shapes follow the official SDK's typed responses (``coinbase/rest/types``) and what ccxt's
``coinbase`` class reads (``parse_order``, ``parse_spot_market``, ``parse_custom_balance``,
``parse_trade``): numbers as strings, times as RFC 3339 with ``Z``, enums in upper snake case.
Pure functions, no I/O: the server owns the state.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, final

from tradeguard.fsm import Side
from tradeguard.io.broker import Order, OrderStatus
from tradeguard.io.exchange.market import Market
from tradeguard.io.exchange.venue import Fill, ForeignOrder, Venue

__all__ = [
    "FOREIGN_KINDS",
    "MODELLED_KINDS",
    "BadRequest",
    "OrderTerms",
    "account_json",
    "fill_json",
    "foreign_order_json",
    "iso",
    "order_json",
    "order_terms",
    "product_json",
]

# Order types `Order` models (market, limit) and the ones kept verbatim (`ForeignOrder`).
MODELLED_KINDS = frozenset(
    {"market_market_ioc", "limit_limit_gtc", "limit_limit_gtd", "sor_limit_ioc", "limit_limit_fok"}
)
FOREIGN_KINDS = frozenset(
    {
        "stop_limit_stop_limit_gtc",
        "stop_limit_stop_limit_gtd",
        "trigger_bracket_gtc",
        "trigger_bracket_gtd",
    }
)
_TIME_IN_FORCE = {
    "market_market_ioc": "IMMEDIATE_OR_CANCEL",
    "limit_limit_gtc": "GOOD_UNTIL_CANCELLED",
    "limit_limit_gtd": "GOOD_UNTIL_DATE_TIME",
    "sor_limit_ioc": "IMMEDIATE_OR_CANCEL",
    "limit_limit_fok": "FILL_OR_KILL",
    "stop_limit_stop_limit_gtc": "GOOD_UNTIL_CANCELLED",
    "stop_limit_stop_limit_gtd": "GOOD_UNTIL_DATE_TIME",
    "trigger_bracket_gtc": "GOOD_UNTIL_CANCELLED",
    "trigger_bracket_gtd": "GOOD_UNTIL_DATE_TIME",
}
_ORDER_TYPE = {
    "market_market_ioc": "MARKET",
    "limit_limit_gtc": "LIMIT",
    "limit_limit_gtd": "LIMIT",
    "sor_limit_ioc": "LIMIT",
    "limit_limit_fok": "LIMIT",
    "stop_limit_stop_limit_gtc": "STOP_LIMIT",
    "stop_limit_stop_limit_gtd": "STOP_LIMIT",
    "trigger_bracket_gtc": "BRACKET",
    "trigger_bracket_gtd": "BRACKET",
}
_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "USD": "US Dollar"}
_FIAT = frozenset({"USD", "EUR", "GBP"})
_ZERO = "0"


class BadRequest(ValueError):
    """A request body or query the server cannot read: answered 400 INVALID_ARGUMENT."""


def iso(when: datetime | None) -> str | None:
    """RFC 3339 with a ``Z``, as the venue writes times."""
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def currency_name(code: str) -> str:
    """A display name for a currency code."""
    return _NAMES.get(code, code)


def is_fiat(code: str) -> bool:
    """Whether the venue files ``code`` as fiat (``ACCOUNT_TYPE_FIAT``, ``/v2/currencies``)."""
    return code in _FIAT


# ---------------------------------------------------------------------- requests


@final
@dataclass(frozen=True, slots=True)
class OrderTerms:
    """A create or preview body, read: what to trade, in the words of the wire."""

    symbol: str
    side: Side
    client_order_id: str
    kind: str
    configuration: Mapping[str, Any]
    base_size: Decimal | None
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    end_time: datetime | None = None
    post_only: bool = False


def order_terms(body: Mapping[str, Any], *, client_id_required: bool) -> OrderTerms:
    """Read a create (or preview) body. Types and shape only: the venue judges the values.

    Raises:
        BadRequest: a field is missing or of the wrong type; the message names it.
    """
    client_id = body.get("client_order_id", "")
    symbol, side = body.get("product_id"), body.get("side")
    if not isinstance(client_id, str) or (client_id_required and not client_id):
        raise BadRequest(f"'client_order_id' must be a non-empty string, got {client_id!r}")
    if not isinstance(symbol, str) or not symbol:
        raise BadRequest(f"'product_id' must be a non-empty string, got {symbol!r}")
    if side not in ("BUY", "SELL"):
        raise BadRequest(f"'side' must be 'BUY' or 'SELL', got {side!r}")
    config = body.get("order_configuration")
    if not isinstance(config, dict) or len(config) != 1:
        raise BadRequest(f"'order_configuration' must hold one order type, got {config!r}")
    kind, terms = next(iter(config.items()))
    if kind not in MODELLED_KINDS | FOREIGN_KINDS or not isinstance(terms, dict):
        raise BadRequest(f"unsupported order configuration {kind!r}")
    base = quote = limit = None
    if kind == "market_market_ioc":
        if ("base_size" in terms) == ("quote_size" in terms):
            raise BadRequest(f"market_market_ioc needs one of base_size, quote_size: {terms!r}")
        if "base_size" in terms:
            base = _decimal(terms, "base_size")
        else:
            quote = _decimal(terms, "quote_size")
    else:
        base = _decimal(terms, "base_size")
        limit = _decimal(terms, "limit_price")
    for key in ("stop_price", "stop_trigger_price"):
        if key in terms:
            _decimal(terms, key)
    end = _end_time(terms) if kind.endswith("_gtd") else None
    post_only = terms.get("post_only", False)
    if not isinstance(post_only, bool):
        raise BadRequest(f"'post_only' must be true or false, got {post_only!r}")
    return OrderTerms(
        symbol, Side(side), client_id, kind, config, base, quote, limit, end, post_only
    )


def _decimal(terms: Mapping[str, Any], key: str) -> Decimal:
    text = terms.get(key)
    try:
        value = Decimal(text) if isinstance(text, str) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise BadRequest(f"{key!r} must be a decimal number written as a string, got {text!r}")
    return value


def _end_time(terms: Mapping[str, Any]) -> datetime:
    text = terms.get("end_time")
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadRequest(f"'end_time' must be an RFC 3339 time with a zone, got {text!r}")
    return when


# ---------------------------------------------------------------------- responses


def product_json(
    market: Market, symbol: str, base_increment: Decimal, quote_increment: Decimal
) -> dict[str, Any]:
    """One product as ``/products`` and ``/market/products`` list it."""
    base, _, quote = symbol.partition("-")
    price = market.prices[symbol]
    bid, ask = market.bid_ask(symbol)
    return {
        "product_id": symbol,
        "price": str(price),
        "price_percentage_change_24h": str(market.change_percent(symbol)),
        "volume_24h": str(market.volume[symbol]),
        "volume_percentage_change_24h": _ZERO,
        "base_increment": str(base_increment),
        "quote_increment": str(quote_increment),
        "quote_min_size": "1",
        "quote_max_size": "150000000",
        "base_min_size": str(base_increment),
        "base_max_size": "3400",
        "base_name": currency_name(base),
        "quote_name": currency_name(quote),
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": base,
        "fcm_trading_session_details": None,
        "mid_market_price": str((bid + ask) / 2),
        "alias": "",
        "alias_to": [],
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": False,
        "price_increment": str(quote_increment),
        "display_name": symbol,
        "product_venue": "CBE",
        "approximate_quote_24h_volume": str(
            (market.volume[symbol] * price).quantize(Decimal("0.01"))
        ),
    }


def account_json(
    account_id: str, currency: str, available: Decimal, created: datetime
) -> dict[str, Any]:
    """One account as ``/accounts`` lists it; nothing is ever on hold here."""
    return {
        "uuid": account_id,
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": {"value": str(available), "currency": currency},
        "default": True,
        "active": True,
        "created_at": iso(created),
        "updated_at": iso(created),
        "deleted_at": None,
        "type": "ACCOUNT_TYPE_FIAT" if is_fiat(currency) else "ACCOUNT_TYPE_CRYPTO",
        "ready": True,
        "hold": {"value": _ZERO, "currency": currency},
        "retail_portfolio_id": _PORTFOLIO,
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


_PORTFOLIO = str(uuid.UUID(int=0x7ADE9A4D, version=4))
_USER = str(uuid.UUID(int=0x5E11, version=4))


def _default_configuration(order: Order) -> dict[str, Any]:
    size = str(order.quantity)
    if order.limit_price is None:
        return {"market_market_ioc": {"base_size": size}}
    return {
        "limit_limit_gtc": {
            "base_size": size,
            "limit_price": str(order.limit_price),
            "post_only": False,
        }
    }


def order_json(venue: Venue, order: Order) -> dict[str, Any]:
    """One order `Order` models, as ``/orders/historical/...`` reports it."""
    config = dict(venue.configurations.get(order.order_id) or _default_configuration(order))
    kind = next(iter(config))
    filled = order.fill_price is not None
    status = "EXPIRED" if order.order_id in venue.expired else order.status.value
    value = order.quantity * order.fill_price if order.fill_price is not None else Decimal(0)
    fill_times = [f.time for f in venue.fills if f.order_id == order.order_id]
    return _order_fields(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        kind=kind,
        config=config,
        status=status,
        created=venue.created.get(order.order_id),
        filled_size=str(order.quantity) if filled else _ZERO,
        average=str(order.fill_price) if filled else _ZERO,
        filled_value=str(value),
        fills=len(fill_times),
        last_fill=fill_times[-1] if fill_times else None,
        open_hold=str(order.quantity * order.limit_price)
        if order.status is OrderStatus.OPEN
        and order.limit_price is not None
        and order.side is Side.BUY
        else _ZERO,
    )


def foreign_order_json(order: ForeignOrder) -> dict[str, Any]:
    """An order of a type `Order` does not model, as the venue reports it: never triggered."""
    kind = next(iter(order.configuration))
    return _order_fields(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        kind=kind,
        config=dict(order.configuration),
        status=order.status.value,
        created=order.created,
        filled_size=_ZERO,
        average=_ZERO,
        filled_value=_ZERO,
        fills=0,
        last_fill=None,
        open_hold=_ZERO,
    )


def _order_fields(
    *,
    order_id: str,
    client_order_id: str,
    symbol: str,
    side: Side,
    kind: str,
    config: dict[str, Any],
    status: str,
    created: datetime | None,
    filled_size: str,
    average: str,
    filled_value: str,
    fills: int,
    last_fill: datetime | None,
    open_hold: str,
) -> dict[str, Any]:
    done = status != "OPEN"
    return {
        "order_id": order_id,
        "product_id": symbol,
        "user_id": _USER,
        "order_configuration": config,
        "side": side.value,
        "client_order_id": client_order_id,
        "status": status,
        "time_in_force": _TIME_IN_FORCE[kind],
        "created_time": iso(created),
        "completion_percentage": "100" if status == "FILLED" else _ZERO,
        "filled_size": filled_size,
        "average_filled_price": average,
        "fee": "",
        "number_of_fills": str(fills),
        "filled_value": filled_value,
        "pending_cancel": False,
        "size_in_quote": "quote_size" in config.get(kind, {}),
        "total_fees": _ZERO,
        "size_inclusive_of_fees": False,
        "total_value_after_fees": filled_value,
        "trigger_status": "STOP_PENDING"
        if kind in FOREIGN_KINDS and not done
        else "INVALID_ORDER_TYPE",
        "order_type": _ORDER_TYPE[kind],
        "reject_reason": "",
        "settled": done,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": "User requested cancel" if status == "CANCELLED" else "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": open_hold,
        "is_liquidation": False,
        "last_fill_time": iso(last_fill),
        "edit_history": [],
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": _PORTFOLIO,
        "originating_order_id": "",
        "attached_order_id": "",
        "attached_order_configuration": None,
    }


def fill_json(fill: Fill) -> dict[str, Any]:
    """One fill as ``/orders/historical/fills`` lists it (no fees are charged here)."""
    return {
        "entry_id": fill.entry_id,
        "trade_id": fill.trade_id,
        "order_id": fill.order_id,
        "trade_time": iso(fill.time),
        "trade_type": "FILL",
        "price": str(fill.price),
        "size": str(fill.size),
        "commission": _ZERO,
        "product_id": fill.symbol,
        "sequence_timestamp": iso(fill.time),
        "liquidity_indicator": "TAKER",
        "size_in_quote": False,
        "user_id": _USER,
        "side": fill.side.value,
        "retail_portfolio_id": _PORTFOLIO,
    }
