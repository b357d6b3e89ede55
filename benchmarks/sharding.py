"""Examples/s of the LeNet-300-100 train step on 1 vs 4 forced host devices, and its all-reduces.

Both meshes live in one process (XLA_FLAGS forces 4 host devices before jax is imported); rounds
of `steps` steps alternate 1, 4, 1, 4, ... on the same batches and medians are reported. On a
2-core machine 4 host devices cannot be faster: the point is that the sharded step is the same
computation plus one all-reduce, which the compiled HLO shows.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/sharding.py [steps] [rounds]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the flag multiplies host devices only; a GPU would be the one device

import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxbp import config, data, parallel, train  # noqa: E402


def main(steps: int = 100, rounds: int = 5) -> None:
    cfg = config.load("mnist_lenet_300_100")
    net = config.build_model(cfg.model)
    ds = data.load(cfg.data, net.in_shape, cfg.seed)
    bs = cfg.train.batch_size
    optimizer = train.make_optimizer(cfg.optimizer, train.make_schedule(cfg.schedule, cfg.optimizer.learning_rate, steps, 1))
    step = train.make_train_step(net, optimizer)
    batches = list(data.batches(ds.x_train, ds.y_train, bs, cfg.seed, 0))[:steps]
    params0 = net.init(jax.random.key(cfg.seed))
    state, hlo = {}, {}
    for n in (1, 4):
        mesh = parallel.data_mesh(n)
        state[n] = (mesh, parallel.replicate(mesh, params0), parallel.replicate(mesh, optimizer.init(params0)))
        x, y = parallel.shard_batch(mesh, *batches[0])
        hlo[n] = step.lower(state[n][1], state[n][2], x, y).compile().as_text()

    def run(n: int) -> float:
        mesh, params, opt_state = state[n]
        t = time.perf_counter()
        for x, y in batches:
            params, opt_state, loss, finite = step(params, opt_state, *parallel.shard_batch(mesh, x, y))
            bool(finite)  # the run loop's per-step host sync
        state[n] = (mesh, params, opt_state)
        return len(batches) * bs / (time.perf_counter() - t)

    for n in (1, 4):
        run(n)  # compile and warm up
    rates: dict[int, list[float]] = {1: [], 4: []}
    for _ in range(rounds):
        for n in (1, 4):
            rates[n].append(run(n))
    print(f"LeNet-300-100, batch {bs} (global), {len(batches)} steps x {rounds} rounds, {os.cpu_count()} CPU cores")
    for n in (1, 4):
        count = len(re.findall(r" all-reduce(?:-start)?\(", hlo[n]))
        print(f"  {n} device(s): {np.median(rates[n]):9.0f} examples/s   all-reduces in the compiled step: {count}")
    print(f"  4 / 1 devices: {np.median(rates[4]) / np.median(rates[1]):.2f}x")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
