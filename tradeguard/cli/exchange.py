"""``tradeguard exchange``: check the arguments, then run the simulated exchange process."""

from __future__ import annotations

import argparse
import sys

__all__ = ["run_exchange_command"]


def run_exchange_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run `tradeguard.io.exchange.process.run_exchange` with the parsed arguments.

    Exits through ``parser.error`` (status 2) on bad usage; otherwise serves until SIGINT or
    SIGTERM and returns 0.
    """
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        parser.error(f"--symbols needs at least one symbol, got {args.symbols!r}")
    for port in (args.port, args.ws_port):
        if not 0 <= port <= 65535:
            parser.error(f"a port must be 0..65535 (0: any free), got {port}")
    from tradeguard.io.exchange.process import run_exchange

    return run_exchange(
        symbols=symbols,
        seed=args.seed,
        host=args.host,
        port=args.port,
        ws_port=args.ws_port,
        tls=args.tls,
        auth=not args.no_auth,
        out=sys.stdout,
    )
