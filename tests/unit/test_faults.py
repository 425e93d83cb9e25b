"""The one fault rule (`tradeguard.fsm.api_fault`) and the shell's table mapped onto it."""

from __future__ import annotations

import aiohttp
import ccxt.async_support as ccxt
import pytest

from tradeguard.fsm import api_fault
from tradeguard.fsm.events import ApiCall
from tradeguard.io.broker import BrokerError, CircuitOpen
from tradeguard.io.faults import CCXT_FAULTS, Failure, classify
from tradeguard.io.guarded import rate_limit_reset, rate_limit_usage
from tradeguard.testing.chaos import _reported_failure

# ---------------------------------------------------------------------- the core rule


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        *[(None, True), (500, True), (503, True), (599, True), (429, True)],
        *[(400, False), (401, False), (403, False), (404, False), (409, False), (422, False)],
    ],
)
def test_api_fault_is_no_answer_5xx_or_429(status: int | None, fault: bool) -> None:
    assert api_fault(status) is fault


@pytest.mark.parametrize("status", [None, 400, 401, 404, 429, 500, 503])
def test_api_call_counts_errors_by_the_one_rule(status: int | None) -> None:
    assert ApiCall("orders", False, status).counts_as_error is api_fault(status)
    assert not ApiCall("orders", True, 200).counts_as_error


# ---------------------------------------------------------------------- the ccxt table

API_FAULTS = [
    (ccxt.RequestTimeout, None),
    (ccxt.NetworkError, None),
    (ccxt.ExchangeNotAvailable, None),
    (ccxt.OnMaintenance, 503),
    (ccxt.DDoSProtection, 429),
    (ccxt.RateLimitExceeded, 429),
]
CALLER_FAULTS = [
    (ccxt.AuthenticationError, 401),
    (ccxt.PermissionDenied, 403),
    (ccxt.InsufficientFunds, 400),
    (ccxt.InvalidOrder, 400),
    (ccxt.BadRequest, 400),
    (ccxt.OrderNotFound, 404),
]


@pytest.mark.parametrize(("kind", "status"), API_FAULTS)
def test_ccxt_network_errors_are_the_apis_fault(kind: type[Exception], status: int | None) -> None:
    failure = classify(kind("boom"))
    assert failure == Failure(status)
    assert failure.api_fault and not failure.credentials


@pytest.mark.parametrize(("kind", "status"), CALLER_FAULTS)
def test_ccxt_request_errors_are_the_callers_fault(kind: type[Exception], status: int) -> None:
    failure = classify(kind("no"))
    assert failure is not None and failure.status == status
    assert not failure.api_fault


@pytest.mark.parametrize("kind", [ccxt.AuthenticationError, ccxt.PermissionDenied])
def test_refused_credentials_are_marked_for_an_alert(kind: type[Exception]) -> None:
    failure = classify(kind("key revoked"))
    assert failure is not None and failure.credentials


def test_table_lists_the_most_specific_class_first() -> None:
    kinds = [kind for kind, _ in CCXT_FAULTS]
    for i, kind in enumerate(kinds):
        for later in kinds[i + 1 :]:
            assert not issubclass(later, kind), f"{later.__name__} is shadowed by {kind.__name__}"
    listed = {kind for kind, _ in API_FAULTS + CALLER_FAULTS}
    assert listed == set(kinds)


def test_the_real_status_wins_over_what_the_exception_stands_for() -> None:
    # ccxt raised ExchangeNotAvailable for a 502: the 502 is reported.
    assert classify(ccxt.ExchangeNotAvailable("x"), answered=502) == Failure(502)
    # A 401 is a refused credential whatever ccxt made of it.
    assert classify(ccxt.ExchangeError("x"), answered=401) == Failure(401, credentials=True)
    # A 2xx whose body said "insufficient funds": the table speaks.
    assert classify(ccxt.InsufficientFunds("x"), answered=200) == Failure(400)


def test_unlisted_ccxt_errors_are_a_refusal_when_answered_else_no_answer() -> None:
    assert classify(ccxt.ExchangeError("body said no"), answered=200) == Failure(400)
    assert classify(ccxt.ExchangeError("aiohttp failed")) == Failure(None)


def test_outside_ccxt() -> None:
    assert classify(BrokerError("orders", 503, "busy")) == Failure(503)
    assert classify(BrokerError("orders", None, "timeout")) == Failure(None)
    assert classify(TimeoutError()) == Failure(None)
    assert classify(ConnectionResetError()) == Failure(None)
    assert classify(aiohttp.ServerDisconnectedError()) == Failure(None)
    assert classify(CircuitOpen("orders")) is None  # nothing was sent
    assert classify(KeyError("bug")) is None  # a bug, not the venue


def test_chaos_harness_reports_by_the_same_table() -> None:
    assert _reported_failure(ccxt.RateLimitExceeded("slow down")) == (True, 429)
    assert _reported_failure(ccxt.InvalidOrder("bad size")) == (True, 400)
    assert _reported_failure(CircuitOpen("orders")) == (False, None)
    assert _reported_failure(ValueError("bug")) == (False, None)


def test_failure_rejects_a_status_that_is_no_failure() -> None:
    with pytest.raises(ValueError, match=r"Failure\.status must be 400\.\.599 or None, got 200"):
        Failure(200)


# ---------------------------------------------------------------------- rate-limit headers


def test_rate_limit_usage_reads_coinbase_and_generic_headers() -> None:
    coinbase = {"X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "1"}
    assert rate_limit_usage(coinbase) == pytest.approx(0.9)
    assert rate_limit_usage({"RateLimit-Limit": "100, 100;w=60", "RateLimit-Remaining": "25"}) == (
        pytest.approx(0.75)
    )
    assert rate_limit_usage({"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0"}) is None
    assert rate_limit_usage({"x-ratelimit-limit": "ten", "x-ratelimit-remaining": "1"}) is None
    assert rate_limit_usage({}) is None
    assert rate_limit_usage({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "20"}) == 0.0


def test_rate_limit_reset_reads_epoch_and_delta_headers() -> None:
    now = 1_700_000_000.0
    assert rate_limit_reset({"X-RateLimit-Reset": str(int(now) + 2)}, now) == 2.0
    assert rate_limit_reset({"x-ratelimit-reset": str(int(now) - 5)}, now) == 0.0  # past: now
    assert rate_limit_reset({"RateLimit-Reset": "7"}, now) == 7.0  # the IETF draft: a delta
    assert rate_limit_reset({"x-ratelimit-reset": "soon"}, now) is None
    assert rate_limit_reset({"x-ratelimit-reset": "-1"}, now) is None
    assert rate_limit_reset({}, now) is None
