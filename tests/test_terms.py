"""The user's terms: names, positions and fix lines as the user wrote them (gradproof.terms)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradproof as gp
from gradproof.report import Finding, GradReport, TensorResult
from gradproof.terms import UserTensor, in_user_terms

# ----------------------------------------------------------------------------- positions


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (UserTensor("W2", "decoder", "gDecoder"), "gDecoder[337, 133]"),
        (UserTensor("W2", "decoder", "gDecoder", one_based=True), "gDecoder(338, 134)"),
        # The user's array is the transpose of gradproof's: the subscripts swap.
        (UserTensor("W2", "decoder", "gDecoder", transposed=True, one_based=True),
         "gDecoder(134, 338)"),
        (UserTensor("W2", "decoder"), "decoder[337, 133]"),
    ],
    ids=["numpy", "matlab", "transposed", "no-gradient-name"],
)
def test_an_entry_is_written_as_the_user_stores_it(user, expected):
    assert user.at((337, 133)) == expected


@pytest.mark.parametrize(("order", "one_based", "expected"), [
    # Theta2 (4x2) starts at 12; entry (1, 1) is local 5 in F order, 3 in C order.
    ("F", False, "theta[17] = Theta2[1, 1]"),
    ("C", False, "theta[15] = Theta2[1, 1]"),
    ("F", True, "theta(18) = Theta2(2, 2)"),
])
def test_a_flat_vector_entry_names_its_place_in_theta_and_in_the_tensor(order, one_based, expected):
    user = UserTensor("Theta2", "Theta2", flat="theta", offset=12, shape=(4, 2), order=order,
                      one_based=one_based)
    assert user.at((1, 1)) == expected
    flat = np.arange(20)
    view = flat[12:].reshape(4, 2, order=order)
    assert str(view[1, 1] + one_based) in expected.split(" = ")[0]  # the place really is it


# ------------------------------------------------------------------------- a whole report


def _report() -> GradReport:
    tensors = [
        TensorResult("W1", (3, 4), 12, 1.0, 1.0, False, worst_index=(2, 1)),
        TensorResult("W2", (4, 3), 12, 1e-10, 1e-9, True, worst_index=(0, 2)),
    ]
    findings = [
        Finding("partial", ("W1",), "only rows 0-1 and 2 of W1 are wrong, the worst at W1[2, 1]",
                fix="look at the code that fills rows 0-1 and 2 of W1",
                details={"numpy": "dW1 = x.T @ d_s1", "matlab": "dW1 = x' * d_s1;"}),
        Finding("swapped", ("W1", "W2"), "the gradients of W1 and W2 are exchanged"),
    ]
    return GradReport(tensors, findings)


# The user calls gradproof's W1 "W2" and W2 "W1": renaming must happen once, not twice.
CROSSED = {
    "W1": UserTensor("W1", "W2", "gW2", transposed=True, one_based=True),
    "W2": UserTensor("W2", "W1", "gW1", one_based=True),
}


def test_names_positions_lines_and_fix_lines_come_out_in_the_users_terms():
    report = in_user_terms(_report(), CROSSED)
    partial, swapped = report.findings
    assert partial.tensors == ("W2",) and partial.canonical == ("W1",)
    # Rows of gradproof's W1 are columns of the user's transposed gW2, counted from 1.
    assert partial.message == "only columns 1-2 and 3 of gW2 are wrong, the worst at gW2(2, 3)"
    assert partial.fix == "look at the code that fills columns 1-2 and 3 of gW2"
    assert partial.details["matlab"] == "gW2 = x' * d_s1;"
    assert swapped.message == "the gradients of W2 and W1 are exchanged"
    assert swapped.to_dict()["canonical_tensors"] == ["W1", "W2"]
    first = report.tensors[0]
    assert (first.name, first.canonical, first.worst_at) == ("W2", "W1", "gW2(2, 3)")
    assert first.to_dict()["canonical"] == "W1" and first.worst_index == (2, 1)
    assert "W2 (W1)" in str(report) and "gW2(2, 3)" in str(report)


def test_line_spans_shift_their_indices_but_not_the_count_of_the_rest():
    user = UserTensor("W1", "W1", "gW1", one_based=True)
    assert user.lines("rows", "0-4, 9, 11 and 12 more") == "rows 1-5, 10, 12 and 12 more"


def test_terms_that_change_nothing_add_no_canonical_name():
    same = {"W1": UserTensor("W1", "W1"), "W2": UserTensor("W2", "W2")}
    report = in_user_terms(_report(), same)
    assert all("canonical" not in t.to_dict() for t in report.tensors)
    assert all("canonical" not in f.to_dict() for f in report.findings)
    assert report.findings[0].message == _report().findings[0].message


# ------------------------------------------------------------------- check_gradient's doors


def _linear_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    params = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4)}

    def loss(p):
        return 0.5 * np.sum((x @ p["W1"] + p["b1"] - t) ** 2)

    def grad(p):
        r = x @ p["W1"] + p["b1"] - t
        return x.T @ r, r.sum(0)

    return params, loss, grad


def test_gradient_keys_like_dW1_name_the_positions():
    params, loss, grad = _linear_problem()

    def user_grad(p):
        dW1, db1 = grad(p)
        dW1[2, 1] += 1.0  # one wrong entry
        return {"dW1": dW1, "db1": db1}

    report = gp.check_gradient(loss, user_grad, params)
    assert report.tensor("W1").worst_at == "dW1[2, 1]"
    [partial] = report.findings_of("partial")
    assert "only dW1[2, 1] is wrong" in partial.message and "fills dW1[2, 1]" in partial.fix
    assert partial.canonical is None  # the user's names are the tensors' names


def test_a_gradient_in_the_transposed_shape_is_subscripted_as_the_user_holds_it():
    params, loss, grad = _linear_problem()

    def user_grad(p):
        dW1, db1 = grad(p)
        dW1[2, 1] += 1.0
        return {"dW1": dW1.T, "db1": db1}  # (4, 3): the user's array, transposed

    report = gp.check_gradient(loss, user_grad, params, subscripts="matlab")
    # gradproof's W1[2, 1] is the user's dW1(2, 3), 1-based on the (4, 3) array.
    assert report.tensor("W1").worst_at == "dW1(2, 3)"


def test_a_flat_theta_names_its_place_and_the_tensor_subscript_it_maps_to():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    shapes = {"Theta1": (3, 4), "Theta2": (4, 2)}

    def unpack(theta):
        return theta[:12].reshape(3, 4, order="F"), theta[12:].reshape(4, 2, order="F")

    def loss(theta):
        a, b = unpack(theta)
        return 0.5 * np.sum((np.tanh(x @ a) @ b - y) ** 2)

    def grad(theta):
        a, b = unpack(theta)
        h = np.tanh(x @ a)
        r = h @ b - y
        ga, gb = x.T @ ((r @ b.T) * (1 - h**2)), h.T @ r
        gb[1, 1] *= 3.0  # one wrong entry: theta(18) in MATLAB
        return np.concatenate([ga.ravel(order="F"), gb.ravel(order="F")])

    theta = rng.standard_normal(20)
    report = gp.check_gradient(loss, grad, theta, shapes=shapes, order="F",
                               subscripts="matlab", flat_name="nn_params")
    assert report.tensor("Theta2").worst_at == "nn_params(18) = Theta2(2, 2)"
    assert "nn_params(18) = Theta2(2, 2)" in report.findings_of("partial")[0].message


@pytest.mark.parametrize(("option", "value"), [("subscripts", "fortran"), ("flat_name", "1theta")])
def test_bad_position_options_are_input_errors(option, value):
    params, loss, grad = _linear_problem()
    with pytest.raises(gp.InputError, match=option):
        gp.check_gradient(loss, grad, params, **{option: value})


# --------------------------------------------------------------- advice that fits the case


def test_a_black_box_functions_transposed_advice_covers_every_orientation():
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((4, 4))
    a = rng.standard_normal((5, 4))

    def loss(p):
        return float(np.sum(np.sin(a @ p["W"])))

    def grad(p):
        return {"W": (a.T @ np.cos(a @ p["W"])).T}  # transposed

    [finding] = gp.check_gradient(loss, grad, {"W": w0}).findings_of("transposed")
    # No single product is claimed: the function might use W as a @ W, W @ a or a @ W.T.
    for product in ("`a.T @ delta` for `a @ W`", "`delta @ a.T` for `W @ a`",
                    "`delta.T @ a` for `a @ W.T`"):
        assert product in finding.fix


def test_a_torch_modules_findings_name_no_autoencoder_quantity():
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_module

    class Flipped(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x @ w.T

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g @ w, -(g.T @ x)  # the weight's gradient with the wrong sign

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

        def forward(self, x):
            return torch.nn.functional.softplus(Flipped.apply(x, self.weight))

    torch.manual_seed(0)
    report = check_module(Net(), (torch.randn(5, 4, dtype=torch.float64),))
    assert [f.kind for f in report.findings if f.is_bug] == ["sign_flipped"]
    texts = " ".join(f"{f.message} {f.fix}" for f in report.findings)
    for autoencoder_word in ("(z - x)", "d_s", "encoder", "decoder", "np.zeros_like"):
        assert autoencoder_word not in texts


# ------------------------------------------------------------------------ the precision note


def test_the_precision_note_names_every_coarse_tensor_and_the_float64_call():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((10, 40)).astype(np.float32)
    params = {"A": rng.standard_normal((40, 30)).astype(np.float32),
              "c": rng.standard_normal(30).astype(np.float32)}

    def loss(p):  # float32 arithmetic whatever it is given
        s = z @ p["A"].astype(np.float32) + p["c"].astype(np.float32)
        return float(np.sum(np.tanh(s) ** 2))

    def grad(p):
        h = np.tanh(z @ p["A"] + p["c"])
        d = 2 * h * (1 - h**2)
        return {"A": z.T @ d, "c": d.sum(0)}

    report = gp.check_gradient(loss, grad, params)
    [note] = [f for f in report.findings_of("precision") if "cannot see" in f.message]
    assert note.tensors == ("A", "c")
    assert "every tensor (A, c)" in str(report)
    assert "float64" in note.fix


def test_where_sampling_is_the_limit_the_precision_note_asks_for_every_entry_not_float64():
    rng = np.random.default_rng(4)
    params = {"A": rng.standard_normal((30, 30)), "c": rng.standard_normal(30)}

    def loss(p):
        return float(np.sum(np.sin(p["A"])) + np.sum(p["c"] ** 2))

    def grad(p):
        return {"A": np.cos(p["A"]), "c": 2 * p["c"]}

    report = gp.check_gradient(loss, grad, params, mode="sample", samples=8)
    [note] = report.findings_of("precision")
    assert note.tensors == ("A", "c")  # both sampled in part: both named
    assert "8 of 900 of A, 8 of 30 of c" in note.message
    # A float64 loss is not the limit: the sharper call is one that covers every entry.
    assert "mode='full'" in note.fix and "float64" not in note.fix


def test_a_note_may_name_many_tensors_but_a_bug_at_most_two():
    Finding("precision", ("W1", "b1", "W2"), "a note about three tensors")
    with pytest.raises(ValueError, match="one or two"):
        Finding("mismatch", ("W1", "b1", "W2"), "a bug claim about three tensors")


# ---------------------------------------------------------------------------- compare's files


def test_compare_writes_positions_on_the_users_matlab_variables(tmp_path, capsys):
    # MATLAB's column convention: weights (n_out, n_in), examples as columns, 1-based.
    scipy_io = pytest.importorskip("scipy.io")
    from gradproof.cli import main

    model = gp.Autoencoder(6, 4)
    params = model.init_params(seed=1)
    x = np.random.default_rng(0).uniform(size=(10, 6))
    _, grads = model.loss_and_grad(params, x)
    grads["W2"][3, 1] += 5.0  # gradproof's W2[3, 1] (4x6) is the user's gW2(2, 4) (6x4)
    path = tmp_path / "outin.mat"
    scipy_io.savemat(path, {
        "X": x.T, "W1": params["W1"].T, "b1": params["b1"][:, None],
        "W2": params["W2"].T, "b2": params["b2"][:, None],
        **{f"g{k}": (v.T if v.ndim == 2 else v[:, None]) for k, v in grads.items()},
    })
    assert main(["compare", str(path), "--map", "X=x", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    w2 = next(t for t in report["tensors"] if t["name"] == "W2")
    # the table's shape and worst index are the user's orientation too
    assert (w2["shape"], w2["worst_index"], w2["worst_at"]) == ([6, 4], [1, 3], "gW2(2, 4)")
    [partial] = report["findings"]
    assert "only gW2(2, 4) is wrong" in partial["message"]


def test_check_network_keeps_the_users_names_with_the_networks_beside_them():
    from user_networks import course_classifier

    user = course_classifier()
    report = gp.check_network(user.loss, lambda p: user.grad(p, "decay_on_biases"),
                              user.params, user.x, user.y)
    # Theta1 holds the network's W1 and, as its first column, b1.
    assert [(t.name, t.canonical) for t in report.tensors] == [
        ("Theta1", "W1, b1"), ("Theta2", "W2, b2")]
    assert "Theta1 (W1, b1)" in str(report)
    [decay] = report.findings_of("missing_l2")[:1]
    assert decay.tensor == "Theta1" and decay.to_dict()["canonical"] == "W1, b1"


def test_check_network_states_what_its_exact_comparison_catches_not_the_differences_limits():
    from user_networks import course_classifier

    # Large enough that the finite differences are directional, and coarse for Theta1: their
    # limit is no limit of a check that compares every entry with the network's backprop.
    user = course_classifier(m=100, n_in=784, hidden=25, classes=10)
    report = gp.check_network(user.loss, user.grad, user.params, user.x, user.y)
    assert report.passed and not report.findings_of("precision"), str(report)
    eps = np.finfo(np.float64).eps
    for result in report.tensors:
        assert result.checked == result.size
        # the comparison's tolerance, sqrt(eps) of the entry plus of the largest entry
        assert 0 < result.detectable_relative <= 2 * np.sqrt(eps) * (1 + 1e-9)
    # and an error in one entry just above that is caught, wherever it lies
    theta1 = report.tensor("Theta1")
    for entry in [(0, 0), (24, 784), (11, 300)]:
        def planted(p, entry=entry):
            grads = user.grad(p)
            grads["Theta1"][entry] += 1.01 * theta1.detectable
            return grads

        wrong = gp.check_network(user.loss, planted, user.params, user.x, user.y)
        assert wrong.tensor("Theta1").verdict == "FAIL" and wrong.tensor("Theta2").passed
        assert wrong.tensor("Theta1").worst_index == entry


@pytest.mark.parametrize(
    ("subscripts", "gradient", "expected"),
    [("numpy", "Theta1", "Theta1[2, 0]"), ("matlab", "Theta1", "Theta1(3, 1)"),
     ("matlab", "Theta1_grad", "Theta1_grad(3, 1)")],
)
def test_check_network_writes_positions_on_the_users_arrays(subscripts, gradient, expected):
    from user_networks import course_classifier

    user = course_classifier()

    def planted(p):
        grads = user.grad(p)
        grads["Theta1"][2, 0] += 0.5  # the bias of hidden unit 3
        grads[gradient] = grads.pop("Theta1")
        return grads

    report = gp.check_network(user.loss, planted, user.params, user.x, user.y,
                              subscripts=subscripts)
    worst = report.tensor("Theta1")
    assert worst.worst_index == (2, 0) and worst.worst_at == expected
    assert f"{expected}  FAIL" in str(report)
    assert report.to_dict()["tensors"][0]["worst_at"] == expected


def test_check_network_on_a_flat_theta_writes_its_position_beside_the_tensors():
    from user_networks import course_classifier

    user = course_classifier()
    shapes = {name: value.shape for name, value in user.params.items()}

    def unrolled(p):
        return np.concatenate([p["Theta1"].ravel(order="F"), p["Theta2"].ravel(order="F")])

    def rolled(theta):
        cut = user.params["Theta1"].size
        return {"Theta1": theta[:cut].reshape(shapes["Theta1"], order="F"),
                "Theta2": theta[cut:].reshape(shapes["Theta2"], order="F")}

    def grad(theta):
        grads = user.grad(rolled(theta))
        grads["Theta2"][1, 3] -= 0.5
        return unrolled(grads)

    theta = unrolled(user.params)
    report = gp.check_network(lambda t: user.loss(rolled(t)), grad, theta, user.x, user.y,
                              shapes=shapes, order="F", subscripts="matlab",
                              flat_name="nn_params")
    # Theta2(2, 4) is entry 1 + 1 + 3 * 4 of Theta2's 36, after Theta1's 168
    assert report.tensor("Theta2").worst_at == "nn_params(182) = Theta2(2, 4)"


def test_findings_that_differ_only_in_the_users_gradient_names_are_still_grouped():
    params, loss, grad = _linear_problem()

    def float32_grad(p):
        dW1, db1 = grad(p)
        return {"dW1": dW1.astype(np.float32), "db1": db1.astype(np.float32)}

    report = gp.check_gradient(loss, float32_grad, params)
    notes = [f for f in report.findings_of("precision") if f.details.get("dtype") == "float32"]
    assert [(f.tensor, f.gradient) for f in notes] == [("W1", "dW1"), ("b1", "db1")]
    assert "- [precision] every tensor (W1, b1): each tensor's gradient is float32" in str(report)
