"""`guarded_call`: put the reliability layer in front of any API client, one request at a time.

Theory of operation (DESIGN §2.3, §5; STYLE §2 "faults become observations at the edge"). For
a client that is neither ccxt (see `tradeguard.io.CcxtBroker`) nor ours, wrap each HTTP request
in ``async with guarded_call(runtime, category) as call:`` and tell ``call`` what came back:

1. Ask first. Entering asks the category's breaker (``layer.admit``); a refusal raises
   `CircuitOpen` before the block runs, so nothing touches the network and nothing is observed.
2. Time it. Latency runs from entering to leaving, on the event loop's clock
   (``anyio.current_time()``), not the layer's (which a test may drive by hand).
3. One request, one report. Leaving reports exactly one ``ApiCall(category, ok, status,
   latency)``: the status given to ``call.response``; or, when the block raised, what the
   shell's fault table (`tradeguard.io.faults.classify`) makes of the exception. Then
   ``RateLimitUsage`` from the response's rate-limit headers, on a success as on a failure (a
   429 without them counts as the limit used up), with the venue's reset time
   (``x-ratelimit-reset``) as ``reset_after`` so the reading ages out when the venue's window
   does. An exception that is a bug rather than the venue is not reported.
4. Credentials. A 401, or an exception the table marks as a refused credential, also raises a
   critical `Alert` through the sink's ``alert`` (a `Runtime` has one): a revoked key must not
   read as a quiet outage.
5. Cancellation passes through, unreported, except for a HALF_OPEN probe: a probe slot is
   freed only by an observation, so an abandoned probe is reported as `ProbeAbandoned` (the
   slot is freed, no failure is counted: the API said nothing) instead of blocking the
   category.

The block's exception always propagates unchanged; translate it after the block.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Protocol, final, runtime_checkable

import anyio

from tradeguard.fsm import BreakerState, ReliabilityLayer
from tradeguard.fsm.effects import Alert, Effect
from tradeguard.fsm.events import ApiCall, Observation, ProbeAbandoned, RateLimitUsage
from tradeguard.io.broker import CircuitOpen
from tradeguard.io.faults import classify

__all__ = [
    "AlertSink",
    "GuardedCall",
    "ObservationSink",
    "guarded_call",
    "rate_limit_reset",
    "rate_limit_usage",
]

log = logging.getLogger("tradeguard.io.guarded")

_TOO_MANY_REQUESTS = 429
_UNAUTHORIZED = 401

# Reset headers, most specific first: Coinbase's is epoch seconds, the IETF draft's a delta.
_RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset")
# A reset value at least this large is an epoch time (2001-09-09), not a delta in seconds.
_EPOCH_RESET = 1e9

# Limit and remaining headers, most specific first: Coinbase (and most venues) send
# ``x-ratelimit-*``; the IETF draft names them ``ratelimit-*``.
_LIMIT_HEADERS = (
    ("x-ratelimit-limit", "x-ratelimit-remaining"),
    ("ratelimit-limit", "ratelimit-remaining"),
)


class ObservationSink(Protocol):
    """What a guarded call reports to: a `tradeguard.io.Runtime` is one."""

    @property
    def layer(self) -> ReliabilityLayer:
        """The layer whose breakers admit each call."""
        ...

    def observe(self, observation: Observation) -> list[Effect]:
        """Apply one observation now."""
        ...


@runtime_checkable
class AlertSink(Protocol):
    """A sink that can also take an alert (a `Runtime` can: `Runtime.alert`)."""

    def alert(self, alert: Alert) -> None:
        """Queue ``alert`` for the alert sinks."""
        ...


@final
class GuardedCall:
    """The handle `guarded_call` yields: tell it what the venue answered.

    Attributes:
        category: the breaker category the call was admitted in.
        status: the status given to `response`, or ``None`` before it.
        headers: the response headers given to `response` (lower-cased names).
    """

    __slots__ = ("category", "headers", "status")

    def __init__(self, category: str) -> None:
        self.category = category
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    def response(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Record the HTTP answer: its status and (for rate-limit usage) its headers.

        Call it once the status line arrived, before raising on a bad status, so the real
        status is reported rather than what the exception stands for. A later call replaces
        an earlier one (a client that followed a redirect).

        Raises:
            ValueError: ``status`` is not an HTTP status (100..599).
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"response status must be an HTTP status 100..599, got {status!r}")
        self.status = status
        self.headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()}


@asynccontextmanager
async def guarded_call(sink: ObservationSink, category: str) -> AsyncIterator[GuardedCall]:
    """Admit, time, classify and report one HTTP request to the reliability layer.

    Example::

        async with guarded_call(runtime, "orders") as call:
            async with session.post(url, json=body) as resp:
                call.response(resp.status, resp.headers)
                resp.raise_for_status()
                answer = await resp.json()

    A block that leaves without ``call.response`` and without raising is reported as a
    success with no status (the client hid it).

    Args:
        sink: where the observations go and whose layer admits the call (a `Runtime`).
        category: the breaker category: ``"orders"``, ``"accounts"``, ``"market"``...

    Yields:
        The call's handle; give it the response with `GuardedCall.response`.

    Raises:
        CircuitOpen: the breaker refused the call; the block did not run.
    """
    layer = sink.layer
    if not layer.admit(category):
        raise CircuitOpen(category)
    probing = layer.breaker_state(category) is BreakerState.HALF_OPEN
    call = GuardedCall(category)
    started = anyio.current_time()
    try:
        yield call
    except anyio.get_cancelled_exc_class():
        if probing:
            _free_probe(sink, category)
        raise
    except Exception as exc:
        latency = anyio.current_time() - started
        failure = classify(exc, call.status)
        if failure is None:
            # A bug, not the venue: nothing to report, but a probe slot must not leak.
            if probing:
                _free_probe(sink, category)
            raise
        _report(sink, ApiCall(category, False, failure.status, latency))
        _report_usage(sink, call)
        if failure.credentials:
            _alert_credentials(sink, category, failure.status, exc)
        raise
    latency = anyio.current_time() - started
    status = call.status
    if status is None:
        _report(sink, ApiCall(category, True, None, latency))
        return
    ok = 200 <= status < 300
    # ApiCall cannot carry ok=False with a status below 400: a 1xx or 3xx left unfollowed is no
    # usable answer, reported like a failed connection.
    _report(sink, ApiCall(category, ok, status if ok or status >= 400 else None, latency))
    _report_usage(sink, call)
    if status == _UNAUTHORIZED:
        _alert_credentials(sink, category, status, None)


def rate_limit_usage(headers: Mapping[str, str]) -> float | None:
    """The share of the rate limit in use, ``1 - remaining / limit``, clamped to 0..1.

    Reads ``x-ratelimit-limit``/``x-ratelimit-remaining`` (Coinbase's; its ``-reset`` says
    when the window ends: see `rate_limit_reset`), else the IETF draft's
    ``ratelimit-limit``/``ratelimit-remaining`` (whose values may carry a policy after a
    comma or semicolon: ``100, 100;w=60``). Names are matched case-insensitively.

    Returns:
        ``None`` unless a limit (> 0) and a remaining count (>= 0) parse: an advisory header
        that does not parse must not fail a call that succeeded.
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for limit_name, remaining_name in _LIMIT_HEADERS:
        limit = _leading_number(lowered.get(limit_name))
        remaining = _leading_number(lowered.get(remaining_name))
        if limit is not None and remaining is not None and limit > 0 and remaining >= 0:
            return min(1.0, max(0.0, 1.0 - remaining / limit))
    return None


def rate_limit_reset(headers: Mapping[str, str], wall_now: float) -> float | None:
    """Seconds until the venue's rate-limit window resets, from the response headers.

    Reads ``x-ratelimit-reset`` else the IETF draft's ``ratelimit-reset``. A value of at least
    1e9 is an epoch time in seconds (Coinbase's, GitHub's) and is measured from ``wall_now``;
    a smaller one is already a delta in seconds (the draft's). Names are matched
    case-insensitively.

    Args:
        headers: the response headers.
        wall_now: the wall-clock time (``time.time()``) the response arrived.

    Returns:
        Seconds >= 0 (a reset already past is 0), or ``None`` when no reset header parses.
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in _RESET_HEADERS:
        value = _leading_number(lowered.get(name))
        if value is not None and value >= 0:
            return max(0.0, value - wall_now) if value >= _EPOCH_RESET else value
    return None


def _leading_number(value: str | None) -> float | None:
    if value is None:
        return None
    head = value.replace(";", ",").split(",", 1)[0].strip()
    try:
        number = float(head)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _report_usage(sink: ObservationSink, call: GuardedCall) -> None:
    usage = rate_limit_usage(call.headers)
    if usage is None and call.status == _TOO_MANY_REQUESTS:
        usage = 1.0  # refused for the rate limit, and it did not say how far over: all used
    if usage is not None:
        reset_after = rate_limit_reset(call.headers, time.time())
        _report(sink, RateLimitUsage(usage, reset_after=reset_after))


def _report(sink: ObservationSink, observation: Observation) -> None:
    try:
        sink.observe(observation)
    except RuntimeError:
        # A call that finished after its runtime closed (a cancel queued just before the close
        # runs then): there is no layer left to tell. Anything else is not ours to hide.
        if getattr(sink, "closed", False) is not True:
            raise
        log.debug("not reported, the runtime closed: %r", observation)


def _alert_credentials(
    sink: ObservationSink, category: str, status: int | None, exc: BaseException | None
) -> None:
    where = "no response" if status is None else f"HTTP {status}"
    why = "" if exc is None else f": {type(exc).__name__}: {exc}"
    alert = Alert(
        "critical",
        "API credentials refused",
        f"{category}: {where}{why}; check the API key (revoked, wrong secret, missing permission)",
    )
    if isinstance(sink, AlertSink):
        sink.alert(alert)
    else:  # a bare sink (a recorder): the alert must still be seen somewhere
        log.critical("ALERT %s: %s", alert.title, alert.detail)


def _free_probe(sink: ObservationSink, category: str) -> None:
    # A HALF_OPEN probe slot is freed only by an observation; a slot never freed would leave
    # the breaker refusing every call for good. The API said nothing: no failure is counted.
    with contextlib.suppress(RuntimeError):  # the runtime already closed: nothing to heal
        sink.observe(ProbeAbandoned(category))
