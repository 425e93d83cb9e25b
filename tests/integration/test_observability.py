"""Observability over real HTTP (issue 6): `/metrics` scraped and parsed with prometheus-client's
own parser, `/health` verdicts with their status codes, `/status`, and the loop's profile spans.

Every test serves a real `Runtime` with `StatusServer` on 127.0.0.1. The layer runs on a
`ManualClock` moved by `tradeguard.testing.advance`, so seconds until a restriction lifts and
message ages are exact, and no test waits through a cooldown.
"""

from __future__ import annotations

import collections
import json
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.abc import TaskStatus
from helpers import make_layer
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tradeguard import OrderIntent, ReliabilityLayer, Settings, Side
from tradeguard.fsm import GLOBAL_GUARDS, SYMBOL_GUARDS
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import Effect, Transitioned
from tradeguard.io import (
    LoopEvent,
    Metrics,
    Runtime,
    StatusServer,
    TradingLoop,
    attach_metrics,
    profile_span,
    record_profile,
)
from tradeguard.io.broker import Quote
from tradeguard.io.engine import Engine
from tradeguard.testing import DeterministicBroker, ManualClock, advance

pytestmark = pytest.mark.anyio

BTC, ETH = "BTC-USD", "ETH-USD"
FEED = "market"

# Family name (as the parser names it: a counter without ``_total``) -> (type, label names).
SEED_SERIES = {
    "gpt_trader_profile_duration_seconds": ("histogram", {"phase"}),
    "gpt_trader_positions_fetch_seconds": ("histogram", {"result"}),
    "gpt_trader_equity_computation_seconds": ("histogram", {"result"}),
    "gpt_trader_process_memory_mb": ("gauge", set()),
    "gpt_trader_event_store_cache_size": ("gauge", set()),
    "gpt_trader_deque_cache_fill_ratio": ("gauge", set()),
}
MACHINE_SERIES = {
    "gpt_trader_guard_state": ("gauge", {"guard", "scope", "state"}),
    "gpt_trader_breaker_state": ("gauge", {"category", "state"}),
    "gpt_trader_transitions": ("counter", {"machine", "from", "to"}),
    "gpt_trader_trading_mode": ("gauge", {"scope"}),
    "gpt_trader_restriction_seconds_until_lift": ("gauge", {"guard", "scope"}),
    "gpt_trader_refused_decisions": ("counter", {"guard", "scope", "state"}),
    "gpt_trader_feed_state": ("gauge", {"feed", "state"}),
    "gpt_trader_feed_reconnect_attempts": ("gauge", {"feed"}),
    "gpt_trader_feed_last_message_age_seconds": ("gauge", {"feed"}),
    "gpt_trader_feed_sequence_gaps": ("gauge", {"feed"}),
    "gpt_trader_feed_dropped_messages": ("gauge", {"feed"}),
}


# ---------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Scrape:
    """One parsed ``/metrics`` answer."""

    families: dict[str, Metric]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls({family.name: family for family in text_string_to_metric_families(text)})

    def labelnames(self, family: str) -> set[str]:
        return {k for s in self.families[family].samples for k in s.labels if k != "le"}

    def value(self, name: str, labels: Mapping[str, str] | None = None, **more: str) -> float:
        """The value of sample ``name`` with exactly these labels; NaN when absent."""
        wanted = {**(labels or {}), **more}
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return float(sample.value)
        return math.nan

    def state_set(self, family: str, **labels: str) -> dict[str, float]:
        """``state`` -> value of a state-set gauge's series with these other labels."""
        found = {}
        for sample in self.families[family].samples:
            rest = {k: v for k, v in sample.labels.items() if k != "state"}
            if rest == labels:
                found[sample.labels["state"]] = sample.value
        return found

    def samples_of(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == name
        }


def one_hot(current: str, states: tuple[str, ...]) -> dict[str, float]:
    return {state: 1.0 if state == current else 0.0 for state in states}


GUARD_STATES = ("HEALTHY", "TRIPPED", "COOLDOWN")
MARK_STATES = (*GUARD_STATES, "NO_MARK")  # mark_staleness: a symbol not marked yet
BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN")
FEED_STATES = ("DISCONNECTED", "CONNECTING", "CONNECTED", "BACKOFF", "DEGRADED", "CLOSED")


@dataclass
class Rig:
    layer: ReliabilityLayer
    clock: ManualClock
    runtime: Runtime
    metrics: Metrics
    server: StatusServer
    http: aiohttp.ClientSession
    effects: list[Effect] = field(default_factory=list)

    def observe(self, *observations: ev.Observation) -> None:
        for observation in observations:
            self.runtime.observe(observation)

    async def settle(self, seconds: float = 0.0) -> None:
        """Move the layer's clock and wait until every effect has run."""
        await advance(self.runtime, self.clock, seconds)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.server.url}{path}") as response:
            return response.status, await response.json()

    async def scrape(self) -> Scrape:
        async with self.http.get(f"{self.server.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return Scrape.parse(await response.text())


@asynccontextmanager
async def served(*, metrics: Metrics | None = None, **knobs: Any) -> AsyncIterator[Rig]:
    """A runtime on a manual clock, its metrics attached, served over HTTP."""
    layer, clock = make_layer(**knobs)
    metrics = Metrics() if metrics is None else metrics
    async with Runtime(layer) as runtime:
        # The periodic refresh is not what these tests watch: every scrape refreshes first.
        await attach_metrics(runtime, metrics, interval=3600.0)
        async with StatusServer(runtime, metrics) as server, aiohttp.ClientSession() as http:
            rig = Rig(layer, clock, runtime, metrics, server, http)
            runtime.on_effect(rig.effects.append)
            yield rig


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def buy(symbol: str) -> OrderIntent:
    return OrderIntent(symbol, Side.BUY, Decimal("0.01"))


# ---------------------------------------------------------------------- names and labels


async def test_metrics_serves_every_seed_and_machine_series_with_exact_labels() -> None:
    async with served(circuit_failure_threshold=2) as rig:
        rig.observe(ev.MarkUpdate(BTC), ev.ApiCall("orders", ok=True), ev.FeedStarted(FEED))
        rig.observe(ev.FeedConnected(FEED), ev.FeedMessage(FEED))
        with rig.metrics.activate():
            record_profile("fetch_positions", 3.0)
            with pytest.raises(OSError), profile_span("equity_computation"):
                raise OSError("balances read failed")
        rig.metrics.observe_event_cache(50, 200)
        # ETH has no mark yet: an opening order is refused (mark_staleness NO_MARK).
        rig.metrics.count_refusal(rig.layer.decide(buy(ETH), Decimal(0)))
        await rig.settle()
        scrape = await rig.scrape()
    for name, (kind, labels) in {**SEED_SERIES, **MACHINE_SERIES}.items():
        assert name in scrape.families, name
        assert scrape.families[name].type == kind, name
        assert scrape.labelnames(name) == labels, name
    assert scrape.value("gpt_trader_profile_duration_seconds_count", phase="fetch_positions") == 1
    assert scrape.value("gpt_trader_positions_fetch_seconds_count", result="ok") == 1
    assert scrape.value("gpt_trader_positions_fetch_seconds_sum", result="ok") == 0.003
    assert scrape.value("gpt_trader_equity_computation_seconds_count", result="error") == 1
    assert scrape.value("gpt_trader_process_memory_mb") > 1.0
    assert scrape.value("gpt_trader_event_store_cache_size") == 50
    assert scrape.value("gpt_trader_deque_cache_fill_ratio") == 0.25
    refused = {"guard": "mark_staleness", "scope": ETH, "state": "NO_MARK"}
    assert scrape.value("gpt_trader_refused_decisions_total", refused) == 1


async def test_guard_states_modes_and_seconds_until_lift_follow_the_machines() -> None:
    knobs: dict[str, Any] = {"slippage_pause_seconds": 30.0, "circuit_failure_threshold": 2}
    async with served(circuit_recovery_timeout=300.0, **knobs) as rig:
        rig.observe(ev.MarkUpdate(BTC), ev.MarkUpdate(ETH), ev.ApiCall("orders", ok=True))
        await rig.settle()
        calm = await rig.scrape()
        rig.observe(*[ev.SlippageCheck(BTC, ok=False)] * 3)
        rig.observe(*[ev.ApiCall("orders", ok=False, status=503)] * 2)
        await rig.settle(10.0)
        tense = await rig.scrape()

    family = "gpt_trader_guard_state"
    for guard in GLOBAL_GUARDS:
        assert calm.state_set(family, guard=guard, scope="global") == one_hot(
            "HEALTHY", GUARD_STATES
        )
    for symbol in (BTC, ETH):
        for guard in SYMBOL_GUARDS:
            states = MARK_STATES if guard == "mark_staleness" else GUARD_STATES
            assert calm.state_set(family, guard=guard, scope=symbol) == one_hot("HEALTHY", states)
    for scope in ("global", BTC, ETH):
        assert calm.value("gpt_trader_trading_mode", scope=scope) == 0  # ALLOW
    assert calm.state_set("gpt_trader_breaker_state", category="orders") == one_hot(
        "CLOSED", BREAKER_STATES
    )
    assert calm.value("gpt_trader_restriction_seconds_until_lift", guard="slippage", scope=BTC) == 0

    cooling = one_hot("COOLDOWN", GUARD_STATES)
    assert tense.state_set(family, guard="slippage", scope=BTC) == cooling
    assert tense.state_set(family, guard="slippage", scope=ETH) == one_hot("HEALTHY", GUARD_STATES)
    assert tense.state_set(family, guard="api_health", scope="global") == one_hot(
        "TRIPPED", GUARD_STATES
    )
    assert tense.state_set("gpt_trader_breaker_state", category="orders") == one_hot(
        "OPEN", BREAKER_STATES
    )
    # The global mode is REDUCE_ONLY (the open breaker); a symbol shows its effective mode.
    assert tense.value("gpt_trader_trading_mode", scope="global") == 1
    assert tense.value("gpt_trader_trading_mode", scope=BTC) == 1
    assert tense.value("gpt_trader_trading_mode", scope=ETH) == 1
    lift = "gpt_trader_restriction_seconds_until_lift"
    assert tense.value(lift, guard="slippage", scope=BTC) == pytest.approx(20.0)  # 30 - 10
    assert tense.value(lift, guard="api_health", scope="global") == math.inf  # fault present
    assert tense.value(lift, guard="validation", scope="global") == 0
    assert tense.value(lift, guard="operator", scope="global") == 0


async def test_operator_halt_shows_as_paused_with_its_time_to_lift() -> None:
    async with served() as rig:
        await rig.runtime.halt("maintenance", symbol=BTC, ttl=45.0)
        await rig.settle(5.0)
        scrape = await rig.scrape()
    assert scrape.value("gpt_trader_trading_mode", scope=BTC) == 2  # PAUSED
    lift = "gpt_trader_restriction_seconds_until_lift"
    assert scrape.value(lift, guard="operator", scope=BTC) == pytest.approx(40.0)
    assert "PAUSED" in scrape.families["gpt_trader_trading_mode"].documentation


async def test_transitions_counter_counts_every_transition_the_runtime_ran() -> None:
    async with served(slippage_pause_seconds=30.0) as rig:
        rig.observe(ev.MarkUpdate(BTC), *[ev.SlippageCheck(BTC, ok=False)] * 3)
        await rig.runtime.halt("maintenance")
        await rig.settle(31.0)  # the cooldown expires on the timer
        await rig.runtime.resume()
        await rig.settle()
        scrape = await rig.scrape()
        expected = collections.Counter(
            (e.machine, e.source, e.dest) for e in rig.effects if isinstance(e, Transitioned)
        )
    counted = {
        (dict(labels)["machine"], dict(labels)["from"], dict(labels)["to"]): value
        for labels, value in scrape.samples_of("gpt_trader_transitions_total").items()
    }
    assert counted == {key: float(n) for key, n in expected.items()}
    assert counted[("slippage", "COOLDOWN", "HEALTHY")] == 1  # fired by the timer
    assert counted[("operator", "RUNNING", "HALTED")] == 1


async def test_feed_gauges_follow_the_feed_into_degraded() -> None:
    knobs: dict[str, Any] = {
        "ws_reconnect_max_attempts": 1,
        "ws_reconnect_backoff_base": 0.5,
        "ws_reconnect_backoff_max": 1.0,
        "ws_reconnect_reset_seconds": 600.0,
        "ws_message_stale_seconds": 600.0,
    }
    async with served(**knobs) as rig:
        assert (await rig.scrape()).state_set("gpt_trader_feed_state", feed=FEED) == {}
        rig.observe(ev.FeedStarted(FEED))
        await rig.settle()
        never_heard = await rig.scrape()
        rig.observe(ev.FeedConnected(FEED), *[ev.FeedMessage(FEED)] * 3)
        rig.observe(ev.SequenceGap(FEED, expected=4, received=6), ev.MessagesDropped(FEED, 5))
        await rig.settle(2.5)
        connected = await rig.scrape()
        rig.observe(ev.FeedDisconnected(FEED, "reset by peer"))
        await rig.settle(5.0)  # the backoff's retry: attempt 1, CONNECTING again
        rig.observe(ev.FeedDisconnected(FEED, "refused"))  # out of attempts
        await rig.settle()
        degraded = await rig.scrape()
        code, health = await rig.get("/health")

    assert never_heard.state_set("gpt_trader_feed_state", feed=FEED) == one_hot(
        "CONNECTING", FEED_STATES
    )
    # No message yet: no age series (there is no age to report), not a made-up 0.
    assert math.isnan(never_heard.value("gpt_trader_feed_last_message_age_seconds", feed=FEED))

    assert connected.state_set("gpt_trader_feed_state", feed=FEED) == one_hot(
        "CONNECTED", FEED_STATES
    )
    assert connected.value("gpt_trader_feed_reconnect_attempts", feed=FEED) == 0
    assert connected.value("gpt_trader_feed_last_message_age_seconds", feed=FEED) == 2.5
    assert connected.value("gpt_trader_feed_sequence_gaps", feed=FEED) == 1
    assert connected.value("gpt_trader_feed_dropped_messages", feed=FEED) == 5

    assert degraded.state_set("gpt_trader_feed_state", feed=FEED) == one_hot(
        "DEGRADED", FEED_STATES
    )
    assert degraded.value("gpt_trader_feed_reconnect_attempts", feed=FEED) == 1
    assert degraded.state_set("gpt_trader_guard_state", guard="websocket", scope="global") == (
        one_hot("TRIPPED", GUARD_STATES)
    )
    assert code == 503
    assert health["status"] == "unhealthy"
    assert f"feed {FEED} DEGRADED after 1 reconnect attempts" in health["reasons"]


async def test_refused_decisions_are_counted_per_reason() -> None:
    async with served(slippage_pause_seconds=30.0) as rig:
        rig.observe(ev.MarkUpdate(BTC), ev.MarkUpdate(ETH), *[ev.SlippageCheck(BTC, False)] * 3)
        refused = rig.layer.decide(buy(BTC), Decimal(0))
        allowed = rig.layer.decide(buy(ETH), Decimal(0))
        assert not refused.allowed and allowed.allowed
        rig.metrics.count_refusal(refused)
        rig.metrics.count_refusal(allowed)  # counts nothing
        rig.metrics.on_loop_event(LoopEvent("refused", BTC, intent=buy(BTC), decision=refused))
        rig.metrics.on_loop_event(LoopEvent("placed", ETH, intent=buy(ETH), decision=allowed))
        scrape = await rig.scrape()
    assert scrape.samples_of("gpt_trader_refused_decisions_total") == {
        (("guard", "slippage"), ("scope", BTC), ("state", "COOLDOWN")): 2.0
    }


# ---------------------------------------------------------------------- /health and /status


async def test_health_goes_healthy_then_degraded_then_unhealthy_and_back() -> None:
    async with served(slippage_pause_seconds=30.0, mark_staleness_threshold_seconds=600.0) as rig:
        assert await rig.get("/health") == (200, {"status": "healthy", "reasons": []})

        rig.observe(ev.MarkUpdate(BTC), *[ev.SlippageCheck(BTC, ok=False)] * 3)
        slippage = "BTC-USD mode REDUCE_ONLY: slippage COOLDOWN (may lift in 30.0 s)"
        assert await rig.get("/health") == (200, {"status": "degraded", "reasons": [slippage]})

        await rig.runtime.halt("maintenance")
        paused = "global mode PAUSED: operator HALTED (maintenance)"
        assert await rig.get("/health") == (
            503,
            {"status": "unhealthy", "reasons": [paused, slippage]},
        )

        await rig.runtime.resume()
        await rig.settle(30.0)
        assert await rig.get("/health") == (200, {"status": "healthy", "reasons": []})


def _open_breaker(rig: Rig) -> None:
    rig.observe(*[ev.ApiCall("orders", ok=False, status=503)] * 2)


def _disable_preview(rig: Rig) -> None:
    rig.observe(*[ev.PreviewResult(ok=False)] * 5)


def _halt_one_symbol(rig: Rig) -> None:
    rig.observe(ev.MarkUpdate(BTC))
    rig.runtime.apply(rig.runtime.layer.halt("fat finger", symbol=BTC))


def _fail_validation(rig: Rig) -> None:
    rig.observe(*[ev.ValidationCheck(ok=False)] * 5)


@pytest.mark.parametrize(
    ("cause", "code", "status", "reason"),
    [
        (_open_breaker, 503, "unhealthy", "circuit breaker orders OPEN"),
        (_disable_preview, 200, "degraded", "preview disabled"),
        (_halt_one_symbol, 200, "degraded", "BTC-USD mode PAUSED: operator HALTED (fat finger)"),
        (
            _fail_validation,
            200,
            "degraded",
            "global mode REDUCE_ONLY: validation COOLDOWN (may lift in 180.0 s)",
        ),
    ],
    ids=["breaker-open", "preview-disabled", "symbol-halted", "global-reduce-only"],
)
async def test_health_names_each_cause(
    cause: Callable[[Rig], None], code: int, status: str, reason: str
) -> None:
    async with served(circuit_failure_threshold=2) as rig:
        cause(rig)
        got_code, body = await rig.get("/health")
    assert (got_code, body["status"]) == (code, status)
    assert reason in body["reasons"]


async def test_status_serves_the_layers_status() -> None:
    async with served(circuit_failure_threshold=2) as rig:
        rig.observe(ev.MarkUpdate(BTC), ev.FeedStarted(FEED), ev.ApiCall("orders", ok=False))
        await rig.runtime.halt("maintenance", symbol=ETH, ttl=60.0)
        await rig.settle(1.0)
        code, body = await rig.get("/status")
        expected = json.loads(json.dumps(rig.layer.status()))
    assert code == 200
    assert body.keys() == expected.keys()
    assert body == expected  # the manual clock stood still between the two reads


# ---------------------------------------------------------------------- registries


async def test_two_runtimes_keep_independent_registries() -> None:
    async with served() as one, served() as two:
        one.observe(ev.MarkUpdate(BTC), *[ev.SlippageCheck(BTC, ok=False)] * 3)
        await one.settle()
        first, second = await one.scrape(), await two.scrape()
    assert one.metrics.registry is not two.metrics.registry
    tripped = {"machine": "slippage", "from": "HEALTHY", "to": "TRIPPED"}
    assert first.value("gpt_trader_transitions_total", tripped) == 1
    assert math.isnan(second.value("gpt_trader_transitions_total", tripped))
    assert first.value("gpt_trader_trading_mode", scope=BTC) == 1
    assert math.isnan(second.value("gpt_trader_trading_mode", scope=BTC))


async def test_the_prefix_is_configurable() -> None:
    async with served(metrics=Metrics(prefix="desk_a")) as rig:
        rig.observe(ev.MarkUpdate(BTC))
        scrape = await rig.scrape()
    assert set(scrape.families) >= {
        name.replace("gpt_trader", "desk_a", 1) for name in (*SEED_SERIES, *MACHINE_SERIES)
    }
    assert all(name.startswith("desk_a_") for name in scrape.families)
    assert scrape.value("desk_a_trading_mode", scope=BTC) == 0


def test_a_given_registry_is_used_and_a_bad_prefix_refused() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    assert registry.get_sample_value("gpt_trader_process_memory_mb") is not None
    Metrics(registry, prefix="other")  # another prefix shares the registry
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry)  # the same series twice in one registry
    for bad in ("", "1desk", "desk-a", "desk a"):
        with pytest.raises(ValueError, match="prefix"):
            Metrics(prefix=bad)


async def test_the_refresher_updates_gauges_without_a_scrape() -> None:
    layer, _clock = make_layer()
    metrics = Metrics()

    def global_mode() -> float | None:
        return metrics.registry.get_sample_value("gpt_trader_trading_mode", {"scope": "global"})

    async with Runtime(layer) as runtime:
        await attach_metrics(runtime, metrics, interval=0.01)
        assert global_mode() == 0  # refreshed before attach_metrics returned
        await runtime.halt("maintenance")
        await wait_until(lambda: global_mode() == 2)
        with pytest.raises(ValueError, match="interval"):
            await attach_metrics(runtime, Metrics(), interval=-1.0)
    with pytest.raises(ValueError, match="interval"):
        await metrics.run(runtime, 0.0)


# ---------------------------------------------------------------------- the loop's spans


class Always:
    """Proposes a small buy for every symbol, every cycle."""

    def propose(self, symbol: str, quote: Quote, position: Decimal | None) -> OrderIntent | None:
        return buy(symbol)


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"gpt_trader_{name}_count", labels) or 0.0


async def test_spans_land_in_the_metrics_attached_to_their_runtime() -> None:
    # Found: 5 cycles ran, 3 recorded; attach_metrics alone recorded no phase.
    broker = DeterministicBroker((BTC, ETH), seed=1)
    layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(0))
    metrics, elsewhere = Metrics(), Metrics()
    phase = "profile_duration_seconds"
    async with Runtime(layer) as runtime:
        await attach_metrics(runtime, metrics, interval=60.0)
        assert runtime.profile_sink is metrics
        loop = TradingLoop(runtime, broker, (BTC, ETH), strategy=Always(), rng=random.Random(0))
        for _ in range(3):
            await loop.run_cycle()  # awaited here, with no metrics active
        await loop.check_health()
        with elsewhere.activate():  # another sink active around it: the runtime's wins
            await loop.run_cycle()
        assert _count(metrics, phase, phase="strategy_decision") == 4
        assert _count(metrics, phase, phase="fetch_positions") == 4
        assert _count(metrics, phase, phase="equity_computation") == 1
        assert _count(elsewhere, phase, phase="strategy_decision") == 0

        async def spans() -> None:  # any task the runtime starts records there too
            with profile_span("custom_phase"):
                pass

        await runtime.start(_started, spans)
        assert _count(metrics, phase, phase="custom_phase") == 1


async def test_an_engines_loop_records_its_cycles_however_they_are_run() -> None:
    broker = DeterministicBroker((BTC, ETH), seed=1)
    async with Engine(Settings(), broker=broker, symbols=(BTC, ETH)) as engine:
        loop = engine.trading_loop(strategy=Always(), rng=random.Random(0))
        for _ in range(2):
            await loop.run_cycle()
        await engine.runtime.start(loop.run, 0.01)  # not engine.start: recorded all the same
        phase = "profile_duration_seconds"
        await wait_until(lambda: _count(engine.metrics, phase, phase="strategy_decision") >= 5)


async def _started(
    fn: Callable[[], Awaitable[None]], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    await fn()
    task_status.started()


async def test_the_trading_loop_records_the_seed_phases_where_metrics_are_active() -> None:
    broker = DeterministicBroker((BTC, ETH), seed=1)
    layer = ReliabilityLayer(Settings(), time.monotonic, rng=random.Random(0))
    metrics = Metrics()
    async with Runtime(layer) as runtime:
        loop = TradingLoop(runtime, broker, (BTC, ETH), strategy=Always(), rng=random.Random(0))
        with metrics.activate():
            await loop.run_cycle()
            await loop.check_health()
            broker.venue.faults.failing_reads = {"positions", "balances"}
            await loop.run_cycle()
            await loop.check_health()
            broker.venue.faults.failing_reads = set()
        await loop.run_cycle()  # outside: measured, recorded nowhere

        phase = "profile_duration_seconds"
        assert _count(metrics, phase, phase="fetch_positions") == 2
        assert _count(metrics, phase, phase="equity_computation") == 2
        assert _count(metrics, phase, phase="strategy_decision") == 2
        assert _count(metrics, phase, phase="order_placement") == 2
        assert _count(metrics, phase, phase="pre_trade_validation") == 4  # per order
        assert _count(metrics, "positions_fetch_seconds", result="ok") == 1
        assert _count(metrics, "positions_fetch_seconds", result="error") == 1
        assert _count(metrics, "equity_computation_seconds", result="ok") == 1
        assert _count(metrics, "equity_computation_seconds", result="error") == 1

        # A task started while the metrics are active records into them too.
        with metrics.activate():
            await runtime.start(loop.run, 0.01)
        await wait_until(lambda: _count(metrics, phase, phase="strategy_decision") >= 5)
