"""Settings: every env knob typed and validated, every bad value reported at once (DESIGN §3)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tradeguard.config import KNOBS, Knob, Settings
from tradeguard.errors import ConfigError, ConfigProblem

REPO_ROOT = Path(__file__).resolve().parents[2]

# The seed's defaults (../shared/seed/reliability-layer.md) and DESIGN §3's new knobs, written
# out by hand so that a typo in KNOBS or in a field default cannot agree with itself.
SEED_DEFAULTS: dict[str, float | int | bool | str] = {
    "api_error_rate_threshold": 0.2,
    "api_rate_limit_usage_threshold": 0.9,
    "api_error_rate_window_seconds": 60.0,
    "api_error_rate_min_calls": 10,
    "api_health_cooldown_seconds": 300.0,
    "mark_staleness_threshold_seconds": 30.0,
    "mark_staleness_cooldown_seconds": 120.0,
    "mark_staleness_allow_reduce_only": True,
    "slippage_failure_pause_after": 3,
    "slippage_pause_seconds": 60.0,
    "slippage_max_pct": 0.005,
    "validation_failure_escalate_after": 5,
    "validation_failure_cooldown_seconds": 180.0,
    "preview_failure_disable_after": 5,
    "broker_outage_max_failures": 3,
    "broker_outage_cooldown_seconds": 120.0,
    "order_reconciliation_drift_max_failures": 3,
    "circuit_failure_threshold": 5,
    "circuit_recovery_timeout": 30.0,
    "circuit_success_threshold": 2,
    "api_categories": "accounts,orders,market",
    "ws_reconnect_backoff_base": 2.0,
    "ws_reconnect_backoff_max": 60.0,
    "ws_reconnect_backoff_multiplier": 2.0,
    "ws_reconnect_jitter_pct": 0.25,
    "ws_reconnect_max_attempts": 10,
    "ws_reconnect_reset_seconds": 60.0,
    "ws_reconnect_pause_seconds": 300.0,
    "ws_message_stale_seconds": 15.0,
    "health_check_interval": 30.0,
    "max_concurrent_rest_calls": 5,
    "order_submission_retries_enabled": False,
    "broker_calls_use_dedicated_executor": False,
    "preflight_warn_only": False,
    "coinbase_preflight_skip_remote": False,
    "coinbase_preflight_force_remote": False,
    "store_path": "",
    "fleet_redis_url": "",
    "fleet_name": "default",
    "fleet_member": "",
    "fleet_lost_grace_seconds": 5.0,
    "fleet_member_ttl_seconds": 15.0,
}

PYTHON_TYPE = {
    "ratio": float,
    "seconds": float,
    "positive_seconds": float,
    "multiplier": float,
    "count": int,
    "count0": int,
    "flag": bool,
    "path": str,
    "names": str,
    "redis_url": str,
    "label": str,
    "member": str,
}

# A valid value other than the default, per kind, as text and as the parsed value.
OTHER_VALUE: dict[str, tuple[str, float | int | bool | str]] = {
    "ratio": ("0.5", 0.5),
    "seconds": (" 7.5 ", 7.5),
    "positive_seconds": ("7.5", 7.5),
    "multiplier": ("1.5", 1.5),
    "count": ("7", 7),
    "count0": ("0", 0),
    "path": (" /var/lib/trade guard/store.db ", "/var/lib/trade guard/store.db"),
    "names": (" orders , market_data ", "orders,market_data"),
    "redis_url": (
        " rediss://user:secret@redis.example:6380/2 ",
        "rediss://user:secret@redis.example:6380/2",
    ),
    "label": ("desk-1.eu_west", "desk-1.eu_west"),
    "member": ("host-a:4242", "host-a:4242"),
}

# One knob of each kind, for the rejection table below.
SAMPLE = {
    "ratio": "RISK_API_ERROR_RATE_THRESHOLD",
    "seconds": "RISK_API_HEALTH_COOLDOWN_SECONDS",
    "positive_seconds": "RISK_MARK_STALENESS_THRESHOLD_SECONDS",
    "multiplier": "GPT_TRADER_WS_RECONNECT_BACKOFF_MULTIPLIER",
    "count": "RISK_SLIPPAGE_FAILURE_PAUSE_AFTER",
    "count0": "GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS",
    "flag": "RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY",
    "path": "GPT_TRADER_STORE_PATH",
    "names": "GPT_TRADER_API_CATEGORIES",
    "redis_url": "GPT_TRADER_FLEET_REDIS_URL",
    "label": "GPT_TRADER_FLEET_NAME",
    "member": "GPT_TRADER_FLEET_MEMBER",
}

BAD_VALUES = [
    *[("ratio", raw) for raw in ["abc", "nan", "inf", "-inf", "-0.1", "1.5"]],
    *[("seconds", raw) for raw in ["abc", "nan", "NaN", "inf", "Infinity", "-1", "1e400"]],
    *[("positive_seconds", raw) for raw in ["abc", "nan", "inf", "-5", "0", "0.0"]],
    *[("multiplier", raw) for raw in ["abc", "nan", "inf", "0.5", "0"]],
    *[("count", raw) for raw in ["abc", "nan", "inf", "0", "-1", "3.5", "3.0", "1e3", "0x10"]],
    *[("count0", raw) for raw in ["abc", "-1", "3.5", "nan"]],
    *[("flag", raw) for raw in ["maybe", "2", "-1", "tru", "y", "n"]],
    *[("path", raw) for raw in ["a\x00b", "\x00"]],
    *[("names", raw) for raw in [",", "orders,", "orders,orders", "Orders", "1x", "a b", "ö"]],
    *[("redis_url", raw) for raw in ["localhost:6379", "http://x", "redis://", "redis://a b"]],
    *[("label", raw) for raw in ["a b", "a|b", "fleet/1", "ö"]],
    *[("member", raw) for raw in ["a b", "a|b", "host/1"]],
]


def knob_named(env: str) -> Knob:
    return next(knob for knob in KNOBS if knob.env == env)


def typed_default(knob: Knob) -> float | int | bool | str:
    """The default a knob documents, read without tradeguard's own parser."""
    if knob.kind in ("path", "names", "redis_url", "label", "member"):
        return knob.default
    if knob.kind == "flag":
        return knob.default == "1"
    if knob.kind in ("count", "count0"):
        return int(knob.default)
    return float(knob.default)


def only_problem(err: pytest.ExceptionInfo[ConfigError]) -> ConfigProblem:
    assert len(err.value.problems) == 1, err.value.problems
    return err.value.problems[0]


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_equal_the_seeds() -> None:
    settings = Settings()
    assert dataclasses.asdict(settings) == SEED_DEFAULTS
    for name, value in SEED_DEFAULTS.items():
        assert type(getattr(settings, name)) is type(value), name


def test_from_env_with_an_empty_mapping_is_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_empty_or_blank_values_mean_the_default() -> None:
    environ = {"RISK_API_ERROR_RATE_THRESHOLD": "", "RISK_SLIPPAGE_PAUSE_SECONDS": "  \t"}
    assert Settings.from_env(environ) == Settings()


def test_settings_fields_and_knobs_agree_in_names_order_types_and_defaults() -> None:
    fields = dataclasses.fields(Settings)
    assert [f.name for f in fields] == [knob.field for knob in KNOBS]
    for f, knob in zip(fields, KNOBS, strict=True):
        assert f.type == PYTHON_TYPE[knob.kind].__name__, knob.env
        assert f.default == typed_default(knob), knob.env
        assert type(f.default) is PYTHON_TYPE[knob.kind], knob.env


def test_knob_fields_follow_the_naming_rule() -> None:
    for knob in KNOBS:
        name = knob.env.removeprefix("RISK_").removeprefix("GPT_TRADER_").lower()
        assert knob.field == name
    assert knob_named("COINBASE_PREFLIGHT_SKIP_REMOTE").field == "coinbase_preflight_skip_remote"
    assert knob_named("ORDER_SUBMISSION_RETRIES_ENABLED").field == (
        "order_submission_retries_enabled"
    )


def test_knobs_are_unique_and_documented() -> None:
    assert len({knob.env for knob in KNOBS}) == len(KNOBS)
    for knob in KNOBS:
        assert knob.kind in PYTHON_TYPE, knob.env
        assert knob.purpose.endswith("."), knob.env
        assert "|" not in knob.purpose, knob.env  # it goes into a markdown table


def test_every_documented_default_parses_to_the_field_default() -> None:
    environ = {knob.env: knob.default for knob in KNOBS}
    assert Settings.from_env(environ) == Settings()


def test_a_knob_of_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        Knob("RISK_X", "x", "1", "percent", "A knob.")
    assert only_problem(err).variable == "RISK_X"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().api_error_rate_threshold = 0.5  # type: ignore[misc]


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("knob", KNOBS, ids=[knob.env for knob in KNOBS])
def test_every_knob_parses_from_env(knob: Knob) -> None:
    text: str
    value: float | int | bool | str
    if knob.kind == "flag":
        text, value = ("off", False) if knob.default == "1" else ("YES", True)
    else:
        text, value = OTHER_VALUE[knob.kind]
    settings = Settings.from_env({knob.env: text})
    assert getattr(settings, knob.field) == value
    assert type(getattr(settings, knob.field)) is PYTHON_TYPE[knob.kind]
    others = {k.field for k in KNOBS} - {knob.field}
    assert all(getattr(settings, name) == getattr(Settings(), name) for name in others)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
        (" true ", True),
    ],
)
def test_flags_accept_the_documented_words_in_any_case(text: str, value: bool) -> None:
    assert (
        Settings.from_env(
            {"ORDER_SUBMISSION_RETRIES_ENABLED": text}
        ).order_submission_retries_enabled
        is value
    )


def test_numbers_accept_ordinary_spellings() -> None:
    settings = Settings.from_env(
        {
            "RISK_API_HEALTH_COOLDOWN_SECONDS": "1e3",
            "RISK_SLIPPAGE_PAUSE_SECONDS": "0",
            "RISK_API_ERROR_RATE_THRESHOLD": "1",
            "RISK_API_ERROR_RATE_MIN_CALLS": "+12",
            "GPT_TRADER_WS_RECONNECT_BACKOFF_MULTIPLIER": "1",
        }
    )
    assert settings.api_health_cooldown_seconds == 1000.0
    assert settings.slippage_pause_seconds == 0.0
    assert settings.api_error_rate_threshold == 1.0
    assert settings.api_error_rate_min_calls == 12
    assert settings.ws_reconnect_backoff_multiplier == 1.0


@pytest.mark.parametrize("path", ["store.db", "/var/lib/tg/é store.db", "../x", "C:\\tg\\s.db"])
def test_a_path_knob_takes_any_text_as_written(path: str) -> None:
    settings = Settings.from_env({"GPT_TRADER_STORE_PATH": path})
    assert settings.store_path == path
    assert Settings(store_path=path).store_path == path


def test_an_empty_store_path_means_no_store() -> None:
    assert Settings().store_path == ""
    assert Settings.from_env({"GPT_TRADER_STORE_PATH": "  "}).store_path == ""
    assert Settings(store_path="").to_env()["GPT_TRADER_STORE_PATH"] == ""


def test_zero_reconnect_attempts_means_unlimited_and_is_accepted() -> None:
    environ = {"GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS": "0"}
    assert Settings.from_env(environ).ws_reconnect_max_attempts == 0


def test_from_env_reads_os_environ_when_given_no_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("RISK_", "GPT_TRADER_", "COINBASE_PREFLIGHT_", "ORDER_", "BROKER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RISK_API_ERROR_RATE_THRESHOLD", "0.35")
    assert Settings.from_env().api_error_rate_threshold == 0.35


def test_importing_config_reads_no_environment() -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RISK_API_ERROR_RATE_THRESHOLD": "bad"}
    result = subprocess.run(
        [sys.executable, "-c", "import tradeguard.config"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- rejection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "raw"), BAD_VALUES)
def test_each_kind_rejects_its_bad_values(kind: str, raw: str) -> None:
    env = SAMPLE[kind]
    with pytest.raises(ConfigError) as err:
        Settings.from_env({env: raw})
    problem = only_problem(err)
    assert (problem.variable, problem.value) == (env, raw)
    assert (err.value.variable, err.value.value) == (env, raw)
    assert env in str(err.value)
    assert repr(raw) in str(err.value)


def test_a_problem_keeps_the_value_exactly_as_given() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RISK_SLIPPAGE_PAUSE_SECONDS": " -3 "})
    assert only_problem(err).value == " -3 "


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("RISK_API_ERROR_RATE_THRESHOLD", "a number between 0 and 1"),
        ("RISK_API_HEALTH_COOLDOWN_SECONDS", "a finite number of seconds >= 0"),
        ("RISK_MARK_STALENESS_THRESHOLD_SECONDS", "a finite number of seconds > 0"),
        ("GPT_TRADER_WS_RECONNECT_BACKOFF_MULTIPLIER", "a finite number >= 1"),
        ("RISK_SLIPPAGE_FAILURE_PAUSE_AFTER", "a whole number >= 1"),
        ("GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS", "a whole number >= 0"),
        ("RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY", "one of 0, 1, true, false"),
        ("GPT_TRADER_STORE_PATH", "a file path without NUL characters"),
    ],
)
def test_a_problem_says_what_was_expected(env: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({env: "junk\x00"})
    assert only_problem(err).expected.startswith(expected)


def test_several_bad_values_are_reported_at_once_in_declaration_order() -> None:
    environ = {
        "GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS": "-1",
        "RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY": "maybe",
        "RISK_API_ERROR_RATE_THRESHOLD": "1.5",
        "RISK_SLIPPAGE_FAILURE_PAUSE_AFTER": "3.5",
        "RISK_SLIPAGE_PAUSE_SECONDS": "60",
        "RISK_SLIPPAGE_PAUSE_SECONDS": "60",  # valid: not reported
    }
    with pytest.raises(ConfigError) as err:
        Settings.from_env(environ)
    assert [p.variable for p in err.value.problems] == [
        "RISK_API_ERROR_RATE_THRESHOLD",
        "RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY",
        "RISK_SLIPPAGE_FAILURE_PAUSE_AFTER",
        "GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS",
        "RISK_SLIPAGE_PAUSE_SECONDS",
    ]
    assert str(err.value).startswith("5 bad configuration value(s)")
    for name, value in environ.items():
        if name != "RISK_SLIPPAGE_PAUSE_SECONDS":
            assert f"{name}={value!r}" in str(err.value)


def test_unknown_risk_variable_is_reported_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"RISK_API_ERROR_RATE_THRESHHOLD": "0.1"})
    problem = only_problem(err)
    assert (problem.variable, problem.value) == ("RISK_API_ERROR_RATE_THRESHHOLD", "0.1")
    assert problem.expected == "a known knob (did you mean RISK_API_ERROR_RATE_THRESHOLD?)"


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("GPT_TRADER_WS_RECONECT_MAX_ATTEMPTS", "GPT_TRADER_WS_RECONNECT_MAX_ATTEMPTS"),
        ("GPT_TRADER_CIRCUIT_FAILURE_THRESHOLDS", "GPT_TRADER_CIRCUIT_FAILURE_THRESHOLD"),
        ("RISK_MARK_STALENESS_COOLDOWN_SECS", "RISK_MARK_STALENESS_COOLDOWN_SECONDS"),
    ],
)
def test_unknown_websocket_and_circuit_variables_are_reported(typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({typo: "3"})
    assert only_problem(err).expected == f"a known knob (did you mean {meant}?)"


# The knob-name rule, both directions, for every prefix we read. Found: RISK_MAX_LEVERAGE=3
# (a host engine's knob) stopped startup, while a misspelled ORDER_/COINBASE_/GPT_TRADER_ knob
# passed silently.
@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("RISK_SLIPAGE_PAUSE_SECONDS", "RISK_SLIPPAGE_PAUSE_SECONDS"),
        ("ORDER_RECONCILIATION_DRIFT_MAX_FAILURE", "ORDER_RECONCILIATION_DRIFT_MAX_FAILURES"),
        ("ORDER_SUBMISSION_RETRY_ENABLED", "ORDER_SUBMISSION_RETRIES_ENABLED"),
        ("COINBASE_PREFLIGHT_SKIP_REMOTES", "COINBASE_PREFLIGHT_SKIP_REMOTE"),
        ("GPT_TRADER_PREFLIGHT_WARNONLY", "GPT_TRADER_PREFLIGHT_WARN_ONLY"),
        ("GPT_TRADER_STORE_PAHT", "GPT_TRADER_STORE_PATH"),
        ("BROKER_CALLS_USE_DEDICATED_EXECUTER", "BROKER_CALLS_USE_DEDICATED_EXECUTOR"),
    ],
)
def test_a_close_misspelling_under_any_of_our_prefixes_is_reported(typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({typo: "1"})
    problem = only_problem(err)
    assert (problem.variable, problem.value) == (typo, "1")
    assert problem.expected == f"a known knob (did you mean {meant}?)"


@pytest.mark.parametrize(
    "foreign",
    [
        "RISK_MAX_LEVERAGE",
        "RISK_DAILY_LOSS_LIMIT",
        "RISK_ZZZ",
        "ORDER_PREVIEW_ENABLED",
        "COINBASE_API_KEY",
        "COINBASE_SANDBOX",
        "GPT_TRADER_PROFILE",
        "GPT_TRADER_LOG_LEVEL",
        "BROKER_NAME",
    ],
)
def test_any_other_name_under_our_prefixes_is_not_ours_and_ignored(foreign: str) -> None:
    assert Settings.from_env({foreign: "3"}) == Settings()


def test_every_knob_starts_with_a_checked_prefix() -> None:
    from tradeguard.config import _CHECKED_PREFIXES

    assert [k.env for k in KNOBS if not k.env.startswith(_CHECKED_PREFIXES)] == []


def test_variables_outside_the_checked_prefixes_are_ignored() -> None:
    environ = {
        "PATH": "/usr/bin",
        "GPT_TRADER_PROFILE": "dev",
        "COINBASE_API_KEY": "k",
        "ORDER_SOMETHING": "x",
        "BROKER_NAME": "coinbase",
        "risk_api_error_rate_threshold": "bad",  # environment names are case-sensitive
    }
    assert Settings.from_env(environ) == Settings()


def test_jitter_of_one_is_rejected() -> None:
    env = "GPT_TRADER_WS_RECONNECT_JITTER_PCT"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({env: "1.0"})
    problem = only_problem(err)
    assert (problem.variable, problem.value) == (env, "1.0")
    assert "< 1" in problem.expected
    with pytest.raises(ConfigError):
        Settings(ws_reconnect_jitter_pct=1.0)
    assert Settings.from_env({env: "0.99"}).ws_reconnect_jitter_pct == 0.99
    assert Settings.from_env({env: "0"}).ws_reconnect_jitter_pct == 0.0


def test_backoff_max_below_base_is_rejected() -> None:
    environ = {
        "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE": "10",
        "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX": "5",
    }
    with pytest.raises(ConfigError) as err:
        Settings.from_env(environ)
    problem = only_problem(err)
    assert (problem.variable, problem.value) == ("GPT_TRADER_WS_RECONNECT_BACKOFF_MAX", "5")
    assert "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE" in problem.expected
    with pytest.raises(ConfigError):
        Settings(ws_reconnect_backoff_base=10.0, ws_reconnect_backoff_max=5.0)


def test_backoff_max_equal_to_base_is_accepted() -> None:
    settings = Settings(ws_reconnect_backoff_base=5.0, ws_reconnect_backoff_max=5.0)
    assert settings.ws_reconnect_backoff_max == settings.ws_reconnect_backoff_base


def test_backoff_base_above_the_default_max_blames_the_base() -> None:
    env = "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({env: "100"})
    problem = only_problem(err)
    assert (problem.variable, problem.value) == (env, "100")
    assert "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX" in problem.expected


def test_backoff_rule_is_skipped_when_one_side_is_already_reported() -> None:
    environ = {
        "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE": "abc",
        "GPT_TRADER_WS_RECONNECT_BACKOFF_MAX": "1",
    }
    with pytest.raises(ConfigError) as err:
        Settings.from_env(environ)
    assert only_problem(err).variable == "GPT_TRADER_WS_RECONNECT_BACKOFF_BASE"


# --- direct construction -------------------------------------------------------------------------


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError) as err:
        Settings(api_error_rate_threshold=2.0)
    problem = only_problem(err)
    assert (problem.variable, problem.value) == ("RISK_API_ERROR_RATE_THRESHOLD", "2.0")


def test_replace_validates_the_copy() -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(Settings(), slippage_pause_seconds=-1.0)
    assert only_problem(err).variable == "RISK_SLIPPAGE_PAUSE_SECONDS"
    changed = dataclasses.replace(Settings(), slippage_pause_seconds=5.0)
    assert changed.slippage_pause_seconds == 5.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api_health_cooldown_seconds", True),  # a bool is an int in Python, not a number here
        ("api_error_rate_min_calls", False),
        ("api_error_rate_min_calls", 3.0),  # a count is an int
        ("api_error_rate_min_calls", 0),
        ("ws_reconnect_max_attempts", -1),
        ("order_submission_retries_enabled", 1),  # a flag is a bool
        ("order_submission_retries_enabled", "true"),
        ("api_error_rate_threshold", "0.5"),
        ("api_error_rate_threshold", None),
        ("api_health_cooldown_seconds", math.nan),
        ("api_health_cooldown_seconds", math.inf),
        ("api_health_cooldown_seconds", 10**400),
        ("circuit_recovery_timeout", 0.0),
        ("ws_reconnect_backoff_multiplier", 0.99),
        ("store_path", None),
        ("store_path", Path("store.db")),  # a path knob holds text, like the environment
        ("store_path", "store\x00.db"),
        ("store_path", " store.db"),  # from_env strips: this could not round-trip
        ("store_path", 0),
    ],
)
def test_direct_construction_rejects_wrong_types_and_ranges(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**{field: value})  # type: ignore[arg-type]
    problem = only_problem(err)
    assert problem.variable == next(knob.env for knob in KNOBS if knob.field == field)
    assert problem.value == repr(value)


def test_direct_construction_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        Settings(
            api_error_rate_threshold=-0.5,
            api_error_rate_min_calls=0,
            preflight_warn_only=1,  # type: ignore[arg-type]
        )
    assert [p.variable for p in err.value.problems] == [
        "RISK_API_ERROR_RATE_THRESHOLD",
        "RISK_API_ERROR_RATE_MIN_CALLS",
        "GPT_TRADER_PREFLIGHT_WARN_ONLY",
    ]


def test_ints_given_for_float_fields_are_stored_as_floats() -> None:
    settings = Settings(api_health_cooldown_seconds=10, ws_reconnect_jitter_pct=0)
    assert settings.api_health_cooldown_seconds == 10.0
    assert type(settings.api_health_cooldown_seconds) is float
    assert type(settings.ws_reconnect_jitter_pct) is float


# --- round trip and error type -------------------------------------------------------------------


def test_to_env_names_every_knob_in_order() -> None:
    assert list(Settings().to_env()) == [knob.env for knob in KNOBS]


def test_to_env_round_trips_through_from_env() -> None:
    changed = Settings(
        api_error_rate_threshold=0.1 + 0.2,  # not exactly 0.3: the text must keep every digit
        api_error_rate_min_calls=1,
        slippage_pause_seconds=0.0,
        mark_staleness_allow_reduce_only=False,
        preflight_warn_only=True,
        ws_reconnect_max_attempts=0,
        ws_reconnect_backoff_base=1e-3,
        ws_reconnect_backoff_max=1e6,
        store_path="state/trade guard.db",
    )
    for settings in (Settings(), changed):
        assert Settings.from_env(settings.to_env()) == settings
    assert changed.to_env()["GPT_TRADER_PREFLIGHT_WARN_ONLY"] == "1"
    assert changed.to_env()["RISK_MARK_STALENESS_ALLOW_REDUCE_ONLY"] == "0"


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"RISK_API_ERROR_RATE_THRESHOLD": "abc"})
    assert issubclass(ConfigError, ValueError)
