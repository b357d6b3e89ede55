"""Interleaved timing: medians of A, B, A, B, ... so that the machine's drift cancels."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import jax
import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3,
                min_time: float = 0.02) -> dict[str, float]:
    """Median wall time (s) per call of each zero-argument function, run in turn `repeats` times.

    Each turn of a function is as many back-to-back calls as fill `min_time` (one call for a
    function slower than that, as `timeit`'s autorange): a millisecond function timed by a single
    call right after a 40 ms one measured up to twice its steady time (caches and the thread pool
    left cold by its neighbour), which is a property of the benchmark's order, not of the function.
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
            t = time.perf_counter()
            for _ in range(calls[k]):
                jax.block_until_ready(f())
            times[k].append((time.perf_counter() - t) / calls[k])
    return {k: float(np.median(v)) for k, v in times.items()}


def compile_time(jitted, *args, repeats: int = 3) -> float:
    """Median seconds to lower and compile `jitted` for `args` (no execution), from cold caches.

    The arguments are waited for first: with asynchronous dispatch, computing them would
    otherwise still be running on the same cores while the compiler is timed.
    """
    jax.block_until_ready(args)
    times = []
    for _ in range(repeats):
        jax.clear_caches()
        t = time.perf_counter()
        jitted.lower(*args).compile()
        times.append(time.perf_counter() - t)
    return float(np.median(times))
