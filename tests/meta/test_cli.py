"""The `tradeguard` command: the replay demo covers every decision-matrix row it can."""

from __future__ import annotations

import io

import pytest

from tradeguard._replay import run_replay
from tradeguard.cli import main

ROWS = [
    "api_health",
    "mark_staleness",
    "slippage",
    "validation",
    "preview",
    "broker_outage",
    "reconciliation",
    "websocket",
    "operator",
]


def test_demo_replays_every_row_and_lets_no_opening_order_through() -> None:
    out = io.StringIO()
    assert run_replay(seed=7, out=out) == 0
    text = out.getvalue()
    for row in ROWS:
        assert f"=== [{row}]" in text, row
    assert "opening orders allowed while restricted: 0" in text
    assert "result: OK" in text
    assert "DEGRADED" in text and "on_max_attempts_exceeded" in text


def test_demo_repeats_exactly_for_a_seed() -> None:
    first, second = io.StringIO(), io.StringIO()
    run_replay(seed=3, out=first)
    run_replay(seed=3, out=second)
    assert first.getvalue() == second.getvalue()


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--duration", "10"],
        ["demo", "--symbols", "BTC-USD"],
    ],
)
def test_demo_refuses_a_run_too_short_or_with_one_symbol(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
