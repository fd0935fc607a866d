"""``gradproof train``: train an autoencoder on MNIST, with checkpoints, metrics and plots.

With no flags it trains the seed network (784-200-784, sigmoid, squared error summed over the
batch, biases) in float32 by SGD with momentum on the bundled 5000-image sample. Everything
goes into ``--out`` (default ``runs/<YYYYmmdd-HHMMSS>``; with ``--resume``, the checkpoint's
own directory)::

    checkpoint.npz     after every epoch; continue with --resume DIR/checkpoint.npz
    metrics.json       options, per-epoch train/test error, loss and seconds, final summary
    loss.png, reconstructions.png, filters.png    unless --no-plots

Progress: a line per epoch, a progress bar on a terminal, plain lines now and then in a log.
Ctrl-C stops the run and says which checkpoint was kept and the command that resumes it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from gradproof.checkpoint import TrainState
from gradproof.cli import EXIT_CODES_TEXT
from gradproof.cli.options import (
    add_blas_option,
    add_data_options,
    add_model_options,
    checkpoint_for_flags,
    data_options,
    model_from_args,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_interval,
)
from gradproof.cli.progress import PlainProgress
from gradproof.data.atomic import atomic_write
from gradproof.data.mnist import load_mnist
from gradproof.errors import InputError
from gradproof.nn.autoencoder import Autoencoder
from gradproof.train import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_METHOD,
    DEFAULT_MOMENTUM,
    DEFAULT_SEED,
    MEAN_LOSS_LEARNING_RATE,
    METHODS,
    EpochDone,
    StepDone,
    TrainEvent,
    TrainResult,
    TrainStarted,
    train,
)

CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"
RUNS_DIR = Path("runs")
# Training runs in float32 by default: it matches float64's errors to three digits on the seed
# network at about half the time. L-BFGS (scipy) needs float64.
DEFAULT_DTYPE = {"gd": "float32", "sgd": "float32", "lbfgs": "float64"}


def add_parser(subparsers: Any) -> None:
    """Declare ``gradproof train`` and its flags."""
    parser = subparsers.add_parser(
        "train",
        help="train an autoencoder on MNIST",
        description="Train an autoencoder on MNIST by gradient descent, writing a checkpoint "
        "after every epoch, metrics.json and PNG plots into --out. Ctrl-C stops it and says how "
        "to resume.",
        epilog=EXIT_CODES_TEXT,
    )
    add_model_options(parser, default_dtype_text="float32, or float64 for lbfgs")
    add_data_options(parser)
    group = parser.add_argument_group("training")
    group.add_argument(
        "--method", choices=list(METHODS),
        help="; ".join(f"{name}: {text}" for name, text in METHODS.items())
        + f" (default: {DEFAULT_METHOD})",
    )
    group.add_argument(
        "--epochs", type=positive_int, metavar="N",
        help=f"epochs to reach, counting those of a resumed checkpoint; for lbfgs, iterations "
        f"(default: {DEFAULT_EPOCHS})",
    )
    group.add_argument(
        "--lr", type=positive_float, metavar="RATE",
        help=f"learning rate (default: {MEAN_LOSS_LEARNING_RATE['sgd']} / batch size for sgd "
        f"and {MEAN_LOSS_LEARNING_RATE['gd']} / training images for gd with the summed loss, "
        f"so 0.005 for sgd over 100 images; those numerators with --reduction mean)",
    )
    group.add_argument(
        "--momentum", type=unit_interval, metavar="MU",
        help=f"momentum in [0, 1) for gd and sgd (default: {DEFAULT_MOMENTUM})",
    )
    group.add_argument(
        "--batch-size", type=positive_int, metavar="N",
        help=f"images per sgd step (default: {DEFAULT_BATCH_SIZE})",
    )
    group.add_argument(
        "--seed", type=nonnegative_int, metavar="N",
        help=f"seeds the initial weights and the shuffling (default: {DEFAULT_SEED})",
    )
    group.add_argument(
        "--limit", type=positive_int, metavar="N",
        help="train on the first N training images only (default: all)",
    )
    add_blas_option(group)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, metavar="DIR",
        help=f"output directory (default: {RUNS_DIR}/<YYYYmmdd-HHMMSS>, or the --resume "
        f"checkpoint's directory)",
    )
    output.add_argument(
        "--resume", type=Path, metavar="CHECKPOINT",
        help="continue from a checkpoint.npz, with its model, optimiser state and options",
    )
    output.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    output.add_argument(
        "--json", action="store_true", help="print the final summary as JSON (no progress)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Train as ``args`` say; return the exit code."""
    started = time.perf_counter()
    state = None
    if args.resume is not None:
        model, params, state = checkpoint_for_flags(
            "--resume", args.resume, args, advice="drop those flags or start a new run"
        )
    else:
        model = model_from_args(args, default_dtype=DEFAULT_DTYPE[args.method or DEFAULT_METHOD])
        params = model.init_params(DEFAULT_SEED if args.seed is None else args.seed)
    info = _data_info(args, state)
    options = {**data_options(args), "data_dir": info["data_dir"]}
    train_split = load_mnist("train", limit=info["limit"], dtype=model.dtype, **options)
    x_train, x_test = train_split.images, load_mnist("test", dtype=model.dtype, **options).images
    info["source"] = train_split.source
    out = _output_dir(args)
    train_started = time.perf_counter()
    reporter = _Reporter(console, quiet=args.json)
    try:
        with reporter:
            result = train(
                model,
                params,
                x_train,
                x_test=x_test,
                method=args.method,
                epochs=args.epochs,
                learning_rate=args.lr,
                momentum=args.momentum,
                batch_size=args.batch_size,
                seed=args.seed,
                state=state,
                callback=reporter,
                checkpoint_path=out / CHECKPOINT_FILE,
                info=info,
                blas_threads=args.blas_threads,
            )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_resume_advice(args, reporter.saved)) from None
    train_seconds = time.perf_counter() - train_started
    out.mkdir(parents=True, exist_ok=True)  # the first checkpoint made it, unless none was due
    notes = [] if result.stop_reason == "completed" else [result.stop_reason]
    plots: list[Path] = []
    if not args.no_plots:
        # Imported here: matplotlib costs a noticeable fraction of a second to import.
        from gradproof.plots import save_training_plots

        written = save_training_plots(out, model, result.params, result.history, x_test)
        plots, notes = written.files, notes + written.notes
    seconds = {"wall_seconds": time.perf_counter() - started, "train_seconds": train_seconds}
    summary = _summary(result, model, out, plots, notes, seconds, len(x_train), info)
    with atomic_write(out / METRICS_FILE) as stream:
        stream.write(json.dumps(summary, indent=2).encode())
    if args.json:
        console.print(json.dumps(summary, indent=2), soft_wrap=True, markup=False, highlight=False)
    else:
        console.print(_summary_table(summary))
    return 0


def _data_info(args: argparse.Namespace, state: TrainState | None) -> dict[str, Any]:
    """The data options to train with and keep in the checkpoint: a resumed run reuses its
    checkpoint's unless the flags say otherwise, so that it sees the same images. The run
    adds ``"source"``, where the images came from, once they are loaded."""
    kept = state.info if state is not None else {}
    data_dir = args.data_dir if args.data_dir is not None else kept.get("data_dir")
    return {
        "data_dir": None if data_dir is None else str(data_dir),
        "limit": args.limit if args.limit is not None else kept.get("limit"),
    }


def _output_dir(args: argparse.Namespace) -> Path:
    """The directory to write into; created only once there is something to write, so that
    a run refused at the start leaves nothing behind."""
    if args.out is not None:
        out = args.out
    elif args.resume is not None:
        out = args.resume.parent
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out, n = RUNS_DIR / stamp, 1
        while out.exists():  # two runs started within one second
            n += 1
            out = RUNS_DIR / f"{stamp}-{n}"
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    return out


# Flags whose values a checkpoint does not keep, so that a resume command must repeat them.
_NOT_KEPT = ("epochs", "download", "cache_dir", "no_plots", "json", "blas_threads")


def _resume_advice(args: argparse.Namespace, saved: tuple[int, Path] | None) -> str:
    """What Ctrl-C left on disk and the command that goes on from there."""
    if saved is None and args.resume is None:
        return "no epoch had finished, so no checkpoint was written; run the same command again"
    if saved is None:
        epoch_text, path = "no epoch had finished since resuming", args.resume
        kept = f"{epoch_text}, so {path} is as it was"
    else:
        epoch, path = saved
        kept = f"the checkpoint of epoch {epoch} is kept at {path}"
    command = ["gradproof", "train", "--resume", str(path)]
    for name in _NOT_KEPT:
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value not in (None, False):
            command += [flag, str(value)]
    return f"{kept}; resume with: {shlex.join(command)}"


class _Reporter:
    """The training callback: one line per epoch, and between them a transient progress bar
    on a terminal, else (a log, CI) a plain line now and then; nothing but the summary when
    ``quiet``."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        enabled = console.is_terminal and not quiet
        self.plain = None if console.is_terminal or quiet else PlainProgress(console)
        self.epochs = 0
        self.saved: tuple[int, Path] | None = None  # the last checkpoint written: epoch, path
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4g}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        # Hidden until training starts: the data may take a moment to load first.
        self.task = self.progress.add_task(
            "train", total=None, visible=False, epoch=0, epochs=0, loss=float("nan")
        )

    def __enter__(self) -> _Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def __call__(self, event: TrainEvent) -> None:
        if isinstance(event, StepDone):
            self.progress.update(
                self.task, advance=1, epoch=event.epoch, loss=event.running_loss
            )
            if self.plain is not None:
                self.plain(
                    lambda seconds: f"epoch {event.epoch}/{self.epochs}  step "
                    f"{event.step_in_epoch}/{event.steps_per_epoch}  loss "
                    f"{event.running_loss:.6g}  {seconds:.0f} s"
                )
        elif isinstance(event, TrainStarted):
            self.epochs = event.epochs
            remaining = (event.epochs - event.start_epoch) * event.steps_per_epoch
            self.progress.update(
                self.task, total=remaining, epoch=event.start_epoch + 1, epochs=event.epochs,
                visible=True, refresh=True,
            )
        elif isinstance(event, EpochDone):
            if event.checkpoint is not None:
                self.saved = (event.metrics.epoch, event.checkpoint)
            if not self.quiet:
                self._print_epoch(event)

    def _print_epoch(self, event: EpochDone) -> None:
        self.progress.refresh()  # printing redraws the bar as last rendered, so render now
        m = event.metrics
        test = "" if m.test_error is None else f"  test error {_number(m.test_error)}"
        self.console.print(
            f"epoch {m.epoch}/{self.epochs}  loss {m.loss:.6g}  "
            f"train error {_number(m.train_error)}{test}  {m.seconds:.2f} s",
            highlight=False,
        )


def _summary(
    result: TrainResult,
    model: Autoencoder,
    out: Path,
    plots: list[Path],
    notes: list[str],
    seconds: dict[str, float],
    n_train: int,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The run's JSON summary (also written to metrics.json)."""
    final = result.final
    return {
        "test_error": None if final is None else final.test_error,
        "train_error": None if final is None else final.train_error,
        "epochs": result.state.epoch,
        **seconds,
        "n_train": n_train,
        "data": info["source"],
        "out": str(out),
        "checkpoint": str(result.checkpoint),
        "metrics": str(out / METRICS_FILE),
        "plots": [str(path) for path in plots],
        "notes": notes,
        "model": model.config(),
        "training": result.to_dict(),
    }


def _summary_table(summary: dict[str, Any]) -> Table:
    training = summary["training"]
    table = Table(title="gradproof train", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rate = training["learning_rate"]
    rows = [
        ("model", "-".join(map(str, summary["model"]["layers"])) + f" {summary['model']['dtype']}"),
        ("data", f"{summary['n_train']} training images from {summary['data']}"),
        ("method", training["method"] + ("" if rate is None else f", learning rate {rate:g}")),
        ("epochs", str(summary["epochs"])),
        ("train error", _error_text(summary["train_error"])),
        ("test error", _error_text(summary["test_error"])),
        (
            "wall time",
            f"{summary['wall_seconds']:.1f} s ({summary['train_seconds']:.1f} s training)",
        ),
        ("checkpoint", summary["checkpoint"]),
        ("metrics", summary["metrics"]),
        ("plots", ", ".join(summary["plots"]) or "none"),
    ]
    rows += [("note", note) for note in summary["notes"]]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _error_text(value: float | None) -> str:
    return "-" if value is None else f"{_number(value)} (mean over images of sum (z - x)^2)"


def _number(value: float) -> str:
    """Four decimals, or four significant digits where decimals would run to many digits."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
