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


GLIBC_MAPS = """\
7f0c1c000000-7f0c1c021000 rw-p 00000000 00:00 0
7f0c2a200000-7f0c2a228000 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6
"""


@pytest.mark.parametrize("lib, name", [
    ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10", "tcmalloc"),
    ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
    ("/opt/lib/libmimalloc.so.2.1", "mimalloc"),
])
def test_malloc_names_a_preloaded_allocator(lib, name, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # irrelevant once another malloc is loaded
    maps = GLIBC_MAPS + f"7f0c2b000000-7f0c2b020000 r-xp 00000000 08:01 99 {lib}\n"
    assert timing.malloc(maps) == name


def test_malloc_is_glibc_with_its_tunables(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert timing.malloc(GLIBC_MAPS) == "glibc"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert timing.malloc(GLIBC_MAPS) == "glibc, GLIBC_TUNABLES=glibc.malloc.hugetlb=1"


def test_faults_per_call_counts_the_calls_after_a_warm_up(monkeypatch):
    """Each call of f takes 100 faults, and its first call (the warm-up) 10,000 more."""
    faults = [0]
    monkeypatch.setitem(sys.modules, "resource", SimpleNamespace(
        RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(ru_minflt=faults[0])))

    def f():
        faults[0] += 100 + (10_000 if faults[0] == 0 else 0)

    assert timing.faults_per_call(f, calls=4) == 100
