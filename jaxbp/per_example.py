"""Per-example gradients and their norms from one batched pass, and DP-SGD's clipped gradient.

The batch gradient is a sum over examples of outer products: for a Dense layer,
grad_W l = sum_b a_b delta_b^T with a_b = a^[l-1] and delta_b = delta^[l] of example b (the
structured form of [I (x) a^T, I], Section 3.1). The backward walk of Algorithm 1 already holds
every a_b and delta_b, so the gradient of each example's own loss l_b is the same walk with the
batch sum left out, and its norm needs no gradient at all:
||grad_{W,b} l_b||^2 = ||a_b delta_b^T||_F^2 + ||delta_b||^2 = (||a_b||^2 + 1) ||delta_b||^2.

Layers may provide `per_example_vjp_params` and `per_example_sq_norms` (Dense does, in closed
form); any other layer gets the generic form, `vjp_params` of one example under `jax.vmap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbp._checks import as_float
from jaxbp.jacobian import backward, checked_jit
from jaxbp.network import Network, Params, fold, forward, like_params, unsegment

Array = jax.Array


def per_example_vjp_params(layer, p, a: Array, delta: Array):
    """a: (B, *in), delta: (B, *out) -> the layer's per-example gradients, leaves (B, *param_shape)."""
    if hasattr(layer, "per_example_vjp_params"):
        return layer.per_example_vjp_params(p, a, delta)
    return jax.vmap(lambda a_b, d_b: layer.vjp_params(p, a_b[None], d_b[None]))(a, delta)


def per_example_sq_norms(layer, p, a: Array, delta: Array) -> Array:
    """a: (B, *in), delta: (B, *out) -> ||grad_{theta_l} l_b||^2: (B,)."""
    if hasattr(layer, "per_example_sq_norms"):
        return layer.per_example_sq_norms(p, a, delta)
    g = per_example_vjp_params(layer, p, a, delta)
    return sum(jnp.sum(v * v, axis=tuple(range(1, v.ndim))) for v in jax.tree.leaves(g))


def _deltas_from_losses(net: Network, params: Params, x: Array, y: Array):
    """Forward pass and grad_{z^[L]} l_b of each example's own loss (not divided by B)."""
    head = net.head_fn
    z, saved = forward(net, params, x, keep=True)
    return saved, head.grad_z(z, head.target(y, net.m, z.dtype))


def _per_example_grads(net: Network, params: Params, x: Array, y: Array) -> Params:
    saved, g = _deltas_from_losses(net, params, x, y)
    grads = backward(net, saved, g, per_example_vjp_params)
    # a Stacked entry's per-layer results come stacked (n, B, ...); the batch axis goes first
    grads = [
        jax.tree.map(lambda v: jnp.moveaxis(v, 0, 1), gs) if seg.scanned else gs[0]
        for seg, gs in zip(net.segments(), grads)
    ]
    return like_params(grads, params)


def _sq_norms_and_deltas(net: Network, params: Params, x: Array, y: Array):
    saved, g = _deltas_from_losses(net, params, x, y)
    out = backward(net, saved, g, lambda layer, p, a, d: (per_example_sq_norms(layer, p, a, d), d))
    sq = sum(jnp.sum(o[0], axis=0) if seg.scanned else o[0][0] for seg, o in zip(net.segments(), out))
    return saved, out, sq


def _per_example_grad_norms(net: Network, params: Params, x: Array, y: Array) -> Array:
    return jnp.sqrt(_sq_norms_and_deltas(net, params, x, y)[2])


def _clipped_grad(net: Network, params: Params, x: Array, y: Array, max_norm: Array) -> Params:
    saved, out, sq = _sq_norms_and_deltas(net, params, x, y)
    norms = jnp.sqrt(sq)
    # c_b = min(1, C / ||g_b||) (C / 0 = inf gives 1); the mean's 1/B folded in
    scale = jnp.minimum(1.0, max_norm / norms) / x.shape[0]
    grads = []
    for seg, (ps, ys, _), o in zip(net.segments(), saved, out):

        def step(carry, inp, seg=seg):
            p, (a, _), (_, d) = inp
            c = scale.reshape((-1,) + (1,) * (d.ndim - 1))
            return carry, seg.layer.vjp_params(p, a, c * d)  # sum_b c_b a_b delta_b^T

        grads.append(unsegment(seg, fold(seg, step, None, (ps, ys, o))[1]))
    return like_params(grads, params)


def per_example_grads(net: Network):
    """A jitted `(params, x, y) -> grads`: the gradient of each example's own loss l_b.

    x: (B, *in_shape) (one sample is a batch of 1); y: the head's labels. grads has the structure
    of params with a leading batch axis on every leaf (Dense: W (B, n_in, n_out), b (B, n_out);
    a Stacked entry: W (B, n, n_in, n_out)); their mean over b is `jaxbp.grad_fn(net)`. Each
    layer's block is a_b delta_b^T from one batched pass (Sec. 3.1's [I (x) a^T, I] per example),
    not B backward passes.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.mlp([4, 5, 3])
    >>> g = jaxbp.per_example_grads(net)(net.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.array([0, 2]))
    >>> g[0]["W"].shape
    (2, 4, 5)
    """
    return checked_jit(net, _per_example_grads)


def per_example_grad_norms(net: Network):
    """A jitted `(params, x, y) -> norms`: ||grad_theta l_b||_2 for each example, shape (B,).

    x: (B, *in_shape), y: the head's labels for B examples (as `jaxbp.value_and_grad_fn`).

    Never materialises a Dense layer's per-example gradient: each Dense layer contributes
    (||a^[l-1]_b||^2 + 1) ||delta^[l]_b||^2 to the squared norm (other layers: their
    `per_example_sq_norms`, or the norms of their generic per-example gradients).

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.mlp([4, 5, 3])
    >>> jaxbp.per_example_grad_norms(net)(net.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.array([0, 2])).shape
    (2,)
    """
    return checked_jit(net, _per_example_grad_norms)


def clipped_grad_fn(net: Network, max_norm: float):
    """A jitted `(params, x, y) -> grads`: (1/B) sum_b min(1, C / ||g_b||) g_b, g_b = grad_theta l_b.

    x: (B, *in_shape), y: the head's labels for B examples; grads has the structure of params.

    The clipped-and-averaged gradient of differentially private SGD (Abadi et al. 2016, Alg. 1)
    with clip norm C = max_norm, before noise: add N(0, sigma^2 C^2 I) / B to it for DP-SGD.
    One forward and one backward pass: the norms come from the saved (a_b, delta_b) in closed
    form, then each layer contracts sum_b c_b a_b delta_b^T, as `grad_fn` does with c_b = 1/B.
    grads has the structure of params. max_norm: a positive number, or a traced scalar inside
    the caller's `jax.jit`/`jax.vmap` (a clip norm adapted during training, Andrew et al. 2021),
    which cannot be checked and is trusted.
    """
    return checked_jit(net, _clipped_grad, as_float(max_norm, "max_norm", "a positive number", lambda v: v > 0))
