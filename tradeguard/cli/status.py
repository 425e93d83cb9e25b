"""``tradeguard status`` and ``tradeguard events``: what the operator reads (issue 6, item 5).

``status`` shows what a process would enforce now: from a store, the layer its snapshot
restores to (exactly what `open_layer` would build, remaining times counted to now); from a
running runtime, its ``/status``. ``events`` prints the archive. Both print for people by
default and JSON with ``--json``.
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

__all__ = ["parse_since", "run_events", "run_status"]

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
) -> int:
    """Print the status from ``store`` or ``url``; returns the exit status (1: unreadable)."""
    if url is not None:
        try:
            status = _fetch_status(url)
        except (OSError, ValueError) as problem:  # URLError and HTTPError are OSErrors
            print(f"tradeguard: cannot read the status at {url}: {problem}", file=err)
            return 1
        source = f"runtime {url}"
    else:
        assert store is not None  # the command line passes one of the two
        try:
            status, saved_at = anyio.run(_status_from_store, store, settings)
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


async def _status_from_store(path: Path, settings: Settings) -> tuple[LayerView, float | None]:
    async with EventStore(path, read_only=True) as store:
        saved = await store.load_snapshot()
        layer = await open_layer(settings, store)
    saved_at = None if saved is None else saved.get("saved_at")
    return layer.view(), saved_at if isinstance(saved_at, int | float) else None


def _fetch_status(url: str) -> LayerView:
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
) -> int:
    """Print the archive; returns the exit status (1: unreadable store)."""

    async def read() -> list[dict[str, Any]]:
        async with EventStore(store, read_only=True) as opened:
            return await opened.events(since=since, kinds=kinds, limit=limit)

    try:
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
    """One archived event for people: time, kind, what."""
    record: dict[str, Any] = event["record"]
    kind = event["kind"]
    where = record.get("scope") or "global"
    match kind:
        case "transition":
            what = (
                f"{record.get('machine')} ({where}): {record.get('source')} -> "
                f"{record.get('dest')} ({record.get('trigger')})"
            )
        case "mode":
            guards = ", ".join(str(r.get("guard")) for r in record.get("reasons", []))
            because = f" because {guards}" if guards else ""
            what = f"{where}: {record.get('source')} -> {record.get('dest')}{because}"
        case "alert":
            what = f"{record.get('severity')}: {record.get('title')}: {record.get('detail')}"
        case "refusal":
            guards = ", ".join(str(r.get("guard")) for r in record.get("reasons", []))
            what = f"{record.get('symbol')} refused in {record.get('mode')} ({guards})"
        case _:
            what = ", ".join(f"{k}={v}" for k, v in record.items())
    return f"{_when(event['wall_time'])}  {kind:<10}  {what}"
