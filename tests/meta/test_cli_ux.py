"""The command line as a newcomer meets it: version, help, usage errors, pipes, a bad store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import tradeguard
from tradeguard.cli import main
from tradeguard.io.store import EventStore

CLI = [sys.executable, "-m", "tradeguard.cli"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["--version"], capsys)
    assert (status, out) == (0, f"tradeguard {tradeguard.__version__}\n")
    assert tradeguard.__version__[0].isdigit()


def test_help_is_plain_text_and_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    _, top, _ = run(["--help"], capsys)
    assert "`" not in top and "Run 'tradeguard COMMAND --help'" in top
    _, demo, _ = run(["demo", "--help"], capsys)
    demo = " ".join(demo.split())
    assert "(default: 7)" in demo and "(default: 50.0)" in demo
    _, preflight, _ = run(["preflight", "--help"], capsys)
    preflight = " ".join(preflight.split())
    assert "(default: dev)" in preflight and "canary" in preflight
    _, diagrams, _ = run(["diagrams", "--help"], capsys)
    assert "the directory to write them into (default: diagrams)" in " ".join(diagrams.split())
    for command in ("status", "events", "preflight"):
        _, text, _ = run([command, "--help"], capsys)
        assert "--start-fresh" in text


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["demo", "--duration", "10"], "tradeguard demo: --duration must be at least 30 seconds"),
        (["demo", "--symbols", "BTC-USD"], "tradeguard demo: --symbols needs at least two"),
        (["demo", "--seed", "x"], "tradeguard demo: argument --seed: invalid int value"),
        (["status", "--watch"], "tradeguard status: --watch needs a running runtime's"),
    ],
)
def test_a_usage_error_names_the_command_and_option_without_the_usage_line(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert err.startswith(said)
    assert "usage:" not in err


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    """More events than a pipe buffers (64 KiB), so the writer meets the closed pipe."""
    path = tmp_path / "store.db"

    async def fill() -> None:
        async with EventStore(path) as store:
            for n in range(400):
                record = {"action": "note", "n": n, "why": "x" * 200}
                await store.append("operator", record, time.time())

    anyio.run(fill)
    return path


def test_a_reader_that_stops_early_ends_the_command_quietly(big_store: Path) -> None:
    shell = f"{' '.join(CLI)} events --json --store {big_store} | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert done.stdout == "[\n"
    assert done.stderr == ""  # no BrokenPipeError traceback
    assert done.returncode == 141


def test_a_pipe_closed_before_the_first_write_ends_quietly(big_store: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "events", "--store", str(big_store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read()
    assert (proc.wait(timeout=60), err) == (141, b"")


def test_events_are_one_readable_line_each(
    big_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["events", "--store", str(big_store), "--limit", "2"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[-1].split()[1:3] == ["operator", "note:"]
    assert "n=399" in lines[-1] and "{" not in lines[-1]
    status, out, _ = run(["events", "--store", str(big_store), "--limit", "2", "--json"], capsys)
    assert [e["record"]["n"] for e in json.loads(out)] == [398, 399]


def test_the_corrupt_store_error_names_the_flag_and_the_flag_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"\x00garbage" * 100)
    status, _, err = run(["events", "--store", str(path)], capsys)
    assert status == 1 and "--start-fresh" in err
    status, out, err = run(["status", "--store", str(path), "--start-fresh"], capsys)
    assert status == 0
    assert "moved the unusable store aside" in err
    assert "global mode: ALLOW" in out
    [moved] = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert moved.read_bytes() == b"\x00garbage" * 100
    status, out, _ = run(["events", "--store", str(path)], capsys)
    assert (status, out) == (0, "no events\n")


def test_start_fresh_never_creates_a_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.db"
    for command in ("status", "events"):
        status, _, err = run([command, "--store", str(path), "--start-fresh"], capsys)
        assert status == 1 and "no such file" in err
    assert not path.exists()
