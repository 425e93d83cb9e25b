"""The SQLite event store: archive, snapshot, restore, and every way a store file can be bad.

Real SQLite files in a temp dir (DESIGN §4); a real `Runtime` on a `ManualClock` where a
cooldown must pass; a real subprocess with a file-size limit for the full disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import typing
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from tradeguard import (
    GuardState,
    InvalidObservation,
    OrderIntent,
    ReliabilityLayer,
    Settings,
    Side,
    StoreError,
    TradingMode,
)
from tradeguard.fsm import Decision
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import (
    Alert,
    CancelOpenOrders,
    CancelOrders,
    CloseConnection,
    DisablePreview,
    Effect,
    MaxAttemptsExceeded,
    ModeChanged,
    Reason,
    Reconnect,
    Transitioned,
)
from tradeguard.io import Runtime
from tradeguard.io.store import KINDS, EventStore, StoreRecorder, effect_record, open_layer
from tradeguard.testing import ManualClock, advance

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0  # the wall clock of the first run, in the ManualClock tests


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.005)


def guard_state(snapshot: dict[str, Any] | None, guard: str = "api_health") -> str:
    if snapshot is None:
        return "(no snapshot)"
    return str(snapshot["global"]["guards"][guard]["state"])


def write_garbage(path: Path) -> bytes:
    garbage = b"this is not a database, it is garbage\x00\xff" * 200
    path.write_bytes(garbage)
    return garbage


async def make_store(path: Path, events: int = 0) -> None:
    async with EventStore(path) as store:
        for i in range(events):
            await store.append("operator", {"action": "test", "i": i, "pad": "x" * 200}, T0 + i)


# --- round trips -----------------------------------------------------------------------------


async def test_a_new_store_is_empty(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        assert await store.load_snapshot() is None
        assert await store.events() == []


async def test_events_and_the_snapshot_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    snapshot = {"version": 1, "saved_at": T0 + 5, "global": {"deadline": float("inf")}}
    async with EventStore(path) as store:
        first = await store.append("transition", {"machine": "api_health"}, T0)
        second = await store.append("alert", {"title": "x", "n": [1, 2]}, T0 + 1)
        await store.save_snapshot(snapshot)
        assert second > first
    async with EventStore(path) as store:
        assert await store.events() == [
            {
                "id": first,
                "wall_time": T0,
                "kind": "transition",
                "record": {"machine": "api_health"},
            },
            {
                "id": second,
                "wall_time": T0 + 1,
                "kind": "alert",
                "record": {"title": "x", "n": [1, 2]},
            },
        ]
        # An infinite deadline (a restriction that never lifts by itself) stays infinite.
        assert await store.load_snapshot() == snapshot


async def test_events_filter_by_time_kind_and_limit(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        for i, kind in enumerate(KINDS):
            await store.append(kind, {"i": i}, T0 + i)
        assert [e["kind"] for e in await store.events()] == list(KINDS)
        assert [e["record"]["i"] for e in await store.events(since=T0 + 5)] == [5, 6]
        assert [e["kind"] for e in await store.events(kinds=["alert", "mode"])] == [
            "mode",
            "alert",
        ]
        # `limit` keeps the most recent, still oldest first.
        assert [e["record"]["i"] for e in await store.events(limit=2)] == [5, 6]
        assert [e["record"]["i"] for e in await store.events(since=T0 + 1, limit=1)] == [6]


async def test_an_append_and_its_snapshot_are_written_together(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        await store.append("transition", {"n": 1}, T0, snapshot={"version": 1, "n": 1})
        assert await store.load_snapshot() == {"version": 1, "n": 1}
        with pytest.raises(InvalidObservation):  # a bad snapshot: neither is written
            await store.append("transition", {"n": 2}, T0, snapshot={"bad": object()})
        assert len(await store.events()) == 1
        assert await store.load_snapshot() == {"version": 1, "n": 1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.append("trade", {}, T0), "unknown event kind 'trade'"),
        (lambda s: s.append("alert", {}, float("nan")), "wall_time"),
        (lambda s: s.append("alert", {"x": float("nan")}, T0), "not JSON-ready"),
        (lambda s: s.append("alert", {"x": Decimal(1)}, T0), "not JSON-ready"),
        (lambda s: s.append("alert", ["not", "a", "mapping"], T0), "mapping"),
        (lambda s: s.events(kinds="alert"), "collection of kinds"),
        (lambda s: s.events(kinds=["alerts"]), "kinds must be some of"),
        (lambda s: s.events(limit=0), "limit"),
        (lambda s: s.events(since=float("inf")), "since"),
    ],
)
async def test_bad_arguments_are_refused_and_nothing_is_written(
    tmp_path: Path, call: Callable[[EventStore], Awaitable[object]], message: str
) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        with pytest.raises(InvalidObservation, match=message):
            await call(store)
        assert await store.events() == []


async def test_the_archive_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with EventStore(path) as store:
        await store.append("alert", {"title": "kept"}, T0)
    conn = sqlite3.connect(path)
    try:
        for sql in ("UPDATE events SET kind = 'mode'", "DELETE FROM events"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()


async def test_a_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await make_store(path, events=1)
    async with EventStore(path, read_only=True) as store:
        assert len(await store.events()) == 1
        with pytest.raises(StoreError, match="read-only"):
            await store.append("alert", {}, T0)
    with pytest.raises(StoreError, match="no such file"):
        async with EventStore(tmp_path / "missing.db", read_only=True):
            pass
    assert not (tmp_path / "missing.db").exists()  # reading never creates a store


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store.db")
    async with store:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        await store.events()


# --- ordering and the event loop ---------------------------------------------------------------


async def test_writes_run_in_the_order_they_were_asked_for(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(store.append, "operator", {"i": i}, T0)
        assert [e["record"]["i"] for e in await store.events()] == list(range(30))


async def test_a_slow_write_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ticks = 0
    appended = anyio.Event()

    async def append(store: EventStore) -> None:
        await store.append("alert", {"title": "late"}, T0)
        appended.set()

    async def tick() -> None:
        nonlocal ticks
        while not appended.is_set():
            ticks += 1
            await anyio.sleep(0.01)

    async with EventStore(path) as store:
        # Another connection holds the write lock: our append waits for it, in its thread.
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(append, store)
                tg.start_soon(tick)
                await anyio.sleep(0.3)
                assert not appended.is_set()  # the write is still waiting for the lock ...
                assert ticks >= 10  # ... while the loop went on running other tasks
                blocker.execute("COMMIT")
                with anyio.fail_after(5):
                    await appended.wait()
        finally:
            blocker.close()
        assert [e["record"] for e in await store.events()] == [{"title": "late"}]


# --- recording a runtime -----------------------------------------------------------------------


async def test_a_runtime_archives_every_transition_in_order(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(Settings(), store)
        recorder = StoreRecorder(store, layer)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(recorder.on_effect)
            effects = runtime.observe(ev.RateLimitUsage(0.95))
            effects += runtime.observe(ev.RateLimitUsage(0.1))

            async def all_archived() -> bool:
                return len(await store.events()) == len(effects)

            await wait_for(all_archived)
        archived = await store.events()
    assert [(e["kind"], e["record"]) for e in archived] == [effect_record(e) for e in effects]
    transitions = [e["record"] for e in archived if e["kind"] == "transition"]
    assert [(t["machine"], t["source"], t["dest"]) for t in transitions] == [
        ("api_health", "HEALTHY", "TRIPPED"),
        ("mode", "ALLOW", "REDUCE_ONLY"),
        ("api_health", "TRIPPED", "COOLDOWN"),
    ]
    assert [e["kind"] for e in archived] == [
        "transition",
        "trip",
        "alert",
        "transition",
        "mode",
        "transition",
    ]
    assert [e["id"] for e in archived] == sorted(e["id"] for e in archived)


async def test_the_snapshot_is_saved_on_every_transition(tmp_path: Path) -> None:
    clock = ManualClock(wall_offset=T0)
    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(Settings(), store, clock=clock, wall_clock=clock.wall)
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(recorder.on_effect)

            async def saved(state: str) -> None:
                async def stored() -> bool:
                    return guard_state(await store.load_snapshot()) == state

                await wait_for(stored)

            runtime.observe(ev.RateLimitUsage(0.95))
            await saved("TRIPPED")
            await advance(runtime, clock, 5)
            runtime.observe(ev.RateLimitUsage(0.1))
            await saved("COOLDOWN")
            snapshot = await store.load_snapshot()
            assert snapshot is not None
            assert snapshot["global"]["guards"]["api_health"]["cooldown_until"] == T0 + 305
            await advance(runtime, clock, 300)  # the timer, not an observation, ends it
            await saved("HEALTHY")
        snapshot = await store.load_snapshot()
        transitions = await store.events(kinds=["transition"])
    assert snapshot is not None and snapshot["global"]["mode"] == "ALLOW"
    # Each transition is archived at the time it happened, on the wall clock.
    assert [(e["record"]["machine"], e["wall_time"]) for e in transitions] == [
        ("api_health", T0),
        ("mode", T0),
        ("api_health", T0 + 5),
        ("api_health", T0 + 305),
        ("mode", T0 + 305),
    ]


async def test_only_symbols_that_changed_are_saved_again(tmp_path: Path) -> None:
    """Issue 15: the recorder merges `snapshot_changes()` into the stored snapshot instead of
    saving the whole layer per write; the merged snapshot restores to the same modes."""
    clock = ManualClock(wall_offset=T0)
    settings = Settings(mark_staleness_threshold_seconds=10)
    symbols = [f"S{i:02d}-USD" for i in range(30)]

    async def stored() -> dict[str, Any]:
        snapshot = await store.load_snapshot()
        assert snapshot is not None
        return snapshot

    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(settings, store, clock=clock, wall_clock=clock.wall)
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(recorder.on_effect)
            for symbol in symbols:
                runtime.observe(ev.MarkUpdate(symbol))  # NO_MARK -> HEALTHY: a change each

            async def all_marked() -> bool:
                saved = (await store.load_snapshot() or {}).get("symbols", {})
                return len(saved) == len(symbols)

            await wait_for(all_marked)
            first = await stored()
            clock.advance(1)
            for symbol in symbols:
                runtime.observe(ev.MarkUpdate(symbol))  # fresh again: no state changes
            for _ in range(settings.slippage_failure_pause_after):
                runtime.observe(ev.SlippageCheck(symbols[0], ok=False))

            async def slippage_saved() -> bool:
                saved = (await stored())["symbols"][symbols[0]]["guards"]["slippage"]
                return bool(saved["state"] != "HEALTHY")

            await wait_for(slippage_saved)
            second = await stored()
    assert second["symbols"][symbols[0]]["guards"]["mark_staleness"]["last_mark"] == T0 + 1
    # The others did not change: what was saved for them was not saved again (their last
    # mark is the older one, which restores stricter, never looser).
    assert all(second["symbols"][s] == first["symbols"][s] for s in symbols[1:])
    restored = ReliabilityLayer.restore(settings, second, clock, clock.wall)
    assert [restored.mode(s) for s in symbols] == [layer.mode(s) for s in symbols]
    assert restored.mode(symbols[0]) is TradingMode.REDUCE_ONLY


async def test_a_failed_write_stops_the_runtime_with_the_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await make_store(path)
    async with EventStore(path, read_only=True) as store:  # every write fails
        layer = await open_layer(Settings(), store)
        with pytest.raises(ExceptionGroup) as group:
            async with Runtime(layer, alert_sinks=()) as runtime:
                runtime.on_effect(StoreRecorder(store, layer).on_effect)
                runtime.observe(ev.RateLimitUsage(0.95))
                await anyio.sleep(5)  # the crash cancels this
    [error] = group.value.exceptions
    while isinstance(error, ExceptionGroup):
        [error] = error.exceptions
    assert isinstance(error, StoreError) and str(path) in str(error)


async def test_refusals_and_operator_actions_are_archived(tmp_path: Path) -> None:
    clock = ManualClock(wall_offset=T0)
    layer = ReliabilityLayer(Settings(), clock, wall_clock=clock.wall)
    async with EventStore(tmp_path / "store.db") as store:
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        intent = OrderIntent("BTC-USD", Side.BUY, Decimal("0.5"))
        decision = layer.decide(intent, position=Decimal(0))  # no mark yet: refused
        await recorder.record_refusal("BTC-USD", decision, intent=intent)
        await recorder.record_operator("halt", symbol="BTC-USD", reason="maintenance", by="ops")
        await recorder.record_preflight({"ok": True, "checks": ["clock"]})
        with pytest.raises(InvalidObservation, match="not a refusal"):
            await recorder.record_refusal("BTC-USD", Decision(True, TradingMode.ALLOW))
        archived = await store.events()
    assert [e["kind"] for e in archived] == ["refusal", "operator", "preflight"]
    refusal = archived[0]["record"]
    assert refusal["symbol"] == "BTC-USD" and refusal["mode"] == "REDUCE_ONLY"
    assert refusal["side"] == "BUY" and refusal["quantity"] == "0.5"
    assert refusal["reasons"][0]["guard"] == "mark_staleness"
    assert refusal["reasons"][0]["state"] == "NO_MARK"
    assert archived[1]["record"] == {
        "action": "halt",
        "symbol": "BTC-USD",
        "reason": "maintenance",
        "by": "ops",
    }


# --- restore -----------------------------------------------------------------------------------


async def run_until_cooldown(path: Path, seconds_into_cooldown: float) -> None:
    """Trip api_health (default 300 s cooldown), recover, and stop some seconds into it."""
    clock = ManualClock(wall_offset=T0)
    async with EventStore(path) as store:
        layer = await open_layer(Settings(), store, clock=clock, wall_clock=clock.wall)
        recorder = StoreRecorder(store, layer, wall_clock=clock.wall)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(recorder.on_effect)
            runtime.observe(ev.RateLimitUsage(0.95))
            runtime.observe(ev.RateLimitUsage(0.1))
            await advance(runtime, clock, seconds_into_cooldown)

            async def cooling() -> bool:
                return guard_state(await store.load_snapshot()) == "COOLDOWN"

            await wait_for(cooling)
    # Closing the store wrote everything queued: what a SIGKILL leaves is tested in
    # test_kill_restart.py.


async def test_a_restart_mid_cooldown_keeps_the_restriction_and_its_remaining_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    await run_until_cooldown(path, 100)
    # The new process: another monotonic origin, and 10 s of wall time passed while down.
    clock = ManualClock(5_000.0, wall_offset=T0 + 100 + 10 - 5_000.0)
    async with EventStore(path) as store:
        layer = await open_layer(Settings(), store, clock=clock, wall_clock=clock.wall)
    api = layer.guard("api_health")
    assert api.state is GuardState.COOLDOWN
    assert api.seconds_until_lift == pytest.approx(300 - 100 - 10)
    assert layer.mode() is TradingMode.REDUCE_ONLY
    layer.observe(ev.MarkUpdate("BTC-USD"))
    opening = layer.decide(OrderIntent("BTC-USD", Side.BUY, Decimal(1)), position=Decimal(0))
    assert not opening.allowed
    clock.advance(189.9)
    layer.tick()
    assert layer.mode() is TradingMode.REDUCE_ONLY  # never more permissive than before
    clock.advance(0.1)
    layer.tick()
    assert layer.mode() is TradingMode.ALLOW


async def test_a_cooldown_that_ended_while_down_ends_at_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await run_until_cooldown(path, 100)
    clock = ManualClock(wall_offset=T0 + 100 + 500)  # down for 500 s: past the deadline
    async with EventStore(path) as store:
        layer = await open_layer(Settings(), store, clock=clock, wall_clock=clock.wall)
    assert layer.guard("api_health").state is GuardState.HEALTHY
    assert layer.mode() is TradingMode.ALLOW


async def test_without_a_snapshot_the_layer_starts_fresh(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(Settings(), store)
    assert layer.mode() is TradingMode.ALLOW
    assert layer.guard("api_health").state is GuardState.HEALTHY


async def test_a_snapshot_that_cannot_be_restored_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with EventStore(path) as store:
        await store.save_snapshot({"version": 99})
    async with EventStore(path) as store:
        with pytest.raises(StoreError, match="snapshot cannot be restored") as err:
            await open_layer(Settings(), store)
    assert str(path) in str(err.value)
    async with EventStore(path, start_fresh=True) as store:  # the operator's flag
        layer = await open_layer(Settings(), store)
        assert layer.mode() is TradingMode.ALLOW
        [note] = await store.events(kinds=["operator"])
        assert note["record"]["action"] == "discard_snapshot"
        snapshot = await store.load_snapshot()
    assert snapshot is not None and snapshot["version"] == 1


# --- bad files ---------------------------------------------------------------------------------


async def test_a_garbage_file_is_a_clear_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    garbage = write_garbage(path)
    with pytest.raises(StoreError) as err:
        async with EventStore(path):
            pass
    assert str(path) in str(err.value)
    assert "not an SQLite database" in str(err.value)
    assert "start_fresh" in str(err.value)  # says how to get out
    assert err.value.path == str(path)
    assert isinstance(err.value, OSError)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


async def test_a_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await make_store(path, events=300)
    size = path.stat().st_size
    with path.open("r+b") as file:  # overwrite pages in the middle of the file
        file.seek(size // 2)
        file.write(b"\xa5" * 8192)
    with pytest.raises(StoreError, match="corrupt") as err:
        async with EventStore(path) as store:
            await store.events()
    assert str(path) in str(err.value)


async def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


async def _other_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id TEXT)")
    conn.commit()
    conn.close()


async def _other_version(path: Path) -> None:
    await make_store(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE tradeguard_meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("prepare", "cause"),
    [
        (_empty_file, "empty"),
        (_other_database, "not a tradeguard store"),
        (_other_version, "schema version '2'"),
    ],
    ids=["empty", "other-database", "other-version"],
)
async def test_a_file_that_is_no_tradeguard_store_is_refused(
    tmp_path: Path, prepare: Callable[[Path], Awaitable[None]], cause: str
) -> None:
    path = tmp_path / "store.db"
    await prepare(path)
    with pytest.raises(StoreError, match=cause):
        async with EventStore(path):
            pass


async def test_start_fresh_moves_a_bad_file_aside_and_starts_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    garbage = write_garbage(path)
    async with EventStore(path, start_fresh=True) as store:
        assert await store.events() == []
        await store.append("alert", {"title": "new"}, T0)
        aside = store.moved_aside
    assert aside is not None and aside.parent == tmp_path
    assert aside.name.startswith("store.db.corrupt-")
    assert aside.read_bytes() == garbage  # kept for a post-mortem
    async with EventStore(path) as store:  # the new store opens without the flag
        assert [e["record"] for e in await store.events()] == [{"title": "new"}]


async def test_start_fresh_keeps_a_good_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await make_store(path, events=2)
    async with EventStore(path, start_fresh=True) as store:
        assert len(await store.events()) == 2
        assert store.moved_aside is None


async def test_a_path_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    path = not_a_dir / "store.db"
    # Refused for root too, and start_fresh cannot cure it.
    for start_fresh in (False, True):
        with pytest.raises(StoreError, match="not a directory") as err:
            async with EventStore(path, start_fresh=start_fresh):
                pass
        assert str(path) in str(err.value)


async def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "store.db"
    with pytest.raises(StoreError, match="does not exist") as err:
        async with EventStore(path):
            pass
    assert str(path) in str(err.value)


async def test_a_directory_is_no_store_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        async with EventStore(tmp_path, start_fresh=True):
            pass
    assert tmp_path.is_dir()


def permissions_are_enforced() -> bool:
    """False for root (or anyone with CAP_DAC_OVERRIDE): it writes into read-only directories."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch, "ro")
        directory.mkdir()
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            (directory / "probe").touch()
        except PermissionError:
            return True
        finally:
            directory.chmod(stat.S_IRWXU)
        return False


@pytest.mark.skipif(not permissions_are_enforced(), reason="root ignores file permissions")
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
async def test_a_read_only_directory_is_a_clear_error(tmp_path: Path, existing: bool) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    path = directory / "store.db"
    if existing:
        await make_store(path, events=1)
        path.chmod(stat.S_IRUSR)
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StoreError) as err:
            async with EventStore(path):
                pass
    finally:
        directory.chmod(stat.S_IRWXU)
    assert str(path) in str(err.value)
    assert "read-only" in str(err.value) or "permission" in str(err.value)


FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys, time
    import anyio
    from tradeguard import StoreError
    from tradeguard.io.store import EventStore

    # Writes past the limit fail as on a full disk (SIGXFSZ ignored: the write returns an error).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    async def main(path):
        async with EventStore(path) as store:
            resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, resource.RLIM_INFINITY))
            try:
                for i in range(1000):
                    await store.append("alert", {"pad": "x" * 4000}, time.time())
            except StoreError as err:
                print("WRITE", err)
            else:
                print("NO ERROR")
            snapshot = await store.load_snapshot()  # the store still reads after the failure
            print("READ", snapshot)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        try:
            async with EventStore(path + ".new"):
                pass
        except StoreError as err:
            print("OPEN", err)

    anyio.run(main, sys.argv[1])
    """
)


def test_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"WRITE", "READ", "OPEN"}, result.stdout
    for key in ("WRITE", "OPEN"):
        assert str(path) in lines[key]
        assert "disk" in lines[key]  # "database or disk is full", or the I/O error it causes
    assert "cannot archive" in lines["WRITE"]
    assert lines["READ"] == "None"


def test_every_effect_is_archived_under_a_known_kind_except_feed_plumbing() -> None:
    reason = Reason("api_health", None, "TRIPPED", None)
    samples: list[Effect] = [
        Transitioned("api_health", None, "HEALTHY", "TRIPPED", "trip", 0.0),
        ModeChanged(None, TradingMode.ALLOW, TradingMode.REDUCE_ONLY, (reason,)),
        CancelOpenOrders("api_health"),
        CancelOrders(("a", "b"), "reconciliation"),
        Alert("critical", "title", "detail"),
        DisablePreview("preview"),
        MaxAttemptsExceeded("market", 300.0),
        Reconnect("market", 1),
        CloseConnection("market", "stale"),
    ]
    assert {type(e) for e in samples} == set(typing.get_args(Effect))
    kinds = {type(e).__name__: effect_record(e) for e in samples}
    assert kinds.pop("Reconnect") is None and kinds.pop("CloseConnection") is None
    for name, found in kinds.items():
        assert found is not None and found[0] in KINDS, name
        assert found[1]["effect"] == name
        assert json.loads(json.dumps(found[1], allow_nan=False)) == found[1]
