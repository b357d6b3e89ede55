"""Data: Iris from the package, MNIST through tfds (mocked and real), reproducible batches."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

import jaxbp
from jaxbp import data
from jaxbp.config import DataConfig


def test_iris_is_150_rows_split_stratified_and_standardised():
    ds = data.load(DataConfig(), (4,), seed=0)
    assert ds.x_train.shape == (120, 4) and ds.x_test.shape == (30, 4) and ds.n_classes == 3
    assert np.bincount(ds.y_train).tolist() == [40, 40, 40] and np.bincount(ds.y_test).tolist() == [10, 10, 10]
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-5)


def test_the_iris_split_is_a_function_of_the_seed():
    a, b, c = (data.load(DataConfig(), (4,), seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_an_iris_subset_is_drawn_from_every_class():
    """data.n_train / n_test take the first examples of a split; Iris's file is sorted by class,
    so the splits are shuffled first (n_train=30 took 30 setosas)."""
    ds = data.load(DataConfig(n_train=30, n_test=9), (4,), seed=0)
    assert len(ds.y_train) == 30 and len(ds.y_test) == 9
    assert np.unique(ds.y_train).tolist() == [0, 1, 2] and np.unique(ds.y_test).tolist() == [0, 1, 2]


@pytest.mark.parametrize("fraction, empty", [(0.005, "test"), (0.995, "training")])
def test_an_iris_test_fraction_that_empties_a_split_is_a_data_error(fraction, empty):
    with pytest.raises(data.DataError, match=f"data.test_fraction: got {fraction}, .* no {empty} examples"):
        data.load(DataConfig(test_fraction=fraction), (4,))


def test_one_vs_rest_gives_binary_labels():
    ds = data.load(DataConfig(one_vs_rest=0), (4,))
    assert ds.n_classes == 2 and set(ds.y_train.tolist()) == {0, 1} and ds.y_train.sum() == 40
    with pytest.raises(data.DataError, match=r"one_vs_rest.*\[0, 3\)"):
        data.load(DataConfig(one_vs_rest=3), (4,))


def test_batches_follow_an_epoch_order_that_depends_only_on_seed_and_epoch():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    epoch = list(data.batches(x, y, 3, seed=5, epoch=2))
    assert [len(b[1]) for b in epoch] == [3, 3, 3]  # the partial batch is dropped
    assert len({int(v) for _, yb in epoch for v in yb}) == 9
    resumed = list(data.batches(x, y, 3, seed=5, epoch=2, start=1))
    for (xa, ya), (xb, yb) in zip(epoch[1:], resumed, strict=True):
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(data.epoch_order(5, 2, 10), data.epoch_order(5, 3, 10))


@pytest.fixture
def mock_mnist(monkeypatch):
    # tfds 4.9's mock binds __getitems__ without `self`; read records through the generator.
    monkeypatch.setattr(mocking, "_getitems", lambda keys, generator, serialized=False: [generator[k] for k in keys])
    with tfds.testing.mock_data(num_examples=24):
        yield


def test_mocked_tfds_images_become_normalised_float_vectors(mock_mnist, tfds_dir):
    ds = data.load(DataConfig(name="mnist", data_dir=str(tfds_dir)), (784,))
    assert ds.x_train.shape == (24, 784) and ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert abs(ds.x_train.mean()) < 1e-5 and ds.y_train.max() < 10


def test_real_mnist_keeps_the_image_shape_for_image_models(tfds_dir):
    ds = data.load(DataConfig(name="mnist", data_dir=str(tfds_dir), n_train=64, n_test=32), (28, 28, 1))
    assert ds.x_train.shape == (64, 28, 28, 1) and ds.x_test.shape == (32, 28, 28, 1)
    assert ds.n_classes == 10 and 0 <= ds.y_train.min() and ds.y_train.max() <= 9
    flat = data.load(DataConfig(name="mnist", data_dir=str(tfds_dir), n_train=64, n_test=32), (784,))
    np.testing.assert_array_equal(flat.x_train, ds.x_train.reshape(64, 784))


def test_a_model_input_that_does_not_fit_the_data_is_a_data_error(tfds_dir):
    with pytest.raises(data.DataError, match=r"\(28, 28, 1\).*\(100,\)"):
        data.load(DataConfig(name="mnist", data_dir=str(tfds_dir), n_train=8, n_test=8), (100,))


def test_a_data_dir_under_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(data.DataError, match=f"looked for a prepared copy in {tmp_path}/tfds/mnist"):
        data.load(DataConfig(name="mnist", data_dir="~/tfds"), (784,))


def test_a_missing_dataset_says_where_it_looked_and_how_to_prepare_it(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load(DataConfig(name="mnist", data_dir=str(tmp_path)), (784,))
    message = str(e.value)
    assert str(tmp_path / "mnist") in message and "tfds build mnist" in message and "data.data_dir" in message


def test_a_prepared_copy_without_its_records_is_a_data_error(tmp_path, tfds_dir):
    version = next((tfds_dir / "mnist").iterdir())
    copy = tmp_path / "mnist" / version.name
    copy.mkdir(parents=True)
    for f in version.glob("*.json"):
        shutil.copy(f, copy)
    with pytest.raises(data.DataError, match="cannot be read.*tfds build mnist"):
        data.load(DataConfig(name="mnist", data_dir=str(tmp_path), n_train=8, n_test=8), (784,))


def test_a_constant_feature_is_centred_not_divided_by_zero():
    ds = data.load(DataConfig(n_train=1), (4,))
    assert np.all(np.isfinite(ds.x_train)) and np.all(np.isfinite(ds.x_test))
    np.testing.assert_array_equal(ds.x_train, 0.0)


@pytest.mark.parametrize("key", ["n_train", "n_test"])
def test_asking_for_more_examples_than_a_split_has_is_a_data_error(key):
    with pytest.raises(data.DataError, match=rf"data.{key}: got 1000, but that split of 'iris' has (120|30) examples"):
        data.load(DataConfig(**{key: 1000}), (4,))


def test_one_vs_rest_labels_need_a_binary_head():
    """0/1 labels on a 3-output softmax would train a network two of whose outputs are never targets."""
    cfg = DataConfig(one_vs_rest=0)
    ds = data.load(cfg, (4,))
    with pytest.raises(data.DataError, match="one_vs_rest makes the labels 0 or 1, but the model's softmax_ce head has 3"):
        data.check_labels(ds, jaxbp.mlp([4, 3]), cfg)
    data.check_labels(ds, jaxbp.mlp([4, 2]), cfg)
    data.check_labels(ds, jaxbp.models.logistic_regression(4), cfg)


def test_reading_mnist_leaves_out_tfds_advice_to_install_opencv(tfds_dir):
    """tfds logs "OpenCV is not installed ..." once per process, at the first decoded image; on every
    MNIST run it looked like a fault. A fresh process, so that the first decode is jaxbp's."""
    code = ("from jaxbp import data; from jaxbp.config import DataConfig; "
            f"print(data.load(DataConfig(name='mnist', data_dir={str(tfds_dir)!r}, n_train=8, n_test=8), (784,)).x_train.shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "(8, 784)"
    assert "OpenCV" not in result.stderr, result.stderr
