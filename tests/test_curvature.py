"""GGN diagonal against J^T H J from jax.jacrev and jax.hessian; empirical NTK against jacrev products."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import assert_rel_close, jacrev_theta, random_labels, random_params, structure_cases
from layers_protocol_only import protocol_only

DTYPES = [jnp.float64, jnp.float32]


def _net(depth, head, scan=None):
    rng = np.random.default_rng(3 * depth + len(head))
    sizes = [int(n) for n in rng.integers(2, 7, size=depth + 1)]
    if scan:
        sizes = [sizes[0]] + [4] * 4 + [sizes[-1]]
    return jaxbp.mlp(sizes, activation=["sigmoid", "tanh", "gelu"][depth % 3], head=head, scan=scan)


def _oracle_ggn_diagonal(net, params, x, y):
    """diag((1/B) sum_b J_b^T H_b J_b) in theta order: J by jax.jacrev, H by jax.hessian of the head loss."""
    head = net.head_fn
    J = jacrev_theta(net, params, x)  # (B, m, P)
    z = net.apply(params, x)
    t = head.target(jnp.asarray(y), net.m, z.dtype)
    H = jax.vmap(jax.hessian(lambda zb, tb: head.loss(zb[None], tb[None])[0]))(z, t)  # (B, m, m)
    return jnp.einsum("bip,bij,bjp->p", J, H, J) / x.shape[0]


GGN_CASES = structure_cases()


@pytest.mark.parametrize("depth, head, dtype, scan, generic", GGN_CASES)
def test_ggn_diagonal_matches_jacrev_hessian(depth, head, dtype, scan, generic):
    net = _net(depth, head, scan)
    params = random_params(net, depth, dtype)
    x = jax.random.normal(jax.random.key(depth), (5, *net.in_shape), dtype)
    y = random_labels(head, 5, net.m, depth, dtype)
    d = jaxbp.ggn_diagonal(protocol_only(net) if generic else net)(params, x, y)
    assert all(v.dtype == dtype for v in jax.tree.leaves(d))
    assert_rel_close(d, jaxbp.unravel(net, _oracle_ggn_diagonal(net, params, x, y)), dtype, "GGN diag")


@pytest.mark.parametrize("kind", ["prob", "raw"])
def test_ggn_diagonal_softmax_with_probability_labels(kind):
    """H = (1^T y)(diag(s) - s s^T) also when the label rows do not sum to one."""
    net = _net(2, "softmax_ce")
    params = random_params(net, 0, jnp.float64)
    x = jax.random.normal(jax.random.key(0), (4, *net.in_shape), jnp.float64)
    y = random_labels("softmax_ce", 4, net.m, 0, jnp.float64, kind=kind)
    assert_rel_close(jaxbp.ggn_diagonal(net)(params, x, y), jaxbp.unravel(net, _oracle_ggn_diagonal(net, params, x, y)),
                     jnp.float64)


NTK_CASES = [
    pytest.param(depth, dtype, scan, generic, id=f"{jnp.dtype(dtype).name}-d{depth}"
                 + ("-scan" if scan else "") + ("-generic" if generic else ""))
    for dtype in DTYPES
    for depth, scan, generic in [(1, None, False), (2, None, False), (4, None, False), (5, 2, False),
                                 (3, None, True)]
]


@pytest.mark.parametrize("depth, dtype, scan, generic", NTK_CASES)
def test_empirical_ntk_matches_jacrev_products(depth, dtype, scan, generic):
    net = _net(depth, "identity_mse", scan)
    params = random_params(net, depth, dtype)
    x1 = jax.random.normal(jax.random.key(1), (3, *net.in_shape), dtype)
    x2 = jax.random.normal(jax.random.key(2), (5, *net.in_shape), dtype)
    K = jaxbp.empirical_ntk(protocol_only(net) if generic else net)(params, x1, x2)
    assert K.shape == (3, 5, net.m, net.m) and K.dtype == dtype
    J1, J2 = jacrev_theta(net, params, x1), jacrev_theta(net, params, x2)
    assert_rel_close(K, jnp.einsum("bip,cjp->bcij", J1, J2), dtype, "NTK")


@pytest.mark.parametrize("dtype", DTYPES)
def test_empirical_ntk_of_one_sample_is_m_by_m(dtype):
    net = jaxbp.models.two_layer_classifier()
    params = random_params(net, 0, dtype)
    x = jax.random.normal(jax.random.key(0), (2, 4), dtype)
    K = jaxbp.empirical_ntk(net)(params, x[0], x)
    assert K.shape == (2, 3, 3) and K.dtype == dtype
    J0, J1 = jacrev_theta(net, params, x[0]), jacrev_theta(net, params, x[1])  # (m, P) each
    assert_rel_close(jaxbp.empirical_ntk(net)(params, x[0], x[1]), J0 @ J1.T, dtype)
    assert_rel_close(K[1], J0 @ J1.T, dtype)


def test_ntk_rejects_wrong_input_shape_naming_the_input():
    net = jaxbp.models.two_layer_classifier()
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x2: expected shape \(4,\)"):
        jaxbp.empirical_ntk(net)(params, jnp.ones((2, 4)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"x1: expected shape \(4,\)"):
        jaxbp.empirical_ntk(net)(params, jnp.ones((2, 5)), jnp.ones((2, 4)))


def test_empirical_ntk_of_a_network_that_starts_with_a_flatten():
    net = jaxbp.Network((jaxbp.Flatten((2, 3)), jaxbp.Dense(6, 4), jaxbp.Dense(4, 3)), ("identity", "tanh"), "softmax_ce")
    params = random_params(net, 0, jnp.float64)
    x1 = jax.random.normal(jax.random.key(1), (3, 2, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(2), (2, 2, 3), jnp.float64)
    J1, J2 = jacrev_theta(net, params, x1), jacrev_theta(net, params, x2)
    assert_rel_close(jaxbp.empirical_ntk(net)(params, x1, x2), jnp.einsum("bip,cjp->bcij", J1, J2), jnp.float64)
