"""``python -m tradeguard.cli``: the same as the ``tradeguard`` command."""

from tradeguard.cli import main

raise SystemExit(main())
