"""``tradeguard halt``, ``resume`` and ``fleet status``: the operator's fleet-wide controls.

A halt is published as member ``operator``, guard ``operator`` (`tradeguard.io.fleet`): one
``MULTI`` writes the restriction to the restrictions hash (for members that join later) and
appends it to the stream (for members running now), and the reason goes to the fleet's
operator log. ``resume`` deletes it and appends a lift. Every member applies both as it applies
a peer's restriction. Exit status: 0 done, 1 Redis could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["add_fleet_commands", "run_fleet_command"]

_URL_ENV = "GPT_TRADER_FLEET_REDIS_URL"
_NAME_ENV = "GPT_TRADER_FLEET_NAME"
# Every call gives up after this long: an operator command must not hang on a dead server.
_TIMEOUT = 5.0


def add_fleet_commands(
    commands: Any, environ: Mapping[str, str] | None = None
) -> dict[str, argparse.ArgumentParser]:
    """Add ``halt``, ``resume`` and ``fleet status`` to the ``tradeguard`` subparsers.

    Returns their parsers by command (``"fleet status"`` for the last), for usage errors.
    Defaults of ``--redis`` and ``--fleet`` come from ``environ`` (``os.environ``).
    """
    environ = os.environ if environ is None else environ
    url_default = environ.get(_URL_ENV) or None
    name_default = environ.get(_NAME_ENV) or "default"

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--redis",
            default=url_default,
            metavar="URL",
            help=f"the fleet's Redis, redis:// or rediss:// (default: {_URL_ENV})",
        )
        parser.add_argument(
            "--fleet", default=name_default, metavar="NAME", help=f"the fleet (or {_NAME_ENV})"
        )

    halt = commands.add_parser(
        "halt", help="halt every member of a fleet (PAUSED, or --reduce-only), on Redis"
    )
    common(halt)
    halt.add_argument("--reason", required=True, help="why, for the operator log and alerts")
    halt.add_argument("--symbol", help="halt this symbol only (default: everything)")
    halt.add_argument("--ttl", type=float, help="lift by itself after SECONDS (default: never)")
    halt.add_argument(
        "--reduce-only", action="store_true", help="REDUCE_ONLY instead of PAUSED (a canary)"
    )

    resume = commands.add_parser("resume", help="lift a fleet-wide halt (a no-op without one)")
    common(resume)
    resume.add_argument("--symbol", help="lift the halt of this symbol (default: the global one)")

    fleet = commands.add_parser("fleet", help="fleet commands: status")
    actions = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="members, their heartbeats and every restriction in force, with origin"
    )
    common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    return {"halt": halt, "resume": resume, "fleet status": status}


def run_fleet_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, out: IO[str], err: IO[str]
) -> int:
    """Validate the usage (``parser.error``, exit 2), then run the command against Redis."""
    from tradeguard.io.fleet import SYMBOL_PATTERN, FleetKeys

    url: str | None = args.redis
    if not url:
        parser.error(f"no fleet Redis: pass --redis URL or set {_URL_ENV}")
    if not url.startswith(("redis://", "rediss://")) or any(c.isspace() for c in url):
        parser.error(f"--redis must be a redis:// or rediss:// URL, got {url!r}")
    try:
        keys = FleetKeys(args.fleet)
    except ValueError:
        parser.error(f"--fleet must match [A-Za-z0-9_.-]+, got {args.fleet!r}")
    symbol: str | None = getattr(args, "symbol", None)
    if symbol is not None and not SYMBOL_PATTERN.fullmatch(symbol):
        parser.error(f"--symbol must be a symbol such as BTC-USD, got {symbol!r}")
    ttl: float | None = getattr(args, "ttl", None)
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        parser.error(f"--ttl must be a number of seconds > 0, got {ttl!r}")
    if args.command == "halt" and not args.reason.strip():
        parser.error("--reason must say why")

    import anyio

    from tradeguard.io.fleet import redis_errors

    try:
        if args.command == "halt":
            return anyio.run(_halt, url, keys, args.reason, symbol, ttl, args.reduce_only, out)
        if args.command == "resume":
            return anyio.run(_resume, url, keys, symbol, out)
        return anyio.run(_status, url, keys, args.json, out)
    except redis_errors() as error:
        print(f"tradeguard {args.command}: cannot reach the fleet's Redis: {error}", file=err)
        return 1


async def _halt(
    url: str,
    keys: Any,
    reason: str,
    symbol: str | None,
    ttl: float | None,
    reduce_only: bool,
    out: IO[str],
) -> int:
    from tradeguard.fsm import TradingMode
    from tradeguard.io.fleet import OPERATOR, STREAM_MAXLEN, FleetMessage, connect

    now = time.time()
    mode = TradingMode.REDUCE_ONLY if reduce_only else TradingMode.PAUSED
    message = FleetMessage(
        "restrict",
        OPERATOR,
        now,
        guard=OPERATOR,
        scope=symbol,
        mode=mode,
        state="REDUCED" if reduce_only else "HALTED",
        lifts_at=None if ttl is None else now + ttl,
    )
    text = message.to_json()
    record = {"at": now, "action": "halt", "reason": reason, "symbol": symbol, "ttl": ttl}
    record["mode"] = mode.name
    client = connect(url, timeout=_TIMEOUT)
    async with client, client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.restrictions, message.field, text)
        pipe.xadd(keys.stream, {"msg": text}, maxlen=STREAM_MAXLEN)
        _log(pipe, keys, record)
        await pipe.execute()
    where = "globally" if symbol is None else f"on {symbol}"
    until = "until resumed" if ttl is None else f"for {ttl:g} s"
    print(f"fleet {keys.name}: {mode.name} {where} {until} ({reason})", file=out)
    return 0


async def _resume(url: str, keys: Any, symbol: str | None, out: IO[str]) -> int:
    from tradeguard.io.fleet import OPERATOR, STREAM_MAXLEN, FleetMessage, connect

    now = time.time()
    lift = FleetMessage("lift", OPERATOR, now, guard=OPERATOR, scope=symbol)
    record = {"at": now, "action": "resume", "symbol": symbol}
    client = connect(url, timeout=_TIMEOUT)
    async with client, client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.restrictions, lift.field)
        # The lift goes out even when the hash had no halt: a member that applied one the
        # hash lost (a flushed server) lifts it too. Lifting what is not in force is a no-op.
        pipe.xadd(keys.stream, {"msg": lift.to_json()}, maxlen=STREAM_MAXLEN)
        _log(pipe, keys, record)
        removed, *_ = await pipe.execute()
    where = "globally" if symbol is None else f"on {symbol}"
    if removed:
        print(f"fleet {keys.name}: resumed {where}", file=out)
    else:
        print(f"fleet {keys.name}: no fleet halt in force {where}; nothing to resume", file=out)
    return 0


def _log(pipe: Any, keys: Any, record: dict[str, Any]) -> None:
    from tradeguard.io.fleet import OPERATOR_LOG

    pipe.lpush(keys.operator_log, json.dumps(record))
    pipe.ltrim(keys.operator_log, 0, OPERATOR_LOG - 1)


async def _status(url: str, keys: Any, as_json: bool, out: IO[str]) -> int:
    from tradeguard.io.fleet import MessageRejected, connect, parse_member, parse_message

    async with connect(url, timeout=_TIMEOUT) as client:
        raw_members = await client.hgetall(keys.members)
        raw_restrictions = await client.hgetall(keys.restrictions)
        raw_log = await client.lrange(keys.operator_log, 0, 19)
    now = time.time()
    members: list[dict[str, Any]] = []
    rejected = 0
    for name, raw in sorted(raw_members.items()):
        try:
            beat = parse_member(raw)
        except MessageRejected:
            rejected += 1
            continue
        member = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        members.append({"member": member, "heartbeat": beat, "age": max(0.0, now - beat)})
    restrictions: list[dict[str, Any]] = []
    for _, raw in sorted(raw_restrictions.items()):
        try:
            message = parse_message(raw)
        except MessageRejected:
            rejected += 1
            continue
        assert message.mode is not None
        until = None if message.lifts_at is None else max(0.0, message.lifts_at - now)
        restrictions.append(
            {
                "member": message.member,
                "guard": message.guard,
                "scope": message.scope,
                "mode": message.mode.name,
                "state": message.state,
                "lifts_at": message.lifts_at,
                "seconds_until_lift": until,
                "published_at": message.at,
            }
        )
    reasons = [json.loads(r) for r in raw_log]
    if as_json:
        body = {
            "fleet": keys.name,
            "at": now,
            "members": members,
            "restrictions": restrictions,
            "operator_log": reasons,
            "rejected": rejected,
        }
        print(json.dumps(body, indent=2), file=out)
        return 0
    print(
        f"fleet {keys.name}: {len(members)} member(s), {len(restrictions)} restriction(s)", file=out
    )
    for m in members:
        print(f"  member {m['member']}: last heartbeat {m['age']:.1f} s ago", file=out)
    for r in restrictions:
        scope = r["scope"] or "global"
        left = r["seconds_until_lift"]
        lifts = "until it clears (open-ended)" if left is None else f"lifts in {left:.1f} s"
        origin = f"{r['guard']}@{r['member']}"
        print(f"  {scope}: {r['mode']} by {origin} ({r['state']}), {lifts}", file=out)
    halts = [r for r in reasons if r.get("action") == "halt"]
    if halts:
        print(f"  last operator halt: {halts[0].get('reason')!r}", file=out)
    if rejected:
        print(f"  {rejected} malformed entr(y/ies) ignored", file=out)
    return 0
