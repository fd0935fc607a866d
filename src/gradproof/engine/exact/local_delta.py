"""Local central differences of the autoencoder objective, many parameter entries at a time.

Contract: ``LocalDifferences(model, params, x)`` caches one float64 forward pass at ``params``;
``differences(name, index, steps) -> LocalChanges`` then returns, for each flat ``index`` of the
tensor ``name`` and its step ``h``, the changes ``J(θ + h e) - J(θ)`` and ``J(θ - h e) - J(θ)``
of the model's objective (their difference is the central difference), with a bound on their
rounding error and a flag for steps that straddle a kink.

Each difference re-evaluates only what the entry touches, with the forward functions of the
registries (activations) and the elementwise forms of the loss records
(``gradproof.nn.losses``: losses, KL), never a derivative of the model or a linearisation:

* an output-layer weight ``W_L[r, c]`` (bias ``b_L[c]``: a weight whose input is 1) moves only
  output pre-activation ``c`` of each example ``b``, by ``±h a_{L-1}[b, r]``: two evaluations of
  one output's loss per example;
* a hidden-layer weight ``W_k[r, c]`` moves only unit ``c`` of layer ``k``, by
  ``±h a_{k-1}[b, r]``; the shifted activation ``t = f(s + d) - f(s)`` reaches layer ``k+1`` as
  the rank-one change ``t * W_{k+1}[c, :]``, and full rows of differences from there on (each
  later layer recomputed as ``f(s + Δs)``, ``Δs = Δa @ W``, with earlier layers cached);
* a tied weight moves its encoder layer and its decoder layer at once. In a two-layer stack
  the decoder use is the output layer: the hidden move is shared as for an untied weight, and
  the one output term the decoder use also moves is replaced, per (entry, example). In deeper
  stacks both changes are made in one propagation per (entry, example), with no sharing (the
  generic path).

The hot loop of two-layer stacks (the output layer right after the moved unit, an output
activation with a ``negated_forward`` and a loss with a ``row_change``) forms the negated
output pre-activations ``-(s + t W[c])`` in one matrix product, evaluates the activation in
place from them (the registry's arithmetic, the same bits), subtracts the base outputs and takes
each row's loss change from ``Δz`` by the loss's exact identity (for the squared error
``Δz (z - x + Δz/2)``): seven passes over each block (two only reading) instead of ten, and
no difference of two loss values. Every value is still the objective at a perturbed point,
less its base value, evaluated from the forward definitions.

Faster still, and the default where the output activation and loss allow it (sigmoid, tanh
or identity with the squared error; sigmoid with the cross-entropy): for a unit of the last
hidden layer, the output terms' changes are summed from their power series in the unit's
activation change ``t`` (the records' ``series``: exact identities of the forward
definitions, not derivatives of the model), whose coefficients for every (example, unit) come
from one matrix product per power (``_SeriesTable``). A unit then costs ``SERIES_ORDER``
multiply-adds per side instead of two passes over the outputs. The series keeps every power
up to ``t^6``, so the central difference keeps its ``h²`` truncation (it is not a
linearisation); the remainder beyond ``t^6`` is bounded (Cauchy's estimate) and added to the
unit's error estimate, and units whose outputs would move by more than ``SERIES_REACH``, or
whose tail bound exceeds the direct path's rounding bound, are evaluated directly as above.
For the seed network at the default steps the outputs move by about 1e-6 and the remainder is
below 1e-35 of each term.

In deeper stacks the units of earlier layers are followed the same way, as truncated series in
``t`` through every later layer (``Δs`` of a layer is a series; ``Δa`` is the activation's shift
series composed with it; the next ``Δs`` is ``Δa @ W``, one product for all powers), to order
``DEEP_SERIES_ORDER``: one pass per (example, unit) for all its shifts, where direct evaluation
takes a forward pass per distinct shift (about 65 per MNIST image). Not where a later layer is
relu (a kink) or the code layer of a KL penalty (whose changes the penalty needs per unit).

The data term is a sum over examples of terms that depend on one example each, so a hidden
entry's data difference is a sum of *units* ``(example b, unit c, shift d)``: an example whose
input to the entry is exactly zero changes nothing and costs nothing, and entries with equal
shifts (equal pixel values with equal steps) share one unit. Each output's change is taken
against its own base value (and each code unit's KL term against its own) before anything is
summed, so two totals of the size of J are never subtracted: rounding stays at the size of the
terms that moved. Weight decay enters exactly, ``(λ/2)((θ ± h)² - θ²) = λ(±θh + h²/2)``.

Rounding (first order; ``eps`` = float64 machine epsilon, ``κ`` = ``ULPS``). The roundings of
distinct terms (outputs, hidden units, examples) are independent, so their errors add in
quadrature: the sum of n such errors stays within a small multiple of the root of the sum of
their squares with overwhelming probability (the probabilistic rounding analysis of Higham and
Mary), where the worst-case linear sum would overstate it up to sqrt(n) times. One error that
reaches all terms alike (the moved unit's own) adds linearly. Per unit:

* forming ``s ± d``: each point is off by ``eps|s ± d|/2``, which moves the unit's difference
  ``D`` by ``|D| eps (|s+d| + |s-d|) / (4|d|)`` (the chord slope ``|D|/|2d|`` times the error);
* the shifted activation: ``f`` rounds to ``κ eps |f|`` on each side: ``|D| κ eps (|a+| + |a-|)
  / |t+ - t-|``;
* each later layer ``ℓ`` rounds ``s + Δs`` and ``f(s + Δs)``; weighted by the sensitivity of
  the example's loss to each unit (measured once at the base point by central differences,
  ``μ = |∂J_b/∂a|``, ``λ = |∂J_b/∂s|``): ``eps (λ_i |s_i| + 2 κ μ_i |a_i|)`` per unit i
  and example; where a unit is evaluated directly, taken at its points instead
  (``_later_rounding``: ``|s + Δs|``, ``|a + Δa|``, ``μ`` grown by the output slopes'
  change, the output terms by ``_output_bound`` at their shifts), which matters where the
  shifts are large against the values (a series unit keeps the bound at the base point);
* the output layer: ``eps (λ_j |s_j| + 2 κ m_j)`` per output j, with ``m_j`` the loss's own
  rounding magnitude (``Loss.magnitude``), at the base point; for an output-layer entry,
  whose step moves the output by ``d``, widened to the perturbed points ``s ± d`` as
  ``+ g_j |d| + q_j d²``, the bound's slope and curvature measured at ``s ± h``
  (``_output_bound``: it matters where ``d`` is large against ``s``); the series path,
  which never forms ``s ± d`` or a loss value, rounds far less (about ``eps`` times each
  term's change) and keeps this bound as an upper bound. Where the change comes from ``row_change``
  its error is ``eps λ_j |s_j|`` (forming s + Δs) plus ``κ eps |z_j| |z_j - x_j|`` (the
  activation's rounding, through the loss's slope), which the same bound covers
  (``m_j >= |z_j - x_j| |z_j|``): the estimate stays an upper bound there;
* the KL term: the same three kinds of error, with the chord slope of KL in the code mean.

Neglected (second order, or below ``n eps`` relative): the roundings of the products
``t * W`` and ``Δa @ W``, of the products and sums in ``row_change``, of the batch sums, and of
the reduction factor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gradproof.nn.activations import ACTIVATIONS
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.losses import LOSSES, REDUCTIONS, kl_divergence, kl_magnitude
from gradproof.engine.exact.pairs import (
    blocks,
    divided,
    entry_sums,
    grid,
    segment_sums,
    shared_shift,
    sorted_units,
    units_of_a_shared_shift,
)
from gradproof.nn.power_series import compose

EPS = float(np.finfo(np.float64).eps)

# Roundings per evaluated value, in units of eps times its magnitude: an activation or a loss
# entry is a short chain of operations that each round once.
ULPS = 4.0

# Bytes of one block of unit rows in the propagation (per buffer; a block uses one on the hot
# path of two-layer stacks, up to four in deeper ones): large enough that numpy's per-call
# overhead is paid on tens of thousands of values, small enough that the buffers stay in the
# core's cache (best at 256-512 KiB where measured; 1 and 2 MiB were slower).
BLOCK_BYTES = 1 << 19

# Largest weight whose row and column tables (``grid``: 16 bytes per entry) are kept; four
# such shapes at most.
GRID_ENTRIES = 1 << 21

# The highest power of the output series (``Loss.series``). A step moves an output by
# |v| ~ 1e-5 or less, where the tail after v^6 is about 1e-35 of the first term's size; larger
# shifts are bounded by the tail estimate, which the error estimate includes.
SERIES_ORDER = 6

# The highest power of the series followed through several layers, where each power costs
# about order² passes per layer: the tail after t^4 is still about 1e-20 of the first term at
# the default steps, and it is bounded and counted as error anyway.
DEEP_SERIES_ORDER = 4

# The largest output shift |t W[c, j]| the series is used for; beyond it, direct evaluation.
SERIES_REACH = 0.5

# The output shift below which the output bound is taken at this shift (``_output_bound``):
# the first step's ``cbrt(eps) max(1, |θ c|)`` and the second step's twice that, where
# |θ c| <= 1, as for the seed network's every output weight.
OUTPUT_REACH = 2 * EPS ** (1 / 3)


# Step of the central differences that measure the base point's sensitivities (only their size
# matters: they weight rounding errors).
_SENSITIVITY_STEP = EPS ** (1 / 3)


@dataclass(frozen=True)
class LocalChanges:
    """The two one-sided changes of J for a set of entries, with what limits their accuracy.

    Attributes
    ----------
    plus, minus : ndarray, shape (n_entries,)
        ``J(θ + h e) - J(θ)`` and ``J(θ - h e) - J(θ)``, each a sum of local changes.
    rounding : ndarray, shape (n_entries,)
        A first-order estimate of the rounding error of ``central`` (and of each side):
        bounds per term, independent terms added in quadrature.
    kink : ndarray of bool, shape (n_entries,)
        True where the two points lie on different sides of an activation's kink.
    """

    plus: np.ndarray
    minus: np.ndarray
    rounding: np.ndarray
    kink: np.ndarray

    @property
    def central(self) -> np.ndarray:
        """``J(θ + h e) - J(θ - h e)``."""
        return self.plus - self.minus


@dataclass(frozen=True)
class _Units:
    """Per-unit results of a propagation; ``code`` holds the code layer's shifts (± stacked)."""

    sides: np.ndarray  # (2, U): change of one example's data term at the + and - point
    rounding: np.ndarray  # (U,)
    kink: np.ndarray  # (U,) bool
    code: np.ndarray | None  # (2, U) if the shifted unit is the code unit; (2, U, n_code) if later


@dataclass(frozen=True)
class _Site:
    """Where a tensor enters the network: layer (1-based), bias or weight, tied partner layer."""

    layer: int
    bias: bool
    partner: int | None


class LocalDifferences:
    """The base point of an autoencoder and the local central differences around it.

    Parameters
    ----------
    model : Autoencoder
    params : mapping of str to ndarray
        Validated parameters; they are copied to float64.
    x : ndarray, shape (batch, n_visible)
        Validated inputs; copied to float64.
    series : bool
        Follow a moved hidden unit through the later layers as a power series in its
        activation change (the records' ``series``) where the activations allow it and its
        remainder bound is below rounding (the default); False evaluates every later unit and
        output at every perturbed point.
    """

    def __init__(self, model: Autoencoder, params: Mapping[str, np.ndarray], x: np.ndarray,
                 series: bool = True) -> None:
        self.series = series
        self.model = model
        self.params = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
        self.n_layers = n = model.n_layers
        self.weights = model.weights(self.params)  # effective W_k, float64 (tied: views of W.T)
        self.biases = [self.params.get(f"b{k}") for k in range(1, n + 1)]
        self.forwards = [ACTIVATIONS[name].forward for name in model.activations]
        self.kinks = [ACTIVATIONS[name].kink for name in model.activations]
        self.loss = LOSSES[model.loss_name]
        x = np.asarray(x, dtype=np.float64)
        self.batch = x.shape[0]
        self.data_factor = REDUCTIONS[model.reduction](self.batch)
        self.code_layer = model.code_layer if model.sparsity_weight else None

        self.acts: list[np.ndarray] = [x]  # a_0 .. a_L
        self.pres: list[np.ndarray] = [x]  # s_1 .. s_L at index 1 .. L (index 0 unused)
        for k in range(1, n + 1):
            s = self.acts[-1] @ self.weights[k - 1]  # (batch, layers[k])
            if self.biases[k - 1] is not None:
                s += self.biases[k - 1]
            self.pres.append(s)
            self.acts.append(self.forwards[k - 1](s))
        self.rho_hat = None if self.code_layer is None else self.acts[self.code_layer].mean(axis=0)
        # Each output entry's data term at the base point: what the shifted terms are compared to.
        self._base_values = self.loss.entries(x, self.acts[n], self.pres[n])  # (batch, n_visible)
        self._residuals = self.acts[n] - x  # (batch, n_visible): z - x, for loss.row_change
        self._negated_output = (
            ACTIVATIONS[model.activations[-1]].negated_forward if self.loss.row_change else None
        )
        # Each hidden layer's sensitivities at the base point (μ, |f'|), by layer, and the
        # output terms' slopes λ: the later layers' bound at a unit's perturbed points grows
        # from them (``_later_rounding``).
        self._sensitivities: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._output_slopes = self._output_slope(self.acts[0], self.pres[n])
        self._output_rounding, self._layer_rounding = self._base_rounding()
        # The output bound at the base point and its growth with the shift (``_output_bound``);
        # at the reach, which most shifts stay within, per output and per column of a batch.
        self._output_terms = (self._output_rounding,
                              *self._output_rounding_growth(self._output_rounding))
        self._output_reach_bound = self._output_bound(*self._output_terms, np.zeros(1))
        self._output_reach_total = np.sqrt(np.square(self._output_reach_bound).sum(axis=0))
        self._block_rows = max(1, BLOCK_BYTES // (16 * max(model.layers)))
        self._buffers: dict[tuple[str, int], np.ndarray] = {}  # scratch of the propagation
        self._series_tables: dict[int, _SeriesTable | None] = {}

    # ----- the objective at the base point ---------------------------------------------------

    def objective(self) -> float:
        """J at the base point, from the same pieces the differences use."""
        total = self.data_factor * float(self._base_values.sum())
        if self.model.weight_decay:
            total += 0.5 * self.model.weight_decay * sum(
                float(np.vdot(w, w)) for name, w in self.params.items() if name.startswith("W")
            )
        if self.code_layer is not None:
            total += self.model.sparsity_weight * float(
                kl_divergence(self.model.sparsity_target, self.rho_hat).sum()
            )
        return total

    # ----- tensors -----------------------------------------------------------------------------

    def _site(self, name: str) -> _Site:
        layer = int(name[1:])
        if name.startswith("b"):
            return _Site(layer, True, None)
        partner = self.n_layers + 1 - layer if self.model.tied else None
        return _Site(layer, False, partner)

    def tied_layers(self, name: str) -> tuple[int, int] | None:
        """The encoder and decoder layers of the tied weight ``name``; None for any other."""
        site = self._site(name)
        return None if site.partner is None else (site.layer, site.partner)

    def _tied_pair_site(self, site: _Site) -> bool:
        """The tied weight of a two-layer stack, whose decoder use is the output layer."""
        return site.partner == self.n_layers == 2

    def _input(self, site: _Site) -> np.ndarray:
        """What multiplies the tensor's entries: a_{k-1}, or a column of ones for a bias."""
        if site.bias:
            return np.ones((self.batch, 1))
        return self.acts[site.layer - 1]  # (batch, layers[k-1])

    def _rows_cols(self, name: str, index: np.ndarray | slice
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | slice]:
        """Row and column of each entry ``index`` (a slice where contiguous), and the index
        as an array unless a slice serves."""
        shape = self.params[name].shape
        size = int(np.prod(shape))
        if len(shape) == 2 and size <= GRID_ENTRIES:
            rows, cols = grid(shape)
            return rows[index], cols[index], index
        if isinstance(index, slice):
            index = np.arange(size)[index]
        if len(shape) == 1:
            return np.zeros_like(index), index, index
        return *divided(index, shape[1]), index

    def entry_order(self, name: str) -> np.ndarray:
        """Flat indices of ``name``, those of a hidden weight column by column: entries that
        can share units (same column) then fall into the same chunk."""
        shape = self.params[name].shape
        index = np.arange(int(np.prod(shape)))
        if self.in_natural_order(name):
            return index
        return index.reshape(shape).T.ravel()

    def in_natural_order(self, name: str) -> bool:
        """Whether ``entry_order(name)`` is the flat order: biases and the output layer's
        weights, whose entries share no units, and on a single example the untied weights of
        a layer whose units the series table evaluates. There the scaled steps give all the
        entries of a column one shift, so a column holds about one unit, a few multiply-adds
        with the table, which entries of the column in another piece compute again; with
        more examples a column holds a unit per example and distinct input, and computing
        them again per piece cost more than the pieces save (bench/README.md)."""
        site = self._site(name)
        if site.bias or site.layer == self.n_layers:
            return True
        return (site.partner is None and self.batch == 1
                and self._series_table(site.layer) is not None)

    def input_scale(self, name: str) -> np.ndarray:
        """Largest |input| each entry multiplies over the batch (1 for biases), broadcastable
        to the tensor's shape.

        A weight enters J only through products with its inputs, so this is the scale of the
        coordinate a step should be measured in. Tied weights take the larger of their two uses.
        """
        site = self._site(name)
        if site.bias:
            return np.ones(1)
        scale = np.abs(self.acts[site.layer - 1]).max(axis=0)[:, None]  # (rows, 1)
        if site.partner is not None:
            decoder = np.abs(self.acts[site.partner - 1]).max(axis=0)[None, :]  # (1, cols)
            scale = np.maximum(scale, decoder)
        return scale

    def pair_bytes(self, name: str) -> int:
        """Working memory per (entry, example) pair of ``differences(name, ...)``, in bytes."""
        site = self._site(name)
        per_pair = 96
        code = self.code_layer
        if code is not None and code > site.layer:
            per_pair += 16 * self.model.layers[code]
        if self._tied_pair_site(site):
            per_pair += 96  # the per-example replacement of the decoder's term
        elif site.partner is not None:
            per_pair += 16 * max(self.model.layers)
        return per_pair

    # ----- the differences ---------------------------------------------------------------------

    def differences(self, name: str, index: np.ndarray | slice, steps: np.ndarray
                    ) -> LocalChanges:
        """``J(θ ± h e) - J(θ)`` for the entries ``index`` of ``name`` with steps ``h``.

        Parameters
        ----------
        name : str
            A parameter name of the model.
        index : ndarray of int, shape (n,), or slice
            Flat (C-order) indices into the tensor.
        steps : ndarray, shape (n,)
            Positive steps, one per entry.

        Returns
        -------
        LocalChanges
        """
        if not isinstance(index, slice):
            index = np.asarray(index, dtype=np.intp)
        steps = np.asarray(steps, dtype=np.float64)
        site = self._site(name)
        rows, cols, index = self._rows_cols(name, index)
        whole = self._whole_rows(name, index)
        if whole is None:
            shifts = steps[:, None] * self._input(site)[:, rows].T  # (n, batch): Δs of the unit
        else:
            # The same products, the rows' inputs broadcast instead of gathered per entry.
            inputs = self._input(site)[:, whole[0]:whole[0] + whole[1]].T  # (rows, batch)
            shifts = np.multiply(steps.reshape(whole[1], -1)[:, :, None], inputs[:, None, :])
            shifts = shifts.reshape(len(steps), self.batch)  # (n, batch)
        if self._tied_pair_site(site):
            data, rounding, kink, kl = self._tied_pair(rows, cols, shifts, steps)
        elif site.partner is not None:
            data, rounding, kink, kl = self._tied(site, rows, cols, shifts, steps)
        elif site.layer == self.n_layers and whole is not None:
            data, rounding, kink, kl = self._output_rows(shifts, whole[1])
        elif site.layer == self.n_layers:
            data, rounding, kink, kl = self._output(cols, shifts)
        else:
            data, rounding, kink, kl = self._hidden(site.layer, cols, shifts)
        # Fresh arrays of the unit results: updated in place.
        if self.data_factor != 1.0:
            data *= self.data_factor
            rounding *= self.data_factor
        if kl is not None:
            data += kl[0]
            rounding += kl[1]
        if not site.bias and self.model.weight_decay:
            # (λ/2)((θ ± h)² - θ²) = λ(±θh + h²/2) exactly: one rounding per product.
            theta = self.params[name].ravel()[index]
            linear = self.model.weight_decay * theta * steps
            square = 0.5 * self.model.weight_decay * steps * steps
            data[0] += linear + square
            data[1] += square - linear
            # The square cancels in the central difference, its rounding does not: with a tiny
            # input the scaled step is huge (h = 4e8 for an input of 1e-14), h² dominates, and
            # 4 eps |linear| alone once claimed 1e-13 where the difference was 6e-9 off.
            rounding += 4 * EPS * (np.abs(linear) + square)
        return LocalChanges(data[0], data[1], rounding, kink)

    def _output(self, cols: np.ndarray, shifts: np.ndarray):
        """Output-layer entries: one output pre-activation per example moves."""
        n = self.n_layers
        # The working rows in one block: numpy backs a block of 4 MiB or more with huge pages,
        # where seven fresh arrays of a large output layer each fault in their pages one by one.
        work = np.empty((7, self.batch, len(cols)))
        s, x, base, u, z, change = (rows.T for rows in work[:6])  # each (entries, batch)
        np.take(self.pres[n], cols, axis=1, out=work[0], mode="clip")
        np.take(self.acts[0], cols, axis=1, out=work[1], mode="clip")
        np.take(self._base_values, cols, axis=1, out=work[2], mode="clip")
        moved = shifts != 0  # an unmoved term changes by exactly 0, whatever its last bit
        # Times 1 changes no bit: the masks are skipped where every term moved (a sigmoid or
        # tanh layer's outputs, the biases' ones), three passes over each piece.
        masked = not moved.all()
        sides = np.empty((2, len(cols)))
        for side, move in enumerate((np.add, np.subtract)):
            move(s, shifts, out=u)  # s ± d
            self.loss.entries(x, self.forwards[-1](u, out=z), u, out=change)
            change -= base  # the local change, before any sum
            if masked:
                change *= moved
            change.sum(axis=1, out=sides[side])
        kink = _straddles(self.kinks[-1], s, shifts).any(axis=1)
        base_bound, slope, curvature = (
            np.take(term, cols, axis=1, out=work[3 + k], mode="clip").T
            for k, term in enumerate(self._output_terms)
        )  # each (entries, batch), in the rows of the loop's buffers
        rounding = self._output_bound(base_bound, slope, curvature, shifts, out=curvature,
                                      scratch=work[6].T)
        if masked:
            rounding *= moved
        np.square(rounding, out=rounding)
        return sides, np.sqrt(rounding.sum(axis=1)), kink, None

    def _output_rows(self, shifts: np.ndarray, count: int):
        """``_output`` for ``count`` whole rows of the output weights: each entry's output
        term is read by broadcasting over the rows instead of gathered, the same arithmetic in
        the same order (example-major, as ``_output``'s blocks, so that the sums over the
        examples add alike)."""
        n, batch = self.n_layers, self.batch
        width = shifts.shape[0] // count  # n_visible
        d = shifts.T.reshape(batch, count, width)  # a view
        s = self.pres[n][:, None, :]  # (batch, 1, n_visible), like x and the base values
        x, base = self.acts[0][:, None, :], self._base_values[:, None, :]
        u, z, change = np.empty((3, batch, count, width))
        moved = d != 0  # as in _output
        masked = not moved.all()
        sides = np.empty((2, count * width))
        common, rest = shared_shift(d)
        if rest is not None:
            # The rest's output terms, gathered: flat (example, output) positions.
            _, output = divided(rest, width)
            term = output if batch == 1 else rest // (count * width) * width + output
            s_rest, x_rest, base_rest = (values.reshape(-1)[term] for values in (s, x, base))
            d_rest = d.reshape(-1)[rest]
        for side, move in enumerate((np.add, np.subtract)):
            if rest is None:
                move(s, d, out=u)  # s ± d
                self.loss.entries(x, self.forwards[-1](u, out=z), u, out=change)
                change -= base
            else:
                # Most entries move their outputs by the one shift ``common``: each output's
                # term at s ± common is evaluated once, the others' as gathered. The same
                # operations on the same values: the same bits as every entry on its own.
                np.copyto(change, self._output_change(x, s, base, move(s, common)))
                change.reshape(-1)[rest] = self._output_change(x_rest, s_rest, base_rest,
                                                               move(s_rest, d_rest))
            if masked:
                change *= moved
            change.sum(axis=0, out=sides[side].reshape(count, width))
        kink = _straddles(self.kinks[-1], np.broadcast_to(s, d.shape), d).any(axis=0).ravel()
        if max(float(d.max()), -float(d.min())) > OUTPUT_REACH:
            rounding = self._output_bound(*(t[:, None, :] for t in self._output_terms), d,
                                          out=u, scratch=z)  # (batch, rows, n_visible)
            if masked:
                rounding *= moved
        elif masked:
            # Every shift within the reach: each output's bound is the one there.
            rounding = np.multiply(self._output_reach_bound[:, None, :], moved, out=u)
        else:
            # Every term moved, each within the reach: each output's bound serves all rows.
            return sides, np.tile(self._output_reach_total, count), kink, None
        np.square(rounding, out=rounding)
        return sides, np.sqrt(rounding.sum(axis=0)).ravel(), kink, None

    def _output_change(self, x: np.ndarray, s: np.ndarray, base: np.ndarray, u: np.ndarray
                       ) -> np.ndarray:
        """The output terms' changes at the moved pre-activations ``u``: each term's value
        there less its base value, as ``_output_rows`` evaluates them."""
        change = self.loss.entries(x, self.forwards[-1](u), u)
        change -= base
        return change

    def _whole_rows(self, name: str, index: np.ndarray | slice) -> tuple[int, int] | None:
        """(first row, rows) where ``index`` is a slice of whole rows of a weight, else None."""
        shape = self.params[name].shape
        if not isinstance(index, slice) or len(shape) != 2:
            return None
        start, stop, _ = index.indices(shape[0] * shape[1])
        if start % shape[1] or stop % shape[1] or stop <= start:
            return None
        return start // shape[1], (stop - start) // shape[1]

    def row_length(self, name: str) -> int:
        """Entries per row of ``name`` (1 for a bias): a piece of whole rows of the output
        weights is evaluated by broadcasting (``_output_rows``)."""
        shape = self.params[name].shape
        return shape[1] if len(shape) == 2 else 1

    def _hidden(self, layer: int, cols: np.ndarray, shifts: np.ndarray):
        """Hidden-layer entries (untied): shared units per (example, unit, shift)."""
        # The pairs that move anything, sorted by entry: found in a boolean mask, which numpy
        # scans much faster than the float shifts themselves (bench/README.md).
        pairs = np.flatnonzero(shifts != 0)
        entry, example = divided(pairs, shifts.shape[1])
        shift = shifts.reshape(-1)[pairs]  # one gather from the flat positions, not two indices
        col = cols[entry]
        one_example = shifts.shape[1] == 1
        shared = units_of_a_shared_shift(col, shift) if one_example else None
        unit_of_pair, *unit = shared or sorted_units(example, col, shift, one_example)
        units = self._propagate(layer, *unit)
        return self._gather(layer, len(cols), cols, entry, unit_of_pair, units)

    def _tied_pair(self, rows: np.ndarray, cols: np.ndarray, shifts: np.ndarray, steps: np.ndarray):
        """Tied weights of a two-layer stack: W1[r, c] moves hidden unit c and, as the output
        layer's W1.T[c, r], output r.

        The hidden unit's move is shared between entries as for an untied weight; its units
        hold output r's term moved by that alone, v_r = s_r + t W[r, c]. Per (entry, example)
        that one term is then replaced by the term moved by both, u_r = v_r ± h (a_c + t):
        two more output evaluations per side.
        """
        data, rounding, kink, kl = self._hidden(1, cols, shifts)
        x, base = self.acts[0][:, rows].T, self._base_values[:, rows].T  # (entries, batch)
        s_hidden, a_hidden = self.pres[1][:, cols].T, self.acts[1][:, cols].T
        s_out = self.pres[2][:, rows].T
        w = self.weights[0][rows, cols][:, None]  # (entries, 1): W[r, c]
        h = steps[:, None]
        crossed = np.zeros_like(s_out, dtype=bool)
        reach = np.zeros_like(s_out)  # the replaced term's largest shift from s
        for side, sign in enumerate((1.0, -1.0)):
            t = self.forwards[0](s_hidden + sign * shifts) - a_hidden  # 0 where the input is 0
            v = s_out + t * w
            u = v + sign * h * (a_hidden + t)
            both = self.loss.entries(x, self.forwards[1](u), u) - base
            alone = self.loss.entries(x, self.forwards[1](v), v) - base
            data[side] += (both - alone).sum(axis=1)
            crossed |= _straddles(self.kinks[1], v, sign * h * (a_hidden + t))
            for moved in (u, v):
                np.maximum(reach, np.abs(moved - s_out), out=reach)
        # The replaced term's bound at the points it was evaluated at (``_output_bound``),
        # each its own: no piece shares it, so the floor at the reach would only widen it,
        # and where the step moves the term far less than the reach (a tied weight's limited
        # step at values of 1e-9) it widened a threshold 1e7-fold.
        replaced = (self._output_bound(*(term[:, rows].T for term in self._output_terms),
                                       reach, floor=0.0) ** 2).sum(axis=1)
        return data, np.sqrt(rounding**2 + replaced), kink | crossed.any(axis=1), kl

    def _tied(self, site: _Site, rows: np.ndarray, cols: np.ndarray, shifts: np.ndarray,
              steps: np.ndarray):
        """Tied weights of a deeper stack (the generic path): every (entry, example) is its own
        unit, with the decoder change made in the same propagation."""
        n_entries = len(rows)
        entry = np.repeat(np.arange(n_entries), self.batch)  # pairs sorted by entry
        example = np.tile(np.arange(self.batch), n_entries)
        order = np.argsort(example, kind="stable")  # units sorted by example, as blocks need
        units = self._propagate(
            site.layer, example[order], cols[entry[order]], shifts[entry[order], example[order]],
            inject=(site.partner, rows[entry[order]], steps[entry[order]]),
        )
        unit_of_pair = np.empty(len(order), dtype=np.intp)
        unit_of_pair[order] = np.arange(len(order))
        return self._gather(site.layer, n_entries, cols, entry, unit_of_pair, units)

    def _gather(self, layer: int, n_entries: int, cols: np.ndarray, entry: np.ndarray,
                unit_of_pair: np.ndarray, units: _Units):
        """Sum unit results over the examples of each entry (pairs sorted by entry); add the
        entry's KL difference."""
        # Units of different examples round independently: their errors add in quadrature.
        per_pair = np.stack((units.sides[0][unit_of_pair], units.sides[1][unit_of_pair],
                             units.rounding[unit_of_pair] ** 2))  # (3, pairs)
        # Summed over the pairs of each entry that has any, then scattered into one block for
        # all entries: the entries of a large tensor get one fresh array, not one per sum.
        # The root of the summed squares is taken before the scatter, where the entries
        # that no pair moves (most of an MNIST image's) keep their 0.
        sums = np.zeros((3, n_entries))  # the two sides, then the rounding
        kink = np.zeros(n_entries, dtype=bool)
        if len(entry):
            # One pair per entry where there is one example: nothing to sum.
            starts = None if self.batch == 1 else np.flatnonzero(np.r_[True, np.diff(entry) != 0])
            if starts is None or starts.size == len(entry):
                moved, summed = entry, per_pair
            else:
                moved, summed = entry[starts], np.add.reduceat(per_pair, starts, axis=1)
            np.sqrt(summed[2], out=summed[2])
            for row, values in zip(sums, summed):  # row by row: a 2-d scatter is 3x slower
                row[moved] = values
            kink[entry[units.kink[unit_of_pair]]] = True
        data, rounding = sums[:2], sums[2]
        kl = None
        if units.code is not None:
            kl = self._kl_differences(layer, n_entries, cols, entry, unit_of_pair, units.code)
        return data, rounding, kink, kl

    # ----- sparsity ----------------------------------------------------------------------------

    def _kl_differences(self, layer: int, n_entries: int, cols: np.ndarray, entry: np.ndarray,
                        unit_of_pair: np.ndarray, code: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """β Σ_j [KL(ρ̂_j + Δρ̂_j^±) - KL(ρ̂_j)] per entry (± stacked), with its rounding
        bound."""
        rho, beta = self.model.sparsity_target, self.model.sparsity_weight
        if layer == self.code_layer:
            # Only code unit c moves: Δρ̂ = Σ_b t_b / batch, one value per entry and sign.
            moved = np.stack([
                entry_sums(entry, code[sign][unit_of_pair], n_entries)
                for sign in range(2)
            ]) / self.batch  # (2, entries)
            base = self.rho_hat[cols][None, :]  # (1, entries)
        else:
            moved = np.stack([
                segment_sums(code[sign][unit_of_pair], entry, n_entries) for sign in range(2)
            ]) / self.batch  # (2, entries, n_code)
            base = self.rho_hat[None, None, :]
        q = base + moved  # shifted code means, (2, entries[, n_code])
        sides = kl_divergence(rho, q) - kl_divergence(rho, base)  # per code unit, before the sum
        diff = sides[0] - sides[1]
        # The code shifts carry the rounding of the activations they came from (κ eps |a| per
        # example, about κ eps ρ̂ on average); forming ρ̂ + Δ rounds by eps|q|/2.
        chord = np.divide(np.abs(diff), np.abs(moved[0] - moved[1]),
                          out=np.zeros_like(diff), where=moved[0] != moved[1])
        rounding = ULPS * EPS * (kl_magnitude(rho, q[0]) + kl_magnitude(rho, q[1]))
        rounding += chord * EPS * (0.5 + 2 * ULPS) * (np.abs(q[0]) + np.abs(q[1]))
        if diff.ndim == 2:
            sides, rounding = sides.sum(axis=2), np.sqrt((rounding**2).sum(axis=1))
        return beta * sides, beta * rounding

    # ----- unit propagation ----------------------------------------------------------------------

    def _propagate(self, layer: int, example: np.ndarray, col: np.ndarray, shift: np.ndarray,
                   inject: tuple[int, np.ndarray, np.ndarray] | None = None) -> _Units:
        """Run units (sorted by example, then unit) through the layers after ``layer``.

        The moved unit itself is one value per unit and side, done for all units at once; the
        later layers, full rows per unit, go block by block.
        """
        n_units = len(example)
        u0 = self.pres[layer][example, col] + np.stack((shift, -shift))  # (2, U): s ± d
        a0 = self.forwards[layer - 1](u0)
        t = a0 - self.acts[layer][example, col]  # (2, U): the moved unit's activation change
        kink = _straddles(self.kinks[layer - 1], self.pres[layer][example, col], shift)
        code = t if layer == self.code_layer else self._code_buffer(layer, n_units)
        sides = np.empty((2, n_units))
        table = self._series_table(layer) if inject is None else None
        later = self._layer_rounding[layer][example]  # the later layers' rounding, (U,)
        slope = np.zeros(n_units)  # a bound on |dJ_b/dt| where one is known
        if table is None:
            dense = np.arange(n_units)
        else:
            # The series is used where its tail stays under the direct path's rounding bound,
            # so that its values are as exact as direct evaluation's (larger steps fall back).
            # That bound stays in the estimate: it is far above the series' own rounding, but
            # it also covers what a float64 backprop loses at saturated outputs (1 - z
            # rounded, about eps |z - x| |z| per output), which a tighter bound would report
            # as a bug.
            usable, error, slope = table.evaluate(example, col, t, sides, later)
            dense = np.flatnonzero(~usable)
            later = later + error

        def run(block: slice) -> None:
            units = dense[block]  # consecutive units of one example
            injected = None if inject is None else (inject[0], inject[1][units], inject[2][units])
            b = int(example[units[0]])
            sides[:, units], crossed, block_code, at_points = self._dense(
                layer, b, col[units], t[:, units], injected
            )
            kink[units] |= crossed
            if at_points is not None:
                later[units] = at_points
            if block_code is not None:
                code[:, units] = block_code

        for block in blocks(example[dense], col[dense], self._block_rows):
            run(block)

        # First-stage rounding (see the module docstring): the moved unit's activation rounds
        # by κ eps |a±| on each side, which reaches J_b through the chord slope |D| / |Δt| or,
        # where the two rounded activations are equal (a saturated unit: Δt = 0 but the true
        # change is not), through the series' bound on the slope.
        diff = np.abs(sides[0] - sides[1])
        d_t = np.abs(t[0] - t[1])
        chord = np.divide(diff, d_t, out=np.zeros(n_units), where=d_t > 0)
        rounding = np.maximum(chord, slope) * ULPS * EPS * (np.abs(a0[0]) + np.abs(a0[1]))
        rounding += diff * np.divide(EPS * (np.abs(u0[0]) + np.abs(u0[1])), 4 * np.abs(shift),
                                     out=np.zeros(n_units), where=shift != 0)
        rounding += later
        return _Units(sides, rounding, kink, code)

    def _series_table(self, layer: int) -> _SeriesTable | None:
        """The series table of ``layer``, built once, on first use; None where the output
        activation and loss, or an activation of a later hidden layer, have no series form, or
        where a later layer is the code layer (whose changes the KL term needs unit by unit)."""
        if layer not in self._series_tables:
            n = self.n_layers
            later = self.model.activations[layer:n - 1]  # hidden layers after ``layer``
            found = None
            if (self.series and self.loss.series is not None
                    and all(ACTIVATIONS[name].series is not None for name in later)
                    and (self.code_layer is None or self.code_layer <= layer)):
                found = self.loss.series(ACTIVATIONS[self.model.activations[-1]], self.acts[0],
                                         self.acts[n], self.pres[n], SERIES_ORDER)
            table = None
            if found is not None and layer + 1 == n:
                table = _SeriesTable.build(*found, self.weights[layer])
            elif found is not None:
                table = self._deep_series_table(layer, *found)
            self._series_tables[layer] = table
        return self._series_tables[layer]

    def _deep_series_table(self, layer: int, output: np.ndarray, bound: np.ndarray
                           ) -> _SeriesTable:
        """The series table of a layer with hidden layers after it: the change of each unit
        followed through the later layers as a truncated power series in its activation
        change ``t`` (``Δs`` of each later layer a series, ``Δa`` its activation's shift
        series composed with ``Δs``), then through the output series; one pass per (example,
        unit), for every shift at once.

        Tail: while ``|t| <= 1 / reach_c`` every later pre-activation moves by at most 1 (the
        moves grow at most by ``ShiftSeries.lipschitz`` and ``|W|`` layer by layer), so each
        output's change stays within its disc bound ``M_bj`` and the unit's change within
        ``Σ_j M_bj``; Cauchy's estimate then bounds the tail by
        ``Σ_j M_bj (|t| reach_c)^(K+1) / (1 - |t| reach_c)``.
        """
        n, order = self.n_layers, DEEP_SERIES_ORDER
        output = output[:order + 1]  # a truncated series is a slice of a longer one
        later = [ACTIVATIONS[name].series for name in self.model.activations[layer:n - 1]]
        shifts = [series.coefficients(self.pres[k], order)
                  for k, series in zip(range(layer + 1, n), later)]
        width = self.model.layers[layer]
        pairs = self.batch * width
        example, col = divided(np.arange(pairs), width)
        coefficients = np.empty((order, pairs))
        widest = max(self.model.layers[layer + 1:])
        per_chunk = max(1, (16 << 20) // (8 * (order + 1) * widest * 4))
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, pairs, per_chunk):
                b, c = example[start:start + per_chunk], col[start:start + per_chunk]
                moved = np.zeros((order + 1, len(c), self.model.layers[layer + 1]))
                moved[1] = self.weights[layer][c]  # Δs of layer + 1: t W[c, :]
                for k, shift in zip(range(layer + 1, n), shifts):
                    changed = compose(shift[:, b], moved)  # Δa of layer k, (order + 1, chunk, n_k)
                    # One 2-D product for all powers: numpy's stacked matmul is 4x slower here.
                    moved = (changed.reshape(-1, changed.shape[2]) @ self.weights[k]).reshape(
                        order + 1, len(c), -1
                    )
                change = compose(output[:, b], moved).sum(axis=2)  # (order + 1, chunk)
                coefficients[:, start:start + per_chunk] = change[1:]
            growth = np.abs(self.weights[layer])  # (width, layers[layer + 1])
            reach = growth.max(axis=1)
            for k, series in zip(range(layer + 1, n), later):
                growth = (series.lipschitz * growth) @ np.abs(self.weights[k])
                reach = np.maximum(reach, growth.max(axis=1))
            tail = bound.sum(axis=1)[:, None] * reach[None, :] ** (order + 1)
        coefficients = coefficients.reshape(order, self.batch, width)
        # No separate pass of magnitudes: each coefficient's own size stands in for them, and
        # the direct path's bound that the units keep (``_propagate``) is far above this
        # path's rounding at the default steps (shifts about 1e-5 of the pre-activations).
        return _SeriesTable(coefficients, np.abs(coefficients), tail, reach,
                            ULPS + np.sqrt(widest))

    def _code_buffer(self, layer: int, n_units: int) -> np.ndarray | None:
        code = self.code_layer
        if code is None or code <= layer:
            return None
        return np.empty((2, n_units, self.model.layers[code]))

    def _dense(self, layer: int, b: int, col: np.ndarray, t: np.ndarray,
               inject: tuple[int, np.ndarray, np.ndarray] | None):
        """Units of one example whose unit ``col`` of ``layer`` changed by ``t`` (2, R): follow
        the change through the later layers to the loss.

        Returns the (2, R) changes of the example's data term, whether a later pre-activation
        crossed a kink, the code layer's (2, R, n_code) changes when it comes later (a view
        of a scratch buffer: the caller copies it), and the later layers' rounding bound at
        the points evaluated (``_later_rounding``), (R,).
        """
        n, rows = self.n_layers, len(col)
        scratch = self._scratch(2 * rows)
        flat_t = t.reshape(-1)  # (2R,): rows :R carry the + points, rows R: the - points
        if layer + 1 == n and inject is None and self._negated_output is not None:
            # The hot path of two-layer stacks: -s_n in one matrix product, the output
            # activation in place from it, the loss change from Δz (no kink, no code layer).
            v = self._rank_one(layer, b, col, -flat_t, scratch("u", n), -1.0)  # (2R, n_visible)
            # -(s + Δs) + s: the outputs' shifts negated, bit for bit (their sizes are needed).
            at_points = self._later_rounding(layer, b, rows, scratch, v + self.pres[n][b])
            sums = self._loss_changes(b, self._negated_output(v), None, scratch)
            return sums.reshape(2, rows), np.zeros(rows, dtype=bool), None, at_points
        u = self._rank_one(layer, b, col, flat_t, scratch("u", layer + 1))
        kink = np.zeros(rows, dtype=bool)
        code = None
        delta_a = None  # dense Δa of the previous layer; None while only unit c moved
        for k in range(layer + 1, n + 1):
            if k > layer + 1:
                u = np.matmul(delta_a, self.weights[k - 1], out=scratch("u", k))  # Δs_k
                u += self.pres[k][b]  # (2R, layers[k]): the shifted pre-activations
            if inject is not None and k == inject[0]:
                # The decoder use of the tied entry: s_k[:, r] also moves by ±h * a'_{k-1}[c].
                every = np.arange(2 * rows)
                cc = np.concatenate((col, col))
                moved = flat_t if delta_a is None else delta_a[every, cc]
                target = np.concatenate((inject[1], inject[1]))
                step = np.concatenate((inject[2], -inject[2]))
                u[every, target] += step * (self.acts[k - 1][b, cc] + moved)
            a = self.forwards[k - 1](u, out=scratch("a", k))
            kink |= _moved_across(self.kinks[k - 1], self.pres[k][b], u, rows)
            if k == n:
                break
            delta_a = np.subtract(a, self.acts[k][b], out=scratch("delta_a", k))  # (2R, layers[k])
            if k == self.code_layer:
                code = delta_a.reshape(2, rows, -1)

        at_points = self._later_rounding(layer, b, rows, scratch, u - self.pres[n][b])
        return self._loss_changes(b, a, u, scratch).reshape(2, rows), kink, code, at_points

    def _later_rounding(self, layer: int, b: int, rows: int, scratch, shift: np.ndarray
                        ) -> np.ndarray:
        """The rounding of the layers after ``layer`` at the points ``_dense`` evaluated
        (the hidden layers' pre-activations and activations still in ``scratch``, the
        outputs' shifts ``shift`` from s, or their negations), per unit: the larger side's,
        (R,).

        ``_base_rounding`` takes each later unit's ``eps (λ_i |s_i| + 2κ μ_i |a_i|)`` at the
        base point, which holds while a step moves the later values by little against
        themselves. With values of 1e-9 a step moves them by about ``cbrt(eps)`` times the
        weights: each side then forms ``s + Δs`` at ``eps |s + Δs|``, and the outputs' slopes
        (``z - x`` for the squared error) grow from 1e-9 to the outputs' shifts, which every
        later unit's sensitivity carries back; the bound at the base point missed both by
        orders of magnitude, and correct gradients of deeper stacks failed (bench/README.md).
        Here each term is taken at the point itself: the outputs' by ``_output_bound`` at
        their shifts; a hidden unit's with ``|s + Δs|`` and ``|a + Δa|``, and its sensitivity
        ``μ`` grown by the change of the output slopes between the base point and the point,
        carried back through ``|W|`` and the base point's ``|f'|`` (a bound on the change of
        ``∂J_b/∂a`` where the activation slopes stay put; their own change is second order).
        """
        n = self.n_layers
        # Without the floor at the reach (which serves pieces that share one bound): the
        # secant slope bounds a convex bound within h, so the short steps near a kink keep a
        # bound of their own size.
        terms = self._output_bound(*(term[b] for term in self._output_terms), shift, floor=0.0)
        squares = np.square(terms).sum(axis=1)
        if layer + 1 == n:
            return np.sqrt(squares.reshape(2, rows).max(axis=0))
        u = scratch("u", n)  # (2R, n_visible): the output pre-activations at the points
        grown = np.abs(self._output_slope(self.acts[0][b], u) - self._output_slopes[b])
        for k in range(n - 1, layer, -1):
            grown = grown @ np.abs(self.weights[k]).T  # the growth of μ in layer k
            mu, slope = self._sensitivities[k]
            mu_at = mu[b] + grown
            own = EPS * mu_at * (slope[b] * np.abs(scratch("u", k))
                                 + 2 * ULPS * np.abs(scratch("a", k)))
            squares += np.square(own).sum(axis=1)
            grown *= slope[b]  # the growth of λ = μ |f'|, carried to the layer before
        return np.sqrt(squares.reshape(2, rows).max(axis=0))

    def _loss_changes(self, b: int, z: np.ndarray, u: np.ndarray | None, scratch) -> np.ndarray:
        """Change of example b's data term for each row of shifted outputs ``z`` (pre-activations
        ``u``, needed only by a loss without ``row_change``), (rows,); overwrites ``z``.

        Each output's change is taken against its own base value before the row is summed."""
        n = self.n_layers
        if self.loss.row_change is not None:
            z -= self.acts[n][b]  # Δz, (rows, n_visible)
            return self.loss.row_change(self._residuals[b], z)
        change = self.loss.entries(self.acts[0][b], z, u, out=scratch("change", n))
        change -= self._base_values[b]
        return change.sum(axis=1)

    def _rank_one(self, layer: int, b: int, col: np.ndarray, flat_t: np.ndarray,
                  out: np.ndarray, sign: float = 1.0) -> np.ndarray:
        """sign * s_{layer+1}[b] + t * W_{layer+1}[c, :] for every row: the rank-one change a
        moved unit c makes in the next layer's pre-activations, (2R, layers[layer+1]).

        With ``sign=-1`` and ``-t`` this is the negated pre-activation, bit for bit (rounding
        is symmetric about zero)."""
        w_next = self.weights[layer]  # (layers[layer], layers[layer+1])
        s_next = self.pres[layer + 1][b] if sign > 0 else -self.pres[layer + 1][b]
        if col[0] == col[-1] and (col == col[0]).all():
            # One shared row of W: [t, 1] @ [W[c]; s] forms t * W[c] + s in one pass of BLAS.
            # Both factors are small: filled in place rather than stacked (numpy's stacking
            # costs more than the copies at this size).
            pair = np.empty((2, len(s_next)))  # (2, layers[layer+1])
            pair[0] = w_next[col[0]]
            pair[1] = s_next
            factors = np.empty((len(flat_t), 2))  # (2R, 2)
            factors[:, 0] = flat_t
            factors[:, 1] = 1.0
            return np.matmul(factors, pair, out=out)
        np.take(w_next, np.concatenate((col, col)), axis=0, out=out)  # (2R, layers[layer+1])
        out *= flat_t[:, None]
        out += s_next
        return out

    def _scratch(self, rows: int):
        """Reusable buffers: ``scratch(role, k)`` is a (rows, layers[k]) view.

        Fresh arrays of a block's size would cost page faults on every block; these are
        allocated once per role and layer.
        """
        buffers = self._buffers
        widths = self.model.layers

        def view(role: str, k: int) -> np.ndarray:
            array = buffers.get((role, k))
            if array is None or len(array) < rows:
                array = buffers[(role, k)] = np.empty((max(rows, 2 * self._block_rows), widths[k]))
            return array[:rows]

        return view

    # ----- rounding of the later layers, per example ---------------------------------------------

    def _base_rounding(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The rounding of the output layer per entry, and of each layer's later layers.

        The first array, (batch, n_visible), bounds the rounding of forming s ± d at one output
        and evaluating its loss on both sides. In the list, entry ``[k][b]`` adds in quadrature,
        over the units i of the layers after k, eps (λ_i |s_i| + 2κ μ_i |a_i|) for example b
        (the output layer's terms as above), with the sensitivities measured by central
        differences at the base point.
        """
        n = self.n_layers
        h = _SENSITIVITY_STEP
        per_layer = [np.zeros(self.batch) for _ in range(n + 1)]
        output = self._output_point_rounding(self.acts[0], self.pres[n])  # (batch, n_visible)
        squares = (output**2).sum(axis=1)  # independent terms add in quadrature
        per_layer[n - 1] = np.sqrt(squares)
        for k in range(n - 1, 1, -1):  # units start in layer 1 at the earliest
            # Layer k's own rounding reaches J through μ = |∂J_b/∂a_k| and λ = μ |f'|.
            mu = self._activation_sensitivity(k, h)  # (batch, layers[k])
            s, a = self.pres[k], self.acts[k]
            slope = np.abs(self.forwards[k - 1](s + h) - self.forwards[k - 1](s - h)) / (2 * h)
            self._sensitivities[k] = (mu, slope)
            own = EPS * (mu * slope * np.abs(s) + 2 * ULPS * mu * np.abs(a))
            squares = squares + (own**2).sum(axis=1)
            per_layer[k - 1] = np.sqrt(squares)
        return output, per_layer

    def _output_point_rounding(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """The output layer's rounding bound, entry by entry, evaluated with the output
        pre-activations at ``s`` (the base point's, or a perturbed point's): forming ``s ± d``
        and evaluating the loss on both sides, ``eps (λ |s| + 2κ m)``, with ``λ = |∂ℓ/∂s|``
        measured by central differences and ``m`` the loss's rounding magnitude there."""
        lam = np.abs(self._output_slope(x, s))
        return EPS * (lam * np.abs(s) + 2 * ULPS * self.loss.magnitude(x, self.forwards[-1](s), s))

    def _output_slope(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """``∂ℓ/∂s`` of each output term at the pre-activations ``s``, by central differences
        (it weights rounding errors: its size, and its change between two points)."""
        h = _SENSITIVITY_STEP
        out_f = self.forwards[-1]
        up, down = s + h, s - h
        return (self.loss.entries(x, out_f(up), up) - self.loss.entries(x, out_f(down), down)
                ) / (2 * h)

    @staticmethod
    def _output_bound(base: np.ndarray, slope: np.ndarray, curvature: np.ndarray,
                      shift: np.ndarray, out: np.ndarray | None = None,
                      scratch: np.ndarray | None = None, floor: float = OUTPUT_REACH
                      ) -> np.ndarray:
        """``base + r (slope + r curvature)``, ``r = max(|d|, floor)``: the output bound at
        the points ``s ± d``, entry by entry, from an entry's own shift alone (the same bits
        whatever else is evaluated with it); into ``out``, with ``scratch`` for ``r``, where
        given. It grows with ``|d|``, so that the bound at the reach covers every smaller
        shift: a piece whose shifts all stay within it takes each output's bound there, made
        once, instead of one per entry. Without a floor (0) it is each shift's own bound, as
        the units of a hidden layer take it (``_later_rounding``)."""
        reach = np.abs(shift, out=scratch)
        np.maximum(reach, floor, out=reach)
        bound = np.multiply(reach, curvature, out=out)
        bound += slope
        bound *= reach
        bound += base
        return bound

    def _output_rounding_growth(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How the output bound ``base`` (at the base point) grows with the output's shift
        ``d``: per output, ``g`` and ``q`` such that ``base + g |d| + q d²`` bounds it at
        ``s ± d`` (see ``_output_bound``).

        The bound at ``s`` alone holds while a step moves an output by little against ``s``
        and the scales of its loss. Near ``s = 0`` with tiny outputs it does not: an identity
        output at 1e-9 moved by a step of 6e-6 rounds ``s ± d`` at ``eps |d|`` and evaluates a
        loss of size ``d²``, which the bound at ``s`` (about ``eps s²``) missed by orders of
        magnitude, and a correct gradient failed (bench/README.md). The bound is measured at
        ``s ± h`` (the sensitivity step): ``g``, the larger secant slope from ``s``, covers a
        bound that is convex within ``h`` (a kink of ``|s|`` or ``|z - x|`` among them); ``q``,
        half its second difference, its growth beyond."""
        h = _SENSITIVITY_STEP
        x, s = self.acts[0], self.pres[self.n_layers]
        up = self._output_point_rounding(x, s + h)
        down = self._output_point_rounding(x, s - h)
        slope = np.maximum(np.abs(up - base), np.abs(down - base)) / h
        curvature = np.abs(up - 2 * base + down) / (2 * h * h)
        return slope, curvature

    def _activation_sensitivity(self, k: int, h: float) -> np.ndarray:
        """|∂J_b/∂a_k[b, i]| for every example and unit, by central differences of the data
        term."""
        n, width = self.n_layers, self.model.layers[k]
        out = np.empty((self.batch, width))
        eye = np.eye(width)
        for b in range(self.batch):
            delta_a = np.r_[eye, -eye] * h  # (2w, w): move one activation of layer k each
            for j in range(k + 1, n + 1):
                u = self.pres[j][b] + delta_a @ self.weights[j - 1]
                a = self.forwards[j - 1](u)
                if j < n:
                    delta_a = a - self.acts[j][b]
            values = self.loss.entries(self.acts[0][b], a, u)
            out[b] = np.abs((values[:width] - values[width:]).sum(axis=1)) / (2 * h)
        return out


@dataclass(frozen=True)
class _SeriesTable:
    """The data-term change of each (example, unit of the last hidden layer) as a power series
    in the unit's activation change ``t``.

    Unit ``c`` moving by ``t`` moves output ``j`` by ``t W[c, j]``; with ``e_k`` the output
    series of ``Loss.series``, the example's change is ``Σ_k t^k (e_k @ (W^k).T)[b, c]``
    (powers elementwise), up to a tail of at most ``|t|^(K+1) Σ_j M_bj |W[c, j]|^(K+1)
    / (1 - ν)``, ``ν = |t| max_j |W[c, j]|``, which the unit's error estimate includes.

    Rounding: each term ``e_k[j] (t W[c, j])^k`` carries a few roundings of its own size (the
    base point's forward values, the series arithmetic, the powers), and summing ``n_out`` terms
    adds up to ``sqrt(n_out)`` roundings of their absolute sum with overwhelming probability
    (the probabilistic bound of Higham and Mary): ``(ULPS + sqrt(n_out)) eps Σ_k |t|^k
    (|e_k| @ |W^k|.T)[b, c]`` per side, far below the direct path's bound, which has to cover
    forming ``s ± d`` and two loss values at every output (and which the unit keeps, see
    ``LocalDifferences._propagate``).
    """

    coefficients: np.ndarray  # (order, batch, width): the powers 1 .. order
    magnitudes: np.ndarray  # (order, batch, width): sizes of the terms, Σ_j |e_k[b, j]| |W[c, j]|^k
    tail: np.ndarray  # (batch, width): Σ_j M_bj |W[c, j]|^(order+1)
    reach: np.ndarray  # (width,): max_j |W[c, j]|
    roundings: float  # per unit of the magnitudes: ULPS + sqrt(n_out)

    @classmethod
    def build(cls, series: np.ndarray, bound: np.ndarray, w: np.ndarray) -> _SeriesTable:
        """From the output series (order + 1, batch, n_out), their bounds (batch, n_out) and
        the output layer's weights W (width, n_out)."""
        order = len(series) - 1
        coefficients = np.empty((order,) + bound.shape[:1] + w.shape[:1])
        magnitudes = np.empty_like(coefficients)
        # W^k by repeated products, one array updated in place (** costs ten times more), and
        # |W|^k beside it: |a b| = |a| |b| exactly in floating point, so |W|^k is |W^k|, and an
        # even power is its own size. Each pass over a weight-sized array counts on a
        # one-image check: nine here, where keeping both powers took sixteen.
        size = np.abs(w)
        power, size_power, scratch = w, size, None
        # Absurd weights overflow the powers: those units get non-finite values here and are
        # evaluated directly (``evaluate``).
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(1, order + 1):
                if k > 1:
                    power = power * w if k == 2 else np.multiply(power, w, out=power)
                    if k % 2 == 0:
                        size_power = power
                    else:
                        scratch = size_power = np.abs(power, out=scratch)
                np.matmul(series[k], power.T, out=coefficients[k - 1])
                np.matmul(np.abs(series[k]), size_power.T, out=magnitudes[k - 1])
            tail = bound @ np.multiply(size_power, size, out=scratch).T
        return cls(coefficients, magnitudes, tail, size.max(axis=1, initial=0.0),
                   ULPS + np.sqrt(w.shape[1]))

    def evaluate(self, example: np.ndarray, col: np.ndarray, t: np.ndarray,
                 sides: np.ndarray, budget: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fill ``sides[:, u]`` (2, U) for the units the series reaches with a tail bound of at
        most ``budget`` (U,); return which units those are, each one's error bound (rounding
        and tail) and the size of the slope ``dJ_b/dt`` at the base point, ``magnitudes[0]``
        (a bound, ``Σ_j |e_1[b, j] W[c, j]|``, in a two-layer table; ``|C_1|`` in a deeper
        one), 0 for the others."""
        coefficients = self.coefficients[:, example, col]  # (order, U)
        nu = np.abs(t) * self.reach[col]  # (2, U): the largest output shift
        order = len(coefficients)
        with np.errstate(over="ignore", invalid="ignore"):
            size = _horner(self.magnitudes[:, example, col], np.abs(t)).sum(axis=0)
            tail = (np.abs(t) ** (order + 1) / (1 - np.minimum(nu, SERIES_REACH))).sum(axis=0)
            tail *= self.tail[example, col]
            error = self.roundings * EPS * size + tail
        usable = (nu.max(axis=0) <= SERIES_REACH) & np.isfinite(error) & (tail <= budget)
        usable &= np.isfinite(coefficients).all(axis=0)
        sides[:, usable] = _horner(coefficients, t)[:, usable]
        slope = self.magnitudes[0, example, col]
        return usable, np.where(usable, error, 0.0), np.where(usable, slope, 0.0)












def _horner(coefficients: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``Σ_k coefficients[k-1] t^k`` for k = 1 .. order, (order, U) and (2, U) -> (2, U)."""
    value = np.broadcast_to(coefficients[-1], t.shape).copy()
    for k in range(len(coefficients) - 2, -1, -1):
        value *= t
        value += coefficients[k]
    value *= t
    return value








def _straddles(kink_at: float | None, s: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """True where the points s + shift and s - shift lie on different sides of (or on) a kink."""
    if kink_at is None:
        return np.zeros(np.shape(s), dtype=bool)
    reach = np.abs(shift)
    return (s - reach <= kink_at) & (s + reach >= kink_at) & (shift != 0)


def _moved_across(kink_at: float | None, s: np.ndarray, u: np.ndarray, rows: int) -> np.ndarray:
    """Per unit: did either of its two points move a pre-activation onto or across a kink?"""
    if kink_at is None:
        return np.zeros(rows, dtype=bool)
    crossed = ((u > kink_at) != (s > kink_at)) | ((u == kink_at) & (u != s))
    crossed = crossed.any(axis=1)
    return crossed[:rows] | crossed[rows:]

