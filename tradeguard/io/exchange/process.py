"""``tradeguard exchange``: the embedded exchange as a process, for any client to test against.

Prints one JSON line first (``rest_url``, ``ws_url``, ``admin_url``, ``api_key``,
``api_secret``, ``ca_file``), flushed, then serves with prices stepping until SIGINT or
SIGTERM, and exits 0. Everything is seeded but the API key and the TLS keys (OS randomness).
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Sequence
from typing import TextIO

import anyio

from tradeguard.io.exchange.admin import AdminServer
from tradeguard.io.exchange.feed_server import ExchangeFeedServer
from tradeguard.io.exchange.market import Market
from tradeguard.io.exchange.rest_server import ExchangeRestServer
from tradeguard.io.exchange.tls import ServerTls
from tradeguard.io.exchange.venue import Venue

__all__ = ["run_exchange", "serve_exchange"]


async def serve_exchange(
    *,
    symbols: Sequence[str],
    seed: int,
    host: str,
    port: int,
    ws_port: int,
    tls: bool,
    auth: bool,
    out: TextIO,
) -> None:
    """Serve until SIGINT or SIGTERM; the first line written to ``out`` says where."""
    root = random.Random(seed)
    market = Market(symbols, random.Random(root.getrandbits(64)))
    venue = Venue(market, random.Random(root.getrandbits(64)))
    server_tls = ServerTls() if tls else None
    try:
        rest = ExchangeRestServer(
            venue,
            host=host,
            port=port,
            rng=random.Random(root.getrandbits(64)),
            auth=auth,
            tls=server_tls or False,
        )
        feed = ExchangeFeedServer(
            market,
            host=host,
            port=ws_port,
            tick_interval=0.25,
            heartbeat_interval=1.0,
            tls=server_tls or False,
            credentials=rest.credentials if auth else None,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with rest, feed, AdminServer(rest, feed, host=host) as admin:
                ready = {
                    "rest_url": rest.url,
                    "ws_url": feed.url,
                    "admin_url": admin.url,
                    "api_key": rest.credentials.api_key,
                    "api_secret": rest.credentials.api_secret,
                    "ca_file": None if server_tls is None else str(server_tls.ca_file),
                }
                out.write(json.dumps(ready) + "\n")
                out.flush()
                async for _ in signals:
                    break
    finally:
        if server_tls is not None:
            server_tls.close()


def run_exchange(
    *,
    symbols: Sequence[str],
    seed: int,
    host: str,
    port: int,
    ws_port: int,
    tls: bool,
    auth: bool,
    out: TextIO,
) -> int:
    """Run `serve_exchange` in a fresh event loop; returns the exit status (0)."""
    anyio.run(
        lambda: serve_exchange(
            symbols=symbols,
            seed=seed,
            host=host,
            port=port,
            ws_port=ws_port,
            tls=tls,
            auth=auth,
            out=out,
        )
    )
    return 0
