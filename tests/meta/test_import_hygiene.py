"""The pure core loads no I/O: checked in a fresh interpreter on every run (STYLE §2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("tradeguard.io", "asyncio", "anyio", "socket", "aiohttp", "websockets")
PACKAGE = Path(__file__).resolve().parents[2] / "tradeguard"


# `tradeguard.testing` may load the shell when asked for `DeterministicBroker` (tradeguard.io).
@pytest.mark.parametrize("module", ["tradeguard", "tradeguard.fsm"])
def test_importing_the_core_loads_no_io(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{module} loaded {result.stdout.strip()}"


HEAVY = ("aiohttp", "websockets", "prometheus_client", "ccxt")


# issue 12: the shell's and the test kit's packages load each name lazily, so a value module or
# the manual clock does not drag the network stack and the metrics client in with it.
@pytest.mark.parametrize(
    "statement",
    [
        "import tradeguard.fsm",
        "import tradeguard",
        "from tradeguard.testing import ManualClock",
        "import tradeguard.io.broker",
    ],
)
def test_light_imports_load_no_heavy_dependency(statement: str) -> None:
    probe = (
        f"import sys\n{statement}\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{statement!r} loaded {result.stdout.strip()}"


def _imports_and_calls(source: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported: set[str] = set()
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            called.add(f"{node.func.value.id}.{node.func.attr}")
    return imported, called


@pytest.mark.parametrize("source", sorted((PACKAGE / "fsm").glob("*.py")), ids=lambda p: p.name)
def test_fsm_sources_never_import_io_or_read_the_wall_clock(source: Path) -> None:
    imported, called = _imports_and_calls(source)
    bad = [m for m in imported if m.split(".")[0] in FORBIDDEN or m.startswith("tradeguard.io")]
    assert bad == []
    # The wall clock and global randomness are only ever injected, never called in the core.
    assert not called & {"time.time", "datetime.now", "random.random", "random.uniform"}
