"""``gradproof check``: check the reference autoencoder's own backprop on an MNIST batch.

The network is freshly initialised from the model flags (the seed network 784-200-784 by
default) or read from a ``gradproof train`` checkpoint (``--checkpoint``; model flags given
beside it must agree with it). The batch is the first ``--batch`` training images (default 1,
the motivating user's setting) of the chosen data. ``--mode exact`` (the default) checks every
entry through ``check_model``, the structure-exploiting engine; the other modes run the
black-box ``check_gradient`` on ``model.loss``. A rich table (and a progress bar on a
terminal, plain progress lines in a log), or with ``--json`` the report as JSON alone. Exit
codes: 0 passed, 1 failed, 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from gradproof.check import DEFAULT_DIRECTIONS, check_gradient
from gradproof.cli import EXIT_FAILED, EXIT_OK
from gradproof.cli.options import (
    add_blas_option,
    add_data_options,
    add_model_options,
    checkpoint_for_flags,
    data_options,
    model_from_args,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)
from gradproof.cli.progress import PlainProgress
from gradproof.cli.render import print_json, print_report
from gradproof.data.mnist import load_mnist
from gradproof.errors import InputError
from gradproof.nn.autoencoder import Autoencoder
from gradproof.check import check_model
from gradproof.report import GradReport

DEFAULT_MODE = "exact"
DEFAULT_BATCH = 1
DEFAULT_SEED = 0

# Mode -> what it verifies, in words (also the --mode help); "exact" is check_model's.
MODE_TEXT = {
    "exact": "every entry, by exact local central differences through check_model",
    "auto": "every row and column of each matrix, sampled entries and random directions",
    "full": "every entry, a central difference of the whole loss each",
    "sample": "--samples entries per tensor, the largest |g| among them",
    "directional": "--directions random directions per tensor",
    "taylor": "the Taylor remainder's order along --directions random directions per tensor",
}

# The modes that compare differences under a tolerance rule (taylor fits an order instead).
_RULE_MODES = tuple(mode for mode in MODE_TEXT if mode != "taylor")

# Flags that only some modes use; given with another mode they are refused, not ignored.
MODE_FLAGS = {
    "--samples": ("sample", "auto"),
    "--directions": tuple(DEFAULT_DIRECTIONS),
    "--rtol": _RULE_MODES,
    "--atol": _RULE_MODES,
}

_DEFAULT_SAMPLES = inspect.signature(check_gradient).parameters["samples"].default


def add_parser(subparsers: Any) -> None:
    """Declare ``gradproof check`` and its flags."""
    parser = subparsers.add_parser(
        "check",
        help="check the autoencoder's own backprop against finite differences",
        description="Check the reference autoencoder's own backprop on MNIST images, every "
        "entry by default, freshly initialised or from a gradproof train checkpoint. "
        "Exit codes: 0 passed, 1 failed, 2 bad usage or input.",
    )
    group = parser.add_argument_group("what to check")
    group.add_argument(
        "--checkpoint", type=Path, metavar="PATH",
        help="check the network of a gradproof train checkpoint (model flags given beside it "
        "must agree with it) instead of a fresh one",
    )
    group.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, metavar="N",
        help=f"check on the first N training images (default: {DEFAULT_BATCH})",
    )
    group.add_argument(
        "--seed", type=nonnegative_int, default=DEFAULT_SEED, metavar="N",
        help="seeds the fresh network's weights and the sampled entries and directions "
        f"(default: {DEFAULT_SEED})",
    )
    how = parser.add_argument_group("how to check")
    add_how_flags(how, MODE_TEXT, DEFAULT_MODE)
    add_blas_option(how)
    add_model_options(parser)
    add_data_options(parser)
    parser.set_defaults(run=run)


def add_how_flags(how: Any, modes: dict[str, str], default_mode: str) -> None:
    """Declare the flags that say how to check (``--mode`` among ``modes``, ``--samples``,
    ``--directions``, ``--rtol``, ``--atol``, ``--json``), shared by ``check`` and ``octave``."""
    how.add_argument(
        "--mode", choices=list(modes), default=default_mode, metavar="MODE",
        help="; ".join(f"{mode}: {text}" for mode, text in modes.items())
        + f" (default: {default_mode})",
    )
    how.add_argument(
        "--samples", type=positive_int, metavar="N",
        help=f"entries per tensor in sample and auto modes (default: {_DEFAULT_SAMPLES})",
    )
    how.add_argument(
        "--directions", type=positive_int, metavar="K",
        help="random directions per tensor in "
        + ", ".join(f"{mode} (default {count})" for mode, count in DEFAULT_DIRECTIONS.items())
        + " mode",
    )
    how.add_argument(
        "--rtol", type=nonnegative_float, metavar="R",
        help="use the classic rule |a - n| <= atol + rtol * max(|a|, |n|) instead of each "
        "difference's error estimate",
    )
    how.add_argument("--atol", type=nonnegative_float, metavar="A", help="see --rtol")
    how.add_argument(
        "--json", action="store_true", help="print the report as JSON, and nothing else"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Check as ``args`` say; return the exit code."""
    _check_mode_flags(args)
    model, params, origin = _network(args)
    x, source = _batch(args, model)
    _, gradient = model.loss_and_grad(params, x)
    with _progress(console, args.mode, enabled=not args.json) as progress:
        report = _check(args, model, params, x, gradient, progress)
    if args.json:
        print_json(console, {**report.to_dict(), **_context(args, model, origin, source)})
    else:
        _print(console, args, model, origin, source, report)
    return EXIT_OK if report.passed else EXIT_FAILED


def _check_mode_flags(args: argparse.Namespace) -> None:
    for flag, modes in MODE_FLAGS.items():
        if getattr(args, flag[2:]) is not None and args.mode not in modes:
            raise InputError(
                f"{flag} does not apply to --mode {args.mode}; it is used by --mode "
                f"{' / '.join(modes)}"
            )


def _network(args: argparse.Namespace) -> tuple[Autoencoder, dict[str, np.ndarray], str]:
    """The model, its parameters, and where they came from (in words)."""
    if args.checkpoint is None:
        model = model_from_args(args)
        return model, model.init_params(args.seed), f"fresh weights (seed {args.seed})"
    model, params, state = checkpoint_for_flags(
        "--checkpoint", args.checkpoint, args, advice="drop those flags"
    )
    epochs = f"{state.epoch} epoch{'' if state.epoch == 1 else 's'}"
    return model, params, f"checkpoint {args.checkpoint} (after {epochs})"


def _batch(args: argparse.Namespace, model: Autoencoder) -> tuple[np.ndarray, str]:
    """The first ``--batch`` training images, float64 (the model casts them to its dtype),
    and where they came from."""
    split = load_mnist("train", limit=args.batch, dtype=np.float64, **data_options(args))
    images = split.images
    if len(images) < args.batch:
        raise InputError(
            f"--batch {args.batch}: {split.source} has only {len(images)} training images"
        )
    if images.shape[1] != model.n_visible:
        raise InputError(
            f"the model takes {model.n_visible} inputs but MNIST images have "
            f"{images.shape[1]} pixels: --layers must start and end with {images.shape[1]}"
        )
    return images, split.source  # (batch, 784)


def _check(
    args: argparse.Namespace,
    model: Autoencoder,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    gradient: dict[str, np.ndarray],
    progress: Callable[[int, int], None] | None,
) -> GradReport:
    """The report of ``--mode``: check_model for exact, check_gradient for the others."""
    shared = {"rtol": args.rtol, "atol": args.atol, "blas_threads": args.blas_threads}
    if args.mode == "exact":
        return check_model(model, params, x, grad=gradient, progress=progress, **shared)
    given = {"samples": args.samples, "directions": args.directions}
    # The differences come from a float64 twin of the model, as in check_model: a float32
    # model would round the float64 copies check_gradient passes it back to float32, where
    # its small steps vanish. The gradient stays the model's own, in its own dtype.
    twin = Autoencoder.from_config({**model.config(), "dtype": "float64"})
    return check_gradient(
        lambda p: twin.loss(p, x),
        gradient,
        params,
        mode=args.mode,
        seed=args.seed,
        progress=progress,
        **shared,
        **{name: value for name, value in given.items() if value is not None},
    )


@contextmanager
def _progress(
    console: Console, mode: str, *, enabled: bool
) -> Iterator[Callable[[int, int], None] | None]:
    """The checkers' ``progress(done, total)``: a transient progress bar on a terminal, else
    (a log, CI) a plain line now and then; None when off."""
    if not enabled:
        yield None
        return
    # What the checker's progress counts: check_model's points, check_gradient's calls.
    unit = "perturbed points" if mode == "exact" else "loss evaluations"
    if not console.is_terminal:
        plain = PlainProgress(console)

        def report(done: int, total: int) -> None:
            plain(lambda seconds: f"checking ({mode}): {done:,}/{total:,} {unit}, {seconds:.0f} s")

        yield report
        return
    bar = Progress(
        TextColumn(f"checking ({mode})"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("check", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def _context(
    args: argparse.Namespace, model: Autoencoder, origin: str, source: str
) -> dict[str, Any]:
    """What was checked, for the JSON output beside the report's own keys."""
    return {
        "model": model.config(),
        "params": origin,
        "data": {"split": "train", "images": args.batch, "source": source},
    }


def _model_text(model: Autoencoder) -> str:
    config = model.config()
    parts = [
        "-".join(map(str, config["layers"])),
        "/".join(config["activation"]) + f" -> {config['output_activation']}",
        f"{config['loss']} loss ({config['reduction']})",
        "biases" if config["bias"] else "no biases",
    ]
    if config["tied"]:
        parts.append("tied")
    if config["weight_decay"]:
        parts.append(f"weight decay {config['weight_decay']:g}")
    if config["sparsity_weight"]:
        parts.append(
            f"sparsity {config['sparsity_weight']:g} (target {config['sparsity_target']:g})"
        )
    parts.append(config["dtype"])
    return ", ".join(parts)


def _print(
    console: Console, args: argparse.Namespace, model: Autoencoder, origin: str, source: str,
    report: GradReport,
) -> None:
    images = "the first training image" if args.batch == 1 else (
        f"the first {args.batch} training images"
    )
    lines = [
        ("model", f"{_model_text(model)}; {origin}"),
        ("data", f"{images} of {source}"),
        ("mode", f"{args.mode} ({MODE_TEXT[args.mode]})"),
    ]
    console.print(Text("gradproof check", style="bold"))
    for label, text in lines:
        console.print(Text.assemble((f"{label}: ", "dim"), text))
    print_report(console, report)
    # check_model evaluates each perturbed point locally, not through the whole loss.
    unit = "perturbed points, each evaluated locally" if args.mode == "exact" else (
        "loss evaluations"
    )
    console.print(Text.assemble(("tolerance: ", "dim"), report.rule))
    console.print(Text.assemble(("cost: ", "dim"), f"{report.loss_evaluations:,} {unit}"))
    if report.partial:
        console.print(Text("interrupted: only part of the check was done", style="yellow"))
