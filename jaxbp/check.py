"""A config's network checked against autodiff on a real batch: what `jaxbp check` prints.

`grad_fn` is compared with `jax.grad(net.loss)` and `jacobian` with `jax.jacrev` of `net.apply`
through `unravel` (the paper's theta order), each parameter array at its own scale: J's columns
are unravelled like theta, so a small block (a bias, a layer far from the output) is not measured
against the largest entry of J.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import data as _data
from jaxbp._checks import as_int
from jaxbp.config import Config, build_model
from jaxbp.jacobian import grad_fn, jacobian
from jaxbp.params import ravel, unravel
from jaxbp.train import relative_error

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}  # the test suite's


class ArrayError(NamedTuple):
    """Largest errors of one parameter array (layer l, 1-based, and its name: W, b or K)."""

    layer: int
    param: str
    grad_abs: float
    grad_rel: float  # max |g - g_jax| / max |g_jax|
    jac_abs: float
    jac_rel: float  # the same for the array's columns of J, over all examples and rows


class Report(NamedTuple):
    name: str
    n_params: int
    dtype: np.dtype
    batch: int  # examples in the gradient's batch
    n_jacobian: int  # examples whose Jacobian was compared
    errors: list[ArrayError]

    @property
    def worst(self) -> float:
        """The largest relative error of any array, gradient or Jacobian."""
        return max((max(e.grad_rel, e.jac_rel) for e in self.errors), default=0.0)

    @property
    def tolerance(self) -> float:
        return TOLERANCE.get(self.dtype, 1e-5)

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance


def against_autodiff(cfg: Config, n_jacobian: int = 4) -> Report:
    """Check cfg's model at its initial params on the first training batch (cfg.train.batch_size
    examples; the Jacobian on its first n_jacobian). DataError for data that does not fit."""
    n_jacobian = as_int(n_jacobian, "n_jacobian")
    net = build_model(cfg.model)
    ds = _data.load(cfg.data, net.in_shape, cfg.seed)
    _data.check_labels(ds, net, cfg.data)
    params = net.init(jax.random.key(cfg.seed))
    x, y = next(_data.batches(ds.x_train, ds.y_train, min(cfg.train.batch_size, len(ds.x_train)), cfg.seed, 0))
    ours, oracle = grad_fn(net)(params, x, y), jax.grad(net.loss)(params, x, y)
    xj = jnp.asarray(x[:n_jacobian])
    theta = ravel(net, params)
    J = jacobian(net, params, xj)
    J_ref = jax.jacrev(lambda t: net.apply(unravel(net, t), xj))(theta)
    # J's columns per parameter array: each row of J (and of J - J_ref) unravelled like theta
    J_err, J_scale = (jax.vmap(lambda t: unravel(net, t))(j.reshape(-1, net.n_params)) for j in (J - J_ref, J_ref))
    errors = [
        ArrayError(l, name, *_errors(g[name] - oracle[l - 1][name], oracle[l - 1][name]),
                   *_errors(J_err[l - 1][name], J_scale[l - 1][name]))
        for l, g in enumerate(ours, start=1)
        for name in g  # flatten and pooling layers have no parameters
    ]
    return Report(cfg.name, net.n_params, np.asarray(theta).dtype, len(x), len(xj), errors)


def _errors(diff, ref) -> tuple[float, float]:
    """max |diff| and `relative_error` (relative to the scale of the reference)."""
    return float(jnp.max(jnp.abs(diff))), float(relative_error(diff, ref))
