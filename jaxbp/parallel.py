"""Data parallelism with jax.sharding: the batch split over a mesh, the parameters replicated.

Nothing here changes how a gradient is computed. `grad_fn`, `value_and_grad_fn` and the train
step are plain `jax.jit` functions; given x, y sharded along the batch axis and replicated
params, XLA's SPMD partitioner runs the Jacobian chain of Algorithm 1 on each device's rows and
inserts one all-reduce where the per-example outer products a^[l-1] delta^T are summed over the
batch (see docs/sharding.md). This module only builds the mesh and places arrays on it.

>>> import jax, numpy as np
>>> mesh = data_mesh(1)
>>> x, = shard_batch(mesh, np.ones((4, 3)))
>>> x.sharding.spec == PartitionSpec("data")
True
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbp._checks import index
from jaxbp.config import ConfigError

AXIS = "data"


def initialize_from_env() -> None:
    """`jax.distributed.initialize` from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.

    Must run before anything touches a device; a no-op when JAX_COORDINATOR_ADDRESS is unset or the
    runtime is already initialized (`jax.process_count()` then says whether the run is multi-process).
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address and not jax.distributed.is_initialized():
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
        if missing:
            raise ConfigError(
                f"JAX_COORDINATOR_ADDRESS={address} is set but {', '.join(missing)} is not; "
                "set all three on every host (see docs/sharding.md)"
            )
        jax.distributed.initialize(
            address, int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        )


def data_mesh(n: int | str = "auto") -> Mesh:
    """A 1-D mesh named "data" over the first n of `jax.devices()` (all of them for "auto")."""
    devices = jax.devices()
    count = len(devices) if isinstance(n, str) and n == "auto" else index(n)
    if count is None or count < 1:
        raise ConfigError(f"config key 'parallel.data': got {n!r}, expected \"auto\" or an integer > 0")
    n = count
    if n > len(devices):
        raise ConfigError(
            f"config key 'parallel.data': got {n}, but {len(devices)} device(s) are visible "
            f"({devices[0].platform}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count={n} "
            f"before jax is imported gives {n} host devices"
        )
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError(
            f"config key 'parallel.data': got {n}; a multi-host run must use all {len(devices)} devices (auto)"
        )
    return Mesh(np.array(devices[:n]), (AXIS,))


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """The global batch must split evenly: each device gets batch_size / n examples."""
    n = mesh.size
    if batch_size % n:
        raise ConfigError(
            f"config key 'train.batch_size': got {batch_size}, expected a multiple of the {n} devices "
            f"of parallel.data (each device takes batch_size / {n} examples), e.g. {batch_size - batch_size % n or n}"
        )


def replicate(mesh: Mesh, tree):
    """Every leaf of `tree` (params, optimizer state) copied whole onto every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Global arrays (B, ...) split along axis 0 over the mesh; B must be a multiple of mesh.size.

    Every process passes the same global batch (the epoch order is a function of seed and epoch)
    and uploads only the rows of its own devices, so one code path serves one and many hosts.
    """
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    if jax.process_count() == 1:
        return tuple(jax.device_put(a, sharding) for a in arrays)
    return tuple(jax.make_array_from_callback(a.shape, sharding, lambda i, a=a: a[i]) for a in arrays)
