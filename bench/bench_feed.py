"""Benchmarks of the websocket feed against the embedded exchange over 127.0.0.1 (issue 15).

The feed server (`ExchangeFeedServer`) runs in a child Python process of its own
(`_feed_server_process.py`, started with this interpreter, on an ephemeral port); this process
tells it over a pipe when to send a burst and runs only the client measured. Each burst is
timed from the first of its tickers a client takes in to the last, so the server encoding the
burst before it sends leaves the figures alone. Client and server want a core each: on a
host with less to spare, both rates drop and vary from run to run.

1. Flat out: tickers/s the `FeedClient` takes in (parsed, marks observed, buffered, with a
   consumer reading) against a raw ``websockets`` + ``json.loads`` client, both fed the same
   burst of one-ticker messages by the same feed server process in this run. The two take
   turns for `FLAT_ROUNDS` rounds, so a busy spell on the host hits both, and the best round
   of each is compared. Target: >= 0.8x the raw client.
2. 20,000 msg/s over 1,000 symbols with an idle consumer (nothing reads until the end),
   from a second server process: latest tickers per symbol lost (the buffered ticker is not
   the last one sent). Target: 0. The rate the `FeedClient` took the burst in is printed
   next to it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from decimal import Decimal

import anyio
from _feed_server_process import FeedServerProcess
from websockets.asyncio.client import connect

from tradeguard import ReliabilityLayer, Settings
from tradeguard.io import FeedClient, Runtime
from tradeguard.io._coinbase import subscribe_message

FLAT_OUT = 50_000
FLAT_SYMBOLS = [f"F{i:02d}-USD" for i in range(20)]
FLAT_ROUNDS = 3
PACED_RATE = 20_000.0
PACED_SECONDS = 3
PACED_SYMBOLS = [f"P{i:04d}-USD" for i in range(1000)]


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.001)


async def timed_burst(
    server: FeedServerProcess,
    count: int,
    received: Callable[[], int],
    *,
    rate: float | None = None,
) -> tuple[float, dict[str, Decimal]]:
    """Have the server send ``count`` messages and time the client taking them in.

    ``received()`` counts the tickers the client took in so far. The clock starts when the
    first ticker of the burst is seen and stops at the last; the tickers seen at the start are
    left out of the rate.

    Returns:
        The rate in tickers/s, and the last price sent per symbol.
    """
    before = received()
    last: dict[str, Decimal] = {}

    async def burst() -> None:
        last.update(await server.send_burst(count, rate=rate))

    async with anyio.create_task_group() as tg:
        tg.start_soon(burst)
        await wait_until(lambda: received() > before)
        start, seen = time.perf_counter(), received()
        await wait_until(lambda: received() == before + count)
        elapsed = time.perf_counter() - start
    return (before + count - seen) / elapsed, last


async def raw_client_rate(server: FeedServerProcess) -> float:
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
        rate, _ = await timed_burst(server, FLAT_OUT, lambda: received)
        tg.cancel_scope.cancel("measured")
    return rate


def feed_runtime() -> Runtime:
    return Runtime(ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(1)))


async def feed_client_rate(server: FeedServerProcess) -> tuple[float, int]:
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
            rate, _ = await timed_burst(server, FLAT_OUT, lambda: client.tickers_received)
            tg.cancel_scope.cancel("measured")
    return rate, read


async def flat_out() -> None:
    raw_rates: list[float] = []
    client_rates: list[float] = []
    async with FeedServerProcess(FLAT_SYMBOLS, seed=2) as server:
        for _ in range(FLAT_ROUNDS):
            raw_rates.append(await raw_client_rate(server))
            await server.wait_connections(0)
            rate, read = await feed_client_rate(server)
            client_rates.append(rate)
            await server.wait_connections(0)
    raw_rate, client_rate = max(raw_rates), max(client_rates)
    ratio = client_rate / raw_rate
    print(f"flat out, {FLAT_OUT:,} one-ticker messages over {len(FLAT_SYMBOLS)} symbols")
    print(f"  (best of {FLAT_ROUNDS} rounds taking turns, every round in brackets):")
    print(f"  raw websockets + json.loads: {raw_rate:10,.0f} tickers/s ({rounds(raw_rates)})")
    print(f"  FeedClient:                  {client_rate:10,.0f} tickers/s ({rounds(client_rates)})")
    print(f"  (the FeedClient's consumer read {read:,} tickers in the last round)")
    print(f"  ratio {ratio:.2f}x (target >= 0.8x): {'ok' if ratio >= 0.8 else 'MISSED'}")


def rounds(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


async def paced_idle_consumer() -> None:
    count = int(PACED_RATE * PACED_SECONDS)
    async with (
        FeedServerProcess(PACED_SYMBOLS, seed=3) as server,
        feed_runtime() as runtime,
    ):
        client = FeedClient(runtime, server.url, PACED_SYMBOLS, queue_size=len(PACED_SYMBOLS))
        await runtime.start(client.run)
        await wait_until(lambda: client.buffered == len(PACED_SYMBOLS))
        achieved, last = await timed_burst(
            server, count, lambda: client.tickers_received, rate=PACED_RATE
        )
        latest = {}
        for _ in range(client.buffered):
            ticker = await client.next_ticker()
            latest[ticker.symbol] = ticker.price
        lost = sum(latest.get(symbol) != price for symbol, price in last.items())
        dropped = runtime.layer.status()["feeds"]["market"]["dropped_messages"]
    print(f"{count:,} messages at {PACED_RATE:,.0f} msg/s over {len(PACED_SYMBOLS):,} symbols,")
    print(f"  idle consumer ({achieved:,.0f} msg/s achieved):")
    print(f"  latest tickers lost {lost}, MessagesDropped {dropped}, conflated")
    print(f"  {client.tickers_conflated:,} (target 0 lost): {'ok' if lost == 0 else 'MISSED'}")


async def main() -> None:
    await flat_out()
    await paced_idle_consumer()


if __name__ == "__main__":
    anyio.run(main)
