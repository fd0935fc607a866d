"""The front doors: check_gradient and check_model, thin, onto the one measurement engine.

Contract: ``check_gradient(loss, grad, params, **options) -> GradReport`` checks any gradient
of any loss, evaluated as a black box; ``check_model(model, params, x, **options) ->
GradReport`` checks every entry of an Autoencoder's gradient through the exact evaluator, with
the model's mistakes named. Each validates its options against its table
(``engine.options``), makes its run (``engine.blackbox.BlackBoxRun``,
``engine.exact.evaluator.ExactRun``), runs it and returns ``run.report()``; the staging, the
tolerance rule, the report and the diagnosis are the engine's, the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradproof import blas
from gradproof.engine.blackbox import BlackBoxRun
from gradproof.engine.kink_scan import scan_kinks
from gradproof.engine.noise import settle as settle_loss_noise
from gradproof.engine.exact.evaluator import ExactRun
from gradproof.engine.options import (
    FLAG,
    PROGRESS,
    RULE_OPTIONS,
    Option,
    instance,
    integer,
    one_of,
    validate,
)
from gradproof.errors import InputError
from gradproof.finite_diff import Rule
from gradproof.moved_point import recheck_at_moved_point
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.network import Network
from gradproof.params import parse_params
from gradproof.report import GradReport
from gradproof.terms import in_user_terms, layout_terms

MODES = ("auto", "full", "sample", "directional", "taylor")

# How the report writes positions: 0-based theta[16] = W2[1, 1], or MATLAB's theta(17) = W2(2, 2).
SUBSCRIPTS = ("numpy", "matlab")

# Random directions per tensor when `directions` is not given.
DEFAULT_DIRECTIONS = {"auto": 2, "directional": 8, "taylor": 1}

# Default bound on the working memory of one chunk of entries in check_model.
DEFAULT_CHUNK_BYTES = 64 << 20

# Smallest chunk budget accepted: below this, per-chunk overhead dominates.
MIN_CHUNK_BYTES = 1 << 16

CHECK_GRADIENT_OPTIONS: dict[str, Option] = {
    **RULE_OPTIONS,
    "mode": one_of(MODES),
    "samples": integer(1),
    "budget": integer(1),
    "directions": integer(1).or_none(),
    "seed": integer(),
    "progress": PROGRESS,
    "subscripts": one_of(SUBSCRIPTS),
    "flat_name": Option(lambda v: isinstance(v, str) and v.isidentifier(),
                        "a variable name such as 'theta'"),
}

CHECK_MODEL_OPTIONS: dict[str, Option] = {
    "model": instance(
        (Autoencoder, Network),
        "a gradproof Autoencoder or Network (for any other loss, use gradproof.check_gradient)",
    ),
    **RULE_OPTIONS,
    "max_chunk_bytes": integer(MIN_CHUNK_BYTES, "bytes"),
    "series": FLAG,
    "progress": PROGRESS,
}


@blas.policy("check_gradient")
def check_gradient(
    loss: Callable[..., Any],
    grad: Any,
    params: Any,
    *,
    mode: str = "auto",
    shapes: Any = None,
    order: str = "C",
    samples: int = 32,
    directions: int | None = None,
    budget: int = 2000,
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    blas_threads: int | str | None = None,
    subscripts: str = "numpy",
    flat_name: str = "theta",
) -> GradReport:
    """Check an analytic gradient against finite differences of the loss.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float``; with ``grad=None``, ``loss(params) -> (float, gradient)``.
        It receives the same structure as ``params`` (a copy: float64 where it accepts that
        and does not round it back to a lower precision).
    grad : callable, gradient or None
        ``grad(params) -> gradient``, the gradient arrays themselves, or None when the loss
        returns them. The gradient has the structure of ``params`` (a flat vector of the same
        length for flat params). A tensor whose gradient has the transposed shape is compared
        after transposing, with a ``transposed`` finding.
    params : array, dict of arrays (nested dicts / lists allowed) or flat vector
        The point to check at. Tensors are named by their keys: ``"W1"``, ``"enc.W"``,
        ``"layers[0].W"``; one array is ``"params"``.
    mode : {"auto", "full", "sample", "directional", "taylor"}
        What to probe (see Notes).
    shapes : dict of str to tuple, or list of tuples, optional
        With a flat ``params`` vector: the tensors it holds, in order.
    order : {"C", "F"}
        With ``shapes``: C (row-major) or Fortran / MATLAB (column-major) unrolling.
    samples : int
        Entries per tensor in ``sample`` mode (and in ``auto`` for large tensors), a quarter of
        them the entries with the largest analytic magnitude, the rest drawn at random.
    directions : int, optional
        Random directions per tensor: 8 in ``directional`` mode, 1 in ``taylor``, 2 in ``auto``.
    budget : int
        ``auto`` checks every entry when the parameters have at most ``budget`` entries, and
        otherwise at most ``budget`` rows, columns or entries per tensor.
    rtol, atol : float, optional
        Use the classic rule |a - n| <= atol + rtol * max(|a|, |n|) instead of the error
        estimate.
    safety : float
        The default rule: |a - n| <= safety * (error estimate + the gradient's own rounding).
    seed : int
        Seeds the sampled entries and random directions.
    progress : callable, optional
        ``progress(done, total)``, counted in loss evaluations (``total`` grows when extra
        steps are spent); called a few hundred times per check at most.
    blas_threads : int or {"auto", "off"}, optional
        Threads of the BLAS and OpenMP pools during the check (see ``gradproof.blas``): by
        default ``$GRADPROOF_BLAS_THREADS``, else the measured ``blas.POLICY``; "off"
        leaves them as they are. The caller's setting is restored afterwards. A bad value
        (here or in the variable) raises InputError.
    subscripts : {"numpy", "matlab"}
        How the report writes an entry's position: 0-based ``dW1[2, 1]`` or MATLAB's 1-based
        ``dW1(3, 2)``, on the gradient as the user gave it (a gradient key such as ``dW1``,
        subscripts swapped for a gradient in the transposed shape).
    flat_name : str
        With a flat ``params`` vector: its name in positions, ``theta(17) = W2(2, 2)``.

    Returns
    -------
    GradReport
        One ``TensorResult`` per tensor and the findings, in the user's terms (see
        ``gradproof.terms``). A KeyboardInterrupt during the check returns the report so far
        with ``partial=True``.

    Raises
    ------
    InputError
        Bad options; params or gradient that are malformed, misshapen (both shapes named),
        missing or extra (both listed) or not finite (tensor and first index named); a loss
        that raises (the point named), returns something other than a finite scalar (what it
        returned described), or changes its argument in place.

    Notes
    -----
    Modes (each comparison's tolerance comes from its own error estimate, see
    ``gradproof.finite_diff``):

    * ``full``: a central difference of every entry, two loss evaluations each, perturbing one
      entry of a flat float64 buffer in place and restoring it. Only entries the first step
      does not clearly decide get two more evaluations (Richardson at 2h), and only those still
      unsure after that (a kink crossed, a failure not yet confirmed) two more at each of h/64,
      h/64², h/64³ until decided (see ``gradproof.engine.staging``). A correct gradient of a smooth
      loss costs 2 evaluations per entry plus about a dozen.
    * ``sample``: ``samples`` entries per tensor, seeded, always including the largest |g|.
    * ``directional``: ``directions`` random unit directions v per tensor: g·v against
      (J(θ+hv) - J(θ-hv))/2h, two evaluations per direction whatever the tensor's size.
    * ``taylor``: along a random direction, the remainder |J(θ+hv) - J(θ) - h·g·v| for
      h = 1, 1/2, 1/4 ...: it shrinks like h² when g is right and like h when it is wrong; the
      fitted order is reported (``TensorResult.taylor_order``), and an order below 1.5 fails
      unless the tensor's entries (up to ``budget``), then measured as in ``full``, show none
      failing and some at a kink: several relu units at their kink at once can make the
      remainder shrink like h along a direction of a correct gradient. No step size to
      choose.
    * ``auto`` (the default) checks every entry when the parameters have at most ``budget``
      (2000) entries: a few thousand loss evaluations. Otherwise, per tensor:

      - a vector, or a matrix no larger than its row + column + sample probes would be: every
        entry, up to ``budget`` (beyond that ``budget`` contiguous blocks, one probe each, and
        ``samples`` entries);
      - a matrix (more axes are folded into columns): one probe per row and one per column
        (the indicator of that row / column with random Gaussian weights, so that no pattern of
        errors within it cancels), up to ``budget`` of each (a seeded subset
        holding the largest |g| beyond that), ``samples`` entries including the largest |g|,
        and ``directions`` random directions; then, where failing rows and failing columns
        cross (at most 256 entries), those entries one by one, which pins a wrong entry down.
        Where they cross in more entries and every row was probed but only some fail, one
        entry in each row and a second in each failing row (at most ``2 * rows`` entries, none
        beyond ``budget``; the same for columns), so that a block of wrong rows is stated as
        the block ("rows 200-299 of hidden"), not as the few sampled entries inside it.

      The seed autoencoder (784-200-784, 314k entries) costs about 6,000 loss evaluations
      instead of 630,000. Every entry lies in a probed row and column (up to the budget), so a
      wrong entry fails its tensor as soon as its error exceeds those probes' tolerances, and
      the crossing then names it.

    Before comparing, the check evaluates the loss twice at the same point (nondeterminism),
    evaluates it in float64 where it accepts a float64 copy and computes with it (with float32
    params or gradients, two more evaluations test whether the loss rounds the copy back to
    float32; if it does, steps and tolerances are sized for float32 instead), measures its
    rounding noise from nine nearby values (ECnoise), and widens the tolerance of a float32
    gradient to its own precision (each with a finding saying so).
    """
    validate(CHECK_GRADIENT_OPTIONS, locals())
    layout, flat = parse_params(params, shapes, order)
    if directions is None:
        directions = DEFAULT_DIRECTIONS.get(mode, 0)
    run = BlackBoxRun(layout, mode, samples, directions, budget, _rule(rtol, atol, safety),
                      np.random.default_rng(seed))
    try:
        run.setup(loss, grad, flat, progress)
        run.probe()
        # A failure may be a loss only as accurate as its solver: measured again if so.
        settle_loss_noise(run)
        if not run.partial:
            run.finish()
    except KeyboardInterrupt:
        run.partial = True
    gradients = run.objective.gradient_names if run.objective else {}
    terms = layout_terms(layout, gradients, run.transposed, flat_name=flat_name,
                         one_based=subscripts == "matlab")

    def full_check(restricted: Callable[[np.ndarray], float], gradient: np.ndarray,
                   point: np.ndarray, seed: int) -> GradReport:
        return check_gradient(restricted, gradient, point, mode="full", rtol=rtol, atol=atol,
                              safety=safety, seed=seed)

    report = recheck_at_moved_point(run.report(), run, loss, grad, full_check, seed)
    # The gradient as arrays: the same entries scanned along lines through moved points.
    report = scan_kinks(report, run, grad, seed)
    return in_user_terms(report, terms)


@blas.policy("check_model")
def check_model(
    model: Autoencoder | Network,
    params: Mapping[str, Any],
    x: Any,
    y: Any = None,
    *,
    grad: Mapping[str, Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    safety: float = 10.0,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    series: bool = True,
    progress: Callable[[int, int], None] | None = None,
    blas_threads: int | str | None = None,
) -> GradReport:
    """Check every entry of an Autoencoder's gradient with exact local central differences.

    Parameters
    ----------
    model : Autoencoder or Network
        The network; its objective (data term, weight decay, KL sparsity) is what is
        differentiated. A ``Network`` is checked through the ``Autoencoder`` with its
        objective on this batch (``Network.as_autoencoder``): its autoencoders, whatever
        their weight decay's form; the exact engine does not know the classifiers and the
        other members yet (``InputError``: check them with ``gradproof.check_network``).
    params : dict of str to ndarray
        The point to check at, as ``model.init_params`` returns it. float32 parameters (or a
        float32 model) are checked through float64 copies, with a ``precision`` finding.
    x : ndarray, shape (batch, n_visible)
        The inputs the objective is evaluated on.
    y : None
        The targets of a ``Network`` that has them; an autoencoder's is its input, so only
        None is accepted today.
    grad : dict of str to ndarray, optional
        The gradient to check (a user's backprop), keyed like ``params``. A weight's gradient
        may have the transposed shape: it is compared after transposing, with a ``transposed``
        finding. By default the model's own ``model.loss_and_grad(params, x)``. The findings
        of a wrong gradient name the backprop mistake that gives it where one does
        (``wrong_backprop_matrix``, ``wrong_activation_derivative`` ..., with the corrected
        line), judged against the model's reference gradient (see ``gradproof.mistakes``).
    rtol, atol : float, optional
        Use the classic rule |a - n| <= atol + rtol * max(|a|, |n|) instead of the error
        estimate.
    safety : float
        The default rule: |a - n| <= safety * (error estimate + the gradient's own rounding).
    max_chunk_bytes : int
        Bound on the working memory of one chunk of entries (default 64 MiB).
    series : bool
        Follow each moved hidden unit through the later layers as an exact power series in
        its activation change (the records' ``series``; the default, where the later
        activations and the loss have one and the series' remainder bound is below
        rounding); False evaluates every later unit and output at every perturbed point. Both
        give the same central differences to rounding; the series is faster by about the
        number of distinct shifts per hidden unit.
    progress : callable, optional
        ``progress(done, total)``, counted in perturbed points (two per entry and step;
        ``total`` grows when second steps are planned); called once per chunk.
    blas_threads : int or {"auto", "off"}, optional
        Threads of the BLAS and OpenMP pools during the check (see ``gradproof.blas``): by
        default ``$GRADPROOF_BLAS_THREADS``, else the measured ``blas.POLICY``; "off"
        leaves them as they are. The caller's setting is restored afterwards. A bad value
        (here or in the variable) raises InputError.

    Returns
    -------
    GradReport
        ``mode="exact"``; one ``TensorResult`` per parameter with every entry checked. A
        KeyboardInterrupt returns the report so far with ``partial=True``.

    Raises
    ------
    InputError
        A ``model`` that is not an Autoencoder; params, inputs or a gradient that do not fit
        it (the tensor, shape or option named); bad options; an objective beyond
        ``LARGEST_OBJECTIVE`` in size, or not finite (a diverged network), whose error
        estimates would overflow.
    RuntimeError
        When the local pieces of the objective do not add up to ``model.loss`` (this module
        no longer matches the Autoencoder: a bug in gradproof, never in the checked gradient).
    """
    validate(CHECK_MODEL_OPTIONS, locals())
    if isinstance(model, Network):
        model = _exact_form(model, x)
    if y is not None:
        raise InputError("check_model checks autoencoders, whose target is their input x: "
                         "pass y=None (for a network with targets, use gradproof.check_network)")
    with ExactRun(model, _rule(rtol, atol, safety), max_chunk_bytes, series, progress) as run:
        try:
            run.setup(params, x, grad)
            run.measure()
        except KeyboardInterrupt:
            run.partial = True
        return run.report()


def _exact_form(network: Network, x: Any) -> Autoencoder:
    """The Autoencoder with ``network``'s objective on the batch ``x``, or InputError."""
    autoencoder = network.as_autoencoder(len(network.validate_input(x)))
    if autoencoder is None:
        raise InputError(
            f"check_model's exact engine knows the autoencoders of the Network family (target "
            f"the input, a squared error with its 1/2 or the sigmoid cross-entropy, weight "
            f"decay on the weights alone); this network (target {network.target!r}, output "
            f"{network.output!r}, loss {network.loss_name!r}) is not one: check it with "
            f"gradproof.check_network(loss, grad, params, x, y, model=network)"
        )
    return autoencoder


def _rule(rtol: float | None, atol: float | None, safety: float) -> Rule:
    """The tolerance rule from the validated user-facing options."""
    return Rule(
        float(safety), None if rtol is None else float(rtol), None if atol is None else float(atol)
    )
