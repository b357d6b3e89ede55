"""Examples x and labels y for training: Iris from the package, everything else from tfds.

Iris (Fisher 1936, via the UCI repository; see jaxbp/data/README.md) is the paper's running
example and ships as `jaxbp/data/iris.csv`, so the default run works offline. Other data sets are
read with `tfds.data_source` from a prepared array_record copy, which needs no TensorFlow.

Features are standardised with statistics of the training split (per column for tabular data,
over all values for images); the mini-batch order of an epoch is a pure function of
(seed, epoch), which is what makes `--resume` exact.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from jaxbp import heads as _heads
from jaxbp.config import DataConfig
from jaxbp.network import Network

IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"


class DataError(ValueError):
    """A data set that cannot be found or does not fit the model; the message says what to do."""


class Dataset(NamedTuple):
    """x_*: (N, *in_shape) float32; y_*: (N,) int32 class ids (or {0,1} for one-vs-rest)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


def load(cfg: DataConfig, in_shape: tuple[int, ...], seed: int = 0) -> Dataset:
    """The data set of `cfg`, examples reshaped to the model's `in_shape`, normalised.

    `seed` fixes the stratified train/test split of Iris (tfds data sets come split).
    """
    if cfg.name == "iris":
        x_tr, y_tr, x_te, y_te = _iris(cfg.test_fraction, seed)
    else:
        x_tr, y_tr = _tfds(cfg, cfg.train_split, cfg.n_train)
        x_te, y_te = _tfds(cfg, cfg.test_split, cfg.n_test)
    for key, n, have in (("n_train", cfg.n_train, len(x_tr)), ("n_test", cfg.n_test, len(x_te))):
        if n is not None and n > have:
            raise DataError(f"data.{key}: got {n}, but that split of {cfg.name!r} has {have} examples; "
                            f"give at most {have}, or null for all of them")
    x_tr, y_tr, x_te, y_te = x_tr[: cfg.n_train], y_tr[: cfg.n_train], x_te[: cfg.n_test], y_te[: cfg.n_test]
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    if cfg.one_vs_rest is not None:
        if cfg.one_vs_rest >= n_classes:
            raise DataError(
                f"data.one_vs_rest: got {cfg.one_vs_rest}, expected a class id in [0, {n_classes})"
            )
        y_tr, y_te = (y_tr == cfg.one_vs_rest).astype(np.int32), (y_te == cfg.one_vs_rest).astype(np.int32)
        n_classes = 2
    axis = 0 if x_tr.ndim == 2 else None
    mean, std = x_tr.mean(axis=axis), x_tr.std(axis=axis)
    std = np.where(std > 0, std, 1.0)  # a constant feature is only centred
    x_tr, x_te = ((x - mean) / std for x in (x_tr, x_te))
    return Dataset(
        _reshape(x_tr, in_shape, cfg.name), y_tr, _reshape(x_te, in_shape, cfg.name), y_te, n_classes
    )


def check_labels(ds: Dataset, net: Network, cfg: DataConfig) -> None:
    """DataError unless the labels of both splits are what the network's head takes with its m outputs
    (and, for one-vs-rest labels, a softmax head has the two outputs they can name)."""
    if cfg.one_vs_rest is not None and net.head == "softmax_ce" and net.m != 2:
        raise DataError(
            f"data.one_vs_rest makes the labels 0 or 1, but the model's softmax_ce head has {net.m} outputs, "
            f"so only 2 of them can ever be the target; use a model with one sigmoid_bce output (e.g. "
            f"logistic_regression) or 2 softmax outputs, or drop data.one_vs_rest"
        )
    for split, y in (("train", ds.y_train), ("test", ds.y_test)):
        try:
            _heads.check_labels(net.head_fn, y, len(y), net.m)
        except ValueError as e:
            raise DataError(
                f"data {cfg.name!r} ({split} split, {ds.n_classes} classes) does not fit the model's head "
                f"{net.head!r} with {net.m} outputs: {e}. Give the last layer as many outputs as there are "
                f"classes, or use data.one_vs_rest for a binary head"
            ) from None


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the n training examples used in `epoch` (0-based)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mini-batches (x: (batch_size, ...), y: (batch_size,)) of one epoch, from batch `start` on.

    The last partial batch is dropped, so every step has the same shapes (one compilation).
    """
    order = epoch_order(seed, epoch, len(x))
    for i in range(start, len(x) // batch_size):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield x[idx], y[idx]


def _iris(test_fraction: float, seed: int):
    table = np.genfromtxt(IRIS_CSV, delimiter=",", skip_header=1, dtype=str)
    x = table[:, :4].astype(np.float32)
    species, y = np.unique(table[:, 4], return_inverse=True)
    y = y.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in range(len(species)):  # stratified: the same fraction of every class is held out
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[: round(test_fraction * len(members))]] = True
    if test.all() or not test.any():
        raise DataError(
            f"data.test_fraction: got {test_fraction}, which leaves Iris (50 examples per class) no "
            f"{'training' if test.all() else 'test'} examples; expected a fraction in (0.01, 0.99), e.g. 0.2"
        )
    # each split in an order drawn from the seed: data.n_train / n_test then take a random subset,
    # not the first class's examples
    train, test = (rng.permutation(np.flatnonzero(mask)) for mask in (~test, test))
    return x[train], y[train], x[test], y[test]


def _tfds(cfg: DataConfig, split: str, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds  # slow to import; only runs that need it pay

    data_dir = Path(cfg.data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets").expanduser()
    if not list((data_dir / cfg.name).glob("*/dataset_info.json")):
        raise DataError(
            f"data set {cfg.name!r} not found: looked for a prepared copy in {data_dir / cfg.name} "
            f"(data_dir from {'data.data_dir' if cfg.data_dir else 'TFDS_DATA_DIR' if os.environ.get('TFDS_DATA_DIR') else 'the tfds default'}). "
            f"Prepare it with `pip install 'jaxbp[prepare]' && tfds build {cfg.name} "
            f"--data_dir {data_dir} --file_format array_record`, or point data.data_dir "
            f"(--set data.data_dir=DIR) or TFDS_DATA_DIR at a prepared copy."
        )
    try:
        source = tfds.data_source(cfg.name, split=split, data_dir=str(data_dir), download=False)
    except (ValueError, RuntimeError) as e:
        raise DataError(f"data set {cfg.name!r}, split {split!r} in {data_dir}: {e}") from None
    n = min(n or len(source), len(source))
    records: list = []
    absl = logging.getLogger("absl")
    absl.addFilter(_no_opencv_advice)
    try:
        with tqdm(total=n, desc=f"reading {cfg.name} {split}", unit="example", leave=False, disable=None) as bar:
            for i in range(0, n, _READ_CHUNK):  # decoding 60,000 PNG digits takes ~8 s: show it
                records += source.__getitems__(range(i, min(i + _READ_CHUNK, n)))
                bar.update(min(_READ_CHUNK, n - i))
    except (OSError, RuntimeError) as e:
        raise DataError(
            f"data set {cfg.name!r}, split {split!r} in {data_dir}: the prepared copy cannot be read "
            f"({e}); prepare it again with `tfds build {cfg.name} --data_dir {data_dir} --file_format array_record`"
        ) from None
    finally:
        absl.removeFilter(_no_opencv_advice)
    x = np.stack([r["image"] for r in records]).astype(np.float32) / 255.0
    y = np.array([r["label"] for r in records], np.int32)
    return x, y


_READ_CHUNK = 5000


def _no_opencv_advice(record: logging.LogRecord) -> bool:
    """A logging filter dropping tfds' "OpenCV is not installed ... Defaulting to PIL" (advice, not a fault)."""
    return "OpenCV is not installed" not in record.getMessage()


def _reshape(x: np.ndarray, in_shape: tuple[int, ...], name: str) -> np.ndarray:
    if int(np.prod(x.shape[1:])) != int(np.prod(in_shape)):
        raise DataError(
            f"data.name {name!r} gives examples of shape {x.shape[1:]}, but the model expects "
            f"inputs of shape {in_shape}"
        )
    return x.reshape(len(x), *in_shape)
