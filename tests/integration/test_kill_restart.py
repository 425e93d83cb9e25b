"""A process killed with SIGKILL mid-cooldown restarts still restricted, with the time left
(issue 6: "never more permissive"). Real process, real SQLite file, real wall clock."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from tradeguard import GuardState, OrderIntent, Settings, Side, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.io.store import EventStore, open_layer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("kill_restart_child.py")
COOLDOWN = 300.0  # RISK_API_HEALTH_COOLDOWN_SECONDS' default


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line from the child within {timeout} s")
    return process.stdout.readline().strip()


def run_until_killed(path: Path) -> float:
    """Start the child, wait for READY, SIGKILL it; returns when READY was seen (wall)."""
    process = subprocess.Popen(
        [sys.executable, str(CHILD), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = read_line(process, timeout=30)
        ready_at = time.time()
        assert line == "READY", (line, process.stderr.read() if process.stderr else "")
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL  # no clean shutdown ran
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return ready_at


async def restart(path: Path, ready_at: float) -> dict[str, Any]:
    async with EventStore(path) as store:
        elapsed = time.time() - ready_at  # measured before the layer reads its clocks
        layer = await open_layer(Settings(), store)
        archived = await store.events(kinds=["transition"])
    api = layer.guard("api_health")
    layer.observe(ev.MarkUpdate("BTC-USD"))
    opening = layer.decide(OrderIntent("BTC-USD", Side.BUY, Decimal(1)), position=Decimal(0))
    return {
        "elapsed": elapsed,
        "state": api.state,
        "left": api.seconds_until_lift,
        "mode": layer.mode(),
        "opening_allowed": opening.allowed,
        "archived": [(e["record"]["machine"], e["record"]["dest"]) for e in archived],
    }


def test_a_process_killed_mid_cooldown_restarts_restricted_with_the_time_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    ready_at = run_until_killed(path)
    time.sleep(1.0)  # the restart comes a moment later: that time counts against the cooldown
    found = anyio.run(restart, path, ready_at)
    assert found["state"] is GuardState.COOLDOWN
    assert found["mode"] is TradingMode.REDUCE_ONLY
    assert found["opening_allowed"] is False
    # Not a fresh 300 s (more restrictive than needed), never a lifted one (more permissive).
    assert 290.0 <= found["left"] <= COOLDOWN - found["elapsed"], found
    assert found["elapsed"] >= 1.0
    assert found["archived"] == [
        ("api_health", "TRIPPED"),
        ("mode", "REDUCE_ONLY"),
        ("api_health", "COOLDOWN"),
    ]
