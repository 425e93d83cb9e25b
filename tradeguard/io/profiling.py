"""Profile spans: time a block of code and record it (the seed's ``monitoring.profiling``).

Theory of operation. `profile_span` measures a block with `time.perf_counter` and sets the
sample's ``duration_ms`` when the block ends, also when it raises (the exception goes on). The
finished sample is then handed to the *active sink*: the `tradeguard.io.metrics.Metrics` made
active with ``with metrics.activate():`` in the current context. There is no global registry
(DESIGN §4): the active sink lives in a `contextvars.ContextVar`, so each runtime's tasks
record into their own metrics, and a task inherits the sink that was active where it was
started (anyio copies the starting task's context). A runtime can own a sink
(`tradeguard.io.Runtime.route_profiles`, which `attach_metrics` and the `Engine` call): its
tasks and its trading loop's cycles then record there wherever they are awaited, so spans under
a runtime with metrics are never dropped. A span outside any active sink only measures: its
sample has a duration and goes nowhere.

``record_profile`` hands over a duration measured by other means, the same way.

A span interrupted by cancellation (or any `BaseException` that is not an `Exception`) is
measured but not recorded: the work did not finish, so its duration describes nothing. A span
whose block raises an `Exception` is recorded as failed (``ProfileSample.failed``), which the
dedicated latency histograms file under ``result="error"``.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, final

__all__ = [
    "ProfileSample",
    "ProfileSink",
    "activate",
    "active_sink",
    "profile_span",
    "record_profile",
]


@final
@dataclass(slots=True)
class ProfileSample:
    """One timed run of a named phase.

    Not frozen, unlike our other values: the seed's API yields the sample before the block
    runs and fills ``duration_ms`` in when it ends.

    Attributes:
        name: the phase (the ``phase`` label of ``*_profile_duration_seconds``).
        labels: extra labels given by the caller (kept on the sample; the histogram's only
            label is ``phase``). A ``"result"`` label overrides ``failed`` for the dedicated
            latency histograms.
        duration_ms: milliseconds the block took; ``None`` until it ends.
        failed: whether the block raised.
    """

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    duration_ms: float | None = None
    failed: bool = False


class ProfileSink(Protocol):
    """Where finished samples go; `tradeguard.io.metrics.Metrics` is one."""

    def record_sample(self, sample: ProfileSample) -> None:
        """Record one finished sample (its ``duration_ms`` is set)."""


# The sink of the current context. A ContextVar, not a module global: every task sees the sink
# active where it was started, and two runtimes in one process never share one.
_ACTIVE: contextvars.ContextVar[ProfileSink | None] = contextvars.ContextVar(
    "tradeguard_profile_sink", default=None
)


def active_sink() -> ProfileSink | None:
    """The sink samples of the current context go to, or ``None`` (spans only measure)."""
    return _ACTIVE.get()


@contextmanager
def activate(sink: ProfileSink) -> Iterator[None]:
    """Make ``sink`` the active sink inside the block (and in tasks started from it).

    Prefer `tradeguard.io.metrics.Metrics.activate`, which calls this.
    """
    token = _ACTIVE.set(sink)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextmanager
def profile_span(name: str, labels: Mapping[str, str] | None = None) -> Iterator[ProfileSample]:
    """Time the block; yields its sample, whose ``duration_ms`` is set when the block ends.

    Args:
        name: the phase, e.g. ``"fetch_positions"``.
        labels: extra labels to keep on the sample.

    Raises:
        ValueError: an empty name. Whatever the block raises passes through unchanged, after
            the duration is set.
    """
    sample = ProfileSample(_require_name(name), dict(labels or {}))
    started = time.perf_counter()
    try:
        yield sample
    except Exception:
        sample.duration_ms = (time.perf_counter() - started) * 1000.0
        sample.failed = True
        _record(sample)
        raise
    except BaseException:
        # Cancelled or interrupted: measured, never recorded (the work did not finish).
        sample.duration_ms = (time.perf_counter() - started) * 1000.0
        raise
    sample.duration_ms = (time.perf_counter() - started) * 1000.0
    _record(sample)


def record_profile(
    name: str, duration_ms: float, labels: Mapping[str, str] | None = None
) -> ProfileSample:
    """Record a duration measured by other means (``time.perf_counter`` deltas, in ms).

    Returns:
        The sample, as handed to the active sink (if any).

    Raises:
        ValueError: an empty name, or a duration that is not a finite number >= 0.
    """
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | float):
        raise ValueError(f"duration_ms must be a number of milliseconds, got {duration_ms!r}")
    if not (math.isfinite(duration_ms) and duration_ms >= 0):
        raise ValueError(f"duration_ms must be finite and >= 0, got {duration_ms!r}")
    sample = ProfileSample(_require_name(name), dict(labels or {}), float(duration_ms))
    _record(sample)
    return sample


def _record(sample: ProfileSample) -> None:
    sink = _ACTIVE.get()
    if sink is not None:
        sink.record_sample(sample)


def _require_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a profile span needs a non-empty name, got {name!r}")
    return name
