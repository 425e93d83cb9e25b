"""The ``tradeguard`` command: ``diagrams`` and ``demo``."""

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

    demo = commands.add_parser("demo", help="replay every decision-matrix row in virtual time")
    demo.add_argument("--seed", type=int, default=7, help="seed of the reconnect jitter")

    args = parser.parse_args(argv)
    if args.command == "diagrams":
        from tradeguard._diagrams import write_diagrams

        for path in write_diagrams(args.out, args.readme):
            print(f"wrote {path}")
        return 0
    from tradeguard._replay import run_replay

    return run_replay(seed=args.seed, out=sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
