"""Importing tradeguard changes nothing process-wide (issue 12): the `transitions` logger is
the user's, and firing our machines costs no logging call whatever its level."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from helpers import make_layer

from tradeguard.fsm import events as ev


@pytest.mark.parametrize("statement", ["import tradeguard", "import tradeguard.fsm"])
def test_importing_tradeguard_leaves_the_transitions_logger_level_unchanged(
    statement: str,
) -> None:
    probe = (
        "import logging\n"
        'before = logging.getLogger("transitions").level\n'
        f"{statement}\n"
        "from tradeguard.fsm import _machines\n"  # every machine definition built
        'print(before, logging.getLogger("transitions").level)\n'
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    before, after = result.stdout.split()
    assert before == after == str(logging.NOTSET)


def test_firing_transitions_logs_nothing_even_when_the_user_enables_transitions_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer, _ = make_layer()
    with caplog.at_level(logging.DEBUG, logger="transitions"):
        effects = layer.observe(ev.MarkUpdate("BTC-USD"))
        for _ in range(3):
            effects += layer.observe(ev.SlippageCheck("BTC-USD", False))
        effects += layer.reset("slippage", "BTC-USD")
    assert len(effects) > 3  # transitions were taken
    assert [r for r in caplog.records if r.name.startswith("transitions")] == []
