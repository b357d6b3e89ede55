"""Convolution as matrix multiplication (Section 3.5, Propositions 2 and 3).

Here `conv` is the deep-learning convolution, i.e. cross-correlation with no kernel flip (as
`jax.lax.conv_general_dilated`; the paper's `X * K` means the same, see docs/errata.md):

    conv(X, K)[o_h, o_w, c_out] = sum_{i, j, c_in} Xpad[s_h o_h + i, s_w o_w + j, c_in] K[i, j, c_in, c_out].

Arrays are flattened row by row, channels last (HWC row-major, NHWC without the batch axis);
for one channel this is the paper's Vec(X^T). With that flattening the three linear maps of a
convolutional layer in the Jacobian chain are

- `toeplitz(K, ...)`: T(K) with T(K) vec(X) = vec(conv(X, K)) (Prop. 2; forward and, through
  T(K)^T, the step delta -> delta^T J_a z to the layer's input);
- `patches(X, ...)`: im2col(X) with im2col(X) K.reshape(-1, C_out) = conv(X, K), so that the
  kernel gradient is im2col(X)^T delta (the Toeplitz entries are tied to K);
- `conv_to_dense(K, b, ...)`: Prop. 3, the whole layer with r = C_out filters and their biases
  as one dense W^T x + b.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp._checks import as_array, as_pair, as_shape

Array = jax.Array
Pair = tuple[int, int]
Padding = Union[str, tuple[Pair, Pair]]


class ConvGeometry(NamedTuple):
    """Static facts of a 2-D convolution: all ints, resolved and validated."""

    in_shape: tuple[int, int, int]  # (H, W, C_in)
    kernel: tuple[int, int, int, int]  # (kh, kw, C_in, C_out), HWIO
    stride: Pair  # (s_h, s_w)
    pads: tuple[Pair, Pair]  # ((top, bottom), (left, right)), explicit
    out_shape: tuple[int, int, int]  # (H_o, W_o, C_out)


def _same_pads(size: int, k: int, s: int) -> Pair:
    # TensorFlow/XLA "SAME": ceil(size / s) outputs, the odd pixel of padding at the end
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return (total // 2, total - total // 2)


def conv_geometry(
    kernel_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    stride=1,
    padding: Padding = "VALID",
    names: tuple[str, str] = ("K", "input_shape"),
) -> ConvGeometry:
    """Validate a convolution's arguments and resolve stride, padding and output shape.

    kernel_shape: (kh, kw) or (kh, kw, C_in, C_out); input_shape: (H, W) or (H, W, C_in)
    (a 2-D kernel or input means one channel), sizes positive ints; stride: int or (s_h, s_w)
    >= 1; padding: "VALID", "SAME" or ((top, bottom), (left, right)) of ints >= 0, where an
    int p stands for (p, p) (so (1, 2) pads one row above and below and two columns on each
    side, as in Flax); names: the caller's names for the kernel and the input, used in the
    errors. Raises ValueError naming the argument for a malformed shape, and the shapes for a
    kernel larger than the padded input or a channel mismatch.
    """
    kernel_shape = as_shape(kernel_shape, names[0], "a kernel of shape (kh, kw) or (kh, kw, C_in, C_out)", (2, 4))
    input_shape = as_shape(input_shape, names[1], "(H, W) or (H, W, C_in)", (2, 3))
    kernel = kernel_shape + ((1, 1) if len(kernel_shape) == 2 else ())
    hwc = input_shape + ((1,) if len(input_shape) == 2 else ())
    if kernel[2] != hwc[2]:
        raise ValueError(
            f"channel mismatch: the kernel of shape {kernel_shape} (HWIO) expects C_in = "
            f"{kernel[2]} input channels, but {names[1]} {input_shape} has {hwc[2]}"
        )
    s = as_pair(stride, "stride")
    if min(s) < 1:
        raise ValueError(f"stride: expected every stride >= 1, got {stride!r}")
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(
                f"padding: expected 'VALID', 'SAME' or ((top, bottom), (left, right)), got {padding!r}"
            )
        same = padding.upper() == "SAME"
        pads = tuple(
            _same_pads(hwc[d], kernel[d], s[d]) if same else (0, 0) for d in range(2)
        )
    else:
        try:
            pads = (as_pair(padding[0], "padding"), as_pair(padding[1], "padding"))
            if len(padding) != 2 or min(min(p) for p in pads) < 0:
                raise ValueError
        except (ValueError, TypeError, IndexError, KeyError):  # KeyError: a dict given
            raise ValueError(
                f"padding: expected 'VALID', 'SAME' or ((top, bottom), (left, right)) of ints "
                f">= 0, got {padding!r}"
            ) from None
    padded = tuple(hwc[d] + sum(pads[d]) for d in range(2))
    if kernel[0] > padded[0] or kernel[1] > padded[1]:
        raise ValueError(
            f"{names[0]}: kernel larger than the input: a {kernel[0]} x {kernel[1]} kernel does not fit "
            f"{names[1]} = {input_shape} padded to {padded} (padding {padding!r})"
        )
    out = tuple((padded[d] - kernel[d]) // s[d] + 1 for d in range(2))
    return ConvGeometry(hwc, kernel, s, pads, (out[0], out[1], kernel[3]))  # type: ignore[arg-type]


def _window_index(g: ConvGeometry) -> tuple[np.ndarray, ...]:
    """Index grids over (H_o, W_o, kh, kw): o_h, o_w, i, j and the padded input row and column."""
    (ho, wo, _), (kh, kw, _, _), (sh, sw) = g.out_shape, g.kernel, g.stride
    oh, ow, i, j = np.meshgrid(np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw), indexing="ij")
    return oh, ow, i, j, oh * sh + i, ow * sw + j


def toeplitz(K: Array, input_shape: tuple[int, ...], stride=1, padding: Padding = "VALID") -> Array:
    """Prop. 2: the Toeplitz matrix T(K) with T(K) vec(X) = vec(conv(X, K)).

    K: (kh, kw) or (kh, kw, C_in, C_out) (HWIO); input_shape: (H, W) or (H, W, C_in);
    returns T: (H_o W_o C_out, H W C_in), rows and columns in HWC row-major order. Row
    (o_h, o_w, c_out) holds K[i, j, c_in, c_out] in column (s_h o_h + i - top, s_w o_w + j -
    left, c_in); taps falling on the padding are dropped. The paper's 3x3 input and 2x2 kernel
    (K = [[k1, k2], [k3, k4]]) give the 4 x 9 matrix, with rows 3 and 4 corrected (docs/errata.md):

    >>> toeplitz(jnp.array([[1, 2], [3, 4]]), (3, 3)).tolist()
    [[1, 2, 0, 3, 4, 0, 0, 0, 0], [0, 1, 2, 0, 3, 4, 0, 0, 0], [0, 0, 0, 1, 2, 0, 3, 4, 0], [0, 0, 0, 0, 1, 2, 0, 3, 4]]
    """
    K = as_array(K, "K", "a kernel array")
    g = conv_geometry(K.shape, input_shape, stride, padding)
    (h, w, cin), (ho, wo, cout) = g.in_shape, g.out_shape
    (top, _), (left, _) = g.pads
    oh, ow, i, j, ih, iw = _window_index(g)
    ih, iw = ih - top, iw - left
    inside = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)  # taps not on the padding
    oh, ow, i, j, ih, iw = (a[inside][:, None, None] for a in (oh, ow, i, j, ih, iw))
    ci, co = np.arange(cin)[None, :, None], np.arange(cout)[None, None, :]
    rows, cols, i, j, ci, co = np.broadcast_arrays(
        (oh * wo + ow) * cout + co, (ih * w + iw) * cin + ci, i, j, ci, co
    )
    vals = K.reshape(g.kernel)[i, j, ci, co]
    # each (output pixel, input pixel) pair meets at most one tap, so `set` writes every entry once
    return jnp.zeros((ho * wo * cout, h * w * cin), K.dtype).at[rows, cols].set(vals)


def patches(X: Array, kernel_shape: tuple[int, ...], stride=1, padding: Padding = "VALID") -> Array:
    """im2col(X): (H_o W_o, kh kw C_in), im2col(X) K.reshape(kh kw C_in, C_out) = conv(X, K).reshape(H_o W_o, C_out).

    X: (H, W) or (H, W, C_in); kernel_shape as for `toeplitz`. Row (o_h, o_w) is the padded
    window under the kernel at that output pixel, flattened in (i, j, c_in) order. Its
    transpose gives the kernel gradient: dl/dK = im2col(X)^T delta for delta: (H_o W_o, C_out).
    """
    X = as_array(X, "X", "an image array")
    g = conv_geometry(kernel_shape, X.shape, stride, padding, names=("kernel_shape", "X"))
    (ho, wo, _), (kh, kw, cin, _) = g.out_shape, g.kernel
    Xp = jnp.pad(X.reshape(g.in_shape), (*g.pads, (0, 0)))
    *_, ih, iw = _window_index(g)
    return Xp[ih, iw].reshape(ho * wo, kh * kw * cin)


def conv_to_dense(
    K: Array, b: Array, input_shape: tuple[int, ...], stride=1, padding: Padding = "VALID"
) -> tuple[Array, Array]:
    """Prop. 3: a layer of r = C_out filters with biases as one dense layer z = W^T x + b.

    K: (kh, kw, C_in, C_out) (or (kh, kw) for r = 1); b: (C_out,), filter i's bias B_i being the
    constant map b[i]; returns W = T(K)^T: (H W C_in, H_o W_o C_out) and the bias vector
    Vec(B) = b repeated at every output pixel: (H_o W_o C_out,), so that for x = vec(X)
    W^T x + b_vec = vec(conv(X, K) + b). Column (o_h, o_w, i) of W is filter i's (W_i)_{:, (o_h, o_w)}.
    """
    T = toeplitz(K, input_shape, stride, padding)
    b = as_array(b, "b", "a bias vector")
    g = conv_geometry(jnp.shape(K), input_shape, stride, padding)
    if b.shape != (g.kernel[3],):
        raise ValueError(f"b: expected one bias per filter, shape ({g.kernel[3]},), got {b.shape}")
    return T.T, jnp.tile(b, g.out_shape[0] * g.out_shape[1])


_PLOT_PX = 2000  # a plot's longer side, in pixels, when T(K) has more entries than that fit at full cell size
_PLOT_MAX_SIDE = 8000  # one pixel per entry at least: a larger T(K) is refused


def plot_toeplitz(
    K: Array, input_shape: tuple[int, ...], path: str | Path, stride=1, padding: Padding = "VALID"
) -> Path:
    """Save a PNG of T(K) (Prop. 2) to `path`: nonzeros coloured by value, zeros white.

    Each entry gets a square of 35 pixels (the paper's 3x3 input and 2x2 kernel: the shifted,
    diagonal-constant bands of the kernel are visible row by row, on a grid), shrunk for a larger
    T(K) so that the longer side stays near 2,000 pixels, but never below one pixel per entry, so no
    nonzero is lost (one 5x5 filter on a 28x28 image, 576 x 784: 2.6 pixels each). A T(K) with more
    than 8,000 rows or columns is refused (ValueError): its band looks the same on a smaller input.
    Missing folders of `path` are created, and a path without a suffix gets ".png". Uses matplotlib's
    Agg canvas, no global state. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = conv_geometry(jnp.shape(K), input_shape, stride, padding)
    rows, cols = int(np.prod(g.out_shape)), int(np.prod(g.in_shape))
    if max(rows, cols) > _PLOT_MAX_SIDE:
        raise ValueError(
            f"plot_toeplitz: T(K) would be {rows} x {cols}, and a plot shows at least one pixel per entry, up to "
            f"{_PLOT_MAX_SIDE} a side; use a smaller input_shape (the doubly block Toeplitz band looks the same)"
        )
    T = np.asarray(toeplitz(K, input_shape, stride, padding), dtype=np.float64)
    cell = float(np.clip(_PLOT_PX / max(rows, cols), 1.0, 35.0))  # pixels per entry
    fig = Figure(figsize=(cols * cell / 100 + 1.5, rows * cell / 100 + 1.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_equal(T, 0.0), cmap="viridis", interpolation="nearest")
    if cell >= 8:  # a grid line per entry only where entries are large enough to see it
        ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="0.85", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    ax.set_xlabel("input index (HWC row-major, the paper's Vec(X^T))")
    ax.set_ylabel("output index")
    ax.set_title(f"T(K): {rows} x {cols}, {int(np.count_nonzero(T))} nonzeros")
    fig.colorbar(im, ax=ax, label="kernel entry")
    path = Path(path)
    path = path if path.suffix else path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
