"""Second-order quantities built on J_theta z^[L]: the GGN diagonal and the empirical NTK.

Both pull several row vectors per example back through the chain at once (the backward walk
of Algorithm 1 with a (B, R, m) start instead of (B, m)) and contract each layer's
(a^[l-1], delta^[l]) in the structured form of [I (x) a^T, I], never forming J:

- the generalised Gauss-Newton matrix G = (1/B) sum_b J_b^T H_b J_b, H_b the Hessian of the
  head's loss with respect to z^[L]. With H_b = S_b^T S_b (`Head.hessian_sqrt`), diag(G) is
  (1/B) sum_b sum_r (S_{b,r} J_b)^2, and row r of S_b J_b is the gradient that the walk gives
  for the start S_{b,r}; for a Dense layer its square is a_b^2 (delta_{b,r}^2)^T, summed over r
  before the outer product (the DiagGGN of BackPACK, Dangel et al. 2020);
- the empirical neural tangent kernel K(x, x') = J(x) J(x')^T (Jacot et al. 2018), where each
  Dense layer contributes (a^T a' + 1) M M'^T with M = dz^[L]/dz^[l] (the walk started from I).

Layers may provide `sum_sq_vjp_params` and `ntk` (Dense does); others get the generic forms
from their per-example `vjp_params` and rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxbp.jacobian import backward, checked_jit, output_rows, param_rows
from jaxbp.layers import Outer
from jaxbp.network import (
    Network, Params, check_network, fold, forward, input_dtype, like_params, segment_params, unsegment,
)
from jaxbp.per_example import per_example_vjp_params

Array = jax.Array


def sum_sq_vjp_params(layer, p, a: Array, delta: Array):
    """a: (B, *in), delta: (B, R, *out) -> sum_b sum_r (delta_{b,r}^T J_theta z_b)^2, shaped like p."""
    if hasattr(layer, "sum_sq_vjp_params"):
        return layer.sum_sq_vjp_params(p, a, delta)
    g = jax.vmap(lambda d: per_example_vjp_params(layer, p, a, d), in_axes=1)(delta)
    return jax.tree.map(lambda v: jnp.sum(v * v, axis=(0, 1)), g)


def ntk_block(layer, p, a1: Array, d1: Array, a2: Array, d2: Array) -> Array:
    """The layer's term of J(x1) J(x2)^T: d1: (B1, R, *out), d2: (B2, R, *out) -> (B1, B2, R, R)."""
    if hasattr(layer, "ntk"):
        return layer.ntk(p, a1, d1, a2, d2)
    r1, r2 = (
        jnp.concatenate([q.dense() if isinstance(q, Outer) else q for q in param_rows(layer, p, a, d)], axis=-1)
        for a, d in ((a1, d1), (a2, d2))
    )
    return jnp.einsum("brp,csp->bcrs", r1, r2)


def _ggn_diagonal(net: Network, params: Params, x: Array, y: Array) -> Params:
    head = net.head_fn
    z, saved = forward(net, params, x, keep=True)
    S = head.hessian_sqrt(z, head.target(y, net.m, z.dtype))  # (B, R, m), S_b^T S_b = H_b
    diag = backward(net, saved, S, sum_sq_vjp_params)
    diag = [jax.tree.map(lambda v: v / x.shape[0], unsegment(s, d)) for s, d in zip(net.segments(), diag)]
    return like_params(diag, params)


def _rows(net: Network, params: Params, x: Array):
    """Per segment, (a^[l-1], dz^[L]/dz^[l]: (B, m, *out)) for every layer."""
    return output_rows(net, params, x, lambda layer, p, a, d: (a, d))[1]


@functools.partial(jax.jit, static_argnums=0)
def _empirical_ntk(net: Network, params: Params, x1: Array, x2: Array) -> Array:
    rows1, rows2 = _rows(net, params, x1), _rows(net, params, x2)
    dtype = jnp.result_type(*jax.tree.leaves(params), input_dtype(params, x1))  # of every block's product
    K = jnp.zeros((x1.shape[0], x2.shape[0], net.m, net.m), dtype)
    for seg, o1, o2 in zip(net.segments(), rows1, rows2):
        ps = segment_params(seg, params)

        def step(K, inp, seg=seg):
            p, (a1, d1), (a2, d2) = inp
            return K + ntk_block(seg.layer, p, a1, d1, a2, d2), None

        K, _ = fold(seg, step, K, (ps, o1, o2))
    return K


def ggn_diagonal(net: Network):
    """A jitted `(params, x, y) -> diag`: the diagonal of the generalised Gauss-Newton matrix.

    G = (1/B) sum_b (J_theta z^[L]_b)^T H_b (J_theta z^[L]_b) with H_b = d^2 l(y_b, f^[L](z)) / dz^2
    at z = z^[L]_b, so G is the loss Hessian with the second derivatives of the network dropped
    (exact Hessians H for all three heads: softmax_ce (1^T y)(diag(s) - s s^T), sigmoid_bce
    diag(s (1 - s)), identity_mse 2I). diag has the structure of params; jaxbp.ravel puts it in
    theta order. x: (B, *in_shape) or one sample; y: the head's labels.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.mlp([4, 5, 3])
    >>> d = jaxbp.ggn_diagonal(net)(net.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.array([0, 2]))
    >>> d[0]["W"].shape
    (4, 5)
    """
    return checked_jit(net, _ggn_diagonal)


def empirical_ntk(net: Network):
    """A function `(params, x1, x2) -> K`: the empirical NTK J(x1) J(x2)^T, J = J_theta z^[L].

    x1: (B1, *in_shape), x2: (B2, *in_shape) (or one sample each) -> K: (B1, B2, m, m) with
    K[b, c, i, j] = <d z_i(x1_b) / d theta, d z_j(x2_c) / d theta> (one sample each: (m, m)).
    Computed per layer from dz^[L]/dz^[l] and a^[l-1] (Dense: (a^T a' + 1) M M'^T), at a cost of
    order B1 B2 m^2 sum_l n_l instead of the B m P of forming J.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.mlp([4, 5, 3])
    >>> jaxbp.empirical_ntk(net)(net.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.ones((6, 4))).shape
    (2, 6, 3, 3)
    """
    check_network(net)

    def call(params: Params, x1: Array, x2: Array) -> Array:
        batched = [net.check_inputs(params, x, x_name=name) for x, name in ((x1, "x1"), (x2, "x2"))]
        x1, x2 = (jnp.asarray(x) if b else jnp.asarray(x)[None] for x, b in zip((x1, x2), batched))
        K = _empirical_ntk(net, params, x1, x2)
        return K[(slice(None) if batched[0] else 0), (slice(None) if batched[1] else 0)]

    return call
