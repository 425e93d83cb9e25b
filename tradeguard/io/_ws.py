"""What differs between the `websockets` releases we support (13 and newer).

The official Coinbase SDK pins ``websockets<14``, and an engine runs it beside tradeguard in
one environment, so the shell speaks to websockets 13 as well as to the newest release.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from websockets.asyncio.client import connect

__all__ = ["connect_takes_proxy", "direct_connection"]


@functools.cache
def connect_takes_proxy() -> bool:
    """Whether `connect` accepts ``proxy=`` (websockets 15 and newer)."""
    return "proxy" in inspect.signature(connect.__init__).parameters


def direct_connection(proxy: str | None = None) -> dict[str, Any]:
    """The keyword arguments of `connect` for ``proxy`` (``None``: connect directly).

    From websockets 15 on, leaving ``proxy`` out means "use the environment's proxy", so a
    direct connection must pass ``None``; 13 and 14 know no ``proxy`` and always connect
    directly.

    Raises:
        ValueError: a proxy was asked for and the installed websockets cannot use one.
    """
    if connect_takes_proxy():
        return {"proxy": proxy}
    if proxy is not None:
        raise ValueError(f"proxy={proxy!r} needs websockets >= 15; the installed one has none")
    return {}
