"""The `jaxbp` command: load a config, apply overrides, dispatch. Nothing else lives here.

    jaxbp train [CONFIG] [--set KEY.PATH=VALUE ...] [--out DIR] [--resume RUN_DIR]
    jaxbp check CONFIG [--set ...] [--batch N]

CONFIG is a YAML path or a packaged config's name (iris_one_layer, mnist_lenet_300_100, ...).
Exit codes: 0 success, 1 divergence or a failed check, 2 a user error (bad config, missing data),
130 interrupted by Ctrl-C or SIGTERM (a checkpoint was saved).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from jaxbp import check as _check
from jaxbp import config as _config
from jaxbp import data as _data
from jaxbp import train as _train

DEFAULT_CONFIG = "iris_one_layer"
SET_HELP = "override one config key, e.g. optimizer.learning_rate=0.01 (repeatable; a YAML value)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (_config.ConfigError, _data.DataError) as e:
        print(f"jaxbp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except _train.Diverged as e:
        print(f"jaxbp {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\njaxbp {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxbp", description="Train and check jaxbp networks from YAML configs.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a config; writes a run directory")
    train.add_argument("config", nargs="?", help=f"YAML path or packaged name (default: {DEFAULT_CONFIG}; "
                       "with --resume: the run's saved config)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)
    train.add_argument("--out", type=_directory, help="run directory (default: runs/<config>-<timestamp>)")
    train.add_argument("--resume", type=_directory, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.set_defaults(run=_cmd_train)
    check = sub.add_parser("check", help="compare jaxbp's gradient and Jacobian with jax.grad/jax.jacrev")
    check.add_argument("config", help="YAML path or packaged name")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE", help=SET_HELP)
    check.add_argument("--batch", type=int, default=4, help="examples for the Jacobian check (default 4)")
    check.set_defaults(run=_cmd_check)
    return parser


def _directory(text: str) -> Path:
    """argparse type of --out and --resume: a non-empty path (an unset shell variable gives '')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    return Path(text)


def _cmd_train(args) -> int:
    made = None  # a run directory made here, removed again if the run never starts
    if args.resume:
        if args.out:
            raise _config.ConfigError(f"--out {args.out} with --resume {args.resume}: a resumed run continues in "
                                      f"its own directory; give only --resume")
        if args.resume.is_file():
            raise _config.ConfigError(f"--resume {args.resume}: a file; --resume takes the run's directory, "
                                      f"e.g. --resume {args.resume.parent}")
        if not (args.resume / "config.yaml").is_file():
            raise _config.ConfigError(f"--resume {args.resume}: not a run directory (no config.yaml)")
        cfg = _config.load(args.config or args.resume / "config.yaml", args.overrides)
        workdir = args.resume
    else:
        cfg = _config.load(args.config or DEFAULT_CONFIG, args.overrides)
        if args.out is None:
            workdir = made = _new_run_dir(Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        else:
            workdir, made = args.out, _make_out_dir(args.out)
    print(f"jaxbp train: {cfg.name} -> {workdir}")
    try:  # a job scheduler stops a run with SIGTERM: treat it as Ctrl-C, which saves a checkpoint
        summary = _train.train_and_evaluate(cfg, workdir, resume=args.resume is not None,
                                            stop_signals=(signal.SIGINT, signal.SIGTERM))
    except KeyboardInterrupt:
        if (workdir / _train.CHECKPOINT).is_file():
            print(f"\ncheckpoint saved; continue with: jaxbp train --resume {workdir}", file=sys.stderr)
        else:
            print("\nnothing saved: the run stopped before its first step", file=sys.stderr)
        raise
    finally:
        if made is not None and not any(made.iterdir()):
            made.rmdir()
    _print_summary(summary, workdir)
    return 0


def _make_out_dir(path: Path) -> Path | None:
    """Create --out's directory before any data is loaded (so a path that cannot be made fails at once);
    returns it if it was made here, None if something was already there (train checks what)."""
    if path.exists():
        return None
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise _config.ConfigError(f"--out {path}: cannot create the run directory ({e.strerror}); choose another --out") from None
    return path


def _new_run_dir(base: Path) -> Path:
    """Create and return `base`, or `base-2`, `base-3`, ... if taken (runs started the same second)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    path, i = base, 1
    while True:
        try:
            path.mkdir()  # atomic: of two runs racing for a name, one gets it
            return path
        except FileExistsError:
            i += 1
            path = base.with_name(f"{base.name}-{i}")


def _print_summary(s: dict, workdir: Path) -> None:
    acc = "n/a" if s["test_accuracy"] is None else f"{100 * s['test_accuracy']:.2f}%"
    rows = [
        ("model", f"{s['config']['model']['name']} ({s['n_params']} parameters"
                  + (f", {s['nonzero_params']} nonzero)" if s["config"]["optimizer"]["sparsity"] else ")")),
        ("data", s["config"]["data"]["name"]),
        ("optimizer", f"{s['config']['optimizer']['name']}, lr {s['config']['optimizer']['learning_rate']}, "
                      f"{s['config']['schedule']['name']} schedule"),
        ("epochs / steps", f"{s['epochs']} / {s['steps']}"),
        ("train loss", f"{s['train_loss']:.4f}" if s["train_loss"] is not None else "n/a"),
        ("test loss", f"{s['test_loss']:.4f}"),
        ("test accuracy", acc),
        ("wall time", f"{s['wall_time_s']:.1f} s" + (f" (since resuming at step {s['resumed_from_step']})"
                                                    if s.get("resumed_from_step") is not None else "")),
        ("throughput", f"{s['examples_per_s']:.0f} examples/s" if s["examples_per_s"] else "n/a"),
        ("device", s["device"] + (f" x {s['devices']} (data parallel)" if s.get("devices", 1) > 1 else "")),
        ("run directory", str(workdir)),
    ]
    print("\n".join(f"  {k:<15} {v}" for k, v in rows))


def _cmd_check(args) -> int:
    if args.batch < 1:
        raise _config.ConfigError(f"--batch: expected a positive number of examples, got {args.batch}")
    r = _check.against_autodiff(_config.load(args.config, args.overrides), args.batch)
    print(f"jaxbp check: {r.name}, {r.n_params} parameters, {r.dtype}, gradient on a batch of {r.batch}, "
          f"Jacobian on {r.n_jacobian} examples")
    print(f"  {'layer':<6}{'param':<6}{'grad max abs':>14}{'grad max rel':>14}{'J max abs':>12}{'J max rel':>12}")
    for e in r.errors:
        print(f"  {e.layer:<6}{e.param:<6}{e.grad_abs:>14.2e}{e.grad_rel:>14.2e}{e.jac_abs:>12.2e}{e.jac_rel:>12.2e}")
    print(f"  max relative error {r.worst:.2e} ({'ok' if r.ok else 'FAILED'}: tolerance {r.tolerance:.0e})")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
