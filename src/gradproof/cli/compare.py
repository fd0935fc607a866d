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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.text import Text

from gradproof.check import check_model
from gradproof.cli import EXIT_FAILED, EXIT_OK
from gradproof.cli.octave import shape_list
from gradproof.cli.options import add_model_options, model_conflicts, model_from_args
from gradproof.cli.render import print_json, print_report
from gradproof.conventions import convention_finding, find_convention, loss_verdict
from gradproof.errors import InputError
from gradproof.family_file import FamilyFile, looks_like_family, read_family_file
from gradproof.identify import (
    Constants,
    ValueIdentification,
    canonical_point,
    identify_value,
    read_inputs,
)
from gradproof.io import (
    EXAMPLES,
    SUFFIXES,
    WEIGHTS,
    GradientFile,
    describe_layout,
    parse_mapping,
    read_arrays,
    read_gradient_file,
    user_terms,
)
from gradproof.mistakes import Orientation, in_orientation
from gradproof.network_check import check_network
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.network import Network
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
    parser.add_argument(
        "--shapes", type=shape_list, metavar="SHAPES",
        help="the file holds one flat parameter vector (theta) and gradient (grad): the "
        "tensors inside, in order, like Theta1=25x401,Theta2=10x26",
    )
    parser.add_argument(
        "--order", choices=("F", "C"),
        help="how flat vectors are unrolled: F, MATLAB's (:), or C, row-major (default: F "
        "for a .mat file, C for an .npz)",
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
    if looks_like_family(read_arrays(args.file), args.shapes):
        return _run_family(args, console)
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
    orientation = Orientation(columns=gradient_file.examples == "columns",
                              out_in=gradient_file.weights == "out_in")
    report = replace(report, findings=in_orientation(report.findings, model, orientation))
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


# ------------------------------------------------------------------ a member of the family


def _run_family(args: argparse.Namespace, console: Console) -> int:
    """A classifier or any member of the family: identified from the file's loss value among
    the members its shapes and the flags allow, then checked as ``check_network`` checks."""
    family_file = read_family_file(args.file, args.shapes, args.order)
    # the unroll order applies to a flat vector alone
    order = family_file.order if family_file.shapes is not None else "C"
    problem = read_inputs(family_file.params, family_file.x, family_file.y,
                          family_file.shapes, order)
    lam = args.weight_decay if args.weight_decay is not None else family_file.weight_decay
    constants = Constants(lam, args.sparsity_weight or 0.0,
                          args.sparsity_target if args.sparsity_target is not None else 0.05)
    chosen = identify_value(
        problem, family_file.params, family_file.loss, constants, _allowed(args),
        lambda layout: args.examples in ("auto", layout.examples)
        and args.weights in ("auto", layout.weights))
    identified = chosen.model

    def loss(params: Any) -> float:
        # a file holds no loss function: the finite differences are the identified model's
        return identified.network.loss(*canonical_point(identified, problem, params))

    report = check_network(loss, family_file.user_grads(), family_file.params, family_file.x,
                           family_file.y, model=identified.network, layout=identified.layout,
                           shapes=family_file.shapes, order=order,
                           subscripts=family_file.subscripts, flat_name=family_file.flat_name)
    report.model = {**identified.to_dict(), "decided": chosen.decided,
                    "identification": chosen.text}
    if args.json:
        print_json(console, {**report.to_dict(), "file": str(family_file.path),
                             "names": family_file.names})
    else:
        _print_family(console, family_file, chosen, report)
    return EXIT_OK if report.passed else EXIT_FAILED


def _allowed(args: argparse.Namespace) -> Callable[[Network], bool]:
    """The members the flags given allow (a flag not given allows every value)."""
    def allowed(net: Network) -> bool:
        checks = ((args.activation, set(net.activation) <= {args.activation}),
                  (args.output_activation, net.output == args.output_activation),
                  (args.loss, net.loss_name == args.loss),
                  (args.reduction, net.reduction == args.reduction),
                  (args.layers, list(net.layers) == args.layers),
                  (args.bias, net.bias == args.bias),
                  (args.tied, net.tied == args.tied))
        return all(ok for flag, ok in checks if flag is not None)

    return allowed


def _print_family(console: Console, family_file: FamilyFile, chosen: ValueIdentification,
                  report: GradReport) -> None:
    console.print(Text(f"gradproof compare {family_file.path}", style="bold"))
    read = ", ".join(f"{variable} -> {role}" if variable != role else variable
                     for role, variable in family_file.names.items())
    console.print(Text("read: ", style="dim") + Text(read))
    console.print(Text("model: ", style="dim") + Text(chosen.model.description))
    style = "dim" if chosen.decided else "yellow"
    console.print(Text("identified: " if chosen.decided else "note: ", style=style)
                  + Text(chosen.text))
    print_report(console, report)
