"""The ``tradeguard`` command: ``demo``, ``replay``, ``preflight``, ``status``, ``events`` and
``diagrams``."""

# The parser lives here; each subcommand's work lives in its own module (demo, replay, status
# for `status` and `events`, preflight, diagrams, exchange), imported only when that command
# runs, so `tradeguard --help` loads no I/O.

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_STORE_ENV = "GPT_TRADER_STORE_PATH"
# Kept in step with `tradeguard.io.store.KINDS` (a test checks): the parser is built without
# importing the I/O shell.
_KINDS = ("transition", "mode", "trip", "alert", "refusal", "operator", "preflight")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad usage)."""
    parser = argparse.ArgumentParser(prog="tradeguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    diagrams = commands.add_parser("diagrams", help="write diagrams/<machine>.mmd (and .svg)")
    diagrams.add_argument("--out", type=Path, default=Path("diagrams"))
    diagrams.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="README whose section to update"
    )

    demo = commands.add_parser(
        "demo", help="trade against the embedded exchange while every matrix row breaks"
    )
    demo.add_argument("--seed", type=int, default=7, help="prices, strategy, jitter, faults")
    demo.add_argument("--duration", type=float, default=48.0, help="seconds (at least 30)")
    demo.add_argument(
        "--symbols", default="BTC-USD,ETH-USD,SOL-USD", help="comma-separated symbols"
    )

    replay = commands.add_parser("replay", help="replay every matrix row in virtual time")
    replay.add_argument("--seed", type=int, default=7, help="seed of the reconnect jitter")

    status = commands.add_parser(
        "status", help="the trading mode and every restriction, from a store or a runtime"
    )
    source = status.add_mutually_exclusive_group()
    source.add_argument("--store", type=Path, help=f"the event store (default: {_STORE_ENV})")
    source.add_argument(
        "--url", help="a running runtime's status, e.g. http://127.0.0.1:8080/status"
    )
    status.add_argument("--json", action="store_true", help="print JSON (the layer's status)")

    events = commands.add_parser("events", help="the archive: transitions, trips, refusals, ...")
    events.add_argument("--store", type=Path, help=f"the event store (default: {_STORE_ENV})")
    events.add_argument(
        "--since",
        help="an ISO 8601 time (2025-05-01T12:00, local unless an offset is given) "
        "or seconds ago (600)",
    )
    events.add_argument(
        "--kind", action="append", help=f"only this kind (repeatable): {', '.join(_KINDS)}"
    )
    events.add_argument("--limit", type=int, help="only the most recent N events")
    events.add_argument("--json", action="store_true", help="print a JSON array")

    preflight = commands.add_parser(
        "preflight", help="startup checks that gate trading (exit 0 ready, 1 not ready)"
    )
    preflight.add_argument("--profile", choices=("dev", "canary", "prod"), default="dev")
    preflight.add_argument(
        "--warn-only",
        action="store_true",
        help="downgrade every error to a warning (diagnostic only; also "
        "GPT_TRADER_PREFLIGHT_WARN_ONLY=1, true, yes or on)",
    )
    preflight.add_argument("--report-path", type=Path, help="where to write the JSON report")
    preflight.add_argument(
        "--rest-url",
        help="the venue's REST base URL, e.g. https://api.coinbase.com, driven through ccxt's "
        "coinbase client with COINBASE_API_KEY / COINBASE_API_SECRET (default: the embedded "
        "exchange)",
    )
    preflight.add_argument("--ws-url", help="the venue's websocket URL (with --rest-url)")
    preflight.add_argument("--symbols", default="BTC-USD,ETH-USD", help="comma-separated")

    exchange = commands.add_parser(
        "exchange", help="run the simulated Coinbase Advanced Trade exchange until SIGINT/SIGTERM"
    )
    exchange.add_argument("--symbols", default="BTC-USD,ETH-USD", help="comma-separated")
    exchange.add_argument("--seed", type=int, default=7, help="prices and order ids")
    exchange.add_argument("--host", default="127.0.0.1", help="where to listen")
    exchange.add_argument("--port", type=int, default=0, help="REST port (0: any free)")
    exchange.add_argument("--ws-port", type=int, default=0, help="websocket port (0: any free)")
    exchange.add_argument("--tls", action="store_true", help="HTTPS and WSS, throwaway CA")
    exchange.add_argument("--no-auth", action="store_true", help="accept any request")

    args = parser.parse_args(argv)
    if args.command == "exchange":
        from tradeguard.cli.exchange import run_exchange_command

        return run_exchange_command(parser, args)
    if args.command == "preflight":
        return _preflight(parser, args)
    if args.command in ("status", "events"):
        return _status_or_events(parser, args)
    if args.command == "diagrams":
        from tradeguard.cli.diagrams import write_diagrams

        for path in write_diagrams(args.out, args.readme):
            print(f"wrote {path}")
        return 0
    import os

    from tradeguard.errors import ConfigError

    if args.command == "replay":
        from tradeguard.cli.replay import run_replay

        try:
            return run_replay(seed=args.seed, out=sys.stdout, environ=os.environ)
        except ConfigError as err:
            parser.error(str(err))
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if len(symbols) < 2 or args.duration < 30:
        parser.error("demo needs at least two --symbols and a --duration of at least 30")
    from tradeguard.cli.demo import run_live_demo

    try:
        return run_live_demo(
            seed=args.seed,
            duration=args.duration,
            symbols=symbols,
            out=sys.stdout,
            environ=os.environ,
        )
    except ConfigError as err:
        parser.error(str(err))


def _preflight(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if (args.rest_url is None) != (args.ws_url is None):
        parser.error("pass both --rest-url and --ws-url, or neither (the embedded exchange)")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        parser.error("--symbols needs at least one symbol")
    from tradeguard.cli.preflight import environment, run_preflight_command

    return run_preflight_command(
        profile=args.profile,
        warn_only=args.warn_only,
        report_path=args.report_path,
        rest_url=args.rest_url,
        ws_url=args.ws_url,
        symbols=symbols,
        environ=environment(),
        out=sys.stdout,
        err=sys.stderr,
    )


def _status_or_events(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``status`` and ``events``: validate the usage (exit 2), then read (exit 1 if unreadable)."""
    import time

    from tradeguard.cli import status as status_command
    from tradeguard.config import Settings
    from tradeguard.errors import ConfigError

    try:
        settings = Settings.from_env()
    except ConfigError as err:
        parser.error(str(err))
    url: str | None = getattr(args, "url", None)
    store: Path | None = args.store
    if url is None and store is None:
        if not settings.store_path:
            parser.error(f"no event store: pass --store PATH or set {_STORE_ENV}")
        store = Path(settings.store_path)
    if args.command == "status":
        if url is not None and not url.startswith(("http://", "https://")):
            parser.error(f"--url must be an http:// or https:// URL, got {url!r}")
        return status_command.run_status(
            store=store,
            url=url,
            settings=settings,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    since = None
    if args.since is not None:
        try:
            since = status_command.parse_since(args.since, time.time())
        except ValueError as err:
            parser.error(f"--since: {err}")
    unknown = sorted(set(args.kind or ()) - set(_KINDS))
    if unknown:
        parser.error(f"--kind: unknown {', '.join(unknown)}; expected one of {', '.join(_KINDS)}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    assert store is not None
    return status_command.run_events(
        store=store,
        since=since,
        kinds=args.kind,
        limit=args.limit,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
    )
