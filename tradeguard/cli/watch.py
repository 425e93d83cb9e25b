"""``tradeguard status --watch URL``: a live view of a running runtime, redrawn every second.

Each second the runtime's ``/status`` is read into a `LayerView` and drawn: every scope's mode
and halt, every guard, breaker and feed with its state and the time until its restriction
lifts, and the last transitions. The runtime keeps no history for this view: the transitions
are found by comparing each view with the one before (`changes`), so a machine that trips and
recovers between two polls (under a second) is not listed; ``tradeguard events`` and the
``transition`` records of the event store have every one.

`render` is a pure function of what it draws (view, transitions, time), so tests read its text
from a recording `rich.console.Console`. On a terminal the frame is redrawn in place with
`rich.live.Live`; into a pipe or a file each frame is printed after the previous one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO, final

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from tradeguard.errors import InvalidObservation
from tradeguard.fsm import BreakerState, FeedState, GuardState, TradingMode
from tradeguard.fsm.views import LayerView, ScopeView

__all__ = ["Change", "changes", "render", "run_watch", "status_url"]

KEEP = 12  # transitions shown
_MODE_STYLE = {
    TradingMode.ALLOW: "green",
    TradingMode.REDUCE_ONLY: "yellow",
    TradingMode.PAUSED: "bold red",
}


@final
@dataclass(frozen=True, slots=True)
class Change:
    """One machine's state as it changed between two views.

    Attributes:
        at: wall-clock seconds of the view that showed it first.
        machine: ``api_health``, ``breaker:orders``, ``feed:market``, ``operator``, ``mode``.
        scope: the symbol, or ``None`` for the global scope (and breakers and feeds).
        source: the state before.
        dest: the state after.
    """

    at: float
    machine: str
    scope: str | None
    source: str
    dest: str


def _states(view: LayerView) -> dict[tuple[str, str | None], str]:
    found: dict[tuple[str, str | None], str] = {}
    for scope in (view.global_scope, *view.symbols.values()):
        found["mode", scope.symbol] = scope.mode.name
        found["operator", scope.symbol] = scope.halt.state.name
        for name, guard in scope.guards.items():
            found[name, scope.symbol] = guard.state.name
    for category, breaker in view.breakers.items():
        found[f"breaker:{category}", None] = breaker.state.name
    for name, feed in view.feeds.items():
        found[f"feed:{name}", None] = feed.state.name
    return found


def changes(before: LayerView | None, after: LayerView, at: float) -> list[Change]:
    """What changed state from ``before`` to ``after`` (nothing for the first view)."""
    if before is None:
        return []
    old = _states(before)
    return [
        Change(at, machine, scope, old[machine, scope], state)
        for (machine, scope), state in _states(after).items()
        if (machine, scope) in old and old[machine, scope] != state
    ]


def _lift(seconds: float | None, in_force: bool) -> str:
    if not in_force:
        return ""
    return "while the fault lasts" if seconds is None else f"{seconds:.1f} s"


def _state_style(state: str) -> str:
    if state in (GuardState.HEALTHY, BreakerState.CLOSED, FeedState.CONNECTED, "RUNNING"):
        return "green"
    if state in (BreakerState.OPEN, FeedState.DEGRADED, "HALTED"):
        return "bold red"
    return "yellow"


def _scope_name(scope: ScopeView) -> str:
    return scope.symbol or "global"


def render(
    view: LayerView | None,
    recent: Sequence[Change],
    now: float,
    *,
    source: str = "",
    problem: str | None = None,
) -> RenderableType:
    """One frame of the live view.

    Args:
        view: the runtime's status (``None`` before the first was read).
        recent: the last transitions, oldest first.
        now: wall-clock seconds, for the header and the transitions' ages.
        source: where the status comes from (the URL), shown in the header.
        problem: why the last read failed, if it did (the last view stays on screen).
    """
    clock = datetime.fromtimestamp(now).strftime("%H:%M:%S")
    header = Text.assemble(("tradeguard ", "bold"), source, f"  {clock}")
    parts: list[RenderableType] = [header]
    if problem is not None:
        parts.append(Text(f"cannot read the status: {problem}", style="bold red"))
    if view is None:
        parts.append(Text("waiting for the first status ..."))
        return Group(*parts)
    mode = Text.assemble("global mode ", (view.mode.name, _MODE_STYLE[view.mode]))
    if not view.preview_enabled:
        mode.append("   preview disabled", style="yellow")
    parts.append(mode)

    scopes = Table(title="scopes", title_justify="left", expand=False)
    for column in ("scope", "mode", "own mode", "operator halt", "lifts in"):
        scopes.add_column(column)
    for scope in (view.global_scope, *view.symbols.values()):
        halt = scope.halt
        said = f"{halt.state.name} {halt.mode.name} ({halt.reason})" if halt.in_force else "-"
        mark = "" if scope.has_mark else " (no mark yet)"
        scopes.add_row(
            _scope_name(scope) + mark,
            Text(scope.effective_mode.name, style=_MODE_STYLE[scope.effective_mode]),
            scope.mode.name,
            said,
            _lift(halt.seconds_until_lift, halt.in_force),
        )
    parts.append(scopes)

    guards = Table(title="guards", title_justify="left")
    for column in ("scope", "guard", "state", "restricts to", "lifts in"):
        guards.add_column(column)
    for scope in (view.global_scope, *view.symbols.values()):
        for name, guard in scope.guards.items():
            unhealthy = guard.state is not GuardState.HEALTHY
            guards.add_row(
                _scope_name(scope),
                name,
                Text(guard.state.name, style=_state_style(guard.state)),
                guard.restriction.name if unhealthy else "-",
                _lift(guard.seconds_until_lift, unhealthy),
            )
    parts.append(guards)

    machines = Table(title="breakers and feeds", title_justify="left")
    for column in ("machine", "state", "detail"):
        machines.add_column(column)
    for category, breaker in view.breakers.items():
        machines.add_row(
            f"breaker {category}",
            Text(breaker.state.name, style=_state_style(breaker.state)),
            f"{breaker.consecutive_failures} consecutive failures",
        )
    for name, feed in view.feeds.items():
        age = feed.last_message_age
        heard = "no message yet" if age is None else f"last message {age:.1f} s ago"
        attempts = f", attempt {feed.attempts}/{feed.max_attempts}" if feed.attempts else ""
        machines.add_row(
            f"feed {name}", Text(feed.state.name, style=_state_style(feed.state)), heard + attempts
        )
    if not view.breakers and not view.feeds:
        machines.add_row("none yet", "", "breakers appear with their first API call")
    parts.append(machines)

    last = Table(title="last transitions", title_justify="left")
    for column in ("ago", "machine", "scope", "change"):
        last.add_column(column)
    for change in recent:
        last.add_row(
            f"{max(0.0, now - change.at):.0f} s",
            change.machine,
            change.scope or "global",
            Text.assemble(change.source, " -> ", (change.dest, _state_style(change.dest))),
        )
    if not recent:
        last.add_row("-", "none seen yet", "", "")
    parts.append(last)
    return Group(*parts)


def status_url(url: str) -> str:
    """``http://host:port`` (as an engine prints it) or a full ``.../status`` URL."""
    path = url.partition("://")[2].partition("/")[2]
    return url if path else f"{url.rstrip('/')}/status"


def run_watch(
    url: str,
    *,
    out: TextIO,
    interval: float = 1.0,
    fetch: Callable[[str], LayerView] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
    console: Console | None = None,
) -> int:
    """Poll ``url`` and draw the live view every ``interval`` seconds until Ctrl-C (exit 0).

    A failed read keeps the last view on screen with the error above it; the view carries on.
    ``fetch``, ``sleep``, ``wall_clock`` and ``console`` are for tests.
    """
    from tradeguard.cli.status import fetch_status

    target = status_url(url)
    read = fetch or fetch_status
    console = console or Console(file=out)
    recent: deque[Change] = deque(maxlen=KEEP)
    state: dict[str, LayerView | None] = {"view": None}

    def frame() -> RenderableType:
        now = wall_clock()
        problem = None
        try:
            view = read(target)
        except (OSError, ValueError, InvalidObservation) as err:  # URLError is an OSError
            problem = str(err)
        else:
            recent.extend(changes(state["view"], view, now))
            state["view"] = view
        return render(state["view"], recent, now, source=target, problem=problem)

    try:
        if console.is_terminal:
            with Live(frame(), console=console, auto_refresh=False) as live:
                while True:
                    sleep(interval)
                    live.update(frame(), refresh=True)
        else:
            _print_frames(console, frame, sleep, interval)
    except KeyboardInterrupt:
        pass
    return 0


def _print_frames(
    console: Console,
    frame: Callable[[], RenderableType],
    sleep: Callable[[float], None],
    interval: float,
) -> None:
    while True:
        console.print(frame())
        console.print(Rule())
        sleep(interval)
