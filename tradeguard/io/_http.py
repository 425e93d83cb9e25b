"""Serving a small aiohttp app on 127.0.0.1: the status endpoint and the simulator's admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from aiohttp import web

__all__ = ["serving"]


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Listen on ``host:port`` (0: any free port) for the block; yields the bound port.

    No access log and a short shutdown timeout: a request still running when the block ends
    is cancelled instead of holding the exit for a minute. Leaving closes every connection.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
