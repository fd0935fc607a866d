"""``gradproof octave``: check a MATLAB cost function's gradient by running it in GNU Octave.

``EXPR`` is the call as the user writes it, returning ``[J, grad]``; ``--path`` holds the
``.m`` files, ``--load`` the variables it uses, ``--var`` names the parameter vector and
``--shapes`` the tensors inside it. The check is ``gradproof.octave.check``: one call for the
gradient; then, where the shapes (given, or read from the layer sizes among the arguments) and
the data the expression names form a network of the family that computes J, every entry against that network's backprop with the mistake named
(``--black-box`` skips this); else the black-box engine with the perturbed points evaluated in
batches inside Octave. A rich table, or with ``--json`` the report as JSON alone. Exit codes: 0 passed,
1 failed, 2 bad usage or input (Octave missing, the user's code failing, a timeout), 130
interrupted (Ctrl-C, SIGTERM or SIGHUP: Octave and what it started are stopped either way).
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from gradproof.cli import EXIT_FAILED, EXIT_OK
from gradproof.cli.check import MODE_TEXT, _check_mode_flags, _progress, add_how_flags
from gradproof.cli.options import nonnegative_int, positive_float
from gradproof.cli.render import print_json, print_report
from gradproof.octave import check
from gradproof.octave.runner import DEFAULT_TIMEOUT

DEFAULT_MODE = "auto"

# The black-box modes (``exact`` needs an identified model).
OCTAVE_MODES = {mode: text for mode, text in MODE_TEXT.items() if mode != "exact"}


def shape_list(text: str) -> dict[str, tuple[int, ...]]:
    """``"W1=25x64,b1=25"`` -> ``{"W1": (25, 64), "b1": (25,)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in text.split(","):
        name, equals, dims = item.strip().partition("=")
        try:
            shape = tuple(int(n) for n in dims.split("x"))
        except ValueError:
            shape = ()
        if not (equals and name.isidentifier() and shape and min(shape) >= 1):
            raise argparse.ArgumentTypeError(
                f"expected NAME=ROWSxCOLS or NAME=LENGTH items separated by commas "
                f"(W1=25x64,b1=25), got {item.strip()!r}"
            )
        if name in shapes:
            raise argparse.ArgumentTypeError(f"{name} is named twice in {text!r}")
        shapes[name] = shape
    return shapes


def model_line(model: dict[str, Any]) -> str:
    """The identified network (and the data it reads), or why none was."""
    if not model.get("identified"):
        return f"model: not identified; {model.get('closest', '')}"
    data = f"x = {model['x']}" + ("" if model.get("y") is None else f", y = {model['y']}")
    if model.get("shapes_inferred"):
        data += f"; shapes from the arguments: {model['shapes']}"
    return f"model ({data}): {model['description']}"


def add_parser(subparsers: Any) -> None:
    """Declare ``gradproof octave`` and its flags."""
    parser = subparsers.add_parser(
        "octave",
        help="check a MATLAB cost function's gradient, running it in GNU Octave",
        description="Run a MATLAB expression returning [J, grad] in GNU Octave and check grad. "
        "When the network (--shapes, or the layer sizes among EXPR's arguments) is identified "
        "from J and the data EXPR names, every entry is checked against its backprop and the mistake named; else grad "
        "is checked against finite differences of J, the perturbed points evaluated in batches "
        "inside Octave. Exit codes: 0 passed, 1 failed, 2 bad usage or input.",
    )
    parser.add_argument(
        "expr", metavar="EXPR",
        help="the call returning [J, grad], e.g. \"nnCostFunction(theta, 400, 25, 10, X, y, 1)\"",
    )
    what = parser.add_argument_group("the user's code")
    what.add_argument(
        "--path", type=Path, action="append", default=[], metavar="DIR",
        help="a folder with the .m files EXPR calls (may be given more than once)",
    )
    what.add_argument(
        "--load", type=Path, metavar="VARS.mat", help="a .mat file with the variables EXPR uses"
    )
    what.add_argument(
        "--var", default="theta", metavar="NAME",
        help="the parameter vector among the variables (default: theta)",
    )
    what.add_argument(
        "--shapes", type=shape_list, metavar="SHAPES",
        help="the tensors inside the parameter vector, in order: W1=25x64,W2=64x25,b1=25,b2=64 "
        "(default: as the layer sizes among EXPR's arguments describe a network the courses' "
        "way, else the whole vector as one tensor)",
    )
    what.add_argument(
        "--order", choices=("F", "C"), default="F",
        help="how each tensor is unrolled: F column-major, as MATLAB's (:) (default), or C",
    )
    what.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
        help="seconds one Octave command may run before Octave is stopped "
        f"(default: {DEFAULT_TIMEOUT:g})",
    )
    how = parser.add_argument_group("how to check")
    how.add_argument(
        "--black-box", action="store_true",
        help="skip identifying the network: check with finite differences of J alone "
        "(--mode and its options apply; they also apply when no network is identified)",
    )
    add_how_flags(how, OCTAVE_MODES, DEFAULT_MODE)
    how.add_argument("--seed", type=nonnegative_int, default=0, metavar="N",
                     help="seeds the sampled entries and random directions (default: 0)")
    parser.set_defaults(run=run)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def _stops_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (a job stopped, a terminal closed) end the check as Ctrl-C does.

    Octave runs in its own process group, out of the terminal's reach; by default these
    signals end Python at once, and an Octave busy in the user's code would run on. As an
    interrupt they unwind the check, which stops Octave and what it started."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return
    kept = {number: signal.signal(number, _interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def run(args: argparse.Namespace, console: Console) -> int:
    """Check as ``args`` say; return the exit code."""
    _check_mode_flags(args)
    given = {"samples": args.samples, "directions": args.directions}
    with _stops_as_interrupts(), _progress(console, args.mode, enabled=not args.json) as progress:
        report = check(
            args.expr,
            path=args.path,
            variables=args.load,
            var=args.var,
            shapes=args.shapes,
            order=args.order,
            timeout=args.timeout,
            identify=not args.black_box,
            mode=args.mode,
            rtol=args.rtol,
            atol=args.atol,
            seed=args.seed,
            progress=progress,
            **{name: value for name, value in given.items() if value is not None},
        )
    if args.json:
        print_json(console, {**report.to_dict(), "expr": args.expr})
    else:
        mode = "network identified" if report.mode == "network" else f"{args.mode} mode"
        console.print(Text(f"{args.expr} in GNU Octave, {mode}", style="bold"))
        if report.model is not None:
            console.print(Text(model_line(report.model)))
        print_report(console, report)
    return EXIT_OK if report.passed else EXIT_FAILED
