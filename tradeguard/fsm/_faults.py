"""The one fault rule: whose fault is a failed call to the venue's API (DESIGN §2.1, §2.3).

Every place that must tell the API's faults from the caller's asks `api_fault`: the
`tradeguard.fsm.events.ApiCall` observation (what api_health and the breakers count), the
shell's exception table (`tradeguard.io.faults`, which maps each client exception onto the
HTTP status it stands for and lets this rule judge it), order-submission retries and the chaos
harness. Nothing else writes the rule down.
"""

from __future__ import annotations

__all__ = ["TOO_MANY_REQUESTS", "api_fault"]

TOO_MANY_REQUESTS = 429
"""The one 4xx that is the API's fault: it refused because it is overloaded, not because the
request was wrong."""


def api_fault(status: int | None) -> bool:
    """Whether a failed call is the API's fault rather than the caller's.

    Args:
        status: the HTTP status of the failed call, or ``None`` when no answer arrived (a
            timeout or a connection failure).

    Returns:
        True for no answer, a 5xx or a 429: the venue may answer the same request another
        time, so it counts against the API's health and may be retried. False for any other
        status: a 4xx means the request itself was wrong (a bad key, too little money, an
        unknown order), and sending it again would fail again.
    """
    return status is None or status >= 500 or status == TOO_MANY_REQUESTS
