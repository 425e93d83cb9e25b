"""``tradeguard preflight`` (and the seed's script alias): exit codes, output, report, archive."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tradeguard.cli import main
from tradeguard.io.exchange.auth import ApiCredentials

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_canary_against_the_embedded_exchange_is_ready(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT_TRADER_STORE_PATH", raising=False)
    report = tmp_path / "report.json"
    assert main(["preflight", "--profile", "canary", "--report-path", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2] == "READY"
    assert "checked: the embedded exchange" in out  # what `make preflight` ran against
    assert json.loads(report.read_text())["ready"] is True


def test_an_unreachable_venue_is_not_ready_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ApiCredentials.generate()
    monkeypatch.setenv("COINBASE_API_KEY", key.api_key)
    monkeypatch.setenv("COINBASE_API_SECRET", key.api_secret)
    port = _closed_port()
    argv = [
        "preflight", "--profile", "prod", "--report-path", str(tmp_path / "r.json"),
        "--rest-url", f"http://127.0.0.1:{port}", "--ws-url", f"ws://127.0.0.1:{port}",
    ]  # fmt: skip
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "[FAIL] api_connectivity" in out
    assert "hint:" in out
    assert out.splitlines()[-2] == "NOT READY"
    assert main([*argv, "--warn-only"]) == 0
    out = capsys.readouterr().out
    assert "DIAGNOSTIC ONLY" in out
    assert "READY" not in out.splitlines()
    assert out.splitlines()[-2] == "NOT READY (diagnostic only: exit status 0 under --warn-only)"


def test_a_venue_without_an_api_key_fails_the_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COINBASE_API_KEY", raising=False)
    monkeypatch.delenv("COINBASE_API_SECRET", raising=False)
    argv = [
        "preflight", "--profile", "prod", "--report-path", str(tmp_path / "r.json"),
        "--rest-url", "http://127.0.0.1:1", "--ws-url", "ws://127.0.0.1:1",
    ]  # fmt: skip
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "[FAIL] config" in out and "no API key" in out
    assert "COINBASE_API_KEY" in out  # the hint says what to set


@pytest.mark.parametrize(
    "argv",
    [
        ["preflight", "--profile", "staging"],
        ["preflight", "--rest-url", "http://127.0.0.1:1"],
        ["preflight", "--symbols", ","],
    ],
)
def test_bad_usage_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_the_report_is_archived_in_the_event_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "events.db"
    monkeypatch.setenv("GPT_TRADER_STORE_PATH", str(store))
    assert main(["preflight", "--profile", "canary"]) == 0
    written = list(tmp_path.glob("preflight-*.json"))
    assert len(written) == 1  # beside the store by default
    capsys.readouterr()
    assert main(["events", "--store", str(store), "--kind", "preflight", "--json"]) == 0
    archived = json.loads(capsys.readouterr().out)
    assert len(archived) == 1


def test_the_seeds_script_name_is_an_alias(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "production_preflight.py"), "--profile", "dev",
         "--report-path", str(tmp_path / "r.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "remote checks off" in result.stdout
