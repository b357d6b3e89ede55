"""Activation functions f, their derivatives f' and Jacobians J_z f(z) (Section 3.4).

An elementwise activation a = f(z) = [f(z_1) ... f(z_d)]^T has the diagonal Jacobian
J_z f(z) = diag(f'(z_1), ..., f'(z_d)); the chain only ever needs the vector f'(z), so
`Activation.df` returns that vector and `Activation.jacobian` builds the matrix for teaching
and tests. Softmax is not elementwise: its Jacobian is the full diag(s) - s s^T.

Conventions at kinks follow JAX's own derivatives, so that jaxbp and `jax.grad` agree bit for
bit in meaning: relu'(0) = 0 (as `jax.nn.relu`), leaky_relu'(0) = 1 (`jax.nn.leaky_relu`
takes the identity branch at 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

LEAKY_RELU_SLOPE = 0.01  # jax.nn.leaky_relu's default negative slope
_GELU_C = math.sqrt(2.0 / math.pi)


class Activation(NamedTuple):
    """An elementwise activation: `f(z)` and its derivative `df(z)` = f'(z), both shape-preserving.

    `df_from_f(a)`, where it exists, is the same f'(z) written through the output a = f(z)
    (tanh: 1 - a^2), so a backward pass can keep a^[l] alone instead of a^[l] and f'(z^[l]), as
    reverse-mode autodiff does; None where f' is not a function of f (gelu) or would differ from
    `df` at some input (leaky_relu, whose f(z) underflows to 0 for tiny negative z).
    """

    name: str
    f: Callable[[Array], Array]
    df: Callable[[Array], Array]
    df_from_f: Callable[[Array], Array] | None = None

    def jacobian(self, z: Array) -> Array:
        """J_z f(z) = diag(f'(z)) for z: (d,), shape (d, d)."""
        return jnp.diag(self.df(z))


def _gelu_df(z: Array) -> Array:
    # d/dz of the tanh approximation used by jax.nn.gelu(approximate=True)
    u = _GELU_C * (z + 0.044715 * z**3)
    t = jnp.tanh(u)
    du = _GELU_C * (1.0 + 3 * 0.044715 * z**2)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t**2) * du


def _positive(t: Array) -> Array:
    """relu' as a function of z and, equally, of a = relu(z): 1 where positive, else 0."""
    return (t > 0).astype(t.dtype)


def _sigmoid_da(a: Array) -> Array:
    """sigmoid' through its output a = sigmoid(z)."""
    return a * (1.0 - a)


def _tanh_da(a: Array) -> Array:
    """tanh' through its output a = tanh(z)."""
    return 1.0 - a**2


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", jax.nn.relu, _positive, _positive),
        Activation(
            "leaky_relu",
            lambda z: jax.nn.leaky_relu(z, LEAKY_RELU_SLOPE),
            lambda z: jnp.where(z >= 0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype),
        ),
        Activation("sigmoid", jax.nn.sigmoid, lambda z: _sigmoid_da(jax.nn.sigmoid(z)), _sigmoid_da),
        Activation("tanh", jnp.tanh, lambda z: _tanh_da(jnp.tanh(z)), _tanh_da),
        # softplus' = sigmoid(z) = 1 - exp(-softplus(z))
        Activation("softplus", jax.nn.softplus, jax.nn.sigmoid, lambda a: -jnp.expm1(-a)),
        Activation("gelu", lambda z: jax.nn.gelu(z, approximate=True), _gelu_df),
        Activation("identity", lambda z: z, jnp.ones_like, jnp.ones_like),
    )
}


def get(name: str) -> Activation:
    """The activation called `name`; a ValueError lists the known names otherwise."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation: unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def softmax_jacobian(z: Array) -> Array:
    """J_z softmax(z) = diag(s) - s s^T for z: (c,), shape (c, c); batched over leading axes."""
    if jnp.ndim(z) < 1:
        raise ValueError(f"z: expected a vector of logits (c,) or a batch (..., c), got shape {jnp.shape(z)}")
    s = jax.nn.softmax(z, axis=-1)
    eye = jnp.broadcast_to(jnp.eye(s.shape[-1], dtype=s.dtype), (*s.shape, s.shape[-1]))
    return s[..., :, None] * (eye - s[..., None, :])  # entry (i, j): s_i (delta_ij - s_j), no dot
