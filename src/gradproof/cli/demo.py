"""``gradproof demo``: the motivating case, end to end, in under a minute.

A 784-200-784 sigmoid autoencoder without biases, initialised as the seed network is, meets
the first image of the bundled MNIST sample. Its backprop is written the way the motivating
user wrote it (row vectors; ``encoder`` is 784x200 and ``decoder`` 200x784), with two bugs
that no shape error reveals. The demo prints the user's own flat comparison, where the bugs
look like noise; gradproof's report, which names both; the advice "do not apply the sigmoid
on a, only on z", which does not fix the check; and the corrected backprop, which passes
every entry. ``--json`` prints all of it as one object. Exit code 0 when the demo ran as
designed (each stage gave the verdict and findings it exists to show), 1 otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.rule import Rule
from rich.syntax import Syntax
from rich.text import Text
from scipy.special import expit

from gradproof.cli import EXIT_FAILED, EXIT_OK
from gradproof.check import check_model
from gradproof.cli.render import finding_label, print_json, print_report
from gradproof.data.mnist import SAMPLE_DIR, load_mnist
from gradproof.nn.autoencoder import Autoencoder
from gradproof.report import GradReport
from gradproof.terms import UserTensor, in_user_terms

N_VISIBLE, N_HIDDEN = 784, 200
# The user's central-difference step and how many lines of their printout the demo shows.
USER_STEP = 1e-4
SHOWN_LINES = 12
# The user's names: parameter and gradient of each of gradproof's tensors, and the local
# quantities of the fix lines (mistakes.py's notation) as USERS_CODE calls them.
USER_NAMES = {"W1": ("encoder", "gEncoder"), "W2": ("decoder", "gDecoder")}
USER_SYMBOLS = {"a1": "a", "d_s1": "error_1", "d_s2": "error_0"}
# The findings the buggy backprop must get, as (kind, tensor).
EXPECTED = (("transposed", "W2"), ("wrong_backprop_matrix", "W1"))

USERS_CODE = """\
a = sigmoid(x @ encoder)                      # (1, 200)
z = sigmoid(a @ decoder)                      # (1, 784)
error_0 = (z - x) * z * (1 - z)               # (1, 784)
gDecoder = error_0.T @ a                      # (784, 200)
error_1 = (error_0 @ encoder) * a * (1 - a)   # (1, 200)
gEncoder = error_1.T @ x                      # (200, 784)"""

CORRECTED_CODE = """\
gDecoder = a.T @ error_0                      # (200, 784), like decoder
error_1 = (error_0 @ decoder.T) * a * (1 - a) # (1, 200)
gEncoder = x.T @ error_1                      # (784, 200), like encoder"""


def _sigmoid_slope(a: np.ndarray) -> np.ndarray:
    return a * (1 - a)


def _identity(s: np.ndarray) -> np.ndarray:
    return s


def _unit_slope(a: np.ndarray) -> float:
    return 1.0


# The hidden layer as the user wrote it, and as the advice would have it.
HIDDEN: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], Any]]] = {
    "sigmoid": (expit, _sigmoid_slope),
    "identity": (_identity, _unit_slope),
}


def users_loss(encoder: np.ndarray, decoder: np.ndarray, x: np.ndarray, hidden: str = "sigmoid") -> float:
    """The user's loss, ``sum(0.5 * (z - x)**2)``."""
    a = HIDDEN[hidden][0](x @ encoder)  # (1, 200)
    z = expit(a @ decoder)  # (1, 784)
    return float(np.sum(0.5 * (z - x) ** 2))


def users_backprop(
    encoder: np.ndarray, decoder: np.ndarray, x: np.ndarray, hidden: str = "sigmoid"
) -> dict[str, np.ndarray]:
    """The user's backprop, both bugs included (``USERS_CODE``); keyed W1 / W2."""
    f, slope = HIDDEN[hidden]
    a = f(x @ encoder)  # (1, 200)
    z = expit(a @ decoder)  # (1, 784)
    error_0 = (z - x) * z * (1 - z)  # (1, 784)
    g_decoder = error_0.T @ a  # (784, 200): the transpose of decoder's 200x784
    error_1 = (error_0 @ encoder) * slope(a)  # (1, 200): encoder where decoder.T belongs
    g_encoder = error_1.T @ x  # (200, 784)
    return {"W1": g_encoder, "W2": g_decoder}


def corrected_backprop(encoder: np.ndarray, decoder: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """The same backprop with both bugs fixed (``CORRECTED_CODE``); keyed W1 / W2."""
    a = expit(x @ encoder)  # (1, 200)
    z = expit(a @ decoder)  # (1, 784)
    error_0 = (z - x) * z * (1 - z)  # (1, 784)
    g_decoder = a.T @ error_0  # (200, 784), like decoder
    error_1 = (error_0 @ decoder.T) * a * (1 - a)  # (1, 200)
    g_encoder = x.T @ error_1  # (784, 200), like encoder
    return {"W1": g_encoder, "W2": g_decoder}


def users_comparison(
    params: dict[str, np.ndarray], x: np.ndarray, grads: dict[str, np.ndarray],
    start: int, count: int = SHOWN_LINES,
) -> list[dict[str, float]]:
    """The user's printout: central differences of ``theta = [encoder(:); decoder(:)]``
    (MATLAB column-major order) against ``[gEncoder(:); gDecoder(:)]``, entry by entry.

    ``start`` is the first 1-based MATLAB index shown.
    """
    theta = np.concatenate([params["W1"].ravel(order="F"), params["W2"].ravel(order="F")])
    analytic = np.concatenate([grads["W1"].ravel(order="F"), grads["W2"].ravel(order="F")])
    split = params["W1"].size

    def loss(vector: np.ndarray) -> float:
        encoder = vector[:split].reshape(params["W1"].shape, order="F")
        decoder = vector[split:].reshape(params["W2"].shape, order="F")
        return users_loss(encoder, decoder, x)

    lines = []
    for index in range(start, start + count):
        bump = np.zeros_like(theta)
        bump[index - 1] = USER_STEP
        numeric = (loss(theta + bump) - loss(theta - bump)) / (2 * USER_STEP)
        lines.append({
            "index": index, "numerical": numeric, "analytic": float(analytic[index - 1]),
            "diff": abs(numeric - float(analytic[index - 1])),
        })
    return lines


def _has(report: GradReport, kind: str, tensor: str) -> bool:
    return any(f.kind == kind and f.tensor == tensor for f in report.findings)


def _every_entry_passed(report: GradReport) -> bool:
    return report.passed and all(t.checked == t.size for t in report.tensors)


def run_demo(seed: int = 0) -> dict[str, Any]:
    """Run every stage of the demo and return what it shows (no printing).

    Returns
    -------
    dict
        ``image``, ``comparison`` (the user's printout), ``buggy``, ``advice`` and
        ``corrected`` (GradReports) and ``as_designed`` (bool).
    """
    images, labels = load_mnist("train", data_dir=SAMPLE_DIR, limit=1)
    x = images[:1]  # (1, 784): the first training image
    model = Autoencoder(N_VISIBLE, N_HIDDEN, bias=False)
    params = model.init_params(seed=seed)
    encoder, decoder = params["W1"], params["W2"]

    buggy = users_backprop(encoder, decoder, x)
    comparison = users_comparison(params, x, buggy, start=encoder.size + 1)
    buggy_report = check_model(model, params, x, grad=buggy)

    # The advice changes the hidden layer to a = x @ encoder (its slope is then 1); the model
    # checked against changes with it, the two bugs stay.
    advice_model = Autoencoder(N_VISIBLE, N_HIDDEN, bias=False, activation="identity")
    advice_report = check_model(
        advice_model, params, x, grad=users_backprop(encoder, decoder, x, hidden="identity")
    )
    corrected_report = check_model(model, params, x, grad=corrected_backprop(encoder, decoder, x))

    as_designed = (
        not buggy_report.passed
        and all(_has(buggy_report, kind, tensor) for kind, tensor in EXPECTED)
        and not advice_report.passed
        and _every_entry_passed(corrected_report)
    )
    return {
        "image": {"split": "train", "index": 0, "label": int(labels[0])},
        "seed": seed,
        "comparison": comparison,
        "buggy": buggy_report,
        "advice": advice_report,
        "corrected": corrected_report,
        "as_designed": as_designed,
    }


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the motivating case: a silent backprop bug, found and fixed",
        description=(
            "The motivating case end to end: a 784-200-784 autoencoder's hand-written backprop "
            "with two silent bugs, the user's own check that makes them look like noise, "
            "gradproof's diagnosis, a piece of advice that does not help, and the fix."
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation (default 0)")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, console: Console) -> int:
    result = run_demo(seed=args.seed)
    if args.json:
        print_json(console, _json(result))
    else:
        _print(console, result)
    return EXIT_OK if result["as_designed"] else EXIT_FAILED


def _json(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    for stage in ("buggy", "advice", "corrected"):
        out[stage] = users(result[stage]).to_dict()
    return out


def users(report: GradReport) -> GradReport:
    """The report in the user's names; the user's numpy gradient is transposed where it came
    in the transposed shape."""
    return in_user_terms(report, {
        canonical: UserTensor(canonical, name, gradient,
                              transposed=report.tensor(canonical).gradient_shape is not None)
        for canonical, (name, gradient) in USER_NAMES.items()
    }, USER_SYMBOLS)


def _print(console: Console, result: dict[str, Any]) -> None:
    image = result["image"]
    console.print(Rule("gradproof demo: a backprop bug that looks like noise"))
    console.print(
        f"A 784-200-784 sigmoid autoencoder without biases (weights uniform in "
        f"±4·sqrt(6/984), seed {result['seed']}), squared error, on the first MNIST training "
        f"image (a {image['label']}). The backprop as written, with encoder 784x200 and "
        "decoder 200x784:"
    )
    console.print(Syntax(USERS_CODE, "python", theme="ansi_dark"))

    comparison = result["comparison"]
    first, last = comparison[0]["index"], comparison[-1]["index"]
    console.print(Rule("1. the check as the user printed it"))
    console.print(
        f"theta = [encoder(:); decoder(:)] in MATLAB order, central differences with step "
        f"{USER_STEP:g}; entries {first}-{last} (the first of the decoder's):",
        markup=False,
    )
    for line in comparison:
        console.print(
            f"  {line['index']}: {line['numerical']: .6e} <=> {line['analytic']: .6e}: "
            f"{line['diff']:.2e}", markup=False,
        )
    console.print(
        "Same magnitudes, disagreeing in the first or second significant figure, no pattern: "
        "it looks like noise or a bad step size. It is not."
    )

    console.print(Rule("2. gradproof's check"))
    print_report(console, users(result["buggy"]))

    console.print(Rule('3. the advice "do not apply the sigmoid on a, only on z"'))
    advice = users(result["advice"])
    found = ", ".join(
        f"{f.kind} on {finding_label(f, advice)}" for f in advice.findings if f.is_bug
    )
    console.print(
        "With a = x @ encoder (and no a * (1 - a) in error_1) the check "
        + ("still FAILS: " + found if not advice.passed else "passes")
        + ". The bugs are not in the activation."
    )

    console.print(Rule("4. the corrected backprop"))
    console.print(Syntax(CORRECTED_CODE, "python", theme="ansi_dark"))
    print_report(console, users(result["corrected"]))

    style = "bold green" if result["as_designed"] else "bold red"
    verdict = "ran as designed" if result["as_designed"] else "did NOT run as designed"
    console.print(Text(f"demo {verdict}", style=style))
