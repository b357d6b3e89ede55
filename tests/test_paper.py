"""The paper's worked examples (Sections 3.1-3.3, Tables 1-2), each against JAX autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import assert_jacobian_close, assert_rel_close, jacrev_theta, random_params

F64 = jnp.float64


def printed_block(a: np.ndarray, n_out: int) -> np.ndarray:
    """[a^T 0 .. 0 | 1 0 .. 0; 0 a^T .. 0 | 0 1 .. 0; ...] written entry by entry as printed."""
    n_in = a.shape[0]
    E = np.zeros((n_out, n_in * n_out + n_out))
    for j in range(n_out):
        E[j, j * n_in : (j + 1) * n_in] = a
        E[j, n_in * n_out + j] = 1.0
    return E


def test_layer_jacobian_is_the_printed_block_and_jacrev():
    a = np.array([0.5, -1.0, 2.0, 3.0])
    J = jaxbp.layer_jacobian(jnp.asarray(a), 3)
    np.testing.assert_array_equal(J, printed_block(a, 3))
    net = jaxbp.mlp([4, 3], head="identity_mse")
    params = random_params(net, 0, F64)
    assert_jacobian_close(net, J, jacrev_theta(net, params, jnp.asarray(a)), F64)


def test_one_layer_jacobian_is_3x15_and_gradient_is_J_transpose_yhat_minus_y():
    net = jaxbp.models.one_layer_classifier()  # Fig. 4
    params = random_params(net, 1, F64)
    x = np.array([5.1, 3.5, 1.4, 0.2])  # an Iris setosa
    J = jaxbp.jacobian(net, params, x)
    assert J.shape == (3, 15)
    np.testing.assert_allclose(J, printed_block(x, 3), rtol=0, atol=0)
    y = np.eye(3)[0]
    yhat = net.predict(params, x)
    grad = jaxbp.ravel(net, jaxbp.grad_fn(net)(params, x, y))
    assert_rel_close(grad, J.T @ (yhat - y), F64)  # Eq. (1) with Table 1's y_hat - y
    # erratum 24: that is [I (x) x; I_3](y_hat - y), 15 entries; the printed [I (x) x](y_hat - y) has
    # 12 and drops grad_b l = y_hat - y, the last 3 (nonzero) entries of theta's gradient
    assert grad.shape == (15,) and np.all(np.abs(np.asarray(yhat - y)) > 1e-3)
    assert_rel_close(grad[:12], np.kron(np.eye(3), x[:, None]) @ (yhat - y), F64)
    assert_rel_close(grad[12:], yhat - y, F64)
    assert_rel_close(grad, jaxbp.ravel(net, jax.grad(net.loss)(params, x, y)), F64)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_two_layer_blocks_are_3x18_and_3x25_and_pull_back_grad_z2(activation):
    net = jaxbp.models.two_layer_classifier(activation=activation)  # Fig. 5: 4 -> 5 -> 3
    params = random_params(net, 2, F64)
    x = np.array([6.3, 2.9, 5.6, 1.8])
    J = np.asarray(jaxbp.jacobian(net, params, x))
    assert J.shape == (3, 43)
    W1, b1, W2 = (np.asarray(p) for p in (params[0]["W"], params[0]["b"], params[1]["W"]))
    z1 = x @ W1 + b1
    f = jaxbp.activations.get(activation)
    a1, d1 = np.asarray(f.f(z1)), np.asarray(f.df(z1))
    # theta = [theta_2; theta_1]: first the 3 x 18 block [I (x) a1^T, I] ...
    np.testing.assert_allclose(J[:, :18], printed_block(a1, 3), rtol=1e-12, atol=1e-12)
    # ... then the 3 x 25 block (W2)^T diag(f'(z1)) [I (x) x^T, I]
    expected = W2.T @ np.diag(d1) @ printed_block(x, 5)
    np.testing.assert_allclose(J[:, 18:], expected, rtol=1e-12, atol=1e-12)
    assert_jacobian_close(net, J, jacrev_theta(net, params, x), F64)
    # Section 3.2's gradient (erratum 13): J^T grad_{z^[2]} l(y, f^[2](z^[2])), softmax + CE here
    y = np.eye(3)[2]
    grad_z2 = jax.grad(lambda z: -jnp.sum(y * jax.nn.log_softmax(z)))(net.apply(params, x))
    grad = jaxbp.ravel(net, jaxbp.grad_fn(net)(params, x, y))
    assert_rel_close(grad, J.T @ np.asarray(grad_z2), F64)
    assert_rel_close(grad, jaxbp.ravel(net, jax.grad(net.loss)(params, x, y)), F64)


def test_lenet_300_100_blocks_and_gradient():
    net = jaxbp.models.lenet_300_100()
    assert [layer.size for layer in net.layers] == [784 * 300 + 300, 300 * 100 + 100, 100 * 10 + 10]
    params = random_params(net, 3, F64)
    x = jax.random.uniform(jax.random.key(0), (784,), F64)
    J = jaxbp.jacobian(net, params, x)
    assert J.shape == (10, 1010 + 30100 + 235500)
    assert_jacobian_close(net, J, jacrev_theta(net, params, x), F64)
    # erratum 17: layer 3's block is [I (x) a2^T, I] with no chain factor, layer 2's uses a1
    (W1, b1), (W2, b2), (W3, _) = ((np.asarray(p["W"]), np.asarray(p["b"])) for p in params)
    a1 = np.maximum(np.asarray(x) @ W1 + b1, 0)
    z2 = a1 @ W2 + b2
    a2 = np.maximum(z2, 0)
    np.testing.assert_allclose(J[:, :1010], printed_block(a2, 10), rtol=1e-12, atol=1e-12)
    expected = W3.T @ np.diag((z2 > 0) * 1.0) @ printed_block(a1, 100)
    np.testing.assert_allclose(J[:, 1010:31110], expected, rtol=1e-10, atol=1e-12)
    xb = jax.random.uniform(jax.random.key(1), (16, 784), F64)
    y = np.arange(16) % 10
    assert_rel_close(
        jaxbp.grad_fn(net)(params, xb, y), jax.jit(jax.grad(net.loss))(params, xb, y), F64
    )


@pytest.mark.parametrize("dtype", [F64, jnp.float32])
@pytest.mark.parametrize("head", ["sigmoid_bce", "softmax_ce", "identity_mse"])
def test_table1_closed_forms_match_jax_grad(head, dtype):
    h = jaxbp.heads.get(head)
    z = jax.random.normal(jax.random.key(0), (6, 4), dtype) * 3
    rng = np.random.default_rng(0)
    targets = {
        "sigmoid_bce": rng.integers(0, 2, (6, 4)).astype(float),
        "softmax_ce": rng.random((6, 4)) * 2,  # not normalised: the general (1^T y) y_hat - y
        "identity_mse": rng.normal(size=(6, 4)),
    }[head].astype(dtype)
    t = jnp.asarray(targets)
    ref = jax.grad(lambda z: jnp.sum(h.loss(z, t)))(z)
    assert_rel_close(h.grad_z(z, t), ref, dtype)
    yhat = h.predict(z)
    closed = {
        "sigmoid_bce": yhat - t,
        "softmax_ce": jnp.sum(t, 1, keepdims=True) * yhat - t,
        "identity_mse": -2 * (t - yhat),
    }[head]
    assert_rel_close(closed, ref, dtype)
    if head == "softmax_ce":  # one-hot labels: the paper's -(y - y_hat)
        onehot = jnp.eye(4, dtype=dtype)[jnp.array([0, 3, 1, 2, 2, 0])]
        assert_rel_close(-(onehot - yhat), jax.grad(lambda z: jnp.sum(h.loss(z, onehot)))(z), dtype)
    # the loss itself is Table 1's l(y, y_hat) of y_hat = f^[L](z) (the gradients above fix it only
    # up to a term free of z), and Network.loss is its mean over the batch; the printed formula is
    # evaluated in float64 (in float32 its log(1 - y_hat) would lose the digits jaxbp keeps)
    printed = {
        "sigmoid_bce": lambda t, yh: np.sum(-t * np.log(yh) - (1 - t) * np.log(1 - yh), 1),
        "softmax_ce": lambda t, yh: -np.sum(t * np.log(yh), 1),
        "identity_mse": lambda t, yh: np.sum((t - yh) ** 2, 1),
    }[head]
    y_hat64 = lambda z: np.asarray(h.predict(jnp.asarray(z, F64)))  # noqa: E731
    t64 = np.asarray(targets, np.float64)
    assert_rel_close(h.loss(z, t), printed(t64, y_hat64(z)), dtype)
    net = jaxbp.mlp([3, 4], head=head)
    params, x = random_params(net, 0, dtype), jax.random.normal(jax.random.key(1), (6, 3), dtype)
    loss = net.loss(params, x, targets)
    assert loss.dtype == dtype
    assert_rel_close(loss, np.mean(printed(t64, y_hat64(net.apply(params, x)))), dtype)


@pytest.mark.parametrize(
    "make, sigmoid",
    [
        (jaxbp.models.simple_linear_regression, False),
        (jaxbp.models.simple_binary_classifier, True),
        (lambda: jaxbp.models.multiple_linear_regression(5), False),
        (lambda: jaxbp.models.logistic_regression(5), True),
    ],
)
@pytest.mark.parametrize("dtype", [F64, jnp.float32])
def test_table2_gradients(make, sigmoid, dtype):
    """Table 2 (sign corrected): MSE gives -2 [x; 1](y - y_hat), BCE gives -[x; 1](y - y_hat)."""
    net = make()
    params = random_params(net, 4, dtype)
    n = net.in_shape[0]
    x = np.linspace(-1.0, 2.0, n).astype(dtype)
    y = np.array([1.0], dtype)
    # the closed form in float64, from the same (float32-rounded) numbers
    w, b = np.asarray(params[0]["W"], np.float64)[:, 0], float(params[0]["b"][0])
    x64 = x.astype(np.float64)
    lin = w @ x64 + b
    yhat = 1 / (1 + np.exp(-lin)) if sigmoid else lin
    closed = (-1.0 if sigmoid else -2.0) * np.append(x64, 1.0) * (float(y[0]) - yhat)
    theta_grad = jaxbp.ravel(net, jaxbp.grad_fn(net)(params, x, y))
    assert theta_grad.dtype == dtype
    assert_rel_close(theta_grad, closed, dtype, "closed form")
    assert_rel_close(theta_grad, jaxbp.ravel(net, jax.grad(net.loss)(params, x, y)), dtype, "jax.grad")


def test_relu_jacobian_removes_rows_of_the_next_weight_matrix():
    """Section 3.4: (W2)^T diag(relu'(z1)) zeros the columns of W2^T (rows of W2) where z1 <= 0."""
    net = jaxbp.mlp([4, 6, 3], activation="relu")
    params = random_params(net, 5, F64)
    x = np.array([1.0, -2.0, 0.5, 3.0])
    z1 = x @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"])
    J1 = np.asarray(jaxbp.jacobian(net, params, x))[:, 3 * 6 + 3 :]  # layer 1's 3 x 30 block
    dead = np.flatnonzero(z1 <= 0)
    assert dead.size > 0
    for j in dead:  # column block of unit j (its 4 weights and its bias) is zero
        assert not J1[:, j * 4 : (j + 1) * 4].any() and not J1[:, 24 + j].any()
