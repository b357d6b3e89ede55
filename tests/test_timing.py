"""The benchmarks' interleaved timing charges each function its own leftovers, not its neighbour's.

Deterministic: the functions advance a fake clock instead of taking time.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import timing  # noqa: E402


@pytest.fixture
def clock(monkeypatch):
    """A fake clock (seconds) read by `timing` in place of time.perf_counter."""
    now = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_a_call_pays_for_what_its_own_previous_call_left_behind(clock):
    left = [0.0]  # work the last call left for whatever runs next (as XLA CPU unmapping buffers)

    def call(own: float, leaves: float):
        def f():
            clock[0] += left[0] + own
            left[0] = leaves

        return f

    # "messy" takes 1 ms and leaves 20 ms behind; "tidy" takes 1 ms and leaves nothing
    t = timing.interleaved({"messy": call(1e-3, 20e-3), "tidy": call(1e-3, 0.0)}, repeats=5, warmup=2)
    assert t["messy"] == pytest.approx(21e-3)
    assert t["tidy"] == pytest.approx(1e-3)  # without the lead call: 2 ms (20 calls, one pays 20 ms)
