"""Configs are data: every packaged config validates, and every bad key is one clear error."""

from __future__ import annotations

import pytest

from jaxbp import config
from jaxbp.config import ConfigError

PACKAGED = sorted(p.stem for p in config.PACKAGE_CONFIGS.glob("*.yaml"))


def test_the_documented_default_config_is_the_dataclass_defaults():
    assert config.load("iris_one_layer") == config.Config()


@pytest.mark.parametrize("name", PACKAGED)
def test_every_packaged_config_validates_and_builds_its_model(name):
    cfg = config.load(name)
    assert cfg.name == name
    assert config.build_model(cfg.model).n_params > 0


def test_a_variant_overrides_its_base_and_keeps_the_rest():
    cfg = config.load("iris_two_layer")
    assert cfg.model.name == "two_layer_classifier" and cfg.train.epochs == 200
    assert cfg.optimizer == config.Config().optimizer


def test_overrides_are_parsed_as_yaml():
    cfg = config.load("iris_one_layer", ["optimizer.learning_rate=1e-3", "train.epochs=3", "model.args={n_classes: 3}"])
    assert cfg.optimizer.learning_rate == 1e-3 and cfg.train.epochs == 3 and cfg.model.args == {"n_classes": 3}


@pytest.mark.parametrize(
    "override, words",
    [
        ("optimizer.lr=0.1", ["'optimizer.lr'", "unknown key", "learning_rate"]),
        ("optimizer.name=adamw", ["'optimizer.name'", "'adamw'", "sgd, momentum, nesterov, adam"]),
        ("optimizer.learning_rate=-1", ["'optimizer.learning_rate'", "-1", "> 0"]),
        ("optimizer.learning_rate=.inf", ["'optimizer.learning_rate'", "inf", "a finite number > 0"]),
        ("optimizer.learning_rate=0", ["'optimizer.learning_rate'", "got 0", "> 0"]),
        ("train.batch_size=0", ["'train.batch_size'", "got 0", "> 0"]),
        ("optimizer.weight_decay=.nan", ["'optimizer.weight_decay'", "nan", "a finite number >= 0"]),
        ("train.epochs=ten", ["'train.epochs'", "'ten'", "an integer"]),
        ("train.epochs=2.5", ["'train.epochs'", "2.5", "an integer"]),
        ("train.grad=torch", ["'train.grad'", "jaxbp, jax"]),
        ("schedule.decay_rate=1.5", ["'schedule.decay_rate'", "1.5", "(0, 1)"]),
        ("model.name=resnet", ["'model.name'", "'resnet'", "lenet_300_100"]),
        ("model.args={width: 3}", ["'model.args'", "width", "n_features, n_classes"]),
        ("model.args={n_features: 0}", ["'model.args'", "positive"]),
        ("data=3", ["'data'", "a mapping"]),
    ],
)
def test_a_bad_value_is_one_error_naming_key_value_and_allowed(override, words):
    with pytest.raises(ConfigError) as e:
        config.load("iris_one_layer", [override])
    for word in words:
        assert word in str(e.value)


def test_a_malformed_override_and_a_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        config.load("iris_one_layer", ["optimizer.learning_rate"])
    with pytest.raises(ConfigError, match=r"--set 'train.epochs=\[1': the value is not valid YAML"):
        config.load("iris_one_layer", ["train.epochs=[1"])
    with pytest.raises(ConfigError, match="no such file.*iris_one_layer"):
        config.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(tmp_path / "bad.yaml")


def test_a_config_file_outside_the_package_can_use_a_packaged_base(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: iris_two_layer\nseed: 7\n")
    cfg = config.load(tmp_path / "mine.yaml")
    assert (cfg.name, cfg.seed, cfg.model.name) == ("mine", 7, "two_layer_classifier")


def test_a_local_config_named_like_its_packaged_base_extends_the_packaged_one(tmp_path):
    (tmp_path / "iris_one_layer.yaml").write_text("base: iris_one_layer\ntrain: {epochs: 2}\n")
    cfg = config.load(tmp_path / "iris_one_layer.yaml")
    assert (cfg.train.epochs, cfg.model.name) == (2, "one_layer_classifier")


def test_a_cycle_of_bases_is_a_config_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="cycle: a.yaml -> b.yaml -> a.yaml"):
        config.load(tmp_path / "a.yaml")


@pytest.mark.parametrize("base", ["[iris_one_layer]", "3"])
def test_a_base_that_is_not_a_name_is_a_config_error(tmp_path, base):
    (tmp_path / "a.yaml").write_text(f"base: {base}\n")
    with pytest.raises(ConfigError, match="`base:` got .*, expected the name or path of one config"):
        config.load(tmp_path / "a.yaml")


def test_a_base_that_does_not_exist_names_the_file_that_asks_for_it(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: iris_won_layer\n")
    with pytest.raises(ConfigError, match=rf"config '{tmp_path / 'mine.yaml'}', key `base:`: config 'iris_won_layer': "
                                          r"no such file, and no packaged config by that name \(iris_logistic_regression"):
        config.load(tmp_path / "mine.yaml")
