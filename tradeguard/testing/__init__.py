"""What users import in their own tests: a manual clock, the deterministic broker, the chaos
harness. Hypothesis strategies live in `tradeguard.testing.strategies` (it needs Hypothesis
installed, so it is not imported here)."""

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
