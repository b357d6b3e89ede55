"""A network z^[L](theta; x): layers, hidden activations f^[1..L-1] and a head (f^[L], loss).

`Network` is static configuration (hashable, so it can be closed over by `jax.jit`); its
parameters are a plain list, first layer first, of per-layer dicts (for Dense: {"W", "b"}).
Block l of the network is (layer l, f^[l]); f^[L] is the head's and is kept out of the chain
(Fig. 2: the last activation is separated from the network and paired with the loss).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import activations as _act
from jaxbp import heads as _heads
from jaxbp._checks import as_int, index, is_float_dtype, is_real_dtype
from jaxbp.layers import LAYER_MEMBERS, Dense, Layer

Array = jax.Array
Params = list[dict[str, Array]]


@dataclass(frozen=True)
class Stacked:
    """n identical blocks (layer, f) folded into one entry, scanned with `jax.lax.scan`.

    The Flax `nn.scan` pattern for deep uniform stacks: the entry's parameters are the layer's
    dict with a leading axis of length n (Dense: W (n, n_in, n_out), b (n, n_out)), so the
    forward and both backward contractions compile once, whatever n is, and no per-layer list of
    params is stacked or unstacked inside the step (each layer's W is sliced from the stack). The
    hidden activation given for this entry follows each of the n layers. Its theta block is the n
    layer blocks, last layer first.
    """

    layer: Layer
    n: int

    def __post_init__(self):
        if not all(hasattr(self.layer, a) for a in LAYER_MEMBERS):  # the same test as Network's
            raise TypeError(f"Stacked: layer: expected a layer such as jaxbp.Dense(n, n), got {self.layer!r}")
        if self.layer.in_shape != self.layer.out_shape:
            raise ValueError(
                f"Stacked: the layer must map a shape to itself, got {self.layer.in_shape} -> "
                f"{self.layer.out_shape}"
            )
        if self.layer.size == 0:
            raise ValueError(
                f"Stacked: {type(self.layer).__name__} has no parameters, so there is nothing to stack; "
                "repeat it in the layer list instead"
            )
        object.__setattr__(self, "n", as_int(self.n, "Stacked: n"))

    in_shape = property(lambda self: self.layer.in_shape)
    out_shape = property(lambda self: self.layer.out_shape)
    size = property(lambda self: self.n * self.layer.size)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: (self.n, *s) for k, s in self.layer.param_shapes.items()}

    def init(self, key: Array, dtype=jnp.float32) -> dict[str, Array]:
        """The n layers' params, each drawn from its own split of key, stacked: leaves (n, ...)."""
        return jax.vmap(lambda k: self.layer.init(k, dtype))(jax.random.split(key, self.n))

    def ravel(self, p) -> Array:
        """theta of the entry: (n P_layer,), the n layer blocks last layer first."""
        return jax.vmap(self.layer.ravel)(p)[::-1].reshape(-1)

    def unravel(self, theta_l: Array):
        """Inverse of `ravel`: theta_l (n P_layer,) -> the stacked params."""
        return jax.vmap(self.layer.unravel)(theta_l.reshape(self.n, -1)[::-1])


class Segment(NamedTuple):
    """One entry of the params list: `n` blocks (layer, f), scanned when the entry is Stacked."""

    layer: Layer
    act: _act.Activation
    entry: int  # its position in net.layers and in params (a NamedTuple field named index would hide tuple.index)
    n: int
    scanned: bool


@dataclass(frozen=True)
class Network:
    """z^[L] = g_L(theta_L, f^[L-1](... f^[1](g_1(theta_1, x)))) with a head for f^[L] and the loss."""

    layers: tuple
    activations: tuple[str, ...]
    head: str

    def __post_init__(self):
        for name in ("layers", "activations"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError(f"{name}: expected a list or tuple, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, tuple(value))  # hashable, so jit can take the net as static
        if len(self.layers) == 0:
            raise ValueError("layers: expected at least one layer, got an empty list")
        for i, layer in enumerate(self.layers):
            inner = layer.layer if isinstance(layer, Stacked) else layer  # Stacked scans its layer's maps
            missing = [name for name in LAYER_MEMBERS if not hasattr(inner, name)]
            if missing:
                raise TypeError(
                    f"layers[{i}]: expected a layer (Dense, Conv2D, Stacked, ...) with {', '.join(missing)}, "
                    f"got {type(layer).__name__} {layer!r}"
                )
        if len(self.activations) != len(self.layers) - 1:
            raise ValueError(
                f"activations: expected {len(self.layers) - 1} hidden activations "
                f"(one per layer but the last), got {len(self.activations)}"
            )
        for name in self.activations:
            _act.get(name)
        _heads.get(self.head)
        for l, (prev, nxt) in enumerate(zip(self.layers, self.layers[1:]), start=1):
            if prev.out_shape != nxt.in_shape:
                raise ValueError(
                    f"layers: layer {l} outputs shape {prev.out_shape} but layer {l + 1} "
                    f"expects {nxt.in_shape}"
                )
        if len(self.layers[-1].out_shape) != 1:
            raise ValueError(
                f"layers: the last layer must output a vector z^[L], got shape "
                f"{self.layers[-1].out_shape}; add a Flatten/Dense layer"
            )

    # -- static facts -------------------------------------------------------------------
    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.layers[0].in_shape

    @property
    def m(self) -> int:
        """Width of z^[L]."""
        return self.layers[-1].out_shape[0]

    @property
    def n_params(self) -> int:
        """P, the length of theta."""
        return sum(layer.size for layer in self.layers)

    @property
    def head_fn(self) -> _heads.Head:
        return _heads.get(self.head)

    def segments(self) -> list[Segment]:
        """The blocks of each params entry, in order: one plain layer, or a Stacked run."""
        acts = [_act.get(a) for a in self.activations] + [_act.get("identity")]
        return [
            Segment(layer.layer, act, i, layer.n, True)
            if isinstance(layer, Stacked)
            else Segment(layer, act, i, 1, False)
            for i, (layer, act) in enumerate(zip(self.layers, acts))
        ]

    # -- parameters ---------------------------------------------------------------------
    def init(self, key: Array, dtype=jnp.float32) -> Params:
        """Initial parameters: a list, first layer first, of dicts (Dense: W (n_in, n_out), b (n_out,)).

        key: one PRNG key (`jax.random.key(seed)`, or a legacy `jax.random.PRNGKey(seed)`); dtype:
        a floating-point dtype.
        """
        if not _is_one_key(key):
            got = f"an array of shape {key.shape} and dtype {key.dtype}" if hasattr(key, "dtype") else repr(key)
            raise TypeError(f"key: expected one PRNG key such as jax.random.key(0), got {got}")
        if not is_float_dtype(dtype):
            raise TypeError(f"dtype: expected a floating-point dtype such as jnp.float32, got {dtype!r}")
        keys = jax.random.split(key, len(self.layers))
        return [layer.init(k, dtype) for layer, k in zip(self.layers, keys)]

    def check_params(self, params: Any) -> None:
        """ValueError unless `params` is a list of per-layer dicts whose shapes match the network."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = f"{type(params).__name__} of length {len(params)}" if isinstance(
                params, (list, tuple)
            ) else type(params).__name__
            raise ValueError(
                f"params: expected a list of {len(self.layers)} per-layer dicts, got {got}"
            )
        for l, (layer, p) in enumerate(zip(self.layers, params), start=1):
            want = layer.param_shapes
            if not isinstance(p, dict):
                raise ValueError(
                    f"params[{l - 1}] (layer {l}): expected a dict of arrays with shapes {want}, "
                    f"got {f'an array of shape {tuple(p.shape)}' if hasattr(p, 'shape') else type(p).__name__}"
                )
            for k, v in p.items():  # a list would be flattened into scalars, ints differentiate to 0
                if not hasattr(v, "dtype"):
                    raise TypeError(f"params[{l - 1}]['{k}'] (layer {l}): expected an array, got {type(v).__name__} "
                                    "(convert it with jnp.asarray)")
                if not is_float_dtype(v.dtype):
                    raise TypeError(f"params[{l - 1}]['{k}'] (layer {l}): expected a floating-point array, got dtype "
                                    f"{v.dtype} (cast it, e.g. with .astype(jnp.float32))")
            got = {k: tuple(v.shape) for k, v in p.items()}
            if got != want:
                raise ValueError(f"params[{l - 1}] (layer {l}): expected shapes {want}, got {got}")

    # -- forward --------------------------------------------------------------------------
    def check_inputs(self, params: Any, x: Any, y: Any = None, x_name: str = "x") -> bool:
        """Validate params, x (called `x_name` in errors) and (if given) y; return whether x is a batch."""
        self.check_params(params)
        try:
            shape, dtype = tuple(np.shape(x)), x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        except ValueError:  # NumPy cannot make an array of it
            raise ValueError(f"{x_name}: expected an array of numbers, got a ragged nested sequence") from None
        if not is_real_dtype(dtype):
            raise TypeError(f"{x_name}: expected an array of real numbers, got dtype {dtype}")
        if shape == self.in_shape:
            batched = False
        elif shape[1:] == self.in_shape and len(shape) == len(self.in_shape) + 1:
            batched = True
            if shape[0] == 0:  # its mean loss would be 0/0
                raise ValueError(f"{x_name}: expected at least one sample, got an empty batch of shape {shape}")
        else:
            raise ValueError(
                f"{x_name}: expected shape {self.in_shape} (one sample) or (B, {', '.join(map(str, self.in_shape))}) "
                f"(a batch), got {shape}"
            )
        if y is not None:
            if batched and np.ndim(y) >= 1 and np.shape(y)[0] != shape[0]:
                raise ValueError(
                    f"y: x holds a batch of {shape[0]} samples but y has {np.shape(y)[0]} rows"
                )
            y_b = y if batched else _add_batch(y)
            try:
                _heads.check_labels(self.head_fn, y_b, shape[0] if batched else 1, self.m)
            except ValueError as e:
                if batched:
                    raise
                raise ValueError(f"{e} (x is one sample, so y of shape {np.shape(y)} was read as a batch of 1)") from None
        return batched

    def apply(self, params: Params, x: Array) -> Array:
        """z^[L]: (m,) for x: in_shape, (B, m) for x: (B, *in_shape)."""
        batched = self.check_inputs(params, x)
        xb = jnp.asarray(x) if batched else jnp.asarray(x)[None]
        z, _ = forward(self, params, xb)
        return z if batched else z[0]

    def predict(self, params: Params, x: Array) -> Array:
        """y_hat = f^[L](z^[L]), same shapes as `apply`."""
        return self.head_fn.predict(self.apply(params, x))

    def loss(self, params: Params, x: Array, y: Array) -> Array:
        """Mean over the batch of l(y, f^[L](z^[L])) (a scalar). x: (B, *in_shape) or one sample
        in_shape; y: the head's labels, (B,) class ids or (B, m) rows (one sample: () or (m,))."""
        batched = self.check_inputs(params, x, y)
        xb, yb = (x, y) if batched else (jnp.asarray(x)[None], _add_batch(y))
        z, _ = forward(self, params, jnp.asarray(xb))
        return jnp.mean(self.head_fn.loss(z, self.head_fn.target(jnp.asarray(yb), self.m, z.dtype)))


def _is_one_key(key: Any) -> bool:
    """Whether key is one PRNG key: a typed key of shape (), or a legacy uint32 key of shape (2,)."""
    if not isinstance(key, jax.Array):
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.shape == ()
    return key.dtype == jnp.uint32 and key.shape == (2,)


def check_network(net: Any) -> None:
    """TypeError unless `net` is a Network (the functions taking one say so before touching it)."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a jaxbp.Network, got {type(net).__name__}")


def input_dtype(params: Params, x: Array):
    """The dtype a forward pass computes in: the first parameter array's (x's if there is none)."""
    leaves = jax.tree.leaves(params)
    return leaves[0].dtype if leaves else x.dtype


def like_params(tree, params: Params):
    """Each leaf of `tree` (params' structure, leaves possibly with extra leading axes) cast to the
    dtype of its parameter, as jax.grad returns cotangents in the dtype of their primals."""
    return jax.tree.map(lambda v, p: v.astype(p.dtype), tree, params)


def _add_batch(y):
    return np.asarray(y)[None] if not isinstance(y, jax.Array) else y[None]


def fold(seg: Segment, step, carry, xs: tuple, reverse: bool = False):
    """Fold `step(carry, x) -> (carry, y)` over the segment's layers, scanned or unrolled.

    `xs` is a tuple of per-layer data in the segment's layout: each entry stacked along a
    leading axis of length seg.n when the segment is scanned, a list of seg.n items otherwise;
    `step` receives the tuple for one layer, and `ys` comes back in the segment's layout.
    """
    if seg.scanned:
        return jax.lax.scan(step, carry, xs, reverse=reverse)
    ys: list[Any] = [None] * seg.n
    for i in reversed(range(seg.n)) if reverse else range(seg.n):
        carry, ys[i] = step(carry, tuple(c[i] for c in xs))
    return carry, ys


def segment_params(seg: Segment, params: Params):
    """The entry's params in the segment's layout (already stacked for a Stacked entry)."""
    return params[seg.entry] if seg.scanned else [params[seg.entry]]


def unsegment(seg: Segment, tree):
    """A segment-layout result back to the params entry's layout (inverse of segment_params)."""
    return tree if seg.scanned else tree[0]


def layer_output(seg: Segment, ys, a_out: Array, l) -> Array:
    """a^[l], the output of the segment's layer l, from `forward(..., keep=True)`'s saved inputs
    `ys`: the next layer's input, or the segment's output a_out for its last layer.

    l is an int for an unrolled segment and a traced index inside a scanned one, where it is one
    dynamic slice of the stack that XLA fuses into its consumer (no copy)."""
    if not seg.scanned:
        return ys[l + 1][0] if l + 1 < seg.n else a_out
    above = jax.lax.dynamic_index_in_dim(ys[0], l + 1, keepdims=False)  # clamped to n - 1 for the last
    return jnp.where(l + 1 < seg.n, above, a_out)


def forward(net: Network, params: Params, x: Array, keep: bool = False):
    """Forward pass on a batch x: (B, *in_shape) -> (z^[L]: (B, m), saved).

    With keep=True, `saved` holds, per segment, (segment params, (a^[l-1], f'^[l](z^[l])) per
    layer in the segment's layout, the segment's output a), which is all the backward walk
    consumes. f' is evaluated in the forward pass, fused with f, unless the activation can give
    it from its output (`Activation.df_from_f`): then the entry is None and the backward walk
    takes f'^[l] from a^[l] (the next layer's saved input), as reverse-mode autodiff does, which
    saves one activation-sized array per layer.
    """
    dtype = input_dtype(params, x)
    a = x.astype(dtype) if jnp.issubdtype(dtype, jnp.floating) else x
    saved = []
    for seg in net.segments():
        ps = segment_params(seg, params)

        def step(a, inp, seg=seg):
            (p,) = inp
            z = seg.layer.apply(p, a)
            kept = (a, None if seg.act.df_from_f else seg.act.df(z)) if keep else None
            return seg.act.f(z), kept

        a, ys = fold(seg, step, a, (ps,))
        saved.append((ps, ys, a))
    return a, saved


def mlp(
    sizes: Sequence[int], activation: str = "relu", head: str = "softmax_ce", scan: int | None = None
) -> Network:
    """A fully connected network n_0 -> n_1 -> ... -> n_L of Dense layers.

    sizes: [n_0, ..., n_L] (at least two positive ints); activation: the hidden f^[1..L-1];
    head: "softmax_ce", "sigmoid_bce" or "identity_mse"; scan: if set, every run of at least
    `scan` identical layers n -> n before the head (the input layer too when n_0 = n_1) becomes
    one `Stacked` entry (stacked params, scanned), which keeps compile time flat in depth;
    shorter runs and, by default, all layers are one dict per layer, unrolled. On CPU `scan=64`
    is the break-even: an unrolled run of fewer layers compiles no slower than a scanned one and
    steps 1.05-1.1x faster with tcmalloc, 1.2-1.6x with glibc's malloc (docs/results.md).

    >>> net = mlp([4, 5, 3], activation="relu", head="softmax_ce")
    >>> net.n_params  # 4*5+5 + 5*3+3
    43
    """
    if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes: expected a list of widths [n_0, ..., n_L], got {sizes!r}")
    sizes = list(sizes)
    scan = None if scan is None else as_int(scan, "scan", minimum=2)
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least [n_0, n_1], got {sizes}")
    widths = [index(n) for n in sizes]  # Python, NumPy and 0-d JAX ints; no bools or floats
    if any(n is None or n <= 0 for n in widths):
        raise ValueError(f"sizes: every width must be a positive int, got {sizes}")
    _act.get(activation)
    dense = [Dense(i, o) for i, o in zip(widths, widths[1:])]
    layers = dense
    if scan is not None:  # the head layer stays alone (f^[L] is the head's); runs shorter than `scan` unroll
        layers = []
        for layer, run in itertools.groupby(dense[:-1]):
            n = len(list(run))
            layers += [Stacked(layer, n)] if n >= scan else [layer] * n
        layers += dense[-1:]
    return Network(tuple(layers), (activation,) * (len(layers) - 1), head)
