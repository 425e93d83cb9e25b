"""Preflight diagnostics: startup checks that gate trading and set the starting mode.

The seed's ``scripts/production_preflight.py`` as a first-class command (``tradeguard
preflight``). Checks run in a declared dependency order; a check whose dependency failed is
reported as skipped, with why, instead of failing again for the same cause:

    config ─┬─ api_connectivity ─┬─ accounts
            │                    ├─ market_data
            │                    └─ api_health
            └─ websocket

Remote checks (everything but ``config``) run on the canary and prod profiles and are skipped on
dev, unless ``COINBASE_PREFLIGHT_FORCE_REMOTE`` (which wins) or ``COINBASE_PREFLIGHT_SKIP_REMOTE``
says otherwise. ``--warn-only`` (or ``GPT_TRADER_PREFLIGHT_WARN_ONLY``) downgrades every error to
a warning: the run exits 0, says loudly that it was diagnostic only, and still says NOT READY
when a check failed. These three knobs are read through `Settings` like every other (flags take
1/true/yes/on), even when another knob is bad: the ``config`` check then reports that one.
The API-health check reads the preflight's own layer, which observed every call the other
checks made.

A report also sets the starting mode (`PreflightReport.apply`): a symbol whose market data
failed starts with its mark-staleness guard TRIPPED (REDUCE_ONLY, or PAUSED per
``RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY``) until a fresh mark recovers it; a failed API-health
view starts with api_health TRIPPED.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, final

import anyio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tradeguard.config import Settings
from tradeguard.errors import ConfigError
from tradeguard.fsm import BreakerState, GuardState, ReliabilityLayer
from tradeguard.fsm.effects import Effect
from tradeguard.io._coinbase import subscribe_message
from tradeguard.io._ws import direct_connection
from tradeguard.io.broker import BrokerError
from tradeguard.io.ccxt_broker import CcxtBroker
from tradeguard.io.engine import Engine

__all__ = ["CheckResult", "PreflightReport", "PreflightTargets", "run_preflight"]

Status = Literal["ok", "warning", "error", "skipped"]
PROFILES = ("dev", "canary", "prod")
MAX_CLOCK_DRIFT_SECONDS = 5.0


@final
@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: ``hint`` says what to do about a failure."""

    name: str
    status: Status
    duration: float
    detail: str
    hint: str = ""


@final
@dataclass(frozen=True, slots=True)
class PreflightTargets:
    """Where the remote checks go."""

    rest_url: str
    ws_url: str
    symbols: tuple[str, ...]
    # The venue's API key (CDP format) for a ccxt ``coinbase`` client built from these
    # targets; unused when the caller passes its own ccxt exchange.
    api_key: str = ""
    api_secret: str = field(default="", repr=False)


@final
@dataclass(frozen=True)
class PreflightReport:
    """Every check of one preflight run, and what it means for the starting mode."""

    profile: str
    started_at: str
    warn_only: bool
    remote: bool
    checks: tuple[CheckResult, ...]
    failed_symbols: tuple[str, ...] = ()
    api_health_failed: bool = False
    targets: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False  # checked the embedded exchange, not a venue

    @property
    def ready(self) -> bool:
        """No check failed. Skips do not count; under ``warn_only`` a warning is a failed
        check downgraded, so it does count: a diagnostic run never reports a failure as ready."""
        failed = ("error", "warning") if self.warn_only else ("error",)
        return not any(c.status in failed for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 ready or diagnostic only (``warn_only``), 1 not ready."""
        return 0 if self.ready or self.warn_only else 1

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form, as written to the report file."""
        body = asdict(self)
        body["checks"] = [asdict(c) for c in self.checks]
        body["ready"] = self.ready
        return body

    def apply(self, layer: ReliabilityLayer) -> list[Effect]:
        """Set the starting mode from this report; returns the effects to run."""
        effects: list[Effect] = []
        for symbol in self.failed_symbols:
            why = f"preflight: market data for {symbol} failed"
            effects += layer.trip("mark_staleness", why, symbol=symbol)
        if self.api_health_failed:
            effects += layer.trip("api_health", "preflight: the API-health view failed")
        return effects


Check = Callable[["_Run"], Awaitable[CheckResult]]


@dataclass
class _Run:
    settings: Settings
    targets: PreflightTargets
    layer: ReliabilityLayer
    broker: CcxtBroker
    timeout: float
    failed_symbols: list[str] = field(default_factory=list)
    api_health_failed: bool = False


def _result(name: str, started: float, status: Status, detail: str, hint: str = "") -> CheckResult:
    return CheckResult(name, status, round(time.monotonic() - started, 4), detail, hint)


async def _api_connectivity(run: _Run) -> CheckResult:
    started = time.monotonic()
    try:
        server_time = await run.broker.get_server_time()
    except BrokerError as err:
        return _result(
            "api_connectivity", started, "error", str(err),
            "check the REST URL, the network and the venue's status page",
        )  # fmt: skip
    latency = time.monotonic() - started
    drift = abs((server_time - datetime.now(UTC)).total_seconds())
    detail = f"latency {latency * 1000:.0f} ms, clock drift {drift:.1f} s"
    if drift > MAX_CLOCK_DRIFT_SECONDS:
        return _result(
            "api_connectivity", started, "error", detail,
            f"the local clock is off by more than {MAX_CLOCK_DRIFT_SECONDS:g} s: sync it (NTP)",
        )  # fmt: skip
    return _result("api_connectivity", started, "ok", detail)


async def _accounts(run: _Run) -> CheckResult:
    started = time.monotonic()
    try:
        balances = await run.broker.list_balances()
    except BrokerError as err:
        return _result("accounts", started, "error", str(err), "check the API key's permissions")
    funded = [b for b in balances if b.available > 0]
    if not funded:
        return _result(
            "accounts", started, "error", f"{len(balances)} balance(s), none funded",
            "fund the account, or point the API key at the right portfolio",
        )  # fmt: skip
    detail = ", ".join(f"{b.currency} {b.available}" for b in funded[:5])
    return _result("accounts", started, "ok", detail)


async def _market_data(run: _Run) -> CheckResult:
    started = time.monotonic()
    threshold = run.settings.mark_staleness_threshold_seconds
    problems = []
    for symbol in run.targets.symbols:
        try:
            quote = await run.broker.get_ticker(symbol)
        except BrokerError as err:
            problems.append(f"{symbol}: {err}")
            run.failed_symbols.append(symbol)
            continue
        if quote.time is not None:
            age = (datetime.now(UTC) - quote.time).total_seconds()
            if age > threshold:
                problems.append(f"{symbol}: last price update {age:.1f} s old (> {threshold:g} s)")
                run.failed_symbols.append(symbol)
    if problems:
        return _result(
            "market_data", started, "error", "; ".join(problems),
            "those symbols start restricted until a fresh mark arrives; check the product ids",
        )  # fmt: skip
    return _result("market_data", started, "ok", f"fresh tickers for {len(run.targets.symbols)}")


async def _websocket(run: _Run) -> CheckResult:
    started = time.monotonic()
    hint = "check the websocket URL and that the venue accepts connections"
    try:
        with anyio.fail_after(run.timeout):
            url, options = run.targets.ws_url, direct_connection()
            async with connect(url, open_timeout=run.timeout, **options) as ws:
                await ws.send(subscribe_message("heartbeats", []))
                await ws.recv()
    except InvalidStatus as err:
        status = err.response.status_code
        return _result("websocket", started, "error", f"handshake refused: HTTP {status}", hint)
    except TimeoutError:
        return _result("websocket", started, "error", f"no message within {run.timeout:g} s", hint)
    except (OSError, InvalidHandshake) as err:
        return _result("websocket", started, "error", f"{type(err).__name__}: {err}", hint)
    return _result("websocket", started, "ok", "handshake and first message received")


async def _api_health(run: _Run) -> CheckResult:
    started = time.monotonic()
    view = run.layer.view()
    guard = view.global_scope.guards["api_health"]
    figures = guard.counters
    open_breakers = [c for c, b in view.breakers.items() if b.state is not BreakerState.CLOSED]
    detail = (
        f"error rate {figures['error_rate']:.0%} over {figures['calls_in_window']} calls, "
        f"rate-limit usage {figures['rate_limit_usage']:.0%}, breakers not closed: "
        f"{', '.join(open_breakers) or 'none'}"
    )
    if guard.state is not GuardState.HEALTHY or open_breakers:
        run.api_health_failed = True
        return _result(
            "api_health", started, "error", detail,
            "the API is failing or rate-limited: trading starts REDUCE_ONLY until it recovers",
        )  # fmt: skip
    return _result("api_health", started, "ok", detail)


# (name, dependencies, check); "config" runs first, locally, before any of these.
REMOTE_CHECKS: tuple[tuple[str, tuple[str, ...], Check], ...] = (
    ("api_connectivity", ("config",), _api_connectivity),
    ("accounts", ("api_connectivity",), _accounts),
    ("market_data", ("api_connectivity",), _market_data),
    ("websocket", ("config",), _websocket),
    ("api_health", ("api_connectivity",), _api_health),
)


# The preflight's own knobs: read alone when another knob is bad, so they still apply.
_PREFLIGHT_KNOBS = (
    "GPT_TRADER_PREFLIGHT_WARN_ONLY",
    "COINBASE_PREFLIGHT_SKIP_REMOTE",
    "COINBASE_PREFLIGHT_FORCE_REMOTE",
)


def preflight_settings(environ: Mapping[str, str]) -> tuple[Settings, ConfigError | None]:
    """Read the knobs through `Settings`; on a bad knob, the preflight's own knobs alone.

    Returns:
        The settings and ``None``; or, when ``environ`` has a bad knob, settings holding only
        the preflight knobs (each at its default if it is the bad one) and the error, which the
        ``config`` check reports.
    """
    try:
        return Settings.from_env(environ), None
    except ConfigError as err:
        own = {name: environ[name] for name in _PREFLIGHT_KNOBS if name in environ}
        try:
            return Settings.from_env(own), err
        except ConfigError:
            return Settings(), err


def remote_enabled(profile: str, settings: Settings) -> tuple[bool, str]:
    """Whether remote checks run, and why (force wins over skip; dev skips by default)."""
    if settings.coinbase_preflight_force_remote:
        return True, "forced by COINBASE_PREFLIGHT_FORCE_REMOTE"
    if settings.coinbase_preflight_skip_remote:
        return False, "skipped by COINBASE_PREFLIGHT_SKIP_REMOTE"
    if profile == "dev":
        return False, "skipped on the dev profile (COINBASE_PREFLIGHT_FORCE_REMOTE=1 runs them)"
    return True, f"on for the {profile} profile"


async def run_preflight(
    *,
    profile: str,
    environ: Mapping[str, str],
    targets: PreflightTargets,
    warn_only: bool = False,
    timeout: float = 5.0,
    exchange: Any = None,
) -> PreflightReport:
    """Run every check in dependency order and return the report.

    Args:
        profile: ``dev``, ``canary`` or ``prod``.
        environ: the knobs (`Settings.from_env` reads them).
        targets: where the checks go (the websocket URL and symbols; the REST URL and API key
            build the venue client when ``exchange`` is not given).
        warn_only: downgrade every error to a warning.
        timeout: seconds each remote check may take.
        exchange: the engine's own `ccxt.async_support` exchange, as it will trade; ``None``
            builds ccxt's ``coinbase`` client from ``targets`` (and closes it after).

    Raises:
        ValueError: an unknown profile.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    started_at = datetime.now(UTC).isoformat()
    begun = time.monotonic()
    read, bad = preflight_settings(environ)
    warn_only = warn_only or read.preflight_warn_only
    remote, why = remote_enabled(profile, read)
    results: list[CheckResult] = []
    failed: set[str] = set()
    settings: Settings | None = read if bad is None else None
    if bad is not None:
        results.append(_result("config", begun, "error", str(bad), "fix the variables listed"))
        failed.add("config")
    else:
        if remote and exchange is None and not (targets.api_key and targets.api_secret):
            results.append(
                _result(
                    "config",
                    begun,
                    "error",
                    "no API key for the venue",
                    "set COINBASE_API_KEY and COINBASE_API_SECRET (a CDP key), or pass exchange=",
                )
            )
            failed.add("config")
        else:
            results.append(_result("config", begun, "ok", "every knob is valid"))
    run: _Run | None = None
    if not remote:
        results += [CheckResult(name, "skipped", 0.0, why) for name, _, _ in REMOTE_CHECKS]
    else:
        usable = settings if settings is not None else Settings()
        owned = exchange is None
        venue = _coinbase_client(targets, timeout) if exchange is None else exchange
        try:
            engine = Engine(usable, broker=venue, symbols=targets.symbols, alert_sinks=())
            async with engine:
                broker = engine.broker
                assert isinstance(broker, CcxtBroker)
                run = _Run(usable, targets, engine.layer, broker, timeout)
                for name, needs, check in REMOTE_CHECKS:
                    blocked = [n for n in needs if n in failed]
                    if blocked:
                        why_skipped = f"depends on {', '.join(blocked)}, which failed"
                        results.append(CheckResult(name, "skipped", 0.0, why_skipped))
                        failed.add(name)
                        continue
                    result = await check(run)
                    results.append(result)
                    if result.status == "error":
                        failed.add(name)
        finally:
            if owned:
                await venue.close()
    if warn_only:
        results = [
            CheckResult(r.name, "warning", r.duration, r.detail, r.hint)
            if r.status == "error"
            else r
            for r in results
        ]
    return PreflightReport(
        profile=profile,
        started_at=started_at,
        warn_only=warn_only,
        remote=remote,
        checks=tuple(results),
        failed_symbols=tuple(run.failed_symbols) if run else (),
        api_health_failed=run.api_health_failed if run else False,
        targets={"rest_url": targets.rest_url, "ws_url": targets.ws_url,
                 "symbols": list(targets.symbols)},
    )  # fmt: skip


def _coinbase_client(targets: PreflightTargets, timeout: float) -> Any:
    """ccxt's own Coinbase client pointed at ``targets.rest_url`` with its API key."""
    import ccxt.async_support as ccxt

    client = ccxt.coinbase(
        {
            "apiKey": targets.api_key,
            "secret": targets.api_secret,
            "timeout": int(timeout * 1000),  # ms
        }
    )
    client.urls["api"] = {"rest": targets.rest_url}
    return client


def render(report: PreflightReport) -> str:
    """The readable summary: one line per check, hints under failures, the verdict last."""
    marks = {"ok": " OK ", "warning": "WARN", "error": "FAIL", "skipped": "SKIP"}
    rest_url = report.targets.get("rest_url", "")
    where = (
        f"the embedded exchange (tradeguard's Coinbase simulator at {rest_url})"
        if report.embedded
        else rest_url or "no venue"
    )
    lines = [
        f"tradeguard preflight: profile {report.profile}, remote checks "
        f"{'on' if report.remote else 'off'}",
        f"checked: {where}",
    ]
    for check in report.checks:
        lines.append(
            f"  [{marks[check.status]}] {check.name:<17} {check.duration:7.3f} s  {check.detail}"
        )
        if check.hint and check.status in ("error", "warning"):
            lines.append(f"         hint: {check.hint}")
    if report.warn_only:
        lines.append(
            "DIAGNOSTIC ONLY (--warn-only): errors were downgraded to warnings; this run does "
            "not mean the system is ready"
        )
    if report.ready:
        lines.append("READY")
    elif report.warn_only:
        lines.append("NOT READY (diagnostic only: exit status 0 under --warn-only)")
    else:
        lines.append("NOT READY")
    return "\n".join(lines)


def write_report(report: PreflightReport, path: Path) -> Path:
    """Write the JSON report atomically (a temp file in the same directory, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(report.to_json(), out, indent=2)
            out.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def default_report_path(settings_store_path: str, now: datetime | None = None) -> Path:
    """Beside the event store when one is configured, else under ``./preflight-reports``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = Path(settings_store_path).parent if settings_store_path else Path("preflight-reports")
    return base / f"preflight-{stamp}.json"


async def run_against_embedded(
    *,
    profile: str,
    environ: Mapping[str, str],
    symbols: Sequence[str],
    warn_only: bool = False,
    seed: int = 0,
) -> PreflightReport:
    """Start the embedded exchange on 127.0.0.1 and run the preflight against it."""
    from tradeguard.io.exchange import ExchangeFeedServer, ExchangeRestServer, Market, Venue

    market = Market(symbols, random.Random(seed))
    venue = Venue(market, random.Random(seed + 1))
    async with (
        ExchangeRestServer(venue, rng=random.Random(seed + 2)) as rest,
        ExchangeFeedServer(market, tick_interval=0.05, heartbeat_interval=0.05) as feed,
    ):
        key = rest.credentials
        targets = PreflightTargets(rest.url, feed.url, tuple(symbols), key.api_key, key.api_secret)
        report = await run_preflight(
            profile=profile, environ=environ, targets=targets, warn_only=warn_only, timeout=2.0
        )
    return replace(report, embedded=True)
