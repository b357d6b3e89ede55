"""A Dense layer that offers only the layer protocol, to exercise the generic per-layer forms.

Conv2D and any future layer get per-example gradients, norms, GGN and NTK from `vjp_params`
alone; wrapping Dense this way checks those generic paths against the same oracles.
"""

from __future__ import annotations

from dataclasses import dataclass

import jaxbp


@dataclass(frozen=True)
class ProtocolOnly:
    inner: jaxbp.Dense

    in_shape = property(lambda self: self.inner.in_shape)
    out_shape = property(lambda self: self.inner.out_shape)
    param_shapes = property(lambda self: self.inner.param_shapes)
    size = property(lambda self: self.inner.size)

    def init(self, key, dtype):
        return self.inner.init(key, dtype)

    def apply(self, p, a):
        return self.inner.apply(p, a)

    def vjp_input(self, p, a, delta):
        return self.inner.vjp_input(p, a, delta)

    def vjp_params(self, p, a, delta):
        return self.inner.vjp_params(p, a, delta)

    def ravel(self, p):
        return self.inner.ravel(p)

    def unravel(self, theta_l):
        return self.inner.unravel(theta_l)


def protocol_only(net: jaxbp.Network) -> jaxbp.Network:
    """The same network with every plain Dense layer wrapped in ProtocolOnly."""
    layers = tuple(ProtocolOnly(l) if isinstance(l, jaxbp.Dense) else l for l in net.layers)
    return jaxbp.Network(layers, net.activations, net.head)
