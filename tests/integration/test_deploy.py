"""The Grafana dashboard and the Prometheus alert rules under ``deploy/`` (issue 13 item 7).

Every metric and label they query must be exported by a running engine: an `Engine` with a
feed, a store and a status server is driven into the states the alerts are about (a guard
TRIPPED, a breaker OPEN, a symbol in NO_MARK, refusals), its ``/metrics`` is scraped over
HTTP, and each PromQL expression is checked against what the scrape holds. The rules also go
through ``promtool`` (Debian's ``prometheus`` package; `.ci/run` installs it): ``check rules``
and the unit tests in ``tradeguard-alerts.test.yml``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tradeguard import OrderIntent, Settings, Side, TradingMode
from tradeguard.fsm import events as ev
from tradeguard.io.engine import Engine
from tradeguard.io.exchange import DeterministicBroker, ExchangeFeedServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tradeguard.json"
RULES = DEPLOY / "prometheus" / "tradeguard-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tradeguard-alerts.test.yml"

BTC, ETH = "BTC-USD", "ETH-USD"
# Labels Prometheus adds to every series it scrapes: queried, never exported.
SCRAPE_LABELS = frozenset({"instance", "job"})
# What the issue asks the rules to cover.
REQUIRED_ALERTS = frozenset(
    {
        "TradeguardGlobalRestriction",
        "TradeguardGuardTrippedTooLong",
        "TradeguardFeedDegraded",
        "TradeguardBreakerOpen",
        "TradeguardRefusalsSpiking",
        "TradeguardNoMark",
        "TradeguardEventStoreBacklogGrowing",
    }
)


# ---------------------------------------------------------------------- the PromQL extractor

_METRIC = re.compile(r"\bgpt_trader_[a-z_]+\b")
_SELECTOR = re.compile(r"\b(gpt_trader_[a-z_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$")


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression, where it came from, and the labels its output is read by."""

    where: str
    expr: str
    output_labels: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Need:
    """A series name a query reads and one label it expects on it (``None``: the name only)."""

    where: str
    metric: str
    label: str | None


def needs(query: Query) -> Iterator[Need]:
    """The names and labels ``query`` reads.

    A matcher's label belongs to its selector's metric. A grouping label (``by``, ``on``,
    ...) and a label its output is read by (a legend, an annotation) belong to every metric
    of the expression: the expressions here read one family each, so that is exact for
    them, and stricter than needed for any that mixes families.
    """
    # Quoted values go first: a regex value may hold `=`, `,` or braces.
    expr = _QUOTED.sub('""', query.expr)
    metrics = set(_METRIC.findall(expr))
    if not metrics:
        raise AssertionError(f"{query.where}: no gpt_trader_ metric in {query.expr!r}")
    for metric in sorted(metrics):
        yield Need(query.where, metric, None)
    for metric, matchers in _SELECTOR.findall(expr):
        for label in _MATCHER.findall(matchers):
            yield Need(query.where, metric, label)
    grouped = {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",")}
    for label in sorted((grouped - {""}) | query.output_labels):
        for metric in sorted(metrics):
            yield Need(query.where, metric, label)


def test_the_extractor_reads_selectors_groupings_and_legends() -> None:
    query = Query(
        "example",
        'sum by (le, phase) (rate(gpt_trader_x_bucket{instance=~"$a,b=c", state!="X"}[5m]))'
        " / on(phase) gpt_trader_y",
        frozenset({"scope"}),
    )
    found = {(n.metric, n.label) for n in needs(query)}
    assert found == {
        ("gpt_trader_x_bucket", None),
        ("gpt_trader_y", None),
        ("gpt_trader_x_bucket", "instance"),
        ("gpt_trader_x_bucket", "state"),
        *((m, label) for m in ("gpt_trader_x_bucket", "gpt_trader_y") for label in ("le", "phase")),
        *((m, "scope") for m in ("gpt_trader_x_bucket", "gpt_trader_y")),
    }


# ---------------------------------------------------------------------- the two files


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[Query]:
    board = dashboard()
    queries = []
    for panel in panels(board):
        for target in panel["targets"]:
            legend = frozenset(_LEGEND.findall(target.get("legendFormat", "")))
            queries.append(Query(f"panel {panel['title']!r}", target["expr"], legend))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"variable {variable['name']!r}: expected label_values(series, label)"
        series, label = match.groups()
        queries.append(Query(f"variable {variable['name']!r}", series, frozenset({label})))
    return queries


def rule_queries() -> list[Query]:
    queries = []
    for rule in rules():
        text = " ".join(rule["annotations"].values())
        used = frozenset(_TEMPLATE_LABEL.findall(text))
        queries.append(Query(f"alert {rule['alert']}", rule["expr"], used))
    return queries


def test_every_panel_reads_the_datasource_variable_and_has_a_query() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "scope", "feed"} <= variables.keys()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    shown = list(panels(board))
    assert len(shown) >= 15
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['title']!r} has an empty query"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"


def test_every_rule_says_how_bad_it_is_and_what_to_do() -> None:
    loaded = rules()
    names = [rule["alert"] for rule in loaded]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    for rule in loaded:
        where = rule["alert"]
        assert rule["expr"].strip(), where
        assert re.fullmatch(r"\d+[smh]", rule["for"]), where
        assert rule["labels"]["severity"] in {"critical", "warning"}, where
        assert rule["annotations"]["summary"].strip(), where
        assert len(rule["annotations"]["description"]) > 60, f"{where}: say what to do"


# ---------------------------------------------------------------------- a running engine


async def wait_for(done: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not done():
            await anyio.sleep(0.01)


async def scrape_a_troubled_engine(store: Path) -> dict[str, set[str]]:
    """Drive an engine into the states the alerts are about; return its series' labels.

    Keys are sample names as Prometheus stores them (``..._bucket``, ``..._total``), so a
    query naming a histogram's bare family name, which Prometheus never stores, fails.
    """
    settings = Settings()
    broker = DeterministicBroker([BTC], seed=1)
    async with ExchangeFeedServer(broker.market, tick_interval=0.02) as feed_server:
        engine = Engine(
            settings,
            broker=broker,
            symbols=[BTC],
            feed_url=feed_server.url,
            status_port=0,
            store_path=store,
            feed_options={"close_timeout": 0.2},
        )
        async with engine:
            await wait_for(lambda: engine.layer.mode(BTC) is TradingMode.ALLOW)
            loop = engine.trading_loop(rng=random.Random(3))
            await loop.run_cycle()  # profile spans and the positions-fetch histogram
            await loop.check_health()  # the equity-computation histogram
            for _ in range(settings.broker_outage_max_failures):
                engine.runtime.observe(ev.BrokerRead(kind="positions", ok=False))
            for _ in range(settings.circuit_failure_threshold):
                engine.runtime.observe(ev.ApiCall(category="orders", ok=False, status=503))
            # A symbol the layer knows (a slippage verdict) but has never seen a mark for.
            engine.runtime.observe(ev.SlippageCheck(ETH, ok=True))
            refused = engine.decide(OrderIntent(ETH, Side.BUY, Decimal("0.1")), Decimal(0))
            assert not refused.allowed
            assert engine.status_url is not None
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{engine.status_url}/metrics") as response,
            ):
                assert response.status == 200
                text = await response.text()
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    # The scenario reached the states the alerts select (else a label check proves little).
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return values.get((name, tuple(sorted(labels.items()))))

    tripped = {"guard": "broker_outage", "scope": "global", "state": "TRIPPED"}
    assert value("gpt_trader_guard_state", **tripped) == 1.0
    no_mark = {"guard": "mark_staleness", "scope": ETH, "state": "NO_MARK"}
    assert value("gpt_trader_guard_state", **no_mark) == 1.0
    assert value("gpt_trader_breaker_state", category="orders", state="OPEN") == 1.0
    assert (value("gpt_trader_trading_mode", scope="global") or 0.0) > 0
    return exported


def unmet(queries: list[Query], exported: dict[str, set[str]]) -> list[str]:
    problems = []
    for query in queries:
        for need in needs(query):
            if need.metric not in exported:
                problems.append(f"{need.where}: {need.metric} is not exported")
            elif need.label not in {None, *SCRAPE_LABELS, *exported[need.metric]}:
                problems.append(f"{need.where}: {need.metric} has no label {need.label!r}")
    return sorted(set(problems))


@pytest.mark.anyio
async def test_every_queried_metric_and_label_is_exported_by_a_running_engine(
    tmp_path: Path,
) -> None:
    exported = await scrape_a_troubled_engine(tmp_path / "events.db")
    assert unmet(dashboard_queries(), exported) == []
    assert unmet(rule_queries(), exported) == []
    # And the check is not vacuous: a misspelt name and a foreign label are caught.
    wrong = [
        Query("probe", 'gpt_trader_guard_states{guard="x"}'),
        Query("probe", "sum by (category) (gpt_trader_feed_state)"),
    ]
    assert unmet(wrong, exported) == [
        "probe: gpt_trader_feed_state has no label 'category'",
        "probe: gpt_trader_guard_states is not exported",
    ]


# ---------------------------------------------------------------------- promtool


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not on PATH: install it with "
            "`apt-get install --no-install-recommends prometheus` (Debian), or put the "
            "promtool binary of a Prometheus release on PATH"
        )
    return found


def run_promtool(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_promtool_accepts_the_rules() -> None:
    run_promtool("check", "rules", RULES.name, cwd=RULES.parent)


def test_the_rules_fire_as_their_unit_tests_expect() -> None:
    run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # Grafana's variables become what they stand for in a query, then each expression is a
    # recording rule, which `promtool check rules` parses.
    substitutions = {"$__rate_interval": "5m", "$instance": ".*", "$scope": ".*", "$feed": ".*"}
    recorded = []
    for i, query in enumerate(q for q in dashboard_queries() if q.where.startswith("panel")):
        expr = query.expr
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{query.where}: unknown variable in {expr!r}"
        recorded.append({"record": f"tradeguard:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    run_promtool("check", "rules", path.name, cwd=tmp_path)
