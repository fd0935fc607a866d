"""Spec for the activation and loss records: every record is complete and true to its math.

Each record states every fact the checker and the diagnosis read (a kink, a shift series and
its bound, a negated forward, the slope's words; a loss's elementwise forms, rounding bound and
series), ``None`` where there is none; nothing may be left to a default. These tests walk the
registries, so a new record is held to the same spec with no edit here: each fact is checked
against the record's own forward function (finite differences, complex arguments for the
bounds), so that a kink left out, a wrong bound or slope text, or a series that drifted from the
forward definition fails here instead of silently changing a check.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gradproof.nn import ACTIVATIONS, LOSSES, Activation, Loss
from gradproof.nn.activations import ShiftSeries

# The facts each record must state itself: what the checker and the diagnosis read.
ACTIVATION_FACTS = {"forward", "derivative", "bare_forward", "kink", "series", "negated_forward",
                    "slope_text", "derivative_rounding"}
LOSS_FACTS = {"value", "value_and_delta", "output_activation", "entries", "magnitude",
              "row_change", "series"}

S = np.linspace(-6.0, 6.0, 241)  # pre-activations, 0.05 apart, through 0


def no_default(record_type: type) -> set[str]:
    return {f.name for f in dataclasses.fields(record_type)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize(("record_type", "facts"), [(Activation, ACTIVATION_FACTS),
                                                     (Loss, LOSS_FACTS)], ids=str)
def test_every_fact_must_be_stated_none_has_a_default(record_type, facts):
    assert facts <= no_default(record_type)
    assert facts <= {f.name for f in dataclasses.fields(record_type)}


def test_a_record_that_leaves_a_fact_out_cannot_be_made():
    sigmoid = ACTIVATIONS["sigmoid"]
    with pytest.raises(TypeError, match="kink"):
        Activation(name="new", forward=sigmoid.forward, derivative=sigmoid.derivative,
                   series=None, negated_forward=None, slope_text=("", ""))


def test_the_records_are_model_facts_importing_the_networks_loads_no_checker():
    code = (
        "import sys, gradproof.nn; "
        "print(' '.join(m for m in sys.modules if m.startswith('gradproof')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "gradproof.nn.activations" in loaded and "gradproof.nn.losses" in loaded
    allowed = {"gradproof", "gradproof.errors", "gradproof.nn"}
    stray = [m for m in loaded if m not in allowed and not m.startswith("gradproof.nn.")]
    assert stray == []


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
def test_registry_key_is_the_record_name(name):
    assert ACTIVATIONS[name].name == name


@pytest.mark.parametrize("name", list(LOSSES), ids=str)
def test_loss_registry_key_is_the_record_name(name):
    assert LOSSES[name].name == name
    assert LOSSES[name].output_activation in (None, *ACTIVATIONS)


# ------------------------------------------------------------------------------ activations


def slopes_beside(act: Activation, s: np.ndarray, h: float = 1e-7) -> tuple[np.ndarray, ...]:
    """The derivative just left and just right of each point, from the record."""
    return act.derivative(act.forward(s - h)), act.derivative(act.forward(s + h))


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
def test_derivative_is_the_slope_of_the_forward(name):
    act = ACTIVATIONS[name]
    h = 1e-6
    s = S if act.kink is None else S[np.abs(S - act.kink) > 10 * h]
    numeric = (act.forward(s + h) - act.forward(s - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(act.forward(s)), numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
def test_the_stated_kink_is_the_only_jump_of_the_slope(name):
    # A kink left out of the record would drop its detection in the exact check: the slope
    # must be continuous everywhere but at the stated kink, and jump there.
    act = ACTIVATIONS[name]
    left, right = slopes_beside(act, S)
    jumps = S[np.abs(right - left) > 1e-3]
    if act.kink is None:
        assert jumps.size == 0, jumps
        return
    np.testing.assert_array_equal(jumps, [act.kink])
    assert act.series is None  # no power series holds across a kink


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.series], ids=str)
def test_shift_series_is_the_change_of_the_forward(name):
    act = ACTIVATIONS[name]
    s = S[None, ::10]  # (1, 25)
    coefficients = act.series.coefficients(s, 6)
    assert coefficients.shape == (7, *s.shape)
    for v in (3e-4, -2e-3, 1e-2):
        change = sum(coefficients[k] * v**k for k in range(7))
        truth = act.forward(s + v) - act.forward(s)
        # The tail after v^6 is below 1e-12 of v here; the forward difference rounds at 1e-16.
        np.testing.assert_allclose(change, truth, rtol=0, atol=1e-15 + 1e-12 * abs(v))


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.series], ids=str)
def test_lipschitz_bound_holds_on_the_strip_the_series_uses(name):
    # |g'(w)| <= lipschitz wherever |Im w| <= 1, which bounds the change on the unit disc.
    act: Activation = ACTIVATIONS[name]
    assert isinstance(act.series, ShiftSeries)
    re, im = np.meshgrid(np.linspace(-20, 20, 801), np.linspace(-1, 1, 41))
    w = re + 1j * im
    slope = np.abs(act.derivative(act.forward(w)))
    assert slope.max() <= act.series.lipschitz


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.negated_forward],
                         ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=str)
def test_negated_forward_is_the_forward_bit_for_bit(name, dtype):
    s = np.array([-800.0, -30.0, -1e-300, 0.0, 1e-9, 2.5, 40.0, 800.0]).astype(dtype)
    v = -s
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e^800 overflows to inf on purpose: no warning
        got = ACTIVATIONS[name].negated_forward(v)
    assert got is v  # in place
    np.testing.assert_array_equal(got, ACTIVATIONS[name].forward(s))


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=str)
def test_bare_forward_is_the_forward_bit_for_bit_and_leaves_its_argument(name, dtype):
    s = np.array([[-800.0, -30.0, -1e-300, 0.0], [1e-9, 2.5, 40.0, 800.0]]).astype(dtype)
    given = s.copy()
    with np.errstate(over="ignore"):  # what its caller sets once around a whole pass
        got = ACTIVATIONS[name].bare_forward(s)
    np.testing.assert_array_equal(s, given)
    assert got.dtype == s.dtype
    np.testing.assert_array_equal(got, ACTIVATIONS[name].forward(given))


def evaluate_slope_text(text: str, a: np.ndarray) -> np.ndarray:
    """A fix line's slope factor, evaluated on the activation ``a`` ("" is a factor of 1)."""
    if not text:
        return np.ones_like(a)
    return eval(text.format(a="a"), {"a": a}) * 1.0  # the record's own words, as numpy


@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
def test_slope_words_compute_the_derivative(name):
    act = ACTIVATIONS[name]
    numpy_text, matlab_text = act.slope_text
    a = act.forward(S)
    np.testing.assert_allclose(evaluate_slope_text(numpy_text, a), act.derivative(a),
                               rtol=1e-15)
    # MATLAB's elementwise operators, read as numpy's, give the same expression.
    as_numpy = matlab_text.replace(".*", "*").replace(".^", "**")
    np.testing.assert_array_equal(evaluate_slope_text(as_numpy, a),
                                  evaluate_slope_text(numpy_text, a))



@pytest.mark.parametrize("name", list(ACTIVATIONS), ids=str)
def test_derivative_rounding_bounds_the_derivative_of_a_rounded_output(name):
    # The derivative a float32 backprop takes from its float32 output, against the float64
    # derivative of the float64 output, in float32 eps (absolute), out into saturation.
    act = ACTIVATIONS[name]
    s = np.linspace(-20.0, 20.0, 200_001)
    a = act.forward(s)
    low = act.derivative(a.astype(np.float32)).astype(np.float64)
    error = float(np.max(np.abs(low - act.derivative(a)))) / float(np.finfo(np.float32).eps)
    assert error <= act.derivative_rounding
    # A derivative that rounding moves states so; an exact one states 0.
    assert (act.derivative_rounding > 0) == (error > 0)


# ----------------------------------------------------------------------------------- losses


def loss_case(loss: Loss, name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    act = ACTIVATIONS[name]
    x = rng.uniform(0, 1, (3, 9))
    s = rng.normal(0, 3, (3, 9))
    return act, x, act.forward(s), s


def activations_for(loss: Loss) -> list[str]:
    return [loss.output_activation] if loss.output_activation else list(ACTIVATIONS)


LOSS_ACTIVATION = [(loss, act) for loss in LOSSES for act in activations_for(LOSSES[loss])]


@pytest.mark.parametrize(("loss", "activation"), LOSS_ACTIVATION, ids=str)
def test_magnitude_bounds_each_entry(loss, activation):
    record = LOSSES[loss]
    _, x, z, s = loss_case(record, activation)
    assert np.all(record.magnitude(x, z, s) >= np.abs(record.entries(x, z, s)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=str)
@pytest.mark.parametrize(("loss", "activation"), LOSS_ACTIVATION, ids=str)
def test_value_is_not_finite_where_a_target_is_not(loss, activation, bad):
    # Autoencoder.loss screens its input through the data term: one bad target anywhere,
    # at a pre-activation of 0 too, must show in the value.
    record = LOSSES[loss]
    _, x, z, s = loss_case(record, activation)
    s[1, 4] = 0.0
    z = ACTIVATIONS[activation].forward(s)
    for entry in [(0, 0), (1, 4), (2, 8)]:
        bad_x = x.copy()
        bad_x[entry] = bad
        with np.errstate(invalid="ignore"):  # inf * 0: the NaN is the point
            assert not np.isfinite(record.value(bad_x, z, s))


@pytest.mark.parametrize(("loss", "activation"), LOSS_ACTIVATION, ids=str)
def test_row_change_is_the_change_of_the_entries(loss, activation):
    record = LOSSES[loss]
    if record.row_change is None:
        pytest.skip("this loss states no row_change")
    _, x, z, s = loss_case(record, activation)
    dz = np.random.default_rng(1).normal(0, 1e-3, (4, 9))
    truth = [(record.entries(x[0], z[0] + d, s[0]) - record.entries(x[0], z[0], s[0])).sum()
             for d in dz]
    np.testing.assert_allclose(record.row_change(z[0] - x[0], dz), truth, rtol=1e-9)


@pytest.mark.parametrize(("loss", "activation"), LOSS_ACTIVATION, ids=str)
def test_loss_series_is_the_change_of_the_entries_where_the_activation_has_one(loss, activation):
    record = LOSSES[loss]
    act, x, z, s = loss_case(record, activation)
    found = None if record.series is None else record.series(act, x, z, s, 6)
    if act.series is None:
        assert found is None  # e.g. across relu's kink
        return
    if record.series is None:
        pytest.skip("this loss states no series")
    coefficients, bound = found
    assert coefficients.shape == (7, *s.shape) and bound.shape == s.shape
    assert np.all(coefficients[0] == 0)
    for v in (1e-3, -5e-3):
        change = sum(coefficients[k] * v**k for k in range(7))
        truth = record.entries(x, act.forward(s + v), s + v) - record.entries(x, z, s)
        np.testing.assert_allclose(change, truth, rtol=0, atol=1e-13)
    # The remainder bound M is at least the change itself on the unit disc's edge (|v| -> 1).
    for v in (0.9, -0.9):
        truth = record.entries(x, act.forward(s + v), s + v) - record.entries(x, z, s)
        assert np.all(np.abs(truth) <= bound)
