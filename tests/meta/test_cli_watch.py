"""`tradeguard status --watch`: the live view, drawn from a running engine's ``/status``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from rich.console import Console
from status_stub import serving_status

from tradeguard import ReliabilityLayer, Settings
from tradeguard.cli.status import fetch_status
from tradeguard.cli.watch import changes, render, run_watch, status_url
from tradeguard.fsm import events as ev
from tradeguard.fsm.views import LayerView
from tradeguard.io.engine import Engine
from tradeguard.testing import DeterministicBroker, ManualClock

BTC, ETH = "BTC-USD", "ETH-USD"


def text_of(renderable: object, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.anyio
async def test_the_view_of_a_running_engine_shows_a_trip_its_mode_and_the_transition() -> None:
    broker = DeterministicBroker((BTC, ETH), seed=1)
    async with Engine(Settings(), broker=broker, symbols=(BTC, ETH), status_port=0) as engine:
        assert engine.status_url is not None
        url = status_url(engine.status_url)
        before = await anyio.to_thread.run_sync(fetch_status, url)
        engine.runtime.observe(ev.RateLimitUsage(0.95))  # api_health trips: REDUCE_ONLY
        await engine.halt("maintenance", symbol=ETH, ttl=60)
        after = await anyio.to_thread.run_sync(fetch_status, url)
    now = time.time()
    found = changes(before, after, now - 3)
    assert ("api_health", None, "HEALTHY", "TRIPPED") in [
        (c.machine, c.scope, c.source, c.dest) for c in found
    ]
    text = text_of(render(after, found, now, source=url))
    assert f"tradeguard {url}" in text
    assert "global mode REDUCE_ONLY" in text
    lines = text.splitlines()
    [api] = [line for line in lines if "api_health" in line and "while the fault" in line]
    assert "TRIPPED" in api and "REDUCE_ONLY" in api
    [halt] = [line for line in lines if line.strip("│ ").startswith(ETH) and "HALTED" in line]
    left = float(halt.split("(maintenance)")[1].strip("│ ").split()[0])
    assert 50 < left <= 60
    assert any("3 s" in line and "HEALTHY -> TRIPPED" in line for line in lines)
    assert "breakers and feeds" in text
    assert "mark_staleness" in text  # every guard of every scope


def test_the_first_view_has_no_transitions_and_a_failed_read_keeps_the_last_view() -> None:
    layer = ReliabilityLayer(Settings(), ManualClock())
    view = layer.view()
    assert changes(None, view, 0.0) == []
    text = text_of(render(view, [], time.time(), problem="connection refused"))
    assert "cannot read the status: connection refused" in text
    assert "none seen yet" in text
    assert "waiting for the first status" in text_of(render(None, [], time.time()))


def test_watch_on_a_terminal_redraws_with_live_until_ctrl_c() -> None:
    clock = ManualClock()
    layer = ReliabilityLayer(Settings(), clock)
    sleeps: list[float] = []

    def fetch(url: str) -> LayerView:
        assert url == "http://127.0.0.1:9/status"
        return layer.view()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            layer.observe(ev.RateLimitUsage(0.95))
        else:
            raise KeyboardInterrupt

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    status = run_watch("http://127.0.0.1:9", out=out, fetch=fetch, sleep=sleep, console=console)
    assert status == 0
    assert sleeps == [1.0, 1.0]
    assert "HEALTHY -> TRIPPED" in out.getvalue()


@pytest.fixture
def status_server() -> Iterator[str]:
    layer = ReliabilityLayer(Settings(), ManualClock())
    layer.observe(ev.RateLimitUsage(0.95))
    with serving_status(LayerView.to_json(layer.view())) as url:
        yield url


def test_watch_draws_frames_into_a_pipe_and_stops_on_sigint_with_0(status_server: str) -> None:
    env = {**os.environ, "COLUMNS": "140"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeguard.cli", "status", "--watch", status_server],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the first whole frame ends with its transitions table
            seen.append(line)
            if "none seen yet" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        watchdog.cancel()
    frame = "".join(seen)
    assert "global mode REDUCE_ONLY" in frame
    assert "api_health" in frame and "TRIPPED" in frame
    assert (proc.returncode, err) == (0, "")
