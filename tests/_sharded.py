"""Run by tests/test_sharding.py in a subprocess with 4 forced host devices; prints one JSON line.

Each check computes the same thing on one device and with the batch split over the 4-device
mesh, so the test process (one device) only compares the numbers.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile

import jax
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import jaxbp  # noqa: E402
from jaxbp import config, parallel, train  # noqa: E402


def rel(a, b) -> float:
    return max(float(np.max(np.abs(u - v)) / max(np.max(np.abs(u)), 1e-300)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def gradients(mesh) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    nets = {"lenet_300_100": jaxbp.models.lenet_300_100(), "lenet5": jaxbp.models.lenet5()}
    for name, net in nets.items():
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), net.init(jax.random.key(1)))
        x = rng.normal(size=(8, *net.in_shape))
        y = rng.integers(0, net.m, 8).astype(np.int32)
        xs, ys = parallel.shard_batch(mesh, x, y)
        pr = parallel.replicate(mesh, params)
        loss1, g1 = jaxbp.value_and_grad_fn(net)(params, x, y)
        loss4, g4 = jaxbp.value_and_grad_fn(net)(pr, xs, ys)
        out[name] = {
            "value_and_grad": max(rel(g1, g4), rel(loss1, loss4)),
            "grad": rel(jaxbp.grad_fn(net)(params, x, y), jaxbp.grad_fn(net)(pr, xs, ys)),
            "per_example_grads": rel(jaxbp.per_example_grads(net)(params, x, y),
                                     jaxbp.per_example_grads(net)(pr, xs, ys)),
            "replicated": all(g.sharding.is_fully_replicated for g in jax.tree.leaves(g4)),
            "dtype": str(jax.tree.leaves(g4)[0].dtype),
        }
    return out


def train_step(mesh) -> dict:
    cfg = config.load("mnist_lenet_300_100")
    net = config.build_model(cfg.model)
    opt = train.make_optimizer(cfg.optimizer, optax.constant_schedule(0.05))
    params = net.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(16, 784)).astype(np.float32)
    y = np.arange(16, dtype=np.int32) % 10
    step = train.make_train_step(net, opt)
    p1, _, loss1, _ = step(params, opt.init(params), x, y)
    pr = parallel.replicate(mesh, params)
    sr = parallel.replicate(mesh, opt.init(params))
    xs, ys = parallel.shard_batch(mesh, x, y)
    for _ in range(2):
        p4, s4, loss4, finite = step(pr, sr, xs, ys)
    hlo = step.lower(pr, sr, xs, ys).compile().as_text()
    return {
        "rel": max(rel(p1, p4), rel(loss1, loss4)),
        "all_reduces": len(re.findall(r" all-reduce(?:-start)?\(", hlo)),
        "params_replicated": all(a.sharding.is_fully_replicated for a in jax.tree.leaves(p4)),
        "finite": bool(finite),
    }


def runs(tfds_dir: str) -> dict:
    base = [f"data.data_dir={tfds_dir}", "data.n_train=512", "data.n_test=256", "train.epochs=2",
            "train.batch_size=32", "train.log_every=1", "train.verify_every=8", "train.checkpoint_every=8"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 4):
            summary = train.train_and_evaluate(config.load("mnist_lenet_300_100", [*base, f"parallel.data={n}"]), f"{tmp}/{n}")
            records = train.read_metrics(f"{tmp}/{n}")
            out[n] = {"losses": [r["loss"] for r in records if "loss" in r], "steps": [r["step"] for r in records if "loss" in r],
                      "test_loss": summary["test_loss"], "devices": summary["devices"],
                      "grad_check": max(r["grad_check_error"] for r in records if "grad_check_error" in r)}
        try:
            train.train_and_evaluate(config.load("mnist_lenet_300_100", [*base, "train.batch_size=30", "parallel.data=4"]), f"{tmp}/bad")
            out["indivisible"] = None
        except config.ConfigError as e:
            out["indivisible"] = str(e)
    return out


if __name__ == "__main__":
    assert jax.device_count() == 4, jax.devices()
    mesh = parallel.data_mesh("auto")
    print(json.dumps({"gradients": gradients(mesh), "train_step": train_step(mesh), "runs": runs(sys.argv[1])}))
