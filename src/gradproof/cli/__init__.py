"""The ``gradproof`` command line: ``train``, ``check``, ``compare``, ``demo``, ``octave``.

Each subcommand lives in its own module of this package and exposes two functions:
``add_parser(subparsers)`` declares its flags, and ``run(args, console) -> int`` does the work.
``main(argv)`` parses, dispatches and maps errors to exit codes: 0 pass, 1 a gradient check
failed (or training diverged), 2 bad usage or input. The library never prints; only these
modules do, through a ``rich`` console.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console

from gradproof import __version__
from gradproof.errors import GradproofError, InputError

# Subcommand name -> module under gradproof.cli; imported lazily, only the one a command line
# names, so that `gradproof train` does not pay for the checker's imports (nor `check` for
# scipy.special, scipy.io and scipy.optimize, which demo, octave and compare bring in: about
# a second of a short check on a busy core) and the other way round.
COMMANDS = {
    "train": "gradproof.cli.train",
    "check": "gradproof.cli.check",
    "compare": "gradproof.cli.compare",
    "demo": "gradproof.cli.demo",
    "octave": "gradproof.cli.octave",
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

EXIT_CODES_TEXT = (
    f"exit codes: {EXIT_OK} the gradients are right (or training finished), {EXIT_FAILED} a "
    f"gradient check failed (or training diverged), {EXIT_USAGE} bad usage or input, "
    f"{EXIT_INTERRUPTED} interrupted (Ctrl-C)"
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so `main` owns the exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the top-level parser with ``command``'s subcommand registered, or every
    available one when ``command`` names none (``gradproof --help``, a mistyped name)."""
    parser = _Parser(
        prog="gradproof",
        description="Train autoencoders with hand-written backprop and prove their gradients right.",
        epilog=EXIT_CODES_TEXT,
    )
    parser.add_argument("--version", action="version", version=f"gradproof {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = {command: COMMANDS[command]} if command in COMMANDS else COMMANDS
    for name, module_name in chosen.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    console = Console(stderr=False, highlight=False)
    error_console = Console(stderr=True, highlight=False)
    arguments = list(sys.argv[1:] if argv is None else argv)
    # The command is the first word that is not an option (the top level has only flags).
    parser = build_parser(next((word for word in arguments if not word.startswith("-")), None))
    try:
        args = parser.parse_args(arguments)
    except InputError as error:
        error_console.print(f"error: {error}", style="red", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except SystemExit as exit_request:  # --help and --version exit through argparse
        return int(exit_request.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args, console))
    except InputError as error:
        error_console.print(f"error: {error}", style="red", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except GradproofError as error:
        error_console.print(f"error: {error}", style="red", markup=False, soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt as interrupt:
        # A command may re-raise Ctrl-C with what it kept and how to go on.
        said = f": {interrupt}" if str(interrupt) else ""
        error_console.print(f"interrupted{said}", markup=False, soft_wrap=True)
        return EXIT_INTERRUPTED
