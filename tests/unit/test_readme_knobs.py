"""docs/knobs.md documents every knob of `KNOBS`, with its default, in a markdown table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeguard.config import KNOBS, Knob

KNOBS_DOC = Path(__file__).resolve().parents[2] / "docs" / "knobs.md"


@pytest.mark.parametrize("knob", KNOBS, ids=[knob.env for knob in KNOBS])
def test_the_knobs_page_lists_the_knob_with_its_default(knob: Knob) -> None:
    assert KNOBS_DOC.is_file(), f"{KNOBS_DOC} is missing"
    row_start = f"| `{knob.env}` | `{knob.default}` |"
    rows = [line.strip() for line in KNOBS_DOC.read_text(encoding="utf-8").splitlines()]
    assert any(row.startswith(row_start) for row in rows), f"knobs.md has no row {row_start!r}"
