"""The seed's rollout-checklist command, kept as a thin alias of ``tradeguard preflight``.

    python scripts/production_preflight.py --profile canary
"""

from __future__ import annotations

import sys

from tradeguard.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["preflight", *sys.argv[1:]]))
