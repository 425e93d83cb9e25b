"""Every exception tradeguard raises on purpose.

The tree (each concrete error also inherits the builtin a caller would catch)::

    TradeguardError
    ├── ConfigError(ValueError)          a knob has a bad value (all problems reported at once)
    ├── InvalidObservation(ValueError)   an observation, order intent or argument is malformed
    ├── UnknownGuard(LookupError)        a guard, breaker or feed name that does not exist
    ├── InvalidTransition(RuntimeError)  the machine's state forbids the request
    └── StoreError(OSError)              the event store cannot be opened, read or written

A core exception always means the caller misused the API. Faults of the outside world
(timeouts, 5xx, dropped sockets) are observations, never exceptions. `StoreError` is the
shell's: the store (`tradeguard.io.store`) is the engine's own state, so a store it cannot
trust stops it with a clear error instead of becoming an observation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "InvalidObservation",
    "InvalidTransition",
    "StoreError",
    "TradeguardError",
    "UnknownGuard",
]


class TradeguardError(Exception):
    """Base class of every error tradeguard raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad knob: which variable, the value it had, and what was expected."""

    variable: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: expected {self.expected}"


class ConfigError(TradeguardError, ValueError):
    """One or more knobs have bad values.

    Attributes:
        problems: every bad knob found, in the order the knobs are declared.
        variable: the first bad variable's name (convenient when there is one).
        value: the first bad variable's raw value.
    """

    def __init__(self, problems: list[ConfigProblem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = tuple(problems)
        self.variable = problems[0].variable
        self.value = problems[0].value
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} bad configuration value(s):\n{lines}")


class InvalidObservation(TradeguardError, ValueError):
    """An observation, order intent or call argument is malformed; nothing was changed."""


class UnknownGuard(TradeguardError, LookupError):
    """A guard, breaker or feed name that does not exist.

    Attributes:
        name: the name asked for.
        expected: the names that do exist.
    """

    def __init__(self, kind: str, name: str, expected: list[str]) -> None:
        self.name = name
        self.expected = tuple(expected)
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(expected)}")


class InvalidTransition(TradeguardError, RuntimeError):
    """The machine's current state forbids the requested change.

    Attributes:
        machine: the machine's name (``"api_health"``, ``"feed:market"``).
        scope: the symbol, or ``None`` for global.
        state: the state it was in.
        trigger: what was asked of it.
    """

    def __init__(self, machine: str, scope: str | None, state: str, trigger: str) -> None:
        self.machine = machine
        self.scope = scope
        self.state = state
        self.trigger = trigger
        where = machine if scope is None else f"{machine}[{scope}]"
        super().__init__(f"{where} cannot {trigger!r} from state {state}")


class StoreError(TradeguardError, OSError):
    """The event store cannot be used: not a tradeguard store, corrupt, unreadable, read-only,
    or the disk is full. Never a silent fresh start (DESIGN §3, issue 6).

    Attributes:
        path: the store's file.
        cause: what is wrong with it, in words.
    """

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"event store {path}: {cause}")
