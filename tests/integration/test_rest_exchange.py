"""The REST half of the embedded exchange over real sockets on 127.0.0.1, driven by plain HTTP.

Requests are signed as the official SDK signs them (an ES256 JWT from `server.credentials`).
Every route round-trips; every transport fault control and every venue fault shows on the
wire as its status, body and rate-limit headers. Tests wait for conditions with a deadline,
never for a fixed sleep.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import anyio
import pytest

from tradeguard import Side
from tradeguard.io.broker import BOT_PREFIX, OrderRequest, OrderStatus
from tradeguard.io.exchange import ExchangeRestServer, Market, Venue
from tradeguard.io.exchange.auth import ApiCredentials, build_jwt
from tradeguard.io.exchange.rest_server import API_PREFIX

pytestmark = pytest.mark.anyio

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
SERVER_SEED = 3


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or the text when the body is not JSON


@dataclass
class Client:
    """Plain aiohttp with the SDK's signing: one JWT per request, naming method and path."""

    server: ExchangeRestServer
    session: aiohttp.ClientSession
    credentials: ApiCredentials | None
    timeout: float = 5.0

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: object = None,
    ) -> Answer:
        headers = {}
        if self.credentials is not None:
            uri = f"{method} {self.server.host}:{self.server.port}{path}"
            headers["Authorization"] = f"Bearer {build_jwt(self.credentials, uri)}"
        async with self.session.request(
            method,
            f"{self.server.url}{path}",
            params=params,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:
            text = await response.text()
            parsed: Any = text
            if response.content_type == "application/json":
                parsed = await response.json()
            return Answer(response.status, response.headers, parsed)

    async def get(self, path: str, **params: str) -> Answer:
        return await self.call("GET", f"{API_PREFIX}{path}", params=list(params.items()))

    async def post(self, path: str, body: object) -> Answer:
        return await self.call("POST", f"{API_PREFIX}{path}", body=body)


@dataclass
class Exchange:
    venue: Venue
    server: ExchangeRestServer
    client: Client


@asynccontextmanager
async def exchange(*, timeout: float = 5.0, **options: Any) -> AsyncIterator[Exchange]:
    """A REST server on 127.0.0.1 and a signed client; both closed on exit."""
    venue = Venue(Market(SYMBOLS, random.Random(1)), random.Random(2))
    async with ExchangeRestServer(venue, rng=random.Random(SERVER_SEED), **options) as server:
        context = (
            None
            if server.ca_file is None
            else ssl.create_default_context(cafile=str(server.ca_file))
        )
        connector = aiohttp.TCPConnector(ssl=context) if context else aiohttp.TCPConnector()
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Exchange(venue, server, Client(server, session, server.credentials, timeout))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def market_body(symbol: str, side: str, size: str, client_id: str) -> dict[str, Any]:
    return {
        "client_order_id": client_id,
        "product_id": symbol,
        "side": side,
        "order_configuration": {"market_market_ioc": {"base_size": size}},
    }


def limit_body(symbol: str, side: str, size: str, price: str, client_id: str) -> dict[str, Any]:
    terms = {"base_size": size, "limit_price": price, "post_only": False}
    return {
        "client_order_id": client_id,
        "product_id": symbol,
        "side": side,
        "order_configuration": {"limit_limit_gtc": terms},
    }


# ---------------------------------------------------------------------- authentication


async def test_private_routes_need_a_jwt_from_the_servers_key() -> None:
    async with exchange() as ex:
        assert ex.server.auth is True
        anonymous = Client(ex.server, ex.client.session, None)
        missing = await anonymous.get("/accounts")
        assert missing.status == 401 and missing.body["error"] == "unauthorized"
        other = Client(ex.server, ex.client.session, ApiCredentials.generate())
        wrong = await other.get("/accounts")
        assert wrong.status == 401 and "kid" in wrong.body["message"]
        assert (await anonymous.get("/time")).status == 200  # public
        assert (await anonymous.get("/market/products")).status == 200
        assert (await ex.client.get("/accounts")).status == 200


async def test_auth_off_accepts_any_request_and_credentials_can_be_given() -> None:
    credentials = ApiCredentials.generate()
    async with exchange(auth=False, credentials=credentials) as ex:
        assert ex.server.credentials is credentials
        anonymous = Client(ex.server, ex.client.session, None)
        assert (await anonymous.get("/accounts")).status == 200


async def test_tls_serves_https_with_a_ca_the_server_removes_on_stop() -> None:
    async with exchange(tls=True) as ex:
        assert ex.server.url.startswith("https://127.0.0.1:")
        ca_file = ex.server.ca_file
        assert ca_file is not None and ca_file.is_file()
        assert (await ex.client.get("/accounts")).status == 200
    assert not ca_file.exists()


# ---------------------------------------------------------------------- every route


async def test_accounts_after_fills_and_positions() -> None:
    async with exchange() as ex:
        assert (
            await ex.client.post("/orders", market_body("BTC-USD", "BUY", "0.5", "b1"))
        ).status == 200
        assert (
            await ex.client.post("/orders", market_body("BTC-USD", "SELL", "1", "b2"))
        ).status == 200
        accounts = (await ex.client.get("/accounts")).body
        balances = {
            a["currency"]: Decimal(a["available_balance"]["value"]) for a in accounts["accounts"]
        }
        assert balances["BTC"] == Decimal("-0.5") and balances["ETH"] == 0
        assert balances["USD"] == ex.venue.balances["USD"]
        positions = (await ex.client.get("/cfm/positions")).body["positions"]
        assert positions == [{"product_id": "BTC-USD", "net_size": "-0.5"}]
        page = (await ex.client.get("/accounts", limit="2")).body
        assert len(page["accounts"]) == 2 and page["has_next"] and page["cursor"] == "2"


async def test_market_and_limit_orders_and_the_open_order_list() -> None:
    async with exchange() as ex:
        filled = await ex.client.post("/orders", market_body("ETH-USD", "BUY", "2", "bot-m"))
        order_id = filled.body["success_response"]["order_id"]
        assert ex.venue.orders[order_id].status is OrderStatus.FILLED
        resting = await ex.client.post("/orders", limit_body("ETH-USD", "BUY", "1", "50", "bot-l"))
        rest_id = resting.body["success_response"]["order_id"]
        listed = (await ex.client.get("/orders/historical/batch", order_status="OPEN")).body
        assert [o["order_id"] for o in listed["orders"]] == [rest_id]
        assert listed["orders"][0]["order_configuration"]["limit_limit_gtc"]["limit_price"] == "50"
        got = (await ex.client.get(f"/orders/historical/{order_id}")).body["order"]
        assert got["status"] == "FILLED" and Decimal(got["filled_size"]) == 2
        fills = (await ex.client.get("/orders/historical/fills")).body["fills"]
        assert [f["order_id"] for f in fills] == [order_id]


async def test_placing_the_same_client_id_twice_returns_the_same_order() -> None:
    async with exchange() as ex:
        body = market_body("BTC-USD", "BUY", "0.25", "bot-same")
        first = await ex.client.post("/orders", body)
        again = await ex.client.post("/orders", body)
        assert first.body["order_id"] == again.body["order_id"]
        assert ex.server.request_counts["create_order"] == 2 and len(ex.venue.orders) == 1


async def test_cancel_answers_per_order() -> None:
    async with exchange() as ex:
        resting = await ex.client.post("/orders", limit_body("SOL-USD", "SELL", "1", "500", "c"))
        order_id = resting.body["order_id"]
        results = (
            await ex.client.post("/orders/batch_cancel", {"order_ids": [order_id, "x"]})
        ).body
        assert [r["success"] for r in results["results"]] == [True, False]
        assert ex.venue.orders[order_id].status is OrderStatus.CANCELLED


async def test_a_gtd_order_expires_at_its_end_time() -> None:
    async with exchange() as ex:
        end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = limit_body("BTC-USD", "BUY", "1", "10", "gtd")
        body["order_configuration"] = {
            "limit_limit_gtd": {"base_size": "1", "limit_price": "10", "end_time": end}
        }
        order_id = (await ex.client.post("/orders", body)).body["order_id"]
        ex.venue.expire_due(datetime.now(UTC) + timedelta(hours=2))
        order = (await ex.client.get(f"/orders/historical/{order_id}")).body["order"]
        assert order["status"] == "EXPIRED"
        assert ex.venue.orders[order_id].status is OrderStatus.CANCELLED


async def test_batched_quotes_with_and_without_omitted_symbols() -> None:
    async with exchange() as ex:
        books = (await ex.client.get("/best_bid_ask")).body["pricebooks"]
        assert [b["product_id"] for b in books] == sorted(SYMBOLS)
        ex.server.omit_from_batch(["ETH-USD"])
        partial = (await ex.client.get("/best_bid_ask", product_ids="BTC-USD,ETH-USD")).body
        assert [b["product_id"] for b in partial["pricebooks"]] == ["BTC-USD"]
        ticker = (await ex.client.get("/products/ETH-USD/ticker", limit="1")).body
        quote = ex.venue.quote("ETH-USD")
        assert (Decimal(ticker["best_bid"]), Decimal(ticker["best_ask"])) == (quote.bid, quote.ask)
        ex.server.omit_from_batch([])
        assert len((await ex.client.get("/best_bid_ask")).body["pricebooks"]) == 3


async def test_preview_shows_a_slippage_spike_and_places_nothing() -> None:
    async with exchange() as ex:
        body = market_body("BTC-USD", "BUY", "1", "")
        calm = (await ex.client.post("/orders/preview", body)).body
        assert Decimal(calm["average_filled_price"]) == ex.venue.quote("BTC-USD").ask
        ex.venue.faults.slippage = Decimal("0.02")
        spiked = (await ex.client.post("/orders/preview", body)).body
        assert Decimal(spiked["slippage"]) > Decimal("0.02")
        assert ex.venue.orders == {}


async def test_every_response_carries_rate_limit_headers() -> None:
    async with exchange() as ex:
        for path in ("/accounts", "/no/such/route", "/products/DOGE-USD"):
            answer = await ex.client.get(path)
            assert answer.headers["x-ratelimit-limit"] == "100"
            assert answer.headers["x-ratelimit-remaining"] == "100"
            assert int(answer.headers["x-ratelimit-reset"]) >= int(time.time())
        assert answer.status == 404 and answer.body["error"] == "NOT_FOUND"
        assert ex.server.request_counts == {"accounts": 1, "unmatched": 1, "product": 1}
        ex.server.reset_counts()
        assert ex.server.request_counts == {}


# ---------------------------------------------------------------------- transport faults


async def test_error_storm_answers_plain_text_with_the_status() -> None:
    async with exchange() as ex:
        ex.server.error_storm(1.0)
        answer = await ex.client.get("/accounts")
        assert answer.status == 503 and "error storm" in answer.body
        ex.server.error_storm(0)
        assert (await ex.client.get("/accounts")).status == 200


async def test_error_storm_draws_every_request_from_the_injected_rng() -> None:
    async with exchange() as ex:
        ex.server.error_storm(0.5, status=500)
        outcomes = [
            (await ex.client.get("/products/BTC-USD/ticker", limit="1")).status for _ in range(20)
        ]
        replay = random.Random(SERVER_SEED)
        assert outcomes == [500 if replay.random() < 0.5 else 200 for _ in range(20)]
        assert {200, 500} == set(outcomes)


async def test_rate_limited_answers_429_with_nothing_remaining() -> None:
    async with exchange() as ex:
        ex.server.rate_limited(True)
        limited = await ex.client.get("/orders/historical/batch")
        assert limited.status == 429 and limited.body["error"] == "rate_limit_exceeded"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        ex.server.rate_limited(False)
        assert (await ex.client.get("/orders/historical/batch")).headers[
            "x-ratelimit-remaining"
        ] == "100"


async def test_usage_shows_in_the_remaining_header() -> None:
    async with exchange() as ex:
        ex.server.set_usage(0.95)
        answer = await ex.client.get("/products/BTC-USD/ticker", limit="1")
        assert answer.status == 200 and answer.headers["x-ratelimit-remaining"] == "5"


async def test_latency_delays_each_answer() -> None:
    async with exchange() as ex:
        ex.server.set_latency(0.1)
        started = time.monotonic()
        await ex.client.get("/time")
        assert time.monotonic() - started >= 0.1


async def test_hang_holds_requests_until_released() -> None:
    async with exchange(timeout=0.2) as ex:
        ex.server.hang(True)
        with pytest.raises(TimeoutError):
            await ex.client.get("/orders/historical/batch")
        ex.server.hang(False)
        assert (await ex.client.get("/orders/historical/batch")).status == 200


async def test_a_lost_response_still_placed_the_order() -> None:
    async with exchange() as ex:
        ex.server.lose_responses(1)
        body = market_body("BTC-USD", "BUY", "1", "bot-lost")
        lost = await ex.client.post("/orders", body)
        assert lost.status == 503 and "response lost" in lost.body
        retried = await ex.client.post("/orders", body)
        assert retried.status == 200 and len(ex.venue.orders) == 1
        assert ex.venue.positions == {"BTC-USD": Decimal(1)}


async def test_server_down_then_back_on_the_same_port() -> None:
    async with exchange() as ex:
        port = ex.server.port
        await ex.server.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await ex.client.get("/time")
        await ex.server.start()
        assert ex.server.port == port and (await ex.client.get("/time")).status == 200


async def test_shutdown_with_a_hung_request_answers_it_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    statuses: list[int] = []
    with anyio.fail_after(5):
        async with exchange(timeout=30.0) as ex:
            ex.server.hang(True)

            async def read() -> None:
                statuses.append((await ex.client.get("/accounts")).status)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await wait_until(lambda: ex.server.request_counts["accounts"] == 1)
                await ex.server.stop()
    assert statuses == [503]
    assert asyncio.all_tasks() == before


# ---------------------------------------------------------------------- venue faults


async def test_failing_reads_previews_and_products() -> None:
    async with exchange() as ex:
        ex.venue.faults.failing_reads = {"balances"}
        failed = await ex.client.get("/accounts")
        assert failed.status == 503 and "balances read failing" in failed.body["message"]
        assert (await ex.client.get("/cfm/positions")).status == 200
        ex.venue.faults.failing_previews = True
        preview = await ex.client.post("/orders/preview", market_body("BTC-USD", "BUY", "1", ""))
        assert preview.status == 500 and "preview failing" in preview.body["message"]
        ex.venue.faults.failing_products = True
        assert (await ex.client.get("/products/BTC-USD")).status == 500


async def test_client_errors_name_the_problem() -> None:
    async with exchange() as ex:
        unknown = await ex.client.post("/orders", market_body("DOGE-USD", "BUY", "1", "x"))
        assert unknown.status == 404 and unknown.body["success"] is False
        assert "unknown product 'DOGE-USD'" in unknown.body["error_response"]["message"]
        negative = await ex.client.post("/orders", market_body("BTC-USD", "BUY", "-1", "y"))
        assert (
            negative.status == 400
            and "quantity must be > 0" in negative.body["error_response"]["message"]
        )
        ticker = await ex.client.get("/products/BTC-USD/ticker")
        assert ticker.status == 400 and "'limit' is required" in ticker.body["message"]


async def test_drift_and_foreign_orders_show_in_the_open_orders() -> None:
    async with exchange() as ex:
        ghosts = ex.venue.inject_unknown_orders("BTC-USD", count=2)
        stop = ex.venue.inject_foreign_order("ETH-USD")
        bracket = ex.venue.inject_foreign_order("ETH-USD", "trigger_bracket_gtc")
        listed = (await ex.client.get("/orders/historical/batch", order_status="OPEN")).body
        kinds = {o["order_id"]: o["order_type"] for o in listed["orders"]}
        assert kinds == {
            ghosts[0]: "LIMIT",
            ghosts[1]: "LIMIT",
            stop.order_id: "STOP_LIMIT",
            bracket.order_id: "BRACKET",
        }
        bot_owned = [o for o in listed["orders"] if o["client_order_id"].startswith(BOT_PREFIX)]
        assert sorted(o["order_id"] for o in bot_owned) == sorted(ghosts)
        # The in-memory books model only market and limit orders.
        assert sorted(o.order_id for o in ex.venue.list_orders()) == sorted(ghosts)
        assert ex.venue.cancel([stop.order_id]) == [stop.order_id]
        with pytest.raises(ValueError, match="stop_limit_"):
            ex.venue.inject_foreign_order("ETH-USD", "market_market_ioc")


async def test_the_venue_api_still_places_orders_directly() -> None:
    async with exchange() as ex:
        order = ex.venue.place(OrderRequest("BTC-USD", Side.BUY, Decimal(1), "direct"))
        got = (await ex.client.get(f"/orders/historical/{order.order_id}")).body["order"]
        assert got["order_configuration"] == {"market_market_ioc": {"base_size": "1"}}
