"""Prometheus metrics of one runtime: the seed's profiling and memory series, and every machine.

Theory of operation. A `Metrics` owns its metric objects, registered in one
`prometheus_client.CollectorRegistry`: a fresh one per instance unless the caller passes one
(``prometheus_client.REGISTRY`` to use the process-wide registry). Nothing is global, so two
runtimes in one process never mix their series. Three kinds of input feed it:

* effects, through ``runtime.on_effect(metrics.on_effect)``: every `Transitioned` record
  counts one ``{prefix}_transitions_total{machine,from,to}``;
* reads of the layer, through `refresh`: every machine gauge is set from ``layer.view()``
  (a gauge is a picture of now, so it is read rather than accumulated); `run` refreshes
  periodically and `tradeguard.io.http_status.StatusServer` refreshes before each scrape;
* callers: `count_refusal` for each refused decision, `record_sample` / `observe_phase` for
  profile spans (see `tradeguard.io.profiling`; ``with metrics.activate():`` routes the spans
  of the current context here), `track_buffers` for the event store's write backlog and
  the feed's ticker buffer (the `Engine` wires both).

`attach_metrics` wires the first two into a running `Runtime`.

Series, with ``{prefix}`` = ``gpt_trader`` by default (the global scope's label is
``"global"``):

====================================================  =========  ==========================
name                                                  type       labels
====================================================  =========  ==========================
``{prefix}_profile_duration_seconds``                 histogram  phase
``{prefix}_positions_fetch_seconds``                  histogram  result (ok, error)
``{prefix}_equity_computation_seconds``               histogram  result (ok, error)
``{prefix}_process_memory_mb``                        gauge
``{prefix}_event_store_cache_size``                   gauge
``{prefix}_deque_cache_fill_ratio``                   gauge
``{prefix}_guard_state``                              gauge      guard, scope, state
``{prefix}_breaker_state``                            gauge      category, state
``{prefix}_transitions_total``                        counter    machine, from, to
``{prefix}_trading_mode``                             gauge      scope
``{prefix}_restriction_seconds_until_lift``           gauge      guard, scope
``{prefix}_refused_decisions_total``                  counter    guard, scope, state
``{prefix}_feed_state``                               gauge      feed, state
``{prefix}_feed_reconnect_attempts``                  gauge      feed
``{prefix}_feed_last_message_age_seconds``            gauge      feed
``{prefix}_feed_sequence_gaps``                       gauge      feed
``{prefix}_feed_dropped_messages``                    gauge      feed
``{prefix}_fleet_members``                            gauge
``{prefix}_fleet_peer_restrictions``                  gauge
``{prefix}_fleet_link_up``                            gauge
``{prefix}_fleet_propagation_seconds``                histogram
``{prefix}_fleet_messages_rejected_total``            counter    reason
====================================================  =========  ==========================

The ``*_state`` gauges are state sets: one series per possible state, 1 for the current
state and 0 for the others, so ``{prefix}_guard_state{state="TRIPPED"} == 1`` selects every
tripped guard.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Protocol, final

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tradeguard.fsm import (
    BreakerState,
    Decision,
    FeedState,
    GuardState,
    ReliabilityLayer,
    TradingMode,
)
from tradeguard.fsm.effects import Effect, Transitioned
from tradeguard.fsm.views import ScopeView
from tradeguard.io import profiling
from tradeguard.io.loop import LoopEvent
from tradeguard.io.profiling import ProfileSample
from tradeguard.io.runtime import Runtime

__all__ = ["GLOBAL_SCOPE", "BufferedTickers", "Metrics", "PendingWrites", "attach_metrics"]

GLOBAL_SCOPE = "global"
"""The ``scope`` label of the global scope (a symbol's scope is the symbol)."""

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Spans time code paths of a millisecond to seconds: finer buckets than the library default.
_SPAN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MODES = ", ".join(f"{m.value}={m.name}" for m in TradingMode)
# Phases that also have a dedicated latency histogram (the seed's "Latency Histograms").
_FETCH_POSITIONS = "fetch_positions"
_EQUITY_COMPUTATION = "equity_computation"

LabelValues = tuple[str, ...]


class PendingWrites(Protocol):
    """A write queue the metrics read (`tradeguard.io.store.EventStore`)."""

    @property
    def pending(self) -> int:
        """Writes not yet on disk."""
        ...


class BufferedTickers(Protocol):
    """A bounded ticker buffer the metrics read (`tradeguard.io.feed.FeedClient`)."""

    queue_size: int

    @property
    def buffered(self) -> int:
        """Tickers waiting for the consumer."""
        ...


@final
class _Family:
    """A labelled gauge whose series are exactly those of its last `update`.

    Machines never disappear from a layer today, but a series whose source is gone must not
    keep exporting its last value, so what an update leaves out is removed.
    """

    __slots__ = ("_current", "gauge")

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._current: set[LabelValues] = set()

    def update(self, values: Mapping[LabelValues, float]) -> None:
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        for gone in self._current - values.keys():
            self.gauge.remove(*gone)
        self._current = set(values)


@final
class Metrics:
    """The Prometheus series of one runtime (see the module docstring for the list).

    Args:
        registry: where the series are registered; a fresh `CollectorRegistry` when ``None``.
            Pass ``prometheus_client.REGISTRY`` to use the process-wide one (then only one
            `Metrics` per prefix can exist in the process).
        prefix: the start of every series name; the seed's ``gpt_trader`` by default.

    Raises:
        ValueError: a prefix that is not a valid metric name, or series of that prefix
            already registered in ``registry``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, prefix: str = "gpt_trader"
    ) -> None:
        if not isinstance(prefix, str) or not _NAME.fullmatch(prefix):
            raise ValueError(f"metrics prefix must match [a-zA-Z_:][a-zA-Z0-9_:]*, got {prefix!r}")
        self.registry = CollectorRegistry() if registry is None else registry
        self.prefix = prefix

        def histogram(name: str, doc: str, label: str) -> Histogram:
            return Histogram(
                f"{prefix}_{name}", doc, [label], registry=self.registry, buckets=_SPAN_BUCKETS
            )

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(f"{prefix}_{name}", doc, list(labels), registry=self.registry)

        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            return Counter(f"{prefix}_{name}", doc, list(labels), registry=self.registry)

        self._profile = histogram(
            "profile_duration_seconds", "Duration of profiled code paths, by phase.", "phase"
        )
        self._positions_fetch = histogram(
            "positions_fetch_seconds", "Time to fetch positions from the broker.", "result"
        )
        self._equity = histogram(
            "equity_computation_seconds", "Time to read balances and compute equity.", "result"
        )
        self._memory = gauge("process_memory_mb", "Process resident memory (RSS) in MiB.")
        self._cache_size = gauge(
            "event_store_cache_size",
            "Event-store writes waiting in memory for the store's thread (not yet on disk).",
        )
        self._fill_ratio = gauge(
            "deque_cache_fill_ratio",
            "Fill of the fullest feed's ticker buffer, 0.0 (empty) to 1.0 (full: the oldest "
            "tickers are being dropped).",
        )
        self._store: PendingWrites | None = None
        self._feeds: tuple[BufferedTickers, ...] = ()
        self._transitions = counter(
            "transitions_total",
            "State changes of every machine (guards, breakers, feeds, modes, operator halts).",
            ["machine", "from", "to"],
        )
        self._refused = counter(
            "refused_decisions_total",
            "Orders the layer refused, once per restriction in force when it refused.",
            ["guard", "scope", "state"],
        )
        self._guard_state = _Family(
            gauge(
                "guard_state",
                "Guard state set: 1 for the current state, 0 for the others.",
                ["guard", "scope", "state"],
            )
        )
        self._breaker_state = _Family(
            gauge(
                "breaker_state",
                "Circuit breaker state set per endpoint category: 1 for the current state.",
                ["category", "state"],
            )
        )
        self._mode = _Family(
            gauge(
                "trading_mode",
                f"Trading mode per scope ({_MODES}); a symbol's is its effective mode.",
                ["scope"],
            )
        )
        self._until_lift = _Family(
            gauge(
                "restriction_seconds_until_lift",
                "Seconds until a restriction may lift: 0 when none is in force, +Inf while "
                "its fault is present (or until an operator acts).",
                ["guard", "scope"],
            )
        )
        self._feed_state = _Family(
            gauge(
                "feed_state",
                "Websocket feed state set: 1 for the current state, 0 for the others.",
                ["feed", "state"],
            )
        )
        self._feed_attempts = _Family(
            gauge(
                "feed_reconnect_attempts",
                "Reconnect attempts since the feed's connection was last stable.",
                ["feed"],
            )
        )
        self._feed_age = _Family(
            gauge(
                "feed_last_message_age_seconds",
                "Seconds since the feed's last message (absent before the first one).",
                ["feed"],
            )
        )
        self._feed_gaps = _Family(
            gauge("feed_sequence_gaps", "Sequence gaps seen on the feed.", ["feed"])
        )
        self._feed_dropped = _Family(
            gauge(
                "feed_dropped_messages",
                "Messages dropped because the consumer fell behind.",
                ["feed"],
            )
        )

        # Fleet mode (tradeguard.io.fleet); the fleet guard's state is in guard_state.
        self._fleet_members = gauge(
            "fleet_members", "Fleet members seen (this one included), by their heartbeats."
        )
        self._fleet_peers = gauge(
            "fleet_peer_restrictions", "Restrictions from fleet peers in force on this member."
        )
        self._fleet_link = gauge(
            "fleet_link_up", "1 while the fleet's Redis link is up and synced."
        )
        self._fleet_lag = Histogram(
            f"{prefix}_fleet_propagation_seconds",
            "From a peer publishing a fleet message (its wall clock) to this member applying it.",
            registry=self.registry,
            buckets=_SPAN_BUCKETS,
        )
        self._fleet_rejected = counter(
            "fleet_messages_rejected_total",
            "Fleet messages ignored because they are malformed or foreign, by reason.",
            ["reason"],
        )

    # ------------------------------------------------------------------ inputs

    def set_fleet(self, *, members: int, peers: int) -> None:
        """Set the fleet gauges: members seen and peer restrictions in force."""
        self._fleet_members.set(members)
        self._fleet_peers.set(peers)

    def set_fleet_link(self, up: bool) -> None:
        """Set ``fleet_link_up``."""
        self._fleet_link.set(1.0 if up else 0.0)

    def observe_fleet_lag(self, seconds: float) -> None:
        """Record one fleet message's propagation time (publish to apply)."""
        self._fleet_lag.observe(seconds)

    def count_fleet_rejected(self, reason: str) -> None:
        """Count one ignored fleet message under ``reason``."""
        self._fleet_rejected.labels(reason).inc()

    def on_effect(self, effect: Effect) -> None:
        """Count a `Transitioned` record; other effects are ignored.

        Register with ``runtime.on_effect(metrics.on_effect)`` (`attach_metrics` does).
        """
        if isinstance(effect, Transitioned):
            self._transitions.labels(effect.machine, effect.source, effect.dest).inc()

    def count_refusal(self, decision: Decision) -> None:
        """Count one refused decision, under each restriction in force (its ``reasons``).

        A refusal with two reasons counts once under each (summing every series over-counts
        such refusals: it counts restrictions met, not orders). An allowed decision counts
        nothing; a refusal that gives no reason counts under ``guard="none"``, with the
        decision's mode as ``state``.
        """
        if decision.allowed:
            return
        if not decision.reasons:
            self._refused.labels("none", GLOBAL_SCOPE, decision.mode.name).inc()
            return
        for reason in decision.reasons:
            scope = GLOBAL_SCOPE if reason.scope is None else reason.scope
            self._refused.labels(reason.guard, scope, str(reason.state)).inc()

    def on_loop_event(self, event: LoopEvent) -> None:
        """`count_refusal` for a ``"refused"`` `tradeguard.io.loop.LoopEvent`; others ignored.

        Call it from the `TradingLoop`'s ``on_event``.
        """
        if event.kind == "refused" and event.decision is not None:
            self.count_refusal(event.decision)

    def observe_phase(self, phase: str, seconds: float) -> None:
        """Record one profiled duration of ``phase`` in ``*_profile_duration_seconds``."""
        self._profile.labels(phase).observe(seconds)

    def record_sample(self, sample: ProfileSample) -> None:
        """Record a finished profile sample (the `tradeguard.io.profiling.ProfileSink` hook).

        Its phase histogram always; ``fetch_positions`` and ``equity_computation`` also go
        to their dedicated histograms, with ``result`` from the sample's ``"result"`` label,
        else ``"error"`` if the block raised and ``"ok"`` if not.
        """
        if sample.duration_ms is None:
            raise ValueError(f"profile sample {sample.name!r} has not finished (no duration)")
        seconds = sample.duration_ms / 1000.0
        self.observe_phase(sample.name, seconds)
        dedicated = {_FETCH_POSITIONS: self._positions_fetch, _EQUITY_COMPUTATION: self._equity}
        histogram = dedicated.get(sample.name)
        if histogram is not None:
            result = sample.labels.get("result", "error" if sample.failed else "ok")
            histogram.labels(result).observe(seconds)

    def track_buffers(
        self, *, store: PendingWrites | None = None, feeds: Sequence[BufferedTickers] = ()
    ) -> None:
        """Read the two buffer gauges from these on every refresh: ``event_store_cache_size``
        from the store's pending writes, ``deque_cache_fill_ratio`` from the fullest feed's
        ticker buffer. The `Engine` does this for its store and feed."""
        self._store = store
        self._feeds = tuple(feeds)

    def observe_event_cache(self, size: int, capacity: int) -> None:
        """Set the event store's cache gauges: ``size`` events held, of at most ``capacity``.

        Raises:
            ValueError: a negative size, or a capacity that is not > 0.
        """
        if not (isinstance(size, int) and isinstance(capacity, int) and size >= 0 and capacity > 0):
            raise ValueError(f"need 0 <= size and capacity > 0, got {size!r} and {capacity!r}")
        self._cache_size.set(size)
        self._fill_ratio.set(min(1.0, size / capacity))

    @contextmanager
    def activate(self) -> Iterator[Metrics]:
        """Route the profile spans of this context (and tasks started in it) here.

        ``with metrics.activate(): await runtime.start(loop.run, 1.0)`` makes the loop's
        spans land in this registry; spans outside any active metrics only measure.
        """
        with profiling.activate(self):
            yield self

    # ------------------------------------------------------------------ reads

    def refresh(self, layer: ReliabilityLayer) -> None:
        """Set every machine gauge, and the memory gauge, from ``layer.view()`` now."""
        if self._store is not None:
            self._cache_size.set(self._store.pending)
        if self._feeds:
            self._fill_ratio.set(max(min(1.0, f.buffered / f.queue_size) for f in self._feeds))
        view = layer.view()
        guards: dict[LabelValues, float] = {}
        until_lift: dict[LabelValues, float] = {}
        modes: dict[LabelValues, float] = {(GLOBAL_SCOPE,): view.mode.value}
        scopes: list[tuple[str, ScopeView]] = [(GLOBAL_SCOPE, view.global_scope)]
        for symbol, scope_view in view.symbols.items():
            scopes.append((symbol, scope_view))
            modes[(symbol,)] = scope_view.effective_mode.value
        for scope, scope_view in scopes:
            for name, guard in scope_view.guards.items():
                states = _STATES_OF.get(name, _GUARD_STATES)
                _state_set(guards, (name, scope), states, guard.state)
                until_lift[(name, scope)] = _until_lift(
                    guard.state is not GuardState.HEALTHY, guard.seconds_until_lift
                )
            halt = scope_view.halt
            until_lift[("operator", scope)] = _until_lift(halt.in_force, halt.seconds_until_lift)
        breakers: dict[LabelValues, float] = {}
        for category, breaker in view.breakers.items():
            _state_set(breakers, (category,), BreakerState, breaker.state)
        feed_states: dict[LabelValues, float] = {}
        attempts: dict[LabelValues, float] = {}
        ages: dict[LabelValues, float] = {}
        gaps: dict[LabelValues, float] = {}
        dropped: dict[LabelValues, float] = {}
        for name, feed in view.feeds.items():
            _state_set(feed_states, (name,), FeedState, feed.state)
            attempts[(name,)] = feed.attempts
            if feed.last_message_age is not None:
                ages[(name,)] = feed.last_message_age
            gaps[(name,)] = feed.sequence_gaps
            dropped[(name,)] = feed.dropped_messages
        self._guard_state.update(guards)
        self._until_lift.update(until_lift)
        self._mode.update(modes)
        self._breaker_state.update(breakers)
        self._feed_state.update(feed_states)
        self._feed_attempts.update(attempts)
        self._feed_age.update(ages)
        self._feed_gaps.update(gaps)
        self._feed_dropped.update(dropped)
        rss = _rss_megabytes()
        if rss is not None:
            self._memory.set(rss)

    async def run(
        self,
        runtime: Runtime,
        interval: float = 1.0,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh from ``runtime.layer`` every ``interval`` seconds until cancelled.

        Ready (``task_status.started()``) after the first refresh. The task runs with these
        metrics active (see `activate`). Start it with
        ``await runtime.start(metrics.run, runtime)`` (or `attach_metrics`).

        Raises:
            ValueError: ``interval`` is not a finite number of seconds > 0.
        """
        _require_interval(interval)
        with self.activate():
            self.refresh(runtime.layer)
            task_status.started()
            while True:
                await anyio.sleep(interval)
                self.refresh(runtime.layer)


async def attach_metrics(runtime: Runtime, metrics: Metrics, interval: float = 1.0) -> None:
    """Feed ``metrics`` from a running ``runtime``: count its transitions, refresh its gauges.

    Registers ``metrics.on_effect``, routes the runtime's profile spans here
    (`Runtime.route_profiles`: its tasks, and the cycles of a `TradingLoop` over it, wherever
    they are awaited), and starts ``metrics.run`` as a task the runtime owns (so it ends when
    the runtime closes); returns after the first refresh.

    Raises:
        ValueError: a bad ``interval``.
        RuntimeError: the runtime is not running.
    """
    _require_interval(interval)  # before anything is registered
    runtime.on_effect(metrics.on_effect)
    runtime.route_profiles(metrics)
    await runtime.start(metrics.run, runtime, interval)


def _require_interval(interval: object) -> None:
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError(f"interval must be seconds > 0, got {interval!r}")
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval must be seconds > 0, got {interval!r}")


# A guard's state set: NO_MARK is mark_staleness's alone (a symbol not marked yet), UNSYNCED
# the fleet guard's alone (a member that has not read its peers' restrictions yet).
_GUARD_STATES = (GuardState.HEALTHY, GuardState.TRIPPED, GuardState.COOLDOWN)
_MARK_STATES = (*_GUARD_STATES, GuardState.NO_MARK)
_FLEET_STATES = (GuardState.UNSYNCED, *_GUARD_STATES)
_STATES_OF = {"mark_staleness": _MARK_STATES, "fleet": _FLEET_STATES}


def _state_set(
    into: dict[LabelValues, float],
    labels: LabelValues,
    states: Iterable[StrEnum],
    current: StrEnum,
) -> None:
    for state in states:
        into[(*labels, state.name)] = 1.0 if state is current else 0.0
    # A state outside the family (the fleet guard's UNSYNCED) still shows as current.
    into.setdefault((*labels, current.name), 1.0)


def _until_lift(restricting: bool, seconds_left: float | None) -> float:
    """0 when nothing restricts; the time left; +Inf while the fault (or an open halt) holds."""
    if not restricting:
        return 0.0
    return math.inf if seconds_left is None else seconds_left


def _rss_megabytes() -> float | None:
    """Resident memory in MiB: current RSS from /proc, else the peak from `resource`."""
    try:
        # A procfs read is served from kernel memory: it never waits on a disk.
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
