"""The Hypothesis strategies of `tradeguard.testing.strategies` draw only valid values."""

from __future__ import annotations

import contextlib
import random
from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeguard import ReliabilityLayer, Settings, Side
from tradeguard.fsm.events import (
    ApiCall,
    FeedConnected,
    FeedMessage,
    FeedStarted,
    MalformedMessage,
    MessagesDropped,
    Observation,
    SequenceGap,
)
from tradeguard.io.broker import BOT_PREFIX, BrokerError, OrderRequest
from tradeguard.testing import (
    BROKER_METHODS,
    ChaosBroker,
    DeterministicBroker,
    FaultAction,
    FaultPlan,
    ManualClock,
)
from tradeguard.testing.strategies import (
    api_calls,
    fault_actions,
    fault_plans,
    observations,
)

BTC, ETH = "BTC-USD", "ETH-USD"
_FEED_KINDS = (FeedMessage, SequenceGap, MessagesDropped, MalformedMessage)
REQUEST = OrderRequest(BTC, Side.BUY, Decimal("0.01"), f"{BOT_PREFIX}strategy-1")
ARGS: dict[str, tuple[Any, ...]] = {
    "list_balances": (),
    "list_positions": (),
    "list_orders": (),
    "place_order": (REQUEST,),
    "cancel_orders": (["ord-none"],),
    "preview_order": (REQUEST,),
    "get_best_bid_ask": ((BTC, ETH),),
    "get_ticker": (BTC,),
    "get_product": (BTC,),
}


def fresh_layer() -> ReliabilityLayer:
    return ReliabilityLayer(Settings(), ManualClock(), rng=random.Random(0))


@given(observations())
def test_every_observation_is_accepted_by_a_fresh_layer(observation: Observation) -> None:
    assert isinstance(fresh_layer().observe(observation), list)
    assert not isinstance(observation, _FEED_KINDS)  # no feed is named: none is drawn


@given(st.lists(observations(symbols=("SOL-USD",), categories=("market",)), max_size=30))
def test_a_run_of_observations_is_accepted_in_any_order(run: list[Observation]) -> None:
    layer = fresh_layer()
    for observation in run:
        layer.observe(observation)


@given(st.lists(observations(feed="market"), max_size=20))
def test_feed_stream_observations_are_accepted_once_the_feed_is_connected(
    run: list[Observation],
) -> None:
    layer = fresh_layer()
    layer.observe(FeedStarted("market"))
    layer.observe(FeedConnected("market"))
    for observation in run:
        layer.observe(observation)


@given(api_calls())
def test_api_calls_cover_successes_and_failures_with_valid_statuses(call: ApiCall) -> None:
    status = call.status
    assert status is None or (status < 400 if call.ok else 400 <= status <= 599)


def test_observations_can_draw_every_kind() -> None:
    seen: set[str] = set()

    @settings(max_examples=400, database=None)
    @given(observations(feed="market"))
    def collect(observation: Observation) -> None:
        seen.add(type(observation).__name__)

    collect()
    assert seen == {
        "ApiCall",
        "RateLimitUsage",
        "MarkUpdate",
        "SlippageCheck",
        "ValidationCheck",
        "PreviewResult",
        "BrokerRead",
        "ReconciliationAudit",
        "FeedMessage",
        "SequenceGap",
        "MessagesDropped",
        "MalformedMessage",
    }


@given(fault_actions())
def test_fault_actions_are_valid_and_seeded_when_random(action: FaultAction) -> None:
    assert isinstance(action, FaultAction)
    if action.probability < 1:
        assert action.seed is not None
    # Rebuilding from the fields passes the same validation.
    assert FaultAction(**{f: getattr(action, f) for f in action.__dataclass_fields__}) == action


@settings(max_examples=50, deadline=None)
@given(fault_plans())
def test_fault_plans_build_a_chaos_broker_whose_calls_answer_or_raise_faults(
    plan: FaultPlan,
) -> None:
    broker = ChaosBroker(DeterministicBroker(), plan, sleep_func=lambda _: None)

    async def call_everything() -> None:
        for _ in range(3):
            for method in BROKER_METHODS:
                # An injected fault, or the venue refusing a request, is a venue error.
                with contextlib.suppress(BrokerError, OSError):
                    await getattr(broker, method)(*ARGS[method])

    anyio.run(call_everything)
    assert set(plan.methods) <= set(BROKER_METHODS)
    assert plan.faults_injected() == sum(r.fault is not None for r in plan.log)


def test_strategies_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="symbols"):
        observations(symbols=())
    with pytest.raises(ValueError, match="categories"):
        observations(categories=("",))
    with pytest.raises(ValueError, match="max_times"):
        fault_actions(max_times=0)
    with pytest.raises(ValueError, match="exceptions"):
        fault_actions(exceptions=("boom",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="methods"):
        fault_plans(methods=())
