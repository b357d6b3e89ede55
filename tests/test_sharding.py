"""Data parallelism: a batch split over 4 devices gives the one-device gradient and training run.

The checks run in a subprocess (tests/_sharded.py) with XLA_FLAGS forcing 4 host devices, set
before jax is imported, so this process keeps its one device. The subprocess runs on the CPU
platform (JAX_PLATFORMS=cpu): the flag only multiplies host devices, and on a machine with one
GPU jax.devices() would otherwise be that GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, TOL
from jaxbp import parallel
from jaxbp.config import ConfigError


@pytest.fixture(scope="module")
def sharded(tfds_dir) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "_sharded.py"), str(tfds_dir)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("net", ["lenet_300_100", "lenet5"])
@pytest.mark.parametrize("fn", ["grad", "value_and_grad", "per_example_grads"])
def test_sharded_gradient_equals_the_one_device_gradient_in_float64(sharded, net, fn):
    result = sharded["gradients"][net]
    assert result["dtype"] == "float64" and result["replicated"]
    assert result[fn] <= TOL["float64"]


def test_the_sharded_train_step_has_one_all_reduce_and_replicated_params(sharded):
    step = sharded["train_step"]
    assert step["all_reduces"] == 1  # the parameter gradient and the loss, combined
    assert step["params_replicated"] and step["finite"]
    assert step["rel"] <= TOL["float32"]


def test_a_2_epoch_sharded_lenet_300_100_run_follows_the_one_device_loss_curve(sharded):
    one, four = sharded["runs"]["1"], sharded["runs"]["4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["steps"] == one["steps"] == list(range(1, 33))  # each step logged once
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=TOL["float32"])
    assert four["test_loss"] == pytest.approx(one["test_loss"], rel=TOL["float32"])
    assert four["grad_check"] < 1e-5


def test_a_batch_size_not_divisible_by_the_device_count_is_a_config_error(sharded):
    assert "'train.batch_size': got 30, expected a multiple of the 4 devices" in sharded["runs"]["indivisible"]


def test_more_devices_than_visible_is_a_config_error_that_says_how_to_force_them():
    n = len(jax.devices()) + 1
    with pytest.raises(ConfigError, match=f"device_count={n} before jax is imported gives {n} host devices"):
        parallel.data_mesh(n)


@pytest.mark.parametrize("n", [0, -2, "4", 2.0, True])
def test_a_device_count_that_is_not_auto_or_a_positive_integer_is_a_config_error(n):
    with pytest.raises(ConfigError, match=rf"'parallel.data': got {n!r}, expected \"auto\" or an integer > 0"):
        parallel.data_mesh(n)
    assert parallel.data_mesh(np.int64(1)).size == 1  # a NumPy integer is an integer
