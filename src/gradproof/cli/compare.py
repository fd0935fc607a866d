"""``gradproof compare FILE``: check gradients exported from MATLAB / Octave or NumPy.

The file holds the parameters, the input and the user's own gradients (``save f.mat encoder
decoder x gEncoder gDecoder``, or ``numpy.savez``). ``gradproof.io`` maps the names and works
out the layout; the model flags say what the network computes (activation, loss, penalties),
the shapes say its size, biases and tying. The exact full check (``check_model``) decides
each tensor; the diagnosis names what is wrong, structurally and as a known backprop mistake.
Exit codes: 0 the gradient is right, 1 it is wrong, 2 bad input.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.text import Text

from gradproof.check import check_model
from gradproof.cli import EXIT_FAILED, EXIT_OK
from gradproof.cli.options import add_model_options, model_conflicts, model_from_args
from gradproof.cli.render import print_json, print_report
from gradproof.conventions import convention_finding, find_convention, loss_verdict
from gradproof.errors import InputError
from gradproof.io import (
    EXAMPLES,
    SUFFIXES,
    WEIGHTS,
    GradientFile,
    describe_layout,
    parse_mapping,
    read_gradient_file,
    user_terms,
)
from gradproof.nn.autoencoder import Autoencoder
from gradproof.report import GradReport
from gradproof.terms import in_user_terms


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="check gradients saved from MATLAB / Octave (.mat) or NumPy (.npz)",
        description=(
            "Check gradients exported from MATLAB / Octave (save f.mat encoder decoder x "
            "gEncoder gDecoder) or NumPy (numpy.savez): every entry against exact finite "
            "differences of the model the flags describe, sized by the file's shapes, with a "
            "diagnosis of what is wrong. Exit codes: 0 right, 1 wrong, 2 bad input."
        ),
    )
    parser.add_argument("file", metavar="FILE", help=" or ".join(SUFFIXES.values()))
    parser.add_argument(
        "--map", dest="mapping", metavar="VAR=NAME,...",
        help="name the file's variables: a parameter (enc=W1), a gradient (gEncoder=W1 or "
        "delta1=dW1) or the input (imgs=x)",
    )
    parser.add_argument(
        "--examples", choices=("auto", *EXAMPLES), default="auto",
        help="x holds one example per row, or per column as in MATLAB (default: from the shapes)",
    )
    parser.add_argument(
        "--weights", choices=("auto", *WEIGHTS), default="auto",
        help="weights stored (n_in, n_out), or transposed (n_out, n_in) for W * x "
        "(default: from the shapes)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_model_options(parser)
    parser.set_defaults(run=run)


def model_for(args: argparse.Namespace, gradient_file: GradientFile) -> Autoencoder:
    """The model the flags describe, sized, biased and tied as the file's shapes say.

    Raises
    ------
    InputError
        A given flag disagrees with the file (``--hidden 100`` for a 200-unit encoder).
    """
    config = model_from_args(args).config()
    config.update(layers=gradient_file.layers, bias=gradient_file.bias, tied=gradient_file.tied)
    model = Autoencoder.from_config(config)
    conflicts = model_conflicts(args, model)
    if conflicts:
        raise InputError(
            f"{gradient_file.path}: the flags disagree with the file's shapes: "
            + "; ".join(conflicts)
        )
    return model


def run(args: argparse.Namespace, console: Console) -> int:
    gradient_file = read_gradient_file(
        args.file,
        mapping=parse_mapping(args.mapping),
        examples=args.examples,
        weights=args.weights,
        tied=args.tied,
    )
    model = model_for(args, gradient_file)
    report = check_model(
        model, gradient_file.params, gradient_file.x, grad=dict(gradient_file.grads)
    )
    loss_note = None
    if not report.passed:
        model, report, loss_note = _conventions(gradient_file, model, report)
    report = in_user_terms(report, user_terms(gradient_file))
    if args.json:
        print_json(console, {**_json(gradient_file, model, report.to_dict()), "loss_note": loss_note})
    else:
        _print(console, gradient_file, model, report, loss_note)
    return EXIT_OK if report.passed else EXIT_FAILED


def _conventions(
    gradient_file: GradientFile, model: Autoencoder, report: GradReport
) -> tuple[Autoencoder, GradReport, str | None]:
    """Before a failing report claims bugs: does the gradient pass for a nearby model?

    Where it does, the check under that model is shown with a ``convention`` finding that
    names the flags, unless the file's loss value belongs to the declared model: then the
    failing report stands, with a line that says the loss value settled it.
    """
    params, x, grads = gradient_file.params, gradient_file.x, gradient_file.grads
    convention = find_convention(model, params, x, grads)
    if convention is None:
        return model, report, None
    value = gradient_file.loss
    verdict = None if value is None else loss_verdict(model, convention.model, params, x, value)
    if verdict == "declared":
        return model, report, (
            f"the loss value saved in the file ({value:.6g}) is the declared model's "
            f"({convention.declared}); the gradient would pass with {convention.flags}, which "
            "is not the loss your code computes: the findings below are bugs"
        )
    alternative = check_model(convention.model, params, x, grad=dict(grads))
    if not alternative.passed:
        return model, report, None
    finding = convention_finding(convention, x.shape[0], verdict)
    return convention.model, replace(alternative, findings=[finding, *alternative.findings]), None


def _json(gradient_file: GradientFile, model: Autoencoder, report: dict[str, Any]) -> dict[str, Any]:
    return {
        **report,
        "file": str(gradient_file.path),
        "names": gradient_file.names,
        "layout": {"examples": gradient_file.examples, "weights": gradient_file.weights,
                   "notes": gradient_file.notes},
        "model": model.config(),
    }


def _print(
    console: Console, gradient_file: GradientFile, model: Autoencoder, report: GradReport,
    loss_note: str | None,
) -> None:
    console.print(Text(f"gradproof compare {gradient_file.path}", style="bold"))
    console.print(Text("read: ", style="dim") + Text(describe_layout(gradient_file)))
    if gradient_file.weights == "out_in":
        console.print(
            Text("note: ", style="yellow")
            + Text(
                "your weights are stored (n_out, n_in); shapes and fix lines below are in "
                "gradproof's (n_in, n_out) orientation, positions in yours"
            )
        )
    for note in gradient_file.notes:
        console.print(Text("note: ", style="yellow") + Text(note))
    config = model.config()
    console.print(
        Text("model: ", style="dim")
        + Text(
            f"activation {'/'.join(config['activation'])}, output {config['output_activation']}, "
            f"loss {config['loss']} ({config['reduction']}), weight decay {config['weight_decay']:g}, "
            f"sparsity {config['sparsity_weight']:g}"
        )
    )
    if loss_note is not None:
        console.print(Text("loss: ", style="yellow") + Text(loss_note))
    print_report(console, report)
