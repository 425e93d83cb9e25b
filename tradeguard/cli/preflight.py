"""``tradeguard preflight``: run the checks, print the summary, write and archive the report."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import anyio

from tradeguard.errors import StoreError
from tradeguard.io.preflight import (
    PreflightReport,
    PreflightTargets,
    default_report_path,
    render,
    run_against_embedded,
    run_preflight,
    write_report,
)

__all__ = ["run_preflight_command"]


def run_preflight_command(
    *,
    profile: str,
    warn_only: bool,
    report_path: Path | None,
    rest_url: str | None,
    ws_url: str | None,
    symbols: Sequence[str],
    environ: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    start_fresh: bool = False,
) -> int:
    """Run the preflight against the given venue (or the embedded exchange); 0 ready, 1 not.

    ``start_fresh``: a corrupt event store is moved aside and a new one started to archive in.
    """
    if rest_url is None:
        report = anyio.run(_embedded, profile, environ, list(symbols), warn_only)
    else:
        assert ws_url is not None  # the parser requires both or neither
        # The venue's API key, under the names the official SDK reads too.
        key = environ.get("COINBASE_API_KEY", "")
        secret = environ.get("COINBASE_API_SECRET", "")
        targets = PreflightTargets(rest_url, ws_url, tuple(symbols), key, secret)
        report = anyio.run(_remote, profile, environ, targets, warn_only)
    out.write(render(report) + "\n")
    store_path = environ.get("GPT_TRADER_STORE_PATH", "").strip()
    path = write_report(report, report_path or default_report_path(store_path))
    out.write(f"report: {path}\n")
    if store_path:
        try:
            moved = anyio.run(_archive, Path(store_path), report, start_fresh)
        except StoreError as error:
            err.write(f"the report could not be archived: {error}\n")
            return 1
        if moved is not None:
            err.write(f"the event store was unusable: moved it aside to {moved}\n")
        out.write(f"archived in {store_path}\n")
    return report.exit_code


async def _embedded(
    profile: str, environ: Mapping[str, str], symbols: list[str], warn_only: bool
) -> PreflightReport:
    return await run_against_embedded(
        profile=profile, environ=environ, symbols=symbols, warn_only=warn_only
    )


async def _remote(
    profile: str, environ: Mapping[str, str], targets: PreflightTargets, warn_only: bool
) -> PreflightReport:
    return await run_preflight(
        profile=profile, environ=environ, targets=targets, warn_only=warn_only
    )


async def _archive(path: Path, report: PreflightReport, start_fresh: bool) -> Path | None:
    from tradeguard.io.store import EventStore

    async with EventStore(path, start_fresh=start_fresh) as store:
        await store.append("preflight", report.to_json(), time.time())
    return store.moved_aside


def environment() -> dict[str, str]:
    """The process environment, read when the command runs (never at import)."""
    return dict(os.environ)
