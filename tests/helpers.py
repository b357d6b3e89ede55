"""Shared test helpers: random networks and parameters, and the oracle comparisons."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp

TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}


def random_params(net: jaxbp.Network, seed: int, dtype):
    """Initial params with every entry (biases too) perturbed, so no block is trivially zero."""
    params = net.init(jax.random.key(seed), dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(
        tree, [p + 0.3 * jax.random.normal(k, p.shape, dtype) for p, k in zip(leaves, keys)]
    )


def random_labels(head: str, batch: int, m: int, seed: int, dtype, kind: str = "int"):
    """Labels of the head's kind: class ids / probability rows, {0,1}, or real targets."""
    rng = np.random.default_rng(seed)
    if head == "softmax_ce":
        if kind == "int":
            return rng.integers(0, m, size=batch)
        p = rng.random((batch, m))
        return (p / p.sum(1, keepdims=True)).astype(dtype) if kind == "prob" else p.astype(dtype)
    if head == "sigmoid_bce":
        return rng.integers(0, 2, size=(batch, m)).astype(dtype)
    return rng.normal(size=(batch, m)).astype(dtype)


def assert_rel_close(actual, expected, dtype, what: str = "") -> None:
    """max |actual - expected| <= tol * max |expected| (tol by dtype), leaf by leaf."""
    tol = TOL[jnp.dtype(dtype).type]
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape, (what, a.shape, e.shape)
        scale = max(np.max(np.abs(e)), 1e-30)
        err = np.max(np.abs(a - e)) / scale
        assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def count_traces(monkeypatch, module: str, name: str) -> list:
    """Wrap function `name` of `module` (called once each time a jitted caller is traced) so that
    every call is recorded: a trace count that does not depend on jit's C++ dispatch cache, an LRU
    of 8192 entries that JAX shares with every jitted function of the process (with more alive, a
    new function's entries are not kept, so its `_cache_size()` says nothing about retracing)."""
    mod = importlib.import_module(module)
    calls, real = [], getattr(mod, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, counted)
    return calls


def by_example(tree) -> list:
    """A batched pytree (leading axis B on every leaf) as B pytrees, one per example, so that
    `assert_rel_close` holds each example's values to the tolerance at that example's own scale."""
    n = {np.shape(v)[0] for v in jax.tree.leaves(tree)}
    assert len(n) == 1, f"leaves disagree on the batch size: {n}"
    return [jax.tree.map(lambda v, b=b: v[b], tree) for b in range(n.pop())]


def assert_jacobian_close(net: jaxbp.Network, J, J_ref, dtype, what: str = "") -> None:
    """J against J_ref, both (..., P) in theta order, parameter array by parameter array: each row
    is unravelled like theta, so every block (a bias, a layer far from the output) is held to the
    tolerance relative to its own largest entry, not to the largest entry of the whole of J."""
    rows = jax.vmap(lambda t: jaxbp.unravel(net, t))
    flat = lambda j: jnp.reshape(jnp.asarray(j), (-1, net.n_params))  # noqa: E731
    assert np.shape(J) == np.shape(J_ref), (what, np.shape(J), np.shape(J_ref))
    assert_rel_close(rows(flat(J)), rows(flat(J_ref)), dtype, what)


def jacrev_theta(net: jaxbp.Network, params, x):
    """The oracle J_theta z^[L]: jax.jacrev of net.apply through unravel, in theta order."""
    theta = jaxbp.ravel(net, params)
    return jax.jit(jax.jacrev(lambda th: net.apply(jaxbp.unravel(net, th), x)))(theta)


def structure_cases(heads=("softmax_ce", "sigmoid_bce", "identity_mse")) -> list:
    """pytest params (depth, head, dtype, scan, generic) over heads x dtypes x network structures:
    shallow, deeper, a scanned Stacked run, and layers offering only the plain layer protocol."""
    return [
        pytest.param(depth, head, dtype, scan, generic, id=f"{head}-{jnp.dtype(dtype).name}-d{depth}"
                     + ("-scan" if scan else "") + ("-generic" if generic else ""))
        for head in heads
        for dtype in (jnp.float64, jnp.float32)
        for depth, scan, generic in [(1, None, False), (3, None, False), (5, 2, False), (2, None, True)]
    ]
