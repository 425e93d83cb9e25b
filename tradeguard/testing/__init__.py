"""What users import in their own tests: a manual clock, the deterministic broker, the chaos
harness. Hypothesis strategies live in `tradeguard.testing.strategies` (it needs Hypothesis
installed, so it is not imported here).

Every name loads its module on first use: ``from tradeguard.testing import ManualClock`` loads
neither the asyncio shell nor aiohttp, websockets or prometheus_client.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradeguard.io.exchange.deterministic import DeterministicBroker
    from tradeguard.testing._clock import ManualClock
    from tradeguard.testing._virtual_time import advance
    from tradeguard.testing.chaos import (
        BROKER_METHODS,
        CallRecord,
        ChaosBroker,
        FaultAction,
        FaultPlan,
        api_outage_scenario,
        broker_read_failure_scenario,
        fault_after,
        fault_always,
        fault_once,
        fault_randomly,
        fault_sequence,
        order_drift_scenario,
        preview_failure_scenario,
        rate_limit_scenario,
        slippage_spike_scenario,
        stale_marks_scenario,
        validation_failure_scenario,
        websocket_accept,
        websocket_drop,
        websocket_refuse,
        websocket_restore,
        websocket_resume,
        websocket_silence,
    )

__all__ = [
    "BROKER_METHODS",
    "CallRecord",
    "ChaosBroker",
    "DeterministicBroker",
    "FaultAction",
    "FaultPlan",
    "ManualClock",
    "advance",
    "api_outage_scenario",
    "broker_read_failure_scenario",
    "fault_after",
    "fault_always",
    "fault_once",
    "fault_randomly",
    "fault_sequence",
    "order_drift_scenario",
    "preview_failure_scenario",
    "rate_limit_scenario",
    "slippage_spike_scenario",
    "stale_marks_scenario",
    "validation_failure_scenario",
    "websocket_accept",
    "websocket_drop",
    "websocket_refuse",
    "websocket_restore",
    "websocket_resume",
    "websocket_silence",
]

# Which module defines each exported name; everything not listed comes from the chaos harness.
_SOURCES = {
    "DeterministicBroker": "tradeguard.io.exchange.deterministic",
    "ManualClock": "tradeguard.testing._clock",
    "advance": "tradeguard.testing._virtual_time",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_SOURCES.get(name, "tradeguard.testing.chaos")), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
