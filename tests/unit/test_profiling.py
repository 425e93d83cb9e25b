"""The seed's profiling API (`tradeguard.io.profiling`): spans, manual records, where they go.

No event loop: spans are plain context managers. Durations are only checked to be set and
sane, never compared with a sleep.
"""

from __future__ import annotations

import math

import pytest

from tradeguard.io import Metrics, ProfileSample, profile_span, record_profile
from tradeguard.io.profiling import activate, active_sink

PHASE_COUNT = "gpt_trader_profile_duration_seconds_count"


class Interrupted(BaseException):
    """Stands in for cancellation: a `BaseException` that is not an `Exception`."""


class ListSink:
    def __init__(self) -> None:
        self.samples: list[ProfileSample] = []

    def record_sample(self, sample: ProfileSample) -> None:
        self.samples.append(sample)


def count(metrics: Metrics, phase: str) -> float:
    return metrics.registry.get_sample_value(PHASE_COUNT, {"phase": phase}) or 0.0


def result_count(metrics: Metrics, histogram: str, result: str) -> float:
    name = f"gpt_trader_{histogram}_count"
    return metrics.registry.get_sample_value(name, {"result": result}) or 0.0


# ---------------------------------------------------------------------- spans


def test_a_span_sets_its_duration_on_exit() -> None:
    with profile_span("fetch_positions", {"venue": "sim"}) as sample:
        assert sample.duration_ms is None  # not yet: the block is running
        sum(range(1000))
    assert isinstance(sample.duration_ms, float)
    assert 0.0 <= sample.duration_ms < 10_000.0
    assert (sample.name, sample.labels, sample.failed) == (
        "fetch_positions",
        {"venue": "sim"},
        False,
    )


def test_a_span_sets_its_duration_when_the_block_raises_and_re_raises() -> None:
    with pytest.raises(KeyError, match="boom"), profile_span("order_placement") as sample:
        raise KeyError("boom")
    assert sample.duration_ms is not None and sample.duration_ms >= 0.0
    assert sample.failed


def test_a_span_copies_its_labels() -> None:
    labels = {"key": "value"}
    with profile_span("custom_operation", labels) as sample:
        labels["key"] = "changed"
    assert sample.labels == {"key": "value"}


def test_a_span_needs_a_name() -> None:
    with pytest.raises(ValueError, match="non-empty name"), profile_span(""):
        pass


# ---------------------------------------------------------------------- manual records


def test_record_profile_builds_a_finished_sample() -> None:
    sample = record_profile("custom_operation", 12.5, {"key": "value"})
    assert sample == ProfileSample("custom_operation", {"key": "value"}, 12.5)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "3"])
def test_record_profile_refuses_a_duration_that_is_not_finite_and_non_negative(
    bad: object,
) -> None:
    with pytest.raises(ValueError, match="duration_ms"):
        record_profile("custom_operation", bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- where samples go


def test_samples_go_to_the_active_metrics_only() -> None:
    mine, other = Metrics(), Metrics()
    with mine.activate():
        with profile_span("strategy_decision"):
            pass
        record_profile("strategy_decision", 2.0)
    assert count(mine, "strategy_decision") == 2
    assert count(other, "strategy_decision") == 0


def test_spans_outside_any_active_metrics_only_measure() -> None:
    metrics = Metrics()
    assert active_sink() is None
    with profile_span("strategy_decision") as sample:
        pass
    record_profile("strategy_decision", 1.0)
    assert sample.duration_ms is not None
    assert count(metrics, "strategy_decision") == 0


def test_the_innermost_activation_wins_and_the_outer_one_comes_back() -> None:
    outer, inner = Metrics(), Metrics()
    with outer.activate():
        with inner.activate():
            record_profile("fetch_positions", 1.0)
        record_profile("fetch_positions", 1.0)
        assert active_sink() is outer
    assert active_sink() is None
    assert (count(outer, "fetch_positions"), count(inner, "fetch_positions")) == (1, 1)


def test_any_sink_can_be_activated() -> None:
    sink = ListSink()
    with activate(sink):
        record_profile("custom_operation", 4.0)
    assert sink.samples == [ProfileSample("custom_operation", {}, 4.0)]


def test_a_failed_block_is_recorded_but_an_interrupted_one_is_not() -> None:
    sink = ListSink()
    with activate(sink):
        with pytest.raises(OSError), profile_span("fetch_positions"):
            raise OSError("read failed")
        with pytest.raises(Interrupted), profile_span("fetch_positions") as interrupted:
            raise Interrupted
    assert [s.failed for s in sink.samples] == [True]  # the interrupted span did not finish
    assert interrupted.duration_ms is not None  # ...but it was measured


def test_dedicated_histograms_file_results_as_ok_or_error() -> None:
    metrics = Metrics()
    with metrics.activate():
        with profile_span("fetch_positions"):
            pass
        with pytest.raises(TimeoutError), profile_span("fetch_positions"):
            raise TimeoutError
        with profile_span("equity_computation", {"result": "error"}):
            pass  # a caller's result label wins over the block's outcome
        with profile_span("strategy_decision"):
            pass  # no dedicated histogram
    assert result_count(metrics, "positions_fetch_seconds", "ok") == 1
    assert result_count(metrics, "positions_fetch_seconds", "error") == 1
    assert result_count(metrics, "equity_computation_seconds", "error") == 1
    assert result_count(metrics, "equity_computation_seconds", "ok") == 0
    assert count(metrics, "fetch_positions") == 2
    assert count(metrics, "strategy_decision") == 1


def test_an_unfinished_sample_is_refused_by_metrics() -> None:
    with pytest.raises(ValueError, match="not finished"):
        Metrics().record_sample(ProfileSample("fetch_positions"))
