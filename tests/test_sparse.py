"""Iterative hard thresholding: the thresholded step is H_k(theta - eta g), bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxbp
from helpers import random_labels, random_params


def _setup(dtype=jnp.float32):
    net = jaxbp.mlp([6, 8, 5, 3], activation="tanh")
    params = random_params(net, 0, dtype)
    x = jax.random.normal(jax.random.key(1), (10, 6), dtype)
    y = random_labels("softmax_ce", 10, 3, 0, dtype)
    return net, params, jaxbp.grad_fn(net)(params, x, y)


def _step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("k", [1, 17, 60, 119])  # P = 119
def test_global_threshold_keeps_exactly_the_k_largest(k, dtype):
    net, params, grads = _setup(dtype)
    dense = _step(optax.sgd(0.1), params, grads)  # theta - eta g, unthresholded
    sparse = _step(optax.chain(optax.sgd(0.1), jaxbp.sparse.hard_threshold(k=k)), params, grads)
    d, s = np.asarray(jaxbp.ravel(net, dense)), np.asarray(jaxbp.ravel(net, sparse))
    keep = np.zeros(d.size, bool)
    keep[np.argsort(-np.abs(d), kind="stable")[:k]] = True
    assert np.count_nonzero(s) == k
    np.testing.assert_array_equal(s[keep], d[keep])  # bit for bit
    np.testing.assert_array_equal(s[~keep], 0)


def test_a_schedule_raises_the_sparsity_through_inject_hyperparams():
    """Gradual pruning: sparsity traced from optax's hyperparameter state, 0.5 then 0.8, inside
    jit; each step keeps n - floor(s n) entries, the largest of theta - eta g (numpy's sort)."""
    net, params, grads = _setup(jnp.float64)
    tx = optax.chain(optax.sgd(0.1), optax.inject_hyperparams(jaxbp.sparse.hard_threshold)(sparsity=0.5))
    state = tx.init(params)

    @jax.jit
    def step(p, state):
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    p = params
    for s, kept in ((0.5, net.n_params - net.n_params // 2), (0.8, net.n_params - 8 * net.n_params // 10)):
        state[1].hyperparams["sparsity"] = jnp.asarray(s)
        d = np.asarray(jaxbp.ravel(net, p)) - 0.1 * np.asarray(jaxbp.ravel(net, grads))
        p, state = step(p, state)
        keep = np.zeros(d.size, bool)
        keep[np.argsort(-np.abs(d), kind="stable")[:kept]] = True
        np.testing.assert_allclose(np.asarray(jaxbp.ravel(net, p)), np.where(keep, d, 0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 400), levels=st.sampled_from([3, 50, 0]), data=st.data())
def test_threshold_selects_like_a_stable_sort(dtype, seed, n, levels, data):
    """Against numpy's stable argsort of -|v|: ties (few distinct levels), +-0, +-inf, tiny values.

    (Not subnormals: XLA on CPU flushes them to zero in the step's arithmetic, p + u.)"""
    rng = np.random.default_rng(seed)
    v = rng.integers(-levels, levels + 1, n) / 7 if levels else rng.standard_normal(n)
    special = [0.0, -0.0, np.inf, -np.inf, 1e-30, -2e-30]
    v[rng.random(n) < 0.1] = rng.choice(special)
    v = np.asarray(jnp.asarray(v, dtype)).astype(np.float64)  # the values as dtype holds them
    k = data.draw(st.integers(1, n), label="k")
    step = jax.jit(lambda p, g: _step(jaxbp.sparse.hard_threshold(k=k), p, g))  # one compile, not 100 ops
    new = step([{"v": jnp.zeros(n, dtype)}], [{"v": jnp.asarray(v, dtype)}])
    keep = np.zeros(n, bool)
    keep[np.argsort(-np.abs(v), kind="stable")[:k]] = True
    got = np.asarray(new[0]["v"]).astype(np.float64)
    np.testing.assert_array_equal(got[keep], v[keep])
    assert np.count_nonzero(got[~keep]) == 0


def test_sparsity_fraction_and_layer_scope():
    net, params, grads = _setup()
    for scope in ("global", "layer"):
        new = _step(optax.chain(optax.sgd(0.1), jaxbp.sparse.hard_threshold(0.9, scope=scope)), params, grads)
        dense = _step(optax.sgd(0.1), params, grads)
        sizes = [v.size for v in jax.tree.leaves(new)]
        kept = [np.count_nonzero(v) for v in jax.tree.leaves(new)]
        if scope == "global":
            assert sum(kept) == sum(sizes) - 9 * sum(sizes) // 10
        else:
            assert kept == [n - 9 * n // 10 for n in sizes]
            for v, w in zip(jax.tree.leaves(new), jax.tree.leaves(dense)):
                v, w = np.asarray(v).ravel(), np.asarray(w).ravel()
                assert np.abs(w[v == 0]).max(initial=0) <= np.abs(w[v != 0]).min()


def test_iht_training_stays_sparse_and_lowers_the_loss():
    """Mini-batch stochastic IHT: the optax step unchanged, grads from jaxbp."""
    net = jaxbp.mlp([6, 16, 3], activation="tanh")
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 6))
    y = np.asarray(jnp.argmax(x[:, :3], axis=1))
    tx = optax.chain(optax.sgd(0.5), jaxbp.sparse.hard_threshold(0.5))
    state, grad = tx.init(params), jaxbp.grad_fn(net)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    loss0 = net.loss(params, x, y)
    for _ in range(100):
        params, state = step(params, state)
    assert net.loss(params, x, y) < 0.5 * loss0
    assert np.count_nonzero(jaxbp.ravel(net, params)) == net.n_params - int(0.5 * net.n_params)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsity_zeroes_the_floor_of_the_fraction_as_written(scope):
    """0.29 of 100 entries zeroes 29 of them, though 0.29 * 100 is 28.999999999999996 in floats."""
    v = jnp.arange(1.0, 101.0, dtype=jnp.float64)[::-1]
    new = _step(jaxbp.sparse.hard_threshold(0.29, scope=scope), {"v": jnp.zeros(100)}, {"v": v})
    np.testing.assert_array_equal(new["v"], np.where(np.asarray(v) > 29, v, 0))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("sparsity, kept", [(0.29, 71), (0.7, 30), (0.9, 10)])
def test_injected_sparsity_zeroes_the_fraction_as_written_eagerly_and_under_jit(sparsity, kept, dtype):
    """optax.inject_hyperparams holds the sparsity as an array of its hyperparam_dtype, concrete in
    an eager update and traced under jit: float32(0.9) is 0.8999999761581421 and 0.29 * 100 is
    28.999999999999996 in float64, yet every way of giving s keeps the 100 - 100 s entries s means."""
    p, g = {"v": jnp.zeros(100, dtype)}, {"v": jnp.arange(100.0, 0.0, -1.0, dtype=dtype)}
    tx = optax.inject_hyperparams(jaxbp.sparse.hard_threshold, hyperparam_dtype=dtype)(sparsity=sparsity)
    state = tx.init(p)
    plain = jaxbp.sparse.hard_threshold(np.dtype(dtype).type(sparsity))
    for updates in (tx.update(g, state, p)[0], jax.jit(tx.update)(g, state, p)[0], plain.update(g, None, p)[0]):
        np.testing.assert_array_equal(optax.apply_updates(p, updates)["v"], np.where(g["v"] > 100 - kept, g["v"], 0))


def test_k_above_the_number_of_entries_is_an_error():
    """k > P would silently train dense; k = P keeps every entry."""
    net, params, grads = _setup()
    tx = jaxbp.sparse.hard_threshold(k=net.n_params + 1)
    for call in (lambda: tx.init(params), lambda: tx.update(grads, optax.EmptyState(), params)):
        match = f"k: expected at most the {net.n_params} entries of params, got {net.n_params + 1}"
        with pytest.raises(ValueError, match=match):
            call()
    dense = _step(optax.identity(), params, grads)
    np.testing.assert_array_equal(jaxbp.ravel(net, _step(jaxbp.sparse.hard_threshold(k=net.n_params), params, grads)),
                                  jaxbp.ravel(net, dense))


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"), ({"sparsity": 0.5, "k": 3}, "exactly one"), ({"sparsity": 1.0}, "sparsity"),
    ({"k": 0}, "k:"), ({"sparsity": 0.5, "scope": "leaf"}, "scope"), ({"k": 3, "scope": "layer"}, "k:"),
    pytest.param({"sparsity": 10**400}, "sparsity", id="sparsity=10**400"),
])
def test_hard_threshold_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxbp.sparse.hard_threshold(**kwargs)


def test_update_without_params_and_init_without_arrays_are_errors():
    tx = jaxbp.sparse.hard_threshold(0.5)
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)}))
    with pytest.raises(ValueError, match="params holds no arrays"):
        tx.init({})


@pytest.mark.parametrize("params", [{"v": jnp.ones(3)}, {"w": jnp.ones(4)}, {"w": jnp.ones((3, 1))}],
                         ids=["other-key", "other-length", "other-shape"])
def test_updates_that_do_not_match_params_are_an_error_showing_both(params):
    tx = jaxbp.sparse.hard_threshold(0.5)
    with pytest.raises(ValueError, match=r"updates and params must match .* got shapes \{'w': \(3,\)\} and"):
        tx.update({"w": jnp.ones(3)}, tx.init(params), params)
