"""The `guard_state` metric reports mark_staleness's NO_MARK (issue 11 item 6) and a
reduce-only operator halt's time left (issue 11 item 4)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from tradeguard import ReliabilityLayer, Settings, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.io.metrics import Metrics
from tradeguard.testing import ManualClock


def _refreshed() -> tuple[CollectorRegistry, ReliabilityLayer, Metrics]:
    clock = ManualClock()
    layer = ReliabilityLayer(Settings(), clock, rng=random.Random(0), wall_clock=clock.wall)
    registry = CollectorRegistry()
    return registry, layer, Metrics(registry)


def test_a_never_marked_symbol_is_no_mark_in_the_guard_state_metric() -> None:
    registry, layer, metrics = _refreshed()
    layer.observe(ev.SlippageCheck("ETH", ok=True))  # ETH exists, never marked
    layer.observe(ev.MarkUpdate("BTC"))
    metrics.refresh(layer)

    def state(scope: str, value: str, guard: str = "mark_staleness") -> float | None:
        labels = {"guard": guard, "scope": scope, "state": value}
        return registry.get_sample_value("gpt_trader_guard_state", labels)

    assert (state("ETH", "NO_MARK"), state("ETH", "HEALTHY")) == (1.0, 0.0)
    assert (state("BTC", "NO_MARK"), state("BTC", "HEALTHY")) == (0.0, 1.0)
    assert state("global", "NO_MARK", guard="api_health") is None  # not a state of that guard


def test_a_reduce_only_halt_counts_in_seconds_until_lift() -> None:
    registry, layer, metrics = _refreshed()
    layer.halt("canary", symbol="BTC", ttl=50.0, mode=TradingMode.REDUCE_ONLY)
    metrics.refresh(layer)
    labels = {"guard": "operator", "scope": "BTC"}
    assert registry.get_sample_value("gpt_trader_restriction_seconds_until_lift", labels) == 50.0
