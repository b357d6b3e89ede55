"""Algorithm 1: the gradient as (J_theta z^[L])^T grad_{z^[L]} l, literal and fast.

Both functions walk the chain from the last layer down, one block (layer l, f^[l]) at a time,
folding runs of identical blocks with `jax.lax.scan`:

- `jacobian` is Algorithm 1 as printed (corrected, see docs/errata.md): it carries
  M_l = dz^[L]/da^[l] = (W^[L])^T diag(f'^[L-1]) ... (W^[l+1])^T (an (m, n_l) matrix per sample),
  writes the block M_l diag(f'^[l]) [I (x) (a^[l-1])^T, I] of J_theta z^[L] into its place in the
  theta layout, and moves on with M_{l-1} = M_l diag(f'^[l]) (W^[l])^T.
- `grad_fn` computes the same gradient but contracts grad_{z^[L]} l into the chain first, so the
  carry is the row vector delta^T = grad^T M_l diag(f'^[l]) instead of the matrix: reverse-mode
  cost, with the layer gradients as outer products (a^[l-1])^T delta (never the Kronecker block).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.network import Network, Params, fold, forward, layer_index, unsegment
from jaxbp.params import offsets

Array = jax.Array


def _value_and_grad(net: Network, params: Params, x: Array, y: Array) -> tuple[Array, Params]:
    """(mean loss, gradient) for a batch x: (B, *in_shape), y: labels of the head."""
    head = net.head_fn
    z, saved = forward(net, params, x, keep=True)
    t = head.target(y, net.m, z.dtype)
    loss = jnp.mean(head.loss(z, t))
    g = head.grad_z(z, t) / z.shape[0]  # Table 1, averaged over the batch: dl/dz^[L]
    grads: list = [None] * len(net.layers)
    for seg, (ps, ys) in reversed(list(zip(net.segments(), saved))):

        def step(g, inp, seg=seg):
            p, (a, df) = inp
            delta = g * df  # row vector times diag(f'(z^[l]))
            return seg.layer.vjp_input(p, a, delta), seg.layer.vjp_params(p, a, delta)

        g, gs = fold(seg, step, g, (ps, ys), reverse=True)
        grads[seg.index] = unsegment(seg, gs)
    return loss, grads


def _checked_jit(net: Network, fn):
    """jax.jit of fn(net, params, x_batch, y_batch) taking one sample or a batch, validated.

    Shapes are validated when the function is traced (once per shape); label values only when
    y is a host (NumPy) array, so a step on device arrays pays no extra device round trip.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a jaxbp.Network, got {type(net).__name__}")

    @jax.jit
    def jitted(params, x, y):
        if net.check_inputs(params, x, y):
            return fn(net, params, x, y)
        return fn(net, params, x[None], y[None])

    @functools.wraps(jitted)
    def call(params: Params, x: Array, y: Array):
        if isinstance(y, np.ndarray):
            net.check_inputs(params, x, y)
        return jitted(params, x, y)

    return call


def value_and_grad_fn(net: Network):
    """A jitted `(params, x, y) -> (loss, grads)` computing the gradient by Algorithm 1.

    x: (B, *in_shape) or one sample in_shape; y: the head's labels (class ids or rows of
    probabilities for softmax_ce, {0,1} targets for sigmoid_bce, real targets for identity_mse);
    loss is the batch mean and grads has the structure of params.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.mlp([4, 5, 3])
    >>> params = net.init(jax.random.key(0))
    >>> loss, grads = jaxbp.value_and_grad_fn(net)(params, jnp.ones((2, 4)), jnp.array([0, 2]))
    >>> grads[0]["W"].shape
    (4, 5)
    """
    return _checked_jit(net, _value_and_grad)


def grad_fn(net: Network):
    """A jitted `(params, x, y) -> grads`: the gradient of `net.loss` by Algorithm 1.

    Same arguments and checks as `value_and_grad_fn`; grads has the structure of params.
    """
    return _checked_jit(net, lambda *args: _value_and_grad(*args)[1])


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(net: Network, params: Params, x: Array) -> Array:
    z, saved = forward(net, params, x, keep=True)
    B, m = z.shape
    M = jnp.broadcast_to(jnp.eye(m, dtype=z.dtype), (B, m, m))  # dz^[L]/dz^[L] = I
    J = jnp.zeros((B, m, net.n_params), z.dtype)
    offs = offsets(net)
    for seg, (ps, ys) in reversed(list(zip(net.segments(), saved))):
        size, base = seg.layer.size, offs[seg.index]

        def step(carry, inp, seg=seg, size=size, base=base):
            M, J = carry
            p, (a, df), i = inp
            Md = M * df[:, None]  # M diag(f'(z^[l])) = dz^[L]/dz^[l]: (B, m, *out)
            if size:
                rows = _param_rows(seg.layer, p, a, Md)  # Md [I (x) a^T, I]: (B, m, P_l)
                J = jax.lax.dynamic_update_slice_in_dim(J, rows, base + (seg.n - 1 - i) * size, 2)
            M = jax.vmap(lambda d: seg.layer.vjp_input(p, a, d), in_axes=1, out_axes=1)(Md)
            return (M, J), None

        (M, J), _ = fold(seg, step, (M, J), (ps, ys, layer_index(seg)), reverse=True)
    return J


def _param_rows(layer, p, a: Array, Md: Array) -> Array:
    """Rows Md_{b,i} J_{theta_l} z^[l] in theta layout: a: (B, *in), Md: (B, m, *out) -> (B, m, P_l)."""

    def row(a_b, d):
        return layer.ravel(layer.vjp_params(p, a_b[None], d[None]))

    return jax.vmap(jax.vmap(row, in_axes=(None, 0)))(a, Md)


def jacobian(net: Network, params: Params, x: Array) -> Array:
    """J_theta z^[L](theta) by Algorithm 1: (m, P) for one sample x, (B, m, P) for a batch.

    Columns follow the paper's theta (`jaxbp.ravel`): last layer first, vec(W) by columns, then b.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.models.one_layer_classifier()  # Fig. 4: 4 -> 3
    >>> jaxbp.jacobian(net, net.init(jax.random.key(0)), jnp.ones(4)).shape
    (3, 15)
    """
    batched = net.check_inputs(params, x)
    x = jnp.asarray(x)
    J = _jacobian(net, params, x if batched else x[None])
    return J if batched else J[0]
