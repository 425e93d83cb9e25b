"""The `tradeguard` command: the replay demo covers every decision-matrix row it can."""

from __future__ import annotations

import io

import pytest

from tradeguard.cli import main
from tradeguard.cli.demo import demo_settings
from tradeguard.cli.replay import run_replay

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


@pytest.mark.parametrize("command", ["demo", "replay"])
def test_a_bad_knob_in_the_environment_stops_demo_and_replay(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RISK_API_ERROR_RATE_THRESHOLD", "abc")
    with pytest.raises(SystemExit) as exit_info:
        main([command])
    assert exit_info.value.code == 2
    assert "RISK_API_ERROR_RATE_THRESHOLD" in capsys.readouterr().err


def test_the_demo_says_which_knobs_it_sets_and_which_environment_values_it_ignores() -> None:
    environ = {"RISK_API_HEALTH_COOLDOWN_SECONDS": "300", "RISK_SLIPPAGE_MAX_PCT": "0.03"}
    settings, lines = demo_settings(environ)
    assert settings.api_health_cooldown_seconds == 3.0  # the demo's timing wins
    assert settings.slippage_max_pct == 0.03  # a knob the demo leaves alone comes through
    text = " ".join(line.strip() for line in lines)
    assert "RISK_API_HEALTH_COOLDOWN_SECONDS=3," in text
    assert text.endswith("values of RISK_API_HEALTH_COOLDOWN_SECONDS are not used")
    assert "RISK_SLIPPAGE_MAX_PCT" not in text


def test_the_replay_names_the_environment_knobs_it_does_not_use() -> None:
    out = io.StringIO()
    assert run_replay(seed=7, out=out, environ={"RISK_API_HEALTH_COOLDOWN_SECONDS": "10"}) == 0
    first = out.getvalue().splitlines()[0]
    assert (
        first
        == "knobs: the replay runs on the defaults; not used: RISK_API_HEALTH_COOLDOWN_SECONDS"
    )
