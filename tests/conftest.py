"""Shared pytest setup: `tests/helpers.py` importable as ``helpers``; anyio pinned to asyncio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/ is not a package: put it on sys.path so every test file can `import helpers`.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture
def anyio_backend() -> str:
    """The shell is built on anyio over asyncio (DESIGN §3); trio is not a target."""
    return "asyncio"
