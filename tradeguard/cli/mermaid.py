"""``tradeguard status --mermaid``: the machines as Mermaid diagrams, current states highlighted.

The output is Markdown: one section per machine kind (as in ``diagrams/README.md``), each with
its diagram drawn from the definition and every state an instance is in now highlighted and
annotated with the instances (``now api_health (global)``). Paste it into anything that renders
Mermaid, such as a GitHub issue. Kinds with no instance (no feed configured) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import TextIO

import anyio

from tradeguard.config import Settings
from tradeguard.errors import StoreError
from tradeguard.fsm import MachineDefinition
from tradeguard.fsm._machines import BREAKER, FEED, FLEET, GUARD, HALT, MARK, MODE, PREVIEW
from tradeguard.fsm.views import LayerView, ScopeView
from tradeguard.io.store import EventStore, open_layer

__all__ = ["format_mermaid", "run_mermaid"]

# The guards whose machine is not the plain guard machine.
_GUARD_DEFINITIONS = {"mark_staleness": MARK, "preview": PREVIEW, "fleet": FLEET}


def format_mermaid(view: LayerView) -> str:
    """Every machine kind of ``view`` as a Markdown section with a highlighted Mermaid block."""
    instances: dict[str, dict[Enum, list[str]]] = {d.name: {} for d in _ORDER}

    def put(definition: MachineDefinition, state: Enum, name: str) -> None:
        instances[definition.name].setdefault(state, []).append(name)

    for scope in _scopes(view):
        where = "global" if scope.symbol is None else scope.symbol
        for name, guard in scope.guards.items():
            put(_GUARD_DEFINITIONS.get(name, GUARD), guard.state, f"{name} ({where})")
        put(MODE, scope.mode, where)
        put(HALT, scope.halt.state, where)
    for category, breaker in view.breakers.items():
        put(BREAKER, breaker.state, category)
    for name, feed in view.feeds.items():
        put(FEED, feed.state, name)
    sections = [f"# tradeguard machines now (global mode {view.mode.name})\n"]
    for definition in _ORDER:
        current = instances[definition.name]
        if not current:
            continue
        ordered = {s: current[s] for s in definition.used_states if s in current}
        sections.append(
            f"## `{definition.name}`\n\n{definition.description}\n\n"
            f"```mermaid\n{definition.to_mermaid(ordered)}```\n"
        )
    return "\n".join(sections)


_ORDER = (GUARD, MARK, PREVIEW, FLEET, BREAKER, FEED, MODE, HALT)


def _scopes(view: LayerView) -> Iterable[ScopeView]:
    yield view.global_scope
    yield from view.symbols.values()


def run_mermaid(
    *, store: Path | None, url: str | None, settings: Settings, out: TextIO, err: TextIO
) -> int:
    """Print the diagrams of the layer at ``url`` (a runtime's ``/status``) or restored from
    ``store``; returns the exit status (1: unreadable)."""
    from tradeguard.cli.status import fetch_status

    try:
        if url is not None:
            view = fetch_status(url)
        else:
            assert store is not None  # the command line passes one of the two
            view = anyio.run(_view_from_store, store, settings)
    except StoreError as problem:
        print(f"tradeguard: {problem}", file=err)
        return 1
    except (OSError, ValueError) as problem:  # URLError and HTTPError are OSErrors
        print(f"tradeguard: cannot read the status at {url}: {problem}", file=err)
        return 1
    print(format_mermaid(view), end="", file=out)
    return 0


async def _view_from_store(path: Path, settings: Settings) -> LayerView:
    async with EventStore(path, read_only=True) as store:
        layer = await open_layer(settings, store)
    return layer.view()
