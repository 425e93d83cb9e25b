"""Committed diagrams (files and the README section) match what the definitions generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeguard.cli.diagrams import readme_section, write_diagrams
from tradeguard.fsm._machines import DEFINITIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
def test_committed_diagram_matches_its_definition(definition) -> None:  # type: ignore[no-untyped-def]
    committed = ROOT / "diagrams" / f"{definition.name}.mmd"
    assert committed.exists(), f"run `make diagrams`: {committed} is missing"
    assert committed.read_text(encoding="utf-8") == definition.to_mermaid(), (
        f"{committed.name} is stale: run `make diagrams` and commit it"
    )


def test_readme_shows_the_generated_diagrams() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_section() in readme, "README diagrams are stale: run `make diagrams`"


def test_no_stray_diagram_files() -> None:
    names = {d.name for d in DEFINITIONS}
    stray = [p.name for p in (ROOT / "diagrams").glob("*.mmd") if p.stem not in names]
    assert stray == []


def test_write_diagrams_rewrites_only_the_marked_readme_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    section = readme_section()
    begin, end = section.splitlines()[0], section.splitlines()[-1]
    readme.write_text(f"intro\n{begin}\nold\n{end}\noutro\n", encoding="utf-8")
    written = write_diagrams(tmp_path / "out", readme)
    text = readme.read_text(encoding="utf-8")
    assert text == f"intro\n{section}\noutro\n"
    assert {p.name for p in written} >= {f"{d.name}.mmd" for d in DEFINITIONS}
