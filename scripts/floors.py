"""Install every dependency at its lower bound and run the tests that exercise them.

    python3 scripts/floors.py            # or: make test-floors

Reads ``[project] dependencies`` and the extras that ``dev`` pulls in (``tradeguard[...]``)
from pyproject.toml, turns each ``>=X`` into ``==X`` (``==`` pins stay as they are), checks
that every floor exists on PyPI (``pip index versions``), writes ``.venv-floors/constraints.txt``,
creates ``.venv-floors`` from nothing and installs ``-e '.[dev]'`` under those constraints.
The dev tools (pytest, ruff, mypy, ...) keep their own floors; ``coinbase-advanced-py`` is
floored too, since the conformance tests run it in the same environment as tradeguard.
Then it checks that the installed versions are the floors and runs the tests that touch
those libraries. Exit status: 0 when all of that passes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-floors"
# Test-only libraries that still share the environment with tradeguard's runtime deps.
ALSO_FLOORED = {"coinbase-advanced-py"}
# One environment holds every extra, so each floor must also satisfy the others' requirements:
# the ccxt floor (4.5.88, the first whose coinbase client pages through the accounts in
# fetch_balance) requires aiohttp>=3.14.3 and cryptography>=50, and those are our floors too.
# The tests that exercise the floored libraries: websockets (feed, runtime, conformance with the
# official SDK), aiohttp servers (REST exchange, metrics, preflight), prometheus metrics, ccxt,
# cryptography/PyJWT (the simulator's auth), redis (fleet), anyio (runtime, engine), rich (CLI).
TESTS = [
    "tests/integration/test_feed.py",
    "tests/integration/test_runtime.py",
    "tests/integration/test_engine.py",
    "tests/integration/test_trading_loop.py",
    "tests/integration/test_rest_exchange.py",
    "tests/integration/test_observability.py",
    "tests/integration/test_no_mark_metrics.py",
    "tests/integration/test_preflight.py",
    "tests/integration/test_ccxt_broker.py",
    "tests/integration/test_fleet_processes.py",
    "tests/integration/test_fleet_shell.py",
    "tests/integration/test_guarded_call.py",
    "tests/integration/test_store.py",
    "tests/conformance",
    "tests/unit/test_coinbase_messages.py",
    "tests/unit/test_fleet_core.py",
    "tests/meta/test_cli.py",
    "tests/meta/test_cli_watch.py",
    "tests/meta/test_import_hygiene.py",
]

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Map each floored requirement's name to its exact floor (``==`` pins included)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    self_name = _norm(project["name"])
    optional = project.get("optional-dependencies", {})
    reqs = list(project["dependencies"])
    for req in optional.get("dev", []):
        m = _REQ.match(req)
        assert m, req
        name, extras = _norm(m.group(1)), m.group(2)
        if name == self_name and extras:
            for extra in extras.strip("[]").split(","):
                reqs.extend(optional[extra.strip()])
        elif name in ALSO_FLOORED:
            reqs.append(req)
    out: dict[str, str] = {}
    for req in reqs:
        m = _REQ.match(req.split(";")[0])
        assert m, req
        name, spec = m.group(1), m.group(3)
        pin = re.search(r"(?:>=|==)\s*([0-9][^,\s]*)", spec)
        if not pin:
            raise SystemExit(f"floors: {req!r} has no >= or == bound")
        out[name] = pin.group(1)
    return out


def _release(v: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", v.split("rc")[0].split("b")[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_on_pypi(pins: dict[str, str], pip: list[str]) -> None:
    """Every floor is a release on the index (13 matches 13.0)."""
    missing = []
    for name, version in pins.items():
        res = subprocess.run([*pip, "index", "versions", name], capture_output=True, text=True)
        listed = res.stdout.partition("Available versions:")[2].replace(",", " ").split()
        if not any(_release(v) == _release(version) for v in listed):
            missing.append(f"{name}=={version}")
    if missing:
        raise SystemExit(f"floors: not on the index: {', '.join(missing)}")


def main() -> int:
    t0 = time.monotonic()
    pins = floors()
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    check_on_pypi(pins, pip)
    constraints = VENV / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    print("floors:", ", ".join(f"{n}=={v}" for n, v in sorted(pins.items())), flush=True)
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(constraints), "-e", ".[dev]"], cwd=ROOT, check=True
    )
    # pip honours the constraints or fails; this guards against a name that never matched.
    listed = subprocess.run(
        [*pip, "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    installed = dict(line.split("==", 1) for line in listed.splitlines() if "==" in line)
    installed = {_norm(n): v for n, v in installed.items()}
    wrong = [
        f"{n} {installed.get(_norm(n))} (floor {v})"
        for n, v in pins.items()
        if _release(installed.get(_norm(n), "")) != _release(v)
    ]
    if wrong:
        raise SystemExit(f"floors: not installed at the floor: {', '.join(wrong)}")
    t1 = time.monotonic()
    print(f"floors: environment ready in {t1 - t0:.0f} s", flush=True)
    rc = subprocess.run([str(VENV / "bin" / "pytest"), "-q", *TESTS], cwd=ROOT).returncode
    print(f"floors: tests {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - t1:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
