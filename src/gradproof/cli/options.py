"""Command-line options shared by the subcommands: the model's, the data's, and value checks.

``add_model_options(parser)`` declares the flags that build an ``Autoencoder`` and
``model_from_args(args)`` builds it. Every model flag defaults to None, meaning "not given":
the model's own defaults apply, and ``model_conflicts`` can compare only the flags a user gave
with a checkpoint's model. ``add_data_options`` declares where MNIST comes from and
``data_options(args)`` turns that into keyword arguments of ``load_mnist``.

The ``positive_int`` ... ``unit_interval`` and ``blas_threads`` helpers are argparse ``type=``
functions, so a bad value fails at parse time with a one-line message naming its flag;
``add_blas_option`` declares ``--blas-threads`` (see ``gradproof.blas``).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.checkpoint import TrainState, load_checkpoint
from gradproof.data.mnist import ENV_VAR
from gradproof.errors import DataError, InputError
from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.validation import DTYPES
from gradproof.nn.losses import LOSSES, REDUCTIONS

_MODEL_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(Autoencoder).parameters.items()
}


def _number(text: str, convert: Callable[[str], Any], kind: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def open_unit_interval(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text, float, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def blas_threads(text: str) -> int | str:
    """A thread count >= 1, "auto" or "off" (see ``gradproof.blas``)."""
    try:
        return blas.parse(text, "--blas-threads")
    except InputError:
        raise argparse.ArgumentTypeError(f"expected {blas.ALLOWED}, got {text!r}") from None


def add_blas_option(parser: argparse.ArgumentParser) -> None:
    """Declare ``--blas-threads``: the threads of the BLAS and OpenMP pools while it runs."""
    parser.add_argument(
        "--blas-threads", type=blas_threads, metavar="N|auto|off",
        help=f"threads of the BLAS (and OpenMP) pools while it runs: {blas.ALLOWED} (default: "
        f"${blas.ENV_VAR}, else auto)",
    )


def layer_list(text: str) -> list[int]:
    """Comma-separated layer sizes like ``784,256,64,256,784``."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < 3 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least 3 comma-separated positive sizes like 784,200,784, got {text!r}"
        )
    return sizes


@dataclass(frozen=True)
class _ModelFlag:
    keyword: str  # the Autoencoder keyword, also the argparse dest
    flag: str
    config_key: str  # the model.config() entry the flag sets


_MODEL_FLAGS = (
    _ModelFlag("layers", "--layers", "layers"),
    _ModelFlag("n_hidden", "--hidden", "layers"),
    _ModelFlag("activation", "--activation", "activation"),
    _ModelFlag("output_activation", "--output-activation", "output_activation"),
    _ModelFlag("loss", "--loss", "loss"),
    _ModelFlag("reduction", "--reduction", "reduction"),
    _ModelFlag("bias", "--no-bias", "bias"),
    _ModelFlag("tied", "--tied", "tied"),
    _ModelFlag("weight_decay", "--weight-decay", "weight_decay"),
    _ModelFlag("sparsity_weight", "--sparsity-weight", "sparsity_weight"),
    _ModelFlag("sparsity_target", "--sparsity-target", "sparsity_target"),
    _ModelFlag("dtype", "--dtype", "dtype"),
)


def add_model_options(
    parser: argparse.ArgumentParser, *, default_dtype_text: str = "float64"
) -> None:
    """Declare the flags that build an ``Autoencoder`` (all default to None: not given).

    ``default_dtype_text`` says in ``--help`` what ``model_from_args`` will pick without
    ``--dtype``.
    """
    group = parser.add_argument_group("model (defaults: the seed network 784-200-784)")
    d = _MODEL_DEFAULTS
    sizes = group.add_mutually_exclusive_group()
    sizes.add_argument(
        "--layers", dest="layers", type=layer_list, metavar="SIZES",
        help="all layer sizes, input first, like 784,256,64,256,784 (default: 784,HIDDEN,784)",
    )
    sizes.add_argument(
        "--hidden", dest="n_hidden", type=positive_int, metavar="N",
        help=f"hidden units of the one-hidden-layer network (default: {d['n_hidden']})",
    )
    group.add_argument(
        "--activation", choices=list(ACTIVATIONS), metavar="NAME",
        help=f"hidden-layer activation: {', '.join(ACTIVATIONS)} (default: {d['activation']})",
    )
    group.add_argument(
        "--output-activation", choices=list(ACTIVATIONS), metavar="NAME",
        help=f"output-layer activation (default: {d['output_activation']})",
    )
    group.add_argument(
        "--loss", choices=list(LOSSES),
        help=f"data term (default: {d['loss']})",
    )
    group.add_argument(
        "--reduction", choices=list(REDUCTIONS),
        help=f"sum the data term over the batch or average it (default: {d['reduction']})",
    )
    group.add_argument(
        "--no-bias", dest="bias", action="store_const", const=False,
        help="layers without biases",
    )
    group.add_argument(
        "--tied", action="store_const", const=True,
        help="decoder weights are the encoder's transposed (needs symmetric --layers)",
    )
    group.add_argument(
        "--weight-decay", type=nonnegative_float, metavar="LAMBDA",
        help=f"L2 penalty LAMBDA/2 * sum(W^2) on the weights (default: {d['weight_decay']})",
    )
    group.add_argument(
        "--sparsity-weight", type=nonnegative_float, metavar="BETA",
        help="weight of the KL sparsity penalty on the code layer "
        f"(default: {d['sparsity_weight']})",
    )
    group.add_argument(
        "--sparsity-target", type=open_unit_interval, metavar="RHO",
        help=f"target mean activation of each code unit (default: {d['sparsity_target']})",
    )
    group.add_argument(
        "--dtype", choices=list(DTYPES),
        help=f"parameter and arithmetic precision (default: {default_dtype_text})",
    )


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The model keywords whose flags were given."""
    return {
        spec.keyword: getattr(args, spec.keyword)
        for spec in _MODEL_FLAGS
        if getattr(args, spec.keyword, None) is not None
    }


def model_from_args(args: argparse.Namespace, *, default_dtype: str = "float64") -> Autoencoder:
    """Build the ``Autoencoder`` the flags describe; the model's defaults fill the rest.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser that ``add_model_options`` set up.
    default_dtype : str
        The dtype when ``--dtype`` was not given.

    Raises
    ------
    InputError
        When the flags make no valid model (the model's message says why).
    """
    return Autoencoder(**{"dtype": default_dtype, **_given(args)})


def model_conflicts(args: argparse.Namespace, model: Autoencoder) -> list[str]:
    """Describe each given model flag that disagrees with ``model`` (a checkpoint's).

    Returns one phrase per disagreeing flag, e.g. ``"--hidden 100 (it has layers [784, 200,
    784])"``; an empty list when every given flag matches.
    """
    config = model.config()
    conflicts = []
    for spec in _MODEL_FLAGS:
        value = getattr(args, spec.keyword, None)
        if value is None:
            continue
        if spec.keyword == "n_hidden":
            changed = {"layers": [config["layers"][0], value, config["layers"][-1]]}
        else:
            changed = {spec.keyword: value}
        try:
            agrees = Autoencoder.from_config({**config, **changed}).config() == config
        except InputError:
            agrees = False
        if not agrees:
            shown = spec.flag if isinstance(value, bool) else f"{spec.flag} {_show(value)}"
            conflicts.append(f"{shown} (it has {spec.config_key} {config[spec.config_key]!r})")
    return conflicts


def checkpoint_for_flags(
    flag: str, path: str, args: argparse.Namespace, *, advice: str
) -> tuple[Autoencoder, dict[str, np.ndarray], TrainState]:
    """Load the checkpoint that ``flag`` names and check the given model flags against it.

    Raises
    ------
    DataError
        When the file is not a readable checkpoint (the message starts with ``flag``).
    InputError
        When a given model flag disagrees with the checkpoint's model; ``advice`` says what to
        do about it.
    """
    try:
        model, params, state = load_checkpoint(path)
    except DataError as error:
        raise DataError(f"{flag}: {error}") from None
    conflicts = model_conflicts(args, model)
    if conflicts:
        raise InputError(
            f"{flag}: the model in {path} disagrees with {'; '.join(conflicts)}; {advice}"
        )
    return model, params, state


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Declare where MNIST comes from: ``--data-dir``, ``--download``, ``--cache-dir``."""
    group = parser.add_argument_group(
        "data (default: a full MNIST already in the cache, verified by SHA-256, else the "
        "bundled 5000-image sample)"
    )
    group.add_argument(
        "--data-dir", metavar="DIR",
        help=f"directory with the four MNIST IDX files, raw or .gz (default: ${ENV_VAR}, "
        f"else the cache, else the bundled sample)",
    )
    group.add_argument(
        "--download", action="store_true",
        help="download the full MNIST into the cache (verified by SHA-256) when missing",
    )
    group.add_argument(
        "--cache-dir", metavar="DIR",
        help="the MNIST cache, filled by --download and read without it when it holds the "
        "full set (default: $XDG_CACHE_HOME/gradproof/mnist, else ~/.cache/gradproof/mnist)",
    )


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_mnist`` keyword arguments the data flags ask for."""
    return {"data_dir": args.data_dir, "download": args.download, "cache_dir": args.cache_dir}
