"""Every exception tradeguard raises on purpose.

The tree (each concrete error also inherits the builtin a caller would catch)::

    TradeguardError
    ├── ConfigError(ValueError)          a knob has a bad value (all problems reported at once)
    ├── InvalidObservation(ValueError)   an observation, order intent or argument is malformed
    │   ├── InvalidSettings              the layer was given something that is not a `Settings`
    │   ├── InvalidSnapshot              a snapshot to restore or store is malformed
    │   └── InvalidRecord                a record for the event store is malformed
    ├── UnknownGuard(LookupError)        a guard name that does not exist
    │   └── UnknownFeed                  a feed that was never started
    ├── InvalidTransition(RuntimeError)  the machine's state forbids the request
    ├── RuntimeClosed(RuntimeError)      a `Runtime` was used after its block ended
    ├── RuntimeNotRunning(RuntimeError)  a `Runtime` was asked to start a task outside its block
    ├── EngineNotRunning(RuntimeError)   a part of an `Engine` was used outside its block
    ├── EngineAlreadyRunning(RuntimeError)  an `Engine` was entered a second time
    ├── StoreNotOpen(RuntimeError)       an `EventStore` used outside its block, or reopened
    ├── StoreError(OSError)              the event store cannot be opened, read or written
    ├── BrokerError                      the venue answered with a failure (or did not answer)
    │   └── CircuitOpen                  a circuit breaker refused the call; nothing was sent
    └── MalformedFeedMessage(ValueError) a feed message is not JSON or not shaped like one

A core exception always means the caller misused the API. Faults of the outside world
(timeouts, 5xx, dropped sockets) are observations, never exceptions. `StoreError` is the
shell's: the store (`tradeguard.io.store`) is the engine's own state, so a store it cannot
trust stops it with a clear error instead of becoming an observation. `BrokerError` and
`MalformedFeedMessage` are raised by the shell's adapters to the shell itself, which turns them
into observations at the edge; a `Broker` implementation raises `BrokerError`.

The more specific names under `InvalidObservation` and `UnknownGuard` subclass the class that
was raised before they existed, so an existing ``except`` clause keeps catching them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokerError",
    "CircuitOpen",
    "ConfigError",
    "ConfigProblem",
    "EngineAlreadyRunning",
    "EngineNotRunning",
    "InvalidObservation",
    "InvalidRecord",
    "InvalidSettings",
    "InvalidSnapshot",
    "InvalidTransition",
    "MalformedFeedMessage",
    "RuntimeClosed",
    "RuntimeNotRunning",
    "StoreError",
    "StoreNotOpen",
    "TradeguardError",
    "UnknownFeed",
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


class InvalidSettings(InvalidObservation):
    """The layer was given something that is not a `tradeguard.Settings`."""


class InvalidSnapshot(InvalidObservation):
    """A snapshot to restore (`ReliabilityLayer.restore`) or to store is malformed, not
    JSON-ready or of another version; nothing was changed."""


class InvalidRecord(InvalidObservation):
    """A record for the event store is malformed: an unknown kind, a bad time, not JSON-ready,
    or not what the recorder method archives; nothing was written."""


class UnknownGuard(TradeguardError, LookupError):
    """A guard name that does not exist.

    Attributes:
        name: the name asked for.
        expected: the names that do exist.
    """

    def __init__(self, kind: str, name: str, expected: list[str]) -> None:
        self.name = name
        self.expected = tuple(expected)
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(expected)}")


class UnknownFeed(UnknownGuard):
    """A feed event names a feed that was never started.

    Attributes:
        name: the feed asked for.
        expected: the feeds that were started.
    """

    def __init__(self, name: str, expected: list[str]) -> None:
        super().__init__("feed", name, expected)


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


class RuntimeClosed(TradeguardError, RuntimeError):
    """A `tradeguard.io.Runtime` was used after its ``async with`` block ended: nothing can be
    observed, and no effect can run any more."""


class RuntimeNotRunning(TradeguardError, RuntimeError):
    """A `tradeguard.io.Runtime` was asked to start a task outside its ``async with`` block."""


class EngineNotRunning(TradeguardError, RuntimeError):
    """A part of the engine was used outside its ``async with`` block."""


class EngineAlreadyRunning(TradeguardError, RuntimeError):
    """An `Engine` was entered while its block is already running: build another."""


class StoreNotOpen(TradeguardError, RuntimeError):
    """An `EventStore` was used outside its ``async with`` block, or entered a second time."""


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


class BrokerError(TradeguardError):
    """The venue answered with a failure, or did not answer.

    Raised by a `tradeguard.io.Broker`; the shell turns it into an observation.

    Attributes:
        category: the endpoint category (``"orders"``, ``"accounts"``, ``"market"``).
        status: the HTTP status, or ``None`` for a timeout or a connection failure.
    """

    def __init__(self, category: str, status: int | None, message: str) -> None:
        self.category = category
        self.status = status
        where = "no response" if status is None else f"HTTP {status}"
        super().__init__(f"{category}: {where}: {message}")


class CircuitOpen(BrokerError):
    """The category's circuit breaker refused the call; nothing was sent.

    Nothing is observed for it either: the breaker refused, the API did nothing.
    """

    def __init__(self, category: str) -> None:
        super().__init__(
            category, None, f"circuit breaker {category!r} refused the call (not sent)"
        )


class MalformedFeedMessage(TradeguardError, ValueError):
    """A feed message that is not valid JSON or not shaped like a feed message."""
