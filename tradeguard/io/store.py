"""`EventStore`: the SQLite archive of what happened, and the snapshot a restart resumes from.

Theory of operation (DESIGN §3 "snapshot/restore", §4; issue 6). One SQLite file in WAL mode:

- ``tradeguard_meta``: key/value rows; ``schema_version`` marks the file as a tradeguard store
  of that schema (``PRAGMA application_id`` marks it too, for tools such as ``file``).
- ``events``: the append-only archive (triggers refuse UPDATE and DELETE): one row per
  transition, mode change, trip effect, alert, refused decision, operator action and preflight
  report, each with its wall-clock time and a JSON record.
- ``snapshot``: one row, the layer's latest `ReliabilityLayer.snapshot()`, deadlines as
  wall-clock times. `open_layer` restores from it, so a restarted process keeps every
  restriction with its remaining time: never more permissive.

No blocking call runs on the event loop. Each operation is queued in the order it was called
and the queue is run by one worker thread at a time (the store's own `CapacityLimiter` of 1),
so the queue, not the scheduler, fixes the order of writes. Each operation is one transaction,
except appends: those queued while a write runs are written together (group commit).
WAL with ``synchronous=NORMAL``: a committed write survives the process being killed
(SIGKILL); a power cut may lose the last commits, never the file.

Opening is strict. A missing file is created, built under a temporary name and then renamed,
so a crash during creation never leaves half a store behind. An existing file must be a
readable, writable, intact tradeguard store of this schema, or opening raises `StoreError`
naming the path and the cause: never a silent fresh start. Only ``start_fresh=True``, the
operator's explicit flag, moves a bad file aside (``<path>.corrupt-<timestamp>``) and starts a
new store; it never papers over a fault of the environment (permissions, a read-only or full
disk), which moving the file would not cure.

`StoreRecorder` archives a runtime's effects without waiting (`EventStore.append_nowait`: the
thread encodes, one snapshot per write); appends queued together share one transaction;
`open_layer` builds the layer a process starts with.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import random
import sqlite3
import stat
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Self, assert_never, final

import anyio

from tradeguard.config import Settings
from tradeguard.errors import (
    InvalidObservation,
    InvalidRecord,
    InvalidSnapshot,
    StoreError,
    StoreNotOpen,
)
from tradeguard.fsm import Decision, OrderIntent, ReliabilityLayer, SnapshotChanges
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

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "EventStore",
    "StoreRecorder",
    "effect_record",
    "open_layer",
]

log = logging.getLogger("tradeguard.io.store")

KINDS = ("transition", "mode", "trip", "alert", "refusal", "operator", "preflight")
"""The kinds of archived events.

``transition``: a `Transitioned` (every machine, operator halts included); ``mode``: a
`ModeChanged`; ``trip``: the work a trip ordered (`CancelOpenOrders`, `CancelOrders`,
`DisablePreview`, `MaxAttemptsExceeded`); ``alert``: an `Alert`; ``refusal``: a refused order
decision; ``operator``: an operator action; ``preflight``: a preflight report.
"""

SCHEMA_VERSION = 1
_APPLICATION_ID = 0x54475244  # "TGRD": marks the file as tradeguard's in its SQLite header
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT = 5.0  # seconds a write waits for another connection's lock (a CLI reading)
# Names the library's argument and the command line's flag: whoever reads it can act on it.
_FRESH_HINT = (
    "start_fresh=True (the command line's --start-fresh) moves it aside and starts a new store"
)

_SCHEMA = """
CREATE TABLE tradeguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wall_time REAL NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (wall_time);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event archive is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event archive is append-only'); END;
CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at REAL NOT NULL,
    body TEXT NOT NULL
);
"""

_OS_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "the disk is full",
    errno.ENOTDIR: "a parent of the path is not a directory",
    errno.ENOENT: "its directory does not exist",
    errno.EISDIR: "it is a directory, not a file",
}

_SQLITE_HINTS = {
    "SQLITE_READONLY": "a read-only file or directory",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_CANTOPEN": "a missing directory or no permission",
    "SQLITE_PERM": "no permission",
    "SQLITE_BUSY": "another process holds the store's write lock",
}


class _BadFile(Exception):
    """The file is there but is no usable store: ``start_fresh`` may move it aside."""


def _os_cause(err: OSError) -> str:
    cause = _OS_CAUSES.get(err.errno or 0)
    detail = err.strerror or str(err)
    return detail if cause is None or cause == detail.lower() else f"{cause} ({detail})"


def _sqlite_cause(err: sqlite3.Error) -> str:
    name = getattr(err, "sqlite_errorname", None) or type(err).__name__
    hint = next((h for code, h in _SQLITE_HINTS.items() if name.startswith(code)), None)
    if hint is None and name.startswith("SQLITE_IOERR"):
        hint = "an I/O error: a full or failing disk"
    return f"{err} [{name}]" if hint is None else f"{err} [{name}: {hint}?]"


def _is_corruption(err: sqlite3.Error) -> bool:
    name = getattr(err, "sqlite_errorname", None) or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; rolled back when anything in it, or the commit, fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # The error being raised says what went wrong; a failed rollback adds nothing
            # (SQLite has then rolled back by itself, or the connection is unusable anyway).
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# Built once: `json.dumps` with options builds an encoder per call (1.5 µs of a 4 µs record).
_ENCODE_FINITE = json.JSONEncoder(allow_nan=False, sort_keys=True, separators=(",", ":")).encode
_ENCODE_ANY = json.JSONEncoder(allow_nan=True, sort_keys=True, separators=(",", ":")).encode
# Rows (or snapshot symbols) the store's thread encodes before it lets the event loop's thread
# take the GIL: encoding is pure Python/C work that would otherwise hold it for a whole
# switch interval (5 ms) at a time while the loop waits.
_ENCODED_PER_GIL_TURN = 100


def _to_json(
    value: object, what: str, error: type[InvalidObservation], *, finite: bool = True
) -> str:
    if not isinstance(value, Mapping):
        raise error(f"{what} must be a JSON-ready mapping, got {value!r}")
    try:
        return _ENCODE_FINITE(value) if finite else _ENCODE_ANY(value)
    except (TypeError, ValueError) as err:
        raise error(f"{what} is not JSON-ready: {err}") from err


def _require_time(value: object, what: str, error: type[InvalidObservation]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise error(f"{what} must be finite wall-clock seconds, got {value!r}")
    return float(value)


@dataclass(slots=True, eq=False)
class _Job:
    """One queued store operation and, once run, its outcome."""

    # Rows to archive join the rows queued next to them in one transaction (group commit).
    run: Callable[[sqlite3.Connection], Any] | list[_Row]
    what: str
    done: bool = False
    abandoned: bool = False  # the task that asked was cancelled before the job ran
    result: Any = None
    error: Exception | None = None


# A snapshot merged into what the store keeps: saved-at time, its JSON without the symbols
# (or whole, when not spliced), and whether the kept symbols are spliced into it.
_Merged = tuple[float, str, bool]


@dataclass(slots=True, eq=False)
class _Row:
    """One event to archive: ``record`` is JSON text, or a mapping the thread encodes.

    ``snapshot`` (a mapping, or `SnapshotChanges`) replaces the stored snapshot in the
    transaction that archives the row. Each row has its own outcome: a record that cannot
    be encoded is left out alone, never with the rows written next to it.
    """

    kind: str
    when: float
    record: str | Mapping[str, Any] | Callable[[], Mapping[str, Any]]
    snapshot: Mapping[str, Any] | SnapshotChanges | None
    waiter: bool = False  # a task awaits its outcome (else a failure is logged)
    done: bool = False
    id: int | None = None
    error: Exception | None = None


@final
class EventStore(anyio.AsyncContextManagerMixin):
    """The SQLite event archive and restart snapshot of one engine.

    Use as ``async with EventStore(path) as store:``; opening validates the file and leaving
    the block runs every queued operation, then closes it.

    Args:
        path: the store's file; created (with its schema) when it does not exist. Its
            directory must exist.
        start_fresh: the operator's explicit flag: a file that is no usable store (corrupt,
            not a tradeguard store, another schema version) is renamed
            ``<path>.corrupt-<timestamp>`` (see `moved_aside`) and a new store is started.
        read_only: open an existing store for reading only (``tradeguard status``): nothing
            is created or written.

    Attributes:
        path: the store's file.
        start_fresh: whether a bad file may be moved aside (and, in `open_layer`, an
            unrestorable snapshot discarded).
        read_only: whether the store was opened for reading only.
        moved_aside: where ``start_fresh`` moved a bad file, or ``None``.

    Raises:
        InvalidObservation: an empty path, or ``start_fresh`` with ``read_only``.
    """

    def __init__(
        self, path: str | Path, *, start_fresh: bool = False, read_only: bool = False
    ) -> None:
        if not isinstance(path, str | Path) or not str(path) or "\x00" in str(path):
            raise InvalidObservation(f"store path must be a non-empty file path, got {path!r}")
        if start_fresh and read_only:
            raise InvalidObservation("a read-only store cannot start fresh")
        self.path = Path(path)
        self.start_fresh = start_fresh
        self.read_only = read_only
        self.moved_aside: Path | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: deque[_Job] = deque()
        self._conn: sqlite3.Connection | None = None
        self._used = False
        # `append_nowait`: rows not yet handed to the thread, the snapshot they ask for, the
        # writer's wake-up, and the first failed write (raised by the next call).
        self._later: list[_Row] = []
        self._later_signalled = False  # `_write_soon` was set for the rows in `_later`
        self._snapshot_of: Callable[[], Mapping[str, Any] | SnapshotChanges] | None = None
        # The stored snapshot's symbols as encoded entries (``"SYM":{...}``), for merging a
        # `SnapshotChanges` into it; only the store's thread touches it.
        self._saved_symbols: dict[str, str] | None = None
        self._write_soon = anyio.Event()
        self._failed: StoreError | None = None
        # Whether a task is draining the queue in the thread, and the end of its pass.
        self._draining = False
        self._drained = anyio.Event()
        self._in_flight = 0  # jobs the thread took from the queue and is running
        self.transactions = 0
        """Write transactions committed so far (rows queued together share one)."""

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._used:
            raise StoreNotOpen("an EventStore is opened once; make a new one")
        self._used = True
        # Shielded: a connection opened by the thread after a cancellation would leak.
        with anyio.CancelScope(shield=True):
            self._conn = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        try:
            async with anyio.create_task_group() as writer:
                writer.start_soon(self._write_behind)
                try:
                    yield self
                finally:
                    writer.cancel_scope.cancel("store closed")
        finally:
            # Shielded, without a time limit: a thread cannot be interrupted, and the queued
            # writes (the last snapshot among them) must reach the file before it closes.
            with anyio.CancelScope(shield=True):
                self._hand_over()
                await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    # ------------------------------------------------------------------ API

    @property
    def pending(self) -> int:
        """Writes waiting in memory for the store's thread, not yet on disk (a backlog)."""
        return len(self._queue) + len(self._later) + self._in_flight

    async def append(
        self,
        kind: str,
        record: Mapping[str, Any],
        wall_time: float,
        *,
        snapshot: Mapping[str, Any] | None = None,
    ) -> int:
        """Archive one event; with ``snapshot``, also replace the stored snapshot, atomically.

        Args:
            kind: one of `KINDS`.
            record: the event, JSON-ready (no NaN or infinity).
            wall_time: when it happened, wall-clock seconds.
            snapshot: a `ReliabilityLayer.snapshot()` to store in the same transaction.

        Returns:
            The event's id: ids grow in the order events were appended.

        Raises:
            InvalidRecord: an unknown kind, a bad time, a record that is not JSON-ready.
            InvalidSnapshot: ``snapshot`` is not a JSON-ready mapping.
            StoreError: the write failed (read-only, full disk, ...); nothing was written.
        """
        if kind not in KINDS:
            raise InvalidRecord(f"unknown event kind {kind!r}; expected one of {KINDS}")
        when = _require_time(wall_time, "wall_time", InvalidRecord)
        # Encoded by the store's thread; an encoding error is raised here all the same.
        row = _Row(kind, when, record, snapshot, waiter=True)
        await self._submit([row], f"archive an event of kind {kind!r}", writes=True)
        assert row.id is not None  # written (else `_submit` raised the row's error)
        return row.id

    def append_nowait(
        self,
        kind: str,
        record: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        wall_time: float,
        *,
        snapshot_of: Callable[[], Mapping[str, Any] | SnapshotChanges] | None = None,
    ) -> None:
        """Queue one event for the store's thread, which encodes and writes it; returns now.

        Rows queued together are written in one transaction. With ``snapshot_of``, the
        stored snapshot is replaced in the transaction that archives the event, by one
        ``snapshot_of()`` taken (on the event loop) after the event happened: once per
        write, however many events asked for it, and never older than the last event
        archived with it. It may return `SnapshotChanges` (only the symbols that changed),
        which the thread merges into the stored snapshot; the first must be complete.

        ``record`` may be a function that builds the record: the store's thread calls it,
        so the event loop does not pay for building it; it must read only values that never
        change (an effect, say).

        A write that fails is logged, then raised by the next call (and from the block of
        the store), so whoever archives learns the store no longer keeps up with the state.

        Raises:
            InvalidRecord: an unknown kind or a bad time.
            StoreError: the store is read-only, or an earlier queued write failed.
            StoreNotOpen: the store is not open.
        """
        if kind not in KINDS:
            raise InvalidRecord(f"unknown event kind {kind!r}; expected one of {KINDS}")
        when = _require_time(wall_time, "wall_time", InvalidRecord)
        if self._conn is None:
            raise StoreNotOpen("EventStore is not open: use `async with EventStore(path)`")
        if self.read_only:
            raise StoreError(str(self.path), "cannot archive an event: the store is read-only")
        if self._failed is not None:
            raise self._failed
        self._later.append(_Row(kind, when, record, None))
        if snapshot_of is not None:
            self._snapshot_of = snapshot_of
        if not self._later_signalled:  # once per hand-over, not once per row
            self._later_signalled = True
            self._write_soon.set()

    async def save_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the stored snapshot with ``snapshot`` (a `ReliabilityLayer.snapshot()`).

        Raises:
            InvalidSnapshot: not a JSON-ready mapping.
            StoreError: the write failed; the previous snapshot is kept.
        """
        saved_at = time.time()

        def run(conn: sqlite3.Connection) -> None:
            row = self._snapshot_text(self._merge_snapshot(snapshot, saved_at))  # in the thread
            with _transaction(conn):
                conn.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?)", row)

        await self._submit(run, "save the snapshot", writes=True)

    async def load_snapshot(self) -> dict[str, Any] | None:
        """The stored snapshot, or ``None`` when none was saved yet.

        Raises:
            StoreError: it cannot be read or is not a JSON object.
        """

        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT body FROM snapshot WHERE id = 1").fetchone()
            if row is None:
                return None
            try:
                return self._parse_snapshot(row[0])
            except _BadFile as bad:
                raise StoreError(str(self.path), str(bad)) from bad

        snapshot: dict[str, Any] | None = await self._submit(run, "read the snapshot")
        return snapshot

    async def events(
        self,
        since: float | None = None,
        kinds: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Archived events, oldest first.

        Args:
            since: only events at or after this wall-clock time.
            kinds: only these kinds (a collection of `KINDS`).
            limit: at most this many: the most recent ones.

        Returns:
            One dict per event: ``id``, ``wall_time``, ``kind`` and ``record`` (a dict).

        Raises:
            InvalidObservation: a bad filter.
            StoreError: the archive cannot be read.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("wall_time >= ?")
            params.append(_require_time(since, "since", InvalidObservation))
        if kinds is not None:
            if isinstance(kinds, str):
                raise InvalidObservation(f"kinds must be a collection of kinds, got {kinds!r}")
            wanted = sorted(set(kinds))
            if not wanted or any(k not in KINDS for k in wanted):
                raise InvalidObservation(f"kinds must be some of {KINDS}, got {wanted!r}")
            clauses.append(f"kind IN ({', '.join('?' * len(wanted))})")
            params += wanted
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidObservation(f"limit must be a whole number >= 1, got {limit!r}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # The most recent `limit` rows, returned oldest first.
        order = " ORDER BY id DESC LIMIT ?" if limit is not None else " ORDER BY id"
        sql = f"SELECT id, wall_time, kind, record FROM events{where}{order}"
        if limit is not None:
            params.append(limit)

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(sql, params).fetchall()
            if limit is not None:
                rows.reverse()
            return [self._parse_event(*row) for row in rows]

        found: list[dict[str, Any]] = await self._submit(run, "read the archive")
        return found

    # ------------------------------------------------------------------ queue

    async def _submit(
        self,
        run: Callable[[sqlite3.Connection], Any] | list[_Row],
        what: str,
        *,
        writes: bool = False,
    ) -> Any:
        if writes:
            self._check_writable(what)
        else:
            self._check_open()
        self._hand_over()  # rows queued without waiting come first
        job = _Job(run, what)
        self._queue.append(job)  # queued now, so jobs run in the order they were asked for
        try:
            await self._until_done(job)
        except anyio.get_cancelled_exc_class():
            # The job stays queued and runs with the next one (or at close); nobody is
            # left to raise its error to, so `_drain` logs it.
            job.abandoned = True
            if isinstance(run, list):
                for row in run:
                    row.waiter = False
            raise
        if job.error is not None:
            raise job.error
        return job.result

    def _check_open(self) -> None:
        if self._conn is None:
            raise StoreNotOpen("EventStore is not open: use `async with EventStore(path)`")

    def _check_writable(self, what: str) -> None:
        self._check_open()
        if self.read_only:
            raise StoreError(str(self.path), f"cannot {what}: the store was opened read-only")

    async def _until_done(self, job: _Job) -> None:
        # One task drains for everyone: jobs queued while the thread writes are run by the
        # next pass, together (rows in one transaction), not one thread call each.
        while not job.done:
            if self._draining:
                await self._drained.wait()
            else:
                await self._drain_pass()

    async def _drain_pass(self) -> None:
        self._draining = True
        try:
            await anyio.to_thread.run_sync(self._drain, limiter=self._limiter)
        finally:
            self._draining = False
            drained, self._drained = self._drained, anyio.Event()
            drained.set()  # waiters look at their jobs; one of them drains what is left

    def _hand_over(self) -> None:
        """Queue the rows of `append_nowait` for the thread, with one snapshot (on the loop).

        The snapshot is taken now, after every event among the rows happened, and goes with
        the last row: the transaction that archives them replaces the stored snapshot.
        """
        if not self._later:
            return
        rows, self._later = self._later, []
        self._later_signalled = False
        snapshot_of, self._snapshot_of = self._snapshot_of, None
        if snapshot_of is not None:
            rows[-1].snapshot = snapshot_of()  # a dict build; the thread encodes it
        # One job, appended at once: the thread never sees the rows without their snapshot.
        self._queue.append(_Job(rows, f"archive {len(rows)} event(s)", abandoned=True))

    async def _write_behind(self) -> None:
        """Hand the rows of `append_nowait` to the thread each time some are queued.

        Handed over at every wake-up, also while the thread writes (it takes what is queued
        before it finishes its pass), so each hand-over's snapshot covers only what changed
        since the last one: under a burst, many small snapshots on the event loop rather
        than one of everything once the thread is free.
        """
        async with anyio.create_task_group() as passes:
            while True:
                await self._write_soon.wait()
                self._write_soon = anyio.Event()
                self._hand_over()
                if self._queue and not self._draining:
                    self._draining = True  # taken now: the task below runs the passes
                    passes.start_soon(self._drain_while_queued)

    async def _drain_while_queued(self) -> None:
        self._draining = False  # (held only so no second task started)
        while self._queue:
            await self._drain_pass()
        if self._failed is not None:
            raise self._failed  # leaves the store's block: the state is no longer saved

    def _drain(self) -> None:
        """Run every queued job, in order (in the worker thread, one drain at a time).

        Consecutive jobs of rows are written in one transaction (group commit).
        """
        while self._queue:
            job = self._queue.popleft()
            if isinstance(job.run, list):
                group = [job]
                while self._queue and isinstance(self._queue[0].run, list):
                    group.append(self._queue.popleft())
                self._in_flight = sum(len(j.run) for j in group if isinstance(j.run, list))
                try:
                    self._write_rows(group)
                finally:
                    self._in_flight = 0
            else:
                try:
                    if self._conn is None:
                        raise StoreNotOpen("EventStore is closed")
                    job.result = job.run(self._conn)
                except (sqlite3.Error, OSError) as err:
                    job.error = self._error(f"cannot {job.what}", err)
                except Exception as err:  # handed to the task that asked for the job
                    job.error = err
                finally:
                    job.done = True
                self._report(job)

    def _write_rows(self, jobs: list[_Job]) -> None:
        """Encode the rows of ``jobs`` and write them in one transaction (in the thread).

        A row whose record (or snapshot) cannot be encoded is left out alone, with its error;
        the others are written. A failed transaction fails every row in it.
        """
        params: list[tuple[float, str, str]] = []
        snapshot: _Merged | None = None
        taken: list[_Row] = []
        for job in jobs:
            assert isinstance(job.run, list)  # only row jobs are grouped
            for row in job.run:
                try:
                    when, kind, text, merged = self._encode(row)
                except (InvalidRecord, InvalidSnapshot) as err:
                    row.error = err
                    continue
                params.append((when, kind, text))
                taken.append(row)
                snapshot = merged if merged is not None else snapshot
                if len(taken) % _ENCODED_PER_GIL_TURN == 0:
                    time.sleep(0)  # the event loop's turn (see _ENCODED_PER_GIL_TURN)
        if taken:
            failure = self._commit(params, snapshot)
            if isinstance(failure, int):
                # One writer, one transaction: the rows' ids are consecutive up to this one.
                for number, row in enumerate(taken, failure - len(taken) + 1):
                    row.id = number
            else:
                for row in taken:
                    row.error = failure
        for job in jobs:
            assert isinstance(job.run, list)
            for row in job.run:
                row.done = True
            job.error = next((r.error for r in job.run if r.error is not None), None)
            job.result = job.run[-1].id if job.run else None
            job.done = True
            self._report_rows(job.run)

    def _commit(
        self, params: list[tuple[float, str, str]], snapshot: _Merged | None
    ) -> int | Exception:
        """Write the rows (and the snapshot) in one transaction: the last row's id, or why not."""
        try:
            if self._conn is None:
                raise StoreNotOpen("EventStore is closed")
            with _transaction(self._conn):
                self._conn.executemany(
                    "INSERT INTO events (wall_time, kind, record) VALUES (?, ?, ?)", params
                )
                if snapshot is not None:
                    # Put together once per transaction, whatever number of changes it merged.
                    saved = self._snapshot_text(snapshot)
                    self._conn.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?)", saved)
                last = int(self._conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        except (sqlite3.Error, OSError) as err:
            return self._error(f"cannot archive {len(params)} event(s)", err)
        except Exception as err:  # StoreNotOpen: handed to the tasks that asked
            return err
        self.transactions += 1
        return last

    def _report_rows(self, rows: list[_Row]) -> None:
        # Nobody waits for a queued row: log its error (once per cause), and keep the first
        # failed write for `append_nowait` to raise.
        logged: set[int] = set()
        for row in rows:
            error = row.error
            if error is None or row.waiter or id(error) in logged:
                continue
            logged.add(id(error))
            log.error("event store %s: %s", self.path, error, exc_info=error)
            if self._failed is None and isinstance(error, StoreError):
                self._failed = error

    def _encode(self, row: _Row) -> tuple[float, str, str, _Merged | None]:
        record = row.record
        if callable(record):
            record = record()  # built here, off the event loop (see `append_nowait`)
        if type(record) is dict:  # the usual row: `_to_json` without its checks' calls
            try:
                text = _ENCODE_FINITE(record)
            except (TypeError, ValueError) as err:
                raise InvalidRecord(f"record is not JSON-ready: {err}") from err
        elif isinstance(record, str):
            text = record
        else:
            text = _to_json(record, "record", InvalidRecord)
        snap = None if row.snapshot is None else self._merge_snapshot(row.snapshot, row.when)
        return row.when, row.kind, text, snap

    def _report(self, job: _Job) -> None:
        # Nobody waits for an abandoned job: log its error, and keep the first failed write
        # for `append_nowait` to raise.
        if job.error is not None and job.abandoned:
            log.error("event store %s: %s", self.path, job.error, exc_info=job.error)
            if self._failed is None and isinstance(job.error, StoreError):
                self._failed = job.error

    def _close(self) -> None:
        self._drain()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as err:
                raise self._error("cannot close", err) from err

    def _error(self, doing: str, err: sqlite3.Error | OSError) -> StoreError:
        cause = _os_cause(err) if isinstance(err, OSError) else _sqlite_cause(err)
        store_error = StoreError(str(self.path), f"{doing}: {cause}")
        store_error.__cause__ = err
        return store_error

    # ------------------------------------------------------------------ rows

    def _merge_snapshot(
        self, snapshot: Mapping[str, Any] | SnapshotChanges, default: float
    ) -> _Merged:
        """Encode a snapshot into what is kept of the stored one (in the store's thread).

        Each symbol is encoded on its own and kept, so `SnapshotChanges` re-encode only the
        symbols that changed; `_snapshot_text` puts the body together: the rest of the
        snapshot plus every kept symbol.
        """
        whole: Mapping[str, Any] = (
            snapshot.snapshot if isinstance(snapshot, SnapshotChanges) else snapshot
        )
        complete = not isinstance(snapshot, SnapshotChanges) or snapshot.complete
        if not isinstance(whole, Mapping):
            raise InvalidSnapshot(f"snapshot must be a JSON-ready mapping, got {whole!r}")
        symbols = whole.get("symbols")
        if not isinstance(symbols, Mapping):
            if not complete:
                raise InvalidSnapshot("snapshot changes must hold a 'symbols' mapping")
            self._saved_symbols = None  # not a layer's snapshot: nothing to merge into
            head, spliced = _to_json(whole, "snapshot", InvalidSnapshot, finite=False), False
        else:
            if not complete and self._saved_symbols is None:
                raise InvalidSnapshot(
                    "snapshot changes merge into a complete snapshot written before: none was"
                )
            head = _to_json(
                {k: v for k, v in whole.items() if k != "symbols"},
                "snapshot",
                InvalidSnapshot,
                finite=False,
            )
            spliced = True
            changed = {}
            for number, (symbol, saved) in enumerate(symbols.items(), 1):
                if number % _ENCODED_PER_GIL_TURN == 0:
                    time.sleep(0)  # the event loop's turn (see _ENCODED_PER_GIL_TURN)
                if not isinstance(symbol, str):
                    raise InvalidSnapshot(f"snapshot symbols must be strings, got {symbol!r}")
                text = _to_json(saved, f"snapshot of {symbol!r}", InvalidSnapshot, finite=False)
                changed[symbol] = f"{json.dumps(symbol)}:{text}"
            if complete or self._saved_symbols is None:
                self._saved_symbols = changed
            else:
                self._saved_symbols.update(changed)
        saved_at = whole.get("saved_at")
        if not (type(saved_at) is float and math.isfinite(saved_at)):
            saved_at = default
        return saved_at, head, spliced

    def _snapshot_text(self, merged: _Merged) -> tuple[float, str]:
        """The saved-at time and JSON body of the snapshot merged last."""
        saved_at, head, spliced = merged
        if not spliced or self._saved_symbols is None:
            return saved_at, head
        entries = ",".join(self._saved_symbols.values())
        return saved_at, f'{head[:-1]}{"," if len(head) > 2 else ""}"symbols":{{{entries}}}}}'

    def _parse_snapshot(self, body: object) -> dict[str, Any]:
        try:
            snapshot = json.loads(str(body))
        except ValueError as err:
            raise _BadFile(f"the stored snapshot is not valid JSON ({err})") from err
        if not isinstance(snapshot, dict):
            raise _BadFile("the stored snapshot is not a JSON object")
        return snapshot

    def _parse_event(self, event_id: int, wall_time: float, kind: str, text: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except ValueError as err:
            raise StoreError(
                str(self.path), f"archived event {event_id} is corrupt: {err}"
            ) from err
        return {"id": event_id, "wall_time": wall_time, "kind": kind, "record": record}

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        """Open, validate and prepare the store (in the worker thread)."""
        try:
            return self._open_or_create()
        except _BadFile as bad:
            if not self.start_fresh:
                raise StoreError(str(self.path), f"{bad}; {_FRESH_HINT}") from bad
            cause = str(bad)
        self.moved_aside = self._move_aside()
        log.warning(
            "event store %s: %s; moved it aside to %s and started a new store (start_fresh)",
            self.path,
            cause,
            self.moved_aside,
        )
        return self._create()

    def _open_or_create(self) -> sqlite3.Connection:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if self.read_only:
                raise StoreError(str(self.path), "no such file: no store there") from None
            return self._create()
        except OSError as err:
            raise self._error("cannot open", err) from err
        if stat.S_ISDIR(info.st_mode):
            raise StoreError(str(self.path), "it is a directory, not a store file")
        if info.st_size == 0:
            raise _BadFile("the file is empty: not a tradeguard store")
        try:
            with open(self.path, "rb") as file:
                header = file.read(len(_SQLITE_MAGIC))
        except OSError as err:
            raise self._error("cannot read", err) from err
        if header != _SQLITE_MAGIC:
            raise _BadFile("not an SQLite database: not a tradeguard store, or corrupt")
        return self._open_existing()

    def _connect(self, path: Path, mode: str) -> sqlite3.Connection:
        # `mode=rw` never creates a file: a store is only created by `_create`.
        uri = f"{path.absolute().as_uri()}?mode={mode}"
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=_BUSY_TIMEOUT,
            isolation_level=None,  # transactions are explicit: `_transaction`
            check_same_thread=False,  # one worker thread at a time, not always the same one
        )

    def _open_existing(self) -> sqlite3.Connection:
        try:
            conn = self._connect(self.path, "ro" if self.read_only else "rw")
        except sqlite3.Error as err:
            raise self._error("cannot open", err) from err
        try:
            self._validate(conn)
            if not self.read_only:
                self._prepare_for_writing(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _validate(self, conn: sqlite3.Connection) -> None:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")
            }
            if app_id != _APPLICATION_ID or "tradeguard_meta" not in tables:
                raise _BadFile("not a tradeguard store (an SQLite database of something else)")
            row = conn.execute(
                "SELECT value FROM tradeguard_meta WHERE key = 'schema_version'"
            ).fetchone()
            version = None if row is None else row[0]
            if version != str(SCHEMA_VERSION):
                raise _BadFile(
                    f"store schema version {version!r}; this tradeguard reads version "
                    f"{SCHEMA_VERSION}"
                )
            missing = sorted({"events", "snapshot"} - tables)
            if missing:
                raise _BadFile(f"damaged: table(s) {', '.join(missing)} missing")
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _BadFile(f"corrupt: {'; '.join(problems)}")
            saved = conn.execute("SELECT body FROM snapshot WHERE id = 1").fetchone()
            if saved is not None:
                self._parse_snapshot(saved[0])
        except sqlite3.DatabaseError as err:
            if _is_corruption(err):
                raise _BadFile(f"corrupt: {_sqlite_cause(err)}") from err
            raise self._error("cannot open", err) from err

    def _prepare_for_writing(self, conn: sqlite3.Connection) -> None:
        try:
            journal = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if journal.lower() != "wal":
                raise StoreError(str(self.path), f"cannot use WAL mode (journal mode {journal})")
            conn.execute("PRAGMA synchronous=NORMAL")
            # A write now, so a read-only file or directory, or a full disk, fails at startup
            # and not at the first transition.
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO tradeguard_meta VALUES ('opened_at', ?)",
                    (repr(time.time()),),
                )
        except (sqlite3.Error, OSError) as err:
            raise self._error("cannot write", err) from err

    def _create(self) -> sqlite3.Connection:
        building = self.path.with_name(self.path.name + ".creating")
        try:
            if not stat.S_ISDIR(os.stat(self.path.parent).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        except OSError as err:
            raise self._error(f"cannot create a store in {str(self.path.parent)!r}", err) from err
        try:
            building.unlink(missing_ok=True)  # left by a crash during an earlier creation
            building.touch(exist_ok=False)  # a plain OS error here names the cause best
            conn = self._connect(building, "rwc")
            try:
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                conn.executescript(_SCHEMA)
                conn.executemany(
                    "INSERT INTO tradeguard_meta VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(time.time()))],
                )
            finally:
                conn.close()
            os.replace(building, self.path)
        except (sqlite3.Error, OSError) as err:
            with contextlib.suppress(OSError):  # the error being raised is the news
                building.unlink(missing_ok=True)
            raise self._error("cannot create a store", err) from err
        log.info("event store %s: created", self.path)
        return self._open_existing()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(aside):
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.rename(self.path, aside)
            # The WAL and its index belong to the bad file: a new store must not replay them.
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if os.path.lexists(side):
                    os.rename(side, aside.with_name(aside.name + suffix))
        except OSError as err:
            raise self._error("cannot move the bad file aside", err) from err
        return aside


# ---------------------------------------------------------------------- recording


def _reasons(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    return [
        {
            "guard": r.guard,
            "scope": r.scope,
            "state": str(r.state),
            "seconds_until_lift": r.seconds_until_lift,
        }
        for r in reasons
    ]


# The archive kind of each effect (None: not archived), read on the event loop; the record
# itself is built by `_record_of`, for the recorder in the store's thread.
_KINDS_OF_EFFECTS: dict[type, str | None] = {
    Transitioned: "transition",
    ModeChanged: "mode",
    Alert: "alert",
    CancelOpenOrders: "trip",
    CancelOrders: "trip",
    DisablePreview: "trip",
    MaxAttemptsExceeded: "trip",
    Reconnect: None,
    CloseConnection: None,
}


def effect_record(effect: Effect) -> tuple[str, dict[str, Any]] | None:
    """The archive kind and JSON-ready record of an effect; ``None`` for feed plumbing.

    Every record names its effect (``"effect": "Transitioned"``). `Reconnect` and
    `CloseConnection` are not archived: the transitions they go with are.
    """
    kind = _KINDS_OF_EFFECTS[type(effect)]
    return None if kind is None else (kind, _record_of(effect))


def _record_of(effect: Effect) -> dict[str, Any]:
    """The record of an archived effect (the store's thread calls this for the recorder)."""
    name = type(effect).__name__
    match effect:
        case Transitioned():
            return {
                "effect": name,
                "machine": effect.machine,
                "scope": effect.scope,
                "source": effect.source,
                "dest": effect.dest,
                "trigger": effect.trigger,
            }
        case ModeChanged():
            return {
                "effect": name,
                "scope": effect.scope,
                "source": effect.source.name,
                "dest": effect.dest.name,
                "reasons": _reasons(effect.reasons),
            }
        case Alert():
            return {
                "effect": name,
                "severity": effect.severity,
                "title": effect.title,
                "detail": effect.detail,
            }
        case CancelOpenOrders() | DisablePreview():
            return {"effect": name, "reason": effect.reason}
        case CancelOrders():
            return {"effect": name, "order_ids": list(effect.order_ids), "reason": effect.reason}
        case MaxAttemptsExceeded():
            return {"effect": name, "feed": effect.feed, "pause_seconds": effect.pause_seconds}
        case Reconnect() | CloseConnection():
            raise InvalidRecord(f"{name} is not archived (feed plumbing)")
        case _:
            assert_never(effect)


@final
class StoreRecorder:
    """Archives a runtime's effects and keeps the stored snapshot current.

    Register with ``runtime.on_effect(recorder.on_effect)``. Every transition, mode change,
    trip effect and alert is archived, in the order the runtime runs them. Nothing is encoded
    or awaited on the event loop: records go to the store's thread, which encodes them and
    writes those queued together in one transaction, with the snapshot brought up to date
    after the last transition among them, so the stored snapshot is never older than the
    last archived transition. Only what changed is saved again: the layer's
    `ReliabilityLayer.snapshot_changes` (the symbols that changed since the last write, and
    the small global part), merged by the store's thread into the stored snapshot.

    A failed write raises `StoreError` out of the next callback (stopping the runtime) and
    out of the store's block: an engine whose state can no longer be saved could restart
    more permissive than it stopped.

    Args:
        store: an open `EventStore`.
        layer: the runtime's layer (the one `open_layer` returned).
        wall_clock: wall-clock seconds, for the archive's times.
    """

    def __init__(
        self,
        store: EventStore,
        layer: ReliabilityLayer,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.layer = layer
        self._wall_clock = wall_clock
        # Every symbol, taken now, at start-up, while that is cheap: the first write merges
        # what changed since into it, so no write on a busy event loop saves every symbol.
        self._seed: SnapshotChanges | None = layer.snapshot_changes()
        self._through = self._seed.through  # the layer's last change already handed over

    def _snapshot_changes(self) -> SnapshotChanges:
        changes = self.layer.snapshot_changes(self._through)
        self._through = changes.through
        seed, self._seed = self._seed, None
        if seed is None or changes.complete:
            return changes
        symbols = {**seed.snapshot["symbols"], **changes.snapshot["symbols"]}
        return SnapshotChanges(changes.through, {**changes.snapshot, "symbols": symbols}, True)

    def on_effect(self, effect: Effect) -> None:
        """Queue ``effect`` for the archive (for a transition, with the snapshot); returns
        at once: the store's thread encodes and writes (see `EventStore.append_nowait`).

        Raises:
            StoreError: an earlier write failed, or the store is read-only.
        """
        kind = _KINDS_OF_EFFECTS[type(effect)]
        if kind is None:
            return
        # Built by the store's thread (effects never change): the loop only queues it.
        record = partial(_record_of, effect)
        wall = self._wall_clock()
        if isinstance(effect, Transitioned):
            # Stamped with when it happened, though run a moment later.
            wall -= max(0.0, self.layer.clock() - effect.at)
            # One snapshot per write, taken when the rows are handed over: coalesced, and
            # never older than the transitions archived with it.
            self.store.append_nowait(kind, record, wall, snapshot_of=self._snapshot_changes)
        else:
            self.store.append_nowait(kind, record, wall)

    async def record_refusal(
        self, symbol: str, decision: Decision, *, intent: OrderIntent | None = None
    ) -> None:
        """Archive a refused order decision, with its reasons; returns once it is written.

        Raises:
            InvalidRecord: the decision allowed the order.
            StoreError: the write failed.
        """
        record = _refusal_record(symbol, decision, intent)
        await self.store.append("refusal", record, self._wall_clock())

    def refusal_nowait(
        self, symbol: str, decision: Decision, *, intent: OrderIntent | None = None
    ) -> None:
        """Queue a refused order decision for the archive, like `record_refusal`, without
        waiting: refusals queued together share one transaction (the `Engine` uses this).

        Raises:
            InvalidRecord: the decision allowed the order.
            StoreError: an earlier queued write failed.
        """
        record = _refusal_record(symbol, decision, intent)
        self.store.append_nowait("refusal", record, self._wall_clock())

    async def record_operator(self, action: str, **fields: Any) -> None:
        """Archive an operator action (``"halt"``, ``"resume"``, ``"reset"``, ...) and its
        details (JSON-ready: who, why, which guard or symbol); returns once it is written."""
        await self.store.append("operator", _operator_record(action, fields), self._wall_clock())

    def operator_nowait(self, action: str, **fields: Any) -> None:
        """Queue an operator action for the archive, like `record_operator`, without waiting."""
        self.store.append_nowait("operator", _operator_record(action, fields), self._wall_clock())

    async def record_preflight(self, report: Mapping[str, Any]) -> None:
        """Archive a preflight report (JSON-ready)."""
        await self.store.append("preflight", dict(report), self._wall_clock())


def _refusal_record(symbol: str, decision: Decision, intent: OrderIntent | None) -> dict[str, Any]:
    if decision.allowed:
        raise InvalidRecord(f"not a refusal: {decision!r}")
    record: dict[str, Any] = {
        "symbol": symbol,
        "mode": decision.mode.name,
        "reasons": _reasons(decision.reasons),
        "max_quantity": None if decision.max_quantity is None else str(decision.max_quantity),
    }
    if intent is not None:
        record |= {"side": intent.side.value, "quantity": str(intent.quantity)}
    return record


def _operator_record(action: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(action, str) or not action.strip():
        raise InvalidRecord(f"action must be a non-empty string, got {action!r}")
    return {"action": action, **fields}


async def open_layer(
    settings: Settings,
    store: EventStore,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> ReliabilityLayer:
    """The layer a process starts with: restored from the stored snapshot, else fresh.

    A restored layer keeps every restriction with its remaining time (a 300 s cooldown
    killed 100 s in restarts with 200 s left): never more permissive. Register a
    `StoreRecorder` on the runtime that drives it to keep the snapshot current.

    Raises:
        StoreError: the store cannot be read, or its snapshot cannot be restored. With
            ``start_fresh`` an unrestorable snapshot is discarded instead: a fresh layer
            starts, its snapshot replaces the old one and an ``operator`` event says so.
    """
    saved = await store.load_snapshot()
    if saved is None:
        return ReliabilityLayer(settings, clock, rng=rng, wall_clock=wall_clock)
    try:
        return ReliabilityLayer.restore(settings, saved, clock, wall_clock, rng=rng)
    except InvalidSnapshot as err:
        if not store.start_fresh:
            cause = (
                f"its snapshot cannot be restored ({err}); start_fresh=True (the command "
                "line's --start-fresh) starts without it"
            )
            raise StoreError(str(store.path), cause) from err
        log.warning("event store %s: discarding an unrestorable snapshot: %s", store.path, err)
        layer = ReliabilityLayer(settings, clock, rng=rng, wall_clock=wall_clock)
        record = {"action": "discard_snapshot", "cause": str(err)}
        await store.append("operator", record, wall_clock(), snapshot=layer.snapshot())
        return layer
