"""What a training run is: typed, validated configuration loaded from YAML.

A config file is one whole run (Flax's `configs/default.py` pattern, in YAML): the data, the
model, the optimizer and its schedule, and the loop's cadences. Every key has a default here and
is documented in `jaxbp/configs/iris_one_layer.yaml`; a file may start from another with
`base: <name or path>` and override some keys. Validation happens once, at load time, and a bad
key, type or value is one `ConfigError` naming the key, the value given and what is allowed.

>>> cfg = load("iris_two_layer", overrides=["optimizer.learning_rate=0.05"])
>>> cfg.model.name, cfg.optimizer.learning_rate
('two_layer_classifier', 0.05)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from jaxbp import models
from jaxbp.network import Network, mlp

PACKAGE_CONFIGS = Path(__file__).parent / "configs"

# Model name -> factory; the config's `model.args` are its keyword arguments.
MODELS: dict[str, Callable[..., Network]] = {
    "mlp": mlp,
    "one_layer_classifier": models.one_layer_classifier,
    "two_layer_classifier": models.two_layer_classifier,
    "lenet_300_100": models.lenet_300_100,
    "lenet5": models.lenet5,
    "logistic_regression": models.logistic_regression,
    "multiple_linear_regression": models.multiple_linear_regression,
}
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine", "exponential", "step")
GRADS = ("jaxbp", "jax")


class ConfigError(ValueError):
    """A user error in a config: the message names the key, the bad value and what is allowed."""


def _choice(options) -> dict:
    return {"check": (lambda v: v in options, "one of: " + ", ".join(map(str, options)))}


_POSITIVE = {"check": (lambda v: 0 < v < math.inf, "a finite number > 0")}
_NONNEG = {"check": (lambda v: 0 <= v < math.inf, "a finite number >= 0")}
_FRACTION = {"check": (lambda v: 0 < v < 1, "a number in (0, 1)")}


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are split."""

    name: str = "iris"  # "iris" (shipped in the package) or a tfds dataset name, e.g. "mnist"
    data_dir: str | None = None  # tfds data_dir; None: $TFDS_DATA_DIR, then tfds' default
    train_split: str = "train"  # tfds split names (ignored for iris)
    test_split: str = "test"
    test_fraction: float = field(default=0.2, metadata=_FRACTION)  # iris: stratified hold-out
    n_train: int | None = field(default=None, metadata=_POSITIVE)  # the first n (iris: of a seed-shuffled split)
    n_test: int | None = field(default=None, metadata=_POSITIVE)
    one_vs_rest: int | None = field(default=None, metadata=_NONNEG)  # labels -> (label == k)


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="one_layer_classifier", metadata=_choice(tuple(MODELS)))
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the factory


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = field(default="sgd", metadata=_choice(OPTIMIZERS))
    learning_rate: float = field(default=0.1, metadata=_POSITIVE)
    momentum: float = field(default=0.9, metadata=_FRACTION)  # momentum and nesterov only
    weight_decay: float = field(default=0.0, metadata=_NONNEG)  # adds weight_decay * theta to the gradient
    # mini-batch stochastic IHT (jaxbp.sparse.hard_threshold): after every step keep only the
    # largest-magnitude parameters, zeroing this fraction of them; 0: dense training
    sparsity: float = field(default=0.0, metadata={"check": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a fraction in [0, 1)")})
    # "global": rank all parameters together; "layer": zero that fraction of every array (W, b) alone
    sparsity_scope: str = field(default="global", metadata=_choice(("global", "layer")))


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over training; times are in epochs (fractions allowed)."""

    name: str = field(default="constant", metadata=_choice(SCHEDULES))
    warmup_epochs: float = field(default=0.0, metadata=_NONNEG)  # linear ramp from 0
    decay_rate: float = field(default=0.5, metadata=_FRACTION)  # exponential/step: factor per decay_every
    decay_every: float = field(default=1.0, metadata=_POSITIVE)
    alpha: float = field(default=0.0, metadata=_NONNEG)  # cosine: final rate / initial rate


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=100, metadata=_POSITIVE)
    batch_size: int = field(default=16, metadata=_POSITIVE)
    grad: str = field(default="jaxbp", metadata=_choice(GRADS))  # "jax": jax.value_and_grad (benchmark)
    eval_every: int = field(default=1, metadata=_POSITIVE)  # epochs
    log_every: int = field(default=50, metadata=_POSITIVE)  # steps
    checkpoint_every: int = field(default=500, metadata=_POSITIVE)  # steps (and always at the end)
    verify_every: int = field(default=0, metadata=_NONNEG)  # steps; 0: never check against jax.grad


@dataclass(frozen=True)
class ParallelConfig:
    """How a step is spread over devices (jaxbp.parallel, docs/sharding.md)."""

    # devices the batch is split over: an integer, or "auto" for all of jax.devices()
    data: int | str = field(default=1, metadata={"check": (lambda v: v == "auto" or (isinstance(v, int) and v > 0), '"auto" or an integer > 0')})


@dataclass(frozen=True)
class Config:
    name: str = "iris_one_layer"
    seed: int = field(default=0, metadata={"check": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_model(cfg: ModelConfig) -> Network:
    """The network `cfg` names; a ConfigError if its args do not fit the factory."""
    factory = MODELS[cfg.name]
    try:
        inspect.signature(factory).bind(**cfg.args)
    except TypeError:
        allowed = ", ".join(inspect.signature(factory).parameters) or "(none)"
        raise ConfigError(
            f"config key 'model.args': got {cfg.args!r}, model {cfg.name!r} accepts: {allowed}"
        ) from None
    try:
        return factory(**cfg.args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key 'model.args' for model {cfg.name!r}: {e}") from None


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain dict (as read from YAML) into a Config; the model is built as a check."""
    cfg = _build(Config, raw, "")
    build_model(cfg.model)
    return cfg


def resolve_path(name_or_path: str | Path) -> Path:
    """A config file: the path if it exists, else a packaged config by name (`.yaml` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGE_CONFIGS / (path.name if path.suffix else path.name + ".yaml")
    if packaged.is_file():
        return packaged
    known = ", ".join(sorted(p.stem for p in PACKAGE_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"config {str(name_or_path)!r}: no such file, and no packaged config by that name ({known})")


def read_raw(name_or_path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML of a config file as a dict, with its `base:` chain merged in (the file wins).

    `base:` names a file beside this one (`.yaml` optional) or a packaged config; a file named
    like the packaged config it extends (`my/iris_one_layer.yaml` with `base: iris_one_layer`)
    extends the packaged one.
    """
    path = resolve_path(name_or_path)
    chain = (*_chain, path.resolve())
    if path.resolve() in _chain:
        raise ConfigError(f"config {str(path)!r}: `base:` goes round in a cycle: {' -> '.join(p.name for p in chain)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {str(path)!r}: expected a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {str(path)!r}: `base:` got {base!r}, expected the name or path of one config")
    sibling = path.parent / (base if str(base).endswith(".yaml") else f"{base}.yaml")
    if sibling.resolve() == path.resolve():
        sibling = PACKAGE_CONFIGS / sibling.name
    try:
        parent = read_raw(sibling if sibling.is_file() else base, chain)
    except ConfigError as e:
        raise ConfigError(f"config {str(path)!r}, key `base:`: {e}") from None
    merged = _merge(parent, raw)
    merged["name"] = raw["name"]
    return merged


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML) to a raw config dict."""
    raw = _merge({}, raw)
    for item in overrides:
        dotted, sep, text = item.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. optimizer.learning_rate=0.01")
        node = raw
        *parents, last = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: config key {k!r} is not a section")
        try:
            node[last] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}") from None
    return raw


def load(name_or_path: str | Path = "iris_one_layer", overrides: Sequence[str] = ()) -> Config:
    """Read, merge, override and validate a config (a path or a packaged config's name)."""
    return from_dict(apply_overrides(read_raw(name_or_path), list(overrides)))


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '(top level)'!r}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"config key {prefix + unknown[0]!r}: unknown key; allowed keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = prefix + name
        values[name] = _convert(value, hints[name], key)
        check = fields[name].metadata.get("check")
        if check and values[name] is not None and not check[0](values[name]):
            raise ConfigError(f"config key {key!r}: got {value!r}, expected {check[1]}")
    return cls(**values)


def _convert(value: Any, tp: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return None
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(arms) > 1:  # int | str: the first type the value fits
            for arm in arms:
                try:
                    return _convert(value, arm, key)
                except ConfigError:
                    pass
            raise ConfigError(f"config key {key!r}: got {value!r}, expected {' or '.join(map(_describe, arms))}")
        (tp,) = arms
    origin = typing.get_origin(tp) or tp
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float, str)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }[origin]
    if ok and origin is float:
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            ok = False
    if not ok:
        raise ConfigError(f"config key {key!r}: got {value!r}, expected {_describe(origin)}")
    return value


def _describe(tp) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}[tp]
