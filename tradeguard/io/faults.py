"""The shell's fault table: what a client's exception says about the call that raised it.

Theory of operation. The core owns the one rule (`tradeguard.fsm.api_fault`: no answer, a 5xx
or a 429 is the API's fault; any other 4xx is the caller's). This module does not repeat it: it
maps each exception a venue client raises onto the HTTP status that exception stands for, and
the rule judges that status. So `classify` answers "what would this failure have been, as an
HTTP answer", and `Failure.api_fault` answers "whose fault is that", in one place.

The real status wins: when a response arrived with a 4xx or 5xx, that status is reported
whatever exception the client made of it. The table speaks only when no usable status is known
(a timeout, a refused connection, or a 2xx whose body said it failed).

ccxt's classes, most specific first (``ccxt/base/errors.py``: ``OnMaintenance`` is an
``ExchangeNotAvailable``, ``PermissionDenied`` an ``AuthenticationError``, ``OrderNotFound`` an
``InvalidOrder``, and every network error a ``NetworkError``):

======================  ===========  =========================================
ccxt class              stands for   whose fault
======================  ===========  =========================================
OnMaintenance           503          the API's
ExchangeNotAvailable    no answer    the API's
DDoSProtection          429          the API's
RateLimitExceeded       429          the API's
RequestTimeout          no answer    the API's
NetworkError            no answer    the API's
PermissionDenied        403          the caller's (credentials: a critical alert)
AuthenticationError     401          the caller's (credentials: a critical alert)
InsufficientFunds       400          the caller's
OrderNotFound           404          the caller's
InvalidOrder            400          the caller's
BadRequest              400          the caller's
======================  ===========  =========================================

Outside the table: a `BrokerError` stands for its own status; ``OSError`` (``TimeoutError``
included) and ``aiohttp.ClientError`` for no answer; any other ccxt error for a 400 when the
venue answered (it refused the request in the body) and for no answer when it did not. Any
other exception is a bug, not the venue: `classify` returns ``None`` and nothing is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import aiohttp

from tradeguard.fsm import api_fault
from tradeguard.io.broker import BrokerError, CircuitOpen

try:
    from ccxt.base import errors as _ccxt
except ImportError:  # ccxt is an extra: without it no ccxt exception can ever be raised
    _ccxt = None

__all__ = ["CCXT_FAULTS", "Failure", "classify", "credentials_refused"]

_UNAUTHORIZED = 401


@final
@dataclass(frozen=True, slots=True)
class Failure:
    """What one failed call means, as an HTTP answer.

    Attributes:
        status: the status to report (400..599), or ``None`` for no answer.
        credentials: the venue refused our credentials (a revoked or wrong key): worth a
            critical alert, never a quiet outage.
    """

    status: int | None
    credentials: bool = False

    def __post_init__(self) -> None:
        status = self.status
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599
        ):
            raise ValueError(f"Failure.status must be 400..599 or None, got {status!r}")

    @property
    def api_fault(self) -> bool:
        """Whether the API is to blame (the core's rule, `tradeguard.fsm.api_fault`)."""
        return api_fault(self.status)


def _ccxt_table() -> tuple[tuple[type[BaseException], Failure], ...]:
    if _ccxt is None:
        return ()
    return (
        # The API's faults.
        (_ccxt.OnMaintenance, Failure(503)),
        (_ccxt.ExchangeNotAvailable, Failure(None)),
        (_ccxt.DDoSProtection, Failure(429)),
        (_ccxt.RateLimitExceeded, Failure(429)),
        (_ccxt.RequestTimeout, Failure(None)),
        (_ccxt.NetworkError, Failure(None)),
        # The caller's.
        (_ccxt.PermissionDenied, Failure(403, credentials=True)),
        (_ccxt.AuthenticationError, Failure(401, credentials=True)),
        (_ccxt.InsufficientFunds, Failure(400)),
        (_ccxt.OrderNotFound, Failure(404)),
        (_ccxt.InvalidOrder, Failure(400)),
        (_ccxt.BadRequest, Failure(400)),
    )


CCXT_FAULTS: Sequence[tuple[type[BaseException], Failure]] = _ccxt_table()
"""ccxt exception class → what it stands for, most specific first (empty without ccxt)."""


def classify(exc: BaseException, answered: int | None = None) -> Failure | None:
    """What a raised exception says about the call, or ``None`` when it is no venue failure.

    Args:
        exc: what the client raised.
        answered: the HTTP status of the response, when one arrived; a 4xx or 5xx is reported
            as it is, whatever the exception.

    Returns:
        The failure to report, or ``None`` for `CircuitOpen` (nothing was sent) and for
        exceptions that are bugs rather than the venue's answer.
    """
    if isinstance(exc, CircuitOpen):
        return None
    row = next((meaning for kind, meaning in CCXT_FAULTS if isinstance(exc, kind)), None)
    credentials = answered == _UNAUTHORIZED or (row is not None and row.credentials)
    if answered is not None and 400 <= answered <= 599:
        return Failure(answered, credentials)
    if row is not None:
        return row
    if isinstance(exc, BrokerError):
        status = exc.status
        return Failure(status if status is not None and 400 <= status <= 599 else None)
    if isinstance(exc, OSError | aiohttp.ClientError):  # TimeoutError is an OSError
        return Failure(None)
    if _ccxt is not None and isinstance(exc, _ccxt.BaseError):
        # The venue answered, yet the client saw a failure in the body: a refusal.
        refused = answered is not None and isinstance(exc, _ccxt.ExchangeError)
        return Failure(400 if refused else None)
    return None


def credentials_refused(failure: Failure | None) -> bool:
    """Whether ``failure`` is the venue refusing our credentials."""
    return failure is not None and failure.credentials
