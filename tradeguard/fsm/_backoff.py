"""Reconnect delays for the websocket feed (DESIGN §2.2).

Attempt ``n`` (0-based) waits about ``min(base * multiplier**n, max)``, spread by
``±jitter_pct`` from an injected random source. The spread is drawn from
``[raw * (1 - jitter), min(raw * (1 + jitter), max)]``: no delay ever exceeds ``max``, and
delays at the cap stay spread below it instead of piling up on it (the original, like many
clients, clipped jittered delays to the cap, so a herd of clients reconnected in lockstep).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import final

from tradeguard.config import Settings

__all__ = ["BackoffPolicy"]


@final
@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before reconnect attempt ``n``."""

    base: float
    multiplier: float
    max: float
    jitter_pct: float

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.max and math.isfinite(self.max)):
            raise ValueError(f"backoff needs 0 < base <= max, got {self.base!r}, {self.max!r}")
        if not (self.multiplier >= 1 and math.isfinite(self.multiplier)):
            raise ValueError(f"backoff multiplier must be finite and >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter_pct < 1:
            raise ValueError(f"backoff jitter_pct must be in [0, 1), got {self.jitter_pct!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> BackoffPolicy:
        """The policy the ``GPT_TRADER_WS_RECONNECT_*`` knobs describe."""
        return cls(
            base=settings.ws_reconnect_backoff_base,
            multiplier=settings.ws_reconnect_backoff_multiplier,
            max=settings.ws_reconnect_backoff_max,
            jitter_pct=settings.ws_reconnect_jitter_pct,
        )

    def raw(self, attempt: int) -> float:
        """The delay for ``attempt`` before jitter: exponential, capped at ``max``."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt!r}")
        if self.multiplier == 1:
            return self.base
        # From this exponent on the delay is the cap; below it base * multiplier**attempt is
        # under the cap, so float pow never overflows.
        to_cap = math.ceil(math.log(self.max / self.base, self.multiplier))
        if attempt >= to_cap:
            return self.max
        return min(self.base * self.multiplier**attempt, self.max)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay for ``attempt``: within ``raw * (1 ± jitter_pct)`` and <= max."""
        return self._spread(self.raw(attempt), rng)

    def delay_at_cap(self, rng: random.Random) -> float:
        """A jittered delay at the cap, whatever the multiplier (a DEGRADED feed's retries)."""
        return self._spread(self.max, rng)

    def _spread(self, raw: float, rng: random.Random) -> float:
        low = raw * (1 - self.jitter_pct)
        high = min(raw * (1 + self.jitter_pct), self.max)
        return low + (high - low) * rng.random()
