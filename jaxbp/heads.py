"""Last-layer activation f^[L] paired with its loss, and the closed forms of Table 1.

Each head takes z = z^[L] of shape (B, m) and a target y of shape (B, m) (already converted by
`Head.target`) and gives

- `loss(z, y)`: the per-example loss l(y, f^[L](z)), shape (B,), computed stably from z;
- `grad_z(z, y)`: the closed form of grad_{z^[L]} l, shape (B, m) (Table 1);
- `predict(z)`: y_hat = f^[L](z);
- `hessian_sqrt(z, y)`: a factor S of shape (B, R, m) with S_b^T S_b = the Hessian of l with
  respect to z^[L] (what the generalised Gauss-Newton J^T H J needs, see `jaxbp.ggn_diagonal`).

Table 1, corrected where the paper is loose (see docs/errata.md):

| head          | l(y, y_hat)                          | grad_z l                 |
|---------------|--------------------------------------|--------------------------|
| sigmoid_bce   | sum_j -y_j log y_hat_j - (1-y_j) log(1-y_hat_j) | y_hat - y     |
| softmax_ce    | -sum_i y_i log y_hat_i               | (1^T y) y_hat - y        |
| identity_mse  | ||y - y_hat||^2                      | -2 (y - y_hat)           |

softmax+CE's gradient is y_hat - y only when 1^T y = 1 (one-hot or probability labels).

The Hessians with respect to z (not in the paper) and their factors S (S^T S = H, R = m rows):

| head          | H = d^2 l / dz^2                     | S                                  |
|---------------|--------------------------------------|------------------------------------|
| sigmoid_bce   | diag(s (1 - s)), s = sigma(z)        | diag(sqrt(s (1 - s)))              |
| softmax_ce    | (1^T y)(diag(s) - s s^T), s = softmax(z) | sqrt(1^T y) (diag(sqrt s) - sqrt(s) s^T) |
| identity_mse  | 2 I                                  | sqrt(2) I                          |

The softmax factor uses 1^T s = 1; it needs 1^T y >= 0, which holds for any label rows of
non-negative weights (class ids, one-hot, probabilities): `check_labels` refuses negative
weights given on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Head(NamedTuple):
    """A last-layer activation f^[L] with its loss (a row of Table 1)."""

    name: str
    predict: Callable[[Array], Array]
    loss: Callable[[Array, Array], Array]
    grad_z: Callable[[Array, Array], Array]
    labels: str  # "classes" (int ids or probability rows), "binary" ({0,1}), "real"
    hessian_sqrt: Callable[[Array, Array], Array]

    def target(self, y: Array, m: int, dtype) -> Array:
        """Labels y: (B,) or (B, m) -> dense targets (B, m) of `dtype` (one-hot for (B,) class ids)."""
        if self.labels == "classes" and jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1:
            return jax.nn.one_hot(y, m, dtype=dtype)
        y = y.astype(dtype)
        return y[:, None] if y.ndim == 1 else y


def _softmax_ce_loss(z: Array, y: Array) -> Array:
    # -sum_i y_i log softmax(z)_i = (1^T y) logsumexp(z) - y^T z, finite for any finite z
    return jnp.sum(y, -1) * jax.nn.logsumexp(z, axis=-1) - jnp.sum(y * z, -1)


def _eye(z: Array) -> Array:
    m = z.shape[-1]
    return jnp.broadcast_to(jnp.eye(m, dtype=z.dtype), (z.shape[0], m, m))


def _softmax_ce_hessian_sqrt(z: Array, y: Array) -> Array:
    s = jax.nn.softmax(z, axis=-1)
    rows = jnp.sqrt(s)[:, :, None] * (_eye(z) - s[:, None, :])  # row r: sqrt(s_r) (e_r - s)^T
    return jnp.sqrt(jnp.sum(y, -1))[:, None, None] * rows


def _sigmoid_bce_hessian_sqrt(z: Array, y: Array) -> Array:
    del y
    # s (1 - s) = sigma(z) sigma(-z), without the cancellation of 1 - s for large z
    return jnp.sqrt(jax.nn.sigmoid(z) * jax.nn.sigmoid(-z))[:, :, None] * _eye(z)


def _sigmoid_bce_loss(z: Array, y: Array) -> Array:
    # -y log s(z) - (1-y) log(1-s(z)) = softplus(z) - y z, finite for any finite z
    return jnp.sum(jax.nn.softplus(z) - y * z, -1)


HEADS: dict[str, Head] = {
    h.name: h
    for h in (
        Head(
            "sigmoid_bce",
            jax.nn.sigmoid,
            _sigmoid_bce_loss,
            lambda z, y: jax.nn.sigmoid(z) - y,
            "binary",
            _sigmoid_bce_hessian_sqrt,
        ),
        Head(
            "softmax_ce",
            lambda z: jax.nn.softmax(z, axis=-1),
            _softmax_ce_loss,
            lambda z, y: jnp.sum(y, -1, keepdims=True) * jax.nn.softmax(z, axis=-1) - y,
            "classes",
            _softmax_ce_hessian_sqrt,
        ),
        Head(
            "identity_mse",
            lambda z: z,
            lambda z, y: jnp.sum((y - z) ** 2, -1),
            lambda z, y: -2.0 * (y - z),
            "real",
            lambda z, y: jnp.sqrt(jnp.asarray(2.0, z.dtype)) * _eye(z),
        ),
    )
}


def get(name: str) -> Head:
    """The head called `name`; a ValueError lists the known names otherwise."""
    if not isinstance(name, str) or name not in HEADS:
        raise ValueError(f"head: unknown head {name!r}; expected one of {sorted(HEADS)}")
    return HEADS[name]


def check_labels(head: Head, y, batch: int, m: int) -> None:
    """Validate labels y for `head` with B=`batch` rows and m outputs; values only if on the host.

    Shapes and dtypes are static and always checked. Label *values* (class range, {0,1}) are
    checked when y is a NumPy array or a Python sequence: checking a device array would cost a
    device-to-host sync on every step.
    """
    shape, dtype = np.shape(y), getattr(y, "dtype", np.asarray(y).dtype if _is_host(y) else None)
    is_int = dtype is not None and np.issubdtype(dtype, np.integer)
    if head.labels == "classes" and is_int and len(shape) != 2:  # integer (B, m) rows are one-hot rows
        expected = f"class ids of shape ({batch},) with values in [0, {m})"
        if shape != (batch,):
            raise ValueError(f"y: expected {expected}, got shape {shape}")
        if _is_host(y):
            y = np.asarray(y)
            if y.size and (y.min() < 0 or y.max() >= m):
                raise ValueError(
                    f"y: expected {expected}, got values in [{y.min()}, {y.max()}]"
                )
        return
    allowed = [(batch, m)] + ([(batch,)] if m == 1 else [])
    if shape not in allowed:
        kinds = {
            "classes": "integer class ids of shape (B,) or one-hot/probability rows of shape (B, m)",
            "binary": "{0,1} targets of shape (B, m) (or (B,) when m == 1)",
            "real": "real targets of shape (B, m) (or (B,) when m == 1)",
        }[head.labels]
        raise ValueError(
            f"y: head {head.name!r} expects {kinds} with B={batch}, m={m}; "
            f"got shape {shape} and dtype {dtype}"
        )
    if head.labels == "binary" and _is_host(y):
        y = np.asarray(y)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"y: head 'sigmoid_bce' expects targets in [0, 1] (usually {{0, 1}}), "
                f"got values in [{y.min()}, {y.max()}]"
            )
    if head.labels == "classes" and _is_host(y):  # weights of the classes' log-probabilities
        y = np.asarray(y)
        if y.size and y.min() < 0:
            raise ValueError(
                f"y: head {head.name!r} expects one-hot or probability rows, i.e. weights >= 0 "
                f"(they need not sum to one), got a smallest value of {y.min()}"
            )


def _is_host(y) -> bool:
    return isinstance(y, (np.ndarray, list, tuple, int, float, np.generic))
