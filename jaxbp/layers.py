"""Layers z^[l] = g(theta_l, a^[l-1]) and their Jacobians (Section 3.1).

A layer is a small static (hashable) description; its parameters live in a plain dict. Every
layer provides the three linear maps the chain needs, all batched over a leading axis B:

- `apply(p, a)`: z = g(p, a), a: (B, *in_shape) -> z: (B, *out_shape);
- `vjp_input(p, a, delta)`: delta^T J_a z, (B, *out_shape) -> (B, *in_shape), the step of the
  chain (W^[l])^T... that moves a row vector from z^[l] to a^[l-1];
- `vjp_params(p, a, delta)`: sum_b delta_b^T J_theta z_b, the layer's parameter gradient, a
  dict shaped like p (for Dense: {"W": a^T delta, "b": 1^T delta}, outer products only, the
  structured form of [I (x) a^T, I] that never materialises the Kronecker block);

plus the layer's slice of the paper's theta: `ravel(p)` / `unravel(theta_l)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp._checks import as_array, as_int, as_pair, as_shape
from jaxbp.toeplitz import ConvGeometry, Padding, conv_geometry

Array = jax.Array
Params = dict[str, Array]


class Layer(Protocol):
    """What every layer of a `Network` offers (Dense, Conv2D, the pools, Flatten, or one of a user's):
    the three linear maps above, its shapes and its slice of theta. Optional extras give faster
    forms where a layer has them (`param_rows`, `per_example_vjp_params`, `per_example_sq_norms`,
    `sum_sq_vjp_params`, `ntk`); without them the generic forms from `vjp_params` apply."""

    @property
    def in_shape(self) -> tuple[int, ...]: ...

    @property
    def out_shape(self) -> tuple[int, ...]: ...

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]: ...

    @property
    def size(self) -> int: ...  # P_l, the layer's entries of theta

    def init(self, key: Array, dtype=jnp.float32) -> Params: ...

    def apply(self, p: Params, a: Array) -> Array: ...

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array: ...

    def vjp_params(self, p: Params, a: Array, delta: Array) -> Params: ...

    def ravel(self, p: Params) -> Array: ...

    def unravel(self, theta_l: Array) -> Params: ...


LAYER_MEMBERS = tuple(name for name in vars(Layer) if not name.startswith("_"))  # what Network checks for


class Outer(NamedTuple):
    """A piece of Jacobian rows in factored form: n_j consecutive blocks of length L, block j of
    row (b, r) being v[b, r, j] u[b] (Dense: delta_{b,r,j} (a^[l-1]_b)^T, row j of [I (x) a^T]).

    v: (B, R, n_j), u: (B, L). `jaxbp.jacobian` writes it into J block by block on CPU and as
    `dense()` in one update elsewhere.
    """

    v: Array
    u: Array

    def dense(self) -> Array:
        """The piece itself: (B, R, n_j L)."""
        B, R, n_j = self.v.shape
        return (self.v[..., None] * self.u[:, None, None, :]).reshape(B, R, n_j * self.u.shape[-1])


@dataclass(frozen=True)
class Dense:
    """z = W^T a + b with W: (n_in, n_out), b: (n_out,); theta_l = [vec(W); b] (vec stacks columns)."""

    n_in: int
    n_out: int

    def __post_init__(self):
        for name in ("n_in", "n_out"):
            object.__setattr__(self, name, as_int(getattr(self, name), f"Dense: {name}"))

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n_in,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n_out,)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.n_in, self.n_out), "b": (self.n_out,)}

    @property
    def size(self) -> int:
        """P_l = n_in n_out + n_out, the length of this layer's block of theta."""
        return self.n_in * self.n_out + self.n_out

    def init(self, key: Array, dtype=jnp.float32) -> Params:
        """LeCun-normal W (Flax's Dense default), zero b."""
        W = jax.nn.initializers.lecun_normal()(key, (self.n_in, self.n_out), dtype)
        return {"W": W, "b": jnp.zeros((self.n_out,), dtype)}

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, n_in) -> z = a W + b: (B, n_out) (row-wise W^T a + b)."""
        z = a @ p["W"]
        return z + jnp.broadcast_to(p["b"], z.shape)

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, n_out) -> delta W^T: (B, n_in), i.e. (W^T)^T applied to each row."""
        del a
        return delta @ p["W"].T

    def vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """a: (B, n_in), delta: (B, n_out) -> {"W": a^T delta (n_in, n_out), "b": (n_out,)}."""
        del p
        return {"W": a.T @ delta, "b": jnp.sum(delta, axis=0)}

    # -- per-example contractions (Section 3.1's [I (x) a^T, I], one sample at a time) --------
    def per_example_vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """a: (B, n_in), delta: (B, n_out) -> {"W": a_b delta_b^T (B, n_in, n_out), "b": delta (B, n_out)}."""
        del p
        # a broadcast product, not a K=1 matmul: XLA fuses it into the one write of the output
        return {"W": a[:, :, None] * delta[:, None, :], "b": delta}

    def per_example_sq_norms(self, p: Params, a: Array, delta: Array) -> Array:
        """||delta_b^T [I (x) a_b^T, I]||^2 = (||a_b||^2 + 1) ||delta_b||^2: (B,), never forming a_b delta_b^T."""
        del p
        return (jnp.sum(a * a, axis=1) + 1) * jnp.sum(delta * delta, axis=1)

    def sum_sq_vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """sum_b sum_r (delta_{b,r}^T J_theta z_b)^2 elementwise, delta: (B, R, n_out).

        Entry (i, j) of W is sum_b a_{b,i}^2 sum_r delta_{b,r,j}^2, so the squares of the outer
        products are never formed: {"W": (a^2)^T D, "b": 1^T D} with D = sum_r delta_r^2: (B, n_out).
        """
        del p
        D = jnp.sum(delta * delta, axis=1)
        return {"W": (a * a).T @ D, "b": jnp.sum(D, axis=0)}

    def param_rows(self, p: Params, a: Array, delta: Array) -> tuple[Outer, Array]:
        """Rows delta_{b,r}^T [I (x) a_b^T, I] in theta layout: delta: (B, R, n_out) ->
        (vec(W) piece Outer(delta, a): block j is delta_{b,r,j} a_b^T, b piece delta (B, R, n_out))."""
        del p
        return Outer(delta, a), delta

    def ntk(self, p: Params, a1: Array, d1: Array, a2: Array, d2: Array) -> Array:
        """This layer's term of J(x1) J(x2)^T: d1: (B1, R, n_out), d2: (B2, R, n_out) -> (B1, B2, R, R).

        [I (x) a^T, I][I (x) a'^T, I]^T = (a^T a' + 1) I, so the term is (a1_b^T a2_c + 1) d1_b d2_c^T.
        """
        del p
        gram = a1 @ a2.T + 1
        return gram[:, :, None, None] * jnp.einsum("bro,cso->bcrs", d1, d2)

    def ravel(self, p: Params) -> Array:
        """theta_l = [vec(W); b]: (P_l,), vec stacking the columns of W, first column on top."""
        return jnp.concatenate([p["W"].T.reshape(-1), p["b"]])

    def unravel(self, theta_l: Array) -> Params:
        """Inverse of `ravel`: (P_l,) -> {"W": (n_in, n_out), "b": (n_out,)}."""
        nw = self.n_in * self.n_out
        return {"W": theta_l[:nw].reshape(self.n_out, self.n_in).T, "b": theta_l[nw:]}


def layer_jacobian(a: Array, n_out: int) -> Array:
    """The dense parameter Jacobian J_{W,b}(W^T a + b) = [I (x) a^T, I] (Section 3.1).

    a: (n_in,) -> (n_out, n_in * n_out + n_out), in the column-stacking vec convention: row j
    holds a^T in columns j*n_in ... (j+1)*n_in - 1 and a one in column n_in*n_out + j. For
    Fig. 4's 4 -> 3 classifier this is the 3 x 15 matrix [x^T 0 0 | 1 0 0; 0 x^T 0 | 0 1 0; ...].

    >>> import jax.numpy as jnp
    >>> layer_jacobian(jnp.array([1.0, 2.0]), 2).tolist()
    [[1.0, 2.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0, 1.0]]
    """
    a = as_array(a, "a", "a vector")
    if a.ndim != 1:
        raise ValueError(f"a: expected a vector of shape (n_in,), got shape {a.shape}")
    n_out = as_int(n_out, "n_out")
    eye = jnp.eye(n_out, dtype=a.dtype)
    return jnp.concatenate([jnp.kron(eye, a[None, :]), eye], axis=1)


# -- convolution and the layers around it (Section 3.5) -------------------------------------

_DN = ("NHWC", "HWIO", "NHWC")  # tfds's image layout, Flax/lax's kernel layout


def _empty() -> Array:
    # weakly typed, so that concatenating a parameter-free block into theta keeps theta's dtype
    return jnp.asarray(0.0)[None][:0]


@dataclass(frozen=True)
class Conv2D:
    """z = conv(a, K) + b per sample: the dense layer W^T a + b of Prop. 3 with W = T(K)^T.

    in_shape: (H, W, C_in); K: (kh, kw, C_in, C_out) (HWIO), b: (C_out,); conv is
    cross-correlation (no kernel flip, as `lax.conv_general_dilated`); out_shape: (H_o, W_o,
    C_out). `stride` (int or pair) and `padding` ("VALID", "SAME" or ((top, bottom), (left,
    right)), an int p in it meaning (p, p)) are stored resolved (pairs, explicit pads).
    Flattened in HWC row-major order, apply is T(K) vec(a) + Vec(B) (`jaxbp.toeplitz(K, in_shape)`).

    theta_l = [vec(K_1); ...; vec(K_r); b]: the paper's [vec(W); b] extended to kernels, filter
    by filter (filter i plays the role of column i of a Dense W), each filter K_i: (kh, kw,
    C_in) flattened row-major like the inputs (Vec(K_i^T) for one channel), then the r biases.

    The three linear maps of the chain are lax convolutions computing exactly
    T(K) vec(a) (`apply`), T(K)^T vec(delta) (`vjp_input`: the transposed convolution, delta
    dilated by the stride against the flipped kernel) and im2col(a)^T delta (`vjp_params`: a
    convolution of a with delta as the kernel, dilated by the stride).

    >>> layer = Conv2D((28, 28, 1), 6, (5, 5), padding="SAME")
    >>> layer.out_shape, layer.size  # 5*5*1*6 + 6
    ((28, 28, 6), 156)
    """

    in_shape: tuple[int, int, int]
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: Padding = "VALID"

    def __post_init__(self):
        as_shape(self.in_shape, "in_shape", "(H, W, C_in)", (3,))
        object.__setattr__(self, "out_channels", as_int(self.out_channels, "out_channels"))
        kh, kw = as_pair(self.kernel_size, "kernel_size", minimum=1)
        g = conv_geometry((kh, kw, self.in_shape[2], self.out_channels), self.in_shape, self.stride, self.padding,
                          names=("kernel_size", "in_shape"))
        for name, value in (("in_shape", g.in_shape), ("kernel_size", (kh, kw)), ("stride", g.stride),
                            ("padding", g.pads)):
            object.__setattr__(self, name, value)

    @property
    def geometry(self) -> ConvGeometry:
        return conv_geometry(self.param_shapes["K"], self.in_shape, self.stride, self.padding)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.geometry.out_shape

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"K": (*self.kernel_size, self.in_shape[2], self.out_channels), "b": (self.out_channels,)}

    @property
    def size(self) -> int:
        """P_l = kh kw C_in C_out + C_out (the tied Toeplitz entries count once)."""
        return int(np.prod(self.param_shapes["K"])) + self.out_channels

    def init(self, key: Array, dtype=jnp.float32) -> Params:
        """LeCun-normal K with fan-in kh kw C_in (Flax's Conv default), zero b."""
        K = jax.nn.initializers.lecun_normal()(key, self.param_shapes["K"], dtype)
        return {"K": K, "b": jnp.zeros((self.out_channels,), dtype)}

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, H, W, C_in) -> z: (B, H_o, W_o, C_out), T(K) vec(a_b) + Vec(B) for each sample."""
        z = jax.lax.conv_general_dilated(a, p["K"], self.stride, self.padding, dimension_numbers=_DN)
        return z + jnp.broadcast_to(p["b"], z.shape)

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, H_o, W_o, C_out) -> T(K)^T delta: (B, H, W, C_in)."""
        del a
        g = self.geometry
        # output pixel o took input rows s o + i - top; transposed, input row n gathers delta
        # (dilated by s) over the flipped kernel, padded so that exactly H rows come out
        pads = [
            (k - 1 - lo, n + lo - (o - 1) * s - 1)
            for n, k, s, (lo, _), o in zip(g.in_shape[:2], g.kernel[:2], g.stride, g.pads, g.out_shape[:2])
        ]
        return jax.lax.conv_general_dilated(
            delta, jnp.flip(p["K"], (0, 1)), (1, 1), pads, lhs_dilation=g.stride,
            dimension_numbers=("NHWC", "HWOI", "NHWC"),
        )

    def vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """a: (B, H, W, C_in), delta: (B, H_o, W_o, C_out) -> {"K": sum_b im2col(a_b)^T delta_b, "b": (C_out,)}.

        The kernel gradient dK[i, j, c, r] = sum_{b, o} a_pad[b, s o + (i, j), c] delta[b, o, r] is a
        convolution of a (batch as the feature axis) with delta as the kernel, dilated by the stride.
        """
        g = self.geometry
        # the bottom/right padding keeps exactly kh (kw) outputs: rows past the last window drop
        pads = [
            (lo, k + (o - 1) * s - n - lo)
            for n, k, s, (lo, _), o in zip(g.in_shape[:2], g.kernel[:2], g.stride, g.pads, g.out_shape[:2])
        ]
        dK = jax.lax.conv_general_dilated(
            a, delta, (1, 1), pads, rhs_dilation=g.stride, dimension_numbers=("CHWN", "IHWO", "HWNC")
        )
        return {"K": dK, "b": jnp.sum(delta, axis=(0, 1, 2))}

    def _patches(self, a: Array) -> Array:
        """im2col: a: (B, H, W, C_in) -> (B, H_o W_o, kh kw C_in), each window flattened (i, j, c) row-major.

        lax builds the patches as a convolution with one-hot filters, so it runs at HIGHEST
        precision: the backend's default (TF32 on recent GPUs, bfloat16 passes on TPUs) would
        round the copied activations themselves, not only a product.
        """
        kh, kw = self.kernel_size
        P = jax.lax.conv_general_dilated_patches(
            a, (kh, kw), self.stride, self.padding, dimension_numbers=_DN, precision=jax.lax.Precision.HIGHEST
        )
        B, Ho, Wo, _ = P.shape  # lax orders a window's features (c, i, j)
        return jnp.moveaxis(P.reshape(B, Ho * Wo, self.in_shape[2], kh, kw), 2, 4).reshape(B, Ho * Wo, -1)

    def per_example_vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """{"K": im2col(a_b)^T delta_b (B, kh, kw, C_in, C_out), "b": (B, C_out)}: one batched matmul.

        A batched product over b rather than vmapped convolutions: it is the cheap exact form
        (the kernel is small next to the activations) and it partitions cleanly over a batch
        split across devices.
        """
        del p
        B = a.shape[0]
        dK = jnp.einsum("bpf,bpo->bfo", self._patches(a), delta.reshape(B, -1, self.out_channels))
        return {"K": dK.reshape(B, *self.param_shapes["K"]), "b": jnp.sum(delta, axis=(1, 2))}

    def param_rows(self, p: Params, a: Array, delta: Array) -> tuple[Array, Array]:
        """Rows delta_{b,r}^T J_theta z^[l] in theta layout: delta: (B, R, H_o, W_o, C_out) ->
        (kernel piece (B, R, C_out kh kw C_in), filter by filter, bias piece (B, R, C_out))."""
        del p
        B, R = delta.shape[:2]
        d = delta.reshape(B, R, -1, self.out_channels)
        K = jnp.einsum("bpf,brpo->brof", self._patches(a), d).reshape(B, R, -1)
        return K, jnp.sum(d, axis=2)

    def ravel(self, p: Params) -> Array:
        """theta_l = [vec(K_1); ...; vec(K_r); b]: (P_l,), each filter K_i = K[..., i] flattened (kh, kw, C_in) row-major."""
        return jnp.concatenate([jnp.moveaxis(p["K"], 3, 0).reshape(-1), p["b"]])

    def unravel(self, theta_l: Array) -> Params:
        """Inverse of `ravel`: (P_l,) -> {"K": (kh, kw, C_in, C_out), "b": (C_out,)}."""
        kh, kw, cin, cout = self.param_shapes["K"]
        nk = kh * kw * cin * cout
        return {"K": jnp.moveaxis(theta_l[:nk].reshape(cout, kh, kw, cin), 0, 3), "b": theta_l[nk:]}


class _ParameterFree:
    """Shared by layers with no theta block: P_l = 0, params entry {}."""

    param_shapes = property(lambda self: {})
    size = property(lambda self: 0)

    def init(self, key: Array, dtype=jnp.float32) -> Params:
        del key, dtype
        return {}

    def vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        del p, a, delta
        return {}

    def ravel(self, p: Params) -> Array:
        del p
        return _empty()

    def unravel(self, theta_l: Array) -> Params:
        del theta_l
        return {}


@dataclass(frozen=True)
class Flatten(_ParameterFree):
    """(B, H, W, C) -> (B, H W C), HWC row-major (the flattening of `toeplitz`); J = I."""

    in_shape: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "in_shape", as_shape(self.in_shape, "in_shape", "a shape (d_1, ..., d_k)"))

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (int(np.prod(self.in_shape)),)

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, *in_shape) -> (B, prod(in_shape))."""
        del p
        return a.reshape(a.shape[0], -1)

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, prod(in_shape)) -> (B, *in_shape)."""
        del p, a
        return delta.reshape(delta.shape[0], *self.in_shape)


@dataclass(frozen=True)
class _Pool2D(_ParameterFree):
    """Pooling over (ph, pw) windows moved by `stride` (default: the window), VALID, per channel.

    in_shape: (H, W, C) -> out_shape: (H_o, W_o, C). Both poolings are z_b = S(a_b) a_b with a
    selection/averaging matrix S of one nonzero pattern per window; delta^T J_a z scatters each
    output's delta back onto its window with the same weights.
    """

    in_shape: tuple[int, int, int]
    window: tuple[int, int]
    stride: tuple[int, int] | None = None

    def __post_init__(self):
        as_shape(self.in_shape, "in_shape", "(H, W, C)", (3,))
        ph, pw = as_pair(self.window, "window", minimum=1)
        stride = (ph, pw) if self.stride is None else self.stride
        g = conv_geometry((ph, pw, self.in_shape[2], self.in_shape[2]), self.in_shape, stride, "VALID",
                          names=("window", "in_shape"))
        for name, value in (("in_shape", g.in_shape), ("window", (ph, pw)), ("stride", g.stride)):
            object.__setattr__(self, name, value)

    @property
    def geometry(self) -> ConvGeometry:
        c = self.in_shape[2]
        return conv_geometry((*self.window, c, c), self.in_shape, self.stride, "VALID")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.geometry.out_shape

    def windows(self, a: Array) -> Array:
        """a: (B, H, W, C) -> (B, H_o, W_o, C, ph pw): each output's window, row-major."""
        (ho, wo, _), (sh, sw) = self.out_shape, self.stride
        ph, pw = self.window
        return jnp.stack(
            [a[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw]
             for i in range(ph) for j in range(pw)],
            axis=-1,
        )

    def scatter(self, d: Array) -> Array:
        """Transpose of `windows`: (B, H_o, W_o, C, ph pw) -> (B, H, W, C), overlaps summed."""
        (h, w, _), (ho, wo, _), (sh, sw) = self.in_shape, self.out_shape, self.stride
        ph, pw = self.window
        zero = jnp.zeros((), d.dtype)
        return sum(
            jax.lax.pad(d[..., i * pw + j], zero, [(0, 0, 0), (i, h - i - (ho - 1) * sh - 1, sh - 1),
                                                   (j, w - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)])
            for i in range(ph) for j in range(pw)
        )


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """z = mean of each window: linear, with the constant Jacobian S (weights 1/(ph pw)).

    >>> AvgPool2D((24, 24, 6), (2, 2)).out_shape
    (12, 12, 6)
    """

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, H, W, C) -> (B, H_o, W_o, C)."""
        del p
        return jnp.mean(self.windows(a), axis=-1)

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, H_o, W_o, C) -> S^T delta: (B, H, W, C)."""
        del p, a
        n = self.window[0] * self.window[1]
        return self.scatter(jnp.broadcast_to((delta / n)[..., None], (*delta.shape, n)))


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """z = max of each window; its Jacobian is the selection matrix of the argmax entries.

    Ties go to the first maximum in row-major window order, as `jax.grad` of
    `lax.reduce_window(..., lax.max, ...)` does; `apply` picks that entry rather than taking
    `jnp.max` (whose gradient splits ties evenly), so `jax.grad` of the network agrees.
    """

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, H, W, C) -> (B, H_o, W_o, C)."""
        del p
        win = self.windows(a)
        return jnp.take_along_axis(win, jnp.argmax(win, axis=-1)[..., None], axis=-1)[..., 0]

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, H_o, W_o, C) -> S(a)^T delta: (B, H, W, C), delta routed to each window's argmax."""
        del p
        win = self.windows(a)
        pick = jax.nn.one_hot(jnp.argmax(win, axis=-1), win.shape[-1], dtype=delta.dtype)
        return self.scatter(pick * delta[..., None])
