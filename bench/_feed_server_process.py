"""The embedded feed server in a child process, driven over its stdin and stdout (issue 15).

`bench_feed.py` measures clients in its own event loop; a server in that loop would take its
CPU and bound every figure by what it can send. Here the parent starts this file with the same
interpreter; the child serves an `ExchangeFeedServer` on 127.0.0.1 (an ephemeral port, its own
ticker and heartbeat rounds an hour apart) and answers one JSON line per JSON line it reads:

==================================================  ==========================================
request                                             answer
==================================================  ==========================================
(none: written once the server listens)             ``{"url": "ws://127.0.0.1:PORT"}``
``{"op": "connections"}``                           ``{"open": N}``
``{"op": "burst", "count": N, "rate": R | null}``   ``{"last": {symbol: price}}`` once sent
==================================================  ==========================================

A burst is `ExchangeFeedServer.send_burst`; its answer comes when the last message is handed
to the sockets. Any other request is answered ``{"error": ...}``. The child exits on SIGTERM
or when its stdin or stdout closes (the parent went away); it ignores SIGINT, so a Ctrl-C
reaches only the parent, which terminates it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from subprocess import PIPE
from typing import Any, Self

import anyio
from anyio import to_thread
from anyio.abc import ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream

from tradeguard.io.exchange import ExchangeFeedServer, Market

IDLE = 3600.0  # the server's own ticker and heartbeat rounds stay out of the way
_MAX_LINE = 1 << 20  # the largest answer: a burst's last prices over 1,000 symbols is ~30 kB


class FeedServerProcess(anyio.AsyncContextManagerMixin):
    """The parent's handle on a child serving ``symbols``; terminated when the block exits.

    Args:
        symbols: the market's symbols.
        seed: seeds the market.
        start_timeout: seconds the child may take to report its URL.
    """

    def __init__(self, symbols: Sequence[str], *, seed: int, start_timeout: float = 20.0) -> None:
        self.symbols = list(symbols)
        self.seed = seed
        self.start_timeout = start_timeout
        self.url = ""
        self._requests: ByteSendStream | None = None
        self._answers: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        command = [sys.executable, str(Path(__file__).resolve()), str(self.seed), *self.symbols]
        process = await anyio.open_process(command, stdin=PIPE, stdout=PIPE, stderr=None)
        try:
            self._requests = process.stdin
            if process.stdout is not None:
                self._answers = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(self.start_timeout):
                self.url = (await self._receive())["url"]
            yield self
        finally:
            self._requests = self._answers = None
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                with anyio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()

    async def open_connections(self) -> int:
        """Websocket connections the server has open."""
        return int((await self._ask({"op": "connections"}))["open"])

    async def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the server has exactly ``count`` connections open."""
        with anyio.fail_after(timeout):
            while await self.open_connections() != count:
                await anyio.sleep(0.005)

    async def send_burst(self, count: int, *, rate: float | None = None) -> dict[str, Decimal]:
        """`ExchangeFeedServer.send_burst` in the child; returns the last price per symbol."""
        answer = await self._ask({"op": "burst", "count": count, "rate": rate})
        return {symbol: Decimal(price) for symbol, price in answer["last"].items()}

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._requests is None:
            raise RuntimeError("the feed server process is not running: use `async with`")
        async with self._lock:  # one request in flight: answers come back in order
            await self._requests.send(json.dumps(request).encode() + b"\n")
            return await self._receive()

    async def _receive(self) -> dict[str, Any]:
        if self._answers is None:
            raise RuntimeError("the feed server process is not running: use `async with`")
        line = await self._answers.receive_until(b"\n", _MAX_LINE)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"feed server process: {answer['error']}")
        return answer


# ---------------------------------------------------------------------- the child


async def _serve(seed: int, symbols: list[str]) -> None:
    market = Market(symbols, random.Random(seed))
    async with ExchangeFeedServer(market, tick_interval=IDLE, heartbeat_interval=IDLE) as server:
        if not _answer({"url": server.url}):
            return
        while line := await to_thread.run_sync(sys.stdin.readline):
            if not _answer(await _apply(server, json.loads(line))):
                return


async def _apply(server: ExchangeFeedServer, request: dict[str, Any]) -> dict[str, Any]:
    match request.get("op"):
        case "connections":
            return {"open": server.open_connections}
        case "burst":
            last = await server.send_burst(request["count"], rate=request["rate"])
            return {"last": {symbol: str(price) for symbol, price in last.items()}}
        case other:
            return {"error": f"unknown op {other!r}; expected connections or burst"}


def _answer(body: dict[str, Any]) -> bool:
    """Write one answer line to stdout; False if the parent is gone (the pipe is closed)."""
    data = (json.dumps(body) + "\n").encode()
    try:
        while data:
            data = data[os.write(sys.stdout.fileno(), data) :]
    except BrokenPipeError:
        return False
    return True


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    anyio.run(_serve, int(sys.argv[1]), sys.argv[2:])
