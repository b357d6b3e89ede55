"""Deep uniform MLPs: compile time and step time of jaxbp.grad_fn vs an unrolled jax.grad.

The network is width 256, batch 128, tanh hidden layers, softmax head; the reference is
`jax.jit(jax.grad(loss))` of the same network written as a Python loop over a list of
per-layer params. jaxbp builds it with `mlp(..., scan=k)` (default k = 64): a run of at least
k identical 256 -> 256 layers (here all but the head) becomes one `Stacked` entry scanned with
`jax.lax.scan`, so its compile time stays flat in depth while the unrolled reference grows
linearly; shorter runs stay one dict per layer and unroll, which on CPU compiles no slower and
steps faster (the threshold is measured in docs/results.md; `--scan 2` scans every depth). All
get the same parameter values. For context it also times `jax.jit(jax.grad(...))` of the
network written with `jax.lax.scan` over stacked params (JAX's own autodiff on the `Stacked`
layout), against jaxbp in a rotation of its own, so that each ratio compares two programs run
alternately. The first line printed names the malloc, and the last two columns count the minor
page faults of a step: with glibc's malloc the scanned steps page-fault their stacked buffers
(over 32 MiB) in afresh on every call, with tcmalloc they do not (README, "Performance";
docs/results.md).

    python benchmarks/deep_mlp.py [--depths 8 32 128 512] [--repeats 20] [--scan 64]
    python benchmarks/deep_mlp.py --profile 128   # where each step's time goes, per XLA op
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import tempfile

import jax
import jax.numpy as jnp

import jaxbp
from jaxbp.jacobian import _value_and_grad
from timing import compile_times, faults_per_call, interleaved, setting

WIDTH, BATCH = 256, 128


def unrolled_loss(params, x, y):
    a = x
    for p in params[:-1]:
        a = jnp.tanh(a @ p["W"] + p["b"])
    z = a @ params[-1]["W"] + params[-1]["b"]
    return _cross_entropy(z, y)


def scanned_loss(params, x, y):
    """The same network over `mlp(..., scan=2)`'s params [Stacked layers 1 to depth - 1, head]."""
    a, _ = jax.lax.scan(lambda a, p: (jnp.tanh(a @ p["W"] + p["b"]), None), x, params[0])
    return _cross_entropy(a @ params[1]["W"] + params[1]["b"], y)


def _cross_entropy(z, y):
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


def profile(fns: dict, steps: int = 5) -> None:
    """Print, per zero-argument function, the time its steps spend in each XLA op (summed over the
    op's calls, e.g. once per loop iteration), from a `jax.profiler` trace of `steps` steps.

    A loop's ops are listed, not the loop; ops that ran concurrently on the two cores both count,
    so the column can add up to more than the step's wall time."""
    for name, f in fns.items():
        for _ in range(3):
            jax.block_until_ready(f())
        with tempfile.TemporaryDirectory() as d:
            with jax.profiler.trace(d, create_perfetto_trace=True):
                for _ in range(steps):
                    jax.block_until_ready(f())
            trace = json.load(gzip.open(next(pathlib.Path(d).rglob("*.trace.json.gz"))))
        ms, calls = collections.Counter(), collections.Counter()
        for e in trace["traceEvents"]:
            op = re.sub(r"\.\d+$", "", e.get("name", ""))  # fusion.12 -> fusion
            skip = op == "while" or op.startswith(("Thunk", "$", "Slinky", "Pjit", "Common", "end:"))
            if e.get("ph") == "X" and not skip:
                ms[op] += e["dur"] / 1e3 / steps
                calls[op] += 1
        print(f"{name}: ms per step in each op (calls per step)")
        for op, t in ms.most_common(12):
            print(f"  {t:8.2f}  ({calls[op] // steps:4d})  {op}")


def _contenders(depth: int, scan: int):
    """The depth's network, its params in jaxbp's, the list and the Stacked layout (same values),
    and the jitted jaxbp, unrolled jax.grad and scanned jax.grad steps."""
    sizes = [WIDTH] * depth + [10]
    net = jaxbp.mlp(sizes, activation="tanh", scan=scan)
    params = net.init(jax.random.key(0))
    theta = jaxbp.ravel(net, params)
    listed, stacked = (jaxbp.unravel(jaxbp.mlp(sizes, activation="tanh", scan=k), theta) for k in (None, 2))
    ours = jax.jit(lambda p, x, y: _value_and_grad(net, p, x, y)[1])
    return net, (params, listed, stacked), (ours, jax.jit(jax.grad(unrolled_loss)), jax.jit(jax.grad(scanned_loss)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[8, 32, 128, 512])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--scan", type=int, default=64, help="mlp's scan threshold for jaxbp")
    ap.add_argument("--profile", type=int, metavar="DEPTH", help="print a per-op profile at DEPTH instead")
    args = ap.parse_args()
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, 10)
    if args.profile:
        _, (params, listed, _), (ours, ref, _) = _contenders(args.profile, args.scan)
        profile({"jaxbp": lambda: ours(params, x, y), "unrolled jax.grad": lambda: ref(listed, x, y)})
        return
    print(setting())
    print(f"{'depth':>6} {'jaxbp':>9} {'compile jaxbp s':>16} {'compile jax s':>14} {'compile ratio':>14} "
          f"{'step jaxbp ms':>14} {'step jax ms':>12} {'step ratio':>11} {'scanned jax ms':>15} "
          f"{'ratio to scanned':>17} {'faults jaxbp':>13} {'faults jax':>11}")
    jobs = {}
    for depth in args.depths:
        net, (params, listed, stacked), (ours, ref, scanned) = _contenders(depth, args.scan)
        jobs[depth] = (ours, (params, x, y))
        c = compile_times({"ours": jobs[depth], "ref": (ref, (listed, x, y))})
        c_ours, c_ref = c["ours"], c["ref"]
        # each ratio from its own pair of contenders, run alternately
        pair = {"ours": lambda: ours(params, x, y), "ref": lambda: ref(listed, x, y)}
        t = interleaved(pair, repeats=args.repeats)
        t_scan = interleaved({"ours": pair["ours"], "scanned": lambda: scanned(stacked, x, y)}, repeats=args.repeats)
        form = "scanned" if any(seg.scanned for seg in net.segments()) else "unrolled"
        print(f"{depth:>6} {form:>9} {c_ours:>16.2f} {c_ref:>14.2f} {c_ours / c_ref:>14.3f} "
              f"{1e3 * t['ours']:>14.2f} {1e3 * t['ref']:>12.2f} {t['ours'] / t['ref']:>11.3f} "
              f"{1e3 * t_scan['scanned']:>15.2f} {t_scan['ours'] / t_scan['scanned']:>17.3f} "
              f"{faults_per_call(pair['ours']):>13.0f} {faults_per_call(pair['ref']):>11.0f}", flush=True)
    lo, hi = min(jobs), max(jobs)
    c = compile_times({lo: jobs[lo], hi: jobs[hi]}, repeats=9)  # compiled in turn, as the step times run
    print(f"jaxbp compile time at depth {hi}: {c[hi] / c[lo]:.2f}x depth {lo}'s "
          f"({c[hi]:.3f} s against {c[lo]:.3f} s)")


if __name__ == "__main__":
    main()
