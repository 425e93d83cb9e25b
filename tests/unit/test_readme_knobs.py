"""The README documents every knob of `KNOBS`, with its default, in a markdown table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeguard.config import KNOBS, Knob

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("knob", KNOBS, ids=[knob.env for knob in KNOBS])
def test_readme_lists_the_knob_with_its_default(knob: Knob) -> None:
    assert README.is_file(), f"{README} is missing"
    row_start = f"| `{knob.env}` | `{knob.default}` |"
    rows = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert any(row.startswith(row_start) for row in rows), f"README has no row {row_start!r}"
