"""LeNet-300-100, float32: median time of jaxbp.grad_fn over jax.jit(jax.grad(net.loss)).

The two are timed interleaved (A, B, A, B, ...) in one process after warm-up, so the
machine's drift cancels; the printed ratio is median(jaxbp) / median(jax).

    python benchmarks/lenet_300_100.py [--batches 128 1024] [--repeats 200]
"""

from __future__ import annotations

import argparse

import jax

import jaxbp
from timing import interleaved, setting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    net = jaxbp.models.lenet_300_100()
    params = net.init(jax.random.key(0))
    ours, ref = jaxbp.grad_fn(net), jax.jit(jax.grad(net.loss))
    print(setting())
    print(f"{'batch':>6} {'jaxbp ms':>9} {'jax.grad ms':>12} {'ratio':>7}")
    for B in args.batches:
        x = jax.random.uniform(jax.random.key(1), (B, 784))
        y = jax.random.randint(jax.random.key(2), (B,), 0, 10)
        t = interleaved({"ours": lambda: ours(params, x, y), "ref": lambda: ref(params, x, y)},
                        repeats=args.repeats, warmup=10)
        print(f"{B:>6} {1e3 * t['ours']:>9.3f} {1e3 * t['ref']:>12.3f} {t['ours'] / t['ref']:>7.3f}",
              flush=True)


if __name__ == "__main__":
    main()
