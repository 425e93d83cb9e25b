"""``tradeguard status`` and ``tradeguard events``: what the operator reads (issue 6, item 5).

``status`` shows what a process would enforce now: from a store, the layer its snapshot
restores to (exactly what `open_layer` would build, remaining times counted to now); from a
running runtime, its ``/status``. ``events`` prints the archive. Both print for people by
default and JSON with ``--json``. With ``--start-fresh`` they open the store for writing
with ``start_fresh=True``: a corrupt store is moved aside and a new one started, an
unrestorable snapshot discarded (both say so on stderr); a missing store is never created.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from tradeguard.config import Settings
from tradeguard.errors import StoreError
from tradeguard.fsm import BreakerState, FeedState, GuardState
from tradeguard.fsm.views import LayerView, ScopeView
from tradeguard.io.store import EventStore, open_layer

__all__ = ["fetch_status", "parse_since", "run_events", "run_status"]

_URL_TIMEOUT = 5.0


def parse_since(text: str, now: float) -> float:
    """``--since``: seconds ago (``600``) or an ISO 8601 time (``2025-05-01T12:00``; without an
    offset it is local time). Returns wall-clock seconds.

    Raises:
        ValueError: neither.
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds ago must be a finite number >= 0, got {text!r}")
        return now - seconds
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time (2025-05-01T12:00:00) or seconds ago (600), got {text!r}"
        ) from None


def _when(wall: float) -> str:
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="seconds")


def _seconds(value: object) -> str:
    return f"{value:.0f} s" if isinstance(value, int | float) else "?"


# ---------------------------------------------------------------------- status


def run_status(
    *,
    store: Path | None,
    url: str | None,
    settings: Settings,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    start_fresh: bool = False,
) -> int:
    """Print the status from ``store`` or ``url``; returns the exit status (1: unreadable)."""
    if url is not None:
        try:
            status = fetch_status(url)
        except (OSError, ValueError) as problem:  # URLError and HTTPError are OSErrors
            print(f"tradeguard: cannot read the status at {url}: {problem}", file=err)
            return 1
        source = f"runtime {url}"
    else:
        assert store is not None  # the command line passes one of the two
        try:
            _require_existing(store, start_fresh)
            status, saved_at = anyio.run(_status_from_store, store, settings, start_fresh, err)
        except StoreError as problem:
            print(f"tradeguard: {problem}", file=err)
            return 1
        if saved_at is None:
            source = f"store {store} (no snapshot yet: a restart starts fresh)"
        else:
            ago = max(0.0, time.time() - saved_at)
            source = f"store {store} (snapshot saved {_when(saved_at)}, {ago:.0f} s ago)"
    if as_json:
        print(json.dumps(status.to_json(), indent=2, sort_keys=True), file=out)
    else:
        print(f"source: {source}", file=out)
        for line in format_status(status):
            print(line, file=out)
    return 0


def _require_existing(path: Path, start_fresh: bool) -> None:
    # Reading never creates a store; nor does --start-fresh, which opens it for writing.
    if start_fresh and not path.exists():
        raise StoreError(
            str(path), "no such file (--start-fresh repairs a store, never creates one)"
        )


def _open(path: Path, start_fresh: bool) -> EventStore:
    return EventStore(path, start_fresh=True) if start_fresh else EventStore(path, read_only=True)


def _say_moved(store: EventStore, err: TextIO) -> None:
    if store.moved_aside is not None:
        print(f"tradeguard: moved the unusable store aside to {store.moved_aside}", file=err)


async def _status_from_store(
    path: Path, settings: Settings, start_fresh: bool, err: TextIO
) -> tuple[LayerView, float | None]:
    async with _open(path, start_fresh) as store:
        _say_moved(store, err)
        saved = await store.load_snapshot()
        layer = await open_layer(settings, store)  # logs a discarded snapshot
    saved_at = None if saved is None else saved.get("saved_at")
    return layer.view(), saved_at if isinstance(saved_at, int | float) else None


def fetch_status(url: str) -> LayerView:
    """A runtime's ``/status``, read into the typed view (a ValueError names a bad field)."""
    with urllib.request.urlopen(url, timeout=_URL_TIMEOUT) as response:
        body = json.loads(response.read().decode("utf-8"))
    if not isinstance(body, dict) or "mode" not in body or "global" not in body:
        raise ValueError("the answer is not a layer status (no 'mode' and 'global')")
    return LayerView.from_json(body)


def format_status(status: LayerView) -> list[str]:
    """A layer's view for people, one line per item."""
    lines = [f"global mode: {status.mode.name}"]
    restrictions = _restrictions(status.global_scope, "global")
    for symbol, scope in status.symbols.items():
        restrictions += _restrictions(scope, symbol)
    lines.append("restrictions:" if restrictions else "restrictions: none")
    lines += [f"  {line}" for line in restrictions]
    if status.symbols:
        lines.append("symbols:")
        for symbol, scope in status.symbols.items():
            effective, own = scope.effective_mode, scope.mode
            note = "" if effective is own else f" (own {own.name})"
            mark = "" if scope.has_mark else ", no mark yet"
            lines.append(f"  {symbol}: {effective.name}{note}{mark}")
    for category, breaker in status.breakers.items():
        if breaker.state is not BreakerState.CLOSED:
            lines.append(f"breaker {category}: {breaker.state.name}")
    for name, feed in status.feeds.items():
        if feed.state is not FeedState.CONNECTED:
            lines.append(f"feed {name}: {feed.state.name} (attempts {feed.attempts})")
    if not status.preview_enabled:
        lines.append("preview: disabled (operator reset of 'preview' re-enables it)")
    return lines


def _restrictions(scope: ScopeView, where: str) -> list[str]:
    found = []
    for name, guard in scope.guards.items():
        if guard.state is GuardState.HEALTHY:
            continue
        left = guard.seconds_until_lift
        when = "fault present" if left is None else f"lifts in {_seconds(left)}"
        found.append(f"{name} ({where}): {guard.state.name}, {guard.restriction.name}, {when}")
    halt = scope.halt
    if halt.in_force:
        left = halt.seconds_until_lift
        when = "until resumed" if left is None else f"lifts in {_seconds(left)}"
        state, mode = halt.state.name, halt.mode.name
        found.append(f"operator ({where}): {state}, {mode}, {when}, reason {halt.reason!r}")
    return found


# ---------------------------------------------------------------------- events


def run_events(
    *,
    store: Path,
    since: float | None,
    kinds: list[str] | None,
    limit: int | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    start_fresh: bool = False,
) -> int:
    """Print the archive, one line per event (or JSON); returns the exit status (1: unreadable
    store)."""

    async def read() -> list[dict[str, Any]]:
        async with _open(store, start_fresh) as opened:
            _say_moved(opened, err)
            return await opened.events(since=since, kinds=kinds, limit=limit)

    try:
        _require_existing(store, start_fresh)
        events = anyio.run(read)
    except StoreError as problem:
        print(f"tradeguard: {problem}", file=err)
        return 1
    if as_json:
        print(json.dumps(events, indent=2), file=out)
        return 0
    for event in events:
        print(format_event(event), file=out)
    if not events:
        print("no events", file=out)
    return 0


def format_event(event: dict[str, Any]) -> str:
    """One archived event for people, on one line: local time, kind, what happened.

    Each kind's record (`tradeguard.io.store.effect_record` and the recorder's ``record_*``)
    gets its own summary; a field this version does not know is shown as ``name=value``.
    """
    record: dict[str, Any] = event["record"]
    kind = event["kind"]
    match kind:
        case "transition":
            what = (
                f"{record.get('machine')} ({_where(record)}): {record.get('source')} -> "
                f"{record.get('dest')} ({record.get('trigger')})"
            )
        case "mode":
            guards = _guards(record)
            because = f" because {guards}" if guards else ""
            what = f"{_where(record)}: {record.get('source')} -> {record.get('dest')}{because}"
        case "trip":
            what = _trip(record)
        case "alert":
            what = f"{record.get('severity')}: {record.get('title')}: {record.get('detail')}"
        case "refusal":
            order = ""
            if "side" in record:
                order = f" {record.get('side')} {record.get('quantity')}"
            what = f"{record.get('symbol')}{order} refused in {record.get('mode')}"
            what += f" ({_guards(record) or 'no reason given'})"
        case "operator":
            details = {k: v for k, v in record.items() if k != "action"}
            what = f"{record.get('action')}{': ' if details else ''}{_fields(details)}"
        case "preflight":
            checks = record.get("checks")
            failed = [
                str(c.get("name"))
                for c in checks or ()
                if isinstance(c, dict) and c.get("status") == "error"
            ]
            verdict = "ready" if record.get("ready") else "NOT READY"
            what = f"{verdict}, profile {record.get('profile')}"
            what += f", failed: {', '.join(failed)}" if failed else ""
        case _:
            what = _fields(record)
    return f"{_when(event['wall_time'])}  {kind:<10}  {what}"


def _where(record: dict[str, Any]) -> str:
    return str(record.get("scope") or "global")


def _guards(record: dict[str, Any]) -> str:
    reasons = record.get("reasons") or ()
    return ", ".join(
        f"{r.get('guard')} {r.get('state')}" if r.get("state") else str(r.get("guard"))
        for r in reasons
        if isinstance(r, dict)
    )


def _trip(record: dict[str, Any]) -> str:
    reason = record.get("reason")
    why = f": {reason}" if reason else ""
    match record.get("effect"):
        case "CancelOpenOrders":
            return f"cancel every open order{why}"
        case "CancelOrders":
            return f"cancel orders {', '.join(map(str, record.get('order_ids', ())))}{why}"
        case "DisablePreview":
            return f"disable order previews{why}"
        case "MaxAttemptsExceeded":
            pause = _seconds(record.get("pause_seconds"))
            return f"feed {record.get('feed')} out of reconnect attempts; paused {pause}"
        case _:
            return _fields(record)


def _fields(record: dict[str, Any]) -> str:
    """``name=value`` pairs, values as compact JSON (a nested record stays on the line)."""

    def show(value: object) -> str:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return ", ".join(f"{k}={show(v)}" for k, v in record.items())
