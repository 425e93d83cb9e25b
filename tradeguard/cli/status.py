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
        print(json.dumps(status, indent=2, sort_keys=True), file=out)
    else:
        print(f"source: {source}", file=out)
        for line in format_status(status):
            print(line, file=out)
    return 0


async def _status_from_store(path: Path, settings: Settings) -> tuple[dict[str, Any], float | None]:
    async with EventStore(path, read_only=True) as store:
        saved = await store.load_snapshot()
        layer = await open_layer(settings, store)
    saved_at = None if saved is None else saved.get("saved_at")
    return layer.status(), saved_at if isinstance(saved_at, int | float) else None


def _fetch_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=_URL_TIMEOUT) as response:
        status = json.loads(response.read().decode("utf-8"))
    if not isinstance(status, dict) or "mode" not in status or "global" not in status:
        raise ValueError("the answer is not a layer status (no 'mode' and 'global')")
    return status


def format_status(status: dict[str, Any]) -> list[str]:
    """A layer's `ReliabilityLayer.status()` for people, one line per item."""
    lines = [f"global mode: {status.get('mode', '?')}"]
    restrictions = list(_restrictions(status.get("global", {}), "global"))
    symbols: dict[str, Any] = status.get("symbols", {})
    for symbol, scope in symbols.items():
        restrictions += _restrictions(scope, symbol)
    lines.append("restrictions:" if restrictions else "restrictions: none")
    lines += [f"  {line}" for line in restrictions]
    if symbols:
        lines.append("symbols:")
        for symbol, scope in symbols.items():
            effective, own = scope.get("effective_mode", "?"), scope.get("mode", "?")
            note = "" if effective == own else f" (own {own})"
            mark = "" if scope.get("has_mark", True) else ", no mark yet"
            lines.append(f"  {symbol}: {effective}{note}{mark}")
    breakers = {c: b for c, b in status.get("breakers", {}).items() if b.get("state") != "CLOSED"}
    for category, breaker in breakers.items():
        lines.append(f"breaker {category}: {breaker.get('state')}")
    feeds = {n: f for n, f in status.get("feeds", {}).items() if f.get("state") != "CONNECTED"}
    for name, feed in feeds.items():
        lines.append(f"feed {name}: {feed.get('state')} (attempts {feed.get('attempts')})")
    if status.get("preview_enabled") is False:
        lines.append("preview: disabled (operator reset of 'preview' re-enables it)")
    return lines


def _restrictions(scope: dict[str, Any], where: str) -> list[str]:
    found = []
    for name, guard in scope.get("guards", {}).items():
        state = guard.get("state")
        if state == "HEALTHY":
            continue
        left = guard.get("seconds_until_lift")
        when = "fault present" if left is None else f"lifts in {_seconds(left)}"
        found.append(f"{name} ({where}): {state}, {guard.get('restriction')}, {when}")
    halt = scope.get("halt", {})
    if halt.get("state", "RUNNING") != "RUNNING":
        left = halt.get("seconds_until_lift")
        when = "until resumed" if left is None else f"lifts in {_seconds(left)}"
        state, mode, reason = halt.get("state"), halt.get("mode", "PAUSED"), halt.get("reason")
        found.append(f"operator ({where}): {state}, {mode}, {when}, reason {reason!r}")
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
