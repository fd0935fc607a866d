"""Specs for `gradproof compare FILE`, through gradproof.cli.main.

Files are written in tmp_path: .mat with scipy.io.savemat, .npz with numpy.savez. A 6-4-6
network keeps each run well under a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from gradproof.cli import main
from gradproof.io import HDF5_SIGNATURE
from gradproof.mistakes import Flaws, flawed_backprop
from gradproof.nn.autoencoder import Autoencoder


def model_case(seed=0, batch=1, **options):
    model = Autoencoder(**{"layers": [6, 4, 6], **options})
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in model.init_params(seed).items()}
    x = rng.uniform(0.05, 0.95, size=(batch, 6))
    return model, params, x


def motivating_file(tmp_path, flaws=Flaws(back_weight="mirror", transposed_outer=True)):
    """The motivating user's export, at 6-4-6: save f.mat encoder decoder x gEncoder gDecoder."""
    model, params, x = model_case(bias=False)
    grads = flawed_backprop(model, params, x, flaws)
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, {
        "encoder": params["W1"], "decoder": params["W2"], "x": x,
        "gEncoder": grads["W1"], "gDecoder": grads["W2"],
    })
    return path


def run_json(capsys, *argv):
    code = main(["compare", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_motivating_users_file_fails_with_both_bugs_named(tmp_path, capsys):
    code, report = run_json(capsys, str(motivating_file(tmp_path)))
    assert code == 1 and report["passed"] is False
    bugs = {(f["kind"], f["tensor"]) for f in report["findings"]}
    # Named as the file names them, with gradproof's names beside.
    assert bugs == {("transposed", "encoder"), ("wrong_backprop_matrix", "encoder"),
                    ("transposed", "decoder")}
    assert {(f["tensor"], f["canonical"]) for f in report["findings"]} == {
        ("encoder", "W1"), ("decoder", "W2")}
    assert [(t["name"], t["canonical"]) for t in report["tensors"]] == [
        ("encoder", "W1"), ("decoder", "W2")]
    wrong_matrix = next(f for f in report["findings"] if f["kind"] == "wrong_backprop_matrix")
    # The fix line in the file's names; the local quantities it cannot know, said in words.
    assert wrong_matrix["details"]["matlab"] == "d_s1 = (d_s2 * decoder') .* a1 .* (1 - a1);"
    assert wrong_matrix["details"]["where"] == (
        "d_s1: layer 1's error dJ/ds1; d_s2: the output layer's error dJ/ds2, "
        "(z - x) * z * (1 - z); a1: layer 1's activation, sigmoid(x @ encoder)")
    assert report["names"]["grad W1"] == "gEncoder"
    assert report["model"]["layers"] == [6, 4, 6] and report["model"]["bias"] is False
    assert {t["canonical"] for t in report["tensors"]} == {"W1", "W2"}


def test_the_fixed_file_passes_with_exit_code_0(tmp_path, capsys):
    path = motivating_file(tmp_path, Flaws())
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "encoder -> W1" in out


def test_the_text_report_names_the_users_tensors_and_both_fix_notations(tmp_path, capsys):
    assert main(["compare", str(motivating_file(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "encoder (W1)" in out and "[wrong_backprop_matrix]" in out
    assert "fix (numpy):" in out and "fix (MATLAB):" in out


def test_matlab_column_convention_with_biases_and_tanh(tmp_path, capsys):
    model, params, x = model_case(batch=4, activation="tanh")
    _, grads = model.loss_and_grad(params, x)
    variables = {"x": x.T}
    for name in params:
        column = params[name].T if name[0] == "W" else params[name][:, None]
        variables[name], variables[f"d{name}"] = column, grads[name].T if name[0] == "W" else grads[name][:, None]
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, variables)
    code, report = run_json(capsys, str(path), "--activation", "tanh")
    assert code == 0 and report["passed"] is True
    assert report["layout"]["examples"] == "columns" and report["layout"]["weights"] == "out_in"


def test_fix_lines_follow_the_users_columns_and_out_in_weights(tmp_path, capsys):
    """The motivating user's two mistakes, saved as a MATLAB user holds the arrays (examples
    as columns, weights (n_out, n_in)): the fix lines are written for those arrays."""
    model, params, x = model_case(bias=False, batch=3)
    grads = flawed_backprop(model, params, x, Flaws(back_weight="mirror", transposed_outer=True))
    path = tmp_path / "f.mat"
    # the user's encoder is (n1, n0) = W1.T, and the transposed outer product's gradient of
    # the decoder is the transpose of the user's decoder gradient too
    scipy.io.savemat(path, {
        "encoder": params["W1"].T, "decoder": params["W2"].T, "x": x.T,
        "gEncoder": grads["W1"].T, "gDecoder": grads["W2"].T,
    })
    code, report = run_json(capsys, str(path), "--no-bias")
    assert code == 1
    assert report["layout"] == {**report["layout"], "examples": "columns", "weights": "out_in"}
    fixes = {(f["kind"], f["tensor"]): f["details"] for f in report["findings"]}
    back = fixes["wrong_backprop_matrix", "encoder"]
    assert back["matlab"] == "d_s1 = (decoder' * d_s2) .* a1 .* (1 - a1);"
    assert "sigmoid(encoder @ x)" in back["where"]
    assert [f["message"] for f in report["findings"]
            if f["kind"] == "wrong_backprop_matrix"][0].count(
        "(seed network: `encoder @ d_s2` instead of `decoder.T @ d_s2`;") == 1
    assert fixes["transposed", "decoder"]["matlab"] == "gDecoder = d_s2 * a1';"
    # shapes and positions are the user's too: encoder 4x6, gDecoder 4x6 for decoder 6x4
    tensors = {t["name"]: t for t in report["tensors"]}
    assert (tensors["encoder"]["shape"], tensors["decoder"]["shape"]) == ([4, 6], [6, 4])
    assert tensors["decoder"]["gradient_shape"] == [4, 6]
    assert "decoder's 6x4" in tensors["decoder"]["reason"]
    assert fixes["transposed", "decoder"]["gradient_shape"] == [4, 6]
    assert any(f["message"].startswith("gDecoder has shape 4x6, the transpose of decoder's 6x4")
               for f in report["findings"])
    # worst_index on the encoder (4x6), worst_at on the gEncoder saved, its transpose
    i, j = tensors["encoder"]["worst_index"]
    assert tensors["encoder"]["gradient_shape"] == [6, 4]
    assert tensors["encoder"]["worst_at"] == f"gEncoder({j + 1}, {i + 1})"


def test_model_flags_decide_what_the_gradient_is_checked_against(tmp_path, capsys):
    model, params, x = model_case(batch=3, loss="cross_entropy")
    _, grads = model.loss_and_grad(params, x)
    path = tmp_path / "f.npz"
    np.savez(path, x=x, **params, **{f"grad_{k}": v for k, v in grads.items()})
    assert main(["compare", str(path), "--loss", "cross_entropy"]) == 0
    assert main(["compare", str(path)]) == 1  # checked against the squared error


def test_map_names_unusual_variables(tmp_path, capsys):
    model, params, x = model_case(bias=False)
    _, grads = model.loss_and_grad(params, x)
    path = tmp_path / "f.npz"
    np.savez(path, imgs=x, enc=params["W1"], dec=params["W2"], gEnc=grads["W1"], delta2=grads["W2"])
    code, report = run_json(capsys, str(path), "--map", "imgs=x,enc=W1,dec=W2,gEnc=W1,delta2=dW2")
    assert code == 0 and report["names"]["grad W2"] == "delta2"


def test_a_flag_that_disagrees_with_the_file_is_bad_input(tmp_path, capsys):
    assert main(["compare", str(motivating_file(tmp_path)), "--hidden", "3"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "disagree with the file" in message and "--hidden 3" in message


def _write_v73(path):
    path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" ") + HDF5_SIGNATURE + bytes(64))


def _write_pickled(path):
    np.savez(path, W1=np.zeros((2, 2)), meta=np.array([None], dtype=object))


def _write_nan(path):
    model, params, x = model_case(bias=False)
    x[0, 3] = np.nan
    scipy.io.savemat(path, {"encoder": params["W1"], "decoder": params["W2"], "x": x,
                            "gEncoder": params["W1"], "gDecoder": params["W2"]})


def _write_missing(path):
    model, params, x = model_case(bias=False)
    scipy.io.savemat(path, {"encoder": params["W1"], "decoder": params["W2"], "x": x})


def _write_misfit(path):
    scipy.io.savemat(path, {"W1": np.ones((6, 4)), "W2": np.ones((3, 6)), "x": np.ones((1, 6)),
                            "dW1": np.ones((6, 4)), "dW2": np.ones((3, 6))})


BAD_INPUTS = [
    ("missing-file", "absent.mat", None, "does not exist"),
    ("unknown-extension", "f.txt", lambda p: p.write_text("x"), "unsupported file type"),
    ("matlab-v7.3", "f.mat", _write_v73, "-v7"),
    ("pickled-npz", "f.npz", _write_pickled, "pickled object array"),
    ("nan", "f.mat", _write_nan, r"x has a non-finite value (nan) at index [0, 3]"),
    ("missing-variables", "f.mat", _write_missing, "a gradient for encoder"),
    ("misfit-shapes", "f.mat", _write_misfit, "fit no autoencoder"),
]


@pytest.mark.parametrize("name, write, words", [pytest.param(*c[1:], id=c[0]) for c in BAD_INPUTS])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, name, write, words):
    path = tmp_path / name
    if write is not None:
        write(path)
    assert main(["compare", str(path)]) == 2
    captured = capsys.readouterr()
    message = " ".join(captured.err.split())  # rich wraps long lines at the console width
    assert words in message and "Traceback" not in message
    assert captured.out == ""


def test_a_swapped_pair_is_shown_with_both_names_and_listed_in_json(tmp_path, capsys):
    model, params, x = model_case(layers=[6, 6, 6], bias=False)
    right = flawed_backprop(model, params, x, Flaws())
    path = tmp_path / "swapped.mat"
    scipy.io.savemat(path, {
        "encoder": params["W1"], "decoder": params["W2"], "x": x,
        "gEncoder": right["W2"], "gDecoder": right["W1"],
    })
    assert main(["compare", str(path), "--no-bias"]) == 1
    assert "[swapped] encoder (W1) <-> decoder (W2):" in capsys.readouterr().out
    assert main(["compare", str(path), "--no-bias", "--json"]) == 1
    [swap] = json.loads(capsys.readouterr().out)["findings"]
    assert (swap["kind"], swap["tensor"], swap["tensors"]) == ("swapped", "encoder", ["encoder", "decoder"])
    assert (swap["canonical"], swap["canonical_tensors"]) == ("W1", ["W1", "W2"])


def test_a_transposed_gradient_never_reads_ok_in_the_table(tmp_path, capsys):
    # gDecoder is right once transposed back: its row says so by failing as `transposed`.
    code = main(["compare", str(motivating_file(tmp_path, Flaws(transposed_outer=True)))])
    out = capsys.readouterr().out
    assert code == 1
    rows = [line for line in out.splitlines() if "│" in line and "x" in line.split("│")[1]]
    assert len(rows) == 2 and all(row.split("│")[-1].strip() == "transposed" for row in rows)
    assert "decoder (W2) fails: the gradient has shape 6x4, not decoder's 4x6; its values agree" in " ".join(out.split())


@pytest.mark.parametrize("target", ["W9", "dW9"])
def test_a_gradient_mapped_to_a_parameter_the_network_lacks_lists_its_parameters(tmp_path, capsys, target):
    assert main(["compare", str(motivating_file(tmp_path)), "--map", f"gEncoder={target}"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert message == (
        f"error: --map gEncoder={target}: W9 is not a parameter of the network in the file; "
        "its parameters are W1 (encoder), W2 (decoder)"
    )


# ---------------------------------------------------------------- conventions before bug claims


def convention_file(tmp_path, loss=None, scale=1.0, **options):
    """A 6-4-6 file with 10 examples whose gradient is right for the model ``options`` give,
    times ``scale``; ``loss`` names the model whose loss value is saved as J (None: none)."""
    model, params, x = model_case(batch=10, **options)
    grads = model.loss_and_grad(params, x)[1]
    variables = {"x": x, **params, **{f"d{k}": scale * v for k, v in grads.items()}}
    if loss is not None:
        variables["J"] = Autoencoder(**{"layers": [6, 4, 6], **loss}).loss(params, x)
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, variables)
    return path


def test_a_gradient_of_the_mean_loss_is_a_convention_not_ten_scaled_claims(tmp_path, capsys):
    # The quoted case: a correct gradient of a loss averaged over the file's 10 examples
    # used to get "[scaled] ... fix: multiply the gradient of W1 by 10", once per tensor.
    code, report = run_json(capsys, str(convention_file(tmp_path, reduction="mean")))
    assert code == 0 and report["passed"] is True
    [finding] = report["findings"]
    assert finding["kind"] == "convention"
    assert finding["details"]["flags"] == "--reduction mean"
    assert finding["details"]["settled"] is False
    assert "averaged over the file's 10 examples" in finding["message"]
    assert report["model"]["reduction"] == "mean"


def test_the_text_report_never_advises_multiplying_a_right_gradient(tmp_path, capsys):
    assert main(["compare", str(convention_file(tmp_path, reduction="mean"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[convention]" in out and "--reduction mean" in out
    assert "[scaled]" not in out and "multiply the gradient" not in out


def test_a_correct_weight_decay_is_a_convention_with_its_lambda(tmp_path, capsys):
    # The quoted case: a correct weight decay of 0.01 used to get "fix: drop '0.01 * W1'".
    code, report = run_json(capsys, str(convention_file(tmp_path, weight_decay=0.01)))
    assert code == 0
    assert [f["kind"] for f in report["findings"]] == ["convention"]
    assert report["findings"][0]["details"]["flags"] == "--weight-decay 0.01"
    assert report["model"]["weight_decay"] == 0.01


def test_a_mean_loss_with_a_weight_decay_names_both_flags(tmp_path, capsys):
    code, report = run_json(
        capsys, str(convention_file(tmp_path, reduction="mean", weight_decay=0.003))
    )
    assert code == 0
    assert report["findings"][0]["details"]["flags"] == "--reduction mean --weight-decay 0.003"


def test_a_sparsity_term_is_a_convention(tmp_path, capsys):
    code, report = run_json(capsys, str(convention_file(tmp_path, sparsity_weight=0.5)))
    assert code == 0
    assert report["findings"][0]["details"]["flags"] == "--sparsity-weight 0.5"


def test_a_loss_value_of_the_mean_settles_it_as_the_mean(tmp_path, capsys):
    path = convention_file(tmp_path, loss={"reduction": "mean"}, reduction="mean")
    code, report = run_json(capsys, str(path))
    assert code == 0
    [finding] = report["findings"]
    assert finding["kind"] == "convention" and finding["details"]["settled"] is True
    assert "loss value saved in the file is that of the loss averaged" in finding["message"]


def test_a_loss_value_of_the_sum_makes_the_scaled_gradient_a_bug(tmp_path, capsys):
    path = convention_file(tmp_path, loss={"reduction": "sum"}, reduction="mean")
    code, report = run_json(capsys, str(path))
    assert code == 1 and report["passed"] is False
    assert {f["kind"] for f in report["findings"]} == {"scaled"}
    assert "is the declared model's (--reduction sum)" in report["loss_note"]
    assert "1/m for the m = 10 examples" in report["findings"][0]["message"]


def test_a_real_bug_is_not_excused_as_a_convention(tmp_path, capsys):
    code, report = run_json(capsys, str(convention_file(tmp_path, scale=0.5)))
    assert code == 1
    assert {f["kind"] for f in report["findings"]} == {"scaled"}
    assert report["loss_note"] is None


def test_a_loss_variable_that_is_not_one_number_is_a_clear_error(tmp_path, capsys):
    model, params, x = model_case(batch=3)
    grads = model.loss_and_grad(params, x)[1]
    path = tmp_path / "f.mat"
    scipy.io.savemat(path, {"x": x, **params, **{f"d{k}": v for k, v in grads.items()},
                            "cost": np.ones((2, 2))})
    assert main(["compare", str(path)]) == 2
    assert "cost looks like the loss value" in " ".join(capsys.readouterr().err.split())
