"""Every ```python block of README.md and docs/*.md runs, so the docs cannot rot.

A block runs its top level as written (`exec`). A block that needs a venue defines an async
function and names its runner in an HTML comment on the line before the fence, invisible on
GitHub:

    <!-- docs-test: RUNNER FUNCTION -->

The runner starts what the function needs (the simulated exchange, an `Engine`, a store),
calls it, and checks what it did:

- ``exchange``: ``FUNCTION(exchange)``, ccxt's ``coinbase`` pointed at the simulator's REST API.
- ``guarded``: ``FUNCTION(runtime, session, url, body)``, an order preview on the simulator;
  then a 503 storm, which must open the ``orders`` breaker.
- ``feed``: ``FUNCTION(ws_url)``, the simulator's websocket.
- ``engine``: ``FUNCTION(engine)``, an `Engine` over an in-memory broker.
- ``store``: ``FUNCTION(settings)``, with ``settings.store_path`` a fresh file.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import ccxt.async_support as ccxt
import pytest

from tradeguard import Settings, TradingMode
from tradeguard.fsm import BreakerState
from tradeguard.io import CircuitOpen, Engine
from tradeguard.io.exchange import (
    DeterministicBroker,
    ExchangeFeedServer,
    ExchangeRestServer,
    Market,
    Venue,
)
from tradeguard.io.store import EventStore

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)(?:\s+(\w+))?\s*-->")
# Generous: a block talks to 127.0.0.1 only, but a loaded CI machine is slow.
TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Block:
    """One ```python block: where it is, its code, and its runner (``None``: top level)."""

    path: Path
    line: int  # of the first code line
    code: str
    runner: str | None
    function: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every ```python block of ``path``, with the directive on the line before it, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        directive = DIRECTIVE.fullmatch(lines[i - 1].strip()) if i > 0 else None
        end = lines.index("```", i + 1)  # a missing fence raises: the Markdown is broken
        code = "\n".join(lines[i + 1 : end]) + "\n"
        runner, function = directive.groups() if directive else (None, None)
        blocks.append(Block(path, i + 2, code, runner, function))
        i = end + 1
    return blocks


BLOCKS = [block for path in DOCS for block in python_blocks(path)]


def run_top_level(block: Block) -> dict[str, Any]:
    """Exec the block; tracebacks point at the Markdown file and line."""
    namespace: dict[str, Any] = {"__name__": f"docs_{block.path.stem}"}
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, str(block.path), "exec"), namespace)
    return namespace


# ---------------------------------------------------------------------- runners


def _venue() -> Venue:
    return Venue(Market(["BTC-USD", "ETH-USD"], random.Random(1)), random.Random(2))


async def _with_exchange(function: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    async with ExchangeRestServer(_venue(), rng=random.Random(3)) as server:
        exchange = ccxt.coinbase(
            {"apiKey": server.credentials.api_key, "secret": server.credentials.api_secret}
        )
        exchange.urls["api"] = {"rest": server.url}
        try:
            await function(exchange)
        finally:
            await exchange.close()
        assert sum(server.request_counts.values()) > 0, "the block never reached the venue"


async def _with_guarded_call(function: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    async with (
        ExchangeRestServer(_venue(), rng=random.Random(3), auth=False) as server,
        Engine(Settings(), broker=DeterministicBroker(["BTC-USD"]), symbols=["BTC-USD"]) as engine,
        aiohttp.ClientSession() as session,
    ):
        url = f"{server.url}/api/v3/brokerage/orders/preview"
        body = {
            "product_id": "BTC-USD",
            "side": "BUY",
            "order_configuration": {"market_market_ioc": {"base_size": "0.01"}},
        }
        answer = await function(engine.runtime, session, url, body)
        assert "order_total" in answer
        server.error_storm(1.0, 503)
        for _ in range(engine.settings.circuit_failure_threshold):
            with pytest.raises(aiohttp.ClientResponseError):
                await function(engine.runtime, session, url, body)
        assert engine.layer.breaker_state("orders") is BreakerState.OPEN
        before = sum(server.request_counts.values())
        with pytest.raises(CircuitOpen):
            await function(engine.runtime, session, url, body)
        assert sum(server.request_counts.values()) == before  # refused without sending
        assert engine.layer.mode() is TradingMode.REDUCE_ONLY


async def _with_feed(function: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    market = Market(["BTC-USD", "ETH-USD"], random.Random(1))
    async with ExchangeFeedServer(market) as feed:
        await function(feed.url)
        assert feed.connections_accepted >= 1


async def _with_engine(function: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    symbols = ["BTC-USD", "ETH-USD"]
    async with Engine(Settings(), broker=DeterministicBroker(symbols), symbols=symbols) as engine:
        await function(engine)


async def _with_store(function: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    settings = Settings(store_path=str(tmp_path / "events.db"))
    await function(settings)
    async with EventStore(settings.store_path, read_only=True) as store:
        assert await store.load_snapshot() is not None, "no snapshot was saved"
        assert await store.events(), "nothing was archived"


RUNNERS: dict[str, Callable[[Callable[..., Awaitable[Any]], Path], Awaitable[None]]] = {
    "exchange": _with_exchange,
    "guarded": _with_guarded_call,
    "feed": _with_feed,
    "engine": _with_engine,
    "store": _with_store,
}


# ---------------------------------------------------------------------- tests


@pytest.fixture(autouse=True)
def _no_knobs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The blocks read the knobs with Settings.from_env(); the runner's machine sets none.
    for name in [n for n in os.environ if n.startswith(("RISK_", "GPT_TRADER_", "ORDER_"))]:
        monkeypatch.delenv(name)


def test_the_docs_have_python_blocks_and_every_directive_names_a_runner() -> None:
    assert {p.name for p in DOCS} >= {"README.md", "embedding.md", "operations.md"}
    assert any(b.path.name == "README.md" for b in BLOCKS)
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"<!--\s*docs-test:.*?-->", text):
            directive = DIRECTIVE.fullmatch(match.group(0))
            assert directive is not None, f"{path.name}: malformed {match.group(0)!r}"
            assert directive.group(1) in RUNNERS, f"{path.name}: unknown runner {match.group(0)}"
            assert directive.group(2), f"{path.name}: {match.group(0)} names no function"
    directives = sum(len(DIRECTIVE.findall(p.read_text(encoding="utf-8"))) for p in DOCS)
    # A directive not right before a ```python fence would silently run nothing.
    assert directives == sum(b.runner is not None for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_docs_block_runs(block: Block, tmp_path: Path) -> None:
    namespace = run_top_level(block)
    if block.runner is None:
        return
    function = namespace.get(block.function or "")
    assert callable(function), f"{block.name}: defines no {block.function}()"

    async def run() -> None:
        with anyio.fail_after(TIMEOUT):
            await RUNNERS[block.runner or ""](function, tmp_path)

    anyio.run(run)


def test_the_core_example_allows_the_order_it_asks_about() -> None:
    (block,) = [b for b in BLOCKS if "decision = layer.decide(" in b.code]
    # After a first mark and one 503 nothing restricts BTC-USD yet: the order is allowed.
    assert run_top_level(block)["decision"].allowed is True


def test_the_ccxt_example_trades_through_the_simulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (block,) = [b for b in BLOCKS if b.path.name == "README.md" and b.runner == "exchange"]
    trade = run_top_level(block)[block.function or ""]

    async def run() -> None:
        async with ExchangeRestServer(_venue(), rng=random.Random(3)) as server:
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

    anyio.run(run)
    assert "the layer allows it" in capsys.readouterr().out
