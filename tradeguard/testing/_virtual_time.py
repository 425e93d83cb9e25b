"""Virtual time for a running `Runtime`: cooldowns of minutes pass in no real time."""

from __future__ import annotations

import anyio

from tradeguard.io.runtime import Runtime
from tradeguard.testing._clock import ManualClock

__all__ = ["advance"]


async def advance(runtime: Runtime, clock: ManualClock, seconds: float) -> None:
    """Move ``clock`` (the layer's clock) forward and let the runtime act on it.

    Steps through every deadline on the way, so each timer fires at its own time and its
    effects (cancels, alerts, mode changes) run before the next; returns once every task is
    waiting again.

    Raises:
        ValueError: ``seconds`` is negative, NaN or infinite.
    """
    target = clock() + seconds
    if not (seconds >= 0 and target < float("inf")):
        raise ValueError(f"advance needs finite seconds >= 0, got {seconds!r}")
    while True:
        deadline = runtime.layer.next_deadline()
        step_to = target if deadline is None else min(max(deadline, clock()), target)
        clock.jump_to(step_to)
        runtime.clock_moved()
        await anyio.wait_all_tasks_blocked()
        if step_to >= target:
            return
