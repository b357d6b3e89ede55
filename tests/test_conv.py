"""Section 3.5: convolution as a Toeplitz matrix multiply, and CNNs under Algorithm 1.

Oracles: `jax.lax.conv_general_dilated` for Props. 2-3, and `jax.grad` / `jax.jacrev` of the
same networks written independently with lax convolutions and `lax.reduce_window` pooling.
"""

from __future__ import annotations

import pathlib

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from hypothesis import assume, given, settings
from jax import lax

import jaxbp
from helpers import assert_jacobian_close, assert_rel_close, random_params
from jaxbp.toeplitz import conv_geometry

DN = ("NHWC", "HWIO", "NHWC")
DTYPES = [jnp.float64, jnp.float32]


def lax_conv(X, K, stride, padding):
    """The oracle conv of one HWC image (strings or explicit pads, as lax takes them)."""
    stride = (stride, stride) if isinstance(stride, int) else stride
    return lax.conv_general_dilated(X[None], K, stride, padding, dimension_numbers=DN)[0]


# -- Prop. 2: the Toeplitz matrix ---------------------------------------------------------


def test_paper_3x3_2x2_example_is_4x9_with_rows_3_and_4_corrected():
    k1, k2, k3, k4 = 2.0, 3.0, 5.0, 7.0
    T = np.asarray(jaxbp.toeplitz(jnp.array([[k1, k2], [k3, k4]]), (3, 3)))
    expected = np.array(
        [
            [k1, k2, 0, k3, k4, 0, 0, 0, 0],  # (0,0): k1 x1 + k2 x2 + k3 x4 + k4 x5
            [0, k1, k2, 0, k3, k4, 0, 0, 0],  # (0,1): k1 x2 + k2 x3 + k3 x5 + k4 x6
            [0, 0, 0, k1, k2, 0, k3, k4, 0],  # (1,0): k1 x4 + k2 x5 + k3 x7 + k4 x8
            [0, 0, 0, 0, k1, k2, 0, k3, k4],  # (1,1): k1 x5 + k2 x6 + k3 x8 + k4 x9
        ]
    )
    assert T.shape == (4, 9)
    for r in range(4):
        for c in range(9):
            assert T[r, c] == expected[r, c], (r, c)
    X = np.arange(1.0, 10.0).reshape(3, 3)  # x1..x9 row by row: Vec(X^T)
    ref = lax_conv(X[..., None], jnp.array([[k1, k2], [k3, k4]])[..., None, None], 1, "VALID")
    np.testing.assert_array_equal(T @ X.reshape(-1), np.asarray(ref).reshape(-1))


def test_convolution_is_cross_correlation_not_flipped():
    K = jnp.array([[1.0, 0.0], [0.0, 0.0]])  # picks the top-left pixel of each window
    X = jnp.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(jaxbp.toeplitz(K, (3, 3)) @ X.reshape(-1), [0.0, 1.0, 3.0, 4.0])


def test_toeplitz_is_doubly_block_toeplitz_not_diagonal_constant_and_stride_subsamples_rows():
    """Erratum 21: block (i, r) of T(K), output row i against input row r, depends on r - i only
    and is itself diagonal-constant, while T(K) as a whole is not; stride 2 keeps every 2nd row."""
    H, W, kh, kw = 5, 6, 3, 2
    K = jnp.asarray(np.random.default_rng(3).normal(size=(kh, kw)))
    T = np.asarray(jaxbp.toeplitz(K, (H, W)))
    Ho, Wo = H - kh + 1, W - kw + 1
    blocks = T.reshape(Ho, Wo, H, W).transpose(0, 2, 1, 3)  # (Ho, H) grid of (Wo, W) blocks
    for i in range(Ho):
        for r in range(H):
            np.testing.assert_array_equal(blocks[i, r], blocks[0, r - i] if r >= i else 0)
            B = blocks[i, r]
            assert all(B[a, c] == B[a + 1, c + 1] for a in range(Wo - 1) for c in range(W - 1))
    assert T[Wo - 1, Wo - 1] != T[Wo, Wo]  # across a block boundary the diagonal changes
    T2 = np.asarray(jaxbp.toeplitz(K, (H, W), stride=2))
    np.testing.assert_array_equal(T2, T.reshape(Ho, Wo, -1)[::2, ::2].reshape(-1, H * W))


def test_an_int_in_padding_pads_both_sides_of_its_dimension():
    """padding (1, 2) is ((1, 1), (2, 2)), as Flax reads it: against lax with the explicit pads."""
    K = jnp.asarray(np.random.default_rng(5).normal(size=(3, 2)))
    X = jnp.asarray(np.random.default_rng(6).normal(size=(4, 5)))
    assert conv_geometry(K.shape, X.shape, 1, (1, 2)).pads == ((1, 1), (2, 2))
    ref = lax_conv(X[..., None], K[..., None, None], 1, ((1, 1), (2, 2)))
    T = jaxbp.toeplitz(K, X.shape, 1, (1, 2))
    np.testing.assert_allclose(T @ X.reshape(-1), np.asarray(ref).reshape(-1), rtol=1e-12)


paddings = st.one_of(
    st.sampled_from(["VALID", "SAME"]),
    st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.tuples(st.integers(0, 2), st.integers(0, 2))),
)


@settings(max_examples=40, deadline=None)
@given(
    hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    stride=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=paddings,
    seed=st.integers(0, 2**16),
)
def test_toeplitz_and_patches_match_lax_conv(hw, k, cin, cout, stride, padding, seed):
    pads = [(0, 0)] * 2 if padding == "VALID" else padding
    assume(padding == "SAME" or all(k[d] <= hw[d] + sum(pads[d]) for d in range(2)))
    rng = np.random.default_rng(seed)
    X, K = rng.normal(size=(*hw, cin)), rng.normal(size=(*k, cin, cout))
    ref = np.asarray(lax_conv(X, K, stride, padding))
    T = jaxbp.toeplitz(K, X.shape, stride, padding)
    assert T.shape == (ref.size, X.size)
    np.testing.assert_allclose(T @ X.reshape(-1), ref.reshape(-1), rtol=1e-12, atol=1e-12)
    P = jaxbp.patches(X, K.shape, stride, padding)
    np.testing.assert_allclose(P @ K.reshape(-1, cout), ref.reshape(-1, cout), rtol=1e-12, atol=1e-12)


def test_single_channel_shapes_are_the_one_channel_case():
    rng = np.random.default_rng(0)
    K, X = rng.normal(size=(3, 2)), rng.normal(size=(5, 6))
    T2 = jaxbp.toeplitz(K, (5, 6), 2, "SAME")
    np.testing.assert_array_equal(T2, jaxbp.toeplitz(K[..., None, None], (5, 6, 1), (2, 2), "SAME"))
    ref = lax_conv(X[..., None], K[..., None, None], 2, "SAME")
    np.testing.assert_allclose(T2 @ X.reshape(-1), np.asarray(ref).reshape(-1), rtol=1e-12)


def test_toeplitz_is_differentiable_in_the_kernel():
    """T(K) is linear in K: J_K (T(K) x) is the patches matrix, im2col(X)."""
    rng = np.random.default_rng(1)
    X, K = rng.normal(size=(5, 4, 2)), rng.normal(size=(2, 3, 2, 3))
    J = jax.jacobian(lambda K: jaxbp.toeplitz(K, X.shape, 1, "SAME") @ X.reshape(-1))(K)
    P = np.asarray(jaxbp.patches(X, K.shape, 1, "SAME"))  # (HoWo, kh kw C_in)
    expected = np.einsum("pq,rs->prqs", P, np.eye(3)).reshape(-1, *K.shape[:3], 3)
    np.testing.assert_allclose(J.reshape(expected.shape), expected, rtol=0, atol=1e-14)


def test_plot_toeplitz_writes_a_png(tmp_path):
    path = jaxbp.plot_toeplitz(jnp.array([[1.0, 2.0], [3.0, 4.0]]), (3, 3), tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_toeplitz_of_an_mnist_sized_filter_keeps_a_pixel_per_entry_in_a_bounded_image(tmp_path):
    """One 5x5 filter on a 28x28 image: T(K) is 576 x 784. Drawn at the small case's 35 pixels an
    entry the figure took ~9 GB; it is now about 2,000 pixels a side, at least one per entry. A path
    without a suffix gets ".png" (the file matplotlib writes), in folders made as needed."""
    K = jax.random.normal(jax.random.key(0), (5, 5, 1, 1))
    path = jaxbp.plot_toeplitz(K, (28, 28, 1), tmp_path / "new" / "folder" / "pattern")
    assert path == tmp_path / "new" / "folder" / "pattern.png" and path.is_file()
    with PIL.Image.open(path) as image:
        width, height = image.size
    assert 784 <= width <= 2600 and 576 <= height <= 2600, (width, height)


def test_plot_toeplitz_refuses_a_matrix_too_large_to_draw_before_building_it():
    K = jnp.ones((3, 3, 1, 6))
    with pytest.raises(ValueError, match=r"T\(K\) would be 57624 x 10000.*smaller input_shape"):
        jaxbp.plot_toeplitz(K, (100, 100, 1), "never_written.png")
    assert not pathlib.Path("never_written.png").exists()


# -- Prop. 3: r filters with biases as one dense layer --------------------------------------


@pytest.mark.parametrize("stride,padding", [(1, "VALID"), (2, "SAME"), ((1, 2), ((1, 0), (2, 1)))])
def test_prop3_r_filters_with_biases_are_one_dense_layer(stride, padding):
    rng = np.random.default_rng(2)
    r, shape = 4, (6, 5, 2)
    X, K, b = rng.normal(size=shape), rng.normal(size=(3, 3, 2, r)), rng.normal(size=r)
    W, bvec = jaxbp.conv_to_dense(K, b, shape, stride, padding)
    ref = np.asarray(lax_conv(X, K, stride, padding)) + b[None, None]
    assert W.shape == (X.size, ref.size) and bvec.shape == (ref.size,)
    np.testing.assert_allclose(W.T @ X.reshape(-1) + bvec, ref.reshape(-1), rtol=1e-12, atol=1e-12)
    for i in range(r):  # filter by filter: W_i = Teop(K_i)^T, b_i = Vec(B_i)
        Wi = jaxbp.toeplitz(K[..., i : i + 1], shape, stride, padding).T
        np.testing.assert_array_equal(W[:, i::r], Wi)
        np.testing.assert_array_equal(bvec[i::r], np.full(ref[..., i].size, b[i]))


# -- Conv2D: the three maps of the chain are the explicit matrices ---------------------------


@pytest.mark.parametrize(
    "shape,k,stride,padding",
    [((7, 6, 2), (3, 3), 1, "VALID"), ((7, 6, 2), (3, 2), 2, "SAME"), ((8, 7, 3), (2, 3), (3, 2), ((2, 1), (0, 2))),
     ((5, 5, 1), (5, 5), 1, "SAME"), ((7, 7, 1), (2, 2), 2, "VALID")],
)
def test_conv2d_maps_are_T_x_T_transpose_delta_and_im2col_transpose_delta(shape, k, stride, padding):
    layer = jaxbp.Conv2D(shape, 3, k, stride, padding)
    p = jax.tree.map(lambda t: t + 0.1, layer.init(jax.random.key(0), jnp.float64))
    rng = np.random.default_rng(3)
    B = 2
    a, delta = rng.normal(size=(B, *shape)), rng.normal(size=(B, *layer.out_shape))
    T = jaxbp.toeplitz(p["K"], shape, stride, padding)
    _, bvec = jaxbp.conv_to_dense(p["K"], p["b"], shape, stride, padding)
    flat = lambda t: t.reshape(B, -1)
    np.testing.assert_allclose(flat(layer.apply(p, a)), flat(a) @ T.T + bvec[None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(flat(layer.vjp_input(p, a, delta)), flat(delta) @ T, rtol=1e-12, atol=1e-12)
    g = layer.vjp_params(p, a, delta)
    dK = sum(jaxbp.patches(a[i], k + shape[2:] + (3,), stride, padding).T @ delta[i].reshape(-1, 3) for i in range(B))
    np.testing.assert_allclose(g["K"], dK.reshape(p["K"].shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g["b"], delta.sum((0, 1, 2)), rtol=1e-12)


def test_conv2d_patches_are_an_exact_copy_whatever_the_default_matmul_precision():
    """The im2col of per-example gradients and Jacobian rows is a copy of the activations: lax
    builds it as a convolution with one-hot filters, which at a backend's default precision
    (TF32 on GPUs, bfloat16 passes on TPUs) would round them. On CPU the numbers cannot show it,
    so the lowered program is checked too."""
    layer = jaxbp.Conv2D((6, 5, 2), 3, (3, 2), 2, "SAME")
    a = jax.random.normal(jax.random.key(0), (2, 6, 5, 2)) * 1.2345678
    with jax.default_matmul_precision("bfloat16"):
        P = jax.jit(layer._patches)(a)
        hlo = jax.jit(layer._patches).lower(a).as_text()
    want = [jaxbp.patches(a[i], (3, 2, 2, 3), 2, "SAME") for i in range(2)]
    np.testing.assert_array_equal(P, np.stack(want))
    (conv,) = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
    assert "precision_config = [#stablehlo<precision HIGHEST>" in conv, conv


def test_conv2d_theta_is_filter_by_filter_then_biases():
    layer = jaxbp.Conv2D((4, 4, 2), 3, (2, 2))
    K = jnp.arange(24.0).reshape(2, 2, 2, 3)
    p = {"K": K, "b": jnp.array([-1.0, -2.0, -3.0])}
    theta = layer.ravel(p)
    assert theta.shape == (layer.size,) == (27,)
    np.testing.assert_array_equal(theta[:8], K[..., 0].reshape(-1))  # filter 1, (kh, kw, C_in) row-major
    np.testing.assert_array_equal(theta[16:24], K[..., 2].reshape(-1))
    np.testing.assert_array_equal(theta[24:], p["b"])
    back = layer.unravel(theta)
    np.testing.assert_array_equal(back["K"], K)
    np.testing.assert_array_equal(back["b"], p["b"])


# -- CNNs under Algorithm 1 vs the oracle ----------------------------------------------------
# A network is a list of specs; `build` makes the jaxbp Network, `oracle` the same network
# written directly with lax (its own padding words and strides, never jaxbp's resolved ones).


def build(in_shape, specs, acts, m):
    layers, shape = [], tuple(in_shape)
    for spec in specs:
        kind, *args = spec
        layer = {
            "conv": lambda: jaxbp.Conv2D(shape, *args),
            "max": lambda: jaxbp.MaxPool2D(shape, *args),
            "avg": lambda: jaxbp.AvgPool2D(shape, *args),
            "flatten": lambda: jaxbp.Flatten(shape),
            "dense": lambda: jaxbp.Dense(shape[0], *args),
        }[kind]()
        layers.append(layer)
        shape = layer.out_shape
    layers.append(jaxbp.Dense(shape[0], m))
    return jaxbp.Network(tuple(layers), tuple(acts), "softmax_ce")


def oracle(specs, acts, params, x):
    fs = {"relu": jax.nn.relu, "tanh": jnp.tanh, "identity": lambda z: z, "sigmoid": jax.nn.sigmoid}
    a = x
    for (kind, *args), p, act in zip(specs, params, acts):
        if kind == "conv":
            stride = args[2] if len(args) > 2 else 1
            stride = (stride, stride) if isinstance(stride, int) else stride
            padding = args[3] if len(args) > 3 else "VALID"
            a = lax.conv_general_dilated(a, p["K"], stride, padding, dimension_numbers=DN) + p["b"][None, None, None]
        elif kind in ("max", "avg"):
            w = args[0]
            s = args[1] if len(args) > 1 else w
            init, op = (-jnp.inf, lax.max) if kind == "max" else (0.0, lax.add)
            a = lax.reduce_window(a, init, op, (1, *w, 1), (1, *s, 1), "VALID")
            a = a if kind == "max" else a / (w[0] * w[1])
        elif kind == "flatten":
            a = a.reshape(a.shape[0], -1)
        else:
            a = a @ p["W"] + p["b"][None]
        a = fs[act](a)
    return a @ params[-1]["W"] + params[-1]["b"][None]


def oracle_loss(specs, acts, params, x, y):
    z = oracle(specs, acts, params, x)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])


CNNS = {
    "conv-max-flatten": (
        (8, 8, 2),
        [("conv", 3, (3, 3)), ("max", (2, 2)), ("flatten",), ("dense", 5)],
        ["relu", "identity", "identity", "tanh"],
    ),
    "strided-same-avg-overlap": (
        (9, 7, 1),
        [("conv", 4, (3, 2), 2, "SAME"), ("avg", (2, 2), (1, 1)), ("conv", 2, (2, 2), 1, ((1, 0), (0, 1))),
         ("flatten",)],
        ["tanh", "identity", "sigmoid", "identity"],
    ),
    "two-convs-max-stride": (
        (10, 10, 3),
        [("conv", 4, (3, 3), 1, "SAME"), ("max", (3, 3), (2, 2)), ("conv", 3, (2, 2), (2, 1)), ("flatten",)],
        ["relu", "identity", "relu", "identity"],
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CNNS))
def test_cnn_grad_fn_matches_jax_grad_of_lax_conv_network(name, dtype):
    in_shape, specs, acts = CNNS[name]
    net = build(in_shape, specs, acts, 4)
    params = random_params(net, 5, dtype)
    x = jax.random.normal(jax.random.key(6), (5, *in_shape), dtype)
    y = jnp.array([0, 1, 2, 3, 1])
    loss, grads = jaxbp.value_and_grad_fn(net)(params, x, y)
    ref_loss, ref = jax.jit(jax.value_and_grad(lambda p: oracle_loss(specs, acts, p, x, y)))(params)
    assert_rel_close(loss, ref_loss, dtype, "loss")
    assert_rel_close(grads, ref, dtype, name)
    assert all(g.dtype == dtype for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CNNS))
def test_cnn_jacobian_matches_jacrev_in_theta_order(name, dtype):
    in_shape, specs, acts = CNNS[name]
    net = build(in_shape, specs, acts, 3)
    params = random_params(net, 7, dtype)
    x = jax.random.normal(jax.random.key(8), (2, *in_shape), dtype)
    J = jaxbp.jacobian(net, params, x)
    assert J.shape == (2, 3, net.n_params) and J.dtype == dtype
    theta = jaxbp.ravel(net, params)
    assert theta.dtype == dtype
    ref = jax.jit(jax.jacrev(lambda th: oracle(specs, acts, jaxbp.unravel(net, th), x)))(theta)
    assert_jacobian_close(net, J, ref, dtype, name)


def test_lenet5_gradient_matches_jax_grad():
    net = jaxbp.models.lenet5()
    assert net.n_params == 61706
    specs = [("conv", 6, (5, 5), 1, "SAME"), ("max", (2, 2)), ("conv", 16, (5, 5)), ("max", (2, 2)),
             ("flatten",), ("dense", 120), ("dense", 84)]
    acts = ["relu", "identity", "relu", "identity", "identity", "relu", "relu"]
    assert build((28, 28, 1), specs, acts, 10) == net
    params = random_params(net, 0, jnp.float32)
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1), jnp.float32)
    y = jnp.array([3, 1, 4])
    loss, grads = jaxbp.value_and_grad_fn(net)(params, x, y)
    ref_loss, ref = jax.jit(jax.value_and_grad(lambda p: oracle_loss(specs, acts, p, x, y)))(params)
    assert_rel_close(loss, ref_loss, jnp.float32, "loss")
    assert_rel_close(grads, ref, jnp.float32, "lenet5")


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["min", None, ["max"], {"max": 1}])
def test_lenet5_pool_must_be_max_or_avg(pool):
    """An unhashable pool (a YAML list in model.args) is named like any other wrong value, not a
    bare 'unhashable type' TypeError."""
    with pytest.raises(ValueError, match=r"pool: expected 'max' or 'avg', got"):
        jaxbp.models.lenet5(pool=pool)


@pytest.mark.parametrize(
    "K_shape,input_shape,stride,padding,match",
    [
        ((4, 4), (3, 3), 1, "VALID", r"K: kernel larger.*4 x 4.*\(3, 3\)"),
        ((2, 6), (5, 5), 1, ((0, 0), (0, 0)), r"K: kernel larger.*2 x 6.*\(5, 5\)"),
        ((3, 3, 2, 4), (5, 5, 3), 1, "VALID", r"channel mismatch.*\(3, 3, 2, 4\).*\(5, 5, 3\)"),
        ((3, 3), (5, 5), 0, "VALID", r"stride.*0"),
        ((3, 3), (5, 5), (1, -1), "VALID", r"stride.*-1"),
        ((3, 3), (5, 5), 1, "FULL", r"padding.*'FULL'"),
        ((3, 3), (5, 5), 1, ((1, -1), (0, 0)), r"padding"),
        ((3, 3), (5, 5), 1, {"top": 1}, r"padding: expected .* got \{'top': 1\}"),
        ((3, 3), (5, 5), np.array([1, 2, 3]), "VALID", r"stride: .* got array\(\[1, 2, 3\]\)"),
        ((3, 3, 1), (5, 5), 1, "VALID", r"K: .*\(3, 3, 1\)"),
        ((3, 3), (5,), 1, "VALID", r"input_shape.*\(5,\)"),
    ],
)
def test_bad_input_raises_value_error_naming_shapes(K_shape, input_shape, stride, padding, match):
    with pytest.raises(ValueError, match=match):
        jaxbp.toeplitz(jnp.ones(K_shape), input_shape, stride, padding)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="in_shape"):
        jaxbp.Conv2D((28, 28), 6, (5, 5))
    with pytest.raises(ValueError, match="out_channels"):
        jaxbp.Conv2D((28, 28, 1), 0, (5, 5))
    with pytest.raises(ValueError, match=r"kernel_size: kernel larger.*4 x 4.*\(3, 3, 1\)"):
        jaxbp.Conv2D((3, 3, 1), 2, (4, 4))
    with pytest.raises(ValueError, match="stride"):
        jaxbp.Conv2D((5, 5, 1), 2, (2, 2), stride=0)
    with pytest.raises(ValueError, match="padding.*'FULL'"):
        jaxbp.Conv2D((5, 5, 1), 2, (2, 2), padding="FULL")
    with pytest.raises(ValueError, match=r"window: kernel larger.*4 x 4.*in_shape = \(3, 3, 2\)"):
        jaxbp.MaxPool2D((3, 3, 2), (4, 4))
    with pytest.raises(ValueError, match="b: expected"):
        jaxbp.conv_to_dense(jnp.ones((2, 2, 1, 3)), jnp.ones(2), (4, 4, 1))
    assert conv_geometry((3, 3), (5, 5), 2, "same").out_shape == (3, 3, 1)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: jaxbp.toeplitz(jnp.ones((3, 3)), (5.5, 5)), r"input_shape: expected .* ints, got \(5\.5, 5\)"),
        (lambda: jaxbp.toeplitz(jnp.ones((3, 3)), 5), r"input_shape: expected .* ints, got 5"),
        (lambda: jaxbp.toeplitz(jnp.ones((3, 3)), None), r"input_shape: expected .* ints, got None"),
        (lambda: jaxbp.patches(jnp.ones((5, 5)), (2.5, 3)), r"kernel_shape: expected .* ints, got \(2\.5, 3\)"),
        (lambda: jaxbp.patches(jnp.ones((5, 5)), 3), r"kernel_shape: expected .* ints, got 3"),
        (lambda: jaxbp.patches(jnp.ones(5), (3, 3)), r"X: expected \(H, W\) or \(H, W, C_in\) .* got \(5,\)"),
        (lambda: jaxbp.Conv2D(28, 6, 5), r"in_shape: expected \(H, W, C_in\) .* got 28"),
        (lambda: jaxbp.Conv2D((28, 28.5, 1), 6, 5), r"in_shape: .* got \(28, 28\.5, 1\)"),
        (lambda: jaxbp.Conv2D((28, None, 1), 6, 5), r"in_shape: .* got \(28, None, 1\)"),
        (lambda: jaxbp.MaxPool2D(28, 2), r"in_shape: expected \(H, W, C\) .* got 28"),
        (lambda: jaxbp.Flatten(28), r"in_shape: .* got 28"),
        (lambda: jaxbp.Flatten((5, -1)), r"in_shape: .* got \(5, -1\)"),
        (lambda: jaxbp.Flatten((2.5, 2)), r"in_shape: .* got \(2\.5, 2\)"),
        (lambda: jaxbp.Flatten(()), r"in_shape: .* got \(\)"),
    ],
    ids=["toeplitz-float", "toeplitz-int", "toeplitz-None", "patches-float", "patches-int", "patches-1d",
         "conv-int", "conv-float", "conv-None", "pool-int", "flatten-int", "flatten-negative", "flatten-float",
         "flatten-empty"],
)
def test_shapes_must_be_positive_ints_neither_truncated_nor_a_type_error(call, match):
    """A float size is refused, not truncated (28.5 -> 28 built a layer for another input), and a
    non-iterable or None shape is a ValueError naming the argument, not a bare TypeError."""
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jaxbp.toeplitz(None, (3, 3)), r"K: expected a kernel array of real numbers, got None"),
        (lambda: jaxbp.toeplitz("ab", (3, 3)), r"K: .* got 'ab'"),
        (lambda: jaxbp.toeplitz([[1, 2], [3]], (3, 3)), r"K: .* got \[\[1, 2\], \[3\]\]"),
        (lambda: jaxbp.toeplitz([[1.0, 2.0], [3.0]] * 20, (3, 3)), r"K: .* got a list that is no array \(ragged\?\)"),
        (lambda: jaxbp.toeplitz(np.ones((2, 2), complex), (3, 3)), r"K: .* got dtype complex128"),
        (lambda: jaxbp.toeplitz(np.ones((2, 2), object), (3, 3)), r"K: .* got dtype object"),
        (lambda: jaxbp.patches(None, (2, 2)), r"X: expected an image array of real numbers, got None"),
        (lambda: jaxbp.conv_to_dense(np.ones((2, 2)), "b", (3, 3)), r"b: expected a bias vector of real numbers, got 'b'"),
    ],
    ids=["toeplitz-None", "toeplitz-str", "toeplitz-ragged", "toeplitz-long-ragged", "toeplitz-complex",
         "toeplitz-object", "patches-None", "conv_to_dense-str"],
)
def test_arrays_that_are_not_real_numbers_are_a_type_error_naming_the_argument(call, match):
    """Not a bare JAX conversion error (which names no argument)."""
    with pytest.raises(TypeError, match=match):
        call()


def test_integer_shapes_of_numpy_and_jax_are_accepted():
    X, K = np.arange(20.0).reshape(4, 5), jnp.array([[1.0, -2.0], [0.5, 3.0]])
    ref = np.asarray(lax_conv(X[..., None], K[..., None, None], 1, "VALID")).reshape(-1)
    for shape in [(np.int64(4), np.int32(5)), (jnp.array(4), jnp.array(5)), np.array([4, 5])]:
        np.testing.assert_allclose(jaxbp.toeplitz(K, shape) @ X.reshape(-1), ref, rtol=1e-12)
    assert jaxbp.Flatten((np.int64(2), jnp.array(3))).in_shape == (2, 3)
    layer = jaxbp.Conv2D((np.int64(4), 5, 1), 1, 2)
    assert layer.in_shape == (4, 5, 1) and all(type(d) is int for d in layer.in_shape)


def test_kernel_size_and_window_errors_name_them_and_jax_ints_and_numpy_pairs_are_accepted():
    """A kernel_size or window below 1 is named as given (not as the HWIO kernel "K" built from
    it), and 0-d JAX ints count as ints here as everywhere in jaxbp (`_checks`)."""
    with pytest.raises(ValueError, match=r"kernel_size: expected an int or a pair of ints >= 1, got \(0, 3\)"):
        jaxbp.Conv2D((8, 8, 1), 2, (0, 3))
    with pytest.raises(ValueError, match=r"window: expected an int or a pair of ints >= 1, got -2"):
        jaxbp.MaxPool2D((8, 8, 1), -2)
    assert jaxbp.Conv2D((8, 8, 1), 2, jnp.array(3), stride=jnp.array(2)) == jaxbp.Conv2D((8, 8, 1), 2, 3, 2)
    assert jaxbp.AvgPool2D((8, 8, 1), (jnp.array(2), 2)).out_shape == (4, 4, 1)
    assert jaxbp.Conv2D((8, 8, 1), 2, np.array([3, 2]), stride=np.array([2, 1]), padding=np.array([[1, 0], [0, 1]])) \
        == jaxbp.Conv2D((8, 8, 1), 2, (3, 2), (2, 1), ((1, 0), (0, 1)))
    K, X = jnp.arange(9.0).reshape(3, 3), jnp.arange(25.0).reshape(5, 5)
    T = jaxbp.toeplitz(K, (5, 5), jnp.array(2), ((jnp.array(1), 0), (0, 1)))
    ref = lax_conv(X[..., None], K[..., None, None], 2, ((1, 0), (0, 1)))
    np.testing.assert_allclose(T @ X.reshape(-1), np.asarray(ref).reshape(-1), rtol=1e-12)


def test_max_pool_ties_go_to_the_first_maximum_in_jaxbp_and_in_jax_grad_of_the_network():
    """At a tie both jaxbp's Jacobian and jax.grad of jaxbp's own network pick the first argmax,
    as jax.grad of `lax.reduce_window` does (jnp.max would split the gradient between the ties)."""
    specs, acts = [("conv", 1, (1, 1)), ("max", (2, 2)), ("flatten",)], ["identity"] * 3
    net = build((2, 2, 2), specs, acts, 2)
    params = random_params(net, 0, jnp.float64)
    params[0] = {"K": jnp.ones((1, 1, 2, 1)), "b": jnp.zeros(1)}
    x = jnp.array([[[1.0, 2.0], [2.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])[None]  # two pixels convolve to 3
    y = jnp.array([1])
    ref = jax.grad(lambda p: oracle_loss(specs, acts, p, x, y))(params)
    assert_rel_close(jaxbp.grad_fn(net)(params, x, y), ref, jnp.float64)
    assert_rel_close(jax.grad(net.loss)(params, x, y), ref, jnp.float64)
