"""A strict test environment: float64 available, rank promotion an error, full-precision float32
products on accelerators, warnings errors."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# float32 dots and convolutions in full precision on every backend (GPUs default to TF32 and TPUs
# to bfloat16 passes, ~1e-3 relative), so that the float32 tolerance compares the mathematics of
# jaxbp and of the autodiff oracle, not two roundings; on CPU this changes nothing
jax.config.update("jax_default_matmul_precision", "highest")

REPO = Path(__file__).resolve().parents[1]
# The prepared MNIST (tfds array_record) beside the checkout, as laid out for CI and sessions.
SHARED_TFDS = Path(os.environ.get("TFDS_DATA_DIR", REPO.parent / "shared" / "data" / "tensorflow_datasets"))

TOL = {"float64": 1e-10, "float32": 1e-5}


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def tfds_dir() -> Path:
    if not (SHARED_TFDS / "mnist").is_dir():
        pytest.fail(f"prepared MNIST not found under {SHARED_TFDS}; set TFDS_DATA_DIR")
    return SHARED_TFDS
