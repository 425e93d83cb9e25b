"""The public surface is exactly DESIGN §3's names plus the errors, and every name exists."""

from __future__ import annotations

import tradeguard
from tradeguard import errors
from tradeguard.fsm import effects, events

DESIGN_NAMES = {
    "ReliabilityLayer",
    "Settings",
    "OrderIntent",
    "Side",
    "TradingMode",
    "GuardState",
}
ERRORS = {
    "TradeguardError",
    "ConfigError",
    "InvalidObservation",
    "InvalidSettings",
    "InvalidSnapshot",
    "InvalidRecord",
    "UnknownGuard",
    "UnknownFeed",
    "InvalidTransition",
    "RuntimeClosed",
    "RuntimeNotRunning",
    "EngineNotRunning",
    "EngineAlreadyRunning",
    "StoreError",
    "StoreNotOpen",
    "BrokerError",
    "CircuitOpen",
    "MalformedFeedMessage",
}


def test_top_level_exports_design_names_and_errors() -> None:
    exported = set(tradeguard.__all__)
    assert exported >= DESIGN_NAMES | ERRORS
    assert sorted(tradeguard.__all__, key=str.lower) == sorted(exported, key=str.lower)


def test_every_error_of_the_tree_is_exported() -> None:
    # `ConfigProblem` is a value a `ConfigError` carries, not an exception.
    assert set(errors.__all__) - {"ConfigProblem"} == ERRORS
    for name in ERRORS:
        assert name in errors.__doc__, f"{name} is not listed in the errors module docstring"


def test_every_exported_name_exists() -> None:
    for module in (tradeguard, events, effects, errors):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_version_comes_from_package_metadata() -> None:
    assert tradeguard.__version__ != "0+unknown"


def test_design_observations_and_effects_are_exported() -> None:
    assert {
        "ApiCall",
        "RateLimitUsage",
        "MarkUpdate",
        "SlippageCheck",
        "ValidationCheck",
        "PreviewResult",
        "BrokerRead",
        "ReconciliationAudit",
    } <= set(events.__all__)
    assert {
        "Transitioned",
        "ModeChanged",
        "CancelOpenOrders",
        "CancelOrders",
        "Alert",
        "DisablePreview",
        "MaxAttemptsExceeded",
    } <= set(effects.__all__)


def test_errors_inherit_the_builtin_a_caller_would_catch() -> None:
    assert issubclass(tradeguard.ConfigError, ValueError)
    assert issubclass(tradeguard.InvalidObservation, ValueError)
    assert issubclass(tradeguard.UnknownGuard, LookupError)
    assert issubclass(tradeguard.InvalidTransition, RuntimeError)
    assert issubclass(tradeguard.StoreError, OSError)
    # issue 12: the specific names subclass what was raised before, so old handlers still catch.
    for name in ("InvalidSettings", "InvalidSnapshot", "InvalidRecord"):
        assert issubclass(getattr(tradeguard, name), tradeguard.InvalidObservation)
    assert issubclass(tradeguard.UnknownFeed, tradeguard.UnknownGuard)
    for name in ("RuntimeClosed", "RuntimeNotRunning", "EngineNotRunning", "EngineAlreadyRunning"):
        assert issubclass(getattr(tradeguard, name), RuntimeError)
    assert issubclass(tradeguard.CircuitOpen, tradeguard.BrokerError)
    assert issubclass(tradeguard.MalformedFeedMessage, ValueError)
    for name in ERRORS:
        assert issubclass(getattr(tradeguard, name), tradeguard.TradeguardError)
