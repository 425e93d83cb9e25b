"""The ``tradeguard`` command: ``demo``, ``replay``, ``preflight``, ``status``, ``events``,
``diagrams``, ``exchange``, and the fleet's ``halt``, ``resume`` and ``fleet status``."""

# The parser lives here; each subcommand's work lives in its own module (demo, replay, status
# for `status` and `events`, preflight, diagrams, exchange, fleet for `halt`, `resume` and
# `fleet status`), imported only when that command
# runs, so `tradeguard --help` loads no I/O.

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

_DESCRIPTION = """\
tradeguard: the reliability layer of an automated trading engine.

Commands: demo (a live run against the embedded exchange), replay (the same rows in
virtual time), preflight (startup checks), status and events (what a runtime or its event
store says now, and its archive), diagrams (the state machines as Mermaid), exchange (the
simulated venue), halt, resume and fleet status (a fleet's shared restrictions on Redis).
Run 'tradeguard COMMAND --help' for a command's options."""

# 128 + SIGPIPE: what `cat` and `grep` exit with when the reader of their output went away.
_EXIT_BROKEN_PIPE = 141


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows an option's default after its help, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Plain-text help with defaults; a usage error names the command and the option, not the
    whole usage line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n(see '{self.prog} --help')\n")


_STORE_ENV = "GPT_TRADER_STORE_PATH"
# Kept in step with `tradeguard.io.store.KINDS` (a test checks): the parser is built without
# importing the I/O shell.
_KINDS = ("transition", "mode", "trip", "alert", "refusal", "operator", "preflight")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad usage).

    A reader that closes the pipe early (``tradeguard events --json | head -1``) ends the
    command quietly with 141, as it would end ``cat``: no traceback.
    """
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # Python's docs (signal module, "Note on SIGPIPE"): point stdout at devnull so the
        # interpreter's final flush of what is still buffered cannot raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (a test's StringIO)
            pass
        return _EXIT_BROKEN_PIPE
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = _Parser(prog="tradeguard", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    diagrams = commands.add_parser(
        "diagrams", help="write diagrams/README.md and <machine>.mmd (and .svg with Graphviz)"
    )
    diagrams.add_argument(
        "--out", type=Path, default=Path("diagrams"), help="the directory to write them into"
    )

    demo = commands.add_parser(
        "demo", help="trade against the embedded exchange while every matrix row breaks"
    )
    demo.add_argument("--seed", type=int, default=7, help="prices, strategy, jitter, faults")
    demo.add_argument(
        "--duration", type=float, default=50.0, help="length of the run in seconds (at least 30)"
    )
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
    status.add_argument(
        "--mermaid",
        action="store_true",
        help="print the machines as Mermaid diagrams (Markdown), current states highlighted",
    )
    status.add_argument(
        "--watch",
        nargs="?",
        const="",
        metavar="URL",
        help="a live view of a running runtime, redrawn every second until Ctrl-C: its status "
        "URL (http://127.0.0.1:PORT or .../status), or the one --url names",
    )
    _start_fresh_option(status)

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
    events.add_argument(
        "--json", action="store_true", help="print a JSON array (default: one line per event)"
    )
    _start_fresh_option(events)

    preflight = commands.add_parser(
        "preflight", help="startup checks that gate trading (exit 0 ready, 1 not ready)"
    )
    preflight.add_argument(
        "--profile",
        choices=("dev", "canary", "prod"),
        default="dev",
        help="dev runs the config check only (COINBASE_PREFLIGHT_FORCE_REMOTE=1 runs all); "
        "canary and prod also check the venue",
    )
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
    _start_fresh_option(preflight)

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

    from tradeguard.cli.fleet import add_fleet_commands

    fleet_parsers = add_fleet_commands(commands)

    args = parser.parse_args(argv)
    # Usage errors found after parsing are reported by the command's own parser.
    command: _Parser = commands.choices[args.command]
    if args.command in ("halt", "resume", "fleet"):
        from tradeguard.cli.fleet import run_fleet_command

        name = "fleet status" if args.command == "fleet" else args.command
        return run_fleet_command(fleet_parsers[name], args, out=sys.stdout, err=sys.stderr)
    if args.command == "exchange":
        from tradeguard.cli.exchange import run_exchange_command

        return run_exchange_command(parser, args)
    if args.command == "preflight":
        return _preflight(command, args)
    if args.command in ("status", "events"):
        return _status_or_events(command, args)
    if args.command == "diagrams":
        from tradeguard.cli.diagrams import write_diagrams

        written, skipped = write_diagrams(args.out)
        for path in written:
            print(f"wrote {path}")
        if skipped is not None:
            print(skipped)
        return 0
    import os

    from tradeguard.errors import ConfigError

    if args.command == "replay":
        from tradeguard.cli.replay import run_replay

        try:
            return run_replay(seed=args.seed, out=sys.stdout, environ=os.environ)
        except ConfigError as err:
            command.error(str(err))
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if len(symbols) < 2:
        command.error(f"--symbols needs at least two symbols, got {args.symbols!r}")
    if not args.duration >= 30:  # NaN too
        command.error(f"--duration must be at least 30 seconds, got {args.duration:g}")
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
        command.error(str(err))


def _version() -> str:
    import tradeguard

    version: str = tradeguard.__version__
    return version


def _start_fresh_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--start-fresh",
        action="store_true",
        help="if the event store is corrupt or not a tradeguard store, move it aside "
        "(<path>.corrupt-<time>) and start a new one; if its snapshot cannot be restored, "
        "discard it. Never needed for a healthy store",
    )


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
        start_fresh=args.start_fresh,
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
    watch: str | None = getattr(args, "watch", None)
    if watch is not None:
        return _watch(parser, watch or url, args)
    if url is not None and args.start_fresh:
        parser.error("--start-fresh repairs an event store: it goes with --store, not --url")
    if url is None and store is None:
        if not settings.store_path:
            parser.error(f"no event store: pass --store PATH or set {_STORE_ENV}")
        store = Path(settings.store_path)
    if args.command == "status":
        if url is not None and not url.startswith(("http://", "https://")):
            parser.error(f"--url must be an http:// or https:// URL, got {url!r}")
        if args.mermaid:
            from tradeguard.cli.mermaid import run_mermaid

            return run_mermaid(
                store=store, url=url, settings=settings, out=sys.stdout, err=sys.stderr
            )
        return status_command.run_status(
            store=store,
            url=url,
            settings=settings,
            start_fresh=args.start_fresh,
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
        start_fresh=args.start_fresh,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
    )


def _watch(parser: argparse.ArgumentParser, url: str | None, args: argparse.Namespace) -> int:
    """``status --watch [URL]``: the live view of a running runtime until Ctrl-C."""
    if url is None:
        parser.error("--watch needs a running runtime's status URL: --watch http://HOST:PORT")
    if not url.startswith(("http://", "https://")):
        parser.error(f"--watch needs an http:// or https:// URL, got {url!r}")
    if args.store is not None or args.json or args.start_fresh or getattr(args, "mermaid", False):
        parser.error("--watch draws a running runtime: not with --store, --json, --start-fresh")
    from tradeguard.cli.watch import run_watch

    return run_watch(url, out=sys.stdout)
