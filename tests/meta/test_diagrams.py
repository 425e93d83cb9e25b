"""Committed diagrams (diagrams/README.md, the .mmd files and the README's mode machine) match
what the definitions generate; the renderer keeps the feed diagram legible; `status --mermaid`
highlights the states a layer is in."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tradeguard import GuardState, ReliabilityLayer, Settings
from tradeguard.cli import main
from tradeguard.cli.diagrams import GUARDS, diagrams_readme, write_diagrams
from tradeguard.cli.mermaid import format_mermaid
from tradeguard.fsm import events as ev
from tradeguard.fsm._machines import DEFINITIONS, FEED, MODE
from tradeguard.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
def test_committed_diagram_matches_its_definition(definition) -> None:  # type: ignore[no-untyped-def]
    committed = ROOT / "diagrams" / f"{definition.name}.mmd"
    assert committed.exists(), f"run `make diagrams`: {committed} is missing"
    assert committed.read_text(encoding="utf-8") == definition.to_mermaid(), (
        f"{committed.name} is stale: run `make diagrams` and commit it"
    )


def test_diagrams_readme_is_current_and_embeds_every_machine() -> None:
    committed = (ROOT / "diagrams" / "README.md").read_text(encoding="utf-8")
    assert committed == diagrams_readme(), "diagrams/README.md is stale: run `make diagrams`"
    for d in DEFINITIONS:
        assert f"```mermaid\n{d.to_mermaid()}```" in committed
    assert set(GUARDS) == {d.name for d in DEFINITIONS}


def test_the_readme_shows_the_current_mode_machine_and_links_the_others() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{MODE.to_mermaid()}```" in readme, (
        "the README's mode diagram differs from tradeguard/fsm/_machines.py: paste "
        "diagrams/mode.mmd into it"
    )
    assert "(diagrams/README.md)" in readme


def test_no_stray_diagram_files() -> None:
    names = {d.name for d in DEFINITIONS}
    stray = [p.name for p in (ROOT / "diagrams").glob("*.mmd") if p.stem not in names]
    assert stray == []
    # .svg files are drawn where Graphviz exists and never committed.
    assert "diagrams/*.svg" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_write_diagrams_writes_the_readme_and_every_machine(tmp_path: Path) -> None:
    written, skipped = write_diagrams(tmp_path / "out")
    names = {p.name for p in written}
    assert names >= {"README.md", *(f"{d.name}.mmd" for d in DEFINITIONS)}
    assert (skipped is None) == any(name.endswith(".svg") for name in names)


def test_the_feed_diagram_draws_close_once_and_no_label_on_a_self_loop() -> None:
    text = FEED.to_mermaid()
    assert text.count("close") == 1
    assert "live --> CLOSED: close (from any state)" in text
    # A trigger that keeps a state where it is reads inside the state, not on a loop edge.
    assert not re.search(r"^\s*(\w+) --> \1:", text, re.M)
    assert "DEGRADED : stays on disconnected [attempts_exhausted]" in text
    dot = FEED.to_dot()
    assert dot.count('label="close') == 1 and "cluster_live" in dot


def _layer_with_a_trip() -> ReliabilityLayer:
    clock = ManualClock()
    layer = ReliabilityLayer(Settings(), clock=clock)
    layer.observe(ev.MarkUpdate(symbol="BTC-USD"))
    layer.observe(ev.ApiCall(category="orders", ok=True))
    for _ in range(Settings().broker_outage_max_failures):
        layer.observe(ev.BrokerRead(kind="balances", ok=False))
    assert layer.guard("broker_outage").state is GuardState.TRIPPED
    return layer


def test_status_mermaid_highlights_the_current_states() -> None:
    text = format_mermaid(_layer_with_a_trip().view())
    assert text.startswith("# tradeguard machines now (global mode REDUCE_ONLY)")
    blocks = dict(re.findall(r"## `(\w+)`.*?```mermaid\n(.*?)```", text, re.S))
    assert "TRIPPED : now broker_outage (global)" in blocks["guard"]
    assert "class TRIPPED current" in blocks["guard"]
    assert "classDef current" in blocks["guard"]
    assert "HEALTHY : now BTC-USD" not in blocks["guard"]
    assert "HEALTHY : now mark_staleness (BTC-USD)" in blocks["mark_staleness"]
    assert "REDUCE_ONLY : now global" in blocks["mode"]
    assert "class REDUCE_ONLY current" in blocks["mode"]
    assert "RUNNING : now global" in blocks["operator"]
    assert "class CLOSED current" in blocks["breaker"]
    assert "feed" not in blocks  # no feed on this layer


@pytest.fixture
def status_url() -> Iterator[str]:
    body = json.dumps(_layer_with_a_trip().status()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/status"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_mermaid_on_the_command_line_reads_a_runtime(
    status_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--mermaid", "--url", status_url]) == 0
    out = capsys.readouterr().out
    assert "TRIPPED : now broker_outage (global)" in out
    assert out.count("```mermaid") == 6  # every kind but the feed


def test_status_mermaid_names_an_unreadable_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.db"
    assert main(["status", "--mermaid", "--store", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err


def test_format_mermaid_output_is_markdown_with_one_block_per_kind() -> None:
    out = io.StringIO()
    out.write(format_mermaid(_layer_with_a_trip().view()))
    assert out.getvalue().count("```mermaid") == out.getvalue().count("## `")
