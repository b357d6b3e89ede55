"""The `jaxbp` command: exit codes and messages; user errors never show a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check, cli, config

REPO = Path(__file__).resolve().parents[1]


def _jaxbp(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jaxbp.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_train_without_a_config_runs_the_iris_default_into_runs(tmp_path):
    result = _jaxbp("train", "--set", "train.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("iris_one_layer-")
    assert "test accuracy" in result.stdout and json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_a_config_error_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = _jaxbp("train", "--set", "optimizer.name=adamw", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'optimizer.name': got 'adamw', expected one of: sgd, momentum, nesterov, adam" in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "no_such_config"], "no such file"),
        (["train", "smoke", "--set", "data.data_dir=/nonexistent"], "tfds build mnist"),
        (["train", "--resume", "/nonexistent"], "not a run directory"),
        (["train", "--resume", "/nonexistent", "--out", "/nonexistent2"], "give only --resume"),
        (["check", "iris_one_layer", "--set", "train.batch_size=0"], "'train.batch_size'"),
        (["check", "iris_one_layer", "--batch", "0"], "--batch: expected a positive number of examples, got 0"),
        (["check", "iris_one_layer", "--batch", "-3"], "got -3"),
        (["train", "--out", "/proc/no_run_here"], "--out /proc/no_run_here: cannot create the run directory"),
        (["train", "--out", "/dev/null/run"], "--out /dev/null/run: cannot create the run directory (Not a directory)"),
    ],
)
def test_user_errors_exit_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a train without --out makes runs/ in the working directory
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxbp {argv[0]}: error:") and message in err


def test_an_empty_out_or_resume_path_is_refused_not_read_as_the_working_directory(tmp_path, monkeypatch, capsys):
    """`--out "$OUTDIR"` with the variable unset must not write a run into the working directory."""
    monkeypatch.chdir(tmp_path)
    for flag in ("--out", "--resume"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["train", flag, ""])
        assert exit_.value.code == 2
        assert f"argument {flag}: expected a directory, got an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_resume_given_the_run_s_config_file_points_to_its_directory(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "run" / "config.yaml")]) == 2
    assert f"a file; --resume takes the run's directory, e.g. --resume {tmp_path / 'run'}" in capsys.readouterr().err


def test_the_summary_of_a_sparse_run_counts_its_nonzero_parameters(tmp_path, capsys):
    argv = ["train", "iris_two_layer", "--out", str(tmp_path), "--set", "train.epochs=1", "--set", "optimizer.sparsity=0.5"]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["nonzero_params"] == 22  # 43 - floor(0.5 * 43)
    assert "(43 parameters, 22 nonzero)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "check"])
def test_help_describes_every_argument(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "override one config key" in out and "YAML path or packaged name" in out


def test_divergence_exits_1_and_names_the_step(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path), "--set", "model={name: multiple_linear_regression, args: {n: 4}}",
            "--set", "optimizer.learning_rate=1e6"]
    assert cli.main(argv) == 1
    assert "diverged at step" in capsys.readouterr().err


def test_resume_continues_a_finished_run_for_more_epochs(tmp_path, capsys):
    assert cli.main(["train", "iris_two_layer", "--out", str(tmp_path), "--set", "train.epochs=2"]) == 0
    assert "since resuming" not in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(tmp_path), "--set", "train.epochs=3"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 21
    assert "(since resuming at step 14)" in capsys.readouterr().out  # the wall time is this process's


def test_the_printed_summary_names_the_number_of_devices_of_a_data_parallel_run(tmp_path, capsys):
    assert cli.main(["train", "iris_one_layer", "--out", str(tmp_path), "--set", "train.epochs=1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "data parallel" not in capsys.readouterr().out
    cli._print_summary({**summary, "devices": 4}, tmp_path)
    assert f"{summary['device']} x 4 (data parallel)" in capsys.readouterr().out


def test_check_prints_a_per_layer_table_of_small_errors(capsys, tfds_dir):
    assert cli.main(["check", "smoke", "--set", f"data.data_dir={tfds_dir}", "--set", "model.args.sizes=[784, 16, 12, 10]"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert [r[:2] for r in rows] == [["1", "W"], ["1", "b"], ["2", "W"], ["2", "b"], ["3", "W"], ["3", "b"]]
    assert max(float(v) for r in rows for v in (r[3], r[5])) <= 1e-5
    assert re.search(r"max relative error \S+ \(ok: tolerance 1e-05\)$", out.rstrip())


def test_the_check_is_a_library_function_that_returns_each_array_s_errors():
    """`jaxbp check` only prints `check.against_autodiff`'s report, which notebooks can use too."""
    report = check.against_autodiff(config.load("iris_two_layer"), n_jacobian=3)
    assert [(e.layer, e.param) for e in report.errors] == [(1, "W"), (1, "b"), (2, "W"), (2, "b")]
    assert (report.batch, report.n_jacobian, report.n_params) == (16, 3, 43)
    assert report.ok and report.worst <= report.tolerance == 1e-5
    assert all(e.grad_rel <= 1e-5 and e.jac_rel <= 1e-5 for e in report.errors)
    with pytest.raises(ValueError, match="n_jacobian: expected a positive int, got 0"):
        check.against_autodiff(config.load("iris_two_layer"), n_jacobian=0)


def test_check_reports_the_jacobian_error_of_each_parameter_array(capsys, monkeypatch):
    """An error in the J columns of layer 1's b only shows in that row, and fails the check."""
    real = check.jacobian

    def jacobian_off_in_b1(net, params, x):
        marked = jax.tree.map(jnp.zeros_like, params)
        marked[0]["b"] = jnp.ones_like(marked[0]["b"])
        J = real(net, params, x)
        return J + jnp.broadcast_to(jaxbp.ravel(net, marked), J.shape)

    monkeypatch.setattr(check, "jacobian", jacobian_off_in_b1)
    assert cli.main(["check", "iris_two_layer"]) == 1
    out = capsys.readouterr().out
    J_abs = {tuple(r[:2]): float(r[4]) for r in (line.split() for line in out.splitlines()) if r[:1] in (["1"], ["2"])}
    assert J_abs[("1", "b")] == pytest.approx(1.0)
    assert max(J_abs[("1", "W")], J_abs[("2", "W")], J_abs[("2", "b")]) < 1e-5
    assert "FAILED" in out


def test_check_covers_convolutional_networks(capsys, tfds_dir):
    """LeNet-5's table lists its parameter layers (conv K/b, dense W/b), skipping pooling and flatten."""
    args = ["check", "mnist_lenet5", "--set", f"data.data_dir={tfds_dir}", "--set", "data.n_train=64",
            "--set", "data.n_test=64", "--set", "train.batch_size=8"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert [r[:2] for r in rows] == [[str(l), k] for l, ks in ((1, "Kb"), (3, "Kb"), (6, "Wb"), (7, "Wb"), (8, "Wb")) for k in ks]
    assert max(float(v) for r in rows for v in (r[3], r[5])) <= 1e-5
    assert re.search(r"max relative error \S+ \(ok: tolerance 1e-05\)$", out.rstrip())


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20261129-120000")
    for lr in ("0.1", "0.01"):
        assert cli.main(["train", "--set", "train.epochs=1", "--set", f"optimizer.learning_rate={lr}"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["iris_one_layer-20261129-120000", "iris_one_layer-20261129-120000-2"]
    rates = [json.loads((tmp_path / "runs" / r / "summary.json").read_text())["config"]["optimizer"]["learning_rate"] for r in runs]
    assert rates == [0.1, 0.01]


def test_a_run_that_fails_its_checks_leaves_no_run_directory_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--set", "train.batch_size=1000"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


def test_ctrl_c_before_the_first_step_does_not_promise_a_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._data, "load", interrupt)
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "checkpoint saved" not in err
    assert "nothing saved: the run stopped before its first step" in err


def test_sigterm_from_a_job_scheduler_saves_a_checkpoint_as_ctrl_c_does(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["train", "--out", "run", "--set", "train.epochs=1000000", "--set", "train.log_every=1",
            "--set", "train.checkpoint_every=1000000000"]
    proc = subprocess.Popen([sys.executable, "-m", "jaxbp.cli", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.monotonic() + 120
    try:
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:  # a run that ignored the signal must not outlive the test (and fail the next one)
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130, err
    assert "checkpoint saved; continue with: jaxbp train --resume run" in err
    with np.load(tmp_path / "run" / "checkpoint.npz") as f:
        assert int(f["step"]) >= 3  # the steps run before the signal, not lost


def test_train_runs_from_a_thread_other_than_the_main_one(tmp_path):
    """Only the main thread may install the SIGTERM handler; a run started elsewhere still trains."""
    codes = []
    worker = threading.Thread(target=lambda: codes.append(cli.main(["train", "--out", str(tmp_path / "run"),
                                                                     "--set", "train.epochs=1"])))
    worker.start()
    worker.join()
    assert codes == [0] and (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999"])
def test_a_seed_out_of_range_is_a_config_error(seed, capsys):
    assert cli.main(["train", "--set", f"seed={seed}"]) == 2
    assert "'seed': got" in capsys.readouterr().err


@pytest.mark.parametrize("epochs, shown", [(3, [1, 2, 3]), (50, [*range(2, 51, 2)]), (45, [*range(2, 45, 2), 45])])
def test_output_to_a_file_or_a_pipe_still_reports_the_evaluations(tmp_path, epochs, shown):
    result = _jaxbp("train", "--set", f"train.epochs={epochs}", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in lines] == [f"epoch {e}/{epochs}" for e in shown]
    assert all("test accuracy" in l for l in lines)
