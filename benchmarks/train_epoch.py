"""Epoch time of LeNet-300-100 training with jaxbp's gradient vs jax.value_and_grad.

Both use `jaxbp.train.make_train_step` (the step of `jaxbp train`, differing only in the source
of the gradient, `train.grad`) and the same batches and per-step finiteness check as the run loop.
Epochs alternate jaxbp, jax, jaxbp, ... in one process; medians are reported.

    TFDS_DATA_DIR=../shared/data/tensorflow_datasets python benchmarks/train_epoch.py [epochs]
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from jaxbp import config, data, train


def main(repeats: int = 5) -> None:
    cfg = config.load("mnist_lenet_300_100")
    net = config.build_model(cfg.model)
    ds = data.load(cfg.data, net.in_shape, cfg.seed)
    steps = len(ds.x_train) // cfg.train.batch_size
    optimizer = train.make_optimizer(cfg.optimizer, train.make_schedule(cfg.schedule, cfg.optimizer.learning_rate, steps, cfg.train.epochs))
    params0 = net.init(jax.random.key(cfg.seed))
    state = {g: (params0, optimizer.init(params0), train.make_train_step(net, optimizer, g)) for g in config.GRADS}

    def epoch(g: str, e: int) -> float:
        params, opt_state, step = state[g]
        t = time.perf_counter()
        for x, y in data.batches(ds.x_train, ds.y_train, cfg.train.batch_size, cfg.seed, e):
            params, opt_state, loss, finite = step(params, opt_state, x, y)
            if not finite:
                raise train.Diverged(g)
        state[g] = (params, opt_state, step)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {g: [] for g in config.GRADS}
    for e in range(repeats + 1):  # epoch 0 compiles and is not counted
        for g in config.GRADS:
            dt = epoch(g, e)
            if e:
                times[g].append(dt)
    med = {g: float(np.median(v)) for g, v in times.items()}
    n = steps * cfg.train.batch_size
    for g in config.GRADS:
        print(f"grad={g:<6} median epoch {med[g]:.3f} s  ({n / med[g]:.0f} examples/s)  all: {np.round(times[g], 3).tolist()}")
    print(f"ratio jaxbp / jax: {med['jaxbp'] / med['jax']:.3f}  ({jax.devices()[0].platform}, batch {cfg.train.batch_size}, {repeats} epochs each)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
