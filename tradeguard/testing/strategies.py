"""Hypothesis strategies for users' property tests: observations, fault actions, fault plans.

Needs Hypothesis installed (``pip install hypothesis``; it is one of tradeguard's ``dev``
extras). Import this module directly: ``from tradeguard.testing.strategies import
observations``; `tradeguard.testing` does not import it, so it works without Hypothesis.

Every value drawn is valid by construction: each observation is accepted by a fresh
`tradeguard.ReliabilityLayer` (stream observations of a feed need that feed connected, see
`observations`), and each plan builds a `ChaosBroker` over any broker with the planned methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from tradeguard.fsm.events import (
    ApiCall,
    BrokerRead,
    FeedMessage,
    MalformedMessage,
    MarkUpdate,
    MessagesDropped,
    Observation,
    PreviewResult,
    RateLimitUsage,
    ReconciliationAudit,
    SequenceGap,
    SlippageCheck,
    ValidationCheck,
)
from tradeguard.io.broker import BrokerError
from tradeguard.testing.chaos import BROKER_METHODS, FaultAction, FaultPlan

__all__ = ["DEFAULT_EXCEPTIONS", "api_calls", "fault_actions", "fault_plans", "observations"]

# Failure statuses worth hitting on purpose: client errors (not the API's fault), 429 (the API's
# fault, and a rate-limit signal) and server errors; any other 4xx/5xx is drawn too.
_NAMED_FAILURES = (400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504)

# What a venue raises: each is an API fault `ChaosBroker` reports and `TradingLoop` survives.
DEFAULT_EXCEPTIONS: tuple[BaseException | type[BaseException], ...] = (
    TimeoutError,
    ConnectionResetError,
    BrokerError("market", 503, "service unavailable (generated)"),
    BrokerError("orders", 500, "internal error (generated)"),
    BrokerError("accounts", 429, "rate limited (generated)"),
    BrokerError("orders", 400, "bad request (generated)"),
)


def _names(kind: str, values: Sequence[str]) -> st.SearchStrategy[str]:
    if isinstance(values, str) or not values:
        raise ValueError(f"{kind} must be a non-empty sequence of names, got {values!r}")
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{kind} must be non-empty strings, got {value!r}")
    return st.sampled_from(tuple(values))


def api_calls(
    categories: Sequence[str] = ("orders", "accounts", "market"),
) -> st.SearchStrategy[ApiCall]:
    """`ApiCall` values: successes (2xx/3xx or no status) and failures (4xx, 429, 5xx, none).

    Args:
        categories: the endpoint categories to draw from.

    Raises:
        ValueError: no categories, or an empty one.
    """
    category = _names("categories", categories)
    latency = st.none() | st.floats(0.0, 30.0, allow_nan=False, allow_infinity=False)
    ok_status = st.none() | st.sampled_from((200, 201, 204)) | st.integers(100, 399)
    failed_status = st.none() | st.sampled_from(_NAMED_FAILURES) | st.integers(400, 599)
    successes = st.builds(ApiCall, category, st.just(True), ok_status, latency)
    failures = st.builds(ApiCall, category, st.just(False), failed_status, latency)
    return successes | failures


def observations(
    symbols: Sequence[str] = ("BTC-USD", "ETH-USD"),
    categories: Sequence[str] = ("orders", "accounts", "market"),
    *,
    feed: str | None = None,
) -> st.SearchStrategy[Observation]:
    """Every observation kind but the feed lifecycle (started, connected, disconnected,
    closed), with valid field values.

    Without ``feed`` no feed observation is drawn, so every value is accepted by a fresh
    layer. With ``feed``, the stream observations of that feed (`FeedMessage`, `SequenceGap`,
    `MessagesDropped`, `MalformedMessage`) are drawn too; the layer accepts them only while
    that feed is CONNECTED, so observe ``FeedStarted(feed)`` and ``FeedConnected(feed)`` first.

    Args:
        symbols: the symbols of marks and slippage checks.
        categories: the endpoint categories of API calls.
        feed: the feed of stream observations, or ``None`` for none.

    Raises:
        ValueError: no symbols or categories, an empty name, or an empty ``feed``.
    """
    symbol = _names("symbols", symbols)
    order_ids = st.lists(
        st.integers(1, 999_999).map(lambda n: f"ord-{n:06d}"), max_size=3, unique=True
    ).map(tuple)
    kinds: list[st.SearchStrategy[Any]] = [
        api_calls(categories),
        st.builds(RateLimitUsage, st.floats(0.0, 1.0, allow_nan=False)),
        st.builds(MarkUpdate, symbol),
        st.builds(SlippageCheck, symbol, st.booleans()),
        st.builds(ValidationCheck, st.booleans()),
        st.builds(PreviewResult, st.booleans()),
        st.builds(BrokerRead, st.sampled_from(("balances", "positions")), st.booleans()),
        st.builds(ReconciliationAudit, order_ids),
    ]
    if feed is not None:
        name = _names("feed", [feed])
        expected = st.integers(0, 10_000)
        kinds += [
            st.builds(FeedMessage, name),
            expected.flatmap(
                lambda e: st.builds(SequenceGap, name, st.just(e), st.integers(e + 1, e + 100))
            ),
            st.builds(MessagesDropped, name, st.integers(1, 100)),
            st.builds(MalformedMessage, name, st.text(max_size=20)),
        ]
    return st.one_of(kinds)


def fault_actions(
    *,
    exceptions: Sequence[BaseException | type[BaseException]] = DEFAULT_EXCEPTIONS,
    max_after_calls: int = 3,
    max_times: int = 3,
    max_delay: float = 0.01,
) -> st.SearchStrategy[FaultAction]:
    """`FaultAction` values that keep a broker's answers well-typed.

    Outcomes drawn: raise one of ``exceptions``; call through with an identity transform
    (the transform path, answers unchanged); or, when ``max_delay`` > 0, pure latency. Any of
    them may carry a delay. Canned return values and predicates are not drawn: a value of the
    wrong type, or an arbitrary predicate, is a bug in the test, not a venue fault; add those
    with `FaultPlan.add` yourself. A probability below 1 always comes with a seed, so a failing
    example replays. Pass a no-op ``sleep_func`` to `ChaosBroker` to skip the delays.

    Args:
        exceptions: classes or instances to raise (instances are raised as fresh copies).
        max_after_calls: the largest ``after_calls`` drawn.
        max_times: the largest finite ``times`` drawn (``None`` is drawn too).
        max_delay: the largest ``delay_seconds`` drawn; 0 draws no delay.

    Raises:
        ValueError: no exceptions, or a bound out of range.
    """
    if isinstance(max_after_calls, bool) or not isinstance(max_after_calls, int):
        raise ValueError(f"max_after_calls must be a whole number, got {max_after_calls!r}")
    if max_after_calls < 0:
        raise ValueError(f"max_after_calls must be >= 0, got {max_after_calls!r}")
    if isinstance(max_times, bool) or not isinstance(max_times, int) or max_times < 1:
        raise ValueError(f"max_times must be a whole number >= 1, got {max_times!r}")
    if isinstance(max_delay, bool) or not (
        isinstance(max_delay, int | float) and 0 <= max_delay < float("inf")
    ):
        raise ValueError(f"max_delay must be finite seconds >= 0, got {max_delay!r}")
    if isinstance(exceptions, str | bytes) or not exceptions:
        raise ValueError("exceptions must name at least one exception class or instance")
    for exc in exceptions:
        if not (
            isinstance(exc, BaseException)
            or (isinstance(exc, type) and issubclass(exc, BaseException))
        ):
            raise ValueError(f"exceptions must be exception classes or instances, got {exc!r}")
    kinds: tuple[str, ...] = ("raise", "transform")
    latencies = delays = st.just(0.0)
    if max_delay > 0:
        kinds += ("latency",)
        latencies = st.floats(0.0, float(max_delay), allow_nan=False, exclude_min=True)
        delays = st.just(0.0) | latencies

    @st.composite
    def draw_action(draw: st.DrawFn) -> FaultAction:
        after_calls = draw(st.integers(0, max_after_calls))
        times = draw(st.none() | st.integers(1, max_times))
        kind = draw(st.sampled_from(kinds))
        outcome: dict[str, Any] = {}
        if kind == "raise":
            outcome["raise_exc"] = draw(st.sampled_from(tuple(exceptions)))
        elif kind == "transform":
            outcome["transform"] = _unchanged
        delay = draw(latencies if kind == "latency" else delays)
        random_draws = draw(st.booleans())
        probability = draw(st.floats(0.0, 1.0, allow_nan=False)) if random_draws else 1.0
        seed = draw(st.integers(0, 2**32 - 1)) if random_draws else None
        return FaultAction(
            after_calls=after_calls,
            times=times,
            delay_seconds=delay,
            probability=probability,
            seed=seed,
            **outcome,
        )

    return draw_action()


def _unchanged(answer: Any) -> Any:
    return answer


def fault_plans(
    methods: Sequence[str] = BROKER_METHODS,
    *,
    max_actions: int = 3,
    actions: st.SearchStrategy[FaultAction] | None = None,
) -> st.SearchStrategy[FaultPlan]:
    """Fresh `FaultPlan` values over some of ``methods``, each with 1..``max_actions`` actions.

    Args:
        methods: the method names a plan may fault (by default the `Broker` protocol's);
            the broker wrapped must have every one.
        max_actions: the most actions per method.
        actions: the action strategy; `fault_actions()` by default.

    Raises:
        ValueError: no methods, or ``max_actions`` < 1.
    """
    method = _names("methods", methods)
    if isinstance(max_actions, bool) or not isinstance(max_actions, int) or max_actions < 1:
        raise ValueError(f"max_actions must be a whole number >= 1, got {max_actions!r}")
    per_method = st.lists(actions or fault_actions(), min_size=1, max_size=max_actions)

    @st.composite
    def draw_plan(draw: st.DrawFn) -> FaultPlan:
        plan = FaultPlan()
        for name in draw(st.lists(method, unique=True)):
            plan.add(name, draw(per_method))
        return plan

    return draw_plan()
