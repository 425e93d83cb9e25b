"""Observations: facts the shell saw, fed to `ReliabilityLayer.observe` (DESIGN §3).

Every observation is a small frozen value that checks itself when built and raises
`InvalidObservation` naming the bad field; the layer stamps its own clock, so none carries a
timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, final

from tradeguard.errors import InvalidObservation
from tradeguard.fsm._faults import api_fault

__all__ = [
    "ApiCall",
    "BrokerRead",
    "CancelFailed",
    "FeedClosed",
    "FeedConnected",
    "FeedDisconnected",
    "FeedMessage",
    "FeedStarted",
    "MalformedMessage",
    "MarkUpdate",
    "MessagesDropped",
    "Observation",
    "PreviewResult",
    "ProbeAbandoned",
    "RateLimitUsage",
    "ReconciliationAudit",
    "SequenceGap",
    "SlippageCheck",
    "ValidationCheck",
]


def _require_name(kind: str, field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidObservation(f"{kind}.{field} must be a non-empty string, got {value!r}")


def _require_bool(kind: str, field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidObservation(f"{kind}.{field} must be a bool, got {value!r}")


@final
@dataclass(frozen=True, slots=True)
class ApiCall:
    """One finished call to the broker API, as the shell saw it.

    Attributes:
        category: the endpoint category (``"orders"``, ``"accounts"``); one breaker each.
        ok: the call succeeded.
        status: the HTTP status, or ``None`` for a timeout or a connection failure.
        latency: seconds the call took, if known.
    """

    category: str
    ok: bool
    status: int | None = None
    latency: float | None = None

    def __post_init__(self) -> None:
        _require_name("ApiCall", "category", self.category)
        _require_bool("ApiCall", "ok", self.ok)
        if self.status is not None:
            if isinstance(self.status, bool) or not isinstance(self.status, int):
                raise InvalidObservation(f"ApiCall.status must be an int, got {self.status!r}")
            if not 100 <= self.status <= 599:
                raise InvalidObservation(f"ApiCall.status must be 100..599, got {self.status!r}")
            if self.ok and self.status >= 400:
                raise InvalidObservation(f"ApiCall.ok=True contradicts status {self.status}")
            if not self.ok and self.status < 400:
                raise InvalidObservation(f"ApiCall.ok=False contradicts status {self.status}")
        # `not x >= 0` also catches NaN, which `x < 0` would let through.
        if self.latency is not None and not (self.latency >= 0 and math.isfinite(self.latency)):
            raise InvalidObservation(f"ApiCall.latency must be >= 0 s, got {self.latency!r}")

    @property
    def counts_as_error(self) -> bool:
        """A fault of the API: 5xx, 429, a timeout or a connection failure (no status).

        A 4xx client error other than 429 is the caller's fault, not the API's (the one rule,
        `tradeguard.fsm.api_fault`).
        """
        return not self.ok and api_fault(self.status)


@final
@dataclass(frozen=True, slots=True)
class RateLimitUsage:
    """The share of the API rate limit in use, 0..1, as read from response headers.

    A reading ages out (the layer forgets it) once it is older than
    ``RISK_API_ERROR_RATE_WINDOW_SECONDS`` or, when the venue said when its limit resets,
    ``reset_after`` seconds after it was observed, whichever comes first.

    Attributes:
        usage: the share in use, 0..1.
        reset_after: seconds until the venue's limit window resets (``x-ratelimit-reset``),
            or ``None`` when the venue did not say.
    """

    usage: float
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.usage, bool) or not isinstance(self.usage, int | float):
            raise InvalidObservation(f"RateLimitUsage.usage must be a number, got {self.usage!r}")
        if not 0.0 <= self.usage <= 1.0:  # NaN fails both comparisons
            raise InvalidObservation(f"RateLimitUsage.usage must be 0..1, got {self.usage!r}")
        reset = self.reset_after
        if reset is not None and (
            isinstance(reset, bool)
            or not isinstance(reset, int | float)
            or not 0.0 <= reset < math.inf  # NaN fails both comparisons
        ):
            raise InvalidObservation(
                f"RateLimitUsage.reset_after must be finite seconds >= 0 or None, got {reset!r}"
            )


@final
@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """A fresh mark price arrived for ``symbol``."""

    symbol: str

    def __post_init__(self) -> None:
        _require_name("MarkUpdate", "symbol", self.symbol)


@final
@dataclass(frozen=True, slots=True)
class SlippageCheck:
    """The slippage guard's verdict on one order for ``symbol``."""

    symbol: str
    ok: bool

    def __post_init__(self) -> None:
        _require_name("SlippageCheck", "symbol", self.symbol)
        _require_bool("SlippageCheck", "ok", self.ok)


@final
@dataclass(frozen=True, slots=True)
class ValidationCheck:
    """Whether the validation infrastructure worked (an ordinary rejection is ``ok=True``)."""

    ok: bool

    def __post_init__(self) -> None:
        _require_bool("ValidationCheck", "ok", self.ok)


@final
@dataclass(frozen=True, slots=True)
class PreviewResult:
    """Whether an order preview call succeeded. Never counts as a validation failure."""

    ok: bool

    def __post_init__(self) -> None:
        _require_bool("PreviewResult", "ok", self.ok)


@final
@dataclass(frozen=True, slots=True)
class BrokerRead:
    """A balances or positions read finished."""

    kind: Literal["balances", "positions"]
    ok: bool

    def __post_init__(self) -> None:
        if self.kind not in ("balances", "positions"):
            raise InvalidObservation(
                f"BrokerRead.kind must be 'balances' or 'positions', got {self.kind!r}"
            )
        _require_bool("BrokerRead", "ok", self.ok)


@final
@dataclass(frozen=True, slots=True)
class ReconciliationAudit:
    """One audit of open orders: bot-owned orders at the broker unknown locally."""

    unknown_order_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.unknown_order_ids, tuple):
            raise InvalidObservation(
                "ReconciliationAudit.unknown_order_ids must be a tuple of str, "
                f"got {self.unknown_order_ids!r}"
            )
        for order_id in self.unknown_order_ids:
            _require_name("ReconciliationAudit", "unknown_order_ids[]", order_id)


@final
@dataclass(frozen=True, slots=True)
class FeedStarted:
    """The shell is opening ``feed`` for the first time (DISCONNECTED → CONNECTING)."""

    feed: str

    def __post_init__(self) -> None:
        _require_name("FeedStarted", "feed", self.feed)


@final
@dataclass(frozen=True, slots=True)
class FeedConnected:
    """``feed``'s connection opened and its subscriptions were sent."""

    feed: str

    def __post_init__(self) -> None:
        _require_name("FeedConnected", "feed", self.feed)


@final
@dataclass(frozen=True, slots=True)
class FeedDisconnected:
    """``feed``'s attempt failed or its open connection closed.

    Attributes:
        reason: why, for the record (``"close 1012"``, ``"handshake 503"``, ``"refused"``).
    """

    feed: str
    reason: str = ""

    def __post_init__(self) -> None:
        _require_name("FeedDisconnected", "feed", self.feed)
        if not isinstance(self.reason, str):
            raise InvalidObservation(f"FeedDisconnected.reason must be a str, got {self.reason!r}")


@final
@dataclass(frozen=True, slots=True)
class FeedMessage:
    """``feed`` received something (data or heartbeat): the stream is alive."""

    feed: str

    def __post_init__(self) -> None:
        _require_name("FeedMessage", "feed", self.feed)


@final
@dataclass(frozen=True, slots=True)
class FeedClosed:
    """``feed`` was shut down on purpose (terminal)."""

    feed: str

    def __post_init__(self) -> None:
        _require_name("FeedClosed", "feed", self.feed)


@final
@dataclass(frozen=True, slots=True)
class SequenceGap:
    """``feed`` skipped sequence numbers: ``expected`` was due, ``received`` arrived."""

    feed: str
    expected: int
    received: int

    def __post_init__(self) -> None:
        _require_name("SequenceGap", "feed", self.feed)
        for field in ("expected", "received"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidObservation(f"SequenceGap.{field} must be an int >= 0, got {value!r}")
        if self.received <= self.expected:
            raise InvalidObservation(
                f"SequenceGap.received must be past expected {self.expected}, got {self.received}"
            )


@final
@dataclass(frozen=True, slots=True)
class MessagesDropped:
    """The consumer of ``feed`` fell behind: ``count`` oldest messages were dropped."""

    feed: str
    count: int = 1

    def __post_init__(self) -> None:
        _require_name("MessagesDropped", "feed", self.feed)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidObservation(
                f"MessagesDropped.count must be an int >= 1, got {self.count!r}"
            )


@final
@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """``feed`` received something that is not a valid message; the stream goes on."""

    feed: str
    detail: str = ""

    def __post_init__(self) -> None:
        _require_name("MalformedMessage", "feed", self.feed)
        if not isinstance(self.detail, str):
            raise InvalidObservation(f"MalformedMessage.detail must be a str, got {self.detail!r}")


@final
@dataclass(frozen=True, slots=True)
class CancelFailed:
    """A cancel the layer asked for (`CancelOpenOrders`, `CancelOrders`) did not get through.

    The layer keeps it (in snapshots too) and asks for it again, as ``"retry: <reason>"``,
    as soon as the API answers again: a circuit breaker closes, or api_health leaves TRIPPED.

    Attributes:
        order_ids: the orders still to cancel, or ``None`` for every open bot order (the
            open orders could not even be listed).
        reason: the reason of the cancel that failed.
    """

    order_ids: tuple[str, ...] | None
    reason: str

    def __post_init__(self) -> None:
        ids = self.order_ids
        if ids is not None and (
            not isinstance(ids, tuple)
            or not ids
            or not all(isinstance(i, str) and i.strip() for i in ids)
        ):
            raise InvalidObservation(
                f"CancelFailed.order_ids must be None or a non-empty tuple of order ids, "
                f"got {ids!r}"
            )
        _require_name("CancelFailed", "reason", self.reason)


@final
@dataclass(frozen=True, slots=True)
class ProbeAbandoned:
    """A call admitted as a HALF_OPEN probe in ``category`` was given up before its outcome
    was known (its caller was cancelled, or the client raised a bug): its probe slot is freed
    and no failure is counted (the API said nothing)."""

    category: str

    def __post_init__(self) -> None:
        _require_name("ProbeAbandoned", "category", self.category)


Observation = (
    ApiCall
    | RateLimitUsage
    | MarkUpdate
    | SlippageCheck
    | ValidationCheck
    | PreviewResult
    | BrokerRead
    | ReconciliationAudit
    | FeedStarted
    | FeedConnected
    | FeedDisconnected
    | FeedMessage
    | FeedClosed
    | SequenceGap
    | MessagesDropped
    | MalformedMessage
    | CancelFailed
    | ProbeAbandoned
)
