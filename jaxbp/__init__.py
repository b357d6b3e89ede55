"""jaxbp: backpropagation as products of explicit Jacobian matrices, in JAX.

Implements "The Backpropagation Algorithm for a Math Student" (Damadi, Moharrer, Cham):
z^[l] = (W^[l])^T a^[l-1] + b^[l], a^[l] = f^[l](z^[l]), and
grad_theta l = (J_theta z^[L])^T grad_{z^[L]} l (Eq. 1, Algorithm 1).
"""

from jaxbp import activations, heads, models, sparse
from jaxbp.activations import softmax_jacobian
from jaxbp.curvature import empirical_ntk, ggn_diagonal
from jaxbp.jacobian import grad_fn, jacobian, value_and_grad_fn
from jaxbp.layers import Dense, layer_jacobian
from jaxbp.network import Network, Stacked, mlp
from jaxbp.params import ravel, unravel
from jaxbp.per_example import clipped_grad_fn, per_example_grad_norms, per_example_grads

__all__ = [
    "Dense",
    "Network",
    "Stacked",
    "activations",
    "clipped_grad_fn",
    "empirical_ntk",
    "ggn_diagonal",
    "grad_fn",
    "heads",
    "jacobian",
    "layer_jacobian",
    "mlp",
    "models",
    "per_example_grad_norms",
    "per_example_grads",
    "ravel",
    "softmax_jacobian",
    "sparse",
    "unravel",
    "value_and_grad_fn",
]
