"""Per-example gradients, their norms and the clipped mean gradient against vmap(jax.grad)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.jacobian import _jitted
from helpers import assert_rel_close, by_example, count_traces, random_labels, random_params, structure_cases
from layers_protocol_only import protocol_only

B = 6


def _case(depth: int, head: str, dtype, scan=None, generic=False, label_kind="int"):
    rng = np.random.default_rng(depth + len(head))
    sizes = [int(n) for n in rng.integers(2, 8, size=depth + 1)]
    if scan:
        sizes = [sizes[0]] + [5] * 4 + [sizes[-1]]
    net = jaxbp.mlp(sizes, activation=["tanh", "relu", "softplus"][depth % 3], head=head, scan=scan)
    params = random_params(net, depth, dtype)
    x = jax.random.normal(jax.random.key(depth), (B, *net.in_shape), dtype)
    y = random_labels(head, B, net.m, depth, dtype, kind=label_kind)
    return (protocol_only(net) if generic else net), net, params, x, y


def _oracle_per_example_grads(net, params, x, y):
    """vmap of jax.grad of each example's own loss (a batch of one)."""
    one = lambda p, xb, yb: net.loss(p, xb[None], yb[None])  # noqa: E731
    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, jnp.asarray(y))


def _oracle_norms(grads):
    return jnp.sqrt(sum(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1) for v in jax.tree.leaves(grads)))


CASES = structure_cases()


@pytest.mark.parametrize("depth, head, dtype, scan, generic", CASES)
def test_per_example_grads_match_vmapped_jax_grad(depth, head, dtype, scan, generic):
    net, plain, params, x, y = _case(depth, head, dtype, scan, generic)
    g = jaxbp.per_example_grads(net)(params, x, y)
    assert_rel_close(by_example(g), by_example(_oracle_per_example_grads(plain, params, x, y)), dtype, "per-example grads")
    assert all(v.dtype == dtype and v.shape[0] == B for v in jax.tree.leaves(g))
    # their mean is the batch gradient
    assert_rel_close(jax.tree.map(lambda v: jnp.mean(v, axis=0), g), jax.grad(plain.loss)(params, x, y), dtype)


@pytest.mark.parametrize("depth, head, dtype, scan, generic", CASES)
def test_per_example_norms_match_norms_of_vmapped_grads(depth, head, dtype, scan, generic):
    net, plain, params, x, y = _case(depth, head, dtype, scan, generic)
    norms = jaxbp.per_example_grad_norms(net)(params, x, y)
    assert norms.shape == (B,) and norms.dtype == dtype
    assert_rel_close(list(norms), list(_oracle_norms(_oracle_per_example_grads(plain, params, x, y))), dtype, "norms")


@pytest.mark.parametrize("depth, head, dtype, scan, generic", CASES)
def test_clipped_mean_gradient_matches_clipping_vmapped_grads(depth, head, dtype, scan, generic):
    net, plain, params, x, y = _case(depth, head, dtype, scan, generic)
    ref = _oracle_per_example_grads(plain, params, x, y)
    norms = np.asarray(_oracle_norms(ref))
    C = float(np.median(norms))  # about half the examples are clipped
    c = np.minimum(1.0, C / norms)
    expected = jax.tree.map(lambda v: jnp.tensordot(jnp.asarray(c, v.dtype), v, axes=1) / B, ref)
    assert_rel_close(jaxbp.clipped_grad_fn(net, C)(params, x, y), expected, dtype, "clipped")
    # a clip norm above every norm gives the plain gradient
    assert_rel_close(jaxbp.clipped_grad_fn(net, 2 * float(norms.max()))(params, x, y),
                     jax.grad(plain.loss)(params, x, y), dtype, "unclipped")


def test_probability_labels_with_mass_not_one():
    """softmax_ce with label rows not summing to one: l_b's gradient is (1^T y_b) y_hat_b - y_b."""
    net, plain, params, x, y = _case(2, "softmax_ce", jnp.float64, label_kind="raw")
    assert_rel_close(by_example(jaxbp.per_example_grads(net)(params, x, y)),
                     by_example(_oracle_per_example_grads(plain, params, x, y)), jnp.float64)


def test_per_example_functions_trace_once_per_shape(monkeypatch):
    net = jaxbp.models.two_layer_classifier()
    params = net.init(jax.random.key(0), jnp.float32)
    traces = count_traces(monkeypatch, "jaxbp.per_example", "_deltas_from_losses")  # each of the three calls it
    _jitted.clear_cache()
    for make in (jaxbp.per_example_grads, jaxbp.per_example_grad_norms, lambda net: jaxbp.clipped_grad_fn(net, 1.0)):
        for y in (np.zeros(8, int), np.ones(8, int)):
            make(net)(params, np.ones((8, 4), np.float32), y)
    jaxbp.clipped_grad_fn(net, 2.0)(params, np.ones((8, 4), np.float32), y)  # the clip norm is an argument
    assert len(traces) == 3


def test_clip_norm_may_be_traced_in_the_callers_jit_and_vmap():
    """An adaptive clip norm C lives in the jitted step; against clipping vmapped jax.grad."""
    net, plain, params, x, y = _case(2, "softmax_ce", jnp.float64)
    ref = _oracle_per_example_grads(plain, params, x, y)
    norms = np.asarray(_oracle_norms(ref))
    Cs = np.quantile(norms, [0.25, 0.75])
    clipped = lambda C: jaxbp.clipped_grad_fn(net, C)(params, x, jnp.asarray(y))  # noqa: E731
    got = [jax.jit(clipped)(Cs[0]), jax.tree.map(lambda v: v[1], jax.vmap(clipped)(jnp.asarray(Cs)))]
    for C, g in zip(Cs, got):
        c = np.minimum(1.0, C / norms)
        assert_rel_close(g, jax.tree.map(lambda v: jnp.tensordot(jnp.asarray(c), v, axes=1) / B, ref), jnp.float64)


@pytest.mark.parametrize("bad", [0, -1.0, "1", None, True, pytest.param(10**400, id="10**400")])
def test_clipped_grad_fn_rejects_bad_max_norm(bad):
    with pytest.raises(ValueError, match="max_norm"):
        jaxbp.clipped_grad_fn(jaxbp.mlp([2, 2]), bad)
