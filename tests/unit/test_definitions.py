"""Machine definitions (DESIGN §2): every (state x trigger) pair, validation, diagrams.

The expected tables below are written out by hand from DESIGN §2.1-§2.4, not derived from
`tradeguard.fsm._machines`, so an edit to a definition that changes behaviour fails here.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from typing import Any

import pytest

from tradeguard.errors import InvalidTransition
from tradeguard.fsm._definition import MachineDefinition, Spec
from tradeguard.fsm._machines import DEFINITIONS

# One row: (destination, condition label or None). Rows sharing (state, trigger) are tried in
# the order written; the first whose condition holds is taken.
Row = tuple[str, str | None]
Table = dict[tuple[str, str], list[Row]]

EXHAUSTED = "attempts_exhausted"
HAS_MARK = "has_mark"
SYNCED = "synced"
MARK_RESTRICTION = "RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY"


def _from(sources: tuple[str, ...], trigger: str, rows: list[Row]) -> Table:
    return {(source, trigger): rows for source in sources}


GUARD_TABLE: Table = {
    ("HEALTHY", "trip"): [("TRIPPED", None)],
    ("COOLDOWN", "trip"): [("TRIPPED", None)],
    ("TRIPPED", "recover"): [("COOLDOWN", None)],
    ("COOLDOWN", "expire"): [("HEALTHY", None)],
    **_from(("HEALTHY", "TRIPPED", "COOLDOWN"), "reset", [("HEALTHY", None)]),
}

# DESIGN §2.1 plus NO_MARK (issue 11): a symbol is never traded blind, and a reset cannot
# invent a mark.
MARK_TABLE: Table = {
    ("NO_MARK", "mark"): [("HEALTHY", None)],
    ("NO_MARK", "trip"): [("TRIPPED", None)],
    ("HEALTHY", "trip"): [("TRIPPED", None)],
    ("COOLDOWN", "trip"): [("TRIPPED", None)],
    ("TRIPPED", "recover"): [("COOLDOWN", None)],
    ("COOLDOWN", "expire"): [("HEALTHY", None)],
    ("HEALTHY", "reset"): [("HEALTHY", HAS_MARK)],
    ("TRIPPED", "reset"): [("HEALTHY", HAS_MARK), ("NO_MARK", None)],
    ("COOLDOWN", "reset"): [("HEALTHY", HAS_MARK)],
    ("NO_MARK", "reset"): [("NO_MARK", None)],
}

PREVIEW_TABLE: Table = {
    ("HEALTHY", "trip"): [("TRIPPED", None)],
    ("HEALTHY", "reset"): [("HEALTHY", None)],
    ("TRIPPED", "reset"): [("HEALTHY", None)],
}

BREAKER_TABLE: Table = {
    ("CLOSED", "trip"): [("OPEN", None)],
    ("HALF_OPEN", "trip"): [("OPEN", None)],
    ("OPEN", "expire"): [("HALF_OPEN", None)],
    ("HALF_OPEN", "close"): [("CLOSED", None)],
    **_from(("CLOSED", "OPEN", "HALF_OPEN"), "reset", [("CLOSED", None)]),
}

FEED_TABLE: Table = {
    ("DISCONNECTED", "start"): [("CONNECTING", None)],
    ("CONNECTING", "connected"): [("CONNECTED", None)],
    ("DEGRADED", "connected"): [("CONNECTED", None)],
    ("CONNECTING", "disconnected"): [("DEGRADED", EXHAUSTED), ("BACKOFF", None)],
    ("CONNECTED", "disconnected"): [("DEGRADED", EXHAUSTED), ("BACKOFF", None)],
    ("DEGRADED", "disconnected"): [("DEGRADED", EXHAUSTED)],
    ("CONNECTED", "stale"): [("DEGRADED", EXHAUSTED), ("BACKOFF", None)],
    ("BACKOFF", "retry"): [("CONNECTING", None)],
    **_from(
        ("DISCONNECTED", "CONNECTING", "CONNECTED", "BACKOFF", "DEGRADED"),
        "close",
        [("CLOSED", None)],
    ),
}

MODE_TABLE: Table = {
    ("REDUCE_ONLY", "allow"): [("ALLOW", None)],
    ("PAUSED", "allow"): [("ALLOW", None)],
    ("ALLOW", "restrict"): [("REDUCE_ONLY", None)],
    ("PAUSED", "restrict"): [("REDUCE_ONLY", None)],
    ("ALLOW", "pause"): [("PAUSED", None)],
    ("REDUCE_ONLY", "pause"): [("PAUSED", None)],
}

# HALTED pauses, REDUCED is the operator's reduce-only halt (issue 11 item 4).
HALT_TABLE: Table = {
    **_from(("RUNNING", "HALTED", "REDUCED"), "halt", [("HALTED", None)]),
    **_from(("RUNNING", "HALTED", "REDUCED"), "reduce", [("REDUCED", None)]),
    **_from(("HALTED", "REDUCED"), "resume", [("RUNNING", None)]),
    **_from(("HALTED", "REDUCED"), "expire", [("RUNNING", None)]),
}

# DESIGN §7 (issue 14): UNSYNCED until the member read its peers' restrictions; Redis lost past
# the grace trips it from any state but TRIPPED; a resync cools down; a reset cannot invent a
# sync.
FLEET_TABLE: Table = {
    ("UNSYNCED", "sync"): [("HEALTHY", None)],
    **_from(("UNSYNCED", "HEALTHY", "COOLDOWN"), "trip", [("TRIPPED", None)]),
    ("TRIPPED", "recover"): [("COOLDOWN", None)],
    ("COOLDOWN", "expire"): [("HEALTHY", None)],
    **_from(
        ("UNSYNCED", "HEALTHY", "TRIPPED", "COOLDOWN"),
        "reset",
        [("HEALTHY", SYNCED), ("UNSYNCED", None)],
    ),
}


class Expected:
    """A machine kind as DESIGN describes it: states, triggers, initial, terminal, table."""

    def __init__(
        self,
        states: tuple[str, ...],
        triggers: tuple[str, ...],
        initial: str,
        table: Table,
        terminal: tuple[str, ...] = (),
        starts: tuple[str, ...] | None = None,
    ) -> None:
        self.states = states
        self.triggers = triggers
        self.initial = initial
        self.table = table
        self.terminal = terminal
        # The diagram's start arrows, as Mermaid writes them after "[*] --> ".
        self.starts = (initial,) if starts is None else starts


EXPECTED: dict[str, Expected] = {
    "guard": Expected(
        ("HEALTHY", "TRIPPED", "COOLDOWN"),
        ("trip", "recover", "expire", "reset"),
        "HEALTHY",
        GUARD_TABLE,
    ),
    "mark_staleness": Expected(
        ("HEALTHY", "TRIPPED", "COOLDOWN", "NO_MARK"),
        ("mark", "trip", "recover", "expire", "reset"),
        "NO_MARK",
        MARK_TABLE,
    ),
    "preview": Expected(("HEALTHY", "TRIPPED"), ("trip", "reset"), "HEALTHY", PREVIEW_TABLE),
    "breaker": Expected(
        ("CLOSED", "OPEN", "HALF_OPEN"),
        ("trip", "expire", "close", "reset"),
        "CLOSED",
        BREAKER_TABLE,
    ),
    "feed": Expected(
        ("DISCONNECTED", "CONNECTING", "CONNECTED", "BACKOFF", "DEGRADED", "CLOSED"),
        ("start", "connected", "disconnected", "stale", "retry", "close"),
        "DISCONNECTED",
        FEED_TABLE,
        terminal=("CLOSED",),
    ),
    # The global scope starts in ALLOW; a symbol starts where NO_MARK puts it (issue 11).
    "mode": Expected(
        ("ALLOW", "REDUCE_ONLY", "PAUSED"),
        ("allow", "restrict", "pause"),
        "ALLOW",
        MODE_TABLE,
        starts=(
            "ALLOW: global scope",
            f"REDUCE_ONLY: new symbol, no mark yet ({MARK_RESTRICTION}=1)",
            f"PAUSED: new symbol, no mark yet ({MARK_RESTRICTION}=0)",
        ),
    ),
    "operator": Expected(
        ("RUNNING", "HALTED", "REDUCED"),
        ("halt", "reduce", "resume", "expire"),
        "RUNNING",
        HALT_TABLE,
    ),
    "fleet": Expected(
        ("HEALTHY", "TRIPPED", "COOLDOWN", "UNSYNCED"),
        ("sync", "trip", "recover", "expire", "reset"),
        "UNSYNCED",
        FLEET_TABLE,
    ),
}

BY_NAME: dict[str, MachineDefinition] = {d.name: d for d in DEFINITIONS}


class TinyModel:
    """The least a definition can drive: a ``state`` and the condition methods it names."""

    def __init__(self, state: Enum, condition: bool | None) -> None:
        self.state = state
        self.condition = condition
        self.asked = 0

    def attempts_exhausted(self) -> bool:
        return self._ask()

    def has_mark(self) -> bool:
        return self._ask()

    def synced(self) -> bool:
        return self._ask()

    def _ask(self) -> bool:
        self.asked += 1
        assert self.condition is not None, "a condition was asked of a table that has none"
        return self.condition


def _table_cases() -> list[Any]:
    """Every (definition, state, trigger, condition value), over both the hand table's and
    the definition's states and triggers, so a state or trigger added to either is covered."""
    cases = []
    for name, expected in EXPECTED.items():
        definition = BY_NAME.get(name)
        states = list(expected.states)
        triggers = list(expected.triggers)
        if definition is not None:
            states += [s.name for s in definition.used_states if s.name not in states]
            triggers += [t for t in definition.triggers if t not in triggers]
        conditions = {c for rows in expected.table.values() for _, c in rows if c is not None}
        assert len(conditions) <= 1, "TinyModel answers one condition per table"
        flags: tuple[bool | None, ...] = (True, False) if conditions else (None,)
        for state in states:
            for trigger in triggers:
                for flag in flags:
                    flag_id = "" if flag is None else f"-{next(iter(conditions))}={flag}"
                    case_id = f"{name}-{state}-{trigger}{flag_id}"
                    cases.append(pytest.param(name, state, trigger, flag, id=case_id))
    return cases


# --------------------------------------------------------------------- DESIGN §2: the tables


def test_every_definition_has_a_hand_written_table() -> None:
    assert sorted(BY_NAME) == sorted(EXPECTED)
    assert len(DEFINITIONS) == len(EXPECTED), "two definitions share a name"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_states_triggers_initial_and_terminal_match_design(name: str) -> None:
    definition = BY_NAME[name]
    expected = EXPECTED[name]
    assert tuple(s.name for s in definition.used_states) == expected.states
    assert definition.triggers == expected.triggers
    assert definition.initial.name == expected.initial
    assert sorted(s.name for s in definition.terminal) == sorted(expected.terminal)


@pytest.mark.parametrize(("name", "state", "trigger", "condition"), _table_cases())
def test_fire_follows_the_table(
    name: str, state: str, trigger: str, condition: bool | None
) -> None:
    definition = BY_NAME[name]
    assert state in definition.states.__members__, f"{name} has no state {state}"
    source = definition.states[state]
    rows = EXPECTED[name].table.get((state, trigger), [])
    # The definition's own lookup agrees with the hand-written table on whether a row exists.
    assert bool(definition.targets(source, trigger)) == bool(rows)
    model = TinyModel(source, condition)

    if not rows:
        with pytest.raises(InvalidTransition) as raised:
            definition.fire(model, trigger, "m", None)
        assert model.state is source
        assert (raised.value.machine, raised.value.state, raised.value.trigger) == (
            "m",
            state,
            trigger,
        )
        return

    dest = next((d for d, c in rows if c is None or condition), None)
    taken = definition.fire(model, trigger, "m", None)
    if dest is None:
        assert taken is False
        assert model.state is source
    else:
        assert taken is True
        assert model.state is definition.states[dest]
    # A condition is consulted only where the table has one.
    if all(c is None for _, c in rows):
        assert model.asked == 0


def test_invalid_transition_is_a_runtime_error_naming_machine_scope_and_state() -> None:
    feed = BY_NAME["feed"]
    model = TinyModel(feed.states["CLOSED"], False)
    with pytest.raises(RuntimeError, match=r"feed:x\[BTC-USD\] cannot 'start' from state CLOSED"):
        feed.fire(model, "start", "feed:x", "BTC-USD")
    assert model.state is feed.states["CLOSED"]


def test_an_unknown_trigger_raises_and_changes_nothing() -> None:
    guard = BY_NAME["guard"]
    model = TinyModel(guard.states["HEALTHY"], None)
    with pytest.raises(InvalidTransition):
        guard.fire(model, "no_such_trigger", "m", None)
    assert model.state is guard.states["HEALTHY"]


# ------------------------------------------------------- DESIGN §2: validated when loaded


class Small(Enum):
    A = "A"
    B = "B"
    C = "C"


class Other(Enum):
    Z = "Z"


def test_a_valid_small_definition_loads_and_runs() -> None:
    definition = MachineDefinition(
        name="small",
        states=Small,
        initial=Small.A,
        transitions=(
            Spec("go", (Small.A,), Small.B),
            Spec("go", (Small.B,), Small.C),
            Spec("stop", (Small.A, Small.B), Small.C),
        ),
        terminal=frozenset({Small.C}),
    )
    model = TinyModel(Small.A, None)
    assert definition.fire(model, "go", "small", None) is True
    assert model.state is Small.B


_GO_AND_BACK = (Spec("go", (Small.A,), Small.B), Spec("back", (Small.B,), Small.A))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        pytest.param(
            {"transitions": (*_GO_AND_BACK, Spec("leave", (Small.C,), Small.A))},
            r"small: unreachable from A: \['C'\]",
            id="an_unreachable_state",
        ),
        pytest.param(
            {"transitions": (*_GO_AND_BACK, Spec("fall", (Small.B,), Small.C))},
            r"small: C is a trap",
            id="a_trap_state",
        ),
        pytest.param(
            {
                "transitions": (
                    *_GO_AND_BACK,
                    Spec("fall", (Small.B,), Small.C),
                    Spec("spin", (Small.C,), Small.C),
                )
            },
            r"small: C is a trap",
            id="a_state_whose_only_exit_loops_back_to_itself_is_a_trap",
        ),
        pytest.param(
            {
                "transitions": (
                    *_GO_AND_BACK,
                    Spec("end", (Small.B,), Small.C),
                    Spec("again", (Small.C,), Small.A),
                ),
                "terminal": frozenset({Small.C}),
            },
            r"small: terminal state C has transitions out",
            id="a_terminal_state_with_a_way_out",
        ),
        pytest.param(
            {"transitions": (Spec("go", (Small.A,), Other.Z), Spec("back", (Small.B,), Small.A))},
            r"small: 'go' names unknown state <Other.Z: 'Z'>",
            id="a_transition_naming_an_unknown_state",
        ),
        pytest.param(
            {
                "transitions": (
                    Spec("go", (Small.A,), Small.B),
                    Spec("go", (Small.B,), Small.C),
                    Spec("back", (Small.B,), Small.A),
                ),
                "unused": frozenset({Small.C}),
            },
            r"small: 'go' names unknown state <Small.C: 'C'>",
            id="a_transition_into_an_unused_state",
        ),
        pytest.param(
            {
                "transitions": _GO_AND_BACK,
                "unused": frozenset({Small.C}),
                "other_starts": ((Other.Z, "never"),),
            },
            r"small: start state <Other.Z: 'Z'> is not a state",
            id="a_start_state_that_is_not_a_state",
        ),
        pytest.param(
            {"initial": Other.Z, "transitions": (Spec("go", (Small.A,), Small.B),)},
            r"small: initial state <Other.Z: 'Z'> is not a state",
            id="an_initial_state_that_is_not_a_state",
        ),
    ],
)
def test_an_invalid_definition_is_refused(shape: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MachineDefinition(**{"name": "small", "states": Small, "initial": Small.A, **shape})


def test_other_start_states_count_as_reachable() -> None:
    definition = MachineDefinition(
        name="small",
        states=Small,
        initial=Small.A,
        transitions=(Spec("go", (Small.A, Small.C), Small.B), Spec("back", (Small.B,), Small.A)),
        other_starts=((Small.C, "restored"),),
    )
    assert definition.to_mermaid().splitlines()[1:3] == ["    [*] --> A", "    [*] --> C: restored"]


# ---------------------------------------------------------- DESIGN §2: generated diagrams


def _declared_rows(name: str) -> list[tuple[str, str, str]]:
    """(source, dest, label) for every row of the hand-written table, one per source."""
    rows = []
    for (source, trigger), dests in EXPECTED[name].table.items():
        for dest, condition in dests:
            label = trigger if condition is None else f"{trigger} [{condition}]"
            rows.append((source, dest, label))
    return rows


def _live_states(name: str) -> list[str]:
    """The states a shared exit (the feed's ``close``) leaves: every one but the terminal."""
    return [st for st in EXPECTED[name].states if st not in EXPECTED[name].terminal]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_mermaid_lists_every_declared_row_exactly_once(name: str) -> None:
    """Every row appears once: as an edge; a self-loop as ``STATE : stays on label`` inside its
    box; a row from every live state as one edge from the ``live`` box around them."""
    definition = BY_NAME[name]
    text = definition.to_mermaid()
    assert text == definition.to_mermaid(), "rendering is not deterministic"
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    rows: Counter[tuple[str, str, str]] = Counter()
    for line in (line.strip() for line in lines[1:]):
        if "[*]" in line or line.startswith("state ") or line == "}":
            continue
        if " : stays on " in line:
            state, _, label = line.partition(" : stays on ")
            rows[(state, state, label)] += 1
        elif line.startswith("live --> "):
            edge, _, label = line.partition(": ")
            dest = edge.removeprefix("live --> ")
            label = label.removesuffix(" (from any state)")
            rows.update((src, dest, label) for src in _live_states(name))
        else:
            edge, _, label = line.partition(": ")
            source, _, dest = edge.partition(" --> ")
            rows[(source, dest, label)] += 1
    assert rows == Counter(_declared_rows(name))
    starts = [line.strip() for line in lines if line.strip().startswith("[*] --> ")]
    starts = [line for line in starts if line != "[*] --> live"]
    assert starts == [f"[*] --> {start}" for start in EXPECTED[name].starts]
    ends = sorted(line for line in lines if line.endswith("--> [*]"))
    assert ends == sorted(f"    {st} --> [*]" for st in EXPECTED[name].terminal)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dot_lists_every_declared_row_exactly_once(name: str) -> None:
    definition = BY_NAME[name]
    text = definition.to_dot()
    assert text == definition.to_dot(), "rendering is not deterministic"
    lines = text.splitlines()
    assert lines[0] == f'digraph "{name}" {{'
    assert lines[-1] == "}"
    edges = Counter(line for line in lines if " -> " in line and "__start" not in line)
    rows = Counter(_declared_rows(name))
    for line in [line for line in edges if "ltail=" in line]:
        # A row from every live state is one edge from the cluster around them.
        dest = line.split('" -> "')[1].split('"')[0]
        label = line.split('label="')[1].split('"')[0].removesuffix(" (from any state)")
        for src in _live_states(name):
            rows[(src, dest, label)] -= 1
        rows[(_live_states(name)[0], dest, label)] += 1
        del edges[line]
        edges[f'    "{_live_states(name)[0]}" -> "{dest}" [label="{label}"];'] += 1
    expected = Counter(f'    "{s}" -> "{d}" [label="{label}"];' for (s, d, label) in +rows)
    assert edges == expected
    assert all(count == 1 for count in edges.values())
    starts = [line for line in lines if line.startswith('    "__start" -> ')]
    expected_starts = []
    for start in EXPECTED[name].starts:
        state, _, note = start.partition(": ")
        label = f' [label="{note}"]' if note else ""
        expected_starts.append(f'    "__start" -> "{state}"{label};')
    assert starts == expected_starts
    for state in EXPECTED[name].states:
        shape = "doubleoctagon" if state in EXPECTED[name].terminal else "box"
        assert lines.count(f'    "{state}" [shape={shape}];') == 1
