"""Under load (issue 15): cancels never wait behind bookkeeping; the store group-commits.

Bounded in time, asserting behaviour (order, nothing lost, fewer transactions than rows),
never speed: `make bench` (bench/bench_load.py) measures that.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from cancel_only_broker import CancelOnlyBroker

from tradeguard import InvalidObservation, Settings
from tradeguard.fsm import events as ev
from tradeguard.fsm.effects import CancelOpenOrders, Effect, Transitioned
from tradeguard.io import Runtime
from tradeguard.io.store import EventStore, StoreRecorder, effect_record, open_layer

BACKLOG = 400


def backlog(at: float) -> list[Effect]:
    return [
        Transitioned("mark_staleness", f"S{i:03d}-USD", "FRESH", "STALE", "expire", at)
        for i in range(BACKLOG)
    ]


async def settled(store: EventStore, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        while True:
            archived = await store.events()
            if len(archived) >= count and not store.pending:
                return archived
            await anyio.sleep(0.01)


async def test_a_trip_cancels_before_the_records_queued_ahead_of_it(tmp_path: Path) -> None:
    log: list[object] = []

    async def metrics(effect: Effect) -> None:
        await anyio.sleep(0)  # an async callback: a loop pass per effect
        log.append(effect)

    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(Settings(), store)
        async with Runtime(
            layer, broker=CancelOnlyBroker(lambda: log.append("cancel")), alert_sinks=()
        ) as runtime:
            runtime.on_effect(StoreRecorder(store, layer).on_effect)
            runtime.on_effect(metrics)
            queued = backlog(layer.clock())
            runtime.apply(queued)
            trip = runtime.observe(ev.RateLimitUsage(0.95))  # no await: all queued together
            assert any(isinstance(e, CancelOpenOrders) for e in trip)
            # An operator call behind all of it returns once its own effects ran.
            halted = await runtime.halt("load test")
            assert all(e in log for e in halted)
            archived = await settled(store, BACKLOG + len(trip) + len(halted))
            snapshot = await store.load_snapshot()

    # The cancel reached the broker before any of the 400 records was published.
    assert log[0] == "cancel"
    # Publishing kept the queue's order: the records, then the trip's effects as returned.
    assert log[1:] == [*queued, *trip, *halted]
    # Nothing lost from the archive, in order.
    assert [(e["kind"], e["record"]) for e in archived] == [
        effect_record(e) for e in [*queued, *trip, *halted]
    ]
    # The snapshot is no older than the last archived transition.
    assert snapshot is not None
    assert snapshot["global"]["guards"]["api_health"]["state"] == "TRIPPED"
    assert snapshot["global"]["halt"]["state"] == "HALTED"


async def test_concurrent_appends_share_transactions_and_lose_nothing(tmp_path: Path) -> None:
    writers, each = 50, 20
    async with EventStore(tmp_path / "store.db") as store:
        ids: dict[int, list[int]] = {w: [] for w in range(writers)}

        async def writer(w: int) -> None:
            for n in range(each):
                ids[w].append(await store.append("operator", {"w": w, "n": n}, 1.0))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for w in range(writers):
                    tg.start_soon(writer, w)
        archived = await store.events()
        transactions = store.transactions

    assert len(archived) == writers * each
    assert transactions < writers * each  # appends queued during a write were grouped
    by_id = {e["id"]: e["record"] for e in archived}
    for w, got in ids.items():
        assert got == sorted(got)  # each writer's appends in order
        assert [by_id[i] for i in got] == [{"w": w, "n": n} for n in range(each)]


async def test_a_record_that_cannot_be_written_is_left_out_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows written together in one transaction keep their own outcomes: a bad record among
    them is refused (to its caller) or logged (when queued without waiting), and every
    other row of the same transaction is written."""
    async with EventStore(tmp_path / "store.db") as store:
        store.append_nowait("operator", {"n": 1}, 1.0)
        store.append_nowait("operator", {"n": Decimal(2)}, 1.0)  # not JSON-ready
        store.append_nowait("operator", {"n": 3}, 1.0)

        async def bad() -> None:
            with pytest.raises(InvalidObservation, match="not JSON-ready"):
                await store.append("operator", {"n": float("nan")}, 1.0)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(bad)
                tg.start_soon(store.append, "operator", {"n": 4}, 1.0)
        archived = [e["record"]["n"] for e in await store.events()]
        transactions = store.transactions
    assert archived == [1, 3, 4]
    # 1, 2 and 3 were queued together: one transaction, which left the bad row out.
    assert transactions <= 2
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and "not JSON-ready" in logged[0]  # the queued bad row


async def test_a_burst_of_transitions_is_archived_with_a_current_snapshot(tmp_path: Path) -> None:
    symbols = [f"S{i:04d}-USD" for i in range(1000)]
    async with EventStore(tmp_path / "store.db") as store:
        layer = await open_layer(Settings(), store)
        async with Runtime(layer, alert_sinks=()) as runtime:
            runtime.on_effect(StoreRecorder(store, layer).on_effect)
            effects = [e for s in symbols for e in runtime.observe(ev.MarkUpdate(s))]
            effects += await runtime.halt("burst", symbol=symbols[-1])
            expected = [r for e in effects if (r := effect_record(e)) is not None]
            archived = await settled(store, len(expected))
            snapshot = await store.load_snapshot()
            transitions = sum(isinstance(e, Transitioned) for e in effects)
            assert store.transactions < transitions  # one write, one snapshot, for many
    assert [(e["kind"], e["record"]) for e in archived] == expected
    assert snapshot is not None
    assert snapshot["symbols"][symbols[-1]]["halt"]["state"] == "HALTED"
