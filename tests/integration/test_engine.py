"""`Engine`: one assembly of layer, runtime, broker, feed, metrics, status and store (DESIGN §6).

Real sockets on 127.0.0.1: the embedded exchange's websocket, the engine's status server and an
SQLite store in a temp dir; the in-memory `DeterministicBroker` trades on the same books.
"""

from __future__ import annotations

import gc
import random
from decimal import Decimal
from pathlib import Path

import aiohttp
import anyio
import pytest

from tradeguard import OrderIntent, Settings, Side, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Alert
from tradeguard.io import Runtime
from tradeguard.io.engine import Engine, EngineNotRunning
from tradeguard.io.exchange import DeterministicBroker, ExchangeFeedServer
from tradeguard.io.store import EventStore
from tradeguard.testing import ManualClock

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"


async def wait_for(done: object, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not done():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def test_assembles_every_part_from_settings_and_closes_them_on_exit() -> None:
    broker = DeterministicBroker([BTC, ETH], seed=1)
    async with ExchangeFeedServer(broker.market, tick_interval=0.02) as feed_server:
        engine = Engine(
            Settings(),
            broker=broker,
            symbols=[BTC, ETH],
            feed_url=feed_server.url,
            status_port=0,
            feed_options={"close_timeout": 0.2},
        )
        with pytest.raises(EngineNotRunning, match="not running"):
            _ = engine.layer
        async with engine:
            # Nothing patched: the runtime was built with the broker the engine was given.
            assert engine.runtime.broker is broker
            assert engine.broker is broker
            assert engine.runtime.layer is engine.layer
            await wait_for(lambda: engine.layer.mode(BTC) is TradingMode.ALLOW)
            assert engine.feed is not None and engine.feed.connects == 1
            assert engine.status_url is not None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{engine.status_url}/status") as response:
                    assert response.status == 200
                    status = await response.json()
                async with http.get(f"{engine.status_url}/metrics") as response:
                    text = await response.text()
            assert BTC in status["symbols"]
            assert "gpt_trader_trading_mode" in text
            url = engine.status_url
        assert feed_server.open_connections == 0  # the feed client closed its socket
        with pytest.raises(EngineNotRunning):
            _ = engine.runtime
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(f"{url}/status")


async def test_a_factory_builds_the_broker_from_the_finished_runtime() -> None:
    built: list[Runtime] = []
    inner = DeterministicBroker([BTC])

    def factory(runtime: Runtime) -> DeterministicBroker:
        built.append(runtime)
        return inner

    async with Engine(Settings(), broker=factory, symbols=[BTC]) as engine:
        assert built == [engine.runtime]
        assert engine.broker is inner


async def test_refusals_and_operator_actions_are_archived_when_a_store_is_configured(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    clock = ManualClock()
    broker = DeterministicBroker([BTC])
    async with Engine(
        Settings(),
        broker=broker,
        symbols=[BTC],
        store_path=path,
        clock=clock,
        wall_clock=clock.wall,
    ) as engine:
        # No mark yet: an opening order is refused, and the refusal is archived.
        refused = engine.decide(OrderIntent(BTC, Side.BUY, Decimal("0.1")), Decimal(0))
        assert not refused.allowed
        await engine.halt("exchange maintenance", symbol=BTC, ttl=60)
        await engine.resume(BTC)
        loop = engine.trading_loop(rng=random.Random(3))
        await loop.run_cycle()  # the loop's own refusals land in the same archive
    async with EventStore(path) as store:
        events = await store.events()
    kinds = [e["kind"] for e in events]
    assert "refusal" in kinds
    operator = [e for e in events if e["kind"] == "operator"]
    assert [e["record"]["action"] for e in operator] == ["halt", "resume"]
    assert operator[0]["record"]["reason"] == "exchange maintenance"
    assert any(e["kind"] == "transition" for e in events)  # the recorder is wired too


async def test_a_restarted_engine_restores_its_restrictions_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    clock = ManualClock()
    settings = Settings(broker_outage_cooldown_seconds=300)
    broker = DeterministicBroker([BTC])
    async with Engine(
        settings, broker=broker, symbols=[BTC], store_path=path, clock=clock, wall_clock=clock.wall
    ) as engine:
        for _ in range(settings.broker_outage_max_failures):
            engine.runtime.observe(ev.BrokerRead(kind="balances", ok=False))
        assert engine.layer.mode() is TradingMode.REDUCE_ONLY
    async with Engine(
        settings, broker=broker, symbols=[BTC], store_path=path, clock=clock, wall_clock=clock.wall
    ) as engine:
        assert engine.layer.mode() is TradingMode.REDUCE_ONLY  # never more permissive


async def test_bad_arguments_are_refused_when_built() -> None:
    with pytest.raises(TypeError, match="settings must be"):
        Engine({}, broker=DeterministicBroker(), symbols=[BTC])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not one string"):
        Engine(Settings(), broker=DeterministicBroker(), symbols=BTC)
    with pytest.raises(ValueError, match="must not repeat"):
        Engine(Settings(), broker=DeterministicBroker(), symbols=[BTC, BTC])
    with pytest.raises(TypeError, match="broker must be"):
        Engine(Settings(), broker=42, symbols=[BTC])


async def test_freeze_gc_sets_what_lives_aside_until_the_engine_stops() -> None:
    assert gc.get_freeze_count() == 0
    async with Engine(Settings(), broker=DeterministicBroker([BTC]), symbols=[BTC]) as engine:
        assert gc.get_freeze_count() == 0  # off unless asked: it is the whole process's
    async with Engine(
        Settings(), broker=DeterministicBroker([BTC]), symbols=[BTC], freeze_gc=True
    ) as engine:
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the modules, the layer, the runtime
        assert engine.layer.mode(BTC) is TradingMode.REDUCE_ONLY  # it runs as before
    assert gc.get_freeze_count() == 0


async def test_alerts_reach_the_given_sinks() -> None:
    alerts: list[Alert] = []
    async with Engine(
        Settings(), broker=DeterministicBroker([BTC]), symbols=[BTC], alert_sinks=(alerts.append,)
    ) as engine:
        for _ in range(engine.settings.broker_outage_max_failures):
            engine.runtime.observe(ev.BrokerRead(kind="positions", ok=False))
        await wait_for(lambda: alerts)
    assert alerts[0].severity == "critical"


async def test_the_buffer_gauges_read_the_feed_buffer_and_the_store_backlog(
    tmp_path: Path,
) -> None:
    broker = DeterministicBroker([BTC, ETH], seed=1)
    async with (
        ExchangeFeedServer(broker.market, tick_interval=0.01) as feed_server,
        Engine(
            Settings(),
            broker=broker,
            symbols=[BTC, ETH],
            feed_url=feed_server.url,
            store_path=tmp_path / "events.db",
            feed_options={"queue_size": 2, "close_timeout": 0.2},
        ) as engine,
    ):
        assert engine.feed is not None and engine.store is not None
        registry = engine.metrics.registry

        def gauge(name: str) -> float:
            engine.metrics.refresh(engine.layer)
            value = registry.get_sample_value(f"gpt_trader_{name}")
            assert value is not None
            return value

        # Nobody reads the tickers: the buffer fills to its bound (one latest ticker per
        # symbol since issue 15, so queue_size 2 for two symbols; it was 4 tickers).
        await wait_for(lambda: engine.feed is not None and engine.feed.buffered == 2)
        assert gauge("deque_cache_fill_ratio") == 1.0
        for _ in range(2):
            await engine.feed.next_ticker()
        assert gauge("deque_cache_fill_ratio") < 1.0
        # A burst of archive writes: the backlog is seen while the store's thread catches up.
        seen: list[float] = []
        async with anyio.create_task_group() as writers:
            for i in range(300):
                writers.start_soon(engine.store.append, "operator", {"action": f"a{i}"}, 0.0)
            while True:
                await anyio.sleep(0)
                seen.append(gauge("event_store_cache_size"))
                if engine.store.pending == 0 and len(seen) > 1:
                    break
        assert max(seen) > 0
        assert gauge("event_store_cache_size") == 0


async def test_a_refusal_through_decide_is_counted_in_the_metrics() -> None:
    # The dashboard's refusal panel and the refusals alert read this counter: an engine that
    # calls `Engine.decide` itself (no `trading_loop`) must feed it too.
    async with Engine(Settings(), broker=DeterministicBroker([BTC]), symbols=[BTC]) as engine:
        refused = engine.decide(OrderIntent(BTC, Side.BUY, Decimal("0.1")), Decimal(0))
        assert not refused.allowed  # no mark yet
        labels = {"guard": "mark_staleness", "scope": BTC, "state": "NO_MARK"}
        registry = engine.metrics.registry
        assert registry.get_sample_value("gpt_trader_refused_decisions_total", labels) == 1.0
