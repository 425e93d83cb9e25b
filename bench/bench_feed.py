"""Benchmarks of the websocket feed against the embedded exchange over 127.0.0.1 (issue 15).

1. Flat out: tickers/s the `FeedClient` takes in (parsed, marks observed, buffered, with a
   consumer reading) against a raw ``websockets`` + ``json.loads`` client, both fed the same
   burst of one-ticker messages by the same embedded feed server in this run.
   Target: >= 0.8x the raw client.
   The server shares the event loop with the client, so both figures are also bounded by
   what it can send; the ratio is what counts.
2. 20,000 msg/s over 1,000 symbols with an idle consumer (nothing reads until the end):
   latest tickers per symbol lost (the buffered ticker is not the last one sent). Target: 0.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import anyio
from websockets.asyncio.client import connect

from tradeguard import ReliabilityLayer, Settings
from tradeguard.io import FeedClient, Runtime
from tradeguard.io._coinbase import subscribe_message
from tradeguard.io.exchange import ExchangeFeedServer, Market

FLAT_OUT = 50_000
FLAT_SYMBOLS = [f"F{i:02d}-USD" for i in range(20)]
PACED_RATE = 20_000.0
PACED_SECONDS = 3
PACED_SYMBOLS = [f"P{i:04d}-USD" for i in range(1000)]
IDLE = 3600.0  # the server's own ticker and heartbeat rounds stay out of the way


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.001)


async def raw_client_rate(server: ExchangeFeedServer) -> float:
    """Tickers/s of a bare client: receive, ``json.loads``, count the tickers."""
    received = 0

    async def read(ws: object) -> None:
        nonlocal received
        async for raw in ws:  # type: ignore[attr-defined]
            body = json.loads(raw)
            if body["channel"] == "ticker":
                for event in body["events"]:
                    received += len(event["tickers"])

    async with connect(server.url) as ws, anyio.create_task_group() as tg:
        tg.start_soon(read, ws)
        await ws.send(subscribe_message("ticker", FLAT_SYMBOLS))
        await wait_until(lambda: received == len(FLAT_SYMBOLS))  # the snapshot
        start = time.perf_counter()
        await server.send_burst(FLAT_OUT)
        await wait_until(lambda: received == len(FLAT_SYMBOLS) + FLAT_OUT)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel("measured")
    return FLAT_OUT / elapsed


def feed_runtime() -> Runtime:
    return Runtime(ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(1)))


async def feed_client_rate(server: ExchangeFeedServer) -> tuple[float, int]:
    """Tickers/s the `FeedClient` takes in with a consumer reading, and tickers it read."""
    read = 0

    async def consume(client: FeedClient) -> None:
        nonlocal read
        while True:
            await client.next_ticker()
            read += 1

    async with feed_runtime() as runtime:
        client = FeedClient(runtime, server.url, FLAT_SYMBOLS)
        await runtime.start(client.run)
        await wait_until(lambda: client.tickers_received == len(FLAT_SYMBOLS))
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, client)
            start = time.perf_counter()
            await server.send_burst(FLAT_OUT)
            await wait_until(lambda: client.tickers_received == len(FLAT_SYMBOLS) + FLAT_OUT)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel("measured")
    return FLAT_OUT / elapsed, read


async def flat_out() -> None:
    market = Market(FLAT_SYMBOLS, random.Random(2))
    async with ExchangeFeedServer(market, tick_interval=IDLE, heartbeat_interval=IDLE) as server:
        raw_rate = await raw_client_rate(server)
        await wait_until(lambda: server.open_connections == 0)
        client_rate, read = await feed_client_rate(server)
    ratio = client_rate / raw_rate
    print(f"flat out, {FLAT_OUT:,} one-ticker messages over {len(FLAT_SYMBOLS)} symbols:")
    print(f"  raw websockets + json.loads: {raw_rate:10,.0f} tickers/s")
    print(f"  FeedClient:                  {client_rate:10,.0f} tickers/s ({read:,} read)")
    print(f"  ratio {ratio:.2f}x (target >= 0.8x): {'ok' if ratio >= 0.8 else 'MISSED'}")


async def paced_idle_consumer() -> None:
    count = int(PACED_RATE * PACED_SECONDS)
    market = Market(PACED_SYMBOLS, random.Random(3))
    async with (
        ExchangeFeedServer(market, tick_interval=IDLE, heartbeat_interval=IDLE) as server,
        feed_runtime() as runtime,
    ):
        client = FeedClient(runtime, server.url, PACED_SYMBOLS, queue_size=len(PACED_SYMBOLS))
        await runtime.start(client.run)
        await wait_until(lambda: client.buffered == len(PACED_SYMBOLS))
        received = client.tickers_received
        start = time.perf_counter()
        last = await server.send_burst(count, rate=PACED_RATE)
        await wait_until(lambda: client.tickers_received == received + count)
        elapsed = time.perf_counter() - start
        latest = {}
        for _ in range(client.buffered):
            ticker = await client.next_ticker()
            latest[ticker.symbol] = ticker.price
        lost = sum(latest.get(symbol) != price for symbol, price in last.items())
        dropped = runtime.layer.status()["feeds"]["market"]["dropped_messages"]
    print(f"{count:,} messages at {PACED_RATE:,.0f} msg/s over {len(PACED_SYMBOLS):,} symbols,")
    print(f"  idle consumer ({count / elapsed:,.0f} msg/s achieved):")
    print(f"  latest tickers lost {lost}, MessagesDropped {dropped}, conflated")
    print(f"  {client.tickers_conflated:,} (target 0 lost): {'ok' if lost == 0 else 'MISSED'}")


async def main() -> None:
    await flat_out()
    await paced_idle_consumer()


if __name__ == "__main__":
    anyio.run(main)
