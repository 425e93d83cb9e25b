"""A clock that moves only when told: cooldowns pass in no real time."""

from __future__ import annotations

import math
from typing import final

__all__ = ["ManualClock"]


@final
class ManualClock:
    """Monotonic seconds that advance only through `advance`; call it like ``time.monotonic``.

    Also serves as the wall clock of a test (``wall_clock=clock.wall``), offset by
    ``wall_offset`` so saved deadlines look like real epoch times.
    """

    __slots__ = ("_now", "wall_offset")

    def __init__(self, start: float = 0.0, *, wall_offset: float = 1_800_000_000.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"ManualClock start must be finite, got {start!r}")
        self._now = float(start)
        self.wall_offset = wall_offset

    def __call__(self) -> float:
        return self._now

    def wall(self) -> float:
        """Wall-clock seconds that move with this clock."""
        return self._now + self.wall_offset

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and return the new time.

        Raises:
            ValueError: negative, NaN or infinite seconds (time never goes backwards).
        """
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"ManualClock.advance needs finite seconds >= 0, got {seconds!r}")
        self._now += seconds
        return self._now

    def jump_to(self, when: float) -> float:
        """Move forward to exactly ``when`` (never backwards).

        Raises:
            ValueError: ``when`` is earlier than now, NaN or infinite.
        """
        if not (when >= self._now and math.isfinite(when)):
            raise ValueError(
                f"ManualClock.jump_to needs a finite time >= {self._now!r}, got {when!r}"
            )
        self._now = float(when)
        return self._now
