"""One fleet member as a real OS process, driven by `test_fleet_processes.py` and the bench.

It runs an `Engine` (a `DeterministicBroker` on BTC-USD and ETH-USD) that joins the fleet named
on the command line, marks both symbols, prints ``joined <decision>`` (the decision on an
opening BTC-USD order taken the moment the engine block was entered: before the first order,
so it must already be restricted) and then ``ready`` once the ``fleet`` guard is HEALTHY
(synchronised). After that it answers one line of JSON per command line on stdin:

    trip GUARD [SYMBOL]          force-trip a guard (api_health: open-ended until `recover`)
    recover api_health           an API call succeeds: api_health goes to COOLDOWN
    reset GUARD [SYMBOL]         operator reset to HEALTHY
    mark SYMBOL                  a fresh mark price
    decide SYMBOL SIDE QTY [POS] the engine's decision (JSON, reasons included)
    mode [SYMBOL]                the effective mode's name
    guard NAME [SYMBOL]          a guard's status (any name a Reason carries)
    status                       the layer's status()
    metric NAME                  every sample of a metric: [[labels, value], ...]
    quit                         leave the engine block and exit 0

Any failure of a command answers ``{"error": "..."}``; the member keeps running.

Usage: ``python fleet_member.py --redis URL --fleet NAME --member NAME [--grace S]
[--ttl S] [--cooldown S]``. Short timings by default (grace 0.5 s, member TTL 1.5 s,
api_health cooldown 1 s); the marks never go stale during a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from decimal import Decimal
from enum import Enum
from typing import Any

import anyio

from tradeguard import OrderIntent, Settings, Side, UnknownGuard
from tradeguard.fsm import events as ev
from tradeguard.io.engine import Engine
from tradeguard.io.exchange import DeterministicBroker

SYMBOLS = ("BTC-USD", "ETH-USD")
SYNC_TIMEOUT = 15.0


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        {
            "GPT_TRADER_FLEET_REDIS_URL": args.redis,
            "GPT_TRADER_FLEET_NAME": args.fleet,
            "GPT_TRADER_FLEET_MEMBER": args.member,
            "GPT_TRADER_FLEET_LOST_GRACE_SECONDS": str(args.grace),
            "GPT_TRADER_FLEET_MEMBER_TTL_SECONDS": str(args.ttl),
            "RISK_API_HEALTH_COOLDOWN_SECONDS": str(args.cooldown),
            # A test never waits an hour: marks taken at start stay fresh for its whole run.
            "RISK_MARK_STALENESS_THRESHOLD_SECONDS": "3600",
        }
    )


def jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def decision_json(decision: Any) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "mode": decision.mode.name,
        "reasons": [jsonable(asdict(reason)) for reason in decision.reasons],
        "max_quantity": jsonable(decision.max_quantity),
    }


def metric_samples(engine: Engine, name: str) -> list[list[Any]]:
    return [
        [sample.labels, sample.value]
        for family in engine.metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def answer(engine: Engine, words: list[str]) -> Any:
    """The JSON answer to one command (``quit`` is handled by the caller)."""
    layer, runtime = engine.layer, engine.runtime
    match words:
        case ["trip", guard, *symbol]:
            runtime.apply(layer.trip(guard, "fleet test", *symbol))
            return jsonable(asdict(layer.guard(guard, *symbol)))
        case ["recover", "api_health"]:
            runtime.observe(ev.ApiCall("orders", ok=True))
            return jsonable(asdict(layer.guard("api_health")))
        case ["reset", guard, *symbol]:
            runtime.apply(layer.reset(guard, *symbol))
            return jsonable(asdict(layer.guard(guard, *symbol)))
        case ["mark", symbol]:
            runtime.observe(ev.MarkUpdate(symbol))
            return layer.mode(symbol).name
        case ["decide", symbol, side, quantity, *position]:
            intent = OrderIntent(symbol, Side[side], Decimal(quantity))
            held = Decimal(position[0]) if position else Decimal(0)
            return decision_json(engine.decide(intent, held))
        case ["mode", *symbol]:
            return layer.mode(*symbol).name
        case ["guard", name, *symbol]:
            return jsonable(asdict(layer.guard(name, *symbol)))
        case ["status"]:
            return jsonable(layer.status())
        case ["metric", name]:
            return metric_samples(engine, name)
        case _:
            raise ValueError(f"unknown command {' '.join(words)!r}")


async def serve(engine: Engine) -> None:
    async for raw in anyio.wrap_file(sys.stdin):
        words = raw.split()
        if not words:
            continue
        if words == ["quit"]:
            return
        try:
            reply = answer(engine, words)
        except Exception as exc:  # the test reads the error; the member stays up
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


def synced(engine: Engine) -> bool:
    try:
        return engine.layer.guard("fleet").state.name == "HEALTHY"
    except UnknownGuard:  # the fleet has not been joined yet
        return False


async def main(args: argparse.Namespace) -> None:
    broker = DeterministicBroker(SYMBOLS, seed=7)
    engine = Engine(settings_from(args), broker=broker, symbols=SYMBOLS, alert_sinks=())
    async with engine:
        # The first order this process could send, before it waited for anything.
        first = engine.layer.decide(OrderIntent("BTC-USD", Side.BUY, Decimal("0.1")), Decimal(0))
        for symbol in SYMBOLS:
            engine.runtime.observe(ev.MarkUpdate(symbol))
        print("joined " + json.dumps(decision_json(first)), flush=True)
        with anyio.fail_after(SYNC_TIMEOUT):
            while not synced(engine):
                await anyio.sleep(0.01)
        print("ready", flush=True)
        await serve(engine)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--member", required=True)
    parser.add_argument("--grace", type=float, default=0.5)
    parser.add_argument("--ttl", type=float, default=1.5)
    parser.add_argument("--cooldown", type=float, default=1.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
