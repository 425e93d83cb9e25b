"""Every environment knob of tradeguard, typed and validated: `Settings`.

Naming: a field is its environment variable's name, lower-cased, without the ``RISK_`` or
``GPT_TRADER_`` prefix (``RISK_API_ERROR_RATE_THRESHOLD`` -> ``api_error_rate_threshold``,
``GPT_TRADER_WS_RECONNECT_BACKOFF_BASE`` -> ``ws_reconnect_backoff_base``). Any other prefix is
part of the name and kept (``COINBASE_PREFLIGHT_SKIP_REMOTE`` ->
``coinbase_preflight_skip_remote``, ``ORDER_...``, ``BROKER_...``).

`KNOBS` lists every knob once, in declaration order: its variable, field, default (as written in
the environment and the README), kind and purpose. The README's knob table is checked against it.
The kinds:

- ``ratio``: a finite number in [0, 1].
- ``seconds``: a finite number of seconds >= 0.
- ``positive_seconds``: a finite number of seconds > 0.
- ``multiplier``: a finite number >= 1.
- ``count``: a whole number >= 1.
- ``count0``: a whole number >= 0 (0 has a meaning, such as "unlimited").
- ``flag``: a boolean.
- ``path``: a file path, any text without NUL characters or surrounding whitespace; the empty
  default means "none" (an environment value is stripped, so a stray blank cannot name a file).
- ``names``: a comma-separated set of at least one name, each lower-case letters, digits and
  ``_`` starting with a letter, none twice; blanks around a name are dropped
  (``"accounts, orders"`` is ``"accounts,orders"``).
- ``redis_url``: empty (none), or a URL starting ``redis://`` or ``rediss://`` without blanks
  (user and password may be in it).
- ``label``: a name of letters, digits, ``_``, ``.`` and ``-`` (at least one character).
- ``member``: empty (the shell picks ``host:pid``), or letters, digits, ``_ . : @ -``.

Two rules go beyond the kinds: ``GPT_TRADER_WS_RECONNECT_JITTER_PCT`` must be < 1 (a jitter of
100% could make a reconnect delay zero) and ``GPT_TRADER_WS_RECONNECT_BACKOFF_MAX`` must be >=
``GPT_TRADER_WS_RECONNECT_BACKOFF_BASE``.

Knob names: our knobs share their prefixes (``RISK_``, ``ORDER_``, ``COINBASE_``,
``GPT_TRADER_``, ``BROKER_``) with the host engine's own knobs. One rule for all of them: an
unknown name that is a close misspelling of one of our knobs is a problem with a "did you mean"
(``RISK_API_ERROR_RATE_THRESHHOLD``); any other name is not ours and is ignored
(``RISK_MAX_LEVERAGE``).

This module holds no state and never reads ``os.environ`` on import: `Settings.from_env` reads the
mapping it is given, and only falls back to ``os.environ`` when given none. Every bad value, from
the environment or passed to the constructor, is reported at once in one `ConfigError`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, final

from tradeguard.errors import ConfigError, ConfigProblem

__all__ = ["KNOBS", "Knob", "Settings"]

_KINDS = (
    "ratio",
    "seconds",
    "positive_seconds",
    "count",
    "count0",
    "multiplier",
    "flag",
    "path",
    "names",
    "redis_url",
    "label",
    "member",
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LABEL = re.compile(r"[A-Za-z0-9_.-]+")
# A member name goes into Redis hash fields as ``member|guard|scope``: no ``|``, no blanks;
# ``:`` and ``@`` are allowed for the default ``host:pid`` and ``user@host`` styles.
_MEMBER = re.compile(r"[A-Za-z0-9_.:@-]+")
_REDIS_SCHEMES = ("redis://", "rediss://")
_DROPPED_PREFIXES = ("RISK_", "GPT_TRADER_")
# Every prefix a knob of ours starts with (a meta test checks each knob has one). These prefixes
# are shared with the host engine, which has knobs of its own under them, so an unknown name is
# reported only when it is a close misspelling of one of ours: a mistyped knob silently ignored
# leaves its guard at the default, a safety bug; a host knob refused stops the host for nothing.
_CHECKED_PREFIXES = ("RISK_", "ORDER_", "COINBASE_", "GPT_TRADER_", "BROKER_")
# How alike (difflib's ratio, 0..1) an unknown name must be to one of ours to be a misspelling
# of it: one or two letters off in a knob name is ~0.95; RISK_MAX_LEVERAGE is ~0.5 from ours.
_MISSPELLING_CUTOFF = 0.85
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_FLAG_EXPECTED = "one of 0, 1, true, false, yes, no, on, off (any case)"
_JITTER_ENV = "GPT_TRADER_WS_RECONNECT_JITTER_PCT"
_BACKOFF_BASE_ENV = "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE"
_BACKOFF_MAX_ENV = "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX"
# A field's value, whatever its kind.
_Value = float | int | bool | str


@final
@dataclass(frozen=True, slots=True)
class Knob:
    """One environment knob: how it is spelled, typed and documented.

    Attributes:
        env: the environment variable, e.g. ``"RISK_API_ERROR_RATE_THRESHOLD"``.
        field: the `Settings` field it sets, e.g. ``"api_error_rate_threshold"``.
        default: the default as written in the environment and the README, e.g. ``"0.2"``.
        kind: one of ``ratio``, ``seconds``, ``positive_seconds``, ``count``, ``count0``,
            ``multiplier``, ``flag``, ``path``, ``names`` (see the module docstring).
        purpose: one short sentence for the README.

    Raises:
        ConfigError: ``kind`` is not one of the known kinds.
    """

    env: str
    field: str
    default: str
    kind: str
    purpose: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError([ConfigProblem(self.env, self.kind, f"one of {', '.join(_KINDS)}")])


def _knob(env: str, default: str, kind: str, purpose: str) -> Knob:
    """Declare a knob whose field name follows the naming rule of the module docstring."""
    field = env
    for prefix in _DROPPED_PREFIXES:
        field = field.removeprefix(prefix)
    return Knob(env, field.lower(), default, kind, purpose)


KNOBS: tuple[Knob, ...] = (
    _knob(
        "RISK_API_ERROR_RATE_THRESHOLD",
        "0.2",
        "ratio",
        "Share of failed API calls in the window that trips the API health guard.",
    ),
    _knob(
        "RISK_API_RATE_LIMIT_USAGE_THRESHOLD",
        "0.9",
        "ratio",
        "Rate-limit usage that trips the API health guard.",
    ),
    _knob(
        "RISK_API_ERROR_RATE_WINDOW_SECONDS",
        "60",
        "positive_seconds",
        "Length of the sliding window the API error rate is measured over.",
    ),
    _knob(
        "RISK_API_ERROR_RATE_MIN_CALLS",
        "10",
        "count",
        "Calls the window must hold before the error rate can trip the guard.",
    ),
    _knob(
        "RISK_API_HEALTH_COOLDOWN_SECONDS",
        "300",
        "seconds",
        "Seconds trading stays restricted after an API health or reconciliation fault clears.",
    ),
    _knob(
        "RISK_MARK_STALENESS_THRESHOLD_SECONDS",
        "30",
        "positive_seconds",
        "Seconds without a fresh mark after which a symbol's mark is stale.",
    ),
    _knob(
        "RISK_MARK_STALENESS_COOLDOWN_SECONDS",
        "120",
        "seconds",
        "Seconds a symbol stays restricted after its mark is fresh again.",
    ),
    _knob(
        "RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY",
        "1",
        "flag",
        "A stale mark makes its symbol reduce-only (1) instead of paused (0).",
    ),
    _knob(
        "RISK_SLIPPAGE_FAILURE_PAUSE_AFTER",
        "3",
        "count",
        "Consecutive slippage-guard failures that restrict a symbol.",
    ),
    _knob(
        "RISK_SLIPPAGE_PAUSE_SECONDS",
        "60",
        "seconds",
        "Seconds a symbol stays restricted after a slippage trip.",
    ),
    _knob(
        "RISK_SLIPPAGE_MAX_PCT",
        "0.005",
        "ratio",
        "Slippage against the mid beyond which the slippage guard fails an order (0.005 = 0.5%).",
    ),
    _knob(
        "RISK_VALIDATION_FAILURE_ESCALATE_AFTER",
        "5",
        "count",
        "Consecutive validation-infrastructure failures that restrict trading.",
    ),
    _knob(
        "RISK_VALIDATION_FAILURE_COOLDOWN_SECONDS",
        "180",
        "seconds",
        "Seconds trading stays restricted after a validation-infrastructure trip.",
    ),
    _knob(
        "RISK_PREVIEW_FAILURE_DISABLE_AFTER",
        "5",
        "count",
        "Consecutive order-preview failures before preview is disabled for the session.",
    ),
    _knob(
        "RISK_BROKER_OUTAGE_MAX_FAILURES",
        "3",
        "count",
        "Consecutive failed balance or position reads that restrict trading.",
    ),
    _knob(
        "RISK_BROKER_OUTAGE_COOLDOWN_SECONDS",
        "120",
        "seconds",
        "Seconds trading stays restricted after broker reads succeed again.",
    ),
    _knob(
        "ORDER_RECONCILIATION_DRIFT_MAX_FAILURES",
        "3",
        "count",
        "Consecutive audits finding unknown bot-owned orders that restrict trading.",
    ),
    _knob(
        "GPT_TRADER_CIRCUIT_FAILURE_THRESHOLD",
        "5",
        "count",
        "Consecutive counted failures that open an endpoint's circuit breaker.",
    ),
    _knob(
        "GPT_TRADER_CIRCUIT_RECOVERY_TIMEOUT",
        "30",
        "positive_seconds",
        "Seconds an open circuit breaker waits before admitting probe calls.",
    ),
    _knob(
        "GPT_TRADER_CIRCUIT_SUCCESS_THRESHOLD",
        "2",
        "count",
        "Successful probes that close a half-open breaker (also its probe limit).",
    ),
    _knob(
        "GPT_TRADER_API_CATEGORIES",
        "accounts,orders,market",
        "names",
        "Endpoint categories, one circuit breaker each; any other category is refused.",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE",
        "2.0",
        "positive_seconds",
        "Base delay in seconds of the exponential reconnect backoff.",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX",
        "60.0",
        "positive_seconds",
        "Cap in seconds on every reconnect delay (at least the base).",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_BACKOFF_MULTIPLIER",
        "2.0",
        "multiplier",
        "Growth factor of the reconnect delay per failed attempt.",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_JITTER_PCT",
        "0.25",
        "ratio",
        "Random spread of each reconnect delay as a fraction, below 1 (0.25 = ±25%).",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS",
        "10",
        "count0",
        "Failed reconnects in a row before the feed is degraded (0 = unlimited).",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_RESET_SECONDS",
        "60.0",
        "positive_seconds",
        "Seconds a connection must stay up to reset the attempt counter.",
    ),
    _knob(
        "GPT_TRADER_WS_RECONNECT_PAUSE_SECONDS",
        "300",
        "seconds",
        "Cooldown in seconds after the feed exceeded its reconnect attempts.",
    ),
    _knob(
        "GPT_TRADER_WS_MESSAGE_STALE_SECONDS",
        "15",
        "positive_seconds",
        "Seconds of silence after which a connected feed is treated as dead.",
    ),
    _knob(
        "GPT_TRADER_HEALTH_CHECK_INTERVAL",
        "30.0",
        "positive_seconds",
        "Seconds between health check runner cycles.",
    ),
    _knob(
        "GPT_TRADER_MAX_CONCURRENT_REST_CALLS",
        "5",
        "count",
        "Most REST calls to the broker in flight at once.",
    ),
    _knob(
        "ORDER_SUBMISSION_RETRIES_ENABLED",
        "0",
        "flag",
        "Retry failed order submissions at the broker.",
    ),
    _knob(
        "BROKER_CALLS_USE_DEDICATED_EXECUTOR",
        "0",
        "flag",
        "Run broker calls in a dedicated thread pool.",
    ),
    _knob(
        "GPT_TRADER_PREFLIGHT_WARN_ONLY",
        "0",
        "flag",
        "Downgrade preflight errors to warnings (the env form of --warn-only).",
    ),
    _knob(
        "COINBASE_PREFLIGHT_SKIP_REMOTE",
        "0",
        "flag",
        "Skip the remote preflight checks (dev or offline).",
    ),
    _knob(
        "COINBASE_PREFLIGHT_FORCE_REMOTE",
        "0",
        "flag",
        "Run the remote preflight checks even on dev.",
    ),
    _knob(
        "GPT_TRADER_STORE_PATH",
        "",
        "path",
        "SQLite file of the event archive and restart snapshot (empty: no store).",
    ),
    _knob(
        "GPT_TRADER_FLEET_REDIS_URL",
        "",
        "redis_url",
        "Redis server of the fleet sharing restrictions (redis:// or rediss://; empty: no fleet).",
    ),
    _knob(
        "GPT_TRADER_FLEET_NAME",
        "default",
        "label",
        "Name of the fleet; its Redis keys are namespaced by it.",
    ),
    _knob(
        "GPT_TRADER_FLEET_MEMBER",
        "",
        "member",
        "This process's member name in the fleet (empty: host name and process id).",
    ),
    _knob(
        "GPT_TRADER_FLEET_LOST_GRACE_SECONDS",
        "5",
        "positive_seconds",
        "Seconds without Redis before the fleet guard trips to REDUCE_ONLY.",
    ),
    _knob(
        "GPT_TRADER_FLEET_MEMBER_TTL_SECONDS",
        "15",
        "positive_seconds",
        "Seconds without a heartbeat after which a member is dead (also the fleet cooldown).",
    ),
)


@final
@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob, typed: `Settings()` is the defaults, `Settings.from_env()` reads them.

    Fields are the knobs of `KNOBS`, in the same order (see the module docstring for the naming
    rule and the meaning of each kind). Build a changed copy with ``dataclasses.replace``; it is
    validated like any construction. Numbers given as ``int`` for a float field are stored as
    ``float``; nothing else is converted (``True`` is not a number, ``3.0`` is not a count).

    Raises:
        ConfigError: one or more fields have a bad type or value, or the reconnect backoff cap is
            below its base. Every problem is listed, each naming the environment variable.
    """

    api_error_rate_threshold: float = 0.2
    api_rate_limit_usage_threshold: float = 0.9
    api_error_rate_window_seconds: float = 60.0
    api_error_rate_min_calls: int = 10
    api_health_cooldown_seconds: float = 300.0
    mark_staleness_threshold_seconds: float = 30.0
    mark_staleness_cooldown_seconds: float = 120.0
    mark_staleness_allow_reduce_only: bool = True
    slippage_failure_pause_after: int = 3
    slippage_pause_seconds: float = 60.0
    slippage_max_pct: float = 0.005
    validation_failure_escalate_after: int = 5
    validation_failure_cooldown_seconds: float = 180.0
    preview_failure_disable_after: int = 5
    broker_outage_max_failures: int = 3
    broker_outage_cooldown_seconds: float = 120.0
    order_reconciliation_drift_max_failures: int = 3
    circuit_failure_threshold: int = 5
    circuit_recovery_timeout: float = 30.0
    circuit_success_threshold: int = 2
    api_categories: str = "accounts,orders,market"
    ws_reconnect_backoff_base: float = 2.0
    ws_reconnect_backoff_max: float = 60.0
    ws_reconnect_backoff_multiplier: float = 2.0
    ws_reconnect_jitter_pct: float = 0.25
    ws_reconnect_max_attempts: int = 10
    ws_reconnect_reset_seconds: float = 60.0
    ws_reconnect_pause_seconds: float = 300.0
    ws_message_stale_seconds: float = 15.0
    health_check_interval: float = 30.0
    max_concurrent_rest_calls: int = 5
    order_submission_retries_enabled: bool = False
    broker_calls_use_dedicated_executor: bool = False
    preflight_warn_only: bool = False
    coinbase_preflight_skip_remote: bool = False
    coinbase_preflight_force_remote: bool = False
    store_path: str = ""
    fleet_redis_url: str = ""
    fleet_name: str = "default"
    fleet_member: str = ""
    fleet_lost_grace_seconds: float = 5.0
    fleet_member_ttl_seconds: float = 15.0

    def __post_init__(self) -> None:
        problems: list[ConfigProblem] = []
        valid: dict[str, _Value] = {}
        for knob in KNOBS:
            given = getattr(self, knob.field)
            value = _checked(knob, given)
            if value is None:
                expected = "True or False" if knob.kind == "flag" else _expected(knob)
                problems.append(ConfigProblem(knob.env, repr(given), expected))
            else:
                valid[knob.field] = value
        problems += _cross_field_problems(valid, shown=lambda knob: repr(getattr(self, knob.field)))
        if problems:
            raise ConfigError(problems)
        # Validate, then normalise: ints given for float fields become floats, so every field
        # has exactly its annotated type.
        for name, value in valid.items():
            if type(value) is not type(getattr(self, name)):
                object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every knob from an environment mapping.

        Each value is stripped of surrounding whitespace; an unset or empty variable means the
        default. Numbers are decimal (``"0.2"``, ``"60"``, ``"1e3"``); NaN and infinity are
        refused. Whole numbers (counts) are written without a decimal point: ``"3"``, not
        ``"3.5"`` nor ``"3.0"``. Flags accept ``0``, ``1``, ``true``, ``false``, ``yes``,
        ``no``, ``on``, ``off`` in any case. A path is any text without a NUL character.

        The knob-name rule, one for every prefix our knobs use (``RISK_``, ``ORDER_``,
        ``COINBASE_``, ``GPT_TRADER_``, ``BROKER_``): an unknown variable that is a close
        misspelling of one of our knobs is reported, with that knob as a "did you mean" (a
        mistyped knob would otherwise leave its guard at the default without anyone
        noticing); any other variable is not ours (the host engine's ``RISK_MAX_LEVERAGE``)
        and is ignored.

        Args:
            environ: the variables to read; ``None`` means ``os.environ``, read at this call.

        Returns:
            The settings, every knob not set in ``environ`` at its default.

        Raises:
            ConfigError: one or more values do not parse, are out of range, break a rule between
                knobs, or name an unknown knob. Every problem is listed at once: known knobs in
                declaration order, then rules between knobs, then unknown names sorted. Each
                problem's value is the text exactly as given.
        """
        source = os.environ if environ is None else environ
        defaults = cls()
        problems: list[ConfigProblem] = []
        given: dict[str, str] = {}  # field -> its text as given, for every knob that is set
        # Any: each value has its own knob's type, which no single dict value type can say.
        valid: dict[str, Any] = {}
        for knob in KNOBS:
            text = source.get(knob.env)
            if text is None or not text.strip():
                continue
            given[knob.field] = text
            parsed = _parse(knob, text.strip())
            value = None if parsed is None else _checked(knob, parsed)
            if value is None:
                problems.append(ConfigProblem(knob.env, text, _expected(knob)))
            else:
                valid[knob.field] = value
        # Rules between knobs see the default of each unset knob and skip knobs already reported.
        current = {
            knob.field: getattr(defaults, knob.field) for knob in KNOBS if knob.field not in given
        } | valid
        problems += _cross_field_problems(
            current, shown=lambda knob: given.get(knob.field) or _to_text(current[knob.field])
        )
        problems += _unknown_name_problems(source)
        if problems:
            raise ConfigError(problems)
        return cls(**valid)

    def to_env(self) -> dict[str, str]:
        """Write every knob in its environment form.

        Returns:
            A fresh dict, variable name to value, for every knob in declaration order; flags are
            written ``"1"`` or ``"0"``. ``Settings.from_env(settings.to_env()) == settings``.
        """
        return {knob.env: _to_text(getattr(self, knob.field)) for knob in KNOBS}


def _knob_for(env: str) -> Knob:
    """The declared knob of an environment variable."""
    return next(knob for knob in KNOBS if knob.env == env)


def _expected(knob: Knob) -> str:
    """What a knob accepts, worded for a `ConfigProblem`."""
    if knob.env == _JITTER_ENV:
        return "a number >= 0 and < 1 (a jitter of 1 could make a delay zero)"
    match knob.kind:
        case "ratio":
            return "a number between 0 and 1"
        case "seconds":
            return "a finite number of seconds >= 0"
        case "positive_seconds":
            return "a finite number of seconds > 0"
        case "multiplier":
            return "a finite number >= 1"
        case "count":
            return "a whole number >= 1"
        case "count0":
            return "a whole number >= 0"
        case "path":
            return "a file path without NUL characters or surrounding whitespace (empty: none)"
        case "names":
            return (
                "comma-separated names (lower-case letters, digits, _; starting with a letter), "
                "at least one, none twice"
            )
        case "redis_url":
            return "a URL starting redis:// or rediss://, without blanks (empty: no fleet)"
        case "label":
            return "a name of letters, digits, _, . and - (at least one)"
        case "member":
            return "letters, digits, _, ., :, @ and - (empty: host name and process id)"
        case _:
            return _FLAG_EXPECTED


def _parse(knob: Knob, text: str) -> _Value | None:
    """Turn a stripped environment value into its knob's type, or ``None`` if it cannot."""
    if knob.kind in ("path", "redis_url", "label", "member"):
        return text  # `_checked` refuses what no file can be named, or bad names
    if knob.kind == "names":
        return ",".join(name.strip() for name in text.split(","))  # `_checked` judges them
    if knob.kind == "flag":
        word = text.lower()
        if word in _TRUE_WORDS:
            return True
        return False if word in _FALSE_WORDS else None
    if knob.kind in ("count", "count0"):
        return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None
    try:
        return float(text)
    except ValueError:
        return None


def _checked(knob: Knob, value: object) -> _Value | None:
    """Return ``value`` with its knob's exact type if its type and range are valid, else None."""
    if knob.kind == "path":
        # Surrounding whitespace is refused, not stripped: `from_env` strips what it reads, so
        # a path kept with blanks could not make the `to_env` round trip.
        if isinstance(value, str) and "\x00" not in value and value == value.strip():
            return value
        return None
    if knob.kind in ("redis_url", "label", "member"):
        return value if isinstance(value, str) and _text_ok(knob.kind, value) else None
    if knob.kind == "names":
        if not isinstance(value, str):
            return None
        names = value.split(",")
        ok = all(_NAME.fullmatch(n) for n in names) and len(set(names)) == len(names)
        return value if ok else None
    if knob.kind == "flag":
        return value if isinstance(value, bool) else None
    # A bool is an int in Python, but True seconds or True retries is a bug, not a number.
    if isinstance(value, bool):
        return None
    if knob.kind in ("count", "count0"):
        if not isinstance(value, int):
            return None
        return int(value) if value >= (1 if knob.kind == "count" else 0) else None
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    # Refused explicitly: NaN would slip past a careless comparison, infinity past every one.
    if not math.isfinite(number):
        return None
    match knob.kind:
        case "ratio":
            ok = 0.0 <= number < 1.0 if knob.env == _JITTER_ENV else 0.0 <= number <= 1.0
        case "seconds":
            ok = number >= 0.0
        case "positive_seconds":
            ok = number > 0.0
        case _:
            ok = number >= 1.0
    return number if ok else None


def _text_ok(kind: str, value: str) -> bool:
    """Whether ``value`` is a valid text knob of ``kind`` (``redis_url``, ``label``, ``member``)."""
    if kind == "label":
        return _LABEL.fullmatch(value) is not None
    if kind == "member":
        return value == "" or _MEMBER.fullmatch(value) is not None
    if value == "":
        return True
    rest = value.removeprefix("rediss://").removeprefix("redis://")
    return (
        value.startswith(_REDIS_SCHEMES)
        and rest != ""
        and not any(c.isspace() for c in value)
        and "\x00" not in value
    )


def _cross_field_problems(
    valid: Mapping[str, _Value], shown: Callable[[Knob], str]
) -> list[ConfigProblem]:
    """Check the rules between knobs, given the knobs whose own values are valid.

    Args:
        valid: field name to value, for the knobs that passed their own checks.
        shown: how to show a knob's offending value in its problem.
    """
    base = valid.get("ws_reconnect_backoff_base")
    cap = valid.get("ws_reconnect_backoff_max")
    if not isinstance(base, float) or not isinstance(cap, float) or cap >= base:
        return []
    cap_knob = _knob_for(_BACKOFF_MAX_ENV)
    if cap == float(cap_knob.default):
        # Only the base was changed: blame the knob someone actually set.
        base_knob = _knob_for(_BACKOFF_BASE_ENV)
        expected = f"a number of seconds <= {_BACKOFF_MAX_ENV} ({cap!r})"
        return [ConfigProblem(base_knob.env, shown(base_knob), expected)]
    expected = f"a number of seconds >= {_BACKOFF_BASE_ENV} ({base!r})"
    return [ConfigProblem(cap_knob.env, shown(cap_knob), expected)]


def _unknown_name_problems(source: Mapping[str, str]) -> list[ConfigProblem]:
    """Report variables that are close misspellings of a knob, naming the knob meant.

    Any other unknown name, under our prefixes or not, belongs to someone else: ignored.
    """
    known = [knob.env for knob in KNOBS]
    problems: list[ConfigProblem] = []
    for name in sorted(source):
        if not name.startswith(_CHECKED_PREFIXES) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=_MISSPELLING_CUTOFF)
        if close:
            hint = f"a known knob (did you mean {close[0]}?)"
            problems.append(ConfigProblem(name, source[name], hint))
    return problems


def _to_text(value: _Value) -> str:
    """The environment form of a field value; `_parse` reads it back exactly."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value)
