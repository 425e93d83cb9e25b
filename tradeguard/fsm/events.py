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
from tradeguard.fsm._states import TradingMode

__all__ = [
    "PEER_GUARDS",
    "ApiCall",
    "BrokerRead",
    "CancelFailed",
    "FeedClosed",
    "FeedConnected",
    "FeedDisconnected",
    "FeedMessage",
    "FeedStarted",
    "FleetJoined",
    "FleetLink",
    "FleetSynced",
    "MalformedMessage",
    "MarkUpdate",
    "MessagesDropped",
    "Observation",
    "PeerHeartbeat",
    "PeerLifted",
    "PeerRestriction",
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
    """``feed`` received something (data or heartbeat): the stream is alive.

    ``count``: how many messages this reports (a shell may report a batch it just read at
    once: the stream was alive when the last of them arrived, a moment ago).
    """

    feed: str
    count: int = 1

    def __post_init__(self) -> None:
        _require_name("FeedMessage", "feed", self.feed)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidObservation(f"FeedMessage.count must be an int >= 1, got {self.count!r}")


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


# ---------------------------------------------------------------------- fleet (DESIGN §7)

PEER_GUARDS: dict[str, Literal["global", "symbol", "any"]] = {
    "api_health": "global",
    "broker_outage": "global",
    "reconciliation": "global",
    "validation": "global",
    "websocket": "global",
    "mark_staleness": "symbol",
    "slippage": "symbol",
    "operator": "any",
}
"""The guards a peer may share, with the scope each takes: every guard that restricts, and the
operator halt. Not ``preview`` (it never restricts) nor ``fleet`` (a member's own link)."""

# The states a shared restriction can be in: a guard's (NO_MARK is local knowledge), a halt's.
_PEER_STATES = frozenset({"TRIPPED", "COOLDOWN", "HALTED", "REDUCED"})


def _require_member(kind: str, member: object) -> None:
    _require_name(kind, "member", member)
    if not isinstance(member, str) or "|" in member or any(c.isspace() for c in member):
        raise InvalidObservation(
            f"{kind}.member must be a name without blanks or '|', got {member!r}"
        )


def _require_wall_time(kind: str, field: str, value: object) -> None:
    # `not math.isfinite` also refuses NaN; a bool is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidObservation(
            f"{kind}.{field} must be a finite wall-clock time in seconds, got {value!r}"
        )


def _require_peer_scope(kind: str, guard: object, scope: object) -> None:
    if not isinstance(guard, str) or guard not in PEER_GUARDS:
        raise InvalidObservation(
            f"{kind}.guard must be one of: {', '.join(sorted(PEER_GUARDS))}; got {guard!r}"
        )
    if scope is not None:
        _require_name(kind, "scope", scope)
    takes = PEER_GUARDS[guard]
    if takes == "global" and scope is not None:
        raise InvalidObservation(f"{kind}: guard {guard!r} is global, got scope {scope!r}")
    if takes == "symbol" and scope is None:
        raise InvalidObservation(f"{kind}: guard {guard!r} is per symbol, got scope None")


@final
@dataclass(frozen=True, slots=True)
class FleetJoined:
    """The shell attached this layer to a fleet as ``member``.

    From now on the global ``fleet`` guard restricts (REDUCE_ONLY, UNSYNCED) until
    `FleetSynced`. Joining again (a reconnect) changes nothing but the member name.
    """

    member: str

    def __post_init__(self) -> None:
        _require_member("FleetJoined", self.member)


@final
@dataclass(frozen=True, slots=True)
class FleetSynced:
    """The shell read every restriction in force and follows the stream of changes.

    UNSYNCED -> HEALTHY; TRIPPED -> COOLDOWN (``GPT_TRADER_FLEET_MEMBER_TTL_SECONDS``). A sync
    is only possible over a live link, so it also counts as ``FleetLink(up=True)``.
    """


@final
@dataclass(frozen=True, slots=True)
class FleetLink:
    """The state of the connection to Redis: ``up=False`` starts the grace period
    (``GPT_TRADER_FLEET_LOST_GRACE_SECONDS``) after which the ``fleet`` guard trips;
    ``up=True`` ends it (recovering from a trip still needs `FleetSynced`)."""

    up: bool

    def __post_init__(self) -> None:
        _require_bool("FleetLink", "up", self.up)


@final
@dataclass(frozen=True, slots=True)
class PeerRestriction:
    """A restriction a peer's guard or operator has in force, to apply here too.

    Attributes:
        member: the peer that has it.
        guard: the peer's guard (one of `PEER_GUARDS`), or ``"operator"`` for a halt.
        scope: the symbol, or ``None`` for global (must fit the guard).
        mode: REDUCE_ONLY or PAUSED (nothing from a peer can allow).
        state: the peer's state: ``TRIPPED``, ``COOLDOWN``, ``HALTED`` or ``REDUCED``.
        lifts_at: the wall-clock time it lifts, ``None`` while open-ended (TRIPPED, or a halt
            without ttl). COOLDOWN needs one; TRIPPED has none.
        heartbeat_at: the peer's last heartbeat, wall clock.
    """

    member: str
    guard: str
    scope: str | None
    mode: TradingMode
    state: str
    lifts_at: float | None
    heartbeat_at: float

    def __post_init__(self) -> None:
        kind = "PeerRestriction"
        _require_member(kind, self.member)
        _require_peer_scope(kind, self.guard, self.scope)
        if type(self.mode) is not TradingMode or self.mode is TradingMode.ALLOW:
            raise InvalidObservation(
                f"{kind}.mode must be TradingMode.REDUCE_ONLY or TradingMode.PAUSED (nothing "
                f"from a peer loosens), got {self.mode!r}"
            )
        if not isinstance(self.state, str) or self.state not in _PEER_STATES:
            raise InvalidObservation(
                f"{kind}.state must be one of: {', '.join(sorted(_PEER_STATES))}; "
                f"got {self.state!r}"
            )
        if self.lifts_at is not None:
            _require_wall_time(kind, "lifts_at", self.lifts_at)
        if self.state == "COOLDOWN" and self.lifts_at is None:
            raise InvalidObservation(f"{kind}.lifts_at must be a time in COOLDOWN, got None")
        if self.state == "TRIPPED" and self.lifts_at is not None:
            raise InvalidObservation(
                f"{kind}.lifts_at must be None while TRIPPED, got {self.lifts_at!r}"
            )
        _require_wall_time(kind, "heartbeat_at", self.heartbeat_at)


@final
@dataclass(frozen=True, slots=True)
class PeerLifted:
    """A peer lifted its restriction ``(member, guard, scope)``: it lifts here at once."""

    member: str
    guard: str
    scope: str | None

    def __post_init__(self) -> None:
        _require_member("PeerLifted", self.member)
        _require_peer_scope("PeerLifted", self.guard, self.scope)


@final
@dataclass(frozen=True, slots=True)
class PeerHeartbeat:
    """A peer's heartbeat, at wall-clock time ``at``: the peer is alive."""

    member: str
    at: float

    def __post_init__(self) -> None:
        _require_member("PeerHeartbeat", self.member)
        _require_wall_time("PeerHeartbeat", "at", self.at)


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
    | FleetJoined
    | FleetSynced
    | FleetLink
    | PeerRestriction
    | PeerLifted
    | PeerHeartbeat
)
