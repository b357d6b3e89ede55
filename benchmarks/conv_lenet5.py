"""LeNet-5 gradient: jaxbp.grad_fn against jax.jit(jax.grad(loss)) of the same network in lax.

Both get the same parameter values, batch 128 of 28 x 28 x 1 inputs and int labels (device
arrays). The reference writes `jaxbp.models.lenet5()` directly: `lax.conv_general_dilated`
(SAME, then VALID), ReLU, 2 x 2 max pooling with `lax.reduce_window`, three Dense layers,
softmax cross-entropy. Timing is interleaved (A, B, A, B, ...), medians; target ratio <= 1.3.

    python benchmarks/conv_lenet5.py [--repeats 30] [--batch 128]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax import lax

import jaxbp
from timing import interleaved, setting

DN = ("NHWC", "HWIO", "NHWC")


def _pool(a):
    return lax.reduce_window(a, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def lax_loss(params, x, y):
    c1, _, c3, _, _, f5, f6, f7 = params
    a = _pool(jax.nn.relu(lax.conv_general_dilated(x, c1["K"], (1, 1), "SAME", dimension_numbers=DN) + c1["b"]))
    a = _pool(jax.nn.relu(lax.conv_general_dilated(a, c3["K"], (1, 1), "VALID", dimension_numbers=DN) + c3["b"]))
    a = a.reshape(a.shape[0], -1)
    a = jax.nn.relu(a @ f5["W"] + f5["b"])
    a = jax.nn.relu(a @ f6["W"] + f6["b"])
    z = a @ f7["W"] + f7["b"]
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    net = jaxbp.models.lenet5()
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (args.batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)
    ours, ref = jaxbp.grad_fn(net), jax.jit(jax.grad(lax_loss))
    g_ours, g_ref = ours(params, x, y), ref(params, x, y)
    err = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
        for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref))
    )
    t = interleaved({"ours": lambda: ours(params, x, y), "ref": lambda: ref(params, x, y)}, repeats=args.repeats)
    print(setting())
    print(f"LeNet-5 ({net.n_params} params), batch {args.batch} of 28x28x1, float32")
    print(f"max relative gradient difference: {err:.2e}")
    print(f"grad_fn {1e3 * t['ours']:.2f} ms   jax.jit(jax.grad) {1e3 * t['ref']:.2f} ms   "
          f"median ratio {t['ours'] / t['ref']:.3f}")


if __name__ == "__main__":
    main()
