"""Training (Fig. 1: data -> forward -> loss -> gradient -> SGD update), one config per run.

`train_and_evaluate(cfg, workdir)` is the whole run. The step is the optax idiom unchanged
(`optimizer.update`, then `optax.apply_updates`, in one jitted function); only the source of the
gradient is jaxbp's Algorithm 1 (`jaxbp.value_and_grad_fn`), and `train.grad: jax` swaps in
`jax.value_and_grad(net.loss)` as a benchmark mode of the same code.

The run directory holds `config.yaml` (resolved), `metrics.jsonl`, `checkpoint.npz` (written to a
temporary file, then renamed, so a crash never leaves a torn checkpoint), `summary.json` and the
plots `loss.png` and (for heads with an accuracy) `accuracy.png`. With `parallel.data: N` every
step's batch is split over N devices and the parameters are replicated (`jaxbp.parallel`,
docs/sharding.md); the batch size stays the global one, and in a multi-host run only process 0
writes the run directory. Resuming restores params, optimizer state, step and the losses of the
epoch in progress; since an epoch's batch order depends only on (seed, epoch), the resumed run
ends where an uninterrupted one would, with the same metrics. A run directory is written only once
the config, the data and (on resume) the checkpoint have been checked, and a new run never
overwrites an old one.
"""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from tqdm import tqdm

from jaxbp import _signals
from jaxbp import data as _data
from jaxbp import parallel as _parallel
from jaxbp.config import Config, ConfigError, OptimizerConfig, ScheduleConfig, build_model, load
from jaxbp.jacobian import value_and_grad_fn
from jaxbp.network import Network, Params
from jaxbp.sparse import hard_threshold

Array = jax.Array
CHECKPOINT = "checkpoint.npz"


class Diverged(RuntimeError):
    """The loss or the gradient stopped being finite; the last good checkpoint is kept."""


class TrainState(NamedTuple):
    """What a checkpoint holds; `losses` are the training losses of the epoch in progress so far."""

    params: Params
    opt_state: optax.OptState
    step: int
    losses: Sequence[float] = ()


def make_schedule(cfg: ScheduleConfig, learning_rate: float, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """The learning rate per step: an optional linear warmup, then constant/cosine/exponential/step."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    rest = max(epochs * steps_per_epoch - warmup, 1)
    if cfg.name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif cfg.name == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, rest, alpha=cfg.alpha)
    else:  # e epochs after warmup: lr * decay_rate ** (e / decay_every), floor(e / decay_every) for step
        main = optax.exponential_decay(
            learning_rate, max(round(cfg.decay_every * steps_per_epoch), 1), cfg.decay_rate,
            staircase=cfg.name == "step",
        )
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), main], [warmup])


def make_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """optax by name; weight decay adds weight_decay * theta to the gradient first (L2); with
    sparsity > 0 the step is projected on the sparse set last (stochastic IHT)."""
    momentum = None if cfg.name in ("sgd", "adam") else cfg.momentum
    opt = optax.adam(schedule) if cfg.name == "adam" else optax.sgd(schedule, momentum, cfg.name == "nesterov")
    decay = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
    iht = [hard_threshold(cfg.sparsity, scope=cfg.sparsity_scope)] if cfg.sparsity else []
    return optax.chain(*decay, opt, *iht) if decay or iht else opt


def gradient(net: Network, grad: str) -> Callable:
    """`(params, x, y) -> (loss, grads)`: Algorithm 1 ("jaxbp") or JAX's reverse mode ("jax")."""
    return value_and_grad_fn(net) if grad == "jaxbp" else jax.value_and_grad(net.loss)


def make_train_step(net: Network, optimizer: optax.GradientTransformation, grad: str = "jaxbp"):
    """A jitted `(params, opt_state, x, y) -> (params, opt_state, loss, finite)`.

    x: (B, *in_shape), y: the head's labels, (B,) or (B, m); `finite` is False when the loss or any
    gradient entry is NaN/inf.
    """
    value_and_grad = gradient(net, grad)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = value_and_grad(params, x, y)
        finite = jax.tree.reduce(
            jnp.logical_and, jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads), jnp.isfinite(loss)
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, finite

    return train_step


def make_grad_check(net: Network):
    """A jitted `(params, x, y) -> error`: jaxbp's gradient against jax.grad's, the largest over the
    parameter arrays of max |g_jaxbp - g_jax| / max |g_jax| (relative, so it does not shrink with
    the gradients as training converges)."""
    ours, oracle = gradient(net, "jaxbp"), gradient(net, "jax")

    @jax.jit
    def grad_check(params, x, y):
        errors = jax.tree.map(lambda a, b: relative_error(a - b, b), ours(params, x, y)[1], oracle(params, x, y)[1])
        return jax.tree.reduce(jnp.maximum, errors)

    return grad_check


def relative_error(diff: Array, ref: Array) -> Array:
    """max |diff| / max |ref|: an error relative to the scale of the reference array (a scalar)."""
    return jnp.max(jnp.abs(diff)) / jnp.maximum(jnp.max(jnp.abs(ref)), jnp.finfo(ref.dtype).tiny)


def make_evaluate(net: Network, chunk: int = 1000):
    """`(params, x, y) -> (mean loss, accuracy or None)` over a whole split, in chunks."""
    head = net.head_fn

    @jax.jit
    def sums(params, x, y):
        z = net.apply(params, x)
        loss = jnp.sum(head.loss(z, head.target(y, net.m, z.dtype)))
        if head.labels == "real":  # regression: no accuracy
            return loss, jnp.zeros((), jnp.int32)
        if head.labels == "classes":
            correct = jnp.argmax(z, -1) == y
        else:  # a {0,1} target is predicted by z > 0, i.e. sigmoid(z) > 1/2
            correct = jnp.all((z > 0) == (y.reshape(z.shape) > 0), -1)
        return loss, jnp.sum(correct)

    def evaluate(params, x, y) -> tuple[float, float | None]:
        parts = [sums(params, x[i : i + chunk], y[i : i + chunk]) for i in range(0, len(x), chunk)]
        # summed as JAX arrays, then float(): NumPy turning this list into an array would swallow a
        # Ctrl-C / SIGTERM arriving meanwhile into a ValueError, and the run would end unsaved
        loss, correct = (float(sum(part[k] for part in parts)) for k in (0, 1))
        return loss / len(x), None if head.labels == "real" else correct / len(x)

    return evaluate


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace `path` whole or not at all: `write` fills a temporary file beside it, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _write_atomically(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write the state to `path` atomically (temporary file, then rename)."""
    leaves = jax.tree.leaves((state.params, state.opt_state))
    _write_atomically(path, lambda f: np.savez(f, *leaves, step=state.step, losses=np.asarray(state.losses, np.float64)))


def load_checkpoint(path: Path, template: TrainState) -> TrainState:
    """Read a checkpoint into the structure of `template` (a fresh state of the same config)."""
    leaves, treedef = jax.tree.flatten((template.params, template.opt_state))
    try:
        with open(path, "rb") as fh, np.load(fh) as f:  # fh: closed even when np.load fails
            saved = [f[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in f.files))]
            step = int(f["step"])
            losses = [float(v) for v in f["losses"]] if "losses" in f.files else []
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); it is not a checkpoint that "
            f"jaxbp wrote whole, so this run cannot be resumed (start a new run with --out instead)"
        ) from None
    if [(a.shape, a.dtype) for a in saved] != [(np.shape(a), np.asarray(a).dtype) for a in leaves]:
        raise ConfigError(
            f"checkpoint {path} does not match the config's model and optimizer: resume with the run's "
            f"own model and optimizer.name (see its config.yaml), or start a new run with --out instead"
        )
    params, opt_state = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in saved])
    return TrainState(params, opt_state, step, losses)


def train_and_evaluate(cfg: Config, workdir: str | Path, resume: bool = False,
                       stop_signals: Sequence[signal.Signals] = (signal.SIGINT,)) -> dict[str, Any]:
    """Run `cfg`, writing everything to `workdir`; returns the summary (also `summary.json`).

    With resume=True, continues from `workdir/checkpoint.npz` (a run already complete returns its
    summary); otherwise `workdir` must not hold a run yet. Raises `Diverged` when the loss or
    gradient is not finite. Each of `stop_signals` (the `jaxbp` command adds SIGTERM) raises
    KeyboardInterrupt, which saves a checkpoint and is re-raised; one that Python drops (it
    arrived inside a garbage-collector callback) is raised again before the next step.
    """
    with _signals.stop_on(stop_signals) as check:
        return _train_and_evaluate(cfg, Path(workdir), resume, check)


def _train_and_evaluate(cfg: Config, workdir: Path, resume: bool, check: Callable[[], None]) -> dict[str, Any]:
    _parallel.initialize_from_env()
    primary = jax.process_index() == 0  # the one process that writes the run directory
    tc = cfg.train
    mesh = _parallel.data_mesh(cfg.parallel.data)
    _parallel.check_batch_size(mesh, tc.batch_size)
    ckpt = workdir / CHECKPOINT
    _check_workdir(workdir, cfg, resume)
    net = build_model(cfg.model)
    ds = _data.load(cfg.data, net.in_shape, cfg.seed)
    _data.check_labels(ds, net, cfg.data)
    steps_per_epoch = len(ds.x_train) // tc.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"config key 'train.batch_size': got {tc.batch_size}, expected at most the {len(ds.x_train)} training examples"
        )
    total_steps = tc.epochs * steps_per_epoch
    schedule = make_schedule(cfg.schedule, cfg.optimizer.learning_rate, steps_per_epoch, tc.epochs)
    optimizer = make_optimizer(cfg.optimizer, schedule)
    params = net.init(jax.random.key(cfg.seed))
    state = TrainState(params, optimizer.init(params), 0)
    resumed_from_step = None
    if resume:
        state = load_checkpoint(ckpt, state)
        resumed_from_step = state.step
        if (workdir / "config.yaml").is_file():
            _check_continues(workdir, cfg, load(workdir / "config.yaml"), state.step, total_steps, steps_per_epoch, schedule)
        if state.step >= total_steps and (workdir / "summary.json").is_file():
            tqdm.write(f"run already complete ({state.step} steps); its summary:")
            return json.loads((workdir / "summary.json").read_text())
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
        _write_text(workdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    state = state._replace(params=_parallel.replicate(mesh, state.params), opt_state=_parallel.replicate(mesh, state.opt_state))
    save = save_checkpoint if primary else lambda path, state: None
    train_step = make_train_step(net, optimizer, tc.grad)
    grad_check = make_grad_check(net) if tc.verify_every else None
    evaluate = make_evaluate(net)
    metrics = _Metrics(workdir / "metrics.jsonl", keep_until=state.step, write=primary)

    t_start, t_train, n_seen = time.perf_counter(), 0.0, 0
    try:
        while True:
            epoch, start = divmod(state.step, steps_per_epoch)  # epochs done, steps into the next
            due = epoch % tc.eval_every == 0 or state.step == total_steps
            if state.step and not start and due and state.step not in metrics.evals:
                test_loss, test_acc = evaluate(state.params, ds.x_test, ds.y_test)
                train_loss = float(np.mean(state.losses)) if state.losses else None
                metrics.write(step=state.step, epoch=epoch, train_loss=train_loss, test_loss=test_loss, accuracy=test_acc)
                if epoch % max(tc.epochs // 20, 1) == 0 or state.step == total_steps:  # about 20 lines a run
                    tqdm.write(f"epoch {epoch}/{tc.epochs}: train loss {_fmt(train_loss, '.4f')}, "
                               f"test loss {test_loss:.4f}, test accuracy {_fmt(test_acc, '.2%')}")
            if state.step >= total_steps:
                break
            losses = list(state.losses) if start else []  # this epoch's, kept in the checkpoint
            logged = max(_last_log(state.step, tc) - (state.step - start), 0)  # losses[logged:]: since the last log line
            bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="step",
                       leave=False, disable=None)
            t_epoch = time.perf_counter()
            for x, y in _data.batches(ds.x_train, ds.y_train, tc.batch_size, cfg.seed, epoch, start):
                check()
                x, y = _parallel.shard_batch(mesh, x, y)
                params, opt_state, loss, finite = train_step(state.params, state.opt_state, x, y)
                if not finite:
                    raise Diverged(
                        f"diverged at step {state.step + 1} (epoch {epoch + 1}): loss {float(loss)}, "
                        f"or a gradient entry, is not finite. Last good checkpoint: "
                        f"{ckpt if ckpt.exists() else 'none written yet'}. Try a smaller optimizer.learning_rate."
                    )
                losses.append(float(loss))
                state = TrainState(params, opt_state, state.step + 1, losses)
                n_seen += tc.batch_size
                rate = ((len(losses) - start) * tc.batch_size) / max(time.perf_counter() - t_epoch, 1e-9)
                bar.update()
                running = float(np.mean(losses[logged:]))  # the loss since the last log line
                bar.set_postfix(loss=f"{running:.4f}", ex_s=f"{rate:.0f}", refresh=False)
                record: dict[str, Any] = {}
                if grad_check and state.step % tc.verify_every == 0:
                    record["grad_check_error"] = float(grad_check(params, x, y))
                if state.step % tc.log_every == 0 or record:
                    metrics.write(step=state.step, epoch=state.step / steps_per_epoch, loss=running,
                                  learning_rate=float(schedule(state.step - 1)), examples_per_s=rate, **record)
                    logged = len(losses)
                if state.step % tc.checkpoint_every == 0:
                    save(ckpt, state)
            bar.close()
            t_train += time.perf_counter() - t_epoch
    except KeyboardInterrupt:
        save(ckpt, state)
        raise
    finally:
        metrics.close()
    save(ckpt, state)
    test_loss, test_acc = metrics.evals.get(state.step) or evaluate(state.params, ds.x_test, ds.y_test)
    summary = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_loss": float(np.mean(state.losses)) if state.losses else None,
        "epochs": tc.epochs,
        "steps": state.step,
        "wall_time_s": time.perf_counter() - t_start,  # of this process: since resuming, if it did
        "resumed_from_step": resumed_from_step,
        "examples_per_s": n_seen / t_train if t_train else None,
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
        "devices": mesh.size,
        "n_params": net.n_params,
        "nonzero_params": int(sum(np.count_nonzero(np.asarray(v)) for v in jax.tree.leaves(state.params))),
        "config": cfg.to_dict(),
    }
    if primary:
        _write_text(workdir / "summary.json", json.dumps(summary, indent=2))
        plot(workdir)
    return summary


def _check_workdir(workdir: Path, cfg: Config, resume: bool) -> None:
    """ConfigError unless `workdir` can take this run: a directory (or nothing yet); holding a
    checkpoint of the same data, model, seed and batch size if resuming, and no run otherwise."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"run directory {workdir}: exists and is not a directory; choose another --out")
    if not resume:
        if (workdir / CHECKPOINT).exists():
            raise ConfigError(
                f"run directory {workdir} already holds a run; continue it with "
                f"`jaxbp train --resume {workdir}`, or choose another --out"
            )
        if (workdir / "metrics.jsonl").exists():
            raise ConfigError(
                f"run directory {workdir} already holds a run that stopped before its first checkpoint "
                f"(nothing to resume); remove that directory, or choose another --out"
            )
        return
    if not (workdir / CHECKPOINT).is_file():
        raise ConfigError(
            f"--resume {workdir}: no {CHECKPOINT} there to resume from (a run that stopped before its "
            f"first checkpoint starts again with --out)"
        )
    saved_file = workdir / "config.yaml"
    saved = _flatten(yaml.safe_load(saved_file.read_text()) or {}) if saved_file.is_file() else {}
    for key, value in _flatten(cfg.to_dict()).items():
        fixed = key in ("seed", "train.batch_size") or key.startswith(("data.", "model.")) and key != "data.data_dir"
        if fixed and key in saved and saved[key] != value:
            raise ConfigError(
                f"--resume {workdir}: config key {key!r} was {saved[key]!r} in that run and is {value!r} now; "
                f"the checkpoint's step counts batches of the run's own data, model, seed and batch size, "
                f"so these cannot change on resume (start a new run with --out instead)"
            )


def _check_continues(
    workdir: Path, cfg: Config, run_cfg: Config, step: int, total_steps: int, steps_per_epoch: int,
    schedule: optax.Schedule,
) -> None:
    """ConfigError unless `cfg`, resuming the run of `run_cfg` at `step`, describes the steps it took.

    The run must not have passed the new end already, a finished run takes no changes unless it goes
    on, and the learning rate must be the run's at every step taken (a cosine schedule stretched over
    more epochs would jump back up, and config.yaml would describe a run that never happened).
    """
    new, old = _flatten(cfg.to_dict()), _flatten(run_cfg.to_dict())
    changed = [k for k in new if k != "data.data_dir" and old.get(k) != new[k]]
    what = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in changed)
    if step > total_steps:
        raise ConfigError(f"--resume {workdir}: the run has taken {step} steps, more than the {total_steps} of "
                          f"train.epochs={cfg.train.epochs}; resume with at least its own train.epochs")
    if step == total_steps and changed and (workdir / "summary.json").is_file():
        raise ConfigError(f"--resume {workdir}: the run is complete ({step} steps), so the changes {what} do not "
                          f"apply to it; start a new run with --out instead")
    if not step or not changed:
        return
    taken = jnp.arange(step)
    before = make_schedule(run_cfg.schedule, run_cfg.optimizer.learning_rate, steps_per_epoch, run_cfg.train.epochs)
    lr_old, lr_new = (np.asarray(jax.vmap(s)(taken)) for s in (before, schedule))
    differ = np.flatnonzero(~np.isclose(lr_old, lr_new, rtol=1e-6, atol=0))
    if differ.size:
        i = int(differ[0])
        raise ConfigError(
            f"--resume {workdir}: {what} changes the learning rate of steps the run has taken (step {i + 1}: "
            f"{lr_old[i]:.4g} in the run, {lr_new[i]:.4g} now); a resumed run continues its own schedule, so keep "
            f"those keys (more epochs are fine with a constant schedule), or start a new run with --out"
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; mappings under `model.args` count as values."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and prefix + k != "model.args":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _last_log(step: int, tc) -> int:
    """The last step <= `step` that wrote a running-loss line (and restarted its window)."""
    marks = [step - step % tc.log_every] + ([step - step % tc.verify_every] if tc.verify_every else [])
    return max(marks)


class _Metrics:
    """Appends one JSON object per line to metrics.jsonl, after dropping lines past `keep_until`.

    On resume, records logged after the checkpoint being resumed are replayed, so they are dropped.
    Every process reads the kept records (to know which evaluations are done); only one with
    write=True (process 0 of a multi-host run) writes.
    """

    def __init__(self, path: Path, keep_until: int, write: bool = True):
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [(l, r) for l, r in _parse_lines(lines) if r["step"] <= keep_until]
        self.evals = {}  # step -> (test loss, accuracy) of the evaluations recorded
        for _, record in kept:
            self._note(record)
        self.file = None
        if write:
            _write_text(path, "".join(l + "\n" for l, _ in kept))
            self.file = open(path, "a")

    def _note(self, record: dict[str, Any]) -> None:
        if "test_loss" in record:
            self.evals[record["step"]] = (record["test_loss"], record["accuracy"])

    def write(self, **record: Any) -> None:
        self._note(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _parse_lines(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each JSON line; a last line torn by a crash while it was written is dropped."""
    parsed = []
    for i, line in enumerate(lines):
        try:
            parsed.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return parsed


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (a last line torn by a crash is dropped, as at resume)."""
    return [record for _, record in _parse_lines((Path(workdir) / "metrics.jsonl").read_text().splitlines())]


def plot(workdir: str | Path) -> None:
    """loss.png (running training loss, test loss) and, when the head has one, accuracy.png
    (test accuracy) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    curves = {
        "loss.png": [("training loss (running)", "loss"), ("test loss", "test_loss")],
        "accuracy.png": [("test accuracy", "accuracy")],
    }
    for name, series in curves.items():
        lines = {label: [(r["epoch"], r[key]) for r in records if r.get(key) is not None] for label, key in series}
        lines = {label: points for label, points in lines.items() if points}
        if not lines:  # e.g. no accuracy for a regression head
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in lines.items():
            ax.plot(*zip(*points), label=label, marker="." if len(points) < 50 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.removesuffix(".png"))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(workdir) / name, dpi=100)
        plt.close(fig)
