"""The admin API of `tradeguard exchange`: every control, seen by real clients over TLS."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import anyio
import ccxt.async_support as ccxt
import pytest
from ccxt.base.errors import ExchangeNotAvailable, RateLimitExceeded
from conftest import Admin, RunningExchange
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tradeguard.io.exchange.auth import ApiCredentials, build_jwt

pytestmark = pytest.mark.anyio

ACCOUNTS = "/api/v3/brokerage/accounts"


async def get(exchange: RunningExchange, path: str) -> tuple[int, dict[str, str], str]:
    """One signed GET, as the SDK signs it; returns status, headers and body text."""
    token = build_jwt(
        ApiCredentials(exchange.api_key, exchange.api_secret), f"GET {exchange.host_port}{path}"
    )
    connector = aiohttp.TCPConnector(ssl=exchange.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"{exchange.rest_url}{path}", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, await response.text()


def ccxt_client(exchange: RunningExchange) -> Any:
    client = ccxt.coinbase({"apiKey": exchange.api_key, "secret": exchange.api_secret})
    client.urls["api"]["rest"] = exchange.rest_url
    client.ssl_context = exchange.ssl_context()
    return client


async def test_a_503_storm_hits_every_call_until_deleted(
    exchange: RunningExchange, admin: Admin
) -> None:
    assert await admin.call("POST", "/faults", {"status": 503}) == (
        200,
        {"applied": {"status": 503}},
    )
    status, headers, text = await get(exchange, ACCOUNTS)
    assert status == 503 and "error storm" in text
    assert headers["x-ratelimit-limit"] == "100"
    client = ccxt_client(exchange)
    try:
        with pytest.raises(ExchangeNotAvailable):  # plain text: ccxt maps it by status
            await client.fetch_time()
        assert (await admin.call("DELETE", "/faults"))[0] == 200
        assert (await get(exchange, ACCOUNTS))[0] == 200
        assert await client.fetch_time() > 0
    finally:
        await client.close()


async def test_429_carries_the_rate_limit_headers(exchange: RunningExchange, admin: Admin) -> None:
    await admin.call("POST", "/faults", {"status": 429})
    status, headers, text = await get(exchange, ACCOUNTS)
    assert status == 429 and json.loads(text)["error"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-limit"] == "100"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) >= int(time.time())
    client = ccxt_client(exchange)
    try:
        with pytest.raises(RateLimitExceeded):
            await client.fetch_time()
    finally:
        await client.close()
    await admin.call("DELETE", "/faults")
    status, headers, _ = await get(exchange, ACCOUNTS)
    assert status == 200 and headers["x-ratelimit-remaining"] == "100"


async def test_latency_delays_every_call(exchange: RunningExchange, admin: Admin) -> None:
    await admin.call("POST", "/faults", {"latency_ms": 300})
    started = time.monotonic()
    assert (await get(exchange, ACCOUNTS))[0] == 200
    assert time.monotonic() - started >= 0.3
    assert (await admin.call("DELETE", "/faults"))[0] == 200
    assert (await get(exchange, ACCOUNTS))[0] == 200


async def test_request_counts_total_and_per_route(exchange: RunningExchange, admin: Admin) -> None:
    before = await admin.requests()
    await get(exchange, ACCOUNTS)
    await get(exchange, "/api/v3/brokerage/market/products")
    await get(exchange, "/api/v3/brokerage/no/such/route")
    after = await admin.requests()  # the admin's own requests are not counted
    assert after["total"] - before["total"] == 3
    for route in ("accounts", "market_products", "unmatched"):
        assert after["routes"][route] - before["routes"].get(route, 0) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/faults", {"status": 404}, "'status' must be 429 or a 5xx"),
        ("POST", "/faults", {"latency_ms": -1}, "'latency_ms' must be a number >= 0"),
        ("POST", "/faults", {"stauts": 503}, "unknown fault keys ['stauts']"),
        ("POST", "/faults", {}, "empty fault"),
        ("POST", "/faults", [503], "must be a JSON object"),
        ("POST", "/feed", {"action": "explode"}, "'action' must be one of drop, refuse"),
    ],
)
async def test_bad_admin_input_is_a_400_naming_the_problem(
    admin: Admin, method: str, path: str, body: object, says: str
) -> None:
    status, answer = await admin.call(method, path, body)
    assert status == 400 and says in answer["error"]


async def subscribed(exchange: RunningExchange) -> Any:
    ws = await connect(exchange.ws_url, ssl=exchange.ssl_context(), open_timeout=5)
    await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats", "product_ids": []}))
    await ws.send(
        json.dumps({"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]})
    )
    return ws


async def test_feed_drop_refuse_silence_resume(exchange: RunningExchange, admin: Admin) -> None:
    ws = await subscribed(exchange)
    with anyio.fail_after(5):
        await ws.recv()
    assert await admin.call("POST", "/feed", {"action": "drop"}) == (200, {"action": "drop"})
    with pytest.raises(ConnectionClosedError) as dropped:
        with anyio.fail_after(5):
            while True:
                await ws.recv()
    assert dropped.value.rcvd is not None and dropped.value.rcvd.code == 1011

    await admin.call("POST", "/feed", {"action": "refuse"})
    with pytest.raises(InvalidStatus) as refused:
        await connect(exchange.ws_url, ssl=exchange.ssl_context(), open_timeout=5)
    assert refused.value.response.status_code == 503

    await admin.call("POST", "/feed", {"action": "resume"})
    ws = await subscribed(exchange)
    try:
        with anyio.fail_after(5):
            await ws.recv()
        await admin.call("POST", "/feed", {"action": "silence"})
        await anyio.sleep(0.3)  # let anything already sent arrive
        while True:
            with anyio.move_on_after(0.05):
                await ws.recv()
                continue
            break
        with anyio.move_on_after(1.5) as quiet:  # longer than a heartbeat interval
            await ws.recv()
        assert quiet.cancel_called, "a silenced feed sent a message"
        await admin.call("POST", "/feed", {"action": "resume"})
        with anyio.fail_after(5):
            message = json.loads(await ws.recv())
        assert message["channel"] in ("ticker", "heartbeats")
    finally:
        await ws.close()
