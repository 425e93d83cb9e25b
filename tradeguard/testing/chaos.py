"""The chaos harness: inject broker faults on purpose, exactly and replayably (the seed's
"Chaos Harness").

Theory of operation. A `FaultPlan` maps broker method names to ordered `FaultAction` lists. A
`ChaosBroker` wraps a real broker and, on each call of a planned method, asks the plan which
action (if any) applies: the first action of that method, in the order added, that

1. comes after at least ``after_calls`` earlier calls of the method (whatever befell them),
2. has injected fewer than ``times`` faults (``None``: no limit),
3. accepts the call's arguments (``predicate``), and
4. wins its seeded draw (``probability``; drawn only when 1-3 hold, so the draws replay).

The chosen action then waits ``delay_seconds`` (through the injected ``sleep_func``) and raises,
returns a canned value, or calls through and transforms the real answer; with no other outcome
it is a pure latency fault. Every call of a planned method is counted and logged
(`FaultPlan.log`), faulted or not.

Where this does better than the original (each has a test named for it):

- All mutable state (call counts, faults injected, each action's `random.Random`) lives in the
  plan, never in the action: one `FaultAction` shared by two plans is exhausted separately in
  each, and two plans built alike replay the same faults.
- `fault_after(n)` lets exactly ``n`` calls through and faults every later call; the
  original's faulted on call ``n`` itself.
- An exception class raises a fresh instance per fault, and an instance is raised as a fresh
  copy (see `FaultAction`), so no two faults share a traceback.
- A plan that names a method the broker lacks fails when the `ChaosBroker` is built, naming the
  method and the broker's methods; the original silently injected nothing.
- Async methods stay async (coroutine functions, so `TradingLoop` awaits them) and await the
  delay; sync methods stay sync.
- With ``observe`` (say ``runtime.observe``), the chaos broker reports each call the way
  `tradeguard.io.CcxtBroker` does (`ApiCall`, then `RateLimitUsage`: 1.0 on a 429, the
  ``answer_usage`` on an answer, as a venue's headers would), so injected faults reach the
  layer even when the wrapped broker does no I/O, and a rate-limit burst ends when it ends.

Presets return a fresh plan per call and say which guard they trip. The websocket helpers at
the end act on the embedded exchange's feed server instead: they are not broker plans.
"""

from __future__ import annotations

import copy
import enum
import functools
import inspect
import math
import random
import reprlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, final

import anyio

from tradeguard.fsm import Side
from tradeguard.fsm.events import ApiCall, Observation, RateLimitUsage
from tradeguard.io.broker import BOT_PREFIX, BrokerError, Order, OrderStatus, Preview, Quote
from tradeguard.io.exchange.feed_server import ExchangeFeedServer
from tradeguard.io.faults import classify

__all__ = [
    "BROKER_METHODS",
    "CallRecord",
    "ChaosBroker",
    "FaultAction",
    "FaultPlan",
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

# The breaker category of each `tradeguard.io.broker.Broker` method, as `CcxtBroker` files it.
_CATEGORIES: Mapping[str, str] = {
    "list_balances": "accounts",
    "list_positions": "accounts",
    "list_orders": "orders",
    "place_order": "orders",
    "cancel_orders": "orders",
    "preview_order": "orders",
    "get_best_bid_ask": "market",
    "get_ticker": "market",
    "get_product": "market",
}

BROKER_METHODS: tuple[str, ...] = tuple(_CATEGORIES)
"""The `Broker` protocol's method names, in declaration order: what the presets fault.

Their breaker categories: ``list_balances``/``list_positions`` → ``accounts``;
``list_orders``/``place_order``/``cancel_orders``/``preview_order`` → ``orders``;
``get_best_bid_ask``/``get_ticker``/``get_product`` → ``market``; any other method → ``market``
(all within the default ``GPT_TRADER_API_CATEGORIES``).
"""


class _Unset(enum.Enum):
    """The "no canned return value" marker (``None`` is a value a method may return)."""

    UNSET = "UNSET"


_UNSET = _Unset.UNSET

SleepFunc = Callable[[float], Awaitable[object] | None]
ObserveFunc = Callable[[Observation], object]


# ---------------------------------------------------------------------- actions


@final
@dataclass(frozen=True, slots=True)
class FaultAction:
    """One fault to inject into a broker method: when, how often, and what happens.

    An action holds no state: which calls it fired on is counted by the `FaultPlan` it is
    added to, so the same action may serve several plans.

    Attributes:
        after_calls: calls of the method that come before this action may fire (with one
            action per method, the calls let through first; another action may fault them).
        times: faults it injects; ``None`` for no limit.
        raise_exc: raise this. A class raises a fresh instance (built with no arguments) per
            fault. An instance is raised as a fresh copy per fault: `copy.copy` first; for a
            class whose ``__init__`` cannot take its own ``args`` back (`BrokerError`), a new
            instance made from its ``args`` and attributes without calling ``__init__``. A copy
            has no traceback, cause or context of its own, and its own ``__notes__`` list.
            Only if neither copy can be made is the instance itself raised, with its traceback
            cleared first, so tracebacks never pile up across faults.
        return_value: return this (the same object every time) instead of calling through.
        transform: call through, then return ``transform(real_answer)``.
        delay_seconds: awaited (or slept) before the outcome; alone, a pure latency fault.
        predicate: called with the call's arguments (``predicate(*args, **kwargs)``); the
            action applies only to calls it returns true for. Calls it declines still count
            towards ``after_calls``.
        probability: the chance the action fires on a call it applies to.
        seed: seeds the draws. Each plan keeps its own `random.Random(seed)` per action, so
            two plans replay the same faults. ``None`` draws from an unseeded source, which
            does not replay: give a seed whenever ``probability < 1``.

    Raises:
        ValueError: a field out of range or of the wrong type (the message names it), more
            than one of ``raise_exc``/``return_value``/``transform``, or no outcome at all.
    """

    after_calls: int = 0
    times: int | None = 1
    raise_exc: BaseException | type[BaseException] | None = None
    return_value: object = _UNSET
    transform: Callable[[Any], Any] | None = None
    delay_seconds: float = 0.0
    predicate: Callable[..., bool] | None = None
    probability: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.after_calls) or self.after_calls < 0:
            raise ValueError(
                f"FaultAction.after_calls must be a whole number >= 0, got {self.after_calls!r}"
            )
        if self.times is not None and (not _is_int(self.times) or self.times < 1):
            raise ValueError(
                f"FaultAction.times must be a whole number >= 1 or None, got {self.times!r}"
            )
        exc = self.raise_exc
        if exc is not None and not (
            isinstance(exc, BaseException)
            or (isinstance(exc, type) and issubclass(exc, BaseException))
        ):
            raise ValueError(
                f"FaultAction.raise_exc must be an exception class or instance, got {exc!r}"
            )
        for name in ("transform", "predicate"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ValueError(f"FaultAction.{name} must be callable, got {value!r}")
        delay = self.delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"FaultAction.delay_seconds must be a number, got {delay!r}")
        if not (math.isfinite(delay) and delay >= 0):  # NaN fails both
            raise ValueError(
                f"FaultAction.delay_seconds must be finite seconds >= 0, got {delay!r}"
            )
        p = self.probability
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ValueError(f"FaultAction.probability must be in [0, 1], got {p!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"FaultAction.seed must be an int or None, got {self.seed!r}")
        outcomes = [
            name
            for name, present in (
                ("raise_exc", exc is not None),
                ("return_value", self.return_value is not _UNSET),
                ("transform", self.transform is not None),
            )
            if present
        ]
        if len(outcomes) > 1:
            raise ValueError(
                f"FaultAction takes at most one of raise_exc, return_value, transform; "
                f"got {', '.join(outcomes)}"
            )
        if not outcomes and delay == 0:
            raise ValueError(
                "FaultAction needs an outcome: raise_exc, return_value, transform or "
                "delay_seconds > 0 (an action with none would inject nothing)"
            )

    def describe(self) -> str:
        """What the action does, for the call log (``"delay 0.5s, then raise TimeoutError"``)."""
        parts = []
        if self.delay_seconds:
            parts.append(f"delay {self.delay_seconds:g}s")
        if self.raise_exc is not None:
            parts.append(f"raise {_describe_exception(self.raise_exc)}")
        elif self.return_value is not _UNSET:
            parts.append(f"return {reprlib.repr(self.return_value)}")
        elif self.transform is not None:
            parts.append(f"transform {getattr(self.transform, '__name__', 'answer')}")
        return ", then ".join(parts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe_exception(exc: BaseException | type[BaseException]) -> str:
    if isinstance(exc, type):
        return exc.__name__
    return f"{type(exc).__name__}({reprlib.repr(str(exc))})"


def _fresh_exception(exc: BaseException | type[BaseException]) -> BaseException:
    """A new exception for one fault (see `FaultAction.raise_exc`)."""
    if isinstance(exc, type):
        return exc()
    clone: BaseException | None
    try:
        clone = copy.copy(exc)
    except Exception:  # an __init__ that cannot take its own args back, like BrokerError's
        clone = None
    if clone is None or clone is exc or type(clone) is not type(exc):
        clone = _rebuild(exc)
    if clone is None:
        return exc.with_traceback(None)  # no copy possible: at least drop the old traceback
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        clone.__notes__ = list(notes)  # a shallow copy would share the one list
    return clone


def _rebuild(exc: BaseException) -> BaseException | None:
    """A copy of ``exc`` made without calling ``__init__``: its args and attributes."""
    cls = type(exc)
    try:
        clone = cls.__new__(cls, *exc.args)
        clone.args = exc.args
        state = getattr(exc, "__dict__", None)
        if state:
            clone.__dict__.update(state)
    except Exception:  # a C exception type that cannot be built this way
        return None
    return clone


# ---------------------------------------------------------------------- helpers


def _helper_action(helper: str, fixed: dict[str, Any], outcome: dict[str, Any]) -> FaultAction:
    clash = sorted(set(fixed) & set(outcome))
    if clash:
        raise ValueError(f"{helper}() sets {', '.join(clash)} itself; build a FaultAction instead")
    return FaultAction(**fixed, **outcome)


def fault_once(**outcome: Any) -> FaultAction:
    """Fault the first call only (``after_calls=0, times=1``).

    Args:
        **outcome: the other `FaultAction` fields (``raise_exc=``, ``delay_seconds=``, ...).

    Raises:
        ValueError: a bad field, or ``after_calls``/``times`` given (this helper sets them).
    """
    return _helper_action("fault_once", {"after_calls": 0, "times": 1}, outcome)


def fault_after(n: int, *, times: int | None = None, **outcome: Any) -> FaultAction:
    """Let the first ``n`` calls through, then fault EVERY later call, or ``times`` of them.

    ``fault_after(2, raise_exc=TimeoutError)``: calls 1 and 2 succeed, 3, 4, ... raise. (The
    original faulted ON call ``n`` itself: its ``fault_after(2)`` failed call 2.)
    ``fault_after(2, raise_exc=TimeoutError, times=3)``, the original's signature: calls 3, 4
    and 5 raise, later calls go through.

    Args:
        n: calls let through first (>= 0).
        times: faults to inject (>= 1); ``None`` (the default) keeps faulting. (The original
            defaulted to one fault.)
        **outcome: the other `FaultAction` fields.

    Raises:
        ValueError: a bad ``n``, ``times`` or field, or ``after_calls`` given.
    """
    # Unlike the original (which faulted on call n): n calls through, then every call faults.
    return _helper_action("fault_after", {"after_calls": n, "times": times}, outcome)


def fault_always(**outcome: Any) -> FaultAction:
    """Fault every call (``after_calls=0, times=None``).

    Raises:
        ValueError: a bad field, or ``after_calls``/``times`` given.
    """
    return _helper_action("fault_always", {"after_calls": 0, "times": None}, outcome)


def fault_randomly(p: float, *, seed: int, **outcome: Any) -> FaultAction:
    """Fault each call with probability ``p``, drawn from ``random.Random(seed)`` per plan.

    Two plans built with the same seed fault the same calls; a different seed, other calls.

    Raises:
        ValueError: ``p`` outside [0, 1], a bad seed or field, or ``after_calls``/``times``/
            ``probability`` given.
    """
    fixed = {"after_calls": 0, "times": None, "probability": p, "seed": seed}
    return _helper_action("fault_randomly", fixed, outcome)


SequenceOutcome = BaseException | type[BaseException] | FaultAction | None


def fault_sequence(
    *outcomes: SequenceOutcome | list[SequenceOutcome] | tuple[SequenceOutcome, ...],
) -> list[FaultAction]:
    """One outcome per call, in order; calls after the sequence go through.

    ``fault_sequence(TimeoutError, None, BrokerError("orders", 503, "busy"))``: call 1 raises a
    `TimeoutError`, call 2 goes through, call 3 raises a copy of the `BrokerError`, call 4 and
    later go through. Add the returned list with `FaultPlan.add`. The original's form, one
    list (or tuple) of outcomes, is accepted too: ``fault_sequence([TimeoutError, None])``.

    Args:
        *outcomes: per call, an exception class or instance to raise, a `FaultAction` (its
            outcome and delay are used for exactly that call, so it must keep the defaults
            ``after_calls=0``, ``times=1``, no predicate and ``probability=1``), or ``None``
            to let the call through; or a single list or tuple of them.

    Raises:
        ValueError: an outcome of another type (a list among several outcomes included), or
            a `FaultAction` that could not apply to exactly its one call.
    """
    if len(outcomes) == 1 and isinstance(outcomes[0], list | tuple):
        outcomes = tuple(outcomes[0])  # the original's signature: one list of outcomes
    actions = []
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            continue
        if isinstance(outcome, FaultAction):
            if (
                outcome.after_calls != 0
                or outcome.times != 1
                or outcome.predicate is not None
                or outcome.probability != 1
            ):
                raise ValueError(
                    f"fault_sequence outcome {index} must apply to exactly its call: keep "
                    f"after_calls=0, times=1, no predicate and probability=1, got {outcome!r}"
                )
            actions.append(replace(outcome, after_calls=index))
        elif isinstance(outcome, BaseException) or (
            isinstance(outcome, type) and issubclass(outcome, BaseException)
        ):
            actions.append(FaultAction(after_calls=index, times=1, raise_exc=outcome))
        else:
            raise ValueError(
                f"fault_sequence outcome {index} must be an exception class or instance, a "
                f"FaultAction or None, got {outcome!r}"
            )
    return actions


# ---------------------------------------------------------------------- the plan


@final
@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call of a planned method, as the plan saw it.

    Attributes:
        method: the method called.
        call_number: 1 for the method's first call, 2 for its second, ...
        fault: what was injected (`FaultAction.describe`), or ``None`` if the call went
            through untouched.
        args: the positional arguments.
        kwargs: the keyword arguments.
    """

    method: str
    call_number: int
    fault: str | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Slot:
    """One action in one plan, with the state the plan keeps for it."""

    action: FaultAction
    rng: random.Random
    fired: int = 0


@dataclass(eq=False, slots=True)
class _MethodState:
    slots: list[_Slot] = field(default_factory=list)
    calls: int = 0


@final
class FaultPlan:
    """Which faults to inject into which broker methods; counts and logs every planned call.

    Build with chained `add` calls; hand it to a `ChaosBroker`. A plan is meant for one run:
    it keeps counting across the brokers it is given to.

    Attributes:
        log: every call of a planned method, in order, faulted or not.
        state: scratch space for stateful transforms (a preset's transforms keep their state
            here, so it lives and dies with the plan).
    """

    def __init__(self) -> None:
        self._methods: dict[str, _MethodState] = {}
        # Sync brokers run in worker threads (`TradingLoop`): decisions must not interleave.
        self._lock = threading.Lock()
        self.log: list[CallRecord] = []
        self.state: dict[str, Any] = {}

    def add(self, method: str, action: FaultAction | Sequence[FaultAction]) -> FaultPlan:
        """Append one action, or several in order, to ``method``'s actions; returns the plan.

        Earlier actions take precedence: on each call the first action that applies fires.

        Raises:
            ValueError: ``method`` is not a public method name, or an action is not a
                `FaultAction`.
        """
        if not isinstance(method, str) or not method.isidentifier() or method.startswith("_"):
            raise ValueError(f"FaultPlan.add: method must be a public method name, got {method!r}")
        actions = [action] if isinstance(action, FaultAction) else list(action)
        for item in actions:
            if not isinstance(item, FaultAction):
                raise ValueError(
                    f"FaultPlan.add({method!r}): expected FaultAction(s), got {item!r}"
                )
        with self._lock:
            state = self._methods.setdefault(method, _MethodState())
            # Counts and draws live here, not in the action: a shared action is not shared state.
            state.slots.extend(_Slot(a, random.Random(a.seed)) for a in actions)
        return self

    def clear(self) -> None:
        """End the outage: drop every action, so every later call goes through.

        The methods stay planned: their calls are still counted and logged, and a
        `ChaosBroker` built on this plan keeps working.
        """
        with self._lock:
            for state in self._methods.values():
                state.slots.clear()

    @property
    def methods(self) -> tuple[str, ...]:
        """The planned methods, in the order first added."""
        return tuple(self._methods)

    def actions(self, method: str) -> tuple[FaultAction, ...]:
        """``method``'s actions in order (empty for a method not planned)."""
        state = self._methods.get(method)
        return () if state is None else tuple(slot.action for slot in state.slots)

    def calls(self, method: str) -> int:
        """Calls of ``method`` seen so far."""
        state = self._methods.get(method)
        return 0 if state is None else state.calls

    def faults_injected(self, method: str | None = None) -> int:
        """Faults injected so far, into ``method`` or (``None``) into every method."""
        with self._lock:
            if method is None:
                states = list(self._methods.values())
            else:
                state = self._methods.get(method)
                states = [] if state is None else [state]
            return sum(slot.fired for state in states for slot in state.slots)

    def _begin(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> FaultAction | None:
        """Count one call of ``method``; return the action to inject, or None. Logs it."""
        with self._lock:
            state = self._methods[method]
            state.calls += 1
            chosen: FaultAction | None = None
            for slot in state.slots:
                action = slot.action
                if state.calls <= action.after_calls:
                    continue
                if action.times is not None and slot.fired >= action.times:
                    continue
                if action.predicate is not None and not action.predicate(*args, **kwargs):
                    continue
                # Drawn only for a call the action otherwise applies to: the draws replay.
                if action.probability < 1 and not slot.rng.random() < action.probability:
                    continue
                slot.fired += 1
                chosen = action
                break
            fault = None if chosen is None else chosen.describe()
            self.log.append(CallRecord(method, state.calls, fault, args, dict(kwargs)))
            return chosen

    def __repr__(self) -> str:
        planned = ", ".join(f"{m}: {len(s.slots)}" for m, s in self._methods.items())
        return f"<FaultPlan {{{planned}}}, {len(self.log)} calls logged>"


# ---------------------------------------------------------------------- the broker


def _public_methods(obj: object) -> list[str]:
    names = []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that fails: not a method either way
            continue
        if callable(value):
            names.append(name)
    return sorted(names)


def _reported_failure(exc: BaseException) -> tuple[bool, int | None]:
    """Whether a raised exception is an API failure a real broker would report, and its status.

    The shell's one fault table decides (`tradeguard.io.faults.classify`): a refused call
    (`CircuitOpen`) never reached the API and a bug is not the venue, so neither is reported.
    """
    failure = classify(exc)
    if failure is None:
        return False, None
    return True, failure.status


@final
class ChaosBroker:
    """A broker proxy that injects a `FaultPlan`'s faults into the wrapped broker's methods.

    Every attribute of ``wrapped`` is reachable through the proxy (``chaos.venue``,
    ``chaos.market``); methods the plan names are faulted. An async method stays a coroutine
    function (so `TradingLoop` awaits it): a faulted call awaits the delay, then raises,
    returns or transforms. A sync method stays sync (`TradingLoop` runs it in a worker thread).

    Reporting, with ``observe``: an injected (or, with ``report_passthrough``, a real)
    `BrokerError` is reported as ``ApiCall(category, ok=False, status)``, a `TimeoutError` or
    `OSError` as ``ApiCall(category, ok=False, None)``; a 429 adds ``RateLimitUsage(1.0)``.
    Answers (passed through, transformed or canned) are reported as ``ApiCall(category,
    ok=True, status=200)`` plus ``RateLimitUsage(answer_usage)`` (a venue's headers on every
    response; a fresh low reading clears a burst's) only with ``report_passthrough``; the
    protocol's methods not in the
    plan are then reported too. Other exceptions are bugs, not venue faults: not reported.
    Categories: see `BROKER_METHODS`. A sync method called in a worker thread reports through
    the event loop (`anyio.from_thread.run_sync`).

    Args:
        wrapped: the broker to fault (a `DeterministicBroker`, a `CcxtBroker`, a sync SDK).
        plan: the faults.
        sleep_func: waits out a delay; sync or async for async methods (default
            `anyio.sleep`), sync for sync methods (default `time.sleep`). Pass a no-op
            (``lambda _: None``) in tests.
        observe: where to report calls, e.g. ``runtime.observe``; ``None`` reports nothing.
        report_passthrough: report answers and real failures too. Set it False when wrapping
            `CcxtBroker`, which reports its own calls: only the injected faults are reported.
        answer_usage: the rate-limit usage (0..1) each reported answer carries; ``None``
            reports none (a venue that sends no rate-limit headers).

    Raises:
        ValueError: the plan names a method ``wrapped`` does not have (the message lists its
            public methods), or a bad argument.
    """

    def __init__(
        self,
        wrapped: object,
        plan: FaultPlan,
        *,
        sleep_func: SleepFunc | None = None,
        observe: ObserveFunc | None = None,
        report_passthrough: bool = True,
        answer_usage: float | None = 0.0,
    ) -> None:
        if not isinstance(plan, FaultPlan):
            raise ValueError(f"ChaosBroker plan must be a FaultPlan, got {plan!r}")
        if sleep_func is not None and not callable(sleep_func):
            raise ValueError(f"ChaosBroker sleep_func must be callable, got {sleep_func!r}")
        if observe is not None and not callable(observe):
            raise ValueError(f"ChaosBroker observe must be callable, got {observe!r}")
        if answer_usage is not None and (
            isinstance(answer_usage, bool)
            or not isinstance(answer_usage, int | float)
            or not 0.0 <= answer_usage <= 1.0  # NaN fails both
        ):
            raise ValueError(f"ChaosBroker answer_usage must be 0..1 or None, got {answer_usage!r}")
        # Unlike the original, which silently injected nothing into a method the broker lacks.
        missing = [m for m in plan.methods if not callable(getattr(wrapped, m, None))]
        if missing:
            kind = type(wrapped).__name__
            raise ValueError(
                f"FaultPlan names {', '.join(map(repr, missing))}, which {kind} does not have; "
                f"its public methods: {', '.join(_public_methods(wrapped)) or 'none'}"
            )
        self._wrapped = wrapped
        self._plan = plan
        self._sleep_func = sleep_func
        self._observe = observe
        self._report_passthrough = report_passthrough
        self._answer_usage = answer_usage
        wrap = set(plan.methods)
        if observe is not None and report_passthrough:
            wrap.update(m for m in BROKER_METHODS if callable(getattr(wrapped, m, None)))
        self._proxies: dict[str, Callable[..., Any]] = {
            name: self._proxy(name, planned=name in plan.methods) for name in sorted(wrap)
        }

    @property
    def wrapped(self) -> object:
        """The broker the faults are injected into."""
        return self._wrapped

    @property
    def plan(self) -> FaultPlan:
        """The plan in force."""
        return self._plan

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the proxy itself.
        proxies = self.__dict__.get("_proxies")
        if proxies is not None and name in proxies:
            return proxies[name]
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["_wrapped"], name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(self._wrapped)})

    def __repr__(self) -> str:
        return f"<ChaosBroker over {self._wrapped!r} with {self._plan!r}>"

    # ------------------------------------------------------------------ proxies

    def _proxy(self, name: str, *, planned: bool) -> Callable[..., Any]:
        original = getattr(self._wrapped, name)
        # Any other method is filed under "market": categories are a configured set
        # (GPT_TRADER_API_CATEGORIES), and an unknown one would be refused by the layer.
        category = _CATEGORIES.get(name, "market")
        begin = functools.partial(self._plan._begin, name) if planned else None
        if inspect.iscoroutinefunction(original):
            deliver = self._deliver_here

            @functools.wraps(original)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                action = None if begin is None else begin(args, kwargs)
                if action is not None:
                    if action.delay_seconds:
                        waited = (self._sleep_func or anyio.sleep)(action.delay_seconds)
                        if inspect.isawaitable(waited):
                            await waited
                    if not self._inject(action, category, deliver):
                        return action.return_value
                try:
                    answer = await getattr(self._wrapped, name)(*args, **kwargs)
                except (BrokerError, OSError) as err:
                    self._passthrough_failed(category, err, deliver)
                    raise
                return self._answered(action, category, answer, deliver)

            return call_async

        deliver = self._deliver_from_thread

        @functools.wraps(original)
        def call_sync(*args: Any, **kwargs: Any) -> Any:
            action = None if begin is None else begin(args, kwargs)
            if action is not None:
                if action.delay_seconds:
                    waited = (self._sleep_func or time.sleep)(action.delay_seconds)
                    if inspect.isawaitable(waited):
                        if inspect.iscoroutine(waited):
                            waited.close()  # never to be awaited: no "never awaited" warning
                        raise TypeError(
                            f"ChaosBroker: {name} is a sync method, but sleep_func returned an "
                            "awaitable; pass a sync sleep_func for a sync broker"
                        )
                if not self._inject(action, category, deliver):
                    return action.return_value
            try:
                answer = getattr(self._wrapped, name)(*args, **kwargs)
            except (BrokerError, OSError) as err:
                self._passthrough_failed(category, err, deliver)
                raise
            return self._answered(action, category, answer, deliver)

        return call_sync

    def _inject(self, action: FaultAction, category: str, deliver: ObserveFunc) -> bool:
        """Raise the action's exception, or tell whether to call through (False: the caller
        returns the canned value). Runs after the delay."""
        if action.raise_exc is not None:
            exc = _fresh_exception(action.raise_exc)
            self._report_failure(category, exc, deliver)
            raise exc
        if action.return_value is not _UNSET:
            self._report_answer(category, deliver)
            return False
        return True

    def _answered(
        self, action: FaultAction | None, category: str, answer: Any, deliver: ObserveFunc
    ) -> Any:
        """The wrapped method answered: report it, then transform the answer if asked."""
        self._report_answer(category, deliver)
        if action is not None and action.transform is not None:
            return action.transform(answer)
        return answer

    # ------------------------------------------------------------------ reporting

    def _passthrough_failed(self, category: str, err: BaseException, deliver: ObserveFunc) -> None:
        if self._report_passthrough:  # else the wrapped broker reports its own calls
            self._report_failure(category, err, deliver)

    def _report_failure(self, category: str, exc: BaseException, deliver: ObserveFunc) -> None:
        if self._observe is None:
            return
        report, status = _reported_failure(exc)
        if not report:
            return
        deliver(ApiCall(category, False, status))
        if status == 429:
            deliver(RateLimitUsage(1.0))

    def _report_answer(self, category: str, deliver: ObserveFunc) -> None:
        if self._observe is not None and self._report_passthrough:
            deliver(ApiCall(category, True, 200))
            if self._answer_usage is not None:
                deliver(RateLimitUsage(self._answer_usage))

    def _deliver_here(self, observation: Observation) -> object:
        """Report from an async method: it runs on the event loop."""
        return None if self._observe is None else self._observe(observation)

    def _deliver_from_thread(self, observation: Observation) -> object:
        """Report from a sync method: through the event loop when in an anyio worker thread
        (`TradingLoop` runs sync methods there); in any other thread, right there."""
        observe = self._observe
        if observe is None:
            return None
        ran = False

        def on_loop() -> object:
            nonlocal ran
            ran = True
            return observe(observation)

        try:
            return anyio.from_thread.run_sync(on_loop)
        except RuntimeError:
            if ran:
                raise  # observe itself failed: not ours to hide
            # Not in an anyio worker thread: on the event loop itself, or plain sync code.
            return observe(observation)


# ---------------------------------------------------------------------- presets


def _every_method_raises(status: int, message: str) -> FaultPlan:
    plan = FaultPlan()
    for method in BROKER_METHODS:
        error = BrokerError(_CATEGORIES[method], status, message)
        plan.add(method, fault_always(raise_exc=error))
    return plan


def api_outage_scenario() -> FaultPlan:
    """Every `Broker` method raises ``BrokerError(category, 503)``.

    Trips: with ``observe``, each call is a failed `ApiCall`; the categories' circuit breakers
    open (``GPT_TRADER_CIRCUIT_FAILURE_THRESHOLD``) and the error rate climbs, so
    ``api_health`` trips (cancel open orders, REDUCE_ONLY). Without ``observe``, the loop's
    own observations still trip ``broker_outage`` (failed position reads).
    """
    return _every_method_raises(503, "service unavailable (chaos: api outage)")


def rate_limit_scenario() -> FaultPlan:
    """Every `Broker` method raises ``BrokerError(category, 429)``.

    Trips: with ``observe``, each call reports a failed `ApiCall` with 429 and
    ``RateLimitUsage(1.0)``, over ``RISK_API_RATE_LIMIT_USAGE_THRESHOLD``: ``api_health``
    trips (and the breakers open, a 429 being the API's fault).
    """
    return _every_method_raises(429, "rate limit exceeded (chaos: rate limit)")


def slippage_spike_scenario(slippage: Decimal = Decimal("0.05")) -> FaultPlan:
    """``preview_order`` answers its real `Preview` with ``slippage`` instead of the real one.

    Only previews change (a transform of the real answer): fills are not affected, unlike the
    venue's own slippage fault.

    Trips: the loop's preview check fails per order (``SlippageCheck(ok=False)``); after
    ``RISK_SLIPPAGE_FAILURE_PAUSE_AFTER`` in a row a symbol's ``slippage`` guard trips.

    Raises:
        ValueError: ``slippage`` is not a finite `Decimal` >= 0.
    """
    if not isinstance(slippage, Decimal) or not slippage.is_finite() or slippage < 0:
        raise ValueError(f"slippage must be a finite Decimal >= 0, got {slippage!r}")

    def spike_slippage(preview: Preview) -> Preview:
        return replace(preview, slippage=slippage)

    return FaultPlan().add("preview_order", fault_always(transform=spike_slippage))


# A quote with no venue time is given this one: a time that never moves is a stale mark.
_FROZEN_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def stale_marks_scenario(symbol: str) -> FaultPlan:
    """``symbol``'s quotes keep the first quote time they showed: no fresh mark arrives.

    ``get_best_bid_ask`` and ``get_ticker`` answers for ``symbol`` carry the first quote time
    either method saw (kept in ``plan.state``; a quote with no time is given a fixed one);
    other symbols are untouched. `TradingLoop` reads an unchanged quote time as a frozen price.

    Trips: ``mark_staleness`` for ``symbol`` only, ``RISK_MARK_STALENESS_THRESHOLD_SECONDS``
    after its last fresh mark.

    Raises:
        ValueError: an empty symbol.
    """
    _require_symbol(symbol)
    plan = FaultPlan()
    first_times: dict[str, datetime] = plan.state.setdefault("stale_marks", {})

    def freeze(quote: Quote) -> Quote:
        if quote.symbol != symbol:
            return quote
        kept = first_times.setdefault(symbol, quote.time or _FROZEN_TIME)
        return replace(quote, time=kept)

    def freeze_batch(quotes: dict[str, Quote]) -> dict[str, Quote]:
        return {s: freeze(q) if s == symbol else q for s, q in quotes.items()}

    def asks_for_batch(*args: Any, **kwargs: Any) -> bool:
        symbols = args[0] if args else kwargs.get("symbols", ())
        return symbol in symbols

    def asks_for_one(*args: Any, **kwargs: Any) -> bool:
        return (args[0] if args else kwargs.get("symbol")) == symbol

    plan.add("get_best_bid_ask", fault_always(transform=freeze_batch, predicate=asks_for_batch))
    plan.add("get_ticker", fault_always(transform=freeze, predicate=asks_for_one))
    return plan


def preview_failure_scenario() -> FaultPlan:
    """``preview_order`` raises ``BrokerError("orders", 500)``.

    Trips: the ``preview`` guard after ``RISK_PREVIEW_FAILURE_DISABLE_AFTER`` failures in a
    row: preview is disabled for the session (orders then go unpreviewed).
    """
    error = BrokerError("orders", 500, "preview failing (chaos: preview failure)")
    return FaultPlan().add("preview_order", fault_always(raise_exc=error))


def broker_read_failure_scenario() -> FaultPlan:
    """``list_balances`` and ``list_positions`` raise `TimeoutError`.

    Trips: ``broker_outage`` after ``RISK_BROKER_OUTAGE_MAX_FAILURES`` failed reads in a row
    (REDUCE_ONLY). With ``observe``, the ``accounts`` breaker sees them as timeouts too.
    """
    plan = FaultPlan()
    for method in ("list_balances", "list_positions"):
        plan.add(method, fault_always(raise_exc=TimeoutError(f"{method} timed out (chaos)")))
    return plan


def validation_failure_scenario() -> FaultPlan:
    """``get_product`` (the validation infrastructure's lookup) raises
    ``BrokerError("market", 500)``.

    Trips: ``validation`` after ``RISK_VALIDATION_FAILURE_ESCALATE_AFTER`` failures in a row
    (REDUCE_ONLY for ``RISK_VALIDATION_FAILURE_COOLDOWN_SECONDS``).
    """
    error = BrokerError("market", 500, "product lookup failing (chaos: validation failure)")
    return FaultPlan().add("get_product", fault_always(raise_exc=error))


def order_drift_scenario(symbol: str, count: int = 2, *, prefix: str = BOT_PREFIX) -> FaultPlan:
    """``list_orders`` answers include ``count`` bot-owned OPEN orders the bot never placed.

    The extra orders have fixed ids (``chaos-drift-0001``, ...) and client ids starting with
    ``prefix``; they exist only in the answers, so cancelling them at the venue changes nothing
    and the drift persists.

    Trips: ``reconciliation`` after ``ORDER_RECONCILIATION_DRIFT_MAX_FAILURES`` dirty audits
    in a row (REDUCE_ONLY, and `CancelOrders` for the unknown ids).

    Raises:
        ValueError: an empty symbol or prefix, or ``count`` < 1.
    """
    _require_symbol(symbol)
    if not _is_int(count) or count < 1:
        raise ValueError(f"count must be a whole number >= 1, got {count!r}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    ghosts = tuple(
        Order(
            order_id=f"chaos-drift-{i:04d}",
            client_order_id=f"{prefix}chaos-drift-{i:04d}",
            symbol=symbol,
            side=Side.BUY,
            quantity=Decimal("0.001"),
            status=OrderStatus.OPEN,
            limit_price=Decimal("0.01"),
        )
        for i in range(1, count + 1)
    )

    def add_unknown_orders(orders: list[Order]) -> list[Order]:
        return [*orders, *ghosts]

    return FaultPlan().add("list_orders", fault_always(transform=add_unknown_orders))


def _require_symbol(symbol: object) -> None:
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")


# ---------------------------------------------------------------------- websocket

# Close codes a server may send (RFC 6455 §7.4.1), plus 1006: abort with no close frame.
_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013})


async def websocket_drop(server: ExchangeFeedServer, code: int = 1011) -> None:
    """Close every open connection of the feed server with close ``code``.

    1006 aborts the TCP connection with no close frame. Clients report the disconnect and
    reconnect through their backoff; nothing needs restoring. To keep them out, call
    `websocket_refuse` first: after ``GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS`` failed attempts
    the feed is DEGRADED and the ``websocket`` guard trips.

    Raises:
        ValueError: a code a server may not send (1000-1003, 1006-1014, 3000-4999).
    """
    if not _is_int(code) or not (code in _CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"close code must be one a server may send, got {code!r}")
    await server.drop_all(code, "dropped by the chaos harness")


def websocket_refuse(server: ExchangeFeedServer, status: int = 503) -> None:
    """Answer every new handshake with HTTP ``status``; open connections stay up.

    Pair with `websocket_drop` to force reconnects that fail: the feed walks to DEGRADED and
    the ``websocket`` guard trips. Undo with `websocket_accept`.

    Raises:
        ValueError: ``status`` is not an HTTP error status (400-599).
    """
    if not _is_int(status) or not 400 <= status <= 599:
        raise ValueError(f"refusal status must be an HTTP error status 400..599, got {status!r}")
    server.refuse_handshakes(status)


def websocket_accept(server: ExchangeFeedServer) -> None:
    """Undo `websocket_refuse`: accept handshakes again."""
    server.refuse_handshakes(None)


def websocket_silence(server: ExchangeFeedServer) -> None:
    """Send nothing, heartbeats included, on every connection, which stays open.

    The client's stream goes silent: after ``GPT_TRADER_WS_MESSAGE_STALE_SECONDS`` the layer
    closes it (`CloseConnection`) and reconnects. Undo with `websocket_resume`.
    """
    server.go_silent(True)


def websocket_resume(server: ExchangeFeedServer) -> None:
    """Undo `websocket_silence`: publish tickers and heartbeats again."""
    server.go_silent(False)


def websocket_restore(server: ExchangeFeedServer) -> None:
    """Undo every websocket fault at once: accept handshakes and publish again."""
    websocket_accept(server)
    websocket_resume(server)
