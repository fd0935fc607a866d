"""Spec for ``gradproof compare`` on the family's files: a classifier saved from MATLAB
(``Theta1``, ``Theta2``, ``X``, 1-based ``y``, the user's gradients, ``J``), a flat ``theta``
with ``--shapes``, a numpy classifier in an .npz; the model identified from the file's one loss
value among the members its shapes allow, and the ambiguity said where the value cannot decide.

The files are written here (``scipy.io.savemat``, ``numpy.savez``) from the users' networks of
``user_networks``, correct and with planted mistakes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from gradproof.cli import main
from user_networks import course_classifier, numpy_softmax_classifier


def course_file(tmp_path, bug=None, *, loss=True, lam=True, flat=None, name="course.mat"):
    """The MATLAB course's classifier saved as ex4 users save it."""
    user = course_classifier(lam=1.0)
    grads = user.grad(user.params, bug)
    t1, t2 = user.params["Theta1"], user.params["Theta2"]
    contents = {"X": user.x, "y": user.y.astype(float)}
    if flat == "theta":
        contents["nn_params"] = np.concatenate([t1.ravel(order="F"), t2.ravel(order="F")])[:, None]
    else:
        contents.update(Theta1=t1, Theta2=t2)
    if flat in ("theta", "grad"):
        contents["grad"] = np.concatenate([grads["Theta1"].ravel(order="F"),
                                           grads["Theta2"].ravel(order="F")])[:, None]
    else:
        contents.update(Theta1_grad=grads["Theta1"], Theta2_grad=grads["Theta2"])
    if loss:
        contents["J"] = user.loss(user.params)
    if lam:
        contents["lambda"] = 1.0
    path = tmp_path / name
    scipy.io.savemat(path, contents)
    return path


def run_json(capsys, *argv):
    code = main(["compare", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_right_course_gradient_passes_with_the_model_identified(tmp_path, capsys):
    code, report = run_json(capsys, str(course_file(tmp_path)))
    assert code == 0 and report["passed"]
    model = report["model"]
    assert model["decided"] and model["network"]["label_base"] == 1
    assert model["network"]["loss_name"] == "cross_entropy"
    assert model["network"]["weight_decay"] == 1.0 and model["network"]["decay_mean"]
    assert model["layout"]["biases"] == "augmented"
    assert [t["name"] for t in report["tensors"]] == ["Theta1", "Theta2"]


@pytest.mark.parametrize("bug", ["slope_of_activation", "cross_entropy_slope_again",
                                 "decay_on_biases", "labels_off_by_one", "mean_twice"])
def test_a_planted_mistake_is_named_in_the_users_names(tmp_path, capsys, bug):
    code, report = run_json(capsys, str(course_file(tmp_path, bug)))
    assert code == 1
    named = [f for f in report["findings"] if f.get("details", {}).get("mistake") == bug]
    assert named, report["findings"]
    assert named[0]["tensor"] in ("Theta1", "Theta2")


def test_the_readable_report_states_the_model_and_the_fix(tmp_path, capsys):
    assert main(["compare", str(course_file(tmp_path, "slope_of_activation"))]) == 1
    out = capsys.readouterr().out
    assert "labels 1..4" in out and "from the file's loss value" in out
    assert "sigmoidGradient(z2)" in out


def test_a_flat_theta_with_shapes_is_read_column_major(tmp_path, capsys):
    path = course_file(tmp_path, flat="theta")
    code, report = run_json(capsys, str(path), "--shapes", "Theta1=8x21,Theta2=4x9")
    assert code == 0 and report["model"]["layout"]["container"] == "flat"
    code, report = run_json(capsys, str(course_file(tmp_path, "slope_of_activation",
                                                    flat="theta", name="wrong.mat")),
                            "--shapes", "Theta1=8x21,Theta2=4x9")
    assert code == 1
    named = [f for f in report["findings"]
             if f.get("details", {}).get("mistake") == "slope_of_activation"]
    assert named[0]["tensor"] == "Theta1"
    assert "Theta2(:, 2:end)" in named[0]["details"]["matlab"]  # the names --shapes gave


def _worst_at(report, name):
    tensor = next(t for t in report["tensors"] if t["name"] == name)
    return tensor["worst_index"], tensor["worst_at"]


def test_positions_are_matlabs_on_the_users_own_variables(tmp_path, capsys):
    code, report = run_json(capsys, str(course_file(tmp_path, "slope_of_activation")))
    (i, j), at = _worst_at(report, "Theta1")
    assert code == 1 and at == f"Theta1_grad({i + 1}, {j + 1})"
    code, report = run_json(capsys, str(course_file(tmp_path, "slope_of_activation",
                                                    flat="theta", name="flat.mat")),
                            "--shapes", "Theta1=8x21,Theta2=4x9")
    (i, j), at = _worst_at(report, "Theta1")
    assert at == f"nn_params({1 + i + 8 * j}) = Theta1({i + 1}, {j + 1})"


def numpy_classifier_file(tmp_path):
    """A numpy softmax classifier saved with np.savez, its gradients keyed dW1 ..., without
    the softmax's target: the file and the --weight-decay flag of its lambda."""
    user = numpy_softmax_classifier(lam=0.3)
    grads = user.grad(user.params, "softmax_without_target")
    path = tmp_path / "clf.npz"
    np.savez(path, x=user.x, y=user.y, J=user.loss(user.params), **user.params,
             **{f"d{name}": g for name, g in grads.items()})
    return str(path), ["--weight-decay", str(0.3 * len(user.y))]


def test_an_npz_gets_numpys_positions_on_the_users_gradient(tmp_path, capsys):
    path, flags = numpy_classifier_file(tmp_path)
    code, report = run_json(capsys, path, *flags)
    (i, j), at = _worst_at(report, "W1")
    assert code == 1 and at == f"dW1[{i}, {j}]"
    # one mistake for every tensor is said once, with its one pair of fix lines, although
    # one tensor's residual is exactly 0
    main(["compare", path, *flags])
    text = capsys.readouterr().out
    assert text.count("[mismatch]") == 1 and "[mismatch] every tensor (W1, b1, W2, b2)" in text
    assert text.count("fix (numpy):") == 1


def test_a_flat_gradient_beside_the_thetas_is_split_like_matlab(tmp_path, capsys):
    code, report = run_json(capsys, str(course_file(tmp_path, flat="grad")))
    assert code == 0 and report["passed"]


def test_without_a_loss_value_the_model_is_assumed_and_said_so(tmp_path, capsys):
    code, report = run_json(capsys, str(course_file(tmp_path, loss=False)))
    assert not report["model"]["decided"]
    assert "no loss value" in report["model"]["identification"]
    assert code == 0  # lambda is in the file, and the assumed member is the course's


def test_a_value_that_several_members_fit_is_said_to_be_undecided(tmp_path, capsys):
    # without lambda, every member whose data term is below J fits with its own lambda
    code, report = run_json(capsys, str(course_file(tmp_path, lam=False)))
    text = report["model"]["identification"]
    assert not report["model"]["decided"] and "cannot decide" in text
    assert "--weight-decay" in text


def test_a_value_no_member_gives_is_said_so(tmp_path, capsys):
    path = course_file(tmp_path)
    contents = scipy.io.loadmat(path)
    contents["J"] = contents["J"] + 0.5
    scipy.io.savemat(path, {k: v for k, v in contents.items() if not k.startswith("__")})
    code, report = run_json(capsys, str(path))
    assert not report["model"]["decided"]
    assert "no member of the family gives" in report["model"]["identification"]


def test_a_numpy_classifier_in_an_npz_is_identified(tmp_path, capsys):
    path, flags = numpy_classifier_file(tmp_path)
    code, report = run_json(capsys, path, *flags)
    network = report["model"]["network"]
    assert (network["output"], network["activation"], network["label_base"]) == (
        "softmax", ["tanh"], 0)
    assert code == 1
    assert any(f.get("details", {}).get("mistake") == "softmax_without_target"
               for f in report["findings"])


def test_flags_narrow_the_members(tmp_path, capsys):
    code, report = run_json(capsys, str(course_file(tmp_path, lam=False)), "--loss",
                            "squared", "--output-activation", "sigmoid", "--reduction",
                            "mean", "--activation", "sigmoid")
    assert report["model"]["network"]["loss_name"] == "squared"


def test_layout_flags_narrow_the_layouts(tmp_path, capsys):
    path = str(course_file(tmp_path))
    assert main(["compare", path, "--weights", "out_in", "--examples", "rows"]) == 0
    capsys.readouterr()
    assert main(["compare", path, "--examples", "columns"]) == 2
    assert "--examples" in capsys.readouterr().err


def test_bad_input_is_a_message_and_exit_2(tmp_path, capsys):
    path = tmp_path / "no_grad.mat"
    scipy.io.savemat(path, {"X": np.ones((3, 2)), "y": np.ones((3, 1)),
                            "Theta1": np.ones((2, 3))})
    assert main(["compare", str(path)]) == 2
    assert "no gradient for Theta1" in capsys.readouterr().err
    path = course_file(tmp_path, flat="theta")
    assert main(["compare", str(path), "--shapes", "Theta1=8x20,Theta2=4x9"]) == 2
    assert "no flat parameter vector" in capsys.readouterr().err
    labels = tmp_path / "labels.mat"
    contents = scipy.io.loadmat(course_file(tmp_path))
    contents["y"] = contents["y"] + 7
    scipy.io.savemat(labels, {k: v for k, v in contents.items() if not k.startswith("__")})
    assert main(["compare", str(labels)]) == 2
    assert "outside the 4 classes" in capsys.readouterr().err
