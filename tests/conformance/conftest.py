"""One `tradeguard exchange --tls` process for the whole session, as a real client sees it.

The process is the CLI itself (``python -m tradeguard.cli exchange``): its first stdout line
tells where it listens and which key it accepts. The session ends it with SIGTERM and asserts
it exits 0.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Six currencies (USD and five bases): more accounts than one page of four.
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "AVAX-USD", "DOGE-USD"]
READY_KEYS = {"rest_url", "ws_url", "admin_url", "api_key", "api_secret", "ca_file"}


@dataclass(frozen=True)
class RunningExchange:
    """What the first line said, plus the process."""

    rest_url: str
    ws_url: str
    admin_url: str
    api_key: str
    api_secret: str
    ca_file: str
    process: subprocess.Popen[str]

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: the SDK's ``base_url`` (it always prepends ``https://``)."""
        return self.rest_url.removeprefix("https://")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the exchange's throwaway CA."""
        return ssl.create_default_context(cafile=self.ca_file)


def start_exchange(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``tradeguard exchange ARGS`` and read its first line (a JSON object)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tradeguard.cli", "exchange", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(f"tradeguard exchange exited with {process.wait()} before serving")
    return process, json.loads(line)


def stop_exchange(process: subprocess.Popen[str], how: signal.Signals) -> int:
    """Send ``how`` and wait for the exit status."""
    process.send_signal(how)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture(scope="session")
def exchange() -> Iterator[RunningExchange]:
    """The session's exchange: TLS and auth on, several symbols."""
    process, ready = start_exchange("--tls", "--symbols", ",".join(SYMBOLS), "--seed", "11")
    try:
        assert set(ready) == READY_KEYS
        assert Path(ready["ca_file"]).is_file()
        yield RunningExchange(**ready, process=process)
    finally:
        status = stop_exchange(process, signal.SIGTERM)
    assert status == 0
    assert not Path(ready["ca_file"]).exists()  # the throwaway CA went with the process


class Admin:
    """The admin API over plain HTTP (aiohttp), for tests to flip faults."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.url}{path}", json=body) as response,
        ):
            return response.status, await response.json()

    async def requests(self) -> Any:
        status, body = await self.call("GET", "/requests")
        assert status == 200
        return body


@pytest.fixture
async def admin(exchange: RunningExchange) -> AsyncIterator[Admin]:
    """The admin API; every REST fault is cleared after the test."""
    control = Admin(exchange.admin_url)
    try:
        yield control
    finally:
        await control.call("DELETE", "/faults")
        await control.call("POST", "/feed", {"action": "resume"})
