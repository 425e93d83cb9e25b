"""The websocket feed machine (DESIGN §2.2), pure: the shell reports, the core decides.

The shell reports what happened to the connection (`start`, `connected`, `disconnected`,
`message`, `close`); the core answers with effects: `Reconnect` when the backoff delay has
passed, `CloseConnection` when a connected stream went silent. ``attempts`` counts reconnect
attempts since the connection was last stable for ``reset_seconds``; so a feed that connects
and drops at once keeps climbing towards DEGRADED instead of retrying fast forever. When a
drop finds ``attempts`` at the maximum, the feed enters DEGRADED: it keeps reconnecting at the
maximum delay (the original simply stopped) and returns to CONNECTED when one succeeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal, final

from tradeguard.errors import InvalidTransition
from tradeguard.fsm._backoff import BackoffPolicy
from tradeguard.fsm._machines import FEED
from tradeguard.fsm._states import FeedState
from tradeguard.fsm._timers import Timer, Timers
from tradeguard.fsm.effects import CloseConnection, Effect, Reconnect

__all__ = ["Feed"]

_CONNECTED, _BACKOFF, _DEGRADED = FeedState.CONNECTED, FeedState.BACKOFF, FeedState.DEGRADED

# Told when the feed enters DEGRADED (True), connects, or closes from DEGRADED (False).
DegradedListener = Callable[[str, bool, float], list[Effect]]


@final
class Feed:
    """One websocket feed: a model of `FEED` with its three timers."""

    __slots__ = (
        "_on_degraded",
        "_reset",
        "_retry",
        "_rng",
        "_stale",
        "_timers",
        "attempts",
        "disconnects",
        "dropped",
        "gaps",
        "last_message_at",
        "last_reason",
        "malformed",
        "max_attempts",
        "messages",
        "name",
        "policy",
        "reset_seconds",
        "stale_seconds",
        "state",
    )

    def __init__(
        self,
        name: str,
        timers: Timers,
        rng: random.Random,
        on_degraded: DegradedListener,
        *,
        policy: BackoffPolicy,
        max_attempts: int,
        reset_seconds: float,
        stale_seconds: float,
    ) -> None:
        self.name = name
        self.state = FeedState.DISCONNECTED
        self.policy = policy
        self.max_attempts = max_attempts
        self.reset_seconds = reset_seconds
        self.stale_seconds = stale_seconds
        self.attempts = 0
        self.messages = 0
        self.disconnects = 0
        self.gaps = 0
        self.dropped = 0
        self.malformed = 0
        self.last_message_at: float | None = None
        self.last_reason = ""
        self._rng = rng
        self._timers = timers
        self._on_degraded = on_degraded
        self._retry = Timer(self._retry_due)
        self._reset = Timer(self._stable)
        self._stale = Timer(self._went_silent)

    @property
    def machine(self) -> str:
        """The name its transitions are recorded under."""
        return f"feed:{self.name}"

    def attempts_exhausted(self) -> bool:
        """Condition of the DEGRADED rows: the reconnect attempts are used up (0 = unlimited)."""
        return self.max_attempts > 0 and self.attempts >= self.max_attempts

    @property
    def retry_at(self) -> float | None:
        """When the next reconnect attempt is due, if one is scheduled."""
        return self._retry.due

    def start(self, at: float) -> list[Effect]:
        """The shell is opening the feed's first connection."""
        return self._fire("start", at)

    def connected(self, at: float) -> list[Effect]:
        """A connection opened (subscriptions sent)."""
        effects = self._fire("connected", at)
        Timers.disarm(self._retry)  # from DEGRADED a retry may still be pending
        self.last_message_at = at
        self._timers.arm(self._reset, at + self.reset_seconds)
        self._timers.arm(self._stale, at + self.stale_seconds)
        # Told on every connect, not only when leaving DEGRADED: a websocket guard restored
        # TRIPPED from a snapshot has no degraded feed to wait for.
        return effects + self._on_degraded(self.name, False, at)

    def message(self, at: float, count: int = 1) -> list[Effect]:
        """``count`` messages arrived on the open connection: it is alive."""
        if self.state is not _CONNECTED:
            raise InvalidTransition(self.machine, None, self.state.name, "message")
        self.messages += count
        self.last_message_at = at
        self._timers.arm(self._stale, at + self.stale_seconds)
        return []

    def count(self, what: Literal["gaps", "dropped", "malformed"], n: int = 1) -> list[Effect]:
        """Count stream trouble the shell saw.

        None of it changes the feed's state: a gap or a bad message does not make the stream
        dead (silence does), and dropped data is the consumer's lag, not the connection's.
        """
        if what == "gaps":
            self.gaps += n
        elif what == "dropped":
            self.dropped += n
        elif what == "malformed":
            self.malformed += n
        else:
            raise ValueError(f"cannot count {what!r}; expected gaps, dropped or malformed")
        return []

    def disconnected(self, reason: str, at: float) -> list[Effect]:
        """The attempt failed or the open connection closed."""
        effects = self._drop("disconnected", at)
        self.last_reason = reason  # only once the machine accepted the event
        return effects

    def close(self, at: float) -> list[Effect]:
        """Shut the feed down for good."""
        was_degraded = self.state is _DEGRADED
        effects = self._fire("close", at)
        for timer in (self._retry, self._reset, self._stale):
            Timers.disarm(timer)
        if was_degraded:
            effects += self._on_degraded(self.name, False, at)
        return effects

    def _drop(self, trigger: str, at: float) -> list[Effect]:
        was_degraded = self.state is _DEGRADED
        effects = self._fire(trigger, at)
        self.disconnects += 1
        Timers.disarm(self._reset)
        Timers.disarm(self._stale)
        if self.state is _BACKOFF:
            delay = self.policy.delay(self.attempts, self._rng)
        else:  # DEGRADED: every retry waits the longest delay, still jittered
            delay = self.policy.delay_at_cap(self._rng)
        self._timers.arm(self._retry, at + delay)
        if self.state is _DEGRADED and not was_degraded:
            effects += self._on_degraded(self.name, True, at)
        return effects

    def _retry_due(self, at: float) -> list[Effect]:
        self.attempts += 1
        effects = self._fire("retry", at) if self.state is _BACKOFF else []
        return [*effects, Reconnect(self.name, self.attempts)]

    def _stable(self, at: float) -> list[Effect]:
        self.attempts = 0
        return []

    def _went_silent(self, at: float) -> list[Effect]:
        close = CloseConnection(self.name, f"no message for {self.stale_seconds:g}s")
        self.last_reason = "stale"
        return [close, *self._drop("stale", at)]

    def _fire(self, trigger: str, at: float) -> list[Effect]:
        return [FEED.transition(self, trigger, self.machine, None, at)]

    def status(self, now: float) -> dict[str, Any]:
        """JSON-ready view; ``last_message_age`` in seconds."""
        age = None if self.last_message_at is None else now - self.last_message_at
        return {
            "state": self.state.name,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "messages": self.messages,
            "disconnects": self.disconnects,
            "sequence_gaps": self.gaps,
            "dropped_messages": self.dropped,
            "malformed_messages": self.malformed,
            "last_message_age": age,
            "last_reason": self.last_reason,
            "retry_at": self._retry.due,
        }
