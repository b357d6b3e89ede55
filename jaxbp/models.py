"""The networks of the paper, ready to use.

Table 2's four classic models are one-layer networks with a single output; Fig. 4 and Fig. 5
are the Iris classifiers of Sections 3.1-3.2; Section 3.3's three-layer network is LeNet-300-100
(LeCun et al. 1998: 300 hidden units, then 100; the paper calls it "LeNet-100-300").
Section 3.5's convolutional layers give LeNet-5 (`lenet5`).
"""

from __future__ import annotations

from jaxbp.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D
from jaxbp.network import Network, mlp


def simple_linear_regression() -> Network:
    """Table 2: y_hat = w x + b, l = (y - y_hat)^2, theta = [w; b] in R^2."""
    return mlp([1, 1], head="identity_mse")


def simple_binary_classifier() -> Network:
    """Table 2: y_hat = sigma(w^T x + b) for x in R^2, BCE loss, theta = [w_1; w_2; b] in R^3."""
    return mlp([2, 1], head="sigmoid_bce")


def multiple_linear_regression(n: int) -> Network:
    """Table 2: y_hat = w^T x + b for x in R^n, l = (y - y_hat)^2, theta in R^(n+1)."""
    return mlp([n, 1], head="identity_mse")


def logistic_regression(n: int) -> Network:
    """Table 2: y_hat = sigma(w^T x + b) for x in R^n, BCE loss, theta in R^(n+1)."""
    return mlp([n, 1], head="sigmoid_bce")


def one_layer_classifier(n_features: int = 4, n_classes: int = 3) -> Network:
    """Fig. 4: a single softmax layer, 4 features -> 3 classes (J_theta z is 3 x 15)."""
    return mlp([n_features, n_classes], head="softmax_ce")


def two_layer_classifier(
    n_features: int = 4, n_hidden: int = 5, n_classes: int = 3, activation: str = "relu"
) -> Network:
    """Fig. 5: 4 -> 5 -> 3 with a softmax head (blocks 3 x 18 and 3 x 25)."""
    return mlp([n_features, n_hidden, n_classes], activation=activation, head="softmax_ce")


def lenet_300_100(activation: str = "relu") -> Network:
    """Section 3.3: 784 -> 300 -> 100 -> 10 with a softmax head (LeCun et al. 1998)."""
    return mlp([784, 300, 100, 10], activation=activation, head="softmax_ce")


def lenet5(activation: str = "relu", pool: str = "max") -> Network:
    """Section 3.5: LeNet-5 (LeCun et al. 1998) on 28 x 28 x 1 MNIST (NHWC), softmax head.

    conv 5x5x6 (SAME) -> pool 2x2 -> conv 5x5x16 (VALID) -> pool 2x2 -> flatten -> 120 -> 84 -> 10:
    (28, 28, 1) -> (28, 28, 6) -> (14, 14, 6) -> (10, 10, 16) -> (5, 5, 16) -> 400 -> 120 -> 84 -> 10,
    61,706 parameters. A documented variant of the original: SAME padding on the first
    convolution stands in for LeCun's 32 x 32 zero-padded input, C3 connects every S2 map (no
    partial connection table), `activation` (default ReLU) follows each convolution and hidden
    Dense layer instead of the scaled tanh, `pool` is "max" (default) or "avg" (the original's
    subsampling without its trainable coefficient), and the RBF output layer is a Dense layer
    with softmax cross-entropy.

    >>> lenet5().n_params
    61706
    """
    pools = {"max": MaxPool2D, "avg": AvgPool2D}
    if not isinstance(pool, str) or pool not in pools:  # `in` hashes: a YAML list would raise TypeError
        raise ValueError(f"pool: expected 'max' or 'avg', got {pool!r}")
    Pool = pools[pool]
    c1 = Conv2D((28, 28, 1), 6, (5, 5), padding="SAME")
    s2 = Pool(c1.out_shape, (2, 2))
    c3 = Conv2D(s2.out_shape, 16, (5, 5))
    s4 = Pool(c3.out_shape, (2, 2))
    flat = Flatten(s4.out_shape)
    layers = (c1, s2, c3, s4, flat, Dense(flat.out_shape[0], 120), Dense(120, 84), Dense(84, 10))
    acts = (activation, "identity", activation, "identity", "identity", activation, activation)
    return Network(layers, acts, "softmax_ce")
