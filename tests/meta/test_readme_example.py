"""The README's Python examples run as written; those that need a venue get the simulator."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from tradeguard import Settings, TradingMode
from tradeguard.fsm import BreakerState
from tradeguard.io import CircuitOpen, Engine
from tradeguard.io.exchange import DeterministicBroker, ExchangeRestServer, Market, Venue

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(containing: str) -> str:
    """The one ```python block of the README that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"expected one README python block with {containing!r}"
    return found[0]


def run_block(containing: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(readme_block(containing), "README.md", "exec"), namespace)
    return namespace


def test_readme_embedding_example_runs() -> None:
    decision = run_block("decision = layer.decide(")["decision"]
    # After one 503 and a first mark nothing restricts BTC-USD yet: the order is allowed.
    assert decision.allowed is True


@pytest.mark.anyio
async def test_readme_ccxt_example_trades_through_the_simulator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The example reads the knobs from the environment; none are set here.
    for name in [n for n in os.environ if n.startswith(("RISK_", "GPT_TRADER_"))]:
        monkeypatch.delenv(name)
    trade = run_block("async def trade(exchange)")["trade"]
    venue = Venue(Market(["BTC-USD"], random.Random(1)), random.Random(2))
    async with ExchangeRestServer(venue, rng=random.Random(3)) as server:
        exchange = ccxt.coinbase(
            {"apiKey": server.credentials.api_key, "secret": server.credentials.api_secret}
        )
        exchange.urls["api"] = {"rest": server.url}
        try:
            await trade(exchange)
        finally:
            await exchange.close()
        # The loop's cycle went through ccxt: positions, the order audit, one batched quote.
        assert server.request_counts["best_bid_ask"] == 1
        assert server.request_counts["list_orders"] >= 1
    assert "the layer allows it" in capsys.readouterr().out


@pytest.mark.anyio
async def test_readme_guarded_call_example_reports_and_refuses() -> None:
    place = run_block("async def place(")["place"]
    venue = Venue(Market(["BTC-USD"], random.Random(1)), random.Random(2))
    async with (
        ExchangeRestServer(venue, rng=random.Random(3), auth=False) as server,
        Engine(Settings(), broker=DeterministicBroker(["BTC-USD"]), symbols=["BTC-USD"]) as engine,
        aiohttp.ClientSession() as session,
    ):
        url = f"{server.url}/api/v3/brokerage/orders/preview"
        body = {
            "product_id": "BTC-USD",
            "side": "BUY",
            "order_configuration": {"market_market_ioc": {"base_size": "0.01"}},
        }
        answer = await place(engine.runtime, session, url, body)
        assert "order_total" in answer
        server.error_storm(1.0, 503)
        for _ in range(engine.settings.circuit_failure_threshold):
            with pytest.raises(aiohttp.ClientResponseError):
                await place(engine.runtime, session, url, body)
        assert engine.layer.breaker_state("orders") is BreakerState.OPEN
        before = sum(server.request_counts.values())
        with pytest.raises(CircuitOpen):
            await place(engine.runtime, session, url, body)
        assert sum(server.request_counts.values()) == before  # refused without sending
        assert engine.layer.mode() is TradingMode.REDUCE_ONLY
