"""What users import in their own tests: a manual clock (more to come: chaos, strategies)."""

from tradeguard.testing._clock import ManualClock

__all__ = ["ManualClock"]
