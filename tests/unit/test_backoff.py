"""Reconnect delays (DESIGN §2.2): ``min(base * multiplier**n, max)``, ±jitter, never above max."""

from __future__ import annotations

import math
import random

import pytest

from tradeguard.config import Settings
from tradeguard.fsm._backoff import BackoffPolicy

SEED_POLICY = BackoffPolicy(base=2.0, multiplier=2.0, max=60.0, jitter_pct=0.25)


def test_raw_delays_for_the_seed_defaults() -> None:
    # The seed: base 2 s, multiplier 2, cap 60 s.
    assert [SEED_POLICY.raw(n) for n in range(9)] == [2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert SEED_POLICY.raw(1000) == 60.0


def test_the_policy_from_default_settings_is_the_seed_policy() -> None:
    assert BackoffPolicy.from_settings(Settings.from_env({})) == SEED_POLICY


def test_the_policy_follows_the_reconnect_knobs() -> None:
    settings = Settings.from_env(
        {
            "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE": "0.5",
            "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX": "10",
            "GPT_TRADER_WS_RECONNECT_BACKOFF_MULTIPLIER": "3",
            "GPT_TRADER_WS_RECONNECT_JITTER_PCT": "0.1",
        }
    )
    policy = BackoffPolicy.from_settings(settings)
    assert policy == BackoffPolicy(base=0.5, multiplier=3.0, max=10.0, jitter_pct=0.1)
    assert [policy.raw(n) for n in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_a_multiplier_of_one_keeps_the_base_delay() -> None:
    policy = BackoffPolicy(base=3.0, multiplier=1.0, max=60.0, jitter_pct=0.0)
    assert {policy.raw(n) for n in (0, 1, 7, 10**6)} == {3.0}


def test_without_jitter_the_delay_is_the_raw_delay() -> None:
    policy = BackoffPolicy(base=2.0, multiplier=2.0, max=60.0, jitter_pct=0.0)
    rng = random.Random(7)
    assert [policy.delay(n, rng) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    ("base", "multiplier", "cap"),
    [
        (2.0, 2.0, 60.0),
        (2.0, 1e6, 60.0),
        (1e-3, 1.5, 1e300),
        (1.0, 1e10, 1e300),
        (1.0, 1e200, 1e300),
        (0.5, 1e300, 1e300),
    ],
)
def test_no_overflow_for_a_huge_attempt_with_a_large_multiplier(
    base: float, multiplier: float, cap: float
) -> None:
    policy = BackoffPolicy(base=base, multiplier=multiplier, max=cap, jitter_pct=0.5)
    assert policy.raw(10**6) == cap
    delay = policy.delay(10**6, random.Random(1))
    assert math.isfinite(delay)
    assert cap * 0.5 <= delay <= cap


def test_a_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        SEED_POLICY.raw(-1)
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        SEED_POLICY.delay(-1, random.Random(0))


@pytest.mark.parametrize(
    ("base", "multiplier", "cap", "jitter"),
    [
        pytest.param(0.0, 2.0, 60.0, 0.25, id="zero-base"),
        pytest.param(-1.0, 2.0, 60.0, 0.25, id="negative-base"),
        pytest.param(61.0, 2.0, 60.0, 0.25, id="base-above-max"),
        pytest.param(math.nan, 2.0, 60.0, 0.25, id="nan-base"),
        pytest.param(math.inf, 2.0, 60.0, 0.25, id="inf-base"),
        pytest.param(2.0, 2.0, math.inf, 0.25, id="inf-max"),
        pytest.param(2.0, 2.0, math.nan, 0.25, id="nan-max"),
        pytest.param(2.0, 0.5, 60.0, 0.25, id="multiplier-below-one"),
        pytest.param(2.0, 0.0, 60.0, 0.25, id="zero-multiplier"),
        pytest.param(2.0, math.nan, 60.0, 0.25, id="nan-multiplier"),
        # Settings refuses an infinite multiplier ("a finite number >= 1"); so must the policy.
        pytest.param(2.0, math.inf, 60.0, 0.25, id="inf-multiplier"),
        pytest.param(2.0, 2.0, 60.0, -0.01, id="negative-jitter"),
        pytest.param(2.0, 2.0, 60.0, 1.0, id="jitter-one"),
        pytest.param(2.0, 2.0, 60.0, math.nan, id="nan-jitter"),
    ],
)
def test_bad_policy_values_are_refused(
    base: float, multiplier: float, cap: float, jitter: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(base=base, multiplier=multiplier, max=cap, jitter_pct=jitter)


def test_delays_at_the_cap_stay_spread_below_it() -> None:
    """A deliberate difference from the original, which clipped jittered delays to the cap:
    a herd of clients at the cap would then reconnect in lockstep."""
    rng = random.Random(2024)
    delays = [SEED_POLICY.delay(30, rng) for _ in range(200)]
    assert max(delays) <= 60.0
    assert min(delays) >= 45.0
    assert max(delays) - min(delays) > 0.5 * 0.25 * 60.0
    assert sum(d == 60.0 for d in delays) <= 2
    assert len(set(delays)) > 190


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [SEED_POLICY.delay(n % 9, random.Random(99)) for n in range(20)]
    second = [SEED_POLICY.delay(n % 9, random.Random(99)) for n in range(20)]
    assert first == second
    one_rng, other_rng = random.Random(5), random.Random(5)
    assert [SEED_POLICY.delay(n, one_rng) for n in range(12)] == [
        SEED_POLICY.delay(n, other_rng) for n in range(12)
    ]
