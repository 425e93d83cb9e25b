"""The guards of DESIGN §2.1: each one a model of the shared HEALTHY/TRIPPED/COOLDOWN machine.

Theory of operation. A guard counts its observations in plain code (a dict or attribute
update costs far less than a `transitions` trigger) and fires a transition only when its trip
or recovery condition starts to hold. Every state change goes through `Guard._fire`, which
also arms or disarms the cooldown timer, so the machine and its deadline never disagree.

- TRIPPED emits the guard's trip effects once, on entry, never per observation.
- COOLDOWN keeps the restriction for the guard's cooldown: the fault must stay away that long.
- Slippage and validation "recover at once": the observations that would show recovery stop
  while the guard restricts (no new orders, no new checks), so the counter resets on the trip
  and the guard goes straight to COOLDOWN.
- Preview has its own two-state machine: once disabled it stays so until an operator reset.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from tradeguard.fsm._definition import MachineDefinition
from tradeguard.fsm._machines import GUARD, MARK, PREVIEW
from tradeguard.fsm._states import GuardState, TradingMode
from tradeguard.fsm._timers import Timer, Timers
from tradeguard.fsm.effects import (
    Alert,
    CancelOpenOrders,
    CancelOrders,
    DisablePreview,
    Effect,
    MaxAttemptsExceeded,
)
from tradeguard.fsm.events import ApiCall

__all__ = [
    "ApiHealthGuard",
    "BrokerOutageGuard",
    "CountingGuard",
    "Guard",
    "MarkStalenessGuard",
    "PreviewGuard",
    "ReconciliationGuard",
    "WebsocketGuard",
]

_HEALTHY, _TRIPPED, _COOLDOWN = GuardState.HEALTHY, GuardState.TRIPPED, GuardState.COOLDOWN
_NO_MARK = GuardState.NO_MARK

# Saved state converts monotonic deadlines to wall-clock times and back.
ToWall = Callable[[float], float]
ToMono = Callable[[float], float]


class Guard:
    """One guard: a model of `GUARD` plus its cooldown timer.

    Attributes:
        name: the guard's spec name (``"api_health"``).
        scope: the symbol, or ``None`` for a global guard.
        state: the current `GuardState`.
        restriction: the mode it imposes while TRIPPED or COOLDOWN.
    """

    definition: ClassVar[MachineDefinition] = GUARD
    __slots__ = (
        "_cooldown",
        "_timers",
        "cooldown_seconds",
        "name",
        "restriction",
        "scope",
        "state",
    )

    def __init__(
        self,
        name: str,
        scope: str | None,
        timers: Timers,
        *,
        restriction: TradingMode,
        cooldown_seconds: float,
    ) -> None:
        self.name = name
        self.scope = scope
        self.state = GuardState.HEALTHY
        self.restriction = restriction
        self.cooldown_seconds = cooldown_seconds
        self._timers = timers
        self._cooldown = Timer(self._cooldown_over, scope)

    @property
    def restricting(self) -> bool:
        """True while the guard's restriction is in force."""
        return self.state is not _HEALTHY and self.restriction is not TradingMode.ALLOW

    @property
    def lifts_at(self) -> float | None:
        """When the restriction lifts if nothing else happens; ``None`` while the fault holds."""
        return self._cooldown.due if self.state is _COOLDOWN else None

    def _fire(self, trigger: str, at: float) -> list[Effect]:
        """The one choke point: take a transition, keep the cooldown timer in step, record it."""
        record = self.definition.transition(self, trigger, self.name, self.scope, at)
        if self.state is _COOLDOWN:
            self._timers.arm(self._cooldown, at + self.cooldown_seconds)
        else:
            Timers.disarm(self._cooldown)
        return [record]

    def _cooldown_over(self, at: float) -> list[Effect]:
        return self._fire("expire", at) if self.state is _COOLDOWN else []

    def force_trip(self, reason: str, at: float) -> list[Effect]:
        """Trip from outside: a startup check found the fault before any observation did.

        The guard then recovers by its own rule (a fresh mark, a healthy API view, ...).
        """
        if self.state is _TRIPPED:
            return []
        where = "" if self.scope is None else f" for {self.scope}"
        return [*self._fire("trip", at), Alert("critical", f"{self.name} tripped{where}", reason)]

    def reset(self, at: float) -> list[Effect]:
        """Operator reset: forget the counts and go HEALTHY, whatever the state."""
        self._clear()
        return self._fire("reset", at)

    def _clear(self) -> None:
        """Forget what was counted; subclasses with counters override it."""

    def counters(self) -> dict[str, Any]:
        """What the guard has counted, for `status()`; JSON-ready."""
        return {}

    def dump(self, to_wall: ToWall) -> dict[str, Any]:
        """The guard's state for a snapshot, deadlines as wall-clock times."""
        due = self._cooldown.due
        return {
            "state": self.state._name_,  # (`_name_`: see `Halt.view`)
            "cooldown_until": None if due is None else to_wall(due),
            **self._dump_counters(to_wall),
        }

    def _dump_counters(self, to_wall: ToWall) -> dict[str, Any]:
        return self.counters()

    def load(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        """Restore what `dump` saved (no transition is recorded: this is not one).

        Raises:
            ValueError: the saved state is not one this guard's machine has.
        """
        state = GuardState[saved["state"]]
        if state not in self.definition.used_states:
            raise ValueError(f"{self.name}: saved state {state.name} is not one of its states")
        self.state = state
        until = saved.get("cooldown_until")
        if self.state is _COOLDOWN:
            # A missing deadline can only come from a damaged snapshot: restart the cooldown.
            due = to_mono(until) if until is not None else to_mono(float("inf"))
            self._timers.arm(self._cooldown, due)
        self._load_counters(saved, to_mono)

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        """Restore counters; subclasses with counters override it."""


class CountingGuard(Guard):
    """Trips after ``threshold`` consecutive failures; a success resets the count.

    Used by slippage and validation (``recovers_at_once``: the guard goes straight on to
    COOLDOWN); without it, the first success after the trip recovers it.
    """

    __slots__ = ("alert_title", "failures", "recovers_at_once", "threshold")

    def __init__(
        self,
        name: str,
        scope: str | None,
        timers: Timers,
        *,
        threshold: int,
        restriction: TradingMode,
        cooldown_seconds: float,
        recovers_at_once: bool,
        alert_title: str,
    ) -> None:
        super().__init__(
            name, scope, timers, restriction=restriction, cooldown_seconds=cooldown_seconds
        )
        self.threshold = threshold
        self.recovers_at_once = recovers_at_once
        self.alert_title = alert_title
        self.failures = 0

    def observe(self, ok: bool, at: float) -> list[Effect]:
        """Count one outcome; return the effects it caused, in order."""
        if ok:
            self.failures = 0
            return self._fire("recover", at) if self.state is _TRIPPED else []
        self.failures += 1
        if self.state is _TRIPPED or self.failures < self.threshold:
            return []
        where = "" if self.scope is None else f" for {self.scope}"
        detail = (
            f"{self.failures} consecutive failures{where}; restricting to {self.restriction.name}"
        )
        effects = [*self._fire("trip", at), Alert("critical", self.alert_title, detail)]
        if self.recovers_at_once:
            self.failures = 0
            effects += self._fire("recover", at)
        return effects

    def _clear(self) -> None:
        self.failures = 0

    def counters(self) -> dict[str, Any]:
        return {"consecutive_failures": self.failures}

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        self.failures = int(saved.get("consecutive_failures", 0))


class BrokerOutageGuard(Guard):
    """Trips after N consecutive failed balance/position reads.

    Two counts, and either trips: failed reads in a row of any kind (a success of either kind
    resets it), and failed reads in a row per kind. The second exists because a positions
    endpoint that answers every cycle would otherwise hide a balances endpoint that stopped
    answering. A successful read recovers the guard once no kind is failing any more.
    """

    __slots__ = ("by_kind", "streak", "threshold")

    def __init__(self, timers: Timers, *, threshold: int, cooldown_seconds: float) -> None:
        super().__init__(
            "broker_outage",
            None,
            timers,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown_seconds,
        )
        self.threshold = threshold
        self.streak = 0
        self.by_kind = {"balances": 0, "positions": 0}

    def observe(self, kind: str, ok: bool, at: float) -> list[Effect]:
        """Count one read of ``kind``; return the effects it caused, in order."""
        if ok:
            self.streak = 0
            self.by_kind[kind] = 0
            if self.state is _TRIPPED and not any(self.by_kind.values()):
                return self._fire("recover", at)
            return []
        self.streak += 1
        self.by_kind[kind] += 1
        worst = max(self.streak, self.by_kind[kind])
        if self.state is _TRIPPED or worst < self.threshold:
            return []
        detail = f"{worst} consecutive failed reads ({kind} last); restricting to REDUCE_ONLY"
        return [*self._fire("trip", at), Alert("critical", "broker reads failing", detail)]

    def _clear(self) -> None:
        self.streak = 0
        self.by_kind = dict.fromkeys(self.by_kind, 0)

    def counters(self) -> dict[str, Any]:
        return {"consecutive_failures": self.streak, "failures_by_kind": dict(self.by_kind)}

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        self.streak = int(saved.get("consecutive_failures", 0))
        counts = saved.get("failures_by_kind", {})
        for kind in self.by_kind:
            self.by_kind[kind] = int(counts.get(kind, 0)) if isinstance(counts, dict) else 0


class ReconciliationGuard(Guard):
    """Trips after N consecutive audits that find bot-owned orders unknown locally.

    On the trip it asks to cancel the unknown orders; while tripped, orders that newly appear
    are cancelled too (each id asked for once), so none is left behind.
    """

    __slots__ = ("_cancel_requested", "dirty_audits", "threshold")

    def __init__(
        self, scope: str | None, timers: Timers, *, threshold: int, cooldown_seconds: float
    ) -> None:
        super().__init__(
            "reconciliation",
            scope,
            timers,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown_seconds,
        )
        self.threshold = threshold
        self.dirty_audits = 0
        self._cancel_requested: set[str] = set()

    def observe(self, unknown: tuple[str, ...], at: float) -> list[Effect]:
        """Count one audit; return the effects it caused, in order."""
        if not unknown:
            self.dirty_audits = 0
            self._cancel_requested.clear()
            return self._fire("recover", at) if self.state is _TRIPPED else []
        self.dirty_audits += 1
        if self.state is _TRIPPED:
            fresh = tuple(i for i in unknown if i not in self._cancel_requested)
            return [self._cancel(fresh)] if fresh else []
        if self.dirty_audits < self.threshold:
            return []
        detail = f"{len(unknown)} bot-owned order(s) unknown locally: {', '.join(unknown)}"
        alert = Alert("critical", "order reconciliation drift", detail)
        return [*self._fire("trip", at), self._cancel(unknown), alert]

    def _cancel(self, order_ids: tuple[str, ...]) -> CancelOrders:
        self._cancel_requested.update(order_ids)
        return CancelOrders(order_ids, "reconciliation: bot-owned orders unknown locally")

    def _clear(self) -> None:
        self.dirty_audits = 0
        self._cancel_requested.clear()

    def counters(self) -> dict[str, Any]:
        return {"consecutive_dirty_audits": self.dirty_audits}

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        self.dirty_audits = int(saved.get("consecutive_dirty_audits", 0))


class PreviewGuard(Guard):
    """Disables order preview after N consecutive failures, until an operator reset."""

    definition: ClassVar[MachineDefinition] = PREVIEW
    __slots__ = ("failures", "threshold")

    def __init__(self, timers: Timers, *, threshold: int) -> None:
        super().__init__(
            "preview", None, timers, restriction=TradingMode.ALLOW, cooldown_seconds=0.0
        )
        self.threshold = threshold
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """Whether the shell should preview orders."""
        return self.state is _HEALTHY

    def observe(self, ok: bool, at: float) -> list[Effect]:
        """Count one preview result; results while disabled change nothing."""
        if self.state is _TRIPPED:
            return []
        if ok:
            self.failures = 0
            return []
        self.failures += 1
        if self.failures < self.threshold:
            return []
        reason = f"{self.failures} consecutive preview failures"
        return [
            *self._fire("trip", at),
            DisablePreview(reason),
            Alert("warning", "order preview disabled", f"{reason}; disabled for the session"),
        ]

    def _clear(self) -> None:
        self.failures = 0

    def counters(self) -> dict[str, Any]:
        return {"consecutive_failures": self.failures}

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        self.failures = int(saved.get("consecutive_failures", 0))


class MarkStalenessGuard(Guard):
    """Trips when a symbol's mark is older than the threshold; a fresh mark recovers it.

    The guard starts in NO_MARK (its own machine, `MARK`): a symbol is never traded blind, so
    until its first mark it is restricted exactly like a stale mark. The first mark takes it to
    HEALTHY. Staleness is an eager timer at ``last mark + threshold``: it trips at that instant
    even if no one asks.
    """

    definition: ClassVar[MachineDefinition] = MARK
    __slots__ = ("_stale", "last_mark", "threshold")

    def __init__(
        self,
        scope: str,
        timers: Timers,
        *,
        threshold: float,
        restriction: TradingMode,
        cooldown_seconds: float,
    ) -> None:
        super().__init__(
            "mark_staleness",
            scope,
            timers,
            restriction=restriction,
            cooldown_seconds=cooldown_seconds,
        )
        self.state = _NO_MARK
        self.threshold = threshold
        self.last_mark: float | None = None
        self._stale = Timer(self._went_stale, scope)

    def has_mark(self) -> bool:
        """Condition of `MARK`'s reset: a mark has arrived (a reset cannot invent one)."""
        return self.last_mark is not None

    def observe(self, at: float) -> list[Effect]:
        """A fresh mark arrived at ``at``."""
        self.last_mark = at
        self._timers.arm(self._stale, at + self.threshold)
        if self.state is _NO_MARK:
            return self._fire("mark", at)
        return self._fire("recover", at) if self.state is _TRIPPED else []

    def reset(self, at: float) -> list[Effect]:
        """Operator reset. A mark that is already stale trips the guard again at once: a
        reset forgets counts, it cannot make old data fresh (nor a missing mark appear)."""
        effects = super().reset(at)
        if self.last_mark is not None:
            stale_at = self.last_mark + self.threshold
            if stale_at <= at:
                effects += self._went_stale(at)
            else:
                self._timers.arm(self._stale, stale_at)
        return effects

    def _went_stale(self, at: float) -> list[Effect]:
        if self.state is _TRIPPED:
            return []
        detail = f"no fresh mark for {self.scope} in {self.threshold:g}s"
        return [*self._fire("trip", at), Alert("warning", "mark data stale", detail)]

    def counters(self) -> dict[str, Any]:
        return {"last_mark": self.last_mark}

    def _dump_counters(self, to_wall: ToWall) -> dict[str, Any]:
        return {"last_mark": None if self.last_mark is None else to_wall(self.last_mark)}

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        last = saved.get("last_mark")
        if last is None:
            # A snapshot from before NO_MARK was a state says HEALTHY with no mark: that symbol
            # was never marked, and restoring must not make it more permissive.
            if self.state is _HEALTHY:
                self.state = _NO_MARK
            return
        self.last_mark = to_mono(last)
        if self.state is not _TRIPPED:
            self._timers.arm(self._stale, self.last_mark + self.threshold)


class ApiHealthGuard(Guard):
    """Trips on a high error rate, a high rate-limit usage, or any open circuit breaker.

    The error rate is counted over a sliding window of fixed-width buckets (1/60 of the
    window), so memory stays constant at any call rate; a bucket leaves the window once all
    of it is older than the window. While the error rate alone holds the guard TRIPPED, a timer
    re-checks when the oldest bucket leaves, so recovery is seen even if calls stop.

    A rate-limit reading ages out: it is forgotten (usage 0) one window after it was observed,
    or at the venue's reset (``RateLimitUsage.reset_after``) when that comes first, by an eager
    timer. Without that a 429 burst held the guard TRIPPED for good once calls stopped
    reporting usage; a fresh reading replaces the old one and its deadline.
    """

    __slots__ = (
        "_buckets",
        "_drain",
        "_newest",
        "_newest_ends",
        "_newest_starts",
        "_usage_expiry",
        "answering",
        "calls",
        "errors",
        "min_calls",
        "open_breakers",
        "rate_threshold",
        "usage",
        "usage_threshold",
        "width",
        "window",
    )

    def __init__(
        self,
        timers: Timers,
        *,
        window: float,
        min_calls: int,
        rate_threshold: float,
        usage_threshold: float,
        cooldown_seconds: float,
    ) -> None:
        super().__init__(
            "api_health",
            None,
            timers,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown_seconds,
        )
        self.window = window
        self.width = window / 60
        self.min_calls = min_calls
        self.rate_threshold = rate_threshold
        self.usage_threshold = usage_threshold
        # Each bucket is [index, calls, errors]; lists, so the newest is updated in place.
        self._buckets: deque[list[int]] = deque()
        # The hot path: the newest bucket and the times [starts, ends) whose index is its own,
        # so a call in it costs two float compares instead of a division (empty: none).
        self._newest: list[int] = [0, 0, 0]
        self._newest_starts = math.inf
        self._newest_ends = -math.inf
        self.calls = 0
        self.errors = 0
        self.usage = 0.0
        self.open_breakers: set[str] = set()
        self._drain = Timer(self._window_moved)
        self._usage_expiry = Timer(self._usage_aged_out)
        # Told when the guard leaves TRIPPED (recovered or reset): the API answers again.
        self.answering: Callable[[float], list[Effect]] | None = None

    def _fire(self, trigger: str, at: float) -> list[Effect]:
        left_tripped = self.state is _TRIPPED
        effects = super()._fire(trigger, at)
        if left_tripped and self.answering is not None:
            effects += self.answering(at)
        return effects

    def observe_call(self, call: ApiCall, at: float) -> list[Effect]:
        """Count one finished API call."""
        error = not call.ok and call.counts_as_error
        if self._newest_starts <= at < self._newest_ends:  # hot path: the newest bucket
            newest = self._newest
            newest[1] += 1
            if error:
                newest[2] += 1
        else:
            self._new_call_bucket(at, error)
        calls = self.calls = self.calls + 1
        if error:
            self.errors += 1
        elif self.state is _HEALTHY and (
            calls < self.min_calls or self.errors / calls < self.rate_threshold
        ):
            # Hot path (`not _error_rate_high()`, inlined). A success can still trip: it may
            # complete the minimum number of calls while the errors in the window are too many.
            return []
        return self._evaluate(at)

    def _new_call_bucket(self, at: float, error: bool) -> None:
        """Count a call outside the newest bucket's times: in bucket ``at // width``."""
        index = int(at // self.width)
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:  # a restored bucket, or a clock read late
            newest = buckets[-1]
            newest[1] += 1
            newest[2] += error
        else:
            newest = [index, 1, int(error)]
            buckets.append(newest)
            self._evict(at)
        self._newest = newest
        self._newest_starts = self._first_time_of(index)
        self._newest_ends = self._first_time_of(index + 1)

    def _first_time_of(self, index: int) -> float:
        """The earliest time ``t`` with ``t // width >= index``: the bucket index is read by
        that very division, so the bounds agree with it to the last bit of rounding."""
        width = self.width
        t = index * width
        while t // width >= index:
            t = math.nextafter(t, -math.inf)
        while t // width < index:
            t = math.nextafter(t, math.inf)
        return t

    def _forget_newest(self) -> None:
        self._newest_starts = math.inf
        self._newest_ends = -math.inf

    def observe_usage(
        self, usage: float, at: float, reset_after: float | None = None
    ) -> list[Effect]:
        """Record the rate-limit usage the API last reported.

        The reading counts until one window has passed, or ``reset_after`` seconds (the
        venue's own reset) when that is sooner; then it ages out as if usage were 0.
        """
        self.usage = usage
        lifetime = self.window if reset_after is None else min(self.window, reset_after)
        self._arm_usage_expiry(at + lifetime)
        return self._evaluate(at)

    def _arm_usage_expiry(self, due: float) -> None:
        if self.usage > 0.0:
            self._timers.arm(self._usage_expiry, due)
        else:
            Timers.disarm(self._usage_expiry)  # nothing to forget

    def _usage_aged_out(self, at: float) -> list[Effect]:
        self.usage = 0.0
        return self._evaluate(at)

    def breaker_changed(self, category: str, is_open: bool, at: float) -> list[Effect]:
        """A circuit breaker opened or stopped being open."""
        if is_open:
            self.open_breakers.add(category)
        else:
            self.open_breakers.discard(category)
        return self._evaluate(at)

    def _expiry(self, index: int) -> float:
        """When bucket ``index`` has wholly left the window (one expression, used for both
        the eviction test and the drain timer, so float rounding cannot make them disagree)."""
        return (index + 1) * self.width + self.window

    def _evict(self, at: float) -> None:
        buckets = self._buckets
        while buckets and self._expiry(buckets[0][0]) <= at:
            _, calls, errors = buckets.popleft()
            self.calls -= calls
            self.errors -= errors
            if not buckets:  # the newest bucket is gone too
                self._forget_newest()

    def _window_moved(self, at: float) -> list[Effect]:
        return self._evaluate(at)

    def _arm_drain(self, rate_high: bool) -> None:
        # While the error rate holds, re-check when the oldest bucket leaves the window.
        if rate_high and self._buckets:
            self._timers.arm(self._drain, self._expiry(self._buckets[0][0]))
        else:
            Timers.disarm(self._drain)

    @property
    def error_rate(self) -> float:
        """Errors / calls over the window (0 when the window is empty)."""
        return self.errors / self.calls if self.calls else 0.0

    def _error_rate_high(self) -> bool:
        # A division, not `errors >= threshold * calls`: the product rounds up (0.07 * 100 is
        # 7.000000000000001), so a rate exactly at the threshold would not trip.
        return self.calls >= self.min_calls and self.errors / self.calls >= self.rate_threshold

    def faults(self) -> list[str]:
        """The trip conditions that hold now, by name."""
        found = []
        if self._error_rate_high():
            found.append(f"error rate {self.error_rate:.0%} over {self.calls} calls")
        if self.usage >= self.usage_threshold:
            found.append(f"rate-limit usage {self.usage:.0%}")
        found.extend(f"circuit breaker {c} open" for c in sorted(self.open_breakers))
        return found

    def _evaluate(self, at: float) -> list[Effect]:
        self._evict(at)  # usage and breaker reports judge only the calls still in the window
        rate_high = self._error_rate_high()
        faulty = rate_high or self.usage >= self.usage_threshold or bool(self.open_breakers)
        self._arm_drain(rate_high)
        if faulty and self.state is not _TRIPPED:
            detail = "; ".join(self.faults())
            return [
                *self._fire("trip", at),
                CancelOpenOrders(f"api_health: {detail}"),
                Alert("critical", "API health degraded", detail),
            ]
        if not faulty and self.state is _TRIPPED:
            return self._fire("recover", at)
        return []

    def _clear(self) -> None:
        self._buckets.clear()
        self._forget_newest()
        self.calls = self.errors = 0
        self.usage = 0.0
        Timers.disarm(self._drain)
        Timers.disarm(self._usage_expiry)

    def reset(self, at: float) -> list[Effect]:
        """Operator reset: forget the window and usage. Open breakers still count."""
        effects = super().reset(at)
        if self.open_breakers:
            effects += self._evaluate(at)
        return effects

    def counters(self) -> dict[str, Any]:
        return {
            "calls_in_window": self.calls,
            "errors_in_window": self.errors,
            "error_rate": self.error_rate,
            "rate_limit_usage": self.usage,
            "open_breakers": sorted(self.open_breakers),
        }

    def _dump_counters(self, to_wall: ToWall) -> dict[str, Any]:
        return {
            "buckets": [[to_wall(i * self.width), c, e] for i, c, e in self._buckets],
            "rate_limit_usage": self.usage,
            "rate_limit_usage_until": None
            if (due := self._usage_expiry.due) is None
            else to_wall(due),
        }

    def _load_counters(self, saved: dict[str, Any], to_mono: ToMono) -> None:
        self.usage = float(saved.get("rate_limit_usage", 0.0))
        until = saved.get("rate_limit_usage_until")
        # The reading keeps its age across a restart. A snapshot from before readings aged out
        # has no deadline: its reading stands until a fresh one replaces it (never looser).
        if until is not None:
            self._arm_usage_expiry(to_mono(float(until)))
        self._forget_newest()
        for start, calls, errors in saved.get("buckets", []):
            index = round(to_mono(start) / self.width)
            self._buckets.append([index, int(calls), int(errors)])
            self.calls += int(calls)
            self.errors += int(errors)
        self._arm_drain(self._error_rate_high())


class WebsocketGuard(Guard):
    """Trips while any websocket feed is DEGRADED; recovers when none is."""

    __slots__ = ("degraded",)

    def __init__(self, timers: Timers, *, cooldown_seconds: float) -> None:
        super().__init__(
            "websocket",
            None,
            timers,
            restriction=TradingMode.REDUCE_ONLY,
            cooldown_seconds=cooldown_seconds,
        )
        self.degraded: set[str] = set()

    def feed_degraded(self, feed: str, is_degraded: bool, at: float) -> list[Effect]:
        """A feed entered DEGRADED (``True``) or left it (``False``)."""
        if not is_degraded:
            self.degraded.discard(feed)
            if not self.degraded and self.state is _TRIPPED:
                return self._fire("recover", at)
            return []
        self.degraded.add(feed)
        # The callback fires once per feed entering DEGRADED, even if another feed is already.
        exceeded = MaxAttemptsExceeded(feed, self.cooldown_seconds)
        if self.state is _TRIPPED:
            return [exceeded]
        detail = f"feed {feed!r} exceeded its reconnect attempts; still reconnecting"
        return [*self._fire("trip", at), exceeded, Alert("critical", "websocket degraded", detail)]

    def reset(self, at: float) -> list[Effect]:
        """Operator reset. A feed still DEGRADED trips the guard again at once (without a
        second `MaxAttemptsExceeded`: that fires once per feed entering DEGRADED)."""
        effects = super().reset(at)
        if self.degraded:
            detail = f"feeds still degraded after a reset: {', '.join(sorted(self.degraded))}"
            effects += [*self._fire("trip", at), Alert("critical", "websocket degraded", detail)]
        return effects

    def counters(self) -> dict[str, Any]:
        return {"degraded_feeds": sorted(self.degraded)}
