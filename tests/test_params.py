"""The paper's theta: vec(W) by columns, then b; last layer first; unravel inverts ravel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import random_params


def test_ravel_stacks_columns_then_bias_last_layer_first():
    net = jaxbp.mlp([2, 3, 1], head="identity_mse")
    W1 = np.arange(6.0).reshape(2, 3)
    params = [{"W": W1, "b": np.array([10.0, 11, 12])}, {"W": np.array([[20.0], [21], [22]]), "b": np.array([30.0])}]
    theta = np.asarray(jaxbp.ravel(net, params))
    expected = [20, 21, 22, 30] + list(W1[:, 0]) + list(W1[:, 1]) + list(W1[:, 2]) + [10, 11, 12]
    np.testing.assert_array_equal(theta, expected)


@pytest.mark.parametrize("scan", [None, 2])
def test_unravel_inverts_ravel(scan):
    net = jaxbp.mlp([3, 4, 4, 4, 2], scan=scan)
    params = random_params(net, 0, jnp.float64)
    theta = jaxbp.ravel(net, params)
    assert theta.shape == (net.n_params,)
    back = jaxbp.unravel(net, theta)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    np.testing.assert_array_equal(jaxbp.ravel(net, back), theta)


def test_stacked_theta_equals_unrolled_theta():
    scanned, plain = jaxbp.mlp([3, 4, 4, 4, 2], scan=2), jaxbp.mlp([3, 4, 4, 4, 2])
    params = random_params(scanned, 1, jnp.float64)
    listed = [params[0]] + [jax.tree.map(lambda t, i=i: t[i], params[1]) for i in range(2)] + [params[2]]
    np.testing.assert_array_equal(jaxbp.ravel(scanned, params), jaxbp.ravel(plain, listed))
