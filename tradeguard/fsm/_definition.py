"""Machine definitions as data, and the one place a definition becomes a running machine.

A definition is a table: states, an initial state, transitions ``(trigger, sources, dest,
condition)``. The same table builds the `transitions` machine that runs the models and the
diagrams under ``diagrams/`` (DESIGN §2), so the picture can never drift from the behaviour.

Why models are not ``add_model``-ed: `transitions` decorates every model with a bound partial
per trigger, per ``may_`` check and per ``is_`` state (about 3.6 KB a model, measured on this
machine), which puts 10,000 symbols far over the memory target. We keep one shared
``Machine`` per kind, built from the table (it checks the table as `transitions` reads it).

Why firing does not go through that machine's ``Event`` objects: `transitions` logs every
transition at INFO and DEBUG (a dozen logging calls, 2.7x the cost of the transition once a
user's logging config enables INFO), and silencing it would change the process's logging
state (issue 12: nothing happens at import). `fire` applies the same table, compiled once per
(state, trigger) into its rows in declared order: the first row whose condition holds sets the
model's ``state``, exactly as `transitions` does for a table without callbacks (a unit test
holds every definition to that). `transition` is the one choke point every machine uses: it
fires and builds the `Transitioned` record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, final

from transitions import Machine

from tradeguard.errors import InvalidTransition
from tradeguard.fsm.effects import Transitioned

__all__ = ["MachineDefinition", "Model", "Spec"]

# The box the diagrams draw around the states a shared exit leaves (the feed's `close`).
_LIVE = "live"
# How `to_mermaid(current=...)` marks the states instances are in now.
_CURRENT_STYLE = "fill:#ffe082,stroke:#e65100,stroke-width:3px"


class Model(Protocol):
    """What a definition can drive: an object with a mutable ``state`` attribute."""

    state: Any


@final
@dataclass(frozen=True, slots=True)
class Spec:
    """One row of a transition table.

    Attributes:
        trigger: the verb that fires it (``trip``, ``recover``).
        sources: the states it may fire from.
        dest: the state it leads to.
        condition: the name of a predicate method on the model; ``None`` = always.
    """

    trigger: str
    sources: tuple[Enum, ...]
    dest: Enum
    condition: str | None = None

    @property
    def label(self) -> str:
        """How the row reads on a diagram: ``trigger`` or ``trigger [condition]``."""
        return self.trigger if self.condition is None else f"{self.trigger} [{self.condition}]"


@final
@dataclass(frozen=True, slots=True)
class MachineDefinition:
    """A machine kind as data, validated when it is made.

    Raises:
        ValueError: an unknown state is named, a state is unreachable from the initial one,
            or a non-terminal state has no way out.
    """

    name: str
    states: type[Enum]
    initial: Enum
    transitions: tuple[Spec, ...]
    terminal: frozenset[Enum] = frozenset()
    description: str = ""
    # States of a shared enum this kind never enters (preview has no COOLDOWN).
    unused: frozenset[Enum] = frozenset()
    # Where instances start, for the diagrams: the initial state's note, and other states an
    # instance may start in with when (a symbol's mode starts where its rules put it).
    initial_note: str = ""
    other_starts: tuple[tuple[Enum, str], ...] = ()
    _machine: Any = field(init=False, repr=False, compare=False)
    # (state, trigger) -> its rows as (condition or None, dest), in declared order.
    _rows: dict[tuple[Enum, str], tuple[tuple[str | None, Enum], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._validate()
        table = [
            {
                "trigger": s.trigger,
                "source": list(s.sources),
                "dest": s.dest,
                **({"conditions": s.condition} if s.condition else {}),
            }
            for s in self.transitions
        ]
        machine = Machine(
            model=None,
            states=self.states,
            transitions=table,
            initial=self.initial,
            auto_transitions=False,
        )
        object.__setattr__(self, "_machine", machine)
        rows: dict[tuple[Enum, str], list[tuple[str | None, Enum]]] = {}
        for s in self.transitions:
            for source in s.sources:
                rows.setdefault((source, s.trigger), []).append((s.condition, s.dest))
        object.__setattr__(self, "_rows", {key: tuple(found) for key, found in rows.items()})

    def _validate(self) -> None:
        known = set(self.used_states)
        if self.initial not in known:
            raise ValueError(f"{self.name}: initial state {self.initial!r} is not a state")
        for s in self.transitions:
            for state in (*s.sources, s.dest):
                if state not in known:
                    raise ValueError(f"{self.name}: {s.trigger!r} names unknown state {state!r}")
        for start, _ in self.other_starts:
            if start not in known:
                raise ValueError(f"{self.name}: start state {start!r} is not a state")
        reached = {self.initial, *(start for start, _ in self.other_starts)}
        frontier = list(reached)
        while frontier:
            here = frontier.pop()
            for s in self.transitions:
                if here in s.sources and s.dest not in reached:
                    reached.add(s.dest)
                    frontier.append(s.dest)
        if unreachable := [st.name for st in self.used_states if st not in reached]:
            raise ValueError(f"{self.name}: unreachable from {self.initial.name}: {unreachable}")
        for state in self.used_states:
            leaves = any(state in s.sources and s.dest != state for s in self.transitions)
            if state in self.terminal and any(state in s.sources for s in self.transitions):
                raise ValueError(f"{self.name}: terminal state {state.name} has transitions out")
            if state not in self.terminal and not leaves:
                raise ValueError(f"{self.name}: {state.name} is a trap (no transition out)")

    @property
    def used_states(self) -> tuple[Enum, ...]:
        """The states this kind can be in, in enum order."""
        return tuple(s for s in self.states if s not in self.unused)

    @property
    def starts(self) -> tuple[tuple[Enum, str], ...]:
        """Every state an instance may start in, with its note: the initial state first."""
        return ((self.initial, self.initial_note), *self.other_starts)

    @property
    def triggers(self) -> tuple[str, ...]:
        """Every trigger of the table, in the order first declared."""
        return tuple(dict.fromkeys(s.trigger for s in self.transitions))

    def targets(self, state: Enum, trigger: str) -> tuple[Spec, ...]:
        """The rows that ``trigger`` may take from ``state``, in declared order."""
        return tuple(s for s in self.transitions if s.trigger == trigger and state in s.sources)

    def fire(self, model: Model, trigger: str, machine: str, scope: str | None) -> bool:
        """Fire ``trigger`` on ``model``: the first of its rows from the model's state whose
        condition holds sets the model's ``state``.

        Returns:
            True when a transition was taken; False when every row's condition was false.

        Raises:
            InvalidTransition: the table has no row for ``trigger`` from the model's state.
        """
        rows = self._rows.get((model.state, trigger))
        if rows is None:
            raise InvalidTransition(machine, scope, model.state.name, trigger)
        for condition, dest in rows:
            if condition is None or getattr(model, condition)():
                model.state = dest
                return True
        return False

    def transition(
        self, model: Model, trigger: str, machine: str, scope: str | None, at: float
    ) -> Transitioned:
        """The one choke point of every machine: fire ``trigger`` and record it.

        Returns:
            The `Transitioned` record (source and dest equal when no row's condition held).

        Raises:
            InvalidTransition: as `fire`; nothing changed.
        """
        source = model.state
        self.fire(model, trigger, machine, scope)
        return Transitioned(machine, scope, source.name, model.state.name, trigger, at)

    def _shared_exit(self) -> Spec | None:
        """A row that leaves every non-terminal state for a terminal one (the feed's ``close``).

        Diagrams draw it once, from a box around those states, instead of an edge from each.
        """
        live = tuple(st for st in self.used_states if st not in self.terminal)
        for s in self.transitions:
            if s.condition is None and s.dest in self.terminal and set(s.sources) == set(live):
                return s
        return None

    def to_mermaid(self, current: Mapping[Enum, Sequence[str]] | None = None) -> str:
        """The definition as a Mermaid ``stateDiagram-v2``: deterministic text.

        A self-loop is written inside its state's box (``stays on reset``), where no label can
        sit on top of the loop; a row leaving every live state for a terminal one is drawn
        once, from a box around them.

        Args:
            current: states to highlight, each with the instances in it (what ``tradeguard
                status --mermaid`` shows); ``None`` for the plain diagram.
        """
        shared = self._shared_exit()
        indent = "        " if shared else "    "
        lines = ["stateDiagram-v2"]
        if shared is not None:
            lines += [f"    [*] --> {_LIVE}", f"    state {_LIVE} {{"]
        for start, note in self.starts:
            lines.append(f"{indent}[*] --> {start.name}" + (f": {note}" if note else ""))
        for s in self.transitions:
            if s is not shared:
                lines.extend(
                    f"{indent}{src.name} --> {s.dest.name}: {s.label}"
                    for src in s.sources
                    if src != s.dest
                )
        for s in self.transitions:
            lines.extend(
                f"{indent}{src.name} : stays on {s.label}" for src in s.sources if src == s.dest
            )
        for state, instances in (current or {}).items():
            if state not in self.terminal:
                lines.extend(f"{indent}{state.name} : now {name}" for name in instances)
        if shared is not None:
            lines += [
                "    }",
                f"    {_LIVE} --> {shared.dest.name}: {shared.label} (from any state)",
            ]
        for state, instances in (current or {}).items():
            if state in self.terminal:
                lines.extend(f"    {state.name} : now {name}" for name in instances)
        lines.extend(f"    {st.name} --> [*]" for st in self.used_states if st in self.terminal)
        if current:
            lines.append(f"    classDef current {_CURRENT_STYLE}")
            lines.extend(f"    class {state.name} current" for state in current)
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The definition as Graphviz ``dot`` source: deterministic text (the shared exit drawn
        once, from a cluster around the live states, as in `to_mermaid`)."""
        shared = self._shared_exit()
        lines = [f'digraph "{self.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
        if shared is not None:
            lines.append("    compound=true;")
        lines.append('    "__start" [shape=point];')
        for start, note in self.starts:
            label = f' [label="{note}"]' if note else ""
            lines.append(f'    "__start" -> "{start.name}"{label};')
        if shared is not None:
            lines.append(f'    subgraph "cluster_{_LIVE}" {{')
            lines.append(f'        label="any state but {shared.dest.name}";')
            lines.extend(f'        "{st.name}";' for st in shared.sources)
            lines.append("    }")
        for state in self.used_states:
            shape = "doubleoctagon" if state in self.terminal else "box"
            lines.append(f'    "{state.name}" [shape={shape}];')
        for s in self.transitions:
            if s is shared:
                continue
            lines.extend(
                f'    "{src.name}" -> "{s.dest.name}" [label="{s.label}"];' for src in s.sources
            )
        if shared is not None:
            lines.append(
                f'    "{shared.sources[0].name}" -> "{shared.dest.name}" '
                f'[ltail="cluster_{_LIVE}", label="{shared.label} (from any state)"];'
            )
        lines.append("}")
        return "\n".join(lines) + "\n"
