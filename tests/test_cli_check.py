"""Specs for ``gradproof check``, through gradproof.cli.main (and ``run`` for the terminal).

The data is the bundled MNIST sample. Small hidden layers (4 or 8 units) keep the
finite-difference modes fast; the seed network 784-200-784 is checked once, in the default
exact mode on one image (about a quarter of a second).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from gradproof.check import MODES as CHECK_GRADIENT_MODES
from gradproof.cli import build_parser, main
from gradproof.cli.check import MODE_TEXT
from gradproof.nn.autoencoder import Autoencoder
from gradproof.report import NOTE_KINDS


@pytest.fixture(autouse=True)
def _bundled_sample(monkeypatch):
    # The bundled sample, whatever the environment of the machine says.
    monkeypatch.delenv("GRADPROOF_MNIST_DIR", raising=False)


def run_json(capsys, *argv):
    code = main(["check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def error_words(capsys):
    """The error message on stderr, unwrapped (rich wraps at the console width)."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error:")
    assert captured.out == ""
    return " ".join(captured.err.split())


def bugs(report):
    return [(f["kind"], f["tensor"]) for f in report["findings"] if f["kind"] not in NOTE_KINDS]


def test_the_default_checks_every_entry_of_the_seed_network_on_one_image(capsys):
    assert main(["check"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "784-200-784, sigmoid -> sigmoid, squared loss (sum), biases, float64" in out
    assert "fresh weights (seed 0)" in out
    assert "the first training image" in out
    assert "mode: exact" in out
    for row in ("W1 │ 784x200 │ 156,800/156,800", "b1 │ 200 │ 200/200",
                "W2 │ 200x784 │ 156,800/156,800", "b2 │ 784 │ 784/784"):
        assert row in out
    assert "PASSED (314,584 of 314,584 entries checked one by one" in out
    assert "checking (" not in out  # no progress bar: this is not a terminal


def test_json_prints_only_the_report_in_the_design_shape(capsys):
    code, report = run_json(capsys, "--hidden", "8", "--batch", "2")
    assert code == 0
    assert report["passed"] is True
    assert report["mode"] == "exact"
    assert [(t["name"], t["shape"]) for t in report["tensors"]] == [
        ("W1", [784, 8]), ("b1", [8]), ("W2", [8, 784]), ("b2", [784]),
    ]
    for tensor in report["tensors"]:
        assert set(tensor) >= {"name", "shape", "checked", "max_abs_error", "max_rel_error",
                               "passed"}
        assert tensor["checked"] == int(np.prod(tensor["shape"]))
        assert tensor["passed"] is True
        assert 0 <= tensor["max_abs_error"] < 1e-6
    assert report["findings"] == []
    assert report["model"]["layers"] == [784, 8, 784]
    assert report["data"]["images"] == 2


def test_a_finding_in_json_has_kind_tensor_and_message(capsys):
    code, report = run_json(capsys, "--hidden", "8", "--dtype", "float32")
    assert code == 0
    assert report["findings"], "a float32 model gets precision notes"
    for finding in report["findings"]:
        assert set(finding) >= {"kind", "tensor", "message"}
        assert finding["kind"] == "precision"


def test_every_mode_of_check_gradient_is_offered_beside_exact():
    assert set(MODE_TEXT) == {"exact", *CHECK_GRADIENT_MODES}


# Mode -> (flags, what each tensor's result must show: entries checked one by one, probes).
MODES = {
    "exact": ([], lambda size: (size, 0)),
    "full": ([], lambda size: (size, 0)),
    "sample": (["--samples", "5"], lambda size: (min(5, size), 0)),
    "directional": (["--directions", "3"], lambda size: (0, 3)),
    "taylor": (["--directions", "2"], lambda size: (0, 2)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_passes_and_checks_what_it_says(capsys, mode):
    flags, expected = MODES[mode]
    code, report = run_json(capsys, "--hidden", "4", "--mode", mode, *flags)
    assert code == 0, report
    assert report["mode"] == mode
    for tensor in report["tensors"]:
        size = int(np.prod(tensor["shape"]))
        assert (tensor["checked"], tensor["probes"]) == expected(size), tensor["name"]
    if mode == "taylor":
        assert all(abs(t["taylor_order"] - 2) < 0.3 for t in report["tensors"])


def test_auto_mode_probes_every_row_and_column_of_the_matrices(capsys):
    code, report = run_json(capsys, "--hidden", "8", "--mode", "auto", "--samples", "10")
    assert code == 0
    w1 = report["tensors"][0]
    assert w1["checked"] == 10
    assert w1["probes"] >= 784 + 8  # every row and every column, plus random directions
    assert report["tensors"][1]["checked"] == 8  # a bias vector: every entry


@pytest.mark.parametrize(
    "flags",
    [
        ["--hidden", "8", "--tied"],
        ["--hidden", "8", "--loss", "cross_entropy"],
        ["--hidden", "8", "--activation", "relu", "--batch", "5"],
        ["--hidden", "8", "--activation", "relu", "--mode", "auto"],
        ["--hidden", "8", "--no-bias", "--weight-decay", "0.01", "--sparsity-weight", "0.1"],
        ["--layers", "784,12,6,12,784", "--activation", "tanh", "--batch", "3"],
        ["--hidden", "8", "--output-activation", "identity", "--reduction", "mean"],
        ["--hidden", "8", "--dtype", "float32", "--mode", "auto"],
    ],
    ids=["tied", "cross-entropy", "relu", "relu-auto", "penalties", "deep-tanh",
         "identity-mean", "float32-auto"],
)
def test_model_options_pass_with_at_most_notes(capsys, flags):
    # A ReLU network may get `kink` notes and a float32 one `precision` notes: never a bug.
    code, report = run_json(capsys, *flags)
    assert code == 0, report
    assert report["passed"] is True
    assert bugs(report) == []
    assert all(t["checked"] + t["probes"] > 0 for t in report["tensors"])


def test_a_wrong_backprop_fails_with_exit_code_1_and_a_diagnosis(monkeypatch, capsys):
    backprop = Autoencoder.loss_and_grad

    def doubled_decoder(self, params, x, *args, **kwargs):
        loss, grads = backprop(self, params, x, *args, **kwargs)
        return loss, {**grads, "W2": 2 * grads["W2"]}

    monkeypatch.setattr(Autoencoder, "loss_and_grad", doubled_decoder)
    assert main(["check", "--hidden", "8"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "W2 │ 8x784 │ 6,272/6,272" in out and "FAIL" in out
    assert "verdict: FAILED" in out
    assert "[scaled] W2" in out


# --- checkpoints ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of `gradproof train --limit 100 --epochs 1 --hidden 16` (float32)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--limit", "100", "--epochs", "1", "--hidden", "16", "--out",
                 str(out), "--no-plots", "--json"]) == 0
    return out / "checkpoint.npz"


@pytest.mark.parametrize("mode", ["exact", "sample"])
def test_a_trained_checkpoint_passes(checkpoint, capsys, mode):
    # A float32 checkpoint: the black-box modes take their differences from a float64 twin.
    code, report = run_json(capsys, "--checkpoint", str(checkpoint), "--mode", mode)
    assert code == 0, report
    assert report["model"]["layers"] == [784, 16, 784]
    assert report["model"]["dtype"] == "float32"
    assert str(checkpoint) in report["params"] and "after 1 epoch)" in report["params"]
    assert {f["kind"] for f in report["findings"]} == {"precision"}


def test_the_checkpoints_model_is_described(checkpoint, capsys):
    assert main(["check", "--checkpoint", str(checkpoint), "--hidden", "16"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "784-16-784" in out and "float32" in out
    assert f"checkpoint {checkpoint}" in out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--hidden", "32"], ["--hidden 32", "layers [784, 16, 784]"]),
        (["--activation", "relu"], ["--activation relu", "activation ['sigmoid']"]),
        (["--dtype", "float64"], ["--dtype float64", "float32"]),
        (["--tied"], ["--tied", "tied False"]),
    ],
    ids=["hidden", "activation", "dtype", "tied"],
)
def test_model_flags_that_disagree_with_the_checkpoint_exit_2(checkpoint, capsys, flags, words):
    assert main(["check", "--checkpoint", str(checkpoint), *flags]) == 2
    message = error_words(capsys)
    assert "--checkpoint" in message and "disagrees" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["does not exist"]),
        (b"hello", ["not a .npz archive"]),
        ("npz", ["not a gradproof checkpoint"]),
    ],
    ids=["missing", "text", "other-npz"],
)
def test_a_bad_checkpoint_file_exits_2_naming_it(tmp_path, capsys, content, words):
    path = tmp_path / "bad.npz"
    if content == "npz":
        np.savez(path, W1=np.zeros((784, 16)))
    elif content is not None:
        path.write_bytes(content)
    assert main(["check", "--checkpoint", str(path)]) == 2
    message = error_words(capsys)
    assert "--checkpoint" in message and str(path) in message
    for word in words:
        assert word in message


# --- bad usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--samples", "0"], ["--samples", ">= 1"]),
        (["--samples", "many"], ["--samples", "integer"]),
        (["--directions", "0"], ["--directions", ">= 1"]),
        (["--mode", "exhaustive"], ["--mode", "exact", "auto", "full", "sample", "taylor"]),
        (["--batch", "0"], ["--batch", ">= 1"]),
        (["--batch", "5001"], ["--batch 5001", "only 5000 training images"]),
        (["--seed", "-1"], ["--seed", ">= 0"]),
        (["--rtol", "-1"], ["--rtol", ">= 0"]),
        (["--samples", "5"], ["--samples", "--mode exact", "sample / auto"]),
        (["--mode", "full", "--directions", "3"], ["--directions", "--mode full"]),
        (["--mode", "taylor", "--atol", "1e-6"], ["--atol", "--mode taylor"]),
        (["--hidden", "0"], ["--hidden", ">= 1"]),
        (["--layers", "100,50,100"], ["100 inputs", "784 pixels", "--layers"]),
        (["--tied", "--layers", "784,100,50,784"], ["tied", "symmetric"]),
        (["--loss", "cross_entropy", "--output-activation", "tanh"], ["cross_entropy", "sigmoid"]),
        (["--data-dir", "no/such/dir"], ["no/such/dir", "does not exist"]),
    ],
    ids=["samples-0", "samples-word", "directions-0", "unknown-mode", "batch-0",
         "batch-too-large", "negative-seed", "negative-rtol", "samples-in-exact",
         "directions-in-full", "atol-in-taylor", "hidden-0", "not-784-inputs",
         "tied-asymmetric", "cross-entropy-tanh", "missing-data-dir"],
)
def test_bad_usage_gives_a_one_line_error_and_exit_2(capsys, flags, words):
    assert main(["check", *flags]) == 2
    message = error_words(capsys)
    for word in words:
        assert word in message


# --- the terminal ------------------------------------------------------------------------


def run_on_terminal(*argv):
    """Run the command on a console that says it is a terminal; return (code, output)."""
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    args = build_parser().parse_args(["check", *argv])
    return args.run(args, console), stream.getvalue()


def test_a_terminal_gets_a_progress_bar(capsys):
    code, out = run_on_terminal("--hidden", "8", "--mode", "sample")
    assert code == 0
    assert "checking (sample)" in out and "loss evaluations" in out
    code, out = run_on_terminal("--hidden", "8")
    assert "checking (exact)" in out and "perturbed points" in out


def test_json_on_a_terminal_prints_json_alone(capsys):
    code, out = run_on_terminal("--hidden", "8", "--json")
    assert code == 0
    assert json.loads(out)["passed"] is True  # no bar, no table: it parses as printed


def test_the_data_line_says_a_verified_full_mnist_in_the_cache_was_used(tmp_path, capsys, monkeypatch):
    import shutil

    from gradproof.data import mnist, uncompressed_sha256

    # The bundled files stand in for the full set: the cache holds them under its checksums.
    cache = tmp_path / "cache"
    shutil.copytree(mnist.SAMPLE_DIR, cache, ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setattr(mnist, "SHA256", {
        name: uncompressed_sha256(cache / f"{name}.gz") for name in mnist.SHA256
    })
    code, report = run_json(capsys, "--hidden", "4", "--cache-dir", str(cache))
    assert code == 0
    assert report["data"]["source"] == f"the full MNIST in the cache {cache} (verified by SHA-256)"
