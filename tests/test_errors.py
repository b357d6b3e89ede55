"""Bad input gets a ValueError/TypeError that names the argument, the expected and the given."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from conftest import TOL

NET = jaxbp.mlp([4, 5, 3])
PARAMS = NET.init(jax.random.key(0))
X = np.ones((6, 4), np.float32)
Y = np.zeros(6, int)


def _entry_points():
    vg, g = jaxbp.value_and_grad_fn(NET), jaxbp.grad_fn(NET)
    return {
        "value_and_grad_fn": lambda p, x, y: vg(p, x, y),
        "grad_fn": lambda p, x, y: g(p, x, y),
        "loss": NET.loss,
        "jax.grad(loss)": jax.grad(NET.loss),
    }


SHAPE_ERRORS = [
    (np.ones((6, 5), np.float32), Y, r"x: expected shape \(4,\).*got \(6, 5\)"),
    (X, np.zeros(5, int), "x holds a batch of 6 samples but y has 5 rows"),
    (X, np.zeros((6, 4)), r"y: head 'softmax_ce' expects.*got shape \(6, 4\)"),
    (X, jnp.zeros((6, 2, 3)), r"got shape \(6, 2, 3\)"),
    (X[:0], Y[:0], r"x: expected at least one sample, got an empty batch of shape \(0, 4\)"),
]
VALUE_ERRORS = [  # label values are checked on host (NumPy) arrays, where it costs no device sync
    (X, np.array([0, 1, 2, 3, 0, 1]), r"values in \[0, 3\).*got values in \[0, 3\]"),
    (X, np.array([0, 1, -1, 2, 0, 1]), r"got values in \[-1, 2\]"),
]


@pytest.mark.parametrize(
    "entry, x, y, match",
    [(e, *c) for e in ["value_and_grad_fn", "grad_fn", "loss", "jax.grad(loss)"] for c in SHAPE_ERRORS]
    + [(e, *c) for e in ["value_and_grad_fn", "grad_fn", "loss"] for c in VALUE_ERRORS],
)
def test_bad_x_or_y(entry, x, y, match):
    with pytest.raises(ValueError, match=match):
        _entry_points()[entry](PARAMS, x, y)


@pytest.mark.parametrize("label", [3, -1, np.int64(3)])
def test_a_host_scalar_label_of_one_sample_is_range_checked(label):
    """One sample's class id given as a Python or NumPy number is on the host like a list: out of
    range it is an error (one_hot would make it a zero row: loss 0, gradient silently 0)."""
    for call in (jaxbp.grad_fn(NET), jaxbp.value_and_grad_fn(NET), NET.loss):
        with pytest.raises(ValueError, match=rf"y: expected class ids .* values in \[0, 3\), got values in \[{label}, {label}\]"):
            call(PARAMS, X[0], label)
    assert np.isfinite(NET.loss(PARAMS, X[0], 2))
    # to rounding only: on a GPU the two sum their products in different orders
    np.testing.assert_allclose(jaxbp.grad_fn(NET)(PARAMS, X[0], 2)[1]["b"],
                               jax.grad(NET.loss)(PARAMS, X[0], 2)[1]["b"], rtol=TOL["float32"])


@pytest.mark.parametrize("y, got", [([0, 1], r"\(1, 2\)"), (np.zeros((1, 3)), r"\(1, 1, 3\)")])
def test_labels_of_one_sample_are_reported_as_given(y, got):
    for call in (jaxbp.grad_fn(NET), NET.loss):
        with pytest.raises(ValueError, match=rf"got shape {got}.*\(x is one sample, so y of shape {re.escape(str(np.shape(y)))} was read"):
            call(PARAMS, X[0], y)


def test_negative_class_weights_are_refused_for_softmax_ce():
    """Label rows are weights of log-probabilities (one-hot, probabilities, any scale): a negative
    one is a mistake, and a row of negative total made the GGN's Hessian factor sqrt(1^T y) NaN."""
    y = np.full((6, 3), 0.5)
    y[2, 1] = -1.5
    for call in (jaxbp.grad_fn(NET), jaxbp.ggn_diagonal(NET), NET.loss, jaxbp.per_example_grads(NET)):
        with pytest.raises(ValueError, match=r"y: head 'softmax_ce' expects .* weights >= 0 .*smallest value of -1.5"):
            call(PARAMS, X, y)
    assert np.isfinite(NET.loss(PARAMS, X, np.abs(y)))


def test_bad_labels_for_sigmoid_and_mse_heads():
    bce = jaxbp.mlp([4, 2], head="sigmoid_bce")
    p = bce.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"targets in \[0, 1\].*got values in \[2.0, 2.0\]"):
        jaxbp.grad_fn(bce)(p, X, np.full((6, 2), 2.0))
    with pytest.raises(ValueError, match=r"sigmoid_bce' expects.*B=6, m=2.*got shape \(6,\)"):
        jaxbp.grad_fn(bce)(p, X, np.zeros(6))
    mse = jaxbp.mlp([4, 2], head="identity_mse")
    with pytest.raises(ValueError, match=r"identity_mse' expects real targets.*got shape \(6, 3\)"):
        jaxbp.grad_fn(mse)(mse.init(jax.random.key(0)), X, np.zeros((6, 3)))


@pytest.mark.parametrize(
    "params, match",
    [
        (PARAMS[:1], r"params: expected a list of 2 per-layer dicts, got list of length 1"),
        ({"W": 1}, r"params: expected a list of 2 per-layer dicts, got dict"),
        ([PARAMS[0], {"W": jnp.zeros((5, 4)), "b": jnp.zeros(3)}], r"params\[1\] \(layer 2\): expected shapes \{'W': \(5, 3\)"),
        ([PARAMS[0], {"W": jnp.zeros((5, 3))}], r"params\[1\].*got \{'W': \(5, 3\)\}"),
    ],
)
def test_params_that_do_not_match_the_network(params, match):
    for call in (lambda: jaxbp.grad_fn(NET)(params, X, Y), lambda: jaxbp.jacobian(NET, params, X),
                 lambda: NET.apply(params, X), lambda: jaxbp.ravel(NET, params)):
        with pytest.raises(ValueError, match=match):
            call()


def test_theta_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"theta: expected a vector of shape \(43,\).*got shape \(42,\)"):
        jaxbp.unravel(NET, jnp.zeros(42))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sizes": []}, r"sizes: expected at least \[n_0, n_1\], got \[\]"),
        ({"sizes": [4]}, r"sizes: expected at least"),
        ({"sizes": [4, 0, 3]}, r"sizes: every width must be a positive int, got \[4, 0, 3\]"),
        ({"sizes": [4, -2]}, r"positive int"),
        ({"sizes": [4, 2.5]}, r"positive int"),
        ({"sizes": [4, 3], "activation": "swish"}, r"activation: unknown activation 'swish'"),
        ({"sizes": [4, 3], "head": "softmax"}, r"head: unknown head 'softmax'; expected one of"),
        ({"sizes": [4, 3], "scan": 1}, r"scan: expected an int >= 2, got 1"),
    ],
)
def test_bad_network_descriptions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxbp.mlp(**kwargs)


def test_network_checks_its_layers():
    with pytest.raises(ValueError, match="layers: expected at least one layer"):
        jaxbp.Network((), (), "softmax_ce")
    with pytest.raises(ValueError, match=r"layer 1 outputs shape \(5,\) but layer 2 expects \(4,\)"):
        jaxbp.Network((jaxbp.Dense(3, 5), jaxbp.Dense(4, 2)), ("relu",), "softmax_ce")
    with pytest.raises(ValueError, match="activations: expected 1 hidden activations"):
        jaxbp.Network((jaxbp.Dense(3, 5), jaxbp.Dense(5, 2)), (), "softmax_ce")
    with pytest.raises(TypeError, match="net: expected a jaxbp.Network, got str"):
        jaxbp.grad_fn("lenet")
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a layer .* with in_shape, .*got int 3"):
        jaxbp.Network((jaxbp.Dense(3, 5), 3), ("relu",), "softmax_ce")
    with pytest.raises(TypeError, match=r"layers\[0\]: expected a layer .*got tuple \(4, 3\)"):
        jaxbp.Network(((4, 3),), (), "softmax_ce")
    assert isinstance(jaxbp.mlp([3, 4, 4, 4, 2], scan=2).layers[1], jaxbp.Stacked)  # a Stacked entry is a layer


@pytest.mark.parametrize("n_in, n_out, bad", [(0, 3, "n_in"), (4, -1, "n_out"), (2.5, 3, "n_in"), (4, True, "n_out"),
                                             (4, "3", "n_out")])
def test_dense_widths_are_positive_ints(n_in, n_out, bad):
    with pytest.raises(ValueError, match=rf"Dense: {bad}: expected a positive int, got {(n_in, n_out)[bad == 'n_out']!r}"):
        jaxbp.Dense(n_in, n_out)


def test_layer_jacobian_arguments():
    with pytest.raises(ValueError, match=r"a: expected a vector of shape \(n_in,\), got shape \(2, 2\)"):
        jaxbp.layer_jacobian(jnp.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="n_out: expected a positive int, got 0"):
        jaxbp.layer_jacobian(jnp.ones(2), 0)
    with pytest.raises(TypeError, match="a: expected a vector of real numbers, got None"):
        jaxbp.layer_jacobian(None, 2)


def test_a_params_entry_that_is_not_a_dict_names_the_layer_and_the_expected_dict():
    bad = [PARAMS[0]["W"], PARAMS[1]]
    for call in (lambda: jaxbp.grad_fn(NET)(bad, X, jnp.asarray(Y)), lambda: NET.loss(bad, X, Y)):
        with pytest.raises(ValueError, match=r"params\[0\] \(layer 1\): expected a dict of arrays .* got an array of shape \(4, 5\)"):
            call()


def test_networks_spelled_with_lists_are_networks_and_a_bare_string_is_not_a_list():
    net = jaxbp.Network([jaxbp.Dense(4, 5), jaxbp.Dense(5, 3)], ["relu"], "softmax_ce")
    assert net == NET and hash(net) == hash(NET)
    np.testing.assert_array_equal(jaxbp.jacobian(net, PARAMS, X), jaxbp.jacobian(NET, PARAMS, X))
    with pytest.raises(TypeError, match="activations: expected a list or tuple, got str 'relu'"):
        jaxbp.Network([jaxbp.Dense(4, 5), jaxbp.Dense(5, 3)], "relu", "softmax_ce")
    for call in (lambda: jaxbp.jacobian("net", PARAMS, X), lambda: jaxbp.ravel("net", PARAMS),
                 lambda: jaxbp.unravel("net", jnp.zeros(43))):
        with pytest.raises(TypeError, match="net: expected a jaxbp.Network, got str"):
            call()


def test_numpy_and_jax_scalars_are_accepted_wherever_a_number_is():
    assert jaxbp.Conv2D((8, 8, 1), np.int64(6), 3).out_channels == 6
    assert jaxbp.Stacked(jaxbp.Dense(3, 3), np.int64(2)).n == 2
    assert jaxbp.Dense(np.int64(4), jnp.array(3)) == jaxbp.Dense(4, 3)
    assert jaxbp.mlp([4, 5, 5, 5, 3], scan=np.int64(2)) == jaxbp.mlp([4, 5, 5, 5, 3], scan=2)
    np.testing.assert_array_equal(jaxbp.layer_jacobian(jnp.ones(2), np.int64(2)), jaxbp.layer_jacobian(jnp.ones(2), 2))
    g = {"w": jnp.arange(1.0, 7.0)}
    for kwargs in ({"sparsity": np.float32(0.5)}, {"k": np.int64(3)}, {"k": jnp.array(3)}):
        updates, _ = jaxbp.sparse.hard_threshold(**kwargs).update(g, None, jax.tree.map(jnp.zeros_like, g))
        assert int(jnp.count_nonzero(updates["w"])) == 3
    for C in (np.float32(1.0), jnp.array(1.0)):
        np.testing.assert_array_equal(jaxbp.clipped_grad_fn(NET, C)(PARAMS, X, Y)[0]["W"],
                                      jaxbp.clipped_grad_fn(NET, 1.0)(PARAMS, X, Y)[0]["W"])
    with pytest.raises(ValueError, match=r"out_channels: expected a positive int, got np.float64\(6.0\)"):
        jaxbp.Conv2D((8, 8, 1), np.float64(6.0), 3)


def test_stacked_rejects_a_layer_without_parameters_or_one_that_changes_the_shape():
    with pytest.raises(ValueError, match="Stacked: AvgPool2D has no parameters, so there is nothing to stack"):
        jaxbp.Stacked(jaxbp.AvgPool2D((4, 4, 1), (1, 1)), 2)
    with pytest.raises(ValueError, match=r"Stacked: the layer must map a shape to itself, got \(4,\) -> \(3,\)"):
        jaxbp.Stacked(jaxbp.Dense(4, 3), 2)


INT_PARAMS = jax.tree.map(lambda v: jnp.round(4 * v).astype(jnp.int32), PARAMS)
LIST_PARAMS = jax.tree.map(lambda v: v.tolist(), PARAMS, is_leaf=lambda v: isinstance(v, jax.Array))


@pytest.mark.parametrize(
    "call, error, match",
    [  # integer params would differentiate to zeros, silently; lists would be flattened into scalars
        (lambda: jaxbp.grad_fn(NET)(INT_PARAMS, X, jnp.asarray(Y)), TypeError,
         r"params\[0\]\['W'\] \(layer 1\): expected a floating-point array, got dtype int32"),
        (lambda: jaxbp.per_example_grads(NET)(INT_PARAMS, X, Y), TypeError, r"floating-point array, got dtype int32"),
        (lambda: NET.apply(INT_PARAMS, X), TypeError, r"floating-point array, got dtype int32"),
        (lambda: jaxbp.grad_fn(NET)(LIST_PARAMS, X, jnp.asarray(Y)), TypeError,
         r"params\[0\]\['W'\] \(layer 1\): expected an array, got list"),
        (lambda: jaxbp.unravel(NET, jnp.ones(43, int)), TypeError, r"theta: expected a floating-point vector, got dtype int"),
        (lambda: jaxbp.grad_fn(NET)(PARAMS, X, None), TypeError, r"y: expected the labels of head 'softmax_ce', got None"),
        (lambda: jaxbp.ggn_diagonal(NET)(PARAMS, X, None), TypeError, r"y: expected the labels"),
        (lambda: jaxbp.grad_fn(NET)(X, PARAMS, jnp.asarray(Y)), TypeError,  # params and x swapped
         r"x: expected an array of real numbers, got dtype object \(the arguments are params, x, y\)"),
        (lambda: jaxbp.grad_fn(NET)(PARAMS, np.full((6, 4), "a"), Y), TypeError, r"x: expected an array of real numbers, got dtype <U1"),
        (lambda: NET.apply(PARAMS, np.ones((6, 4), complex)), TypeError, r"x: expected an array of real numbers, got dtype complex128"),
        (lambda: jaxbp.grad_fn(NET)(PARAMS, "abc", Y), TypeError, r"x: expected an array of real numbers, got dtype <U3"),
        (lambda: NET.apply(PARAMS, [[1.0, 2.0, 3.0, 4.0], [1.0]]), ValueError, r"x: expected an array of numbers, got a ragged"),
        (lambda: jaxbp.empirical_ntk(NET)(PARAMS, X, np.ones((2, 5))), ValueError, r"x2: expected shape \(4,\)"),
        (lambda: NET.init(0), TypeError, r"key: expected one PRNG key such as jax.random.key\(0\), got 0"),
        (lambda: NET.init(jax.random.split(jax.random.key(0))), TypeError, r"key: expected one PRNG key.*shape \(2,\)"),
        (lambda: NET.init(jax.random.key(0), jnp.int32), TypeError, r"dtype: expected a floating-point dtype"),
        (lambda: jaxbp.mlp(784), TypeError, r"sizes: expected a list of widths \[n_0, ..., n_L\], got 784"),
        (lambda: jaxbp.Stacked("dense", 2), TypeError, r"Stacked: layer: expected a layer such as jaxbp.Dense\(n, n\), got 'dense'"),
        (lambda: jaxbp.softmax_jacobian(1.0), ValueError, r"z: expected a vector of logits"),
    ],
)
def test_arguments_of_the_wrong_kind_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_widths_and_keys_of_every_accepted_kind():
    assert jaxbp.mlp(jnp.array([4, 5, 3])) == jaxbp.mlp(np.array([4, 5, 3])) == NET  # 0-d JAX ints are ints
    legacy = NET.init(jax.random.PRNGKey(0))  # a raw uint32 key
    assert jax.tree.map(jnp.shape, legacy) == jax.tree.map(jnp.shape, PARAMS)
    bf16 = NET.init(jax.random.key(0), jnp.bfloat16)
    assert jaxbp.grad_fn(NET)(bf16, X.astype(jnp.bfloat16), Y)[0]["W"].dtype == jnp.bfloat16
