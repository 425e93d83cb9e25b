"""The ``tradeguard`` command: ``demo``, ``replay`` and ``diagrams``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


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

    args = parser.parse_args(argv)
    if args.command == "diagrams":
        from tradeguard._diagrams import write_diagrams

        for path in write_diagrams(args.out, args.readme):
            print(f"wrote {path}")
        return 0
    if args.command == "replay":
        from tradeguard._replay import run_replay

        return run_replay(seed=args.seed, out=sys.stdout)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if len(symbols) < 2 or args.duration < 30:
        parser.error("demo needs at least two --symbols and a --duration of at least 30")
    from tradeguard._live_demo import run_live_demo

    return run_live_demo(seed=args.seed, duration=args.duration, symbols=symbols, out=sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
