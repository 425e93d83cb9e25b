"""Benchmarks of the reference loop against the embedded exchange over 127.0.0.1.

1. Cycle latency for 20 symbols with 50 ms injected latency per REST call: one permit
   (sequential) against five (`GPT_TRADER_MAX_CONCURRENT_REST_CALLS=5`). Target: >= 3.5x faster.
2. Market-data REST calls per cycle: one batched ``best_bid_ask`` against one ``ticker`` call
   per symbol (forced by leaving every symbol out of the batch answer). Target: N -> 1.

The loop trades through ccxt's own ``coinbase`` client wrapped by the `Engine` (authentication
on), as an engine author would run it. Every figure is measured in this run; the ratios compare
two runs of the same loop.
"""

from __future__ import annotations

import random
import statistics
from decimal import Decimal

import anyio
import ccxt.async_support as ccxt

from tradeguard import OrderIntent, Settings, Side
from tradeguard.io.broker import Quote
from tradeguard.io.engine import Engine
from tradeguard.io.exchange import ExchangeRestServer, Market, Venue

SYMBOLS = [f"SYM{i:02d}-USD" for i in range(20)]
LATENCY = 0.05
CYCLES = 3


class Buyer:
    """One small order per symbol per cycle, so every cycle does the same work."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent:
        return OrderIntent(symbol, Side.BUY, Decimal("0.01"))


async def cycle_seconds(permits: int, *, per_symbol_quotes: bool = False) -> tuple[float, int]:
    """Median seconds of a cycle, and market-data calls per cycle, with ``permits`` permits."""
    settings = Settings(max_concurrent_rest_calls=permits, api_error_rate_min_calls=10_000)
    venue = Venue(Market(SYMBOLS, random.Random(1)), random.Random(2))
    async with ExchangeRestServer(venue, rng=random.Random(3)) as rest:
        client = ccxt.coinbase(
            {
                "apiKey": rest.credentials.api_key,
                "secret": rest.credentials.api_secret,
                "enableRateLimit": False,  # the permits are what is measured
            }
        )
        client.urls["api"] = {"rest": rest.url}
        try:
            async with Engine(
                settings, broker=client, symbols=SYMBOLS, rng=random.Random(0)
            ) as engine:
                loop = engine.trading_loop(strategy=Buyer())
                await loop.run_cycle()  # warm up: markets, connections, first marks
                rest.set_latency(LATENCY)
                if per_symbol_quotes:
                    rest.omit_from_batch(SYMBOLS)
                rest.reset_counts()
                durations = []
                for _ in range(CYCLES):
                    report = await loop.run_cycle()
                    assert report.placed == len(SYMBOLS), report
                    durations.append(report.duration)
                counts = rest.request_counts
                # ccxt asks for a single ticker on the public market route.
                tickers = counts["ticker"] + counts["market_ticker"]
                market_calls = (counts["best_bid_ask"] + tickers) // CYCLES
        finally:
            await client.close()
    return statistics.median(durations), market_calls


async def main() -> None:
    print(f"reference loop, {len(SYMBOLS)} symbols, {LATENCY * 1000:.0f} ms per REST call")
    sequential, _ = await cycle_seconds(1)
    concurrent, batched_calls = await cycle_seconds(5)
    ratio = sequential / concurrent
    verdict = "target met" if ratio >= 3.5 else "BELOW TARGET (3.5x)"
    print(f"  cycle, 1 permit (sequential)     {sequential * 1000:8.0f} ms")
    print(
        f"  cycle, 5 permits (concurrent)    {concurrent * 1000:8.0f} ms   "
        f"{ratio:.2f}x faster  {verdict}"
    )
    _, per_symbol_calls = await cycle_seconds(5, per_symbol_quotes=True)
    tickers = per_symbol_calls - 1  # the batch call still goes out, and comes back empty
    print(f"  market-data calls per cycle, batched      {batched_calls:3d}")
    print(
        f"  market-data calls per cycle, per symbol   {tickers:3d} ticker calls "
        f"({tickers}/{batched_calls} = {tickers / batched_calls:.0f}x more; N -> 1)"
    )


if __name__ == "__main__":
    anyio.run(main)
