"""Layers z^[l] = g(theta_l, a^[l-1]) and their Jacobians (Section 3.1).

A layer is a small static (hashable) description; its parameters live in a plain dict. Every
layer provides the three linear maps the chain needs, all batched over a leading axis B:

- `apply(p, a)`: z = g(p, a), a: (B, *in_shape) -> z: (B, *out_shape);
- `vjp_input(p, a, delta)`: delta^T J_a z, (B, *out_shape) -> (B, *in_shape), the step of the
  chain (W^[l])^T... that moves a row vector from z^[l] to a^[l-1];
- `vjp_params(p, a, delta)`: sum_b delta_b^T J_theta z_b, the layer's parameter gradient, a
  dict shaped like p (for Dense: {"W": a^T delta, "b": 1^T delta}, outer products only, the
  structured form of [I (x) a^T, I] that never materialises the Kronecker block);

plus the layer's slice of the paper's theta: `ravel(p)` / `unravel(theta_l)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Array]


@dataclass(frozen=True)
class Dense:
    """z = W^T a + b with W: (n_in, n_out), b: (n_out,); theta_l = [vec(W); b] (vec stacks columns)."""

    n_in: int
    n_out: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n_in,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n_out,)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.n_in, self.n_out), "b": (self.n_out,)}

    @property
    def size(self) -> int:
        """P_l = n_in n_out + n_out, the length of this layer's block of theta."""
        return self.n_in * self.n_out + self.n_out

    def init(self, key: Array, dtype=jnp.float32) -> Params:
        """LeCun-normal W (Flax's Dense default), zero b."""
        W = jax.nn.initializers.lecun_normal()(key, (self.n_in, self.n_out), dtype)
        return {"W": W, "b": jnp.zeros((self.n_out,), dtype)}

    def apply(self, p: Params, a: Array) -> Array:
        """a: (B, n_in) -> z = a W + b: (B, n_out) (row-wise W^T a + b)."""
        z = a @ p["W"]
        return z + jnp.broadcast_to(p["b"], z.shape)

    def vjp_input(self, p: Params, a: Array, delta: Array) -> Array:
        """delta: (B, n_out) -> delta W^T: (B, n_in), i.e. (W^T)^T applied to each row."""
        del a
        return delta @ p["W"].T

    def vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """a: (B, n_in), delta: (B, n_out) -> {"W": a^T delta (n_in, n_out), "b": (n_out,)}."""
        del p
        return {"W": a.T @ delta, "b": jnp.sum(delta, axis=0)}

    # -- per-example contractions (Section 3.1's [I (x) a^T, I], one sample at a time) --------
    def per_example_vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """a: (B, n_in), delta: (B, n_out) -> {"W": a_b delta_b^T (B, n_in, n_out), "b": delta (B, n_out)}."""
        del p
        # a broadcast product, not a K=1 matmul: XLA fuses it into the one write of the output
        return {"W": a[:, :, None] * delta[:, None, :], "b": delta}

    def per_example_sq_norms(self, p: Params, a: Array, delta: Array) -> Array:
        """||delta_b^T [I (x) a_b^T, I]||^2 = (||a_b||^2 + 1) ||delta_b||^2: (B,), never forming a_b delta_b^T."""
        del p
        return (jnp.sum(a * a, axis=1) + 1) * jnp.sum(delta * delta, axis=1)

    def sum_sq_vjp_params(self, p: Params, a: Array, delta: Array) -> Params:
        """sum_b sum_r (delta_{b,r}^T J_theta z_b)^2 elementwise, delta: (B, R, n_out).

        Entry (i, j) of W is sum_b a_{b,i}^2 sum_r delta_{b,r,j}^2, so the squares of the outer
        products are never formed: {"W": (a^2)^T D, "b": 1^T D} with D = sum_r delta_r^2: (B, n_out).
        """
        del p
        D = jnp.sum(delta * delta, axis=1)
        return {"W": (a * a).T @ D, "b": jnp.sum(D, axis=0)}

    def param_rows(self, p: Params, a: Array, delta: Array) -> Array:
        """Rows delta_{b,r}^T [I (x) a_b^T, I] in theta layout: delta: (B, R, n_out) -> (B, R, P_l)."""
        del p
        B, R, n_out = delta.shape
        # broadcast products (not a K=1 einsum) so XLA fuses them with the concatenation into J
        W = (delta[:, :, :, None] * a[:, None, None, :]).reshape(B, R, n_out * self.n_in)
        return jnp.concatenate([W, delta], axis=2)

    def ntk(self, p: Params, a1: Array, d1: Array, a2: Array, d2: Array) -> Array:
        """This layer's term of J(x1) J(x2)^T: d1: (B1, R, n_out), d2: (B2, R, n_out) -> (B1, B2, R, R).

        [I (x) a^T, I][I (x) a'^T, I]^T = (a^T a' + 1) I, so the term is (a1_b^T a2_c + 1) d1_b d2_c^T.
        """
        del p
        gram = a1 @ a2.T + 1
        return gram[:, :, None, None] * jnp.einsum("bro,cso->bcrs", d1, d2)

    def ravel(self, p: Params) -> Array:
        """theta_l = [vec(W); b]: (P_l,), vec stacking the columns of W, first column on top."""
        return jnp.concatenate([p["W"].T.reshape(-1), p["b"]])

    def unravel(self, theta_l: Array) -> Params:
        """Inverse of `ravel`: (P_l,) -> {"W": (n_in, n_out), "b": (n_out,)}."""
        nw = self.n_in * self.n_out
        return {"W": theta_l[:nw].reshape(self.n_out, self.n_in).T, "b": theta_l[nw:]}


def layer_jacobian(a: Array, n_out: int) -> Array:
    """The dense parameter Jacobian J_{W,b}(W^T a + b) = [I (x) a^T, I] (Section 3.1).

    a: (n_in,) -> (n_out, n_in * n_out + n_out), in the column-stacking vec convention: row j
    holds a^T in columns j*n_in ... (j+1)*n_in - 1 and a one in column n_in*n_out + j. For
    Fig. 4's 4 -> 3 classifier this is the 3 x 15 matrix [x^T 0 0 | 1 0 0; 0 x^T 0 | 0 1 0; ...].

    >>> import jax.numpy as jnp
    >>> layer_jacobian(jnp.array([1.0, 2.0]), 2).tolist()
    [[1.0, 2.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0, 1.0]]
    """
    a = jnp.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"a: expected a vector of shape (n_in,), got shape {a.shape}")
    if not isinstance(n_out, int) or n_out <= 0:
        raise ValueError(f"n_out: expected a positive int, got {n_out!r}")
    eye = jnp.eye(n_out, dtype=a.dtype)
    return jnp.concatenate([jnp.kron(eye, a[None, :]), eye], axis=1)
