"""gradproof.octave and `gradproof octave`: MATLAB cost functions run in real GNU Octave.

The tests that need Octave skip where octave-cli is missing, except in CI (CI=true), where a
missing Octave fails them: CI installs it, so a skip there would hide a broken install.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.io

from gradproof.cli import EXIT_INTERRUPTED, main
from gradproof.errors import InputError
from gradproof.octave import INSTALL_LINE, OctaveRunner, check
from gradproof.octave.network import data_readings, inferred_shapes, integer_arguments

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def code(tmp_path, octave):
    """A folder for .m files: ``code("name", text)`` writes name.m there; returns the folder."""

    def write(name: str, text: str) -> Path:
        (tmp_path / f"{name}.m").write_text(text)
        return tmp_path

    return write


QUADRATIC = """function [J, grad] = {name}(theta, A)
  J = 0.5 * theta' * A * theta + sum(sin(theta));
  grad = {grad};
end
"""


def quadratic(code, name: str, grad: str = "A * theta + cos(theta)") -> Path:
    return code(name, QUADRATIC.format(name=name, grad=grad))


def variables(n: int = 12, seed: int = 0, **extra) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return {"theta": rng.normal(size=(n, 1)), "A": a + a.T, **extra}


# ------------------------------------------------------------- the runner


def test_batched_moves_are_the_loss_at_each_point(code):
    folder = quadratic(code, "quadcost")
    given = variables(n=9, seed=1)
    a, theta = given["A"], given["theta"].ravel()
    rng = np.random.default_rng(2)
    # Three points: one entry moved, three entries moved together, nothing moved.
    positions = np.array([4, 0, 5, 8])
    start = np.array([0, 1, 4, 4])
    values = rng.normal(size=4)
    with OctaveRunner("quadcost(theta, A)", path=folder, variables=given) as runner:
        got = runner.moves(positions, start, values)
    expected = []
    for k in range(3):
        point = theta.copy()
        point[positions[start[k] : start[k + 1]]] = values[start[k] : start[k + 1]]
        expected.append(0.5 * point @ a @ point + np.sum(np.sin(point)))
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_batches_are_split_to_stay_within_the_timeout(code):
    folder = quadratic(code, "quadsplit")
    given = variables(n=5)
    with OctaveRunner("quadsplit(theta, A)", path=folder, variables=given) as runner:
        runner.first()
        runner.seconds_per_call = runner.timeout  # one point per Octave command
        moved = runner.moves(np.arange(5), np.arange(6), np.zeros(5))
    theta, a = given["theta"].ravel(), given["A"]
    for k in range(5):
        point = theta.copy()
        point[k] = 0.0
        assert moved[k] == pytest.approx(0.5 * point @ a @ point + np.sum(np.sin(point)))


# ----------------------------------------------------------------- checks


def test_right_gradient_passes_and_wrong_one_fails(code):
    folder = quadratic(code, "quadright")
    quadratic(code, "quadwrong", grad="A * theta + 1.01 * cos(theta)")
    given = variables()
    assert check("quadright(theta, A)", path=folder, variables=given).passed
    wrong = check("quadwrong(theta, A)", path=folder, variables=given)
    assert not wrong.passed


@pytest.mark.parametrize("mode", ["full", "sample", "directional", "taylor"])
def test_every_mode_runs_through_octave(code, mode):
    folder = quadratic(code, "quadmode")
    report = check("quadmode(theta, A)", path=folder, variables=variables(), mode=mode)
    assert report.passed
    assert report.mode == mode


def test_shapes_name_the_tensors_column_major(code):
    # W is 3x4 inside theta; only W(2, 3) (1-based) has a wrong gradient: theta(8).
    folder = quadratic(code, "quadone", grad="A * theta + cos(theta) + ((1:12)' == 8)")
    report = check(
        "quadone(theta, A)", path=folder, variables=variables(), shapes={"W": (3, 4)}
    )
    assert not report.passed
    (result,) = report.tensors
    assert result.name == "W" and result.shape == (3, 4)
    # In MATLAB's terms: 1-based, the place in theta beside the tensor's subscript.
    assert "theta(8) = W(2, 3)" in " ".join(f.message for f in report.findings)
    assert result.worst_at == "theta(8) = W(2, 3)"


def test_row_vector_gradient_is_a_note(code):
    folder = quadratic(code, "quadrow", grad="(A * theta + cos(theta))'")
    report = check("quadrow(theta, A)", path=folder, variables=variables())
    assert report.passed
    assert [f.kind for f in report.findings] == ["convention"]


def test_variables_from_a_mat_file(code, tmp_path):
    folder = quadratic(code, "quadfile")
    scipy.io.savemat(tmp_path / "vars.mat", variables())
    assert check("quadfile(theta, A)", path=folder, variables=tmp_path / "vars.mat").passed


# --------------------------------------------------------------- examples

SEED_SHAPES = {"encoder": (16, 4), "decoder": (4, 16)}


def seed_variables(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = 4 * np.sqrt(6 / 20)
    return {"theta": rng.uniform(-r, r, size=(128, 1)), "x": rng.uniform(size=(1, 16))}


def seed_loss(theta, x):
    """seed_backprop.m's loss in numpy (autograd), theta = [encoder(:); decoder(:)]."""
    encoder = anp.reshape(theta[:64], (4, 16)).T  # column-major (16, 4)
    decoder = anp.reshape(theta[64:], (16, 4)).T  # column-major (4, 16)
    a = 1 / (1 + anp.exp(-x @ encoder))
    z = 1 / (1 + anp.exp(-a @ decoder))
    return anp.sum(0.5 * (z - x) ** 2)


def test_fixed_seed_example_returns_autograds_gradient(octave):
    given = seed_variables()
    with OctaveRunner(
        "seed_backprop_fixed(theta, x, 4)", path=EXAMPLES, variables=given
    ) as runner:
        j, grad = runner.first()
    theta, x = given["theta"].ravel(), given["x"]
    assert j.item() == pytest.approx(seed_loss(theta, x), rel=1e-12)
    np.testing.assert_allclose(grad.ravel(), autograd.grad(seed_loss)(theta, x), rtol=1e-10)


def test_seed_example_identified_names_both_mistakes_with_matlab_fixes(octave):
    report = check(
        "seed_backprop(theta, x, 4)", path=EXAMPLES, variables=seed_variables(), shapes=SEED_SHAPES
    )
    assert report.mode == "network" and report.model["identified"] is True
    assert report.model["x"] == "x" and report.model["y"] is None
    assert {t.name: t.verdict for t in report.tensors} == {"encoder": "FAIL", "decoder": "FAIL"}
    assert all(t.checked == t.size for t in report.tensors)  # every entry, exactly
    bugs = {f.tensor: f for f in report.findings if f.is_bug}
    assert {name: f.kind for name, f in bugs.items()} == {
        "encoder": "wrong_backprop_matrix", "decoder": "transposed"}
    # error_0 * encoder where decoder' belongs; error_0' * a, the decoder's transpose
    assert bugs["encoder"].details["matlab"] == "d2 = (d3 * decoder') .* sigmoidGradient(z2);"
    assert bugs["decoder"].details["matlab"] == (
        "grad_decoder = a' * delta;  % 4x16, like decoder; delta' * a is its transpose")


def test_fixed_seed_example_passes_identified_every_entry(octave):
    report = check("seed_backprop_fixed(theta, x, 4)", path=EXAMPLES,
                   variables=seed_variables(), shapes=SEED_SHAPES)
    assert report.passed and report.mode == "network"
    assert [(t.name, t.checked) for t in report.tensors] == [("encoder", 64), ("decoder", 64)]


def test_seed_example_black_box_names_the_decoder_transposed(octave):
    report = check("seed_backprop(theta, x, 4)", path=EXAMPLES, variables=seed_variables(),
                   shapes=SEED_SHAPES, identify=False)
    assert report.mode != "network" and report.model is None
    kinds = {(f.kind, f.tensor) for f in report.findings}
    # unrolled (:) as decoder's, error_0' * a reads as the right gradient in the other order:
    # in MATLAB, where (:) and reshape are both column-major, that is a transposed gradient
    assert ("transposed", "decoder") in kinds and ("unroll_order", "decoder") not in kinds
    assert any(tensor == "encoder" for _, tensor in kinds)


def test_cli_seed_examples_exit_codes(octave, tmp_path, capsys):
    scipy.io.savemat(tmp_path / "seed.mat", seed_variables())
    common = ["--path", str(EXAMPLES), "--load", str(tmp_path / "seed.mat"),
              "--shapes", "encoder=16x4,decoder=4x16"]
    assert main(["octave", "seed_backprop(theta, x, 4)", *common]) == 1
    out = capsys.readouterr().out
    assert "wrong_backprop_matrix" in out and "transposed" in out and "model (x = x): 16-4-16" in out
    assert main(["octave", "seed_backprop_fixed(theta, x, 4)", *common, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["expr"] == "seed_backprop_fixed(theta, x, 4)"
    assert [t["name"] for t in data["tensors"]] == ["encoder", "decoder"]
    assert data["model"]["identified"] is True
    assert main(["octave", "seed_backprop(theta, x, 4)", *common, "--black-box", "--json"]) == 1
    assert "model" not in json.loads(capsys.readouterr().out)


def test_points_asked_before_are_not_evaluated_again(code):
    # J counts its own calls, so each value says which call gave it.
    folder = code("counting", "function [J, grad] = counting(theta)\n  persistent n\n"
                  "  if isempty(n)\n    n = 0;\n  end\n  n = n + 1;\n  J = n;\n"
                  "  grad = zeros(size(theta));\nend\n")
    with OctaveRunner("counting(theta)", path=folder, variables={"theta": np.ones((3, 1))}) as runner:
        here, there = runner.theta, runner.theta + 1.0
        assert list(runner.many([here, here])) == [1.0, 2.0]  # twice in one call: both run
        assert list(runner.many([here, there])) == [2.0, 3.0]  # here is known
        assert runner(here) == 4.0  # a single call always runs (the engine's repeat check)


@pytest.mark.parametrize("setting, expected", [(None, 1.0), ("2", 2.0), ("off", None)])
def test_octaves_blas_threads_follow_gradproofs_policy(code, monkeypatch, setting, expected):
    folder = code("threads", "function [J, grad] = threads(theta)\n"
                  "  J = str2double(getenv('OPENBLAS_NUM_THREADS'));\n  grad = theta;\nend\n")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    if setting is None:
        monkeypatch.delenv("GRADPROOF_BLAS_THREADS", raising=False)
    else:
        monkeypatch.setenv("GRADPROOF_BLAS_THREADS", setting)
    with OctaveRunner("threads(theta)", path=folder, variables={"theta": np.ones((2, 1))}) as runner:
        seen = runner.first()[0].item()
    assert (np.isnan(seen) and expected is None) or seen == expected


# ----------------------------------------------------- identification

# The course's classifier, vectorised, with a bias column in each Theta; `bug` names a
# planted mistake of the family's catalogue.
COURSE = """function [J, grad] = {name}(theta, n_in, n_hidden, n_labels, X, y, lambda)
  Theta1 = reshape(theta(1:n_hidden * (n_in + 1)), n_hidden, n_in + 1);
  Theta2 = reshape(theta(n_hidden * (n_in + 1) + 1:end), n_labels, n_hidden + 1);
  m = size(X, 1);
  a1 = [ones(m, 1) X];
  z2 = a1 * Theta1';
  a2 = [ones(m, 1) 1 ./ (1 + exp(-z2))];
  h = 1 ./ (1 + exp(-a2 * Theta2'));
  Y = double(y(:) == 1:n_labels);
  J = -sum(sum(Y .* log(h) + (1 - Y) .* log(1 - h))) / m ...
      + lambda / (2 * m) * (sum(sum(Theta1(:, 2:end).^2)) + sum(sum(Theta2(:, 2:end).^2)));
  d3 = h - Y;
  s = 1 ./ (1 + exp(-{slope_at}));
  d2 = (d3 * Theta2(:, 2:end)) .* s .* (1 - s);
  Theta1_grad = d2' * a1 / m;
  Theta2_grad = d3' * a2 / m;
  Theta1_grad(:, 2:end) = Theta1_grad(:, 2:end) + lambda / m * Theta1(:, 2:end);
  Theta2_grad(:, 2:end) = Theta2_grad(:, 2:end) + lambda / m * Theta2(:, 2:end){extra};
  grad = [Theta1_grad(:); Theta2_grad(:)];
end
"""
COURSE_SHAPES = {"Theta1": (5, 7), "Theta2": (3, 6)}


def course(code, name: str, slope_at: str = "z2", extra: str = "") -> Path:
    return code(name, COURSE.format(name=name, slope_at=slope_at, extra=extra))


def course_variables(seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.uniform(size=(30, 6)), "y": rng.integers(1, 4, size=(30, 1)).astype(float),
            "theta": rng.uniform(-0.5, 0.5, size=(53, 1)), "unused": rng.normal(size=(4, 4))}


def test_course_classifier_is_identified_from_its_own_cost(code):
    folder = course(code, "courseright")
    report = check("courseright(theta, 6, 5, 3, X, y, 2)", path=folder,
                   variables=course_variables(), shapes=COURSE_SHAPES)
    assert report.passed and report.mode == "network", str(report)
    model = report.model
    assert (model["x"], model["y"]) == ("X", "y")
    assert model["network"]["layers"] == [6, 5, 3]
    assert model["network"]["label_base"] == 1
    assert model["network"]["weight_decay"] == pytest.approx(2.0)
    assert model["layout"]["biases"] == "augmented" and model["layout"]["order"] == "F"
    assert all(t.checked == t.size for t in report.tensors)


def test_course_classifier_mistake_named_in_matlab(code):
    # sigmoidGradient(a2) where sigmoidGradient(z2) belongs (a2 without its bias column)
    folder = course(code, "courseslope", slope_at="a2(:, 2:end)")
    report = check("courseslope(theta, 6, 5, 3, X, y, 2)", path=folder,
                   variables=course_variables(), shapes=COURSE_SHAPES)
    assert not report.passed and report.mode == "network"
    assert {t.name: t.verdict for t in report.tensors}["Theta2"] == "ok"
    bug = next(f for f in report.findings if f.is_bug)
    assert (bug.kind, bug.tensor) == ("wrong_activation_derivative", "Theta1")
    assert "Theta2(:, 2:end)" in bug.details["matlab"]
    # positions as MATLAB writes them, on theta and on the tensor --shapes named
    worst = report.tensor("Theta1")
    i, j = worst.worst_index
    assert worst.worst_at == f"theta({1 + i + 5 * j}) = Theta1({i + 1}, {j + 1})"
    # every entry was compared with the network's backprop: no note of what finite
    # differences alone could not see, and the comparison's own reach instead
    assert not report.findings_of("precision")
    assert all(t.detectable_relative < 1e-7 for t in report.tensors)


def test_cost_outside_the_family_falls_back_to_the_black_box(code):
    # an L1 penalty on theta, which no member of the family has
    folder = course(code, "coursel1", extra=";\n  J = J + 0.01 * sum(abs(theta))")
    report = check("coursel1(theta, 6, 5, 3, X, y, 2)", path=folder,
                   variables=course_variables(), shapes=COURSE_SHAPES, mode="full")
    assert report.mode == "full" and not report.passed  # the gradient lacks the L1 term
    assert report.model["identified"] is False
    assert "x = X, y = y: closest:" in report.model["closest"]


def test_no_data_that_fits_says_so(code):
    folder = quadratic(code, "quadnodata")  # A is 12x12: no input for a 3x4 weight
    report = check("quadnodata(theta, A)", path=folder, variables=variables(),
                   shapes={"W1": (3, 4)})
    assert report.passed and report.mode == "auto"
    assert report.model["identified"] is False
    assert "none of the arrays quadnodata(theta, A) names (A 12x12)" in report.model["closest"]


def test_code_failing_at_the_identification_points_is_an_error_not_a_fallback(code):
    folder = course(code, "coursefails",
                    extra=";\n  if theta(1) ~= 0.25\n    error('only at the start');\n  end")
    given = course_variables()
    given["theta"][0] = 0.25
    with pytest.raises(InputError, match=r"at point 3 of the batch: only at the start"):
        check("coursefails(theta, 6, 5, 3, X, y, 2)", path=folder, variables=given,
              shapes=COURSE_SHAPES)


def test_data_readings_follow_the_expression():
    arrays = {"y": np.ones((30, 1)), "X": np.ones((30, 6)), "lam": np.ones((1, 1)),
              "other": np.ones((2, 2))}
    readings = list(data_readings(arrays, "cost(theta, X, y, lam)", COURSE_SHAPES))
    assert readings == [("X", "y"), ("X", "other"), ("X", None)]


def test_layer_sizes_among_the_arguments_give_the_courses_shapes():
    arrays = {"X": np.ones((5000, 400)), "y": np.ones((5000, 1)),
              "hidden_layer_size": np.array([[25.0]]), "lambda": np.array([[1.0]])}
    expr = "nnCostFunction(theta, 400, hidden_layer_size, 10, X, y, lambda)"
    assert integer_arguments(arrays, expr) == [400, 25, 10, 1]
    assert inferred_shapes(arrays, expr, 10285) == [{"Theta1": (25, 401), "Theta2": (10, 26)}]
    sparse = "sparseAutoencoderCost(theta, 64, 25, 1e-4, 0.01, 3, patches)"
    assert inferred_shapes({"patches": np.ones((64, 100))}, sparse, 3289) == [
        {"W1": (25, 64), "W2": (64, 25), "b1": (25,), "b2": (64,)}]
    # the seed: v from the data's width, the bias-free pair either way round
    assert inferred_shapes({"x": np.ones((1, 784))}, "seed_backprop(theta, x, 200)",
                           313600) == [{"W1": (784, 200), "W2": (200, 784)},
                                       {"W1": (200, 784), "W2": (784, 200)}]
    assert inferred_shapes({"A": np.ones((12, 12))}, "quad(theta, A)", 12) == []


def test_course_classifier_identified_without_shapes(code):
    folder = course(code, "coursenoshapes")
    given = {**course_variables(), "n_hidden": np.array([[5.0]])}
    report = check("coursenoshapes(theta, 6, n_hidden, 3, X, y, 2)", path=folder,
                   variables=given)
    assert report.passed and report.mode == "network", str(report)
    assert report.model["shapes"] == "Theta1=5x7,Theta2=3x6" and report.model["shapes_inferred"]
    assert [t.name for t in report.tensors] == ["Theta1", "Theta2"]


def test_seed_example_identified_without_shapes(octave):
    report = check("seed_backprop(theta, x, 4)", path=EXAMPLES, variables=seed_variables())
    assert report.mode == "network" and report.model["shapes"] == "W1=16x4,W2=4x16"
    assert {f.kind for f in report.findings if f.is_bug} == {"wrong_backprop_matrix", "transposed"}


# The sparse autoencoder exercise's cost, examples as columns of `data`, theta =
# [W1(:); W2(:); b1(:); b2(:)]; the sparsity term is left out of the hidden delta.
SPARSE = """function [cost, grad] = sparsecost(theta, visibleSize, hiddenSize, lambda, rho, beta, data)
  W1 = reshape(theta(1:hiddenSize*visibleSize), hiddenSize, visibleSize);
  W2 = reshape(theta(hiddenSize*visibleSize+1:2*hiddenSize*visibleSize), visibleSize, hiddenSize);
  b1 = theta(2*hiddenSize*visibleSize+1:2*hiddenSize*visibleSize+hiddenSize);
  b2 = theta(2*hiddenSize*visibleSize+hiddenSize+1:end);
  m = size(data, 2);
  a2 = 1 ./ (1 + exp(-(W1 * data + repmat(b1, 1, m))));
  a3 = 1 ./ (1 + exp(-(W2 * a2 + repmat(b2, 1, m))));
  rho_hat = mean(a2, 2);
  kl = sum(rho * log(rho ./ rho_hat) + (1 - rho) * log((1 - rho) ./ (1 - rho_hat)));
  cost = sum(sum((a3 - data).^2)) / (2 * m) + lambda / 2 * (sum(W1(:).^2) + sum(W2(:).^2)) ...
         + beta * kl;
  d3 = -(data - a3) .* a3 .* (1 - a3);
  d2 = (W2' * d3) .* a2 .* (1 - a2);
  W1grad = d2 * data' / m + lambda * W1;
  W2grad = d3 * a2' / m + lambda * W2;
  grad = [W1grad(:); W2grad(:); sum(d2, 2) / m; sum(d3, 2) / m];
end
"""


def test_sparse_autoencoder_exercise_identified_and_the_missing_term_named(code):
    folder = code("sparsecost", SPARSE)
    rng = np.random.default_rng(5)
    v, h = 8, 3
    r = np.sqrt(6 / (v + h + 1))
    theta = np.concatenate([rng.uniform(-r, r, 2 * v * h), np.zeros(h + v)]).reshape(-1, 1)
    report = check("sparsecost(theta, 8, 3, 1e-3, 0.1, 3, patches)", path=folder,
                   variables={"theta": theta, "patches": rng.uniform(size=(v, 20))})
    assert report.mode == "network", str(report)
    assert report.model["shapes"] == "W1=3x8,W2=8x3,b1=3,b2=8"
    assert report.model["network"]["sparsity_weight"] == pytest.approx(3.0)
    bugs = {(f.kind, f.tensor) for f in report.findings if f.is_bug}
    assert ("missing_term", "W1") in bugs, str(report)


# -------------------------------------------------------------- bad input


def cli_error(capsys, *argv: str) -> str:
    """Run ``gradproof octave ARGV``; assert exit 2 and no traceback; return stderr."""
    assert main(["octave", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_missing_octave_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert INSTALL_LINE in cli_error(capsys, "cost(theta)")


def test_syntax_error_shows_octaves_message_file_and_line(code, capsys):
    folder = code("broken", "function [J, grad] = broken(theta)\n  J = sum(theta;\n  grad = theta;\nend\n")
    scipy.io.savemat(folder / "v.mat", {"theta": np.ones((3, 1))})
    err = cli_error(capsys, "broken(theta)", "--path", str(folder), "--load", str(folder / "v.mat"))
    assert "parse error" in err and "broken.m" in err and "line 2" in err


def test_syntax_error_in_the_expression_itself(code):
    folder = quadratic(code, "quadparse")
    with pytest.raises(InputError, match="making quadparse\\(theta, A a function of theta: parse error"):
        check("quadparse(theta, A", path=folder, variables=variables())


def test_error_raised_in_the_function_names_it_and_its_line(code, capsys):
    folder = code(
        "raises", "function [J, grad] = raises(theta)\n  J = 0;\n  error('lambda must be positive');\nend\n"
    )
    scipy.io.savemat(folder / "v.mat", {"theta": np.ones((3, 1))})
    err = cli_error(capsys, "raises(theta)", "--path", str(folder), "--load", str(folder / "v.mat"))
    assert "lambda must be positive" in err and "raises at line 3" in err


def test_one_output_instead_of_two(code, capsys):
    folder = code("single", "function J = single(theta)\n  J = sum(theta.^2);\nend\n")
    scipy.io.savemat(folder / "v.mat", {"theta": np.ones((3, 1))})
    err = cli_error(capsys, "single(theta)", "--path", str(folder), "--load", str(folder / "v.mat"))
    assert "must return two outputs, [J, grad]" in err


def test_gradient_of_the_wrong_length(code):
    folder = quadratic(code, "quadshort", grad="A(1:end-1, :) * theta")
    with pytest.raises(InputError, match=r"grad, the second output .* is a 11x1 double; it must be a vector with one entry per entry of theta \(12"):
        check("quadshort(theta, A)", path=folder, variables=variables())


def test_gradient_as_a_matrix(code):
    folder = quadratic(code, "quadmatrix", grad="reshape(A * theta, 3, 4)")
    with pytest.raises(InputError, match="3x4 double"):
        check("quadmatrix(theta, A)", path=folder, variables=variables())


@pytest.mark.parametrize(
    "name, body, pattern",
    [
        ("nanj", "J = NaN; grad = theta;", "J, the first output .* is nan"),
        ("infgrad", "J = sum(theta); grad = theta; grad(2) = Inf;", r"grad\(2\) = inf \(1-based\)"),
        ("vecj", "J = theta; grad = theta;", "J, the first output .* must be a real scalar; it is a 3x1 double"),
    ],
    ids=["nan-J", "inf-grad", "vector-J"],
)
def test_non_finite_or_non_scalar_outputs(code, name, body, pattern):
    folder = code(name, f"function [J, grad] = {name}(theta)\n  {body}\nend\n")
    with pytest.raises(InputError, match=pattern):
        check(f"{name}(theta)", path=folder, variables={"theta": np.ones((3, 1))})


def test_shapes_that_do_not_add_up(code, capsys):
    folder = quadratic(code, "quadshapes")
    scipy.io.savemat(folder / "v.mat", variables())
    err = cli_error(capsys, "quadshapes(theta, A)", "--path", str(folder), "--load",
                    str(folder / "v.mat"), "--shapes", "W1=3x3,b1=2")
    assert "the shapes hold 11 entries (W1 3x3 (9), b1 2 (2)) but theta has 12" in err


def test_malformed_shapes_flag(capsys, octave):
    assert "NAME=ROWSxCOLS" in cli_error(capsys, "f(theta)", "--shapes", "W1=3by3")


def test_missing_parameter_variable_lists_the_loaded_ones(code):
    folder = quadratic(code, "quadvar")
    with pytest.raises(InputError, match=r"params is not among the loaded variables \(found: A, theta\)"):
        check("quadvar(params, A)", path=folder, variables=variables(), var="params")


def test_timeout_kills_octave_and_what_it_started(code, monkeypatch, tmp_path):
    # The function starts a child process, then never returns.
    folder = code("spin", "function [J, grad] = spin(theta)\n  system('sleep 300 &');\n  while true\n  end\nend\n")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = OctaveRunner("spin(theta)", path=folder, variables={"theta": np.ones((2, 1))}, timeout=3)
    pid, directory = runner.pid, runner.directory
    with pytest.raises(InputError, match=r"did not finish within 3 s .* Octave was stopped"):
        runner.first()
    runner.close()
    # SIGKILL reaches the group at once; the kernel takes a moment to end its members.
    deadline = time.monotonic() + 5.0
    while running_in_group(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_in_group(pid) == []
    assert not directory.exists()


def running_in_group(group: int) -> list[str]:
    """The commands of the processes of a process group that still run (zombies, which have
    ended and wait for their parent to read their status, left out)."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")".
        name = text[text.index("(") + 1 : text.rindex(")")]
        state, _, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            running.append(name)
    return running


def test_check_leaves_no_temporary_files(code, monkeypatch, tmp_path):
    folder = quadratic(code, "quadclean")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    check("quadclean(theta, A)", path=folder, variables=variables())
    with pytest.raises(InputError):
        check("quadclean(theta)", path=folder, variables=variables())  # Octave: not enough inputs
    assert list(scratch.iterdir()) == []


def test_missing_files_and_folders_are_named(capsys, octave, tmp_path):
    assert "no such file" in cli_error(capsys, "f(theta)", "--load", str(tmp_path / "none.mat"))
    assert "not a folder" in cli_error(capsys, "f(theta)", "--path", str(tmp_path / "none"))


def test_a_tensor_named_twice_in_shapes(capsys, octave):
    assert "W is named twice" in cli_error(capsys, "f(theta)", "--shapes", "W=2x2,W=3")


# ------------------------------------------------- the CLI's Octave at exit

BACKGROUND = """function [J, grad] = background(theta)
  system('sleep 300 &');
  J = 0.5 * sum(theta .^ 2);
  grad = theta;
end
"""

SPIN = "function [J, grad] = spin(theta)\n  while true\n  end\nend\n"


def cli_in_subprocess(folder: Path, expr: str, tmp_path: Path, *flags: str) -> subprocess.Popen:
    """`gradproof octave EXPR` in its own Python, its temporary files (Octave's working
    directory) under tmp_path/tmp, so that what it leaves running can be found."""
    scipy.io.savemat(tmp_path / "vars.mat", {"theta": np.arange(1.0, 5.0).reshape(4, 1)})
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "gradproof", "octave", expr, "--path", str(folder),
         "--load", str(tmp_path / "vars.mat"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def running_in(folder: Path) -> list[str]:
    """The commands of running processes whose working directory is under ``folder`` (one
    that was removed still reads as its old path, with " (deleted)")."""
    running = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # ended while we looked, or not ours to read
        if cwd.startswith(str(folder)) and stat[stat.rindex(")") + 2] != "Z":
            running.append(stat[stat.index("(") + 1 : stat.rindex(")")])
    return running


def left_running(folder: Path) -> list[str]:
    """``running_in(folder)`` once SIGKILL has had a moment to end what it reached."""
    deadline = time.monotonic() + 5.0
    while running_in(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running_in(folder)


def test_cli_exits_with_clean_stderr_and_nothing_left_running(code, tmp_path):
    folder = code("background", BACKGROUND)
    cli = cli_in_subprocess(folder, "background(theta)", tmp_path)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, out + err
    assert err == ""
    assert left_running(tmp_path / "tmp") == []  # Octave and the sleep it started both ended


def test_cli_timeout_leaves_a_clear_message_and_nothing_running(code, tmp_path):
    folder = code("spin", SPIN)
    cli = cli_in_subprocess(folder, "spin(theta)", tmp_path, "--timeout", "2")
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 2
    assert err.startswith("error: spin(theta) did not finish within 2 s")
    assert "Traceback" not in err and "ignoring" not in err
    assert left_running(tmp_path / "tmp") == []


# Spins as SPIN does, once it has left a file named "spinning" in Octave's working directory.
MARKED_SPIN = ("function [J, grad] = marked_spin(theta)\n  fclose(fopen('spinning', 'w'));\n"
               "  while true\n  end\nend\n")


def spinning_cli(code, tmp_path: Path) -> subprocess.Popen:
    """The CLI once Octave is busy in a function that never ends (before that, Octave reads
    its input and would end by itself at its end)."""
    folder = code("marked_spin", MARKED_SPIN)
    cli = cli_in_subprocess(folder, "marked_spin(theta)", tmp_path, "--timeout", "600")
    deadline = time.monotonic() + 60
    while not list((tmp_path / "tmp").glob("*/spinning")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "octave-cli" in running_in(tmp_path / "tmp")
    return cli


def test_cli_stopped_by_sigterm_stops_octave(code, tmp_path):
    cli = spinning_cli(code, tmp_path)
    cli.send_signal(signal.SIGTERM)  # as a job control would
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == EXIT_INTERRUPTED
    assert err.strip() == "interrupted: stopped by SIGTERM"
    assert left_running(tmp_path / "tmp") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl's parent-death signal")
def test_cli_killed_by_sigkill_takes_octave_with_it(code, tmp_path):
    cli = spinning_cli(code, tmp_path)
    cli.kill()  # no handler runs: the kernel ends Octave
    cli.communicate(timeout=60)
    assert left_running(tmp_path / "tmp") == []
