"""The networks of the paper, ready to use.

Table 2's four classic models are one-layer networks with a single output; Fig. 4 and Fig. 5
are the Iris classifiers of Sections 3.1-3.2; Section 3.3's three-layer network is LeNet-300-100
(LeCun et al. 1998: 300 hidden units, then 100; the paper calls it "LeNet-100-300").
"""

from __future__ import annotations

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
