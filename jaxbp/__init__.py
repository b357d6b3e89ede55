"""jaxbp: backpropagation as products of explicit Jacobian matrices, in JAX.

Implements "The Backpropagation Algorithm for a Math Student" (Damadi, Moharrer, Cham):
z^[l] = (W^[l])^T a^[l-1] + b^[l], a^[l] = f^[l](z^[l]), and
grad_theta l = (J_theta z^[L])^T grad_{z^[L]} l (Eq. 1, Algorithm 1).
"""

from jaxbp import activations, heads, models, sparse
from jaxbp.activations import softmax_jacobian
from jaxbp.curvature import empirical_ntk, ggn_diagonal
from jaxbp.jacobian import grad_fn, jacobian, value_and_grad_fn
from jaxbp.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, layer_jacobian
from jaxbp.network import Network, Stacked, mlp
from jaxbp.params import ravel, unravel
from jaxbp.per_example import clipped_grad_fn, per_example_grad_norms, per_example_grads
from jaxbp.toeplitz import conv_to_dense, patches, plot_toeplitz, toeplitz

__all__ = [
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Flatten",
    "MaxPool2D",
    "Network",
    "Stacked",
    "activations",
    "clipped_grad_fn",
    "conv_to_dense",
    "empirical_ntk",
    "ggn_diagonal",
    "grad_fn",
    "heads",
    "jacobian",
    "layer_jacobian",
    "mlp",
    "models",
    "patches",
    "per_example_grad_norms",
    "per_example_grads",
    "plot_toeplitz",
    "ravel",
    "softmax_jacobian",
    "sparse",
    "toeplitz",
    "unravel",
    "value_and_grad_fn",
]
