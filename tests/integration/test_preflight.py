"""Preflight against the embedded exchange: every check, its faults, exit codes, the report."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import ccxt.async_support as ccxt
import pytest

from tradeguard import GuardState, ReliabilityLayer, Settings, TradingMode
from tradeguard.io.exchange import ExchangeFeedServer, ExchangeRestServer, Market, Venue
from tradeguard.io.preflight import (
    PreflightReport,
    PreflightTargets,
    render,
    run_against_embedded,
    run_preflight,
    write_report,
)

pytestmark = pytest.mark.anyio

SYMBOLS = ("BTC-USD", "ETH-USD")


@asynccontextmanager
async def exchange() -> AsyncIterator[tuple[ExchangeRestServer, ExchangeFeedServer, Market]]:
    market = Market(SYMBOLS, random.Random(1))
    venue = Venue(market, random.Random(2))
    async with (
        ExchangeRestServer(venue, rng=random.Random(3)) as rest,
        ExchangeFeedServer(market, tick_interval=0.02, heartbeat_interval=0.02) as feed,
    ):
        await anyio.sleep(0.05)  # a few ticks: every price freshly updated
        yield rest, feed, market


async def preflight(
    rest: ExchangeRestServer, feed: ExchangeFeedServer, **kw: Any
) -> PreflightReport:
    environ = kw.pop("environ", {})
    return await run_preflight(
        profile=kw.pop("profile", "canary"),
        environ=environ,
        targets=PreflightTargets(
            rest.url, feed.url, SYMBOLS, rest.credentials.api_key, rest.credentials.api_secret
        ),
        timeout=1.0,
        **kw,
    )


def statuses(report: PreflightReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


async def test_canary_against_a_healthy_exchange_is_ready() -> None:
    async with exchange() as (rest, feed, _):
        report = await preflight(rest, feed)
    assert set(statuses(report).values()) == {"ok"}
    assert list(statuses(report)) == [
        "config", "api_connectivity", "accounts", "market_data", "websocket", "api_health",
    ]  # fmt: skip
    assert report.ready and report.exit_code == 0
    assert render(report).splitlines()[-1] == "READY"


async def test_the_engines_own_ccxt_exchange_is_checked_as_it_will_trade() -> None:
    async with exchange() as (rest, feed, _):
        client = ccxt.coinbase(
            {"apiKey": rest.credentials.api_key, "secret": rest.credentials.api_secret}
        )
        client.urls["api"] = {"rest": rest.url}
        try:
            # No key in the targets: the exchange given is used as it is.
            report = await run_preflight(
                profile="canary",
                environ={},
                targets=PreflightTargets(rest.url, feed.url, SYMBOLS),
                timeout=1.0,
                exchange=client,
            )
            assert report.ready, render(report)
            assert rest.request_counts["accounts"] >= 1  # the checks went through ccxt
            await client.fetch_time()  # the caller's client is left open for trading
        finally:
            await client.close()


async def test_without_an_api_key_the_config_check_fails_and_says_what_to_set() -> None:
    async with exchange() as (rest, feed, _):
        report = await run_preflight(
            profile="canary", environ={}, targets=PreflightTargets(rest.url, feed.url, SYMBOLS)
        )
    config = next(c for c in report.checks if c.name == "config")
    assert config.status == "error" and "COINBASE_API_KEY" in config.hint
    assert statuses(report)["api_connectivity"] == "skipped"
    assert rest.request_counts == {}  # nothing was sent without credentials


async def test_server_down_fails_connectivity_and_skips_what_depends_on_it() -> None:
    async with exchange() as (rest, feed, _):
        await rest.stop()
        report = await preflight(rest, feed)
    got = statuses(report)
    assert got["api_connectivity"] == "error"
    assert got["accounts"] == got["market_data"] == got["api_health"] == "skipped"
    skipped = next(c for c in report.checks if c.name == "accounts")
    assert "api_connectivity" in skipped.detail
    assert got["websocket"] == "ok"  # it does not depend on the REST API
    assert report.exit_code == 1
    failing = next(c for c in report.checks if c.name == "api_connectivity")
    assert failing.hint


async def test_a_5xx_storm_fails_connectivity() -> None:
    async with exchange() as (rest, feed, _):
        rest.error_storm(1.0, 503)
        report = await preflight(rest, feed)
    assert statuses(report)["api_connectivity"] == "error"
    assert "503" in next(c.detail for c in report.checks if c.name == "api_connectivity")


async def test_empty_accounts_fail_the_accounts_check() -> None:
    async with exchange() as (rest, feed, _):
        rest.venue.balances.clear()
        report = await preflight(rest, feed)
    assert statuses(report)["accounts"] == "error"
    assert report.exit_code == 1


async def test_a_frozen_ticker_fails_market_data_and_starts_that_symbol_restricted() -> None:
    environ = {"RISK_MARK_STALENESS_THRESHOLD_SECONDS": "1.0"}
    async with exchange() as (rest, feed, market):
        market.freeze("ETH-USD")
        await anyio.sleep(1.2)  # past the threshold for the frozen symbol only
        report = await preflight(rest, feed, environ=environ)
    assert statuses(report)["market_data"] == "error"
    assert report.failed_symbols == ("ETH-USD",)
    layer = ReliabilityLayer(Settings(), lambda: 0.0, rng=random.Random(0))
    report.apply(layer)
    assert layer.guard("mark_staleness", "ETH-USD").state is GuardState.TRIPPED
    # BTC-USD passed, but this layer has no mark for it yet: restricted as NO_MARK, not tripped.
    assert layer.guard("mark_staleness", "BTC-USD").state is GuardState.NO_MARK


async def test_a_refused_websocket_fails_the_websocket_check() -> None:
    async with exchange() as (rest, feed, _):
        feed.refuse_handshakes(503)
        report = await preflight(rest, feed)
    check = next(c for c in report.checks if c.name == "websocket")
    assert check.status == "error" and "503" in check.detail


async def test_a_rate_limited_api_fails_the_api_health_view_and_starts_tripped() -> None:
    async with exchange() as (rest, feed, _):
        rest.set_usage(0.95)
        report = await preflight(rest, feed)
    assert statuses(report)["api_health"] == "error"
    assert report.api_health_failed
    layer = ReliabilityLayer(Settings(), lambda: 0.0, rng=random.Random(0))
    report.apply(layer)
    assert layer.mode() is TradingMode.REDUCE_ONLY


async def test_warn_only_downgrades_errors_and_says_so_loudly() -> None:
    async with exchange() as (rest, feed, _):
        await rest.stop()
        report = await preflight(rest, feed, warn_only=True)
    assert report.exit_code == 0
    assert "error" not in statuses(report).values()
    assert "DIAGNOSTIC ONLY" in render(report)
    assert report.to_json()["warn_only"] is True


@pytest.mark.parametrize("word", ["1", "true", "YES", "on"])
async def test_the_env_alias_of_warn_only(word: str) -> None:
    # Found: preflight read the variable itself and accepted only "1".
    async with exchange() as (rest, feed, _):
        await rest.stop()
        report = await preflight(rest, feed, environ={"GPT_TRADER_PREFLIGHT_WARN_ONLY": word})
    assert report.exit_code == 0 and report.warn_only


async def test_the_env_alias_of_warn_only_holds_when_another_knob_is_bad() -> None:
    async with exchange() as (rest, feed, _):
        environ = {"GPT_TRADER_PREFLIGHT_WARN_ONLY": "true", "RISK_API_ERROR_RATE_THRESHOLD": "x"}
        report = await preflight(rest, feed, environ=environ)
    (config,) = [c for c in report.checks if c.name == "config"]
    assert config.status == "warning" and "RISK_API_ERROR_RATE_THRESHOLD" in config.detail
    assert report.warn_only and report.exit_code == 0 and not report.ready


async def test_warn_only_with_a_failure_says_not_ready_never_ready() -> None:
    # Found: "DIAGNOSTIC ONLY ... does not mean the system is ready", then "READY".
    async with exchange() as (rest, feed, _):
        await rest.stop()
        report = await preflight(rest, feed, warn_only=True)
    lines = render(report).splitlines()
    assert "READY" not in lines
    assert lines[-1] == "NOT READY (diagnostic only: exit status 0 under --warn-only)"
    assert report.exit_code == 0
    assert report.to_json()["ready"] is False


async def test_warn_only_with_every_check_passing_is_ready() -> None:
    async with exchange() as (rest, feed, _):
        report = await preflight(rest, feed, warn_only=True)
    assert report.ready and render(report).splitlines()[-1] == "READY"


async def test_the_summary_names_what_was_checked() -> None:
    report = await run_against_embedded(profile="canary", environ={}, symbols=SYMBOLS)
    assert report.embedded and report.ready
    header = render(report).splitlines()[1]
    assert header.startswith("checked: the embedded exchange (tradeguard's Coinbase simulator")
    async with exchange() as (rest, feed, _):
        remote = await preflight(rest, feed)
    assert not remote.embedded
    assert render(remote).splitlines()[1] == f"checked: {rest.url}"


@pytest.mark.parametrize(
    ("profile", "environ", "remote"),
    [
        ("dev", {}, False),
        ("dev", {"COINBASE_PREFLIGHT_FORCE_REMOTE": "1"}, True),
        ("canary", {"COINBASE_PREFLIGHT_SKIP_REMOTE": "1"}, False),
        (
            "prod",
            {"COINBASE_PREFLIGHT_SKIP_REMOTE": "1", "COINBASE_PREFLIGHT_FORCE_REMOTE": "1"},
            True,
        ),
    ],
)
async def test_remote_checks_follow_profile_skip_and_force(
    profile: str, environ: dict[str, str], remote: bool
) -> None:
    async with exchange() as (rest, feed, _):
        report = await preflight(rest, feed, profile=profile, environ=environ)
    assert report.remote is remote
    remote_statuses = {c.status for c in report.checks if c.name != "config"}
    assert remote_statuses == ({"ok"} if remote else {"skipped"})


async def test_a_bad_knob_fails_config_and_everything_after_it() -> None:
    async with exchange() as (rest, feed, _):
        report = await preflight(rest, feed, environ={"RISK_API_ERROR_RATE_THRESHOLD": "lots"})
    got = statuses(report)
    assert got["config"] == "error"
    assert {got[n] for n in got if n != "config"} == {"skipped"}
    assert "RISK_API_ERROR_RATE_THRESHOLD" in report.checks[0].detail


async def test_the_report_is_written_atomically_as_json(tmp_path: Path) -> None:
    report = await run_against_embedded(profile="canary", environ={}, symbols=SYMBOLS)
    path = write_report(report, tmp_path / "reports" / "preflight.json")
    body = json.loads(path.read_text())
    assert body["ready"] is True and body["profile"] == "canary"
    assert body["checks"][0]["name"] == "config"
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


async def test_the_runtime_starts_in_the_mode_the_preflight_found() -> None:
    from tradeguard.io import Runtime

    environ = {"RISK_MARK_STALENESS_THRESHOLD_SECONDS": "1.0"}
    async with exchange() as (rest, feed, market):
        market.freeze("BTC-USD")
        await anyio.sleep(1.2)  # past the threshold for the frozen symbol only
        report = await preflight(rest, feed, environ=environ)
    layer = ReliabilityLayer(Settings(), lambda: 0.0, rng=random.Random(0))
    async with Runtime(layer, preflight=report):
        assert layer.guard("mark_staleness", "BTC-USD").state is GuardState.TRIPPED
        assert layer.mode("BTC-USD") is TradingMode.REDUCE_ONLY
