"""Training: the loss goes down, runs resume exactly, checkpoints survive crashes, divergence stops."""

from __future__ import annotations

import itertools
import json
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp import config, train
from jaxbp import data as _data
from jaxbp.train import TrainState
from helpers import assert_rel_close


def _cfg(name="iris_two_layer", *overrides):
    return config.load(name, ["train.log_every=1", *overrides])


def test_a_short_iris_run_lowers_the_loss_and_writes_the_run_directory(tmp_path):
    summary = train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=20", "train.verify_every=10"), tmp_path)
    records = train.read_metrics(tmp_path)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert summary["test_accuracy"] > 0.8 and summary["steps"] == 20 * 7
    for key in ("test_accuracy", "test_loss", "train_loss", "epochs", "steps", "wall_time_s", "examples_per_s", "device", "config"):
        assert key in summary
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 140
    checks = [r["grad_check_error"] for r in records if "grad_check_error" in r]
    assert len(checks) == 14 and max(checks) <= 1e-5  # relative to the gradient's scale
    assert config.from_dict(__import__("yaml").safe_load((tmp_path / "config.yaml").read_text())).train.epochs == 20
    for name in ("loss.png", "accuracy.png", "checkpoint.npz"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_smoke_config_trains_on_real_mnist(tmp_path, tfds_dir):
    summary = train.train_and_evaluate(config.load("smoke", [f"data.data_dir={tfds_dir}"]), tmp_path)
    losses = [r["loss"] for r in train.read_metrics(tmp_path) if "loss" in r]
    assert losses[-1] < losses[0] and summary["test_accuracy"] > 0.5


def test_jaxbp_and_jax_gradients_train_to_the_same_parameters(tmp_path):
    runs = [train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=3", f"train.grad={g}"), tmp_path / g) for g in ("jaxbp", "jax")]
    assert runs[0]["test_loss"] == pytest.approx(runs[1]["test_loss"], rel=1e-5)
    saved = [np.load(tmp_path / g / "checkpoint.npz") for g in ("jaxbp", "jax")]  # params, then Adam's state
    arrays = sorted((k for k in saved[0].files if k.startswith("arr_")), key=lambda k: int(k[4:]))
    assert len(arrays) > 4 and arrays == sorted((k for k in saved[1].files if k.startswith("arr_")), key=lambda k: int(k[4:]))
    assert_rel_close([saved[0][k] for k in arrays], [saved[1][k] for k in arrays], jnp.float32, "params and optimizer state")


def test_stochastic_iht_keeps_the_checkpointed_params_sparse(tmp_path):
    """optimizer.sparsity chains jaxbp.sparse.hard_threshold: at most (1 - s) P non-zeros, saved."""
    cfg = _cfg("iris_two_layer", "train.epochs=20", "optimizer.sparsity=0.5")
    summary = train.train_and_evaluate(cfg, tmp_path)
    net = config.build_model(cfg.model)
    params = net.init(jax.random.key(0))
    opt_state = train.make_optimizer(cfg.optimizer, optax.constant_schedule(0.1)).init(params)
    template = TrainState(params, opt_state, 0)
    saved = train.load_checkpoint(tmp_path / "checkpoint.npz", template).params
    nonzero = sum(int(np.count_nonzero(v)) for v in jax.tree.leaves(saved))
    assert nonzero == summary["nonzero_params"] <= net.n_params - int(0.5 * net.n_params)
    assert summary["test_accuracy"] > 0.6
    with pytest.raises(config.ConfigError, match="optimizer.sparsity"):
        config.load("iris_two_layer", ["optimizer.sparsity=1.0"])


def test_the_train_step_compiles_once(monkeypatch):
    """Traced (so compiled) once for three steps: counted by the trace-time calls of its gradient,
    not by jit's C++ dispatch cache, an LRU of 8192 entries that JAX shares with every jitted
    function of the process (with more than that alive, as late in the whole suite, a new
    function's entry is not kept: `_cache_size()` stays 0 while the step is still traced once)."""
    traces, real = [], train.gradient

    def counted(net, grad):
        value_and_grad = real(net, grad)

        def traced(*args):
            traces.append(args)
            return value_and_grad(*args)

        return traced

    monkeypatch.setattr(train, "gradient", counted)
    cfg = _cfg()
    net = config.build_model(cfg.model)
    opt = train.make_optimizer(cfg.optimizer, optax.constant_schedule(0.1))
    step = train.make_train_step(net, opt)
    params = net.init(jax.random.key(0))
    state = opt.init(params)
    x, y = np.ones((4, 4), np.float32), np.array([0, 1, 2, 0], np.int32)
    for _ in range(3):
        params, state, loss, finite = step(params, state, x, y)
    assert len(traces) == 1 and bool(finite)
    step(params, state, np.ones((2, 4), np.float32), y[:2])  # a new shape is a new trace
    assert len(traces) == 2


@pytest.mark.parametrize("name", ["constant", "cosine", "exponential", "step"])
def test_schedules_follow_their_formulas_after_warmup(name):
    s = config.ScheduleConfig(name=name, warmup_epochs=1, decay_rate=0.5, decay_every=2, alpha=0.1)
    lr = train.make_schedule(s, 0.2, steps_per_epoch=10, epochs=11)
    np.testing.assert_allclose([lr(0), lr(5)], [0.0, 0.1], rtol=1e-6)  # linear warmup over 10 steps
    t = np.array([0, 15, 30, 100])  # steps after warmup
    expected = {
        "constant": 0.2 * np.ones(4),
        "cosine": 0.2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / 100))),
        "exponential": 0.2 * 0.5 ** (t / 20),
        "step": 0.2 * 0.5 ** (t // 20),
    }[name]
    np.testing.assert_allclose([lr(10 + i) for i in t], expected, rtol=1e-5)


def _press_ctrl_c() -> None:
    raise KeyboardInterrupt


def _interrupted_run(cfg, workdir, monkeypatch, factory: str, call: int, interrupt=_press_ctrl_c, match=None) -> None:
    """Run cfg into workdir with `interrupt()` (Ctrl-C as a user would press it) just before the
    `call`-th (0-based) call of the function that `train.<factory>` makes (the train step, the
    evaluation); the run must end in KeyboardInterrupt. SIGINT and SIGTERM both stop it."""
    make = getattr(train, factory)

    def interrupting(*args):
        fn, calls = make(*args), itertools.count()

        def wrapped(*a):
            if next(calls) == call:
                interrupt()
            return fn(*a)

        return wrapped

    with monkeypatch.context() as m:
        m.setattr(train, factory, interrupting)
        with pytest.raises(KeyboardInterrupt, match=match):
            train.train_and_evaluate(cfg, workdir, stop_signals=(signal.SIGINT, signal.SIGTERM))


def test_a_crash_while_resume_rewrites_metrics_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("".join(l + "\n" for l in lines))

    def crash(fd):
        raise OSError("killed")

    monkeypatch.setattr(train.os, "fsync", crash)  # dies after writing, before the rename
    with pytest.raises(OSError, match="killed"):
        train._Metrics(path, keep_until=2)  # resuming from step 2 drops step 3
    assert path.read_text().splitlines() == lines


def test_resume_after_ctrl_c_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = ("train.epochs=3", "optimizer.name=momentum", "schedule.name=cosine", "train.checkpoint_every=1000")
    whole = train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "whole")
    # Ctrl-C at step 11, mid-way through epoch 2 (7 steps per epoch)
    _interrupted_run(_cfg("iris_two_layer", *overrides), tmp_path / "cut", monkeypatch, "make_train_step", 10)
    template = _state(_cfg("iris_two_layer", *overrides))
    assert train.load_checkpoint(tmp_path / "cut" / train.CHECKPOINT, template).step == 10
    resumed = train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "cut", resume=True)
    assert resumed["steps"] == whole["steps"] == 21
    assert (whole["resumed_from_step"], resumed["resumed_from_step"]) == (None, 10)  # its wall time is since step 10
    a, b = (train.load_checkpoint(tmp_path / d / train.CHECKPOINT, template) for d in ("whole", "cut"))
    for u, v in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2]), strict=True):
        np.testing.assert_array_equal(u, v)  # the same programs on the same numbers: bit for bit
    steps = [r["step"] for r in train.read_metrics(tmp_path / "cut") if "loss" in r]
    assert steps == list(range(1, 22))  # no step logged twice


def _state(cfg) -> TrainState:
    net = config.build_model(cfg.model)
    opt = train.make_optimizer(cfg.optimizer, optax.constant_schedule(0.1))
    params = net.init(jax.random.key(cfg.seed))
    return TrainState(params, opt.init(params), 0)


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_readable(tmp_path, monkeypatch):
    path = tmp_path / train.CHECKPOINT
    state = _state(_cfg())
    train.save_checkpoint(path, state._replace(step=5))

    def crash(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint(path, state._replace(step=6))
    restored = train.load_checkpoint(path, state)
    assert restored.step == 5
    for u, v in zip(jax.tree.leaves(restored[:2]), jax.tree.leaves(state[:2]), strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip", b"not a zip"])
def test_a_checkpoint_that_cannot_be_read_is_a_config_error(tmp_path, content):
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=1"), tmp_path)
    (tmp_path / train.CHECKPOINT).write_bytes(content)
    with pytest.raises(config.ConfigError, match="checkpoint .* cannot be read.*start a new run"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path, resume=True)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # least squares on the class ids with a huge step: |theta| grows geometrically to inf
    cfg = _cfg("iris_one_layer", "model.name=multiple_linear_regression", "model.args={n: 4}",
               "optimizer.learning_rate=1e6", "train.checkpoint_every=1")
    with pytest.raises(train.Diverged, match=r"diverged at step (\d+) .*Last good checkpoint") as e:
        train.train_and_evaluate(cfg, tmp_path)
    step = int(e.value.args[0].split("step ")[1].split()[0])
    good = train.load_checkpoint(tmp_path / train.CHECKPOINT, _state(cfg))
    assert good.step == step - 1
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(good.params))


def test_a_run_that_diverged_before_its_first_checkpoint_is_not_sent_to_resume(tmp_path):
    """No checkpoint to resume: neither error may point the user at --resume (a dead end)."""
    cfg = _cfg("iris_one_layer", "model.name=multiple_linear_regression", "model.args={n: 4}",
               "optimizer.learning_rate=1e6")
    with pytest.raises(train.Diverged, match="none written yet"):
        train.train_and_evaluate(cfg, tmp_path)
    with pytest.raises(config.ConfigError, match="before its first checkpoint") as e:
        train.train_and_evaluate(cfg, tmp_path)
    assert "--resume" not in str(e.value)
    with pytest.raises(config.ConfigError, match="no checkpoint.npz there .*--out"):
        train.train_and_evaluate(cfg, tmp_path, resume=True)


def _records(workdir, *keys):
    """The metrics lines' values that do not depend on timing (loss, evaluations), in order."""
    return [(r["step"], *(r.get(k) for k in keys)) for r in train.read_metrics(workdir)]


def test_an_interrupted_evaluation_is_done_on_resume_and_the_metrics_match_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = ("train.epochs=4", "train.log_every=3", "train.checkpoint_every=1000")
    train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "whole")
    # Ctrl-C while evaluating epoch 2
    _interrupted_run(_cfg("iris_two_layer", *overrides), tmp_path / "cut", monkeypatch, "make_evaluate", 1)
    train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "cut", resume=True)
    keys = ("loss", "train_loss", "test_loss", "accuracy")
    whole, cut = _records(tmp_path / "whole", *keys), _records(tmp_path / "cut", *keys)
    assert [r[0] for r in cut if r[3] is not None] == [7, 14, 21, 28]  # every epoch evaluated once
    np.testing.assert_array_equal(np.array(cut, float), np.array(whole, float))


def test_a_mid_epoch_resume_logs_the_same_running_and_epoch_losses(tmp_path, monkeypatch):
    overrides = ("train.epochs=2", "train.log_every=4", "train.checkpoint_every=1000")
    train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "whole")
    # Ctrl-C at step 11 of 14, three steps into the window that logs at step 12
    _interrupted_run(_cfg("iris_two_layer", *overrides), tmp_path / "cut", monkeypatch, "make_train_step", 10)
    train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "cut", resume=True)
    whole, cut = (_records(tmp_path / d, "loss", "train_loss", "test_loss") for d in ("whole", "cut"))
    np.testing.assert_array_equal(np.array(cut, float), np.array(whole, float))


def test_resume_drops_a_metrics_line_torn_by_a_crash_while_it_was_written(tmp_path):
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=1"), tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "epoch": 1.14, "lo')  # killed mid-write
    assert train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path, resume=True)["steps"] == 14
    assert [r["step"] for r in train.read_metrics(tmp_path) if "loss" in r] == list(range(1, 15))


def test_resuming_a_finished_run_keeps_its_summary(tmp_path):
    first = train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path)
    again = train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path, resume=True)
    assert again == json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(first))
    assert again["train_loss"] is not None and again["examples_per_s"] is not None


def test_a_new_run_never_overwrites_a_run_directory(tmp_path):
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(config.ConfigError, match=f"already holds a run.*--resume {tmp_path}"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=1"), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == before
    (tmp_path / "file").write_text("")
    with pytest.raises(config.ConfigError, match="not a directory"):
        train.train_and_evaluate(_cfg("iris_two_layer"), tmp_path / "file")


@pytest.mark.parametrize(
    "override, key",
    [("train.batch_size=8", "train.batch_size"), ("seed=3", "seed"), ("data.n_train=60", "data.n_train"),
     ("model.args.activation=tanh", "model.args")],
)
def test_resume_refuses_a_config_that_changes_what_a_step_means_and_leaves_the_run_resumable(tmp_path, override, key):
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=1"), tmp_path)
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(config.ConfigError, match=f"'{key}' was .* in that run"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2", override), tmp_path, resume=True)
    assert (tmp_path / "config.yaml").read_text() == saved
    with pytest.raises(config.ConfigError, match="does not match .* optimizer.name .*--out"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2", "optimizer.name=adam"), tmp_path, resume=True)
    resumed = train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2", "train.eval_every=2"), tmp_path, resume=True)
    assert resumed["steps"] == 14


def test_resume_refuses_a_schedule_that_would_rewrite_the_steps_already_taken(tmp_path):
    """A cosine schedule stretched from 2 to 4 epochs would raise the learning rate back up at the
    resumed step, and config.yaml would describe a run that never happened: refused, naming the key
    and the first step whose rate differs; more epochs of a constant schedule are fine."""
    cosine = ("schedule.name=cosine", "train.epochs=2")
    train.train_and_evaluate(_cfg("iris_two_layer", *cosine), tmp_path)
    saved = (tmp_path / "config.yaml").read_text()
    rates = [r["learning_rate"] for r in train.read_metrics(tmp_path) if "learning_rate" in r]
    with pytest.raises(config.ConfigError, match=r"train.epochs 2 -> 4 changes the learning rate of steps the run "
                                                 rf"has taken \(step 2: {rates[1]:.4g} in the run, .* now\).*--out"):
        train.train_and_evaluate(_cfg("iris_two_layer", *cosine, "train.epochs=4"), tmp_path, resume=True)
    with pytest.raises(config.ConfigError, match=r"optimizer.learning_rate 0.1 -> 0.05, train.epochs 2 -> 4 changes "
                                                 r"the learning rate of steps the run has taken \(step 1: 0.1 in"):
        train.train_and_evaluate(_cfg("iris_two_layer", *cosine, "train.epochs=4", "optimizer.learning_rate=0.05"),
                                 tmp_path, resume=True)
    assert (tmp_path / "config.yaml").read_text() == saved
    constant = tmp_path / "constant"
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), constant)
    assert train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=3"), constant, resume=True)["steps"] == 21
    assert config.load(constant / "config.yaml").train.epochs == 3  # config.yaml describes the run as it went


def test_resume_refuses_an_end_the_run_has_passed_and_changes_to_a_finished_run(tmp_path):
    train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2"), tmp_path)
    with pytest.raises(config.ConfigError, match="has taken 14 steps, more than the 7 of train.epochs=1"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=1"), tmp_path, resume=True)
    with pytest.raises(config.ConfigError, match=r"run is complete \(14 steps\), so the changes train.log_every 1 -> 3 "
                                                 r"do not apply to it"):
        train.train_and_evaluate(_cfg("iris_two_layer", "train.epochs=2", "train.log_every=3"), tmp_path, resume=True)


@pytest.mark.parametrize(
    "overrides, words",
    [(("model.name=mlp", "model.args={sizes: [4, 8, 2]}"), "values in \\[0, 2\\)"),  # 3 iris classes, 2 outputs
     (("model.name=logistic_regression", "model.args={n: 4}"), "sigmoid_bce")],  # classes 0-2 for a {0,1} head
)
def test_labels_that_do_not_fit_the_head_stop_the_run_before_it_writes_anything(tmp_path, overrides, words):
    with pytest.raises(_data.DataError, match=f"data 'iris' .*{words}.*one_vs_rest"):
        train.train_and_evaluate(_cfg("iris_two_layer", *overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_regression_run_draws_no_empty_accuracy_plot(tmp_path):
    cfg = _cfg("iris_one_layer", "model.name=multiple_linear_regression", "model.args={n: 4}",
               "optimizer.learning_rate=0.01", "train.epochs=2")
    assert train.train_and_evaluate(cfg, tmp_path)["test_accuracy"] is None
    assert (tmp_path / "loss.png").is_file() and not (tmp_path / "accuracy.png").exists()


def test_logged_learning_rates_are_the_ones_each_step_used_and_the_last_epoch_is_evaluated(tmp_path):
    """optax counts steps from 0, so step t (1-based, as logged) used schedule(t - 1); with an epoch
    count that eval_every does not divide, the last epoch is still evaluated and recorded."""
    cfg = _cfg("iris_two_layer", "train.epochs=3", "train.eval_every=2", "schedule.name=cosine",
               "schedule.warmup_epochs=1")
    summary = train.train_and_evaluate(cfg, tmp_path)
    schedule = train.make_schedule(cfg.schedule, cfg.optimizer.learning_rate, 7, 3)
    records = train.read_metrics(tmp_path)
    logged = [(r["step"], r["learning_rate"]) for r in records if "learning_rate" in r]
    assert logged[0] == (1, 0.0) and len(logged) == 21
    np.testing.assert_allclose([lr for _, lr in logged], [float(schedule(t - 1)) for t, _ in logged], rtol=1e-6)
    evals = [(r["step"], r["epoch"], r["test_loss"]) for r in records if "test_loss" in r]
    assert [e[:2] for e in evals] == [(14, 2), (21, 3)]
    assert evals[-1][2] == pytest.approx(summary["test_loss"])


def test_binary_accuracy_counts_z_above_zero_against_the_0_1_targets():
    net = config.build_model(config.ModelConfig("logistic_regression", {"n": 3}))
    params = [{"W": jnp.array([[1.0], [-2.0], [0.5]]), "b": jnp.array([-0.25])}]
    x = jax.random.normal(jax.random.key(0), (40, 3))
    y = (jax.random.uniform(jax.random.key(1), (40,)) < 0.5).astype(jnp.int32)
    z = x @ params[0]["W"] + params[0]["b"][None]
    _, acc = train.make_evaluate(net, chunk=16)(params, x, y)
    assert 0 < acc < 1 and acc == pytest.approx(float(jnp.mean((z[:, 0] > 0) == (y == 1))))


def test_an_interrupt_during_evaluation_stays_a_keyboard_interrupt(monkeypatch):
    """Ctrl-C or SIGTERM (cli: SIGTERM raises KeyboardInterrupt) may land while evaluate turns its
    chunk sums into numbers; it must reach train_and_evaluate's handler, which saves a checkpoint.
    NumPy converting a list of device arrays swallowed it into 'setting an array element with a
    sequence' (seen as a run killed by SIGTERM that exited 1 without saving)."""
    net = config.build_model(config.ModelConfig("one_layer_classifier", {}))
    params, x, y = net.init(jax.random.key(0)), jnp.ones((40, 4)), jnp.zeros(40, jnp.int32)
    evaluate = train.make_evaluate(net, chunk=16)
    evaluate(params, x, y)  # compiled before the interrupt is armed

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(jnp.ones(())), "__float__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        evaluate(params, x, y)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_that_python_drops_still_stops_the_run_at_the_next_step_with_a_checkpoint(tmp_path, monkeypatch, signum):
    """A handler's KeyboardInterrupt raised inside a `__del__` or a gc callback (JAX has one) is
    dropped by Python; a SIGTERM lost that way once left CI's run training forever. The run must
    still stop before its next step and save that step's checkpoint, without Python's 'Exception
    ignored in ...' report (a traceback from inside JAX that looks like a crash)."""
    before = signal.getsignal(signum)
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signum)  # runs the handler here, whose exception Python drops

    _interrupted_run(_cfg("iris_two_layer", "train.epochs=3", "train.checkpoint_every=1000"), tmp_path, monkeypatch,
                     "make_train_step", 4, interrupt=SignalledWhileCollected, match=signum.name)
    with np.load(tmp_path / train.CHECKPOINT) as f:
        assert int(f["step"]) == 5  # the fifth step ran; the sixth did not
    assert signal.getsignal(signum) is before
    assert not reported and sys.unraisablehook == reported.append  # silenced, then given back
