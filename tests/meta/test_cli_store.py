"""`tradeguard status` and `tradeguard events`: what an operator reads from a store or a runtime.

Exit statuses: 0 read, 1 the store or runtime cannot be read (with its error), 2 bad usage.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from status_stub import serving_status

from tradeguard import ReliabilityLayer, Settings, TradingMode
from tradeguard.cli import _KINDS, main
from tradeguard.fsm import events as ev
from tradeguard.io.store import KINDS, EventStore, StoreRecorder
from tradeguard.testing import ManualClock

COOLDOWN = 300.0
MARK = ev.MarkUpdate("BTC-USD")


async def record_a_cooldown(path: Path) -> None:
    """api_health tripped 10 s ago and recovered 5 s ago; BTC-USD marked; ETH-USD halted."""
    clock = ManualClock(wall_offset=time.time() - 10)
    layer = ReliabilityLayer(Settings(), clock, wall_clock=clock.wall)
    async with EventStore(path) as store:
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        for effect in [*layer.observe(ev.RateLimitUsage(0.95)), *layer.observe(MARK)]:
            recorder.on_effect(effect)  # as a runtime would, right away
        clock.advance(5)
        for effect in [
            *layer.observe(ev.RateLimitUsage(0.1)),
            *layer.halt("exchange maintenance", symbol="ETH-USD"),
        ]:
            recorder.on_effect(effect)
        await recorder.record_operator("halt", symbol="ETH-USD", by="ops")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GPT_TRADER_STORE_PATH", raising=False)
    path = tmp_path / "store.db"
    anyio.run(record_a_cooldown, path)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


# --- status --------------------------------------------------------------------------------


def test_status_from_a_store_shows_the_mode_each_restriction_and_the_time_left(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["status", "--store", str(store)], capsys)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"source: store {store} (snapshot saved ")
    assert "global mode: REDUCE_ONLY" in lines
    [api] = [line for line in lines if line.strip().startswith("api_health (global)")]
    assert "COOLDOWN" in api and "REDUCE_ONLY" in api
    left = float(api.split("lifts in ")[1].removesuffix(" s"))
    assert COOLDOWN - 5 - 60 < left <= COOLDOWN - 5
    assert any("operator (ETH-USD): HALTED" in line and "maintenance" in line for line in lines)
    assert "  BTC-USD: REDUCE_ONLY (own ALLOW)" in lines
    assert "  ETH-USD: PAUSED, no mark yet" in lines
    assert not any("validation" in line for line in lines)  # healthy guards are not listed


def test_status_json_is_the_layer_status(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["status", "--store", str(store), "--json"], capsys)
    assert status == 0
    view = json.loads(out)
    assert view["mode"] == "REDUCE_ONLY"
    api = view["global"]["guards"]["api_health"]
    assert api["state"] == "COOLDOWN"
    assert COOLDOWN - 5 - 60 < api["seconds_until_lift"] <= COOLDOWN - 5
    assert view["symbols"]["ETH-USD"]["effective_mode"] == "PAUSED"


def test_status_reads_the_store_named_in_the_environment(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT_TRADER_STORE_PATH", str(store))
    status, out, _ = run(["status"], capsys)
    assert status == 0
    assert "global mode: REDUCE_ONLY" in out


def test_status_of_an_empty_store_says_a_restart_starts_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.db"

    async def create() -> None:
        async with EventStore(path):
            pass

    anyio.run(create)
    status, out, _ = run(["status", "--store", str(path)], capsys)
    assert status == 0
    assert "no snapshot yet" in out
    assert "global mode: ALLOW" in out
    assert "restrictions: none" in out


def test_a_corrupt_store_exits_1_with_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"\x00garbage" * 100)
    for command in (["status", "--store", str(path)], ["events", "--store", str(path)]):
        status, out, err = run(command, capsys)
        assert (status, out) == (1, "")
        assert str(path) in err and "not an SQLite database" in err
    assert path.read_bytes() == b"\x00garbage" * 100  # reading never repairs or replaces


def test_a_missing_store_exits_1_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.db"
    status, _, err = run(["status", "--store", str(path)], capsys)
    assert status == 1
    assert str(path) in err and "no such file" in err
    assert not path.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],  # no --store and no GPT_TRADER_STORE_PATH
        ["events"],
        ["status", "--store", "x.db", "--url", "http://127.0.0.1:1/status"],
        ["status", "--url", "file:///etc/passwd"],
        ["events", "--store", "x.db", "--since", "yesterday"],
        ["events", "--store", "x.db", "--since", "-5"],
        ["events", "--store", "x.db", "--kind", "trade"],
        ["events", "--store", "x.db", "--limit", "0"],
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT_TRADER_STORE_PATH", raising=False)
    status, _, err = run(argv, capsys)
    assert status == 2
    # The command and the problem, without the usage line.
    assert err.startswith(f"tradeguard {argv[0]}: ") and "usage:" not in err


@pytest.fixture
def status_server(store: Path) -> Iterator[str]:
    """A stand-in for a running runtime's ``/status``: the layer status, over real HTTP."""
    clock = ManualClock(wall_offset=time.time())
    layer = ReliabilityLayer(Settings(), clock, wall_clock=clock.wall)
    layer.observe(ev.RateLimitUsage(0.95))
    with serving_status(layer.status()) as url:
        yield url


def test_status_from_a_running_runtime(
    status_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["status", "--url", f"{status_server}/status"], capsys)
    assert status == 0
    assert f"source: runtime {status_server}/status" in out
    assert "global mode: REDUCE_ONLY" in out
    assert "api_health (global): TRIPPED, REDUCE_ONLY, fault present" in out
    status, out, _ = run(["status", "--url", f"{status_server}/status", "--json"], capsys)
    assert json.loads(out)["global"]["guards"]["api_health"]["state"] == "TRIPPED"


def test_a_runtime_that_cannot_be_read_exits_1(
    status_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/status"
    for url in (closed, f"{status_server}/other"):
        status, out, err = run(["status", "--url", url], capsys)
        assert (status, out) == (1, "")
        assert url in err


# --- events --------------------------------------------------------------------------------


def test_events_prints_the_archive_in_order(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["events", "--store", str(store)], capsys)
    assert status == 0
    lines = out.splitlines()
    assert "transition  api_health (global): HEALTHY -> TRIPPED (trip)" in lines[0]
    assert [line.split()[1] for line in lines] == [
        "transition",
        "trip",
        "alert",
        "transition",
        "mode",
        "transition",  # BTC-USD's first mark: mark_staleness NO_MARK -> HEALTHY
        "transition",
        "mode",
        "transition",
        "transition",
        "alert",
        "transition",
        "mode",
        "operator",
    ]
    assert "global: ALLOW -> REDUCE_ONLY because api_health" in lines[4]
    assert lines[-1].endswith("operator    halt: by=ops, symbol=ETH-USD")
    assert "trip        cancel every open order" in lines[1]


def test_events_filter_by_kind_time_and_limit(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def kinds(*args: str) -> list[str]:
        status, out, _ = run(["events", "--store", str(store), *args, "--json"], capsys)
        assert status == 0
        return [event["kind"] for event in json.loads(out)]

    assert kinds("--kind", "mode", "--kind", "operator") == ["mode", "mode", "mode", "operator"]
    assert kinds("--since", "60") == kinds()  # everything happened in the last minute
    # The recovery and the halt, 5 s ago; the trip, 10 s ago, is left out.
    assert kinds("--since", "7") == [
        "transition",
        "transition",
        "alert",
        "transition",
        "mode",
        "operator",
    ]
    assert kinds("--since", "2000-01-01T00:00:00+00:00") == kinds()
    assert kinds("--since", "2999-01-01T00:00") == []
    assert kinds("--limit", "1") == ["operator"]
    status, out, _ = run(["events", "--store", str(store), "--since", "2999-01-01"], capsys)
    assert (status, out) == (0, "no events\n")


def test_events_json_carries_id_time_kind_and_record(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["events", "--store", str(store), "--json", "--kind", "trip"], capsys)
    assert status == 0
    [event] = json.loads(out)
    assert set(event) == {"id", "wall_time", "kind", "record"}
    assert event["record"]["effect"] == "CancelOpenOrders"
    assert abs(event["wall_time"] - (time.time() - 10)) < 60


def test_the_command_line_knows_every_event_kind() -> None:
    assert _KINDS == KINDS


async def record_a_canary(path: Path) -> None:
    """A global operator reduce-only halt for an hour: the seed's canary rollout step."""
    clock = ManualClock(wall_offset=time.time())
    layer = ReliabilityLayer(Settings(), clock, wall_clock=clock.wall)
    async with EventStore(path) as store:
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        for effect in layer.halt("canary", ttl=3600, mode=TradingMode.REDUCE_ONLY):
            recorder.on_effect(effect)


def test_status_shows_a_timed_reduce_only_halt_with_its_mode_and_time_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT_TRADER_STORE_PATH", raising=False)
    path = tmp_path / "canary.db"
    anyio.run(record_a_canary, path)
    status, out, err = run(["status", "--store", str(path)], capsys)
    assert (status, err) == (0, "")
    [halt] = [line for line in out.splitlines() if line.strip().startswith("operator (global)")]
    assert "REDUCE_ONLY" in halt and "'canary'" in halt
    left = float(halt.split("lifts in ")[1].split(" s")[0])
    assert 3600 - 60 < left <= 3600
    assert "global mode: REDUCE_ONLY" in out.splitlines()
