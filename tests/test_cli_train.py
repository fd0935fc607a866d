"""``gradproof train`` end to end on a few hundred images, and its one-line errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradproof.checkpoint import load_checkpoint
from gradproof.cli import main
from gradproof.cli.train import _number

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Small and fast: 200 images, 16 hidden units.
SMALL = ["train", "--limit", "200", "--hidden", "16"]


@pytest.fixture(autouse=True)
def _bundled_sample(monkeypatch):
    # The bundled sample, whatever the environment of the machine says.
    monkeypatch.delenv("GRADPROOF_MNIST_DIR", raising=False)


def test_train_end_to_end_writes_checkpoint_metrics_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "2", "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed
    assert "test error" in printed
    for name in ("checkpoint.npz", "metrics.json", "filters.png"):
        assert name in printed  # the summary says where everything went
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics["training"]["history"]] == [1, 2]
    assert metrics["test_error"] == metrics["training"]["history"][-1]["test_error"]
    assert metrics["n_train"] == 200
    for name in ("loss.png", "reconstructions.png", "filters.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    model, params, state = load_checkpoint(out / "checkpoint.npz")
    assert model.config()["layers"] == [784, 16, 784]
    assert model.config()["dtype"] == "float32"  # the default for sgd
    assert state.info["limit"] == 200


def test_json_prints_only_the_summary_and_no_plots_skips_the_pngs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "1", "--out", str(out), "--json", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1
    assert summary["test_error"] > 0
    assert summary["plots"] == []
    assert summary["checkpoint"] == str(out / "checkpoint.npz")
    assert not list(out.glob("*.png"))


def test_resume_continues_in_the_checkpoints_directory_exactly(tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # A pinned BLAS thread count, repeated on resume (the checkpoint does not keep it): in
    # float32 the count changes the products' rounding, and by default it follows the load.
    pinned = ["--blas-threads", "1"]
    assert main([*SMALL, *pinned, "--epochs", "2", "--out", str(straight), "--no-plots"]) == 0
    assert main([*SMALL, *pinned, "--epochs", "1", "--out", str(split), "--no-plots"]) == 0
    # No --limit, --hidden or --out: they come from the checkpoint.
    assert main(["train", "--resume", str(split / "checkpoint.npz"), "--epochs", "2", *pinned,
                 "--no-plots", "--json"]) == 0

    _, expected, _ = load_checkpoint(straight / "checkpoint.npz")
    _, resumed, state = load_checkpoint(split / "checkpoint.npz")
    assert state.epoch == 2
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name])
    metrics = json.loads((split / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics["training"]["history"]] == [1, 2]


def test_the_default_output_directory_is_a_timestamped_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*SMALL, "--epochs", "1", "--no-plots", "--json"]) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "checkpoint.npz").is_file()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--lr", "-1"], ["--lr", "> 0"]),
        (["--lr", "abc"], ["--lr", "number"]),
        (["--activation", "softmax"], ["--activation", "sigmoid", "tanh", "relu", "identity"]),
        (["--tied", "--layers", "784,100,50,784"], ["tied", "symmetric"]),
        (["--layers", "784,x,784"], ["--layers", "comma-separated"]),
        (["--layers", "784,100,784", "--hidden", "5"], ["--hidden", "--layers"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
        (["--batch-size", "0"], ["--batch-size", ">= 1"]),
        (["--momentum", "1"], ["--momentum", "[0, 1)"]),
        (["--momentum", "-0.1"], ["--momentum", "[0, 1)"]),
        (["--method", "adam"], ["--method", "gd", "sgd", "lbfgs"]),
        (["--method", "lbfgs", "--dtype", "float32"], ["lbfgs", "float64"]),
        (
            ["--loss", "cross_entropy", "--output-activation", "identity"],
            ["cross_entropy", "sigmoid"],
        ),
        (["--sparsity-target", "1.5"], ["--sparsity-target", "between 0 and 1"]),
        (["--resume", "nowhere.npz"], ["--resume", "nowhere.npz", "does not exist"]),
    ],
    ids=["negative-lr", "lr-not-a-number", "unknown-activation", "tied-asymmetric",
         "bad-layers", "layers-and-hidden", "epochs-0", "batch-0", "momentum-1",
         "negative-momentum", "unknown-method", "lbfgs-float32", "cross-entropy-identity",
         "sparsity-target", "resume-missing"],
)
def test_bad_flags_give_a_one_line_error_and_exit_2(tmp_path, monkeypatch, capsys, flags, words):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--limit", "200", "--epochs", "1", *flags]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("error:")
    message = " ".join(captured.err.split())  # rich may wrap a long line at the console width
    for word in words:
        assert word in message
    assert not (tmp_path / "runs").exists()


def test_resume_from_a_file_that_is_not_a_checkpoint_exits_2(tmp_path, capsys):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    assert main(["train", "--resume", str(bogus)]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "--resume" in message
    assert str(bogus) in message
    assert "not a .npz archive" in message


@pytest.fixture
def small_checkpoint(tmp_path, capsys):
    out = tmp_path / "first"
    assert main([*SMALL, "--epochs", "1", "--out", str(out), "--no-plots", "--json"]) == 0
    capsys.readouterr()
    return out / "checkpoint.npz"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--hidden", "32"], ["--hidden 32", "layers [784, 16, 784]"]),
        (["--activation", "tanh"], ["--activation tanh", "activation ['sigmoid']"]),
        (["--dtype", "float64"], ["--dtype float64", "float32"]),
        (["--no-bias"], ["--no-bias", "bias True"]),
    ],
    ids=["hidden", "activation", "dtype", "no-bias"],
)
def test_resume_with_model_flags_that_disagree_names_them(small_checkpoint, capsys, flags, words):
    assert main(["train", "--resume", str(small_checkpoint), "--epochs", "2", *flags]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "disagrees" in message
    for word in words:
        assert word in message


def test_resume_with_model_flags_that_agree_trains_on(small_checkpoint, capsys):
    flags = ["--hidden", "16", "--activation", "sigmoid", "--dtype", "float32"]
    assert main(["train", "--resume", str(small_checkpoint), "--epochs", "2", "--no-plots",
                 "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


def test_divergence_exits_1_and_names_the_kept_checkpoint(tmp_path, capsys):
    # Identity activations: nothing saturates, so a huge step makes the loss overflow.
    linear = [*SMALL, "--activation", "identity", "--output-activation", "identity", "--no-plots"]
    assert main([*linear, "--epochs", "1", "--lr", "1e-5", "--out", str(tmp_path)]) == 0
    checkpoint = tmp_path / "checkpoint.npz"
    assert main(["train", "--resume", str(checkpoint), "--lr", "1e30", "--epochs", "3"]) == 1
    message = " ".join(capsys.readouterr().err.split())
    assert "diverged" in message
    assert str(checkpoint) in message
    _, params, state = load_checkpoint(checkpoint)
    assert state.epoch == 1
    assert all(np.isfinite(value).all() for value in params.values())


@pytest.mark.slow
def test_the_defaults_train_the_seed_network_well(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--json", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"]["layers"] == [784, 200, 784]
    # The mean image alone scores about 52; the defaults reach about 2.8.
    assert summary["test_error"] < 4.0


def test_an_out_path_that_is_a_file_exits_2(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main([*SMALL, "--epochs", "1", "--out", str(taken)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_errors_print_four_decimals_until_they_would_run_to_many_digits():
    assert _number(2.25670123) == "2.2567"
    assert _number(1.23456e200) == "1.235e+200"


def _interrupted_in_epoch(monkeypatch, epoch):
    """Make the next training raise KeyboardInterrupt (Ctrl-C) at the first step of ``epoch``."""
    import gradproof.cli.train as cli_train
    from gradproof.train import StepDone, train

    def train_until_ctrl_c(*args, callback, **options):
        def callback_then_ctrl_c(event):
            callback(event)
            if isinstance(event, StepDone) and event.epoch == epoch:
                raise KeyboardInterrupt

        return train(*args, callback=callback_then_ctrl_c, **options)

    monkeypatch.setattr(cli_train, "train", train_until_ctrl_c)


def test_ctrl_c_says_which_checkpoint_was_kept_and_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _interrupted_in_epoch(monkeypatch, 2)
    assert main([*SMALL, "--epochs", "3", "--out", str(out), "--no-plots"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    checkpoint = out / "checkpoint.npz"
    command = f"gradproof train --resume {checkpoint} --epochs 3 --no-plots"
    assert err == f"interrupted: the checkpoint of epoch 1 is kept at {checkpoint}; resume with: {command}"
    monkeypatch.undo()
    assert main(command.split()[1:]) == 0  # the command as printed, without the program name
    _, _, state = load_checkpoint(checkpoint)
    assert state.epoch == 3 and [m.epoch for m in state.history] == [1, 2, 3]


def test_ctrl_c_before_any_checkpoint_says_none_was_written(tmp_path, capsys, monkeypatch):
    _interrupted_in_epoch(monkeypatch, 1)
    assert main([*SMALL, "--epochs", "2", "--out", str(tmp_path / "run"), "--no-plots"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert err == "interrupted: no epoch had finished, so no checkpoint was written; run the same command again"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]], ids=["top-level", "train"])
def test_help_states_the_exit_codes(capsys, argv):
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "exit codes: 0 the gradients are right (or training finished), 1 a gradient check failed "
        "(or training diverged), 2 bad usage or input, 130 interrupted (Ctrl-C)"
    ) in text


def test_ctrl_c_right_after_resuming_says_the_resumed_checkpoint_is_as_it_was(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "1", "--out", str(out), "--no-plots"]) == 0
    checkpoint = out / "checkpoint.npz"
    before = checkpoint.read_bytes()
    capsys.readouterr()
    _interrupted_in_epoch(monkeypatch, 2)
    assert main(["train", "--resume", str(checkpoint), "--epochs", "3"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        f"interrupted: no epoch had finished since resuming, so {checkpoint} is as it was; "
        f"resume with: gradproof train --resume {checkpoint} --epochs 3"
    )
    assert checkpoint.read_bytes() == before
