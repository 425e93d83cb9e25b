"""`guarded_call` around a plain aiohttp client, over real sockets on 127.0.0.1 (DESIGN §5).

The hook is what a client that is neither ccxt nor ours uses: admission, one `ApiCall` per
request with its status and latency, rate-limit usage from the headers, the fault table for
exceptions, a critical alert for refused credentials, a freed HALF_OPEN probe slot.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio
import pytest
from seen import Seen

from tradeguard import GuardState, ReliabilityLayer, Settings
from tradeguard.fsm import BreakerState
from tradeguard.fsm.effects import Alert
from tradeguard.fsm.events import ProbeAbandoned, RateLimitUsage
from tradeguard.io import CircuitOpen, Runtime, guarded_call
from tradeguard.io.exchange import ExchangeRestServer, Market, Venue
from tradeguard.io.exchange.rest_server import API_PREFIX

pytestmark = pytest.mark.anyio


@dataclass
class Setup:
    server: ExchangeRestServer
    seen: Seen
    session: aiohttp.ClientSession
    sunk: list[Alert]

    def url(self, path: str) -> str:
        return self.server.url + API_PREFIX + path


@asynccontextmanager
async def setup(**knobs: object) -> AsyncIterator[Setup]:
    settings = Settings(**{"circuit_failure_threshold": 3, **knobs})  # type: ignore[arg-type]
    layer = ReliabilityLayer(settings, time.monotonic, rng=random.Random(0))
    venue = Venue(Market(["BTC-USD"], random.Random(1)), random.Random(2))
    sunk: list[Alert] = []
    async with (
        ExchangeRestServer(venue, rng=random.Random(3)) as server,
        Runtime(layer, alert_sinks=(sunk.append,)) as runtime,
        aiohttp.ClientSession() as session,
    ):
        yield Setup(server, Seen(runtime), session, sunk)


async def get(s: Setup, path: str, category: str = "market") -> int:
    async with (
        guarded_call(s.seen, category) as call,
        s.session.get(s.url(path)) as resp,
    ):
        call.response(resp.status, resp.headers)
        await resp.read()
        resp.raise_for_status()
        return resp.status


async def test_a_success_reports_status_latency_and_usage() -> None:
    async with setup() as s:
        s.server.set_usage(0.25)
        s.server.set_latency(0.05)
        assert await get(s, "/time") == 200
        (call,) = s.seen.calls()
        assert (call.category, call.ok, call.status) == ("market", True, 200)
        assert call.latency is not None and call.latency >= 0.05
        assert s.seen.usages() == [pytest.approx(0.25)]


async def test_a_success_reports_the_venues_reset_so_the_reading_ages_out() -> None:
    async with setup() as s:
        s.server.set_usage(0.95)  # over the threshold on a success
        assert await get(s, "/time") == 200
        (usage,) = [o for o in s.seen.observed if isinstance(o, RateLimitUsage)]
        # The simulator's x-ratelimit-reset is epoch seconds, one second ahead (whole seconds).
        assert usage.usage == pytest.approx(0.95)
        assert usage.reset_after is not None and 0.0 <= usage.reset_after <= 1.0
        assert s.seen.layer.guard("api_health").state is GuardState.TRIPPED
        due = s.seen.layer.next_deadline()
        assert due is not None and due <= time.monotonic() + 1.0


async def test_a_503_storm_is_one_api_call_per_request_and_raises_unchanged() -> None:
    async with setup() as s:
        s.server.error_storm(1.0, 503)
        for _ in range(3):
            with pytest.raises(aiohttp.ClientResponseError):
                await get(s, "/time")
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, 503)] * 3
        assert s.server.request_counts["time"] == 3
        assert s.seen.layer.breaker_state("market") is BreakerState.OPEN
        # OPEN: refused before the block runs; the server sees nothing, nothing is reported.
        with pytest.raises(CircuitOpen):
            await get(s, "/time")
        assert s.server.request_counts["time"] == 3
        assert len(s.seen.calls()) == 3


async def test_a_429_reports_usage_from_its_headers() -> None:
    async with setup() as s:
        s.server.rate_limited()
        with pytest.raises(aiohttp.ClientResponseError):
            await get(s, "/accounts", "accounts")
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, 429)]
        assert s.seen.usages() == [1.0]


async def test_a_refused_connection_is_classified_by_the_table() -> None:
    async with setup() as s:
        url = s.server.url
        await s.server.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with guarded_call(s.seen, "market"), s.session.get(url + "/x"):
                pass
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, None)]


async def test_a_401_raises_a_critical_alert() -> None:
    async with setup() as s:
        async with guarded_call(s.seen, "accounts") as call:
            call.response(401, {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9"})
        assert [(c.ok, c.status) for c in s.seen.calls()] == [(False, 401)]
        (alert,) = s.seen.alerts
        assert alert.severity == "critical" and "credentials" in alert.title
        with anyio.fail_after(2):
            while not s.sunk:  # the runtime ran it like any alert effect
                await anyio.sleep(0.005)
        assert s.sunk == [alert]


async def test_a_bug_in_the_block_is_not_reported() -> None:
    async with setup() as s:
        with pytest.raises(KeyError):
            async with guarded_call(s.seen, "market"):
                raise KeyError("parsing bug")
        assert s.seen.calls() == []


async def test_a_cancelled_half_open_probe_frees_its_slot() -> None:
    async with setup(circuit_recovery_timeout=0.05, circuit_success_threshold=1) as s:
        s.server.error_storm(1.0, 503)
        for _ in range(3):
            with pytest.raises(aiohttp.ClientResponseError):
                await get(s, "/time")
        s.server.error_storm(0.0)
        with anyio.fail_after(2):
            while s.seen.layer.breaker_state("market") is not BreakerState.HALF_OPEN:
                await anyio.sleep(0.01)  # the runtime's timer moves it (an eager timer)
        s.server.hang()
        s.seen.forget()
        with anyio.move_on_after(0.1):
            await get(s, "/time")  # the probe, abandoned by its caller
        s.server.hang(False)
        # Issue 12: the slot is freed by an explicit observation, not a fake failed call, so
        # no failure is counted and the breaker stays HALF_OPEN with its slot free again.
        assert s.seen.observed == [ProbeAbandoned("market")]
        assert s.seen.layer.breaker_state("market") is BreakerState.HALF_OPEN
        assert await get(s, "/time") == 200
        assert s.seen.layer.breaker_state("market") is BreakerState.CLOSED


async def test_response_rejects_a_non_status() -> None:
    async with setup() as s:
        with pytest.raises(ValueError, match=r"HTTP status 100\.\.599, got 42"):
            async with guarded_call(s.seen, "market") as call:
                call.response(42)
