"""The process `test_kill_restart.py` kills: it trips api_health, recovers into its cooldown
(the default 300 s), prints READY once the snapshot holds the cooldown, and waits to be killed.

Usage: ``python kill_restart_child.py STORE_PATH``.
"""

from __future__ import annotations

import sys

import anyio

from tradeguard import Settings
from tradeguard.fsm import events as ev
from tradeguard.io import Runtime
from tradeguard.io.store import EventStore, StoreRecorder, open_layer


async def main(path: str) -> None:
    async with EventStore(path) as store:
        layer = await open_layer(Settings(), store)
        recorder = StoreRecorder(store, layer)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(recorder.on_effect)
            runtime.observe(ev.RateLimitUsage(0.95))  # trips api_health: REDUCE_ONLY
            runtime.observe(ev.RateLimitUsage(0.1))  # the fault clears: COOLDOWN, 300 s
            with anyio.fail_after(10):
                while True:
                    saved = await store.load_snapshot()
                    guards = {} if saved is None else saved["global"]["guards"]
                    if guards.get("api_health", {}).get("state") == "COOLDOWN":
                        break
                    await anyio.sleep(0.01)
            print("READY", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
