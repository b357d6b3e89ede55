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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp._checks import is_real_dtype
from jaxbp.layers import Layer, Outer
from jaxbp.network import Network, Params, check_network, fold, forward, layer_output, like_params, unsegment
from jaxbp.params import offsets

Array = jax.Array


def backward(net: Network, saved: list, g: Array, contract: Callable[[Layer, Any, Array, Array], Any]) -> list:
    """The backward walk of Algorithm 1, from z^[L] down, handing each layer's delta to `contract`.

    saved: `forward(..., keep=True)`'s per-segment (params, (a^[l-1], f'(z^[l]) or None), output
    a); where f' was not saved it comes from a^[l] by `df_from_f`. g: the row
    vector(s) to pull back, (B, *out_L) or, to pull back R rows per sample at once,
    (B, R, *out_L). At block l, delta^[l] = g diag(f'(z^[l])) (same layout as g) and
    g <- (delta^[l])^T J_{a^[l-1]} z^[l]. Returns, per params entry, the values
    `contract(layer, p, a^[l-1], delta^[l])` in the segment's layout (a list of one value for a
    plain layer, stacked along a leading axis of length n for a Stacked entry), so every
    quantity built on the chain (gradient, per-example gradients and norms, GGN, NTK, J) is one
    walk and differs only in how each layer's (a, delta) is contracted.

    A Stacked entry's scan only carries the chain and keeps each delta; its n contractions then
    run as one batched product over the stack (`jax.vmap`), which on CPU is cheaper than n
    products inside the loop, each copying its operands out of and its result into the stacks.
    The scan reads a^[l] for f' straight from the stack of saved inputs, fused into the product
    with f', rather than carrying it from the layer above: a carried array is copied at every
    step (a fifth of the scanned step's time at width 256, docs/results.md).
    """
    out: list = [None] * len(net.layers)
    for seg, (ps, ys, a_out) in reversed(list(zip(net.segments(), saved))):

        def step(g, inp, seg=seg, ys=ys, a_out=a_out):
            p, (a, df), l = inp
            df = seg.act.df_from_f(layer_output(seg, ys, a_out, l)) if df is None else df
            rows = g.ndim > df.ndim
            delta = g * (df[:, None] if rows else df)  # row vector(s) times diag(f'(z^[l]))
            pull = lambda d: seg.layer.vjp_input(p, a, d)  # noqa: E731
            g = jax.vmap(pull, in_axes=1, out_axes=1)(delta) if rows else pull(delta)
            return g, delta

        index = np.arange(seg.n) if seg.scanned else range(seg.n)  # constant: an iota is a kernel to compile
        g, deltas = fold(seg, step, g, (ps, ys, index), reverse=True)
        if seg.scanned:
            out[seg.entry] = jax.vmap(functools.partial(contract, seg.layer))(ps, ys[0], deltas)
        else:
            out[seg.entry] = [contract(seg.layer, p, a, d) for p, (a, _), d in zip(ps, ys, deltas)]
    return out


def _value_and_grad(net: Network, params: Params, x: Array, y: Array) -> tuple[Array, Params]:
    """(mean loss, gradient) for a batch x: (B, *in_shape), y: labels of the head."""
    head = net.head_fn
    z, saved = forward(net, params, x, keep=True)
    t = head.target(y, net.m, z.dtype)
    loss = jnp.mean(head.loss(z, t))
    g = head.grad_z(z, t) / z.shape[0]  # Table 1, averaged over the batch: dl/dz^[L]
    grads = backward(net, saved, g, lambda layer, p, a, delta: layer.vjp_params(p, a, delta))
    return loss, like_params([unsegment(seg, gs) for seg, gs in zip(net.segments(), grads)], params)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jitted(net: Network, fn, params: Params, x: Array, y: Array, *extra):
    """fn(net, params, x_batch, y_batch, *extra), jitted once per (net, fn) and shapes."""
    if net.check_inputs(params, x, y):
        return fn(net, params, x, y, *extra)
    return fn(net, params, x[None], y[None], *extra)


def checked_jit(net: Network, fn, *extra):
    """A validated `(params, x, y) -> fn(net, params, x_batch, y_batch, *extra)` on one sample or a batch.

    The factory of every public `(params, x, y)` function (`grad_fn`, `per_example_grads`,
    `ggn_diagonal`, ...), so all validate their arguments alike.

    fn is a module-level function, so every function made for the same net shares one jit cache
    (`jaxbp.grad_fn(net)(params, x, y)` in a loop compiles once). Shapes are validated when the
    function is traced (once per shape); label values only when y is on the host (NumPy, a list
    or a Python number), so a step on device arrays pays no extra device round trip.
    """
    check_network(net)

    def call(params: Params, x: Array, y: Array):
        if y is None:
            raise TypeError(f"y: expected the labels of head {net.head!r}, got None")
        x, y = (np.asarray(v) if isinstance(v, (list, tuple, int, float, str, np.generic)) else v for v in (x, y))
        if isinstance(x, np.ndarray) and not is_real_dtype(x.dtype):  # jit could not even read it
            raise TypeError(f"x: expected an array of real numbers, got dtype {x.dtype} (the arguments are params, x, y)")
        if isinstance(y, np.ndarray):  # label values are checked on the host only (no device round trip)
            net.check_inputs(params, x, y)
        return _jitted(net, fn, params, x, y, *extra)

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
    return checked_jit(net, _value_and_grad)


def grad_fn(net: Network):
    """A jitted `(params, x, y) -> grads`: the gradient of `net.loss` by Algorithm 1.

    Same arguments and checks as `value_and_grad_fn`; grads has the structure of params.
    """
    return checked_jit(net, _grad)


def _grad(net: Network, params: Params, x: Array, y: Array) -> Params:
    return _value_and_grad(net, params, x, y)[1]


def output_rows(net: Network, params: Params, x: Array, contract) -> tuple[Array, list]:
    """z^[L]: (B, m) for a batch x: (B, *in_shape), and `backward`'s contractions of all m rows of the
    chain: delta^[l] for row i is row i of M_l diag(f'(z^[l])) = dz^[L]/dz^[l], (B, m, *out)."""
    z, saved = forward(net, params, x, keep=True)
    eye = jnp.broadcast_to(jnp.eye(net.m, dtype=z.dtype), (*z.shape, net.m))  # dz^[L]/dz^[L] = I, m rows
    return z, backward(net, saved, eye, contract)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _jacobian(net: Network, params: Params, x: Array, batched: bool = True) -> Array:
    z, rows = output_rows(net, params, x if batched else x[None], param_rows)
    B, m = z.shape
    # J is written in place, the Outer loops first (XLA CPU runs them ~50x slower when a loop
    # produces the result), and for one sample it is (m, P) from the start, as J[0] would copy it
    J = jnp.zeros((B, m, net.n_params) if batched else (m, net.n_params), z.dtype)
    for outer in (True, False):
        for seg, off, r in zip(net.segments(), offsets(net), rows):
            if seg.layer.size == 0:
                continue
            if seg.scanned:  # sublayer s (first layer first) is block n - 1 - s (last layer first)

                def write_sub(s, J, r=r, off=off, n=seg.n, size=seg.layer.size, outer=outer):
                    return _write_rows(J, jax.tree.map(lambda t: t[s], r), off + (n - 1 - s) * size, outer)

                J = jax.lax.fori_loop(0, seg.n, write_sub, J)
            else:
                J = _write_rows(J, r[0], off, outer)
    return J


def _write_rows(J: Array, pieces: tuple, off, outer: bool) -> Array:
    """Write one layer's rows (`param_rows` pieces) into J[..., off:] in place: only its `Outer`
    pieces if `outer`, else only its plain (B, R, P_piece) arrays. J: (B, R, P), or (R, P) for B = 1.
    J is written once.
    """
    for piece in pieces:
        if isinstance(piece, Outer):
            if outer:
                J = jax.lax.platform_dependent(J, piece, off, cpu=_write_blocks, default=_write_dense)
            off = off + piece.v.shape[2] * piece.u.shape[-1]
        else:
            J = J if outer else _update(J, piece, off)
            off = off + piece.shape[2]
    return J


def _write_blocks(J: Array, piece: Outer, off) -> Array:
    """An `Outer` piece written block by block in a loop (the CPU form): each block
    v[:, :, j, None] * u[:, None] fused into its own in-place update of J keeps the innermost write
    a plain contiguous run of length L, several times faster on XLA CPU than one fused write of the
    whole (B, R, n_j L) piece (whose every element needs a division by L to find its factors)."""
    L = piece.u.shape[-1]

    def block(j, J):
        v_j = jax.lax.dynamic_slice_in_dim(piece.v, j, 1, axis=2)  # (B, R, 1)
        return _update(J, v_j * piece.u[:, None], off + j * L)

    return jax.lax.fori_loop(0, piece.v.shape[2], block, J)


def _write_dense(J: Array, piece: Outer, off) -> Array:
    """An `Outer` piece in one update of J (the form off CPU: on a GPU each step of a loop is a
    kernel launch, and LeNet-300-100's 410 blocks written in a loop took 7x jax.jacrev's time on
    an H200)."""
    return _update(J, piece.dense(), off)


def _update(J: Array, piece: Array, off) -> Array:
    """J[..., off:off + n] = piece, piece: (B, R, n) with J's leading shape (B, R) or (R,) for B = 1."""
    return jax.lax.dynamic_update_slice_in_dim(J, piece.reshape(*J.shape[:-1], -1), off, axis=-1)


def param_rows(layer, p, a: Array, delta: Array) -> tuple:
    """Rows delta_{b,r}^T J_{theta_l} z^[l] in theta layout, as consecutive pieces along the last axis.

    a: (B, *in), delta: (B, R, *out) -> pieces that together span P_l: arrays (B, R, P_piece) or
    `Outer` factors of one. Uses the layer's own `param_rows` when it has one (Dense: the outer
    products a (x) delta in factored form, then delta as the b piece, never the Kronecker block),
    else ravels per-row `vjp_params`.
    """
    if hasattr(layer, "param_rows"):
        return layer.param_rows(p, a, delta)

    def row(a_b, d):
        return layer.ravel(layer.vjp_params(p, a_b[None], d[None]))

    return (jax.vmap(jax.vmap(row, in_axes=(None, 0)))(a, delta),)


def jacobian(net: Network, params: Params, x: Array) -> Array:
    """J_theta z^[L](theta) by Algorithm 1: (m, P) for one sample x, (B, m, P) for a batch.

    Columns follow the paper's theta (`jaxbp.ravel`): last layer first, vec(W) by columns, then b.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.models.one_layer_classifier()  # Fig. 4: 4 -> 3
    >>> jaxbp.jacobian(net, net.init(jax.random.key(0)), jnp.ones(4)).shape
    (3, 15)
    """
    check_network(net)
    return _jacobian(net, params, jnp.asarray(x), net.check_inputs(params, x))
