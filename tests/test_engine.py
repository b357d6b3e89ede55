"""Algorithm 1 against the oracles: grad_fn vs jax.grad, jacobian vs jax.jacrev, finite differences."""

from __future__ import annotations

import importlib

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxbp
from jaxbp.jacobian import _jitted
from helpers import assert_jacobian_close, assert_rel_close, count_traces, jacrev_theta, random_labels, random_params

HEADS = ["softmax_ce", "sigmoid_bce", "identity_mse"]
ACTS = ["relu", "tanh", "sigmoid", "leaky_relu", "softplus", "gelu", "identity"]
DTYPES = [jnp.float64, jnp.float32]


def _net(depth: int, seed: int, activation: str, head: str, scan=None):
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 9, size=depth + 1)]
    return jaxbp.mlp(sizes, activation=activation, head=head, scan=scan)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_grad_fn_matches_jax_grad(depth, head, dtype):
    for activation in (ACTS[(depth + len(head)) % len(ACTS)],):
        net = _net(depth, depth * 7 + len(head), activation, head)
        params = random_params(net, depth, dtype)
        x = jax.random.normal(jax.random.key(depth), (5, *net.in_shape), dtype)
        y = random_labels(head, 5, net.m, depth, dtype)
        loss, grads = jaxbp.value_and_grad_fn(net)(params, x, y)
        ref_loss, ref_grads = jax.jit(jax.value_and_grad(net.loss))(params, x, y)
        assert_rel_close(grads, ref_grads, dtype, f"{activation}/{head}/depth {depth}")
        assert_rel_close(loss, ref_loss, dtype, "loss")
        assert all(g.dtype == dtype for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_jacobian_matches_jacrev_in_theta_order(depth, head, dtype):
    for activation in (ACTS[(2 * depth + len(head)) % len(ACTS)],):
        net = _net(depth, depth * 3 + len(head), activation, head)
        params = random_params(net, depth + 1, dtype)
        x = jax.random.normal(jax.random.key(depth), (4, *net.in_shape), dtype)
        J = jaxbp.jacobian(net, params, x)
        assert J.shape == (4, net.m, net.n_params) and J.dtype == dtype
        assert_jacobian_close(net, J, jacrev_theta(net, params, x), dtype, f"{activation}/{head}")
        J1 = jaxbp.jacobian(net, params, x[0])  # one sample: (m, P)
        assert_rel_close(J1, J[0], dtype, "single sample")


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=5),
    run=st.integers(0, 3),
    at=st.integers(0, 5),
    activation=st.sampled_from(ACTS),
    head=st.sampled_from(HEADS),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    scan=st.sampled_from([None, 2]),
)
def test_random_architectures_match_autodiff(sizes, run, at, activation, head, batch, seed, scan):
    """Against jax.grad / jax.jacrev of the unrolled network with the same theta, so that with
    scan=2 (runs of identical layers folded into Stacked entries, anywhere before the head) the
    oracle does not share jaxbp's scanned forward. `run` repeats one width to make such a run."""
    i = at % len(sizes)
    sizes = sizes[:i] + [sizes[i]] * run + sizes[i:]
    net, plain = jaxbp.mlp(sizes, activation, head, scan), jaxbp.mlp(sizes, activation, head)
    params = random_params(net, seed, jnp.float64)
    listed = jaxbp.unravel(plain, jaxbp.ravel(net, params))
    x = jax.random.normal(jax.random.key(seed), (batch, sizes[0]), jnp.float64)
    y = random_labels(head, batch, net.m, seed, jnp.float64)
    assert_rel_close(
        jaxbp.ravel(net, jaxbp.grad_fn(net)(params, x, y)),
        jaxbp.ravel(plain, jax.jit(jax.grad(plain.loss))(listed, x, y)),
        jnp.float64,
    )
    assert_jacobian_close(net, jaxbp.jacobian(net, params, x), jacrev_theta(plain, listed, x), jnp.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "activation,n_0,stacked",
    [pytest.param(a, 6, 6, id=a) for a in ["tanh", "relu", "softplus", "gelu", "leaky_relu"]]
    + [pytest.param(a, 5, 7, id=f"{a}-input-layer-stacked") for a in ["tanh", "gelu"]],  # f' from a, f' saved
)
def test_stacked_scan_matches_unrolled_and_autodiff(dtype, activation, n_0, stacked):
    """A deep uniform stack folded with lax.scan (mlp(..., scan=2)) gives the same numbers,
    whether f' is saved (gelu, leaky_relu) or taken from the saved outputs (the others), and
    whether a plain layer comes first or the scan starts at the input."""
    sizes = [n_0] + [5] * 7 + [3]
    scanned, plain = jaxbp.mlp(sizes, activation=activation, scan=2), jaxbp.mlp(sizes, activation=activation)
    assert [layer.n for layer in scanned.layers if isinstance(layer, jaxbp.Stacked)] == [stacked]
    params = random_params(scanned, 3, dtype)
    listed = jaxbp.unravel(plain, jaxbp.ravel(scanned, params))  # same theta, per-layer params
    x = jax.random.normal(jax.random.key(0), (4, n_0), dtype)
    y = np.array([0, 1, 2, 1])
    g = jaxbp.grad_fn(scanned)(params, x, y)
    assert_rel_close(g, jax.grad(scanned.loss)(params, x, y), dtype, "scanned vs jax.grad")
    assert_rel_close(
        jaxbp.ravel(scanned, g), jaxbp.ravel(plain, jax.grad(plain.loss)(listed, x, y)), dtype
    )
    assert_jacobian_close(plain, jaxbp.jacobian(scanned, params, x), jacrev_theta(plain, listed, x), dtype)
    assert_jacobian_close(plain, jaxbp.jacobian(scanned, params, x[0]), jacrev_theta(plain, listed, x[0]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_one_write_of_outer_pieces_used_off_cpu_matches_jacrev(monkeypatch, dtype):
    """On GPU and TPU `jaxbp.jacobian` writes each Outer piece (a (x) delta) in one update of
    J rather than block by block (`jax.lax.platform_dependent`); here the CPU takes that path too,
    on a network with plain and scanned Dense layers (offsets static and traced)."""
    engine = importlib.import_module("jaxbp.jacobian")
    monkeypatch.setattr(engine, "_write_blocks", engine._write_dense)
    engine._jacobian.clear_cache()
    try:
        sizes = [6, 4, 4, 4, 4, 3]
        net, plain = jaxbp.mlp(sizes, activation="tanh", scan=2), jaxbp.mlp(sizes, activation="tanh")
        params = random_params(net, 5, dtype)
        listed = jaxbp.unravel(plain, jaxbp.ravel(net, params))
        x = jax.random.normal(jax.random.key(1), (3, 6), dtype)
        assert_jacobian_close(plain, jaxbp.jacobian(net, params, x), jacrev_theta(plain, listed, x), dtype)
        assert_jacobian_close(plain, jaxbp.jacobian(net, params, x[0]), jacrev_theta(plain, listed, x[0]), dtype)
    finally:
        engine._jacobian.clear_cache()  # no dense-write programs left for later tests


def test_gradient_matches_finite_differences():
    """A second, independent oracle: central differences of the loss along random directions."""
    net = jaxbp.mlp([4, 6, 5, 3], activation="tanh", head="softmax_ce")
    params = random_params(net, 0, jnp.float64)
    x = jax.random.normal(jax.random.key(1), (7, 4), jnp.float64)
    y = np.array([0, 1, 2, 2, 1, 0, 1])
    theta = jaxbp.ravel(net, params)
    g = jaxbp.ravel(net, jaxbp.grad_fn(net)(params, x, y))
    f = lambda th: net.loss(jaxbp.unravel(net, th), x, y)  # noqa: E731
    for k in range(5):
        v = jax.random.normal(jax.random.key(10 + k), theta.shape, jnp.float64)
        eps = 1e-5
        fd = (f(theta + eps * v) - f(theta - eps * v)) / (2 * eps)
        np.testing.assert_allclose(float(g @ v), float(fd), rtol=1e-7)


def test_grad_fns_compile_once_per_net_and_shape_even_when_made_anew_for_each_call(monkeypatch):
    net = jaxbp.models.two_layer_classifier()
    params = net.init(jax.random.key(0), jnp.float32)
    x = np.ones((8, 4), np.float32)
    traces = count_traces(monkeypatch, "jaxbp.jacobian", "_value_and_grad")  # grad_fn's too
    _jitted.clear_cache()
    for y in (np.zeros(8, int), np.ones(8, int)):  # `jaxbp.grad_fn(net)(...)` inline, as with jax.grad
        jaxbp.value_and_grad_fn(net)(params, x, y)
        jaxbp.grad_fn(net)(params, x, y)
    assert len(traces) == 2  # one trace each, for the first y only
    jaxbp.grad_fn(net)(params, x[:4], y[:4])  # a new shape is a new trace
    assert len(traces) == 3


def test_large_logits_give_finite_loss_and_gradient():
    """Losses are computed from z with logsumexp / softplus, so |z| = 1500 stays finite."""
    for head, W, y in [
        ("softmax_ce", [[500.0, -500.0, 0.0], [0.0, 0.0, 0.0]], np.array([1])),
        ("sigmoid_bce", [[500.0], [0.0]], np.array([[0.0]])),
    ]:
        net = jaxbp.mlp([2, len(W[0])], head=head)
        params = [{"W": jnp.array(W), "b": jnp.zeros(len(W[0]))}]
        x = jnp.array([[3.0, -3.0]])
        loss, grads = jaxbp.value_and_grad_fn(net)(params, x, y)
        assert np.isfinite(loss) and loss >= 1500
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        assert_rel_close(grads, jax.grad(net.loss)(params, x, y), jnp.float64)


def test_python_lists_are_inputs_and_labels_like_arrays():
    net = jaxbp.mlp([4, 5, 3])
    params = net.init(jax.random.key(0))
    x, y = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -1.0, 3.0]], [0, 2]
    expected = jax.grad(net.loss)(params, jnp.array(x), jnp.array(y))
    assert_rel_close(jaxbp.grad_fn(net)(params, x, y), expected, jnp.float32)
    with pytest.raises(ValueError, match=r"got values in \[0, 3\]"):
        jaxbp.grad_fn(net)(params, x, [0, 3])


def test_integer_one_hot_rows_are_one_hot_rows():
    net = jaxbp.mlp([4, 5, 3])
    params = net.init(jax.random.key(0))
    x, y = jax.random.normal(jax.random.key(1), (6, 4)), jnp.array([0, 2, 1, 1, 0, 2])
    for rows in (jax.nn.one_hot(y, 3, dtype=jnp.int32), np.eye(3, dtype=np.int64)[np.asarray(y)]):
        assert_rel_close(jaxbp.grad_fn(net)(params, x, rows), jax.grad(net.loss)(params, x, y), jnp.float32)


@pytest.mark.parametrize("first", ["dense", "flatten"])
def test_gradients_come_in_the_dtype_of_their_parameters(first):
    """As jax.grad returns cotangents in their primal's dtype, for mixed and low precision params."""
    layers = [jaxbp.Dense(6, 5), jaxbp.Dense(5, 3)]
    net = jaxbp.Network(([jaxbp.Flatten((2, 3))] if first == "flatten" else []) + layers,
                        ["identity"] * (first == "flatten") + ["tanh"], "softmax_ce")
    params = net.init(jax.random.key(0))
    params[-2] = jax.tree.map(lambda v: v.astype(jnp.bfloat16), params[-2])
    x = jax.random.normal(jax.random.key(1), (4, *net.in_shape))
    y = jnp.array([0, 2, 1, 1])
    ref = jax.grad(net.loss)(params, x, y)
    for got in (jaxbp.grad_fn(net)(params, x, y), jaxbp.clipped_grad_fn(net, 1e6)(params, x, y),
                jaxbp.ggn_diagonal(net)(params, x, y),
                jax.tree.map(lambda v: v[0], jaxbp.per_example_grads(net)(params, x, y))):
        assert jax.tree.map(lambda v: v.dtype, got) == jax.tree.map(lambda v: v.dtype, ref)
    np.testing.assert_allclose(np.asarray(jaxbp.grad_fn(net)(params, x, y)[-1]["W"], np.float32),
                               np.asarray(ref[-1]["W"], np.float32), rtol=2e-2, atol=2e-3)
