"""LeNet-300-100, float32: jaxbp's per-example quantities against the autodiff way, interleaved.

Ratios are median(jaxbp) / median(reference), timed A, B, A, B, ... in one process:

- per_example_grads vs jax.jit(jax.vmap(jax.grad(loss of one example)));
- per_example_grad_norms vs the norms of those vmapped gradients;
- clipped_grad_fn (DP-SGD's clipped mean) vs one plain jaxbp.grad_fn step;
- jaxbp.jacobian (theta layout) vs jax.jacrev through unravel, for one example and a batch
  (the batch reference is jax.vmap of the one-example jacrev);
- ggn_diagonal vs diag(mean_b J_b^T H_b J_b) from vmapped jax.jacrev and jax.hessian;
- empirical_ntk vs J(x1) J(x2)^T from vmapped jax.jacrev.

    python benchmarks/per_example.py [--batches 128 1024] [--jacobian-batch 128] [--repeats 30]

--jacobian-batch is the batch of the Jacobian and GGN rows (at least 64: the NTK row takes two
disjoint halves of 32 examples from it).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jaxbp
from timing import cleanup_cpu, interleaved, setting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--jacobian-batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    if args.jacobian_batch < 64:
        ap.error(f"--jacobian-batch: expected at least 64 (the NTK row takes 32 + 32 examples), got {args.jacobian_batch}")
    net = jaxbp.models.lenet_300_100()
    params = net.init(jax.random.key(0))
    one = lambda p, xb, yb: net.loss(p, xb[None], yb[None])  # noqa: E731
    vgrads = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))

    @jax.jit
    def vnorms(p, x, y):
        g = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(p, x, y)
        return jnp.sqrt(sum(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1) for v in jax.tree.leaves(g)))

    pe, norms = jaxbp.per_example_grads(net), jaxbp.per_example_grad_norms(net)
    clipped, plain = jaxbp.clipped_grad_fn(net, 1.0), jaxbp.grad_fn(net)

    print(setting())
    # "after": CPU ms the process spends once a call has returned (freeing its buffers), which
    # the timing charges to the function's own next call (benchmarks/timing.py)
    print(f"{'quantity':<34} {'batch':>6} {'jaxbp ms':>10} {'ref ms':>10} {'ratio':>7} "
          f"{'jaxbp after':>12} {'ref after':>10}")

    def report(name, B, ours, ref):
        t = interleaved({"ours": ours, "ref": ref}, repeats=args.repeats, warmup=3)
        print(f"{name:<34} {B:>6} {1e3 * t['ours']:>10.3f} {1e3 * t['ref']:>10.3f} "
              f"{t['ours'] / t['ref']:>7.3f} {1e3 * cleanup_cpu(ours):>12.1f} {1e3 * cleanup_cpu(ref):>10.1f}",
              flush=True)

    for B in args.batches:
        x = jax.random.uniform(jax.random.key(1), (B, 784))
        y = jax.random.randint(jax.random.key(2), (B,), 0, 10)
        report("per_example_grads / vmap(grad)", B, lambda: pe(params, x, y), lambda: vgrads(params, x, y))
        report("per_example_grad_norms / vmap", B, lambda: norms(params, x, y), lambda: vnorms(params, x, y))
        report("clipped_grad_fn / grad_fn", B, lambda: clipped(params, x, y), lambda: plain(params, x, y))

    theta = jaxbp.ravel(net, params)
    z_of = lambda th, xb: net.apply(jaxbp.unravel(net, th), xb)  # noqa: E731
    jac1 = jax.jit(jax.jacrev(z_of))
    jacB = jax.jit(jax.vmap(jax.jacrev(z_of), in_axes=(None, 0)))
    x = jax.random.uniform(jax.random.key(1), (args.jacobian_batch, 784))
    report("jacobian / jacrev (one example)", 1, lambda: jaxbp.jacobian(net, params, x[0]),
           lambda: jac1(theta, x[0]))
    report("jacobian / vmap(jacrev)", args.jacobian_batch, lambda: jaxbp.jacobian(net, params, x),
           lambda: jacB(theta, x))

    y = jax.random.randint(jax.random.key(2), (args.jacobian_batch,), 0, 10)
    head = net.head_fn
    h = jax.vmap(jax.hessian(lambda zb, tb: head.loss(zb[None], tb[None])[0]))

    @jax.jit
    def ggn_ref(th, x, y):
        J = jax.vmap(jax.jacrev(z_of), in_axes=(None, 0))(th, x)
        z = z_of(th, x)
        return jnp.einsum("bip,bij,bjp->p", J, h(z, jax.nn.one_hot(y, 10, dtype=z.dtype)), J) / len(x)

    ggn = jaxbp.ggn_diagonal(net)
    report("ggn_diagonal / jacrev+hessian", args.jacobian_batch, lambda: ggn(params, x, y),
           lambda: ggn_ref(theta, x, y))
    ntk = jaxbp.empirical_ntk(net)
    ntk_ref = jax.jit(lambda th, a, b: jnp.einsum("bip,cjp->bcij", jacB(th, a), jacB(th, b)))
    x1, x2 = x[:32], x[32:64]
    report("empirical_ntk / jacrev products", 32, lambda: ntk(params, x1, x2),
           lambda: ntk_ref(theta, x1, x2))


if __name__ == "__main__":
    main()
