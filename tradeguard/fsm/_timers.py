"""Deadlines for the pure core: the core never sleeps, it says when `tick()` is next due.

One heap for every timer of a layer. Moving a deadline *later* (a fresh mark pushes its
staleness deadline back on every tick of market data) must cost nothing on the hot path, so
the heap may hold an entry earlier than its timer's real deadline; when such an entry reaches
the top it is re-queued at the real deadline. Moving a deadline earlier pushes a new entry,
and the old one is recognised as stale by its sequence number.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import final

from tradeguard.fsm.effects import Effect

__all__ = ["Timer", "Timers", "seconds_until"]


def seconds_until(due: float | None, now: float) -> float | None:
    """The one rule for "seconds until it may lift": the time left until ``due``, never
    negative (a deadline already due but not yet applied reads 0); ``None`` without one."""
    return None if due is None else max(0.0, due - now)


@final
class Timer:
    """One deadline and what to do when it passes.

    Attributes:
        due: the monotonic time it is armed for, or ``None`` when disarmed.
        scope: the symbol whose mode its firing may change, or ``None`` for global.
    """

    __slots__ = ("_entry", "_entry_when", "due", "fire", "scope")

    def __init__(self, fire: Callable[[float], list[Effect]], scope: str | None = None) -> None:
        self.fire = fire
        self.scope = scope
        self.due: float | None = None
        self._entry: int | None = None
        self._entry_when = 0.0


@final
class Timers:
    """A heap of timers; `pop_due` hands them out in deadline order."""

    __slots__ = ("_heap", "_seq", "earliest")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # Never later than the next real deadline (exact after `next_due`), kept for free on
        # every arming: the layer compares the clock with it instead of walking the heap.
        self.earliest = math.inf

    def arm(self, timer: Timer, when: float) -> None:
        """Arm ``timer`` for ``when``, replacing any earlier arming."""
        timer.due = when
        if timer._entry is None or when < timer._entry_when:
            self._push(timer, when)

    @staticmethod
    def disarm(timer: Timer) -> None:
        """Disarm ``timer``; its heap entry, if any, is dropped when it surfaces."""
        timer.due = None

    def _push(self, timer: Timer, when: float) -> None:
        seq = next(self._seq)
        timer._entry = seq
        timer._entry_when = when
        heapq.heappush(self._heap, (when, seq, timer))
        if when < self.earliest:
            self.earliest = when

    def next_due(self) -> float | None:
        """The earliest armed deadline, or ``None``."""
        heap = self._heap
        while heap:
            when, seq, timer = heap[0]
            if timer._entry != seq:
                heapq.heappop(heap)
            elif timer.due is None:
                heapq.heappop(heap)
                timer._entry = None
            elif timer.due > when:
                heapq.heappop(heap)
                self._push(timer, timer.due)
            else:
                self.earliest = when
                return when
        self.earliest = math.inf
        return None

    def pop_due(self, now: float) -> tuple[Timer, float] | None:
        """Disarm and return the earliest timer due at or before ``now``, with its deadline."""
        when = self.next_due()
        if when is None or when > now:
            return None
        _, _, timer = heapq.heappop(self._heap)
        timer._entry = None
        timer.due = None
        return timer, when

    def __len__(self) -> int:
        return len(self._heap)
