"""The paper's parameter vector theta (Section 3.1, Algorithm 1 step 7).

theta stacks the layers' blocks last layer first, theta = [theta_L; ...; theta_1], and each
Dense block is theta_l = [vec(W^[l]); b^[l]] with vec stacking the columns of W (first column
on top). J_theta z^[L] = [J_{theta_L} z^[L], ..., J_{theta_1} z^[L]] uses the same order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp._checks import is_float_dtype
from jaxbp.network import Network, Params, check_network

Array = jax.Array


def offsets(net: Network) -> list[int]:
    """Start of layer l's block in theta, for l = 1..L (listed first layer first)."""
    sizes = [layer.size for layer in net.layers]
    return [int(sum(sizes[l + 1 :])) for l in range(len(sizes))]


def ravel(net: Network, params: Params) -> Array:
    """params (list, first layer first) -> theta: (P,), last layer first.

    >>> import jax, jaxbp
    >>> net = jaxbp.mlp([2, 1], head="identity_mse")
    >>> jaxbp.ravel(net, [{"W": jax.numpy.array([[1.0], [2.0]]), "b": jax.numpy.array([3.0])}]).tolist()
    [1.0, 2.0, 3.0]
    """
    check_network(net)
    net.check_params(params)
    return jnp.concatenate([layer.ravel(p) for layer, p in reversed(list(zip(net.layers, params)))])


def unravel(net: Network, theta: Array) -> Params:
    """theta: (P,) -> params (list, first layer first); the inverse of `ravel`."""
    check_network(net)
    if np.shape(theta) != (net.n_params,):
        raise ValueError(
            f"theta: expected a vector of shape ({net.n_params},) for this network, "
            f"got shape {np.shape(theta)}"
        )
    theta = jnp.asarray(theta)
    if not is_float_dtype(theta.dtype):
        raise TypeError(f"theta: expected a floating-point vector, got dtype {theta.dtype} (cast it, e.g. with .astype(jnp.float32))")
    return [
        layer.unravel(theta[off : off + layer.size]) for layer, off in zip(net.layers, offsets(net))
    ]
