"""Interleaved timing: medians of A, B, A, B, ... so that the machine's drift cancels."""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Callable

import jax
import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3,
                min_time: float = 0.02) -> dict[str, float]:
    """Median wall time (s) per call of each zero-argument function, run in turn `repeats` times.

    Each turn of a function is one untimed lead call, then as many timed back-to-back calls as
    fill `min_time` (one for a function slower than that, as `timeit`'s autorange). So every timed
    call runs right after a call of its own function, in that function's steady state, as in a
    training loop:
    - XLA CPU frees a call's large temporary buffers after the call has returned (`cleanup_cpu`:
      16 ms of CPU time after `jax.vmap(jax.grad)` of LeNet-300-100 at batch 128, 0.1 ms after
      `jaxbp.per_example_grads`); a call timed right after another function's pays for that
      function's cleanup (`per_example_grads` measured 44 ms a call timed after `vmap(grad)`'s,
      30 ms after its own), and here the lead call pays for it instead;
    - a millisecond function timed right after a 40 ms one measured up to twice its steady time
      (caches and the thread pool left cold by its neighbour).
    """
    calls = {}
    for k, f in fns.items():
        for _ in range(warmup):
            t = time.perf_counter()
            jax.block_until_ready(f())
        calls[k] = max(1, math.ceil(min_time / (time.perf_counter() - t)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            jax.block_until_ready(f())  # the lead call: absorbs what the previous turn left behind
            t = time.perf_counter()
            for _ in range(calls[k]):
                jax.block_until_ready(f())
            times[k].append((time.perf_counter() - t) / calls[k])
    return {k: float(np.median(v)) for k, v in times.items()}


def compile_times(jobs: dict[str, tuple[Callable, tuple]], repeats: int = 5) -> dict[str, float]:
    """Median seconds to lower and compile each `jitted` for its `args` (no execution), from cold
    caches, the jobs compiled in turn (A, B, A, B, ...) so that a ratio of two cancels drift.

    jobs: name -> (jitted, args). The arguments are waited for first: with asynchronous dispatch,
    computing them would otherwise still be running on the same cores while the compiler is timed.
    """
    jax.block_until_ready([args for _, args in jobs.values()])
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, (jitted, args) in jobs.items():
            jax.clear_caches()
            t = time.perf_counter()
            jitted.lower(*args).compile()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def cleanup_cpu(f: Callable[[], object], pause: float = 0.2, repeats: int = 3) -> float:
    """Median CPU time (s, all threads) the process spends in the `pause` seconds after a call of
    f has returned, with nothing else running: the work the call leaves behind, such as XLA CPU
    unmapping its large temporary buffers. `interleaved` charges it to f's own next call."""
    spent = []
    for _ in range(repeats):
        jax.block_until_ready(f())
        t = time.process_time()
        time.sleep(pause)
        spent.append(time.process_time() - t)
    return float(np.median(spent))


def faults_per_call(f: Callable[[], object], calls: int = 5) -> float:
    """Minor page faults the process takes per call of f (mean of `calls`, after one call to warm
    up): on CPU mostly the fresh pages that `malloc` maps a call's large buffers into."""
    import resource  # Unix only; imported here so that the rest of this module works without it

    jax.block_until_ready(f())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(f())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def malloc(maps: str | None = None) -> str:
    """The process's malloc: tcmalloc, jemalloc or mimalloc when one is loaded (`LD_PRELOAD`),
    named from the libraries mapped into the process (`maps`: the text of /proc/self/maps),
    else glibc's, with its GLIBC_TUNABLES if set. On CPU it decides what large buffers cost: glibc
    maps every buffer of 32 MiB or more afresh and page-faults it in on each call, tcmalloc keeps
    freed memory mapped (docs/results.md), so every benchmark prints it."""
    if maps is None:
        try:
            maps = pathlib.Path("/proc/self/maps").read_text()
        except OSError:
            return "the platform's (no /proc/self/maps)"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if f"lib{name}" in maps:
            return name
    tunables = os.environ.get("GLIBC_TUNABLES")
    return f"glibc, GLIBC_TUNABLES={tunables}" if tunables else "glibc"


def setting() -> str:
    """One line for a benchmark's header: the backend, the cores, jax's version and the malloc."""
    return f"{jax.devices()[0].platform}, {os.cpu_count()} cores, jax {jax.__version__}, malloc: {malloc()}"
