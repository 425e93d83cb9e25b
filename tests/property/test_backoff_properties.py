"""Properties of the reconnect delays (DESIGN §2.2) over random policies, attempts and seeds."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeguard.fsm._backoff import BackoffPolicy

SETTINGS = settings(max_examples=150, deadline=None)
# Relative slack for comparing against the reference, computed by repeated multiplication.
SLACK = 1e-9


def reference_raw(base: float, multiplier: float, cap: float, attempt: int) -> float:
    """``min(base * multiplier**attempt, cap)``, by repeated multiplication (cannot overflow)."""
    delay = base
    for _ in range(attempt):
        if delay >= cap:
            break
        delay *= multiplier
    return min(delay, cap)


@st.composite
def policies(
    draw: st.DrawFn, min_jitter: float = 0.0, min_multiplier: float = 1.0
) -> BackoffPolicy:
    base = draw(st.floats(1e-3, 100.0))
    cap = base * draw(st.floats(1.0, 1e4))
    multiplier = draw(st.one_of(st.just(min_multiplier), st.floats(min_multiplier, 10.0)))
    jitter = draw(st.floats(min_jitter, 0.99))
    return BackoffPolicy(base=base, multiplier=multiplier, max=cap, jitter_pct=jitter)


attempts = st.integers(0, 200)
seeds = st.integers(0, 2**32 - 1)


@SETTINGS
@given(policies(), attempts)
def test_raw_is_the_capped_exponential(policy: BackoffPolicy, attempt: int) -> None:
    expected = reference_raw(policy.base, policy.multiplier, policy.max, attempt)
    assert policy.raw(attempt) <= policy.max
    assert math.isclose(policy.raw(attempt), expected, rel_tol=SLACK)


@SETTINGS
@given(policies(), attempts)
def test_raw_never_shrinks_as_attempts_grow(policy: BackoffPolicy, attempt: int) -> None:
    assert policy.raw(attempt) <= policy.raw(attempt + 1)


@SETTINGS
@given(policies(), attempts, seeds)
def test_a_delay_never_exceeds_max(policy: BackoffPolicy, attempt: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        assert policy.delay(attempt, rng) <= policy.max


@SETTINGS
@given(policies(), attempts, seeds)
def test_a_delay_stays_within_the_jitter_of_the_raw_delay(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    raw = reference_raw(policy.base, policy.multiplier, policy.max, attempt)
    low = raw * (1 - policy.jitter_pct)
    high = raw * (1 + policy.jitter_pct)
    rng = random.Random(seed)
    for _ in range(20):
        delay = policy.delay(attempt, rng)
        assert delay >= low * (1 - SLACK), "below raw * (1 - jitter)"
        assert delay <= high * (1 + SLACK), "above raw * (1 + jitter)"
        assert delay > 0


@SETTINGS
@given(
    st.floats(1e-3, 100.0),
    st.floats(1.0, 1e6),
    st.floats(1.0, 1e6),
    st.floats(0.0, 0.99),
    st.integers(0, 10**6),
    seeds,
)
def test_no_overflow_at_any_attempt(
    base: float, ratio: float, multiplier: float, jitter: float, attempt: int, seed: int
) -> None:
    policy = BackoffPolicy(base=base, multiplier=multiplier, max=base * ratio, jitter_pct=jitter)
    raw = policy.raw(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert math.isfinite(raw)
    assert base <= raw <= policy.max
    assert 0 < delay <= policy.max


@SETTINGS
@given(policies(min_jitter=0.01, min_multiplier=1.1), st.integers(0, 10**6), seeds)
def test_delays_at_the_cap_stay_spread(policy: BackoffPolicy, extra: int, seed: int) -> None:
    """200 draws at a capped attempt spread over most of the jitter band below the cap,
    instead of piling up on it (the original clipped to the cap: a synchronized herd)."""
    capped = 0
    while reference_raw(policy.base, policy.multiplier, policy.max, capped) < policy.max:
        capped += 1
    attempt = capped + extra % 1000
    rng = random.Random(seed)
    delays = [policy.delay(attempt, rng) for _ in range(200)]
    assert max(delays) <= policy.max
    assert max(delays) - min(delays) > 0.5 * policy.jitter_pct * policy.max
    assert sum(d == policy.max for d in delays) <= 10, "delays pile up on the cap"


@SETTINGS
@given(policies(), st.lists(attempts, min_size=1, max_size=30), seeds)
def test_the_same_seed_gives_the_same_sequence(
    policy: BackoffPolicy, sequence: list[int], seed: int
) -> None:
    one, other = random.Random(seed), random.Random(seed)
    assert [policy.delay(a, one) for a in sequence] == [policy.delay(a, other) for a in sequence]


@SETTINGS
@given(policies(min_jitter=0.01), attempts, seeds)
def test_a_delay_draws_exactly_one_number_from_the_random_source(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    """Replay depends on it: the feed shares one injected `Random` with everything else."""
    rng, twin = random.Random(seed), random.Random(seed)
    policy.delay(attempt, rng)
    twin.random()
    assert rng.getstate() == twin.getstate()


non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def bad_policies(draw: st.DrawFn) -> tuple[float, float, float, float]:
    base, multiplier, cap, jitter = 2.0, 2.0, 60.0, 0.25
    which = draw(st.sampled_from(["base", "base>max", "multiplier", "jitter", "max"]))
    if which == "base":
        base = draw(st.one_of(st.floats(max_value=0.0, allow_nan=False), non_finite))
    elif which == "base>max":
        cap = draw(st.floats(1e-3, 100.0))
        base = cap * draw(st.floats(1.0, 10.0, exclude_min=True))
    elif which == "multiplier":
        multiplier = draw(
            st.one_of(st.floats(max_value=1.0, exclude_max=True, allow_nan=False), non_finite)
        )
    elif which == "jitter":
        jitter = draw(
            st.one_of(
                st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
                st.floats(min_value=1.0, allow_nan=False),
                st.just(math.nan),
            )
        )
    else:
        cap = draw(st.one_of(non_finite, st.floats(max_value=0.0, allow_nan=False)))
    return base, multiplier, cap, jitter


@SETTINGS
@given(bad_policies())
def test_bad_policy_values_raise_value_error(values: tuple[float, float, float, float]) -> None:
    base, multiplier, cap, jitter = values
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(base=base, multiplier=multiplier, max=cap, jitter_pct=jitter)
