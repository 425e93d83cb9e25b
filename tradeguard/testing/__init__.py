"""What users import in their own tests: a manual clock (more to come: chaos, strategies)."""

from tradeguard.io.exchange.deterministic import DeterministicBroker
from tradeguard.testing._clock import ManualClock

__all__ = ["DeterministicBroker", "ManualClock"]
