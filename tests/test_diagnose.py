"""Specs for gradproof.diagnose: each planted mistake is named, and nothing else is.

The setting, spelled out once: a true gradient ``g`` (standard normal entries), a numerical
gradient ``numeric = g + noise`` whose noise stays within half the per-entry tolerance
``tol = 1e-9 + 1e-7 * |g|`` (what a finite-difference check resolves), optionally with 30% of
its entries NaN (unknown, as in a sampled check), and an analytic gradient made from ``g`` by
one mistake. ``diagnose`` must name exactly that mistake and that tensor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradproof.diagnose import HYPOTHESES, diagnose, simple_fraction
from gradproof.errors import InputError
from gradproof.report import FINDING_KINDS, Finding

SHAPES = {"square": (6, 6), "rect": (7, 4), "bias": (9,)}


def make_problem(shape, *, masked=False, seed=0):
    """(g, numeric, tol, weight) for one tensor; entry 0 is always known."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=shape)
    tol = 1e-9 + 1e-7 * np.abs(g)
    numeric = g + rng.uniform(-0.5, 0.5, size=shape) * tol
    if masked:
        unknown = rng.random(shape) < 0.3
        unknown.flat[0] = False
        numeric[unknown] = np.nan
    weight = rng.uniform(-0.5, 0.5, size=shape)
    return g, numeric, tol, weight


def run_one(analytic, numeric, tol, weight=None, name="W"):
    params = {} if weight is None else {name: weight}
    return diagnose({name: analytic}, {name: numeric}, params, {name: tol})


def kinds_and_tensors(findings):
    return [(f.kind, *f.tensors) for f in findings]


def _column_wrong(g, w):
    a = g.copy()
    a[:, -1] = 0.0  # the last column is never filled in
    return a


def _first_entry_wrong(g, w):
    a = g.copy()
    a[0] = 2 * a[0] + 1
    return a


# kind -> (shapes it applies to, how it turns the true gradient g (and weight w) into analytic)
PLANTED = {
    "transposed": (("square",), lambda g, w: g.T),
    "unroll_order": (("rect",), lambda g, w: g.reshape(-1).reshape(g.shape, order="F")),
    "scaled": (("square", "rect", "bias"), lambda g, w: 0.5 * g),
    "sign_flipped": (("square", "rect", "bias"), lambda g, w: -g),
    "missing_l2": (("square", "rect", "bias"), lambda g, w: g - 0.01 * w),
    "zero": (("square", "rect", "bias"), lambda g, w: np.zeros_like(g)),
    "partial": (("square", "rect"), _column_wrong),
}
PLANTED_CASES = [
    pytest.param(kind, shape, masked, id=f"{kind}-{shape}-{'nan' if masked else 'full'}")
    for kind, (shapes, _) in PLANTED.items()
    for shape in shapes
    for masked in (False, True)
]


@pytest.mark.parametrize(("kind", "shape", "masked"), PLANTED_CASES)
def test_planted_mistake_is_named_exactly(kind, shape, masked):
    g, numeric, tol, weight = make_problem(SHAPES[shape], masked=masked)
    analytic = PLANTED[kind][1](g, weight)
    findings = run_one(analytic, numeric, tol, weight)
    assert kinds_and_tensors(findings) == [(kind, "W")]
    finding = findings[0]
    assert finding.fix
    if kind != "partial":
        assert finding.evidence < 1e-6  # the residual after undoing the mistake


@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
def test_partial_bias_names_the_entry(masked):
    g, numeric, tol, _ = make_problem((9,), masked=masked)
    findings = run_one(_first_entry_wrong(g, None), numeric, tol, name="b1")
    assert kinds_and_tensors(findings) == [("partial", "b1")]
    assert "only b1[0] is wrong" in findings[0].message


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
def test_correct_gradient_gives_no_findings(shape, masked):
    g, numeric, tol, weight = make_problem(SHAPES[shape], masked=masked)
    # analytic errors too, but within tolerance
    analytic = g + 0.4 * tol * np.sign(np.sin(np.arange(g.size))).reshape(g.shape)
    assert run_one(analytic, numeric, tol, weight) == []


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
def test_unrelated_gradient_is_mismatch_only(shape, masked):
    g, numeric, tol, weight = make_problem(SHAPES[shape], masked=masked)
    analytic = np.random.default_rng(99).normal(size=g.shape)
    findings = run_one(analytic, numeric, tol, weight)
    assert kinds_and_tensors(findings) == [("mismatch", "W")]
    assert "no recognised pattern" in findings[0].message
    assert findings[0].evidence > 0.5


@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
@pytest.mark.parametrize(
    ("shapes", "transposed"),
    [(((7, 4), (4, 7)), True), (((6, 6), (6, 6)), False), (((9,), (9,)), False)],
    ids=["transposed-shapes", "square", "bias"],
)
def test_swapped_pair_is_one_finding(shapes, transposed, masked):
    g1, n1, t1, _ = make_problem(shapes[0], masked=masked, seed=1)
    g2, n2, t2, _ = make_problem(shapes[1], masked=masked, seed=2)
    layout = np.transpose if transposed else np.asarray
    findings = diagnose(
        {"W1": layout(g2), "W2": layout(g1)}, {"W1": n1, "W2": n2}, {}, {"W1": t1, "W2": t2}
    )
    assert kinds_and_tensors(findings) == [("swapped", "W1", "W2")]
    assert ("the true gradient of W2 transposed" in findings[0].message) == transposed


def test_a_swap_names_both_tensors_as_data_and_one_tensor_findings_one():
    g1, n1, t1, _ = make_problem((6, 6), seed=1)
    g2, n2, t2, _ = make_problem((6, 6), seed=2)
    [swap] = diagnose({"W1": g2, "W2": g1}, {"W1": n1, "W2": n2}, {}, {"W1": t1, "W2": t2})
    assert swap.tensors == ("W1", "W2") and swap.tensor == "W1"
    data = swap.to_dict()
    assert (data["tensor"], data["tensors"]) == ("W1", ["W1", "W2"])
    [flip] = diagnose({"W1": -g1}, {"W1": n1}, {}, {"W1": t1})
    assert flip.tensors == ("W1",) and flip.tensor == "W1"
    assert flip.to_dict()["tensor"] == "W1" and "tensors" not in flip.to_dict()


def test_the_sign_flip_advice_assumes_no_autoencoder():
    # The structural diagnosis knows nothing of the function checked (a PyTorch Softplus input,
    # a layer): its fix names no autoencoder variable and holds for any function.
    g, n, t, _ = make_problem((5, 3), seed=3)
    [flip] = diagnose({"x": -g}, {"x": n}, {}, {"x": t})
    assert flip.kind == "sign_flipped"
    assert "(z - x)" not in flip.fix and "minus sign is lost" in flip.fix


@pytest.mark.parametrize("tensors", ["W1", (), ("W1", "W2", "b1"), ("W1", 2)], ids=repr)
def test_a_finding_holds_a_tuple_of_one_or_two_names(tensors):
    with pytest.raises(ValueError, match="tuple of one or two"):
        Finding(kind="mismatch", tensors=tensors, message="test")


def test_only_the_wrong_tensor_gets_a_finding():
    g1, n1, t1, _ = make_problem((7, 4), seed=1)
    g2, n2, t2, _ = make_problem((4,), seed=2)
    findings = diagnose({"W1": g1, "b1": -g2}, {"W1": n1, "b1": n2}, {}, {"W1": t1, "b1": t2})
    assert kinds_and_tensors(findings) == [("sign_flipped", "b1")]


# ---------------------------------------------------------------- transposed vs scaled


def test_transposed_square_is_not_also_scaled():
    g, numeric, tol, _ = make_problem((6, 6))
    findings = run_one(g.T, numeric, tol)
    assert kinds_and_tensors(findings) == [("transposed", "W")]
    assert "its entry (i, j) holds the true gradient's (j, i)" in findings[0].message
    assert ".T @ delta" in findings[0].fix


def test_scaled_square_is_not_also_transposed():
    g, numeric, tol, _ = make_problem((6, 6))
    assert kinds_and_tensors(run_one(2 * g, numeric, tol)) == [("scaled", "W")]




def test_square_unroll_order_is_reported_as_its_transpose():
    # For a square matrix, refilling a C-order vector in Fortran order *is* the transpose.
    g, numeric, tol, _ = make_problem((6, 6))
    analytic = g.reshape(-1).reshape(g.shape, order="F")
    findings = run_one(analytic, numeric, tol)
    assert kinds_and_tensors(findings) == [("transposed", "W")]
    assert "other order" in findings[0].message


# ---------------------------------------------------------------- unroll order


@pytest.mark.parametrize(("flat", "fill"), [("C", "F"), ("F", "C")])
def test_unroll_order_names_both_orders(flat, fill):
    g, numeric, tol, _ = make_problem((7, 4))
    analytic = g.reshape(-1, order=flat).reshape(g.shape, order=fill)
    findings = run_one(analytic, numeric, tol)
    assert kinds_and_tensors(findings) == [("unroll_order", "W")]
    assert findings[0].details == {"flattened": flat, "reshaped": fill}
    assert "Fortran/MATLAB" in findings[0].message
    assert 'order="F"' in findings[0].fix and "(:)" in findings[0].fix


def test_unroll_order_does_not_apply_to_a_row_vector():
    # (1, n): both orders agree, so a wrong (1, n) gradient cannot be an unroll-order mistake.
    g, numeric, tol, _ = make_problem((1, 8))
    analytic = g[:, ::-1].copy()
    assert [f.kind for f in run_one(analytic, numeric, tol)] == ["mismatch"]


# ---------------------------------------------------------------- scaled and sign


@pytest.mark.parametrize(
    ("factor", "text", "undo"),
    [(0.01, "1/100", "100"), (2.0, "2", "1/2"), (0.5, "1/2", "2"), (0.75, "3/4", "4/3")],
)
def test_scaled_shows_simple_fractions(factor, text, undo):
    g, numeric, tol, _ = make_problem((7, 4), masked=True)
    findings = run_one(factor * g, numeric, tol)
    assert kinds_and_tensors(findings) == [("scaled", "W")]
    assert f"is {text} times the true one" in findings[0].message
    assert f"by {undo}," in findings[0].fix
    assert findings[0].details["factor"] == pytest.approx(factor, rel=1e-6)


def test_scaled_by_an_irrational_factor_shows_a_decimal():
    g, numeric, tol, _ = make_problem((7, 4))
    findings = run_one(g / math.sqrt(2), numeric, tol)
    assert kinds_and_tensors(findings) == [("scaled", "W")]
    text = findings[0].details["factor_text"]
    assert "/" not in text
    assert float(text) == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def test_negative_factor_is_scaled_with_the_sign_mentioned():
    g, numeric, tol, _ = make_problem((9,))
    findings = run_one(-2 * g, numeric, tol)
    assert kinds_and_tensors(findings) == [("scaled", "W")]
    assert "-2 times" in findings[0].message and "sign is flipped" in findings[0].message


def test_sign_flipped_is_not_also_scaled():
    g, numeric, tol, _ = make_problem((7, 4))
    findings = run_one(-g, numeric, tol)
    assert kinds_and_tensors(findings) == [("sign_flipped", "W")]
    assert "it is minus the true one" in findings[0].message


# ---------------------------------------------------------------- weight decay


@pytest.mark.parametrize("direction", ["missing", "extra"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
def test_faint_weight_decay_term_is_found(direction, masked):
    # lambda * |W| <= 1e-3 * 0.5: the term changes the gradient by about 0.1% or less.
    g, numeric, tol, weight = make_problem((7, 4), masked=masked)
    lam = 1e-3
    analytic = g - lam * weight if direction == "missing" else g + lam * weight
    assert np.max(np.abs(analytic - g) / np.abs(g)) > 1e-4  # not hidden by the tolerance
    findings = run_one(analytic, numeric, tol, weight)
    assert kinds_and_tensors(findings) == [("missing_l2", "W")]
    finding = findings[0]
    assert finding.details["direction"] == direction
    assert finding.details["lambda"] == pytest.approx(lam, rel=1e-3)
    assert "0.001 * W" in finding.message
    assert ("add `0.001 * W`" in finding.fix) == (direction == "missing")


def test_weight_decay_needs_the_parameter():
    g, numeric, tol, weight = make_problem((7, 4))
    findings = run_one(g - 0.01 * weight, numeric, tol, weight=None)
    assert [f.kind for f in findings] == ["mismatch"]


# ---------------------------------------------------------------- zero and partial


def test_zero_gradient_names_the_largest_numeric_entry():
    g, numeric, tol, _ = make_problem((9,))
    findings = run_one(np.zeros(9), numeric, tol, name="b2")
    assert kinds_and_tensors(findings) == [("zero", "b2")]
    largest = int(np.argmax(np.abs(g)))
    assert f"at b2[{largest}]" in findings[0].message


def test_partial_names_the_column():
    g, numeric, tol, _ = make_problem((10, 784))
    findings = run_one(_column_wrong(g, None), numeric, tol, name="W2")
    assert kinds_and_tensors(findings) == [("partial", "W2")]
    assert "only column 783 of W2 is wrong" in findings[0].message
    assert "all 0 in the gradient of W2" in findings[0].message
    assert findings[0].details == {"columns": [783]}


def test_partial_names_a_range_of_rows():
    g, numeric, tol, _ = make_problem((20, 6), masked=True)
    analytic = g.copy()
    analytic[0:5] *= 1.5
    findings = run_one(analytic, numeric, tol, name="W1")
    assert kinds_and_tensors(findings) == [("partial", "W1")]
    assert "only rows 0-4 of W1 are wrong" in findings[0].message


def test_partial_names_scattered_entries():
    g, numeric, tol, _ = make_problem((12, 12))
    analytic = g.copy()
    wrong = [(3, 7), (5, 1), (9, 10)]
    for index in wrong:
        analytic[index] += 1.0
    findings = run_one(analytic, numeric, tol)
    assert kinds_and_tensors(findings) == [("partial", "W")]
    assert "3 scattered entries of W (e.g. W[3, 7], W[5, 1], W[9, 10])" in findings[0].message


def test_partial_counts_add_up_to_the_known_entries():
    # 48 known entries: 3 wrong (in row 0), 20 zero in both gradients (a sparse input's
    # weights), 25 right, 3 of those in row 0 itself.
    g, numeric, tol, _ = make_problem((8, 6))
    g[4:, 1:] = 0.0
    numeric[4:, 1:] = 0.0
    analytic = g.copy()
    analytic[0, :3] += 1.0
    [finding] = run_one(analytic, numeric, tol)
    assert finding.kind == "partial"
    assert "3 of 48 known entries differ" in finding.message
    assert "the other 45 known entries match, 22 of them nonzero and outside" in finding.message


def test_most_rows_wrong_is_not_called_partial():
    g, numeric, tol, _ = make_problem((7, 4))
    analytic = g.copy()
    analytic[0:5] += 1.0  # 5 of 7 rows: "only" would claim more than the data supports
    assert [f.kind for f in run_one(analytic, numeric, tol)] == ["mismatch"]


def test_rows_zero_in_both_gradients_are_no_evidence_for_partial():
    # Rows where both gradients vanish (an all-zero input pixel) prove nothing right.
    g, numeric, tol, _ = make_problem((12, 4))
    g[2:] = 0.0
    numeric[2:] = 0.0
    analytic = g.copy()
    analytic[:2] += 1.0
    assert [f.kind for f in run_one(analytic, numeric, tol)] == ["mismatch"]


# ---------------------------------------------------------------- partial (sampled) data


def test_sampled_check_with_two_known_entries_can_show_a_scale():
    g, numeric, tol, _ = make_problem((7, 4))
    sampled = np.full_like(numeric, np.nan)
    sampled[1, 2], sampled[4, 0] = numeric[1, 2], numeric[4, 0]
    assert [f.kind for f in run_one(3 * g, sampled, tol)] == ["scaled"]


def test_one_known_entry_is_not_enough_for_a_scale():
    g, numeric, tol, _ = make_problem((7, 4))
    sampled = np.full_like(numeric, np.nan)
    sampled[1, 2] = numeric[1, 2]
    assert [f.kind for f in run_one(3 * g, sampled, tol)] == ["mismatch"]


def test_one_known_transposed_pair_entry_is_not_enough():
    g, numeric, tol, _ = make_problem((6, 6))
    sampled = np.full_like(numeric, np.nan)
    sampled[1, 4] = numeric[1, 4]
    assert "transposed" not in [f.kind for f in run_one(g.T, sampled, tol)]


def test_a_single_outlier_defeats_a_hypothesis():
    g, numeric, tol, _ = make_problem((6, 6))
    analytic = g.T.copy()
    analytic[0, 3] += 1.0  # a second, local bug
    assert "transposed" not in [f.kind for f in run_one(analytic, numeric, tol)]


def test_a_tensor_with_no_known_entry_gets_no_finding():
    g, numeric, tol, _ = make_problem((4,))
    assert run_one(-g, np.full(4, np.nan), tol) == []


def test_scalar_tolerance_is_accepted():
    g, numeric, _, _ = make_problem((5, 3))
    findings = diagnose({"W": 0.5 * g}, {"W": g}, {}, {"W": 1e-9})
    assert kinds_and_tensors(findings) == [("scaled", "W")]


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(3,), (4, 4), (5, 2), (2, 3, 2)]),
    seed=st.integers(0, 2**16),
    masked=st.booleans(),
)
def test_agreement_within_tolerance_never_gives_a_finding(shape, seed, masked):
    g, numeric, tol, weight = make_problem(shape, masked=masked, seed=seed)
    assert run_one(g, numeric, tol, weight) == []


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(3,), (4, 4), (5, 2)]),
    seed=st.integers(0, 2**16),
    factor=st.sampled_from([0.01, 0.1, 0.5, 2.0, 3.0, 100.0, -0.5, -3.0]),
)
def test_any_constant_factor_is_scaled(shape, seed, factor):
    g, numeric, tol, _ = make_problem(shape, seed=seed)
    findings = run_one(factor * g, numeric, tol)
    assert kinds_and_tensors(findings) == [("scaled", "W")]
    assert findings[0].details["factor"] == pytest.approx(factor, rel=1e-6)


# ---------------------------------------------------------------- registry


def test_registry_kinds_are_finding_kinds():
    assert set(HYPOTHESES) <= set(FINDING_KINDS)


def test_extra_hypothesis_replaces_the_fallback():
    def always(case, failing):
        return Finding(kind="wrong_activation_derivative", tensors=(case.name,), message="test")

    g, numeric, tol, _ = make_problem((4,))
    analytic = np.random.default_rng(5).normal(size=4)
    findings = diagnose(
        {"W": analytic}, {"W": numeric}, {}, {"W": tol},
        hypotheses={**HYPOTHESES, "wrong_activation_derivative": always},
    )
    assert [f.kind for f in findings] == ["wrong_activation_derivative"]


# ---------------------------------------------------------------- simple_fraction


@pytest.mark.parametrize(
    ("c", "tol", "expected"),
    [
        (0.01, 1e-9, "1/100"),
        (2.0, 1e-9, "2"),
        (0.5, 1e-12, "1/2"),
        (0.75, 1e-9, "3/4"),
        (-0.5, 1e-9, "-1/2"),
        (1 / 3 + 1e-12, 1e-9, "1/3"),
        (math.pi, 2e-3, "22/7"),
        (math.pi, 1e-9, None),
        (0.001, 0.01, None),  # the tolerance cannot tell c from 0
        (math.nan, 1e-9, None),
        (math.inf, 1e-9, None),
    ],
)
def test_simple_fraction(c, tol, expected):
    assert simple_fraction(c, tol) == expected


def test_simple_fraction_rejects_a_negative_tolerance():
    with pytest.raises(InputError, match="tolerance >= 0"):
        simple_fraction(0.5, -1.0)


# ---------------------------------------------------------------- bad input


GOOD = np.ones((2, 3))


@pytest.mark.parametrize(
    ("replace", "words"),
    [
        ({"numeric": {"V": GOOD}}, ["different tensors", "'V'"]),
        ({"numeric": {"W": np.ones((3, 2))}}, ["numeric gradient of 'W'", "(3, 2)", "(2, 3)"]),
        ({"tolerance": {}}, ["tolerance", "'W'"]),
        ({"tolerance": {"W": -1.0}}, ["tolerance of 'W'", ">= 0"]),
        ({"tolerance": {"W": np.ones(4)}}, ["tolerance of 'W'", "broadcastable", "(2, 3)"]),
        ({"params": {"W": np.ones(6)}}, ["params['W']", "(6,)", "(2, 3)"]),
        ({"analytic": {"W": [["x", "y", "z"]] * 2}}, ["analytic gradient of 'W'", "real numeric"]),
        ({"analytic": {"W": GOOD * 1j}}, ["analytic gradient of 'W'", "real numeric"]),
        ({"params": {"W": [[1.0, 2.0], [3.0]]}}, ["params['W']", "real numeric"]),
        ({"numeric": [GOOD]}, ["numeric must be a dict"]),
    ],
    ids=["names", "shape", "no-tolerance", "negative-tolerance", "tolerance-shape",
         "param-shape", "strings", "complex", "ragged", "not-a-dict"],
)
def test_bad_input_names_the_tensor(replace, words):
    inputs = {"analytic": {"W": GOOD}, "numeric": {"W": GOOD}, "params": {"W": GOOD},
              "tolerance": {"W": 1e-8}}
    inputs.update(replace)
    with pytest.raises(InputError) as excinfo:
        diagnose(**inputs)
    for word in words:
        assert word in str(excinfo.value)


# ---------------------------------------------------------------- two mistakes at once


def test_transposed_and_halved_is_named_as_the_combination():
    # The quoted case: a gradient both transposed and halved used to come back as mismatch.
    g, numeric, tol, _ = make_problem((6, 6))
    findings = run_one(0.5 * g.T, numeric, tol)
    assert kinds_and_tensors(findings) == [("transposed", "W")]
    finding = findings[0]
    assert finding.details["combination"] == ["transposed", "scaled"]
    assert finding.details["factor"] == pytest.approx(0.5, rel=1e-6)
    assert "transposed" in finding.message and "1/2 times" in finding.message
    assert finding.fix.startswith("transpose the gradient of W and multiply it by 2")


@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
def test_transposed_and_sign_flipped_is_named_as_the_combination(masked):
    g, numeric, tol, _ = make_problem((6, 6), masked=masked)
    findings = run_one(-g.T, numeric, tol)
    assert kinds_and_tensors(findings) == [("transposed", "W")]
    assert findings[0].details["combination"] == ["transposed", "sign_flipped"]
    assert "wrong sign" in findings[0].message and "negate it" in findings[0].fix


def test_unroll_order_and_scale_is_named_as_the_combination():
    g, numeric, tol, _ = make_problem((7, 4))
    analytic = 3 * g.reshape(-1).reshape(g.shape, order="F")
    findings = run_one(analytic, numeric, tol)
    assert kinds_and_tensors(findings) == [("unroll_order", "W")]
    assert findings[0].details["combination"] == ["unroll_order", "scaled"]
    assert findings[0].details["factor"] == pytest.approx(3, rel=1e-6)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "nan"])
@pytest.mark.parametrize("shape", [(6, 6), (7, 4), (9,)], ids=["square", "rect", "bias"])
def test_scale_with_a_weight_decay_term_is_named_as_the_combination(shape, masked):
    # (1 + lambda/m) * g typed for g + lambda/m * W: with the true gradient g + 0.02 * W
    # the analytic one is 1.1 * g, i.e. 1.1 * true - 0.022 * W.
    g, numeric, tol, weight = make_problem(shape, masked=masked)
    numeric = numeric + 0.02 * weight
    findings = run_one(1.1 * g, numeric, tol, weight)
    assert kinds_and_tensors(findings) == [("missing_l2", "W")]
    finding = findings[0]
    assert finding.details["combination"] == ["scaled", "missing_l2"]
    assert finding.details["factor"] == pytest.approx(1.1, rel=1e-5)
    assert finding.details["l2_term"] == pytest.approx(-0.022, rel=1e-4)
    assert "11/10 times the true one - 0.022 * W" in finding.message


def test_scale_with_l2_needs_the_parameter():
    g, numeric, tol, weight = make_problem((6, 6))
    findings = run_one(1.1 * g, numeric + 0.02 * weight, tol)
    assert kinds_and_tensors(findings) == [("mismatch", "W")]


def test_too_few_known_entries_cannot_show_two_numbers():
    # Two fitted numbers fit any two entries: with three known, one is no evidence.
    g, numeric, tol, weight = make_problem((3, 2))
    numeric = numeric + 0.02 * weight
    numeric.flat[3:] = np.nan
    findings = run_one(1.1 * g, numeric, tol, weight)
    assert [f.kind for f in findings] != ["missing_l2"]


@pytest.mark.parametrize("order", ["C", "F"])
def test_tensors_of_different_shapes_swapped_through_a_flat_vector(order):
    g1, n1, t1, _ = make_problem((6, 4), seed=1)
    g2, n2, t2, _ = make_problem((3, 8), seed=2)
    analytic = {
        "W1": g2.reshape(-1, order=order).reshape((6, 4), order=order),
        "W2": g1.reshape(-1, order=order).reshape((3, 8), order=order),
    }
    findings = diagnose(analytic, {"W1": n1, "W2": n2}, {}, {"W1": t1, "W2": t2})
    assert kinds_and_tensors(findings) == [("swapped", "W1", "W2")]
    assert findings[0].details["layout"] == order


def test_tensors_of_transposed_shapes_swapped_with_transposes():
    g1, n1, t1, _ = make_problem((6, 4), seed=1)
    g2, n2, t2, _ = make_problem((4, 6), seed=2)
    findings = diagnose({"W1": g2.T, "W2": g1.T}, {"W1": n1, "W2": n2}, {},
                        {"W1": t1, "W2": t2})
    assert kinds_and_tensors(findings) == [("swapped", "W1", "W2")]
    assert findings[0].details["transposed"] is True


@pytest.mark.parametrize(("batch", "factor", "words"), [
    (10, 0.1, "1/m for the m = 10 examples"),
    (10, 10.0, "m for the m = 10 examples"),
    (10, 0.5, None),
])
def test_a_factor_of_the_batch_size_names_the_batch_mean(batch, factor, words):
    g, numeric, tol, _ = make_problem((5, 3))
    findings = diagnose({"W": factor * g}, {"W": numeric}, {}, {"W": tol}, batch=batch)
    assert kinds_and_tensors(findings) == [("scaled", "W")]
    assert (words in findings[0].message) if words else ("examples" not in findings[0].message)


@pytest.mark.parametrize("batch", [0, 2.5, True, "10"])
def test_a_bad_batch_size_is_an_input_error(batch):
    g, numeric, tol, _ = make_problem((3,))
    with pytest.raises(InputError, match="batch must be a positive int"):
        diagnose({"W": g}, {"W": numeric}, {}, {"W": tol}, batch=batch)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(4, 4), (5, 3), (6,)]),
    seed=st.integers(0, 2**16),
    masked=st.booleans(),
)
@example(shape=(4, 4), seed=0, masked=False)
@example(shape=(6,), seed=7, masked=True)
def test_correct_and_unrelated_gradients_are_never_combinations(shape, seed, masked):
    g, numeric, tol, weight = make_problem(shape, masked=masked, seed=seed)
    assert run_one(g, numeric, tol, weight) == []
    unrelated = np.random.default_rng(seed + 1).normal(size=shape)
    findings = run_one(unrelated, numeric, tol, weight)
    assert all("combination" not in f.details for f in findings)
    assert [f.kind for f in findings] in (["mismatch"], ["partial"])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    factor=st.sampled_from([0.01, 0.1, 0.5, 2.0, 3.0, 100.0, -0.5, -3.0]),
    masked=st.booleans(),
)
@example(seed=0, factor=0.5, masked=False)
def test_any_factor_on_a_transpose_is_the_combination(seed, factor, masked):
    g, numeric, tol, _ = make_problem((5, 5), masked=masked, seed=seed)
    findings = run_one(factor * g.T, numeric, tol)
    assert kinds_and_tensors(findings) == [("transposed", "W")]
    assert findings[0].details["factor"] == pytest.approx(factor, rel=1e-6)
