"""`ReliabilityLayer`: every guard, breaker and feed of one engine, and its trading modes.

Theory of operation (DESIGN §2, §3). The layer is pure and synchronous. Each call takes the
time from the injected clock, first applies every timer already due (each at its own
deadline, in deadline order), then handles its input, then settles the scope modes the changes
touched. It returns the effects for the shell to run, in order. Nothing else changes state.

Every state-changing call goes through `_run` (clock, due timers, the change, the next
deadline, and the bookkeeping below); every read goes through `_catch_up` (due timers only).

`decide()` is the hot path: it applies due timers only when one is due (a float compare),
reads two mode attributes and, in ALLOW, returns a shared immutable decision. A refusal's
reasons are built once per symbol after a change, not per call (`_refusal`): only a reason
with a deadline depends on the time, and a cached one is reused only at the same instant.
Effects that applying a due timer produced inside `decide()` are kept and returned by the
next `observe()` / `tick()`, never lost.

A cancel the shell could not get through comes back as `CancelFailed`: the layer keeps it,
saves it in snapshots and asks for it again (``"retry: <reason>"``) right after the
transition that shows the API answering again (a breaker closes, api_health leaves TRIPPED).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, TypeVar, final, get_args

from tradeguard.config import Settings
from tradeguard.errors import (
    InvalidObservation,
    InvalidSettings,
    InvalidSnapshot,
    UnknownFeed,
    UnknownGuard,
)
from tradeguard.fsm._backoff import BackoffPolicy
from tradeguard.fsm._breaker import CircuitBreaker
from tradeguard.fsm._feed import Feed
from tradeguard.fsm._fleet import OPERATOR_MEMBER, FleetGuard, Peers
from tradeguard.fsm._guards import (
    ApiHealthGuard,
    BrokerOutageGuard,
    CountingGuard,
    Guard,
    MarkStalenessGuard,
    PreviewGuard,
    ReconciliationGuard,
    WebsocketGuard,
)
from tradeguard.fsm._orders import Decision, OrderIntent
from tradeguard.fsm._scope import Scope
from tradeguard.fsm._states import BreakerState, FeedState, GuardState, HaltState, TradingMode
from tradeguard.fsm._timers import Timers, seconds_until
from tradeguard.fsm.effects import CancelOpenOrders, CancelOrders, Effect, Reason, Transitioned
from tradeguard.fsm.events import (
    PEER_GUARDS,
    ApiCall,
    BrokerRead,
    CancelFailed,
    FeedClosed,
    FeedConnected,
    FeedDisconnected,
    FeedMessage,
    FeedStarted,
    FleetJoined,
    FleetLink,
    FleetSynced,
    MalformedMessage,
    MarkUpdate,
    MessagesDropped,
    Observation,
    PeerHeartbeat,
    PeerLifted,
    PeerRestriction,
    PreviewResult,
    ProbeAbandoned,
    RateLimitUsage,
    ReconciliationAudit,
    SequenceGap,
    SlippageCheck,
    ValidationCheck,
)
from tradeguard.fsm.views import LayerView, LocalRestriction

__all__ = ["GLOBAL_GUARDS", "SYMBOL_GUARDS", "GuardStatus", "ReliabilityLayer", "SnapshotChanges"]

GLOBAL_GUARDS = (
    "api_health",
    "validation",
    "preview",
    "broker_outage",
    "reconciliation",
    "websocket",
)
SYMBOL_GUARDS = ("mark_staleness", "slippage")
_ALL_GUARDS = sorted((*GLOBAL_GUARDS, *SYMBOL_GUARDS))
# Every name a `Reason` can carry answers `guard()`: the guards, and the operator halt (global
# or per symbol), which `reset`/`trip` do not take (an operator lifts a halt with `resume`).
_OPERATOR = "operator"
_QUERYABLE = sorted((*_ALL_GUARDS, _OPERATOR))
_FLEET = "fleet"
# With a fleet: the fleet guard, and every peer restriction as ``guard@member``.
_QUERYABLE_IN_FLEET = sorted((*_QUERYABLE, _FLEET, "<guard>@<member>"))
_OBSERVATIONS = frozenset(get_args(Observation))
_HALT_MODES = (TradingMode.REDUCE_ONLY, TradingMode.PAUSED)

_ALLOW, _REDUCE_ONLY, _PAUSED = TradingMode.ALLOW, TradingMode.REDUCE_ONLY, TradingMode.PAUSED
_CLOSED = BreakerState.CLOSED
_ZERO = Decimal(0)
_SNAPSHOT_VERSION = 1


@final
@dataclass(frozen=True, slots=True)
class SnapshotChanges:
    """What `ReliabilityLayer.snapshot_changes` returns.

    Attributes:
        through: the layer's latest change number: pass it as ``after`` next time.
        snapshot: a `ReliabilityLayer.snapshot()` whose ``"symbols"`` holds only the
            symbols that changed (all of them when ``complete``).
        complete: whether ``snapshot`` holds every symbol (replace, do not merge).
    """

    through: int
    snapshot: dict[str, Any]
    complete: bool


# One shared answer for the common case: decisions are immutable, so ALLOW allocates nothing.
_ALLOWED = Decision(True, _ALLOW)
_T = TypeVar("_T")
# A symbol's refusal, built once after a change: (built at, depends on the time, reasons,
# the refusal that allows nothing).
_Refusal = tuple[float, bool, tuple[Reason, ...], Decision]
# A cancel to ask for again: (order ids, or None for every open bot order; reason).
_Unsent = tuple[tuple[str, ...] | None, str]


@final
@dataclass(frozen=True, slots=True)
class GuardStatus:
    """A read-only view of one guard, or of a scope's operator halt (name ``"operator"``).

    Attributes:
        name: the guard's name, or ``"operator"``.
        scope: the symbol, or ``None`` for a global guard or halt.
        state: the guard's `GuardState` (NO_MARK: a symbol not marked yet), or the halt's
            `HaltState` (RUNNING, HALTED, REDUCED).
        restriction: the mode a guard imposes while not HEALTHY; for the operator, the mode
            the halt imposes now (ALLOW while RUNNING, PAUSED or REDUCE_ONLY while halted).
        seconds_until_lift: time left in COOLDOWN, or until a time-limited halt lifts;
            ``None`` otherwise.
        reason: the operator's reason for a halt in force; empty otherwise.
    """

    name: str
    scope: str | None
    state: GuardState | HaltState
    restriction: TradingMode
    seconds_until_lift: float | None
    reason: str = ""


@final
class ReliabilityLayer:
    """The pure reliability core of one trading engine (DESIGN §3).

    Args:
        settings: the knobs.
        clock: monotonic seconds; a `tradeguard.testing.ManualClock` in tests.
        rng: the random source of reconnect jitter; seed it to replay a run.
        wall_clock: wall-clock seconds, used only to save and restore deadlines.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        *,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(settings, Settings):
            raise InvalidSettings(f"settings must be a Settings, got {settings!r}")
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        # Unseeded only when the caller does not care to replay: spread across processes.
        self._rng = rng if rng is not None else random.Random()
        self._timers = Timers()
        self._pending: list[Effect] = []
        self._last_now = -math.inf
        self._due_at = math.inf  # never later than the next deadline (`Timers.earliest`)
        self._refusals: dict[str, _Refusal] = {}
        # Symbols whose effective mode is ALLOW (`decide()` answers them with `_ALLOWED` at the
        # cost of one set lookup): filled by `decide()` as it finds them, emptied with
        # `_refusals` whenever anything changes.
        self._allowed: set[str] = set()
        self._checked_position: Decimal | None = None  # the last position `decide()` checked
        self._unsent_cancels: list[_Unsent] = []
        # `snapshot_changes`: the symbols changed since its last call (kept only once it was
        # called: a layer nobody saves that way keeps nothing), and that call's number.
        self._changed: set[str] | None = None
        self._handovers = 0
        self._policy = BackoffPolicy.from_settings(settings)
        s = settings
        t = self._timers
        self._api = ApiHealthGuard(
            t,
            window=s.api_error_rate_window_seconds,
            min_calls=s.api_error_rate_min_calls,
            rate_threshold=s.api_error_rate_threshold,
            usage_threshold=s.api_rate_limit_usage_threshold,
            cooldown_seconds=s.api_health_cooldown_seconds,
        )
        self._validation = CountingGuard(
            "validation",
            None,
            t,
            threshold=s.validation_failure_escalate_after,
            restriction=_REDUCE_ONLY,
            cooldown_seconds=s.validation_failure_cooldown_seconds,
            recovers_at_once=True,
            alert_title="validation infrastructure failing",
        )
        self._preview = PreviewGuard(t, threshold=s.preview_failure_disable_after)
        self._broker = BrokerOutageGuard(
            t,
            threshold=s.broker_outage_max_failures,
            cooldown_seconds=s.broker_outage_cooldown_seconds,
        )
        self._reconciliation = ReconciliationGuard(
            None,
            t,
            threshold=s.order_reconciliation_drift_max_failures,
            cooldown_seconds=s.api_health_cooldown_seconds,
        )
        self._api.answering = self._api_answers_again
        self._websocket = WebsocketGuard(t, cooldown_seconds=s.ws_reconnect_pause_seconds)
        self._global = Scope(
            None,
            [
                self._api,
                self._validation,
                self._preview,
                self._broker,
                self._reconciliation,
                self._websocket,
            ],
            t,
        )
        self._symbols: dict[str, Scope] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._feeds: dict[str, Feed] = {}
        self._mark_restriction = _REDUCE_ONLY if s.mark_staleness_allow_reduce_only else _PAUSED
        self._categories = frozenset(s.api_categories.split(","))
        self._categories_text = ", ".join(sorted(self._categories))
        # DESIGN §7: the fleet guard exists from `FleetJoined` on; peers' restrictions may
        # arrive (and be restored) with or without it, and only ever add restrictions.
        self._fleet: FleetGuard | None = None
        self._peers = Peers(t, self._scope_or_global, self._wall_offset, s)

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock the layer reads; a shell sleeps on the same one."""
        return self._clock

    @property
    def settings(self) -> Settings:
        """The knobs the layer was built with."""
        return self._settings

    # ------------------------------------------------------------------ inputs

    def observe(self, observation: Observation) -> list[Effect]:
        """Feed one observation to the guards.

        Returns:
            The effects it caused (and any kept from `decide()`), in order. Run them in that
            order, then re-read `next_deadline()`.

        Raises:
            TypeError: not an observation.
            InvalidObservation: an `ApiCall` names a category not in
                ``GPT_TRADER_API_CATEGORIES``; `FleetSynced` or `FleetLink` before
                `FleetJoined`.
            UnknownFeed: a feed event names a feed that was never started.
            InvalidTransition: the feed's state forbids the event (e.g. after CLOSED).
        """
        if type(observation) is ApiCall:  # the hot path: every call to the API
            category = observation.category
            if category not in self._categories:
                self._require_category(category)
            if observation.ok and not self._pending:
                breaker = self._breakers.get(category)
                # A success changes nothing in a CLOSED breaker counting no failures: skip it.
                if breaker is not None and breaker.state is _CLOSED and not breaker.failures:
                    now = self._clock()
                    if self._last_now <= now < self._due_at:  # no timer due, clock not back
                        self._last_now = now
                        return self._api_succeeded(observation, now)
            return self._run(self._api_call, observation)
        if type(observation) not in _OBSERVATIONS:
            raise TypeError(
                "observe() takes an observation of tradeguard.fsm.events (ApiCall, MarkUpdate, "
                f"...), got {type(observation).__name__} {observation!r}"
            )
        if type(observation) is ProbeAbandoned:
            self._require_category(observation.category)
        return self._run(self._dispatch, observation)

    def tick(self, max_timers: int | None = None) -> list[Effect]:
        """Apply the timers due by now (cooldown expiry, staleness, backoff, breakers).

        Args:
            max_timers: apply at most this many, earliest first, so a shell can bound the
                work of one call (1,000 marks going stale together) and let other tasks run
                in between. The others stay due: `next_deadline()` is then at or before now,
                and any other call (an observation, a decision, a read) applies them first.

        Returns:
            The effects, in order; then sleep until `next_deadline()`.

        Raises:
            InvalidObservation: ``max_timers`` is not a whole number >= 1.
        """
        if max_timers is None:
            return self._run(_no_change, None)
        if isinstance(max_timers, bool) or not isinstance(max_timers, int) or max_timers < 1:
            raise InvalidObservation(f"max_timers must be a whole number >= 1, got {max_timers!r}")
        return self._run(_no_change, None, max_timers)

    def next_deadline(self) -> float | None:
        """When `tick()` is next needed (monotonic seconds), or ``None`` if never."""
        return self._timers.next_due()

    def _now(self) -> float:
        now = self._clock()
        if not now >= self._last_now:  # also refuses NaN
            raise InvalidObservation(f"clock went backwards: {now!r} < {self._last_now!r}")
        self._last_now = now
        return now

    def _run(
        self,
        change: Callable[[_T, float], list[Effect]],
        arg: _T,
        max_timers: float = math.inf,
    ) -> list[Effect]:
        """The one wrapper of every state-changing call: read the clock, apply the timers
        due (each at its deadline; at most ``max_timers`` for a bounded `tick`), make the
        change, then note the next deadline.

        If the change raises, the timers' effects are kept for the next call, not lost.
        """
        now = self._clock()
        if not now >= self._last_now:  # also refuses NaN
            self._now()  # raises, naming both times
        self._last_now = now
        due = now >= self._due_at or self._pending
        effects = self._advance(now, max_timers) if due else None
        try:
            changed = change(arg, now)
        except Exception:
            if effects:
                self._pending = effects
                self._forget_decisions()  # the timers applied may have moved a mode
            raise
        if effects:
            effects += changed
        else:
            effects = changed
        self._due_at = self._timers.earliest
        if effects:
            self._forget_decisions()  # something changed: decisions are rebuilt when asked
        return effects

    def _forget_decisions(self) -> None:
        """Drop what `decide()` keeps between changes. Every mode change is an effect
        (`Scope.refresh`), so calling this whenever a change returned effects is enough."""
        self._refusals.clear()
        self._allowed.clear()

    def _catch_up(self) -> float:
        """Before a read: apply the timers already due (their effects are kept for the next
        `observe()` / `tick()`). Returns the time read."""
        now = self._clock()
        if now >= self._due_at:
            self._apply_due()
        return now

    def _next_due(self) -> float:
        due = self._timers.next_due()
        return math.inf if due is None else due

    def _advance(self, now: float, max_timers: float = math.inf) -> list[Effect]:
        effects, self._pending = self._pending, []
        applied = 0
        while applied < max_timers and (popped := self._timers.pop_due(now)) is not None:
            applied += 1
            timer, at = popped
            fired = timer.fire(at)
            if fired:
                effects += fired
                effects += self._settle(timer.scope, at)
        return effects

    def _settle(self, symbol: str | None, at: float) -> list[Effect]:
        # A symbol's guards, halt and peer holds move that symbol's own mode alone (its mode
        # is the stricter of the global one and its own): the global scope has nothing to do.
        if symbol is not None:
            return self._touch(self._symbols[symbol]).refresh(at)
        return self._global.refresh(at)

    def _touch(self, scope: Scope) -> Scope:
        """Note that a symbol's ``scope`` changed: `snapshot_changes` hands it over again."""
        if self._changed is not None:
            assert scope.symbol is not None  # the global scope is in every snapshot whole
            self._changed.add(scope.symbol)
        return scope

    def _dispatch(self, obs: Observation, now: float) -> list[Effect]:
        match obs:
            case ApiCall():  # pragma: no cover - `observe` sends it to `_api_call`
                return self._api_call(obs, now)
            case MarkUpdate():
                mark = self._scope(obs.symbol).mark
                assert mark is not None  # every symbol scope has one
                # A mark that changes no state moves only the mark's time, which a saved
                # snapshot may keep older (restored, it goes stale sooner: stricter); so
                # only a transition marks the scope changed (`_settle`).
                effects = mark.observe(now)
                return effects + self._settle(obs.symbol, now) if effects else effects
            case RateLimitUsage():
                effects = self._api.observe_usage(obs.usage, now, obs.reset_after)
                return self._settled(effects, None, now)
            case SlippageCheck():
                guard = self._scope(obs.symbol).guards["slippage"]
                assert isinstance(guard, CountingGuard)
                return self._settled(guard.observe(obs.ok, now), obs.symbol, now)
            case ValidationCheck():
                return self._settled(self._validation.observe(obs.ok, now), None, now)
            case PreviewResult():
                return self._preview.observe(obs.ok, now)
            case BrokerRead():
                return self._settled(self._broker.observe(obs.kind, obs.ok, now), None, now)
            case ReconciliationAudit():
                effects = self._reconciliation.observe(obs.unknown_order_ids, now)
                return self._settled(effects, None, now)
            case FeedStarted():
                feed = self._feeds.get(obs.feed) or self._new_feed(obs.feed)
                return self._settled(feed.start(now), None, now)
            case FeedConnected():
                return self._settled(self._feed(obs.feed).connected(now), None, now)
            case FeedDisconnected():
                effects = self._feed(obs.feed).disconnected(obs.reason, now)
                return self._settled(effects, None, now)
            case FeedMessage():
                return self._feed(obs.feed).message(now, obs.count)
            case FeedClosed():
                return self._settled(self._feed(obs.feed).close(now), None, now)
            case SequenceGap():
                return self._feed(obs.feed).count("gaps")
            case MessagesDropped():
                return self._feed(obs.feed).count("dropped", obs.count)
            case MalformedMessage():
                return self._feed(obs.feed).count("malformed")
            case CancelFailed():
                self._unsent_cancels.append((obs.order_ids, obs.reason))
                return []
            case ProbeAbandoned():
                if (breaker := self._breakers.get(obs.category)) is not None:
                    breaker.abandon()
                return []
            case FleetJoined():
                return self._join(obs.member, now)
            case FleetSynced():
                fleet = self._fleet_guard("FleetSynced")
                return self._settled(fleet.sync(now), None, now)
            case FleetLink():
                return self._fleet_guard("FleetLink").link(obs.up, now)
            case PeerRestriction():
                if self._is_self(obs.member):
                    return []  # our own restriction, echoed by the stream: already in force
                return self._settle_all(self._peers.restrict(obs, now), now)
            case PeerLifted():
                effects = self._peers.lifted(obs.member, obs.guard, obs.scope, now)
                return self._settled(effects, obs.scope, now)
            case PeerHeartbeat():
                if self._is_self(obs.member):
                    return []
                return self._settle_all(self._peers.heartbeat(obs.member, obs.at, now), now)
            case _:  # pragma: no cover - `observe` checked the type first
                raise TypeError(f"not an observation: {obs!r}")

    def _join(self, member: str, now: float) -> list[Effect]:
        if self._fleet is not None:  # a rejoin (the shell reconnected): same guard
            self._fleet.member = member
            return []
        s = self._settings
        self._fleet = FleetGuard(
            self._timers,
            member=member,
            grace_seconds=s.fleet_lost_grace_seconds,
            cooldown_seconds=s.fleet_member_ttl_seconds,
        )
        self._global.guards[_FLEET] = self._fleet
        self._forget_decisions()  # the fleet's reason joins every refusal, mode changed or not
        return self._settle(None, now)

    def _fleet_guard(self, what: str) -> FleetGuard:
        if self._fleet is None:
            raise InvalidObservation(f"{what} before FleetJoined: join a fleet first")
        return self._fleet

    def _is_self(self, member: str) -> bool:
        return self._fleet is not None and member == self._fleet.member

    def _scope_or_global(self, symbol: str | None) -> Scope:
        return self._global if symbol is None else self._scope(symbol)

    def _wall_offset(self) -> float:
        """Wall-clock minus monotonic seconds: converts a peer's wall deadlines."""
        return self._wall_clock() - self._clock()

    def _settle_all(self, effects: list[Effect], at: float) -> list[Effect]:
        """Settle every scope a list of peer records touched."""
        if not effects:
            return effects
        touched = {e.scope for e in effects if isinstance(e, Transitioned)}
        effects += self._global.refresh(at)
        for symbol in sorted(t for t in touched if t is not None):
            effects += self._settle(symbol, at)
        return effects

    def _api_call(self, call: ApiCall, now: float) -> list[Effect]:
        breaker = self._breakers.get(call.category) or self._breaker(call.category)
        effects = breaker.observe(call, now)
        if effects:
            effects += self._api.observe_call(call, now)
            return effects + self._settle(None, now)
        effects = self._api.observe_call(call, now)
        return effects + self._settle(None, now) if effects else effects

    def _api_succeeded(self, call: ApiCall, now: float) -> list[Effect]:
        """`_run` of `_api_call` for a success that leaves the breaker as it is, with the clock
        read and checked and no timer due: only api_health counts it."""
        effects = self._api.observe_call(call, now)
        if effects:
            effects += self._settle(None, now)
            self._forget_decisions()
        self._due_at = self._timers.earliest
        return effects

    def _settled(self, effects: list[Effect], symbol: str | None, at: float) -> list[Effect]:
        """Settle the scope a change was made in; a symbol's counts may have changed even
        when nothing transitioned, so its scope is noted as changed either way."""
        if effects:
            return effects + self._settle(symbol, at)
        if symbol is not None:
            self._touch(self._symbols[symbol])
        return effects

    def _scope(self, symbol: str) -> Scope:
        scope = self._symbols.get(symbol)
        if scope is None:
            scope = self._symbols[symbol] = self._touch(self._new_scope(symbol))
        return scope

    def _new_scope(self, symbol: str) -> Scope:
        s, t = self._settings, self._timers
        mark = MarkStalenessGuard(
            symbol,
            t,
            threshold=s.mark_staleness_threshold_seconds,
            restriction=self._mark_restriction,
            cooldown_seconds=s.mark_staleness_cooldown_seconds,
        )
        slippage = CountingGuard(
            "slippage",
            symbol,
            t,
            threshold=s.slippage_failure_pause_after,
            restriction=_REDUCE_ONLY,
            cooldown_seconds=s.slippage_pause_seconds,
            recovers_at_once=True,
            alert_title="slippage guard failing",
        )
        return Scope(symbol, [mark, slippage], t)

    def _require_category(self, category: str) -> None:
        if category not in self._categories:
            raise InvalidObservation(
                f"unknown API category {category!r}; expected one of: {self._categories_text} "
                "(GPT_TRADER_API_CATEGORIES)"
            )

    def _breaker(self, category: str) -> CircuitBreaker:
        breaker = self._breakers.get(category)
        if breaker is None:
            s = self._settings
            breaker = self._breakers[category] = CircuitBreaker(
                category,
                self._timers,
                self._api.breaker_changed,
                failure_threshold=s.circuit_failure_threshold,
                recovery_timeout=s.circuit_recovery_timeout,
                success_threshold=s.circuit_success_threshold,
                on_close=self._api_answers_again,
            )
        return breaker

    def _api_answers_again(self, at: float) -> list[Effect]:
        """A breaker closed or api_health left TRIPPED: ask again for the cancels that failed
        (an order left open while trading is restricted is exactly what they were for)."""
        retries, self._unsent_cancels = self._unsent_cancels, []
        return [
            CancelOpenOrders(f"retry: {reason}")
            if order_ids is None
            else CancelOrders(order_ids, f"retry: {reason}")
            for order_ids, reason in retries
        ]

    @property
    def pending_cancels(self) -> tuple[tuple[tuple[str, ...] | None, str], ...]:
        """Cancels reported failed (`CancelFailed`) and not yet asked for again, oldest
        first: (order ids, or ``None`` for every open bot order; reason)."""
        return tuple(self._unsent_cancels)

    def _new_feed(self, name: str) -> Feed:
        s = self._settings
        feed = self._feeds[name] = Feed(
            name,
            self._timers,
            self._rng,
            self._websocket.feed_degraded,
            policy=self._policy,
            max_attempts=s.ws_reconnect_max_attempts,
            reset_seconds=s.ws_reconnect_reset_seconds,
            stale_seconds=s.ws_message_stale_seconds,
        )
        return feed

    def _feed(self, name: str) -> Feed:
        feed = self._feeds.get(name)
        if feed is None:
            raise UnknownFeed(name, sorted(self._feeds) or ["(none started)"])
        return feed

    # ------------------------------------------------------------------ hot path

    def decide(self, intent: OrderIntent, position: Decimal | None = None) -> Decision:
        """Whether ``intent`` may go out now (cancels never need asking).

        Args:
            intent: the order.
            position: the symbol's signed position (long > 0), ``None`` if unknown.

        Returns:
            The decision. In REDUCE_ONLY only an order that reduces the position is allowed;
            an unknown position fails closed.

        Raises:
            TypeError: ``intent`` is not an `OrderIntent`, or ``position`` is not a `Decimal`
                or ``None``.
            InvalidObservation: ``position`` is not finite.
        """
        # Identity tests on the hot path; the messages are built only on failure.
        if type(intent) is not OrderIntent:
            raise TypeError(
                f"decide() intent must be an OrderIntent, got {type(intent).__name__} {intent!r}"
            )
        if position is not self._checked_position and position is not None:
            if type(position) is not Decimal or not position.is_finite():
                _bad_position(position)
            # A Decimal is immutable: the same object passed again (a caller keeps one until
            # it reads a new position) needs no second check.
            self._checked_position = position
        now = self._clock()
        symbol = intent.symbol
        if now >= self._due_at:
            self._apply_due()  # empties `_allowed`
        elif symbol in self._allowed:  # ALLOW, and nothing changed since it was found so
            return _ALLOWED
        scope = self._symbols.get(symbol)
        mode = self._mark_restriction if scope is None else scope.state
        global_mode = self._global.state
        if global_mode > mode:
            mode = global_mode
        if mode is _ALLOW:
            self._allowed.add(symbol)
            return _ALLOWED
        refusal = self._refusals.get(symbol)
        if refusal is None or (refusal[1] and refusal[0] != now):
            refusal = self._refusal(symbol, scope, mode, now)
        if mode is _PAUSED:
            return refusal[3]
        reducible = intent.reducible(position)  # 0 when unknown: fails closed
        if not reducible:
            return refusal[3]
        return Decision(intent.reduces(position), mode, refusal[2], reducible)

    def _refusal(self, symbol: str, scope: Scope | None, mode: TradingMode, now: float) -> _Refusal:
        """Build and keep ``symbol``'s reasons (and its refusal of everything) until the next
        change; reasons with a deadline hold only for this instant."""
        if scope is None:
            own = [Reason("mark_staleness", symbol, GuardState.NO_MARK, None)]
        else:
            own = scope.reasons(now)
        reasons = (*self._global.reasons(now), *own)
        timed = any(r.seconds_until_lift is not None for r in reasons)
        refusal = self._refusals[symbol] = (
            now,
            timed,
            reasons,
            Decision(False, mode, reasons, _ZERO),
        )
        return refusal

    def _apply_due(self) -> None:
        self._pending = self._advance(self._now())
        self._due_at = self._timers.earliest
        self._forget_decisions()

    # ------------------------------------------------------------------ reads

    def mode(self, symbol: str | None = None) -> TradingMode:
        """The effective mode of ``symbol`` (any symbol), or the global mode for ``None``.

        A symbol with no mark yet is at least REDUCE_ONLY (PAUSED when
        ``RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY=0``), as for a stale mark.

        Raises:
            TypeError: ``symbol`` is not a string or ``None``.
            InvalidObservation: ``symbol`` is empty.
        """
        if symbol is not None:
            _require_symbol(symbol)
        self._catch_up()
        global_mode = self._global.state
        if symbol is None:
            return global_mode
        scope = self._symbols.get(symbol)
        own = self._mark_restriction if scope is None else scope.state
        return own if own > global_mode else global_mode

    def guard(self, name: str, symbol: str | None = None) -> GuardStatus:
        """A read-only view of one guard, or of an operator halt: every name a `Reason`
        carries can be asked about.

        ``guard("operator", symbol)`` (``symbol=None`` for the global halt) answers with the
        halt's `HaltState`, the mode it imposes, its reason and the seconds until it lifts.
        ``guard("mark_staleness", symbol)`` of a symbol never marked is NO_MARK.

        With a fleet (DESIGN §7): ``guard("fleet")`` answers the fleet guard (UNSYNCED,
        HEALTHY, TRIPPED, COOLDOWN), and ``guard("api_health@member", scope)`` a peer's
        restriction as applied here: its state and mode while in force, HEALTHY (RUNNING for
        ``operator@...``) and ALLOW when it is not.

        Raises:
            TypeError: ``name`` is not a string, or ``symbol`` not a string or ``None``.
            UnknownGuard: no guard has that name (``fleet`` before `FleetJoined`; a peer name
                whose guard part is not one a peer can share).
            InvalidObservation: a per-symbol guard asked without a symbol, or a global one
                with a symbol.
        """
        if not isinstance(name, str):
            raise TypeError(f"guard name must be a str, got {type(name).__name__} {name!r}")
        if "@" in name:
            return self._peer_status(name, symbol)
        if name == _FLEET and self._fleet is not None:
            if symbol is not None:
                raise InvalidObservation(f"guard 'fleet' is global: do not pass symbol={symbol!r}")
            now = self._catch_up()
            fleet = self._fleet
            left = seconds_until(fleet.lifts_at, now)
            return GuardStatus(_FLEET, None, fleet.state, fleet.restriction, left)
        if name not in _QUERYABLE:
            known = _QUERYABLE if self._fleet is None and not self._peers else _QUERYABLE_IN_FLEET
            raise UnknownGuard("guard", name, known)
        if name == _OPERATOR:
            if symbol is not None:
                _require_symbol(symbol)
            return self._halt_status(symbol)
        if name in SYMBOL_GUARDS:
            if symbol is None:
                raise InvalidObservation(f"guard {name!r} is per symbol: pass symbol=")
            _require_symbol(symbol)
        elif symbol is not None:
            raise InvalidObservation(f"guard {name!r} is global: do not pass symbol={symbol!r}")
        self._catch_up()
        if symbol is None:
            found: Guard = self._global.guards[name]
        else:
            scope = self._symbols.get(symbol)
            if scope is None:  # never observed: a fresh guard; mark_staleness has no mark yet
                if name == "mark_staleness":
                    state, restriction = GuardState.NO_MARK, self._mark_restriction
                else:
                    state, restriction = GuardState.HEALTHY, _REDUCE_ONLY
                return GuardStatus(name, symbol, state, restriction, None)
            found = scope.guards[name]
        left = seconds_until(found.lifts_at, self._clock())
        return GuardStatus(name, symbol, found.state, found.restriction, left)

    def _peer_status(self, name: str, symbol: str | None) -> GuardStatus:
        """`guard()` of ``guard@member``: the guard part is before the first ``@`` (member
        names may hold one)."""
        if symbol is not None:
            _require_symbol(symbol)
        guard, _, member = name.partition("@")
        if guard not in PEER_GUARDS:
            raise UnknownGuard("peer guard", name, [f"{g}@<member>" for g in sorted(PEER_GUARDS)])
        try:
            PeerLifted(member, guard, symbol)  # the same checks as a lift from the stream
        except InvalidObservation as err:
            raise InvalidObservation(f"guard {name!r}: {err}") from err
        now = self._catch_up()
        hold = self._peers.find(member, guard, symbol)
        if hold is None:
            state: GuardState | HaltState = (
                HaltState.RUNNING if guard == _OPERATOR else GuardState.HEALTHY
            )
            return GuardStatus(name, symbol, state, _ALLOW, None)
        return GuardStatus(
            name, symbol, hold.state_enum, hold.mode, seconds_until(hold.lifts_at, now)
        )

    def _halt_status(self, symbol: str | None) -> GuardStatus:
        now = self._catch_up()
        scope = self._global if symbol is None else self._symbols.get(symbol)
        if scope is None:  # never seen: never halted
            return GuardStatus(_OPERATOR, symbol, HaltState.RUNNING, _ALLOW, None)
        halt = scope.halt
        return GuardStatus(
            _OPERATOR, symbol, halt.state, halt.mode, halt.seconds_left(now), halt.reason
        )

    @property
    def preview_enabled(self) -> bool:
        """Whether the shell should preview orders (False once the preview guard tripped)."""
        return self._preview.enabled

    def breaker_state(self, category: str) -> BreakerState:
        """The breaker of an endpoint category (CLOSED for one never called).

        Raises:
            TypeError: ``category`` is not a string.
            InvalidObservation: ``category`` is not in ``GPT_TRADER_API_CATEGORIES``.
        """
        _require_name("category", category)
        self._require_category(category)
        breaker = self._breakers.get(category)
        return BreakerState.CLOSED if breaker is None else breaker.state

    def admit(self, category: str) -> bool:
        """Ask before an API call in ``category``: False means do not touch the network.

        In HALF_OPEN a True reserves one of the limited probe slots; report the call's
        outcome with ``observe(ApiCall(...))`` to release it.

        Raises:
            TypeError: ``category`` is not a string.
            InvalidObservation: ``category`` is not in ``GPT_TRADER_API_CATEGORIES``.
        """
        _require_name("category", category)
        self._require_category(category)
        self._catch_up()
        return self._breaker(category).admit()

    def feed_state(self, name: str) -> FeedState:
        """The state of a started feed.

        Raises:
            UnknownFeed: no feed of that name was started.
        """
        return self._feed(name).state

    def view(self) -> LayerView:
        """Every machine as typed, frozen values (`tradeguard.fsm.views`), after any timer
        already due. Read this rather than picking `status()` apart by key."""
        return LayerView.from_json(self.status())

    def status(self) -> dict[str, Any]:
        """Every machine, JSON-ready (a fresh dict each call), after any timer already due."""
        now = self._catch_up()
        return {
            "mode": self._global.state.name,
            "preview_enabled": self._preview.enabled,
            "global": self._global.status(now),
            "symbols": {
                symbol: {**scope.status(now), "effective_mode": self.mode(symbol)._name_}
                for symbol, scope in sorted(self._symbols.items())
            },
            "breakers": {c: b.status() for c, b in sorted(self._breakers.items())},
            "feeds": {n: f.status(now) for n, f in sorted(self._feeds.items())},
            "next_deadline": self.next_deadline(),
            # Only with a fleet: a layer without one shows exactly what it did before.
            **({"fleet": self._fleet_status(now)} if self._fleet or self._peers else {}),
        }

    def _fleet_status(self, now: float) -> dict[str, Any]:
        fleet, wall = self._fleet, self._wall_clock()
        ttl = self._settings.fleet_member_ttl_seconds
        return {
            "member": None if fleet is None else fleet.member,
            "state": None if fleet is None else fleet.state.name,
            "link_up": None if fleet is None else fleet.link_up,
            "synced": None if fleet is None else fleet.has_synced,
            "grace_until": None if fleet is None else fleet.grace_until,
            "members": {
                member: {
                    "heartbeat": at,
                    "seconds_since_heartbeat": max(0.0, wall - at),
                    "alive": member == OPERATOR_MEMBER or wall - at <= ttl,
                }
                for member, at in sorted(self._peers.heartbeats.items())
            },
            "peer_restrictions": len(self._peers.holds),
        }

    def local_restrictions(self) -> tuple[LocalRestriction, ...]:
        """Every restriction this member's own guards and operator put in force now, for the
        fleet to publish (DESIGN §7), after any timer already due.

        Not included: peers' restrictions (they are theirs to publish), the fleet guard (this
        member's own link), a symbol with no mark yet (local knowledge: each member has its
        own feed), and preview (it never restricts). ``lifts_at`` is a wall-clock time
        (``None`` while the fault holds, or for a halt without ttl).

        Returns:
            A fresh tuple: global restrictions first, then symbols in order; in each scope the
            guards in declaration order, then the operator halt.
        """
        self._catch_up()
        offset = self._wall_offset()

        def wall(due: float | None) -> float | None:
            return None if due is None else due + offset

        found: list[LocalRestriction] = []
        for scope in (self._global, *(sc for _, sc in sorted(self._symbols.items()))):
            for guard in scope.guards.values():
                if (
                    guard.restricting
                    and guard is not self._fleet
                    and guard.state is not GuardState.NO_MARK
                ):
                    found.append(
                        LocalRestriction(
                            guard.name,
                            scope.symbol,
                            guard.restriction,
                            guard.state.name,
                            wall(guard.lifts_at),
                        )
                    )
            halt = scope.halt
            if halt.halted:
                found.append(
                    LocalRestriction(
                        _OPERATOR, scope.symbol, halt.mode, halt.state.name, wall(halt.until)
                    )
                )
        return tuple(found)

    # ------------------------------------------------------------------ operator

    def halt(
        self,
        reason: str,
        symbol: str | None = None,
        ttl: float | None = None,
        mode: TradingMode = TradingMode.PAUSED,
    ) -> list[Effect]:
        """Halt a symbol, or everything, until `resume` (or for ``ttl`` seconds).

        ``mode=TradingMode.PAUSED`` (the default) refuses every order; ``REDUCE_ONLY`` lets
        only reducing orders through (a canary). Halting a halted scope replaces its reason,
        mode and limit. The halt is audited (`Transitioned` of machine ``"operator"``: HALTED
        or REDUCED) and shown by `status()` and ``guard("operator", symbol)``.

        Returns:
            The effects, in order; run them, then re-read `next_deadline()`.

        Raises:
            TypeError: ``reason`` or ``symbol`` not a string, ``ttl`` not a number, ``mode``
                not a `TradingMode`.
            InvalidObservation: an empty reason or symbol, a ttl that is not > 0, or
                ``mode=ALLOW``.
        """
        _require_name("reason", reason)
        if symbol is not None:
            _require_symbol(symbol)
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise TypeError(
                    f"halt ttl must be seconds (int or float) or None, got "
                    f"{type(ttl).__name__} {ttl!r}"
                )
            if not 0 < ttl < math.inf:
                raise InvalidObservation(f"halt ttl must be seconds > 0 or None, got {ttl!r}")
        if type(mode) is not TradingMode:
            raise TypeError(
                "halt mode must be TradingMode.PAUSED or TradingMode.REDUCE_ONLY, got "
                f"{type(mode).__name__} {mode!r}"
            )
        if mode not in _HALT_MODES:
            raise InvalidObservation(
                f"halt mode must be TradingMode.PAUSED or TradingMode.REDUCE_ONLY, got {mode!r}"
            )

        def change(_: None, now: float) -> list[Effect]:
            scope = self._global if symbol is None else self._scope(symbol)
            until = None if ttl is None else now + ttl
            return self._settled(scope.halt.halt(reason, until, now, mode), symbol, now)

        return self._run(change, None)

    def resume(self, symbol: str | None = None) -> list[Effect]:
        """Lift an operator halt (of either mode).

        A scope that is not halted (or a symbol never seen) makes this a no-op: nothing
        changes, no timer is applied, and ``[]`` is returned.

        Returns:
            The effects, in order; run them, then re-read `next_deadline()`.

        Raises:
            TypeError: ``symbol`` is not a string or ``None``.
            InvalidObservation: ``symbol`` is empty.
        """
        if symbol is not None:
            _require_symbol(symbol)
        scope = self._global if symbol is None else self._symbols.get(symbol)
        if scope is None or not scope.halt.halted:
            return []
        halt = scope.halt
        return self._run(lambda _, now: self._settled(halt.resume(now), symbol, now), None)

    def trip(self, guard: str, reason: str, symbol: str | None = None) -> list[Effect]:
        """Trip a guard from outside (audited): preflight found its fault at startup.

        The guard recovers by its own rule: mark_staleness on a fresh mark, api_health once an
        API call shows none of its conditions hold, and so on, then cools down as usual.

        Raises:
            UnknownGuard: no guard has that name.
            InvalidObservation: an empty reason, the symbol does not fit the guard's scope, or
                ``"operator"`` (use `halt`).
        """
        self._require_guard(guard, symbol, "trip", "halt()")
        _require_name("reason", reason)

        def change(_: None, now: float) -> list[Effect]:
            scope = self._global if symbol is None else self._scope(symbol)
            return self._settled(scope.guards[guard].force_trip(reason, now), symbol, now)

        return self._run(change, None)

    def reset(self, guard: str, symbol: str | None = None) -> list[Effect]:
        """Operator reset of one guard to HEALTHY, counts forgotten (audited as a transition).

        Raises:
            UnknownGuard: no guard has that name.
            InvalidObservation: the symbol argument does not fit the guard's scope, or
                ``"operator"`` (use `resume`).
        """
        self._require_guard(guard, symbol, "reset", "resume()")

        def change(_: None, now: float) -> list[Effect]:
            scope = self._global if symbol is None else self._scope(symbol)
            return self._settled(scope.guards[guard].reset(now), symbol, now)

        return self._run(change, None)

    def _require_guard(self, guard: str, symbol: str | None, verb: str, instead: str) -> None:
        self.guard(guard, symbol)  # validates name, types and scope before anything changes
        if guard == _OPERATOR:
            raise InvalidObservation(f"cannot {verb} 'operator': an operator halt uses {instead}")
        if "@" in guard:
            raise InvalidObservation(
                f"cannot {verb} {guard!r}: a peer's restriction lifts when the peer lifts it, "
                "at its deadline, or by the dead-member rule (nothing here loosens it)"
            )

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """The layer's state, JSON-ready, with deadlines as wall-clock times.

        Feeds are not saved: connections do not survive a restart, and a websocket guard
        that was restricting stays so until a feed connects again. With a fleet, a
        ``"fleet"`` entry keeps the fleet guard, the peers' heartbeats and every peer
        restriction with its deadline as a wall-clock time.
        """
        return self._snapshot(None)

    def snapshot_changes(self, after: int | None = None) -> SnapshotChanges:
        """A snapshot whose ``"symbols"`` holds only the symbols changed since the last call.

        For the one writer that keeps a snapshot current without saving the whole layer each
        time (`tradeguard.io.StoreRecorder`): pass the ``through`` of your previous call.
        ``None`` (the first call), or a ``through`` that is not the latest because another
        call came in between, gives every symbol (``complete``): a writer never misses a
        change. Everything else (the global scope, breakers, pending cancels, the fleet) is
        whole in every call: it does not grow with symbols. A saved snapshot put together
        from these is the one `snapshot()` would give, except that a symbol's last mark may
        be older (a fresh mark that changes no state is no change): restored, that mark goes
        stale sooner, never later.

        Raises:
            TypeError: ``after`` is not a whole number or ``None``.
        """
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise TypeError(f"after must be the through of the last call or None, got {after!r}")
        complete = after != self._handovers or self._changed is None
        changed, self._changed = self._changed, set()
        self._handovers += 1
        snapshot = self._snapshot(None if complete else changed)
        return SnapshotChanges(self._handovers, snapshot, complete=complete)

    def _snapshot(self, only: set[str] | None) -> dict[str, Any]:
        now, wall = self._clock(), self._wall_clock()

        def to_wall(t: float) -> float:
            return t - now + wall

        global_saved = self._global.dump(to_wall)
        fleet_saved = global_saved["guards"].pop(_FLEET, None)
        fleet = (
            {
                "fleet": {
                    "member": None if self._fleet is None else self._fleet.member,
                    "guard": fleet_saved,
                    **self._peers.dump(to_wall),
                }
            }
            if self._fleet is not None or self._peers
            else {}
        )
        return {
            "version": _SNAPSHOT_VERSION,
            **fleet,
            "saved_at": wall,
            "global": global_saved,
            "symbols": {
                sym: self._symbols[sym].dump(to_wall)
                for sym in sorted(self._symbols if only is None else only)
            },
            "breakers": {
                cat: {
                    "state": b.state.name,
                    "reopens_at": None if b.reopens_at is None else to_wall(b.reopens_at),
                }
                for cat, b in sorted(self._breakers.items())
            },
            "pending_cancels": [
                {"order_ids": None if ids is None else list(ids), "reason": reason}
                for ids, reason in self._unsent_cancels
            ],
        }

    @classmethod
    def restore(
        cls,
        settings: Settings,
        snapshot: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        *,
        rng: random.Random | None = None,
    ) -> ReliabilityLayer:
        """Rebuild a layer from `snapshot()`, keeping the remaining time of every restriction.

        Raises:
            InvalidSnapshot: the snapshot is malformed or of another version.
        """
        if not isinstance(snapshot, Mapping) or snapshot.get("version") != _SNAPSHOT_VERSION:
            raise InvalidSnapshot(
                f"snapshot must be a mapping with version {_SNAPSHOT_VERSION}, got "
                f"{type(snapshot).__name__} version "
                f"{snapshot.get('version') if isinstance(snapshot, Mapping) else None!r}"
            )
        layer = cls(settings, clock, rng=rng, wall_clock=wall_clock)
        now, wall = clock(), wall_clock()

        def to_mono(t: float) -> float:
            return t - wall + now

        try:
            layer._global.load(snapshot["global"], to_mono)
            for symbol, saved in snapshot.get("symbols", {}).items():
                _require_symbol(symbol)
                layer._scope(symbol).load(saved, to_mono)
            for category, saved in snapshot.get("breakers", {}).items():
                breaker = layer._breaker(category)
                breaker.load(saved, to_mono)
                if breaker.state is BreakerState.OPEN:
                    layer._api.open_breakers.add(category)
            for saved in snapshot.get("pending_cancels", []):
                ids = saved["order_ids"]
                try:
                    cancel = CancelFailed(None if ids is None else tuple(ids), saved["reason"])
                except InvalidObservation as err:
                    raise ValueError(f"pending cancel {saved!r}: {err}") from err
                layer._unsent_cancels.append((cancel.order_ids, cancel.reason))
            if (fleet := snapshot.get("fleet")) is not None:
                layer._restore_fleet(fleet, now)
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidSnapshot(f"snapshot is malformed: {err!r}") from err
        layer._due_at = layer._next_due()
        return layer

    def _restore_fleet(self, saved: Mapping[str, Any], now: float) -> None:
        """Restore the fleet part of a snapshot (no transition is recorded: this is not one).

        The fleet guard comes back only when ``GPT_TRADER_FLEET_REDIS_URL`` is set (without
        it no shell would ever sync it): a restarted member is UNSYNCED, or TRIPPED if it was
        tripped or cooling down. Peers' restrictions come back whatever the settings, with
        their remaining time; a dead member's open-ended ones follow the dead-member rule.

        Raises:
            KeyError, TypeError, ValueError: the saved data is malformed.
        """
        if not isinstance(saved, Mapping):
            raise TypeError(f"fleet must be an object, got {saved!r}")
        guard = saved.get("guard")
        if guard is not None and self._settings.fleet_redis_url:
            member = saved.get("member")
            if not isinstance(member, str):
                raise TypeError(f"fleet.member must be a string, got {member!r}")
            FleetJoined(member)  # the same checks as a join
            self._join(member, now)
            fleet = self._fleet
            if fleet is not None:
                fleet.load(guard, lambda t: t)
        try:
            self._peers.load(dict(saved), now)
        except InvalidObservation as err:
            raise ValueError(f"fleet peer restriction: {err}") from err
        for scope in (self._global, *self._symbols.values()):
            scope.state = scope.own_mode()


def _no_change(_: None, now: float) -> list[Effect]:
    return []


def _require_name(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise InvalidObservation(f"{what} must be a non-empty string, got {value!r}")


def _bad_position(position: object) -> NoReturn:
    """Raise the error a bad ``decide()`` position gets (kept off the hot path)."""
    if type(position) is not Decimal:
        raise TypeError(
            f"decide() position must be a Decimal or None, got {type(position).__name__} "
            f"{position!r}"
        )
    raise InvalidObservation(f"position must be a finite Decimal or None, got {position!r}")


def _require_symbol(symbol: object) -> None:
    _require_name("symbol", symbol)
