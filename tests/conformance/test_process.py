"""``tradeguard exchange`` as a process: its first line, its signals, its switches."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests
from conftest import READY_KEYS, start_exchange, stop_exchange


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_plain_http_without_auth_exits_0_on_either_signal(how: signal.Signals) -> None:
    process, ready = start_exchange("--no-auth", "--seed", "3", "--symbols", "BTC-USD")
    try:
        assert set(ready) == READY_KEYS and ready["ca_file"] is None
        assert ready["rest_url"].startswith("http://127.0.0.1:")
        assert ready["ws_url"].startswith("ws://127.0.0.1:")
        assert ready["admin_url"].startswith("http://127.0.0.1:")
        assert ready["api_key"].startswith("organizations/")
        assert ready["api_secret"].startswith("-----BEGIN EC PRIVATE KEY-----")
        # --no-auth: a private route answers without a token.
        accounts = requests.get(f"{ready['rest_url']}/api/v3/brokerage/accounts", timeout=5)
        assert accounts.status_code == 200
        assert [a["currency"] for a in accounts.json()["accounts"]] == ["BTC", "USD"]
    finally:
        status = stop_exchange(process, how)
    assert status == 0


def test_tls_files_are_removed_on_exit() -> None:
    process, ready = start_exchange("--tls")
    ca_file = Path(ready["ca_file"])
    try:
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert ready["rest_url"].startswith("https://") and ready["ws_url"].startswith("wss://")
        served = requests.get(
            f"{ready['rest_url']}/api/v3/brokerage/time", verify=str(ca_file), timeout=5
        )
        assert served.status_code == 200
    finally:
        status = stop_exchange(process, signal.SIGINT)
    assert status == 0 and not ca_file.exists()


def test_bad_usage_exits_2_naming_the_problem() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tradeguard.cli", "exchange", "--symbols", " , "],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--symbols needs at least one symbol" in done.stderr
