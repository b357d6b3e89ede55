"""Activation Jacobians (Section 3.4) against jax.jacfwd and jax.jacrev."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import assert_rel_close


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("name", sorted(jaxbp.activations.ACTIVATIONS))
def test_activation_jacobian_is_diag_of_derivative(name, dtype):
    act = jaxbp.activations.get(name)
    z = jnp.linspace(-4, 4, 17, dtype=dtype)  # includes 0, the kink of relu / leaky_relu
    J = act.jacobian(z)
    assert_rel_close(J, jax.jacfwd(act.f)(z), dtype, f"{name} vs jacfwd")
    assert_rel_close(J, jax.jacrev(act.f)(z), dtype, f"{name} vs jacrev")
    np.testing.assert_array_equal(J, np.diag(np.diag(J)))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize(
    "name", [n for n, a in sorted(jaxbp.activations.ACTIVATIONS.items()) if a.df_from_f]
)
def test_derivative_from_output_matches_jax_grad(name, dtype):
    act = jaxbp.activations.get(name)
    z = jnp.concatenate([jnp.linspace(-30, 30, 61, dtype=dtype), jnp.array([-1e-3, 1e-3], dtype)])
    expected = jax.vmap(jax.grad(act.f))(z)  # includes 0, the kink of relu
    assert_rel_close(act.df_from_f(act.f(z)), expected, dtype, f"{name}: f' from f(z) vs jax.grad")


def test_relu_and_leaky_relu_derivatives_at_zero_follow_jax():
    relu, leaky = (jaxbp.activations.get(n) for n in ("relu", "leaky_relu"))
    assert relu.df(jnp.zeros(1))[0] == jax.grad(jax.nn.relu)(0.0) == 0.0
    assert leaky.df(jnp.zeros(1))[0] == jax.grad(jax.nn.leaky_relu)(0.0) == 1.0


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_softmax_jacobian_is_diag_s_minus_ssT(dtype):
    z = jax.random.normal(jax.random.key(0), (7,), dtype) * 3
    s = jax.nn.softmax(z)
    J = jaxbp.softmax_jacobian(z)
    assert_rel_close(J, jnp.diag(s) - jnp.outer(s, s), dtype)
    assert_rel_close(J, jax.jacfwd(jax.nn.softmax)(z), dtype)
    zb = jax.random.normal(jax.random.key(1), (3, 5), dtype)
    assert_rel_close(jaxbp.softmax_jacobian(zb), jax.vmap(jax.jacfwd(jax.nn.softmax))(zb), dtype)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu"):
        jaxbp.activations.get("swish")
