"""Per-example gradients, norms, clipping, GGN diagonal and NTK for convolutional networks.

Each quantity is checked against its autodiff definition (vmap of jax.grad, jax.jacrev with
jax.hessian, jacrev products) on a CNN with Conv2D, pooling, Flatten and Dense layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import assert_rel_close, by_example, jacrev_theta, random_labels, random_params
from test_curvature import _oracle_ggn_diagonal
from test_per_example import _oracle_norms, _oracle_per_example_grads

B = 4


def _cnn(head: str, pool) -> jaxbp.Network:
    conv = jaxbp.Conv2D((7, 7, 2), 3, (3, 3), stride=1, padding="SAME")
    p = pool(conv.out_shape, (2, 2))
    conv2 = jaxbp.Conv2D(p.out_shape, 2, (2, 2), stride=(1, 2))
    flat = jaxbp.Flatten(conv2.out_shape)
    layers = (conv, p, conv2, flat, jaxbp.Dense(flat.out_shape[0], 3))
    return jaxbp.Network(layers, ("tanh", "identity", "relu", "identity"), head)


CASES = [
    pytest.param(head, dtype, pool, id=f"{head}-{jnp.dtype(dtype).name}-{pool.__name__}")
    for head in ["softmax_ce", "sigmoid_bce", "identity_mse"]
    for dtype in [jnp.float64, jnp.float32]
    for pool in [jaxbp.MaxPool2D, jaxbp.AvgPool2D]
]


def _case(head, dtype, pool):
    net = _cnn(head, pool)
    params = random_params(net, 1, dtype)
    x = jax.random.normal(jax.random.key(2), (B, *net.in_shape), dtype)
    y = random_labels(head, B, net.m, 3, dtype)
    return net, params, x, y


@pytest.mark.parametrize("head, dtype, pool", CASES)
def test_cnn_per_example_grads_norms_and_clipping(head, dtype, pool):
    net, params, x, y = _case(head, dtype, pool)
    ref = jax.jit(_oracle_per_example_grads, static_argnums=0)(net, params, x, y)
    assert_rel_close(by_example(jaxbp.per_example_grads(net)(params, x, y)), by_example(ref), dtype, "per-example grads")
    norms = np.asarray(_oracle_norms(ref))
    assert_rel_close(list(jaxbp.per_example_grad_norms(net)(params, x, y)), list(norms), dtype, "norms")
    C = float(np.median(norms))
    c = np.minimum(1.0, C / norms)
    expected = jax.tree.map(lambda v: jnp.tensordot(jnp.asarray(c, v.dtype), v, axes=1) / B, ref)
    assert_rel_close(jaxbp.clipped_grad_fn(net, C)(params, x, y), expected, dtype, "clipped")


@pytest.mark.parametrize("head, dtype, pool", CASES)
def test_cnn_ggn_diagonal_and_ntk(head, dtype, pool):
    net, params, x, y = _case(head, dtype, pool)
    ggn = jaxbp.ggn_diagonal(net)(params, x, y)
    assert_rel_close(ggn, jaxbp.unravel(net, _oracle_ggn_diagonal(net, params, x, y)), dtype, "GGN")
    x2 = jax.random.normal(jax.random.key(5), (3, *net.in_shape), dtype)
    K = jaxbp.empirical_ntk(net)(params, x, x2)
    J1, J2 = jacrev_theta(net, params, x), jacrev_theta(net, params, x2)
    assert_rel_close(K, jnp.einsum("bip,cjp->bcij", J1, J2), dtype, "NTK")
