"""The thread policy: each front door runs with its decided BLAS thread count and gives the
caller's setting back afterwards, also after an error or an interrupt; the option and the
environment variable override it, and bad values are refused by name."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import gradproof as gp
from gradproof import blas
from gradproof.cli import main
from gradproof.train import StepDone, train


def blas_threads() -> set[int]:
    """The thread counts of every loaded BLAS library (one value when they agree)."""
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture(autouse=True)
def _no_user_variable(monkeypatch):
    # The policy's own defaults, whatever the machine running the tests says.
    monkeypatch.delenv(blas.ENV_VAR, raising=False)


@pytest.fixture
def user_threads():
    """The caller's own setting during a test: one more than any policy, so that a call
    that leaves it in place cannot pass for one that applied the policy."""
    count = max(blas.POLICY.values()) + 1
    with threadpool_limits(count, user_api="blas"):
        assert blas_threads() == {count}
        yield count


def tiny_problem():
    """A 3-entry quadratic with its gradient: J(p) = sum(p**2) / 2 + sum(p) * (p @ p)."""
    params = np.array([0.3, -1.2, 0.7])

    def loss(p):
        return float(p @ p / 2 + p.sum() * (p @ p))

    def grad(p):
        return p + (p @ p) + 2 * p.sum() * p

    return loss, grad, params


def recording(loss, seen):
    """``loss`` that also records the BLAS thread counts at its first call."""

    def recorded(p):
        if not seen:
            seen.append(blas_threads())
        return loss(p)

    return recorded


# --- inside the call: the decided count; afterwards: the caller's -------------------------


def test_check_gradient_runs_with_the_policy_and_restores_the_callers_setting(user_threads):
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    report = gp.check_gradient(recording(loss, seen), grad, params)
    assert report.passed
    assert seen == [{blas.POLICY["check_gradient"]}]
    assert blas_threads() == {user_threads}


def test_check_model_runs_with_the_policy_and_restores_the_callers_setting(user_threads):
    model = gp.Autoencoder(6, 3)
    params = model.init_params(0)
    x = np.random.default_rng(0).random((2, 6))
    seen = []
    report = gp.check_model(model, params, x, progress=lambda done, total: seen.append(blas_threads()))
    assert report.passed
    assert seen and all(counts == {blas.POLICY["check_model"]} for counts in seen)
    assert blas_threads() == {user_threads}


def test_train_runs_with_the_policy_and_restores_the_callers_setting(user_threads):
    model = gp.Autoencoder(6, 3, dtype="float32")
    x = np.random.default_rng(0).random((8, 6)).astype(np.float32)
    seen = []
    train(model, model.init_params(0), x, epochs=2, batch_size=4,
          callback=lambda event: seen.append(blas_threads()))
    assert seen and all(counts == {blas.POLICY["train"]} for counts in seen)
    assert blas_threads() == {user_threads}


# --- errors and interrupts ----------------------------------------------------------------


def test_the_setting_is_restored_after_an_error_inside_the_check(user_threads):
    _, grad, params = tiny_problem()

    def broken(p):
        raise ZeroDivisionError("planted")

    with pytest.raises(gp.InputError):  # the check reports a raising loss as bad input
        gp.check_gradient(broken, grad, params)
    assert blas_threads() == {user_threads}


def test_the_setting_is_restored_after_an_interrupt_inside_the_check(user_threads):
    loss, grad, params = tiny_problem()
    calls = []

    def interrupted(p):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return loss(p)

    report = gp.check_gradient(interrupted, grad, params)
    assert report.partial  # the check returns what it has
    assert blas_threads() == {user_threads}


def test_the_setting_is_restored_when_an_interrupt_leaves_training(user_threads):
    model = gp.Autoencoder(6, 3, dtype="float32")
    x = np.random.default_rng(0).random((8, 6)).astype(np.float32)

    def stop(event):
        if isinstance(event, StepDone):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model, model.init_params(0), x, epochs=2, batch_size=4, callback=stop)
    assert blas_threads() == {user_threads}


def test_the_torch_adapter_limits_torch_and_blas_and_restores_both(user_threads):
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_function

    count = blas.POLICY["torch"]
    callers = torch.get_num_threads()
    torch.set_num_threads(count + 1)  # so that leaving it in place cannot pass
    try:
        seen = []

        def cube(x):
            seen.append((torch.get_num_threads(), blas_threads()))
            return (x**3).sum()

        x = torch.linspace(-1, 1, 5, dtype=torch.float64, requires_grad=True)
        assert check_function(cube, x).passed
        assert seen and all(counts == (count, {count}) for counts in seen)
        assert torch.get_num_threads() == count + 1
        assert blas_threads() == {user_threads}
    finally:
        torch.set_num_threads(callers)


def test_check_network_runs_with_the_policy_from_the_identification_on(user_threads):
    from user_networks import numpy_softmax_classifier

    user = numpy_softmax_classifier()
    seen: list[set[int]] = []
    report = gp.check_network(recording(user.loss, seen), user.grad, user.params, user.x, user.y)
    assert report.passed, str(report)
    assert seen == [{blas.POLICY["check_gradient"]}]  # its first call: the identification's
    assert blas_threads() == {user_threads}


def test_check_vjp_runs_with_the_policy_from_the_first_forward_on(user_threads):
    seen: list[set[int]] = []
    w = np.random.default_rng(0).standard_normal((3, 2))

    def forward(x):
        if not seen:
            seen.append(blas_threads())
        return x @ w  # (4, 2)

    def backward(d_out, x):
        return d_out @ w.T  # (4, 3), like x

    report = gp.check_vjp(forward, backward, np.ones((4, 3)))
    assert report.passed, str(report)
    assert seen == [{blas.POLICY["check_gradient"]}]
    assert blas_threads() == {user_threads}


# --- overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2, np.int64(2), "2", " 2 "],
                         ids=["int", "numpy", "text", "spaces"])
def test_the_option_sets_the_count(user_threads, value):
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    gp.check_gradient(recording(loss, seen), grad, params, blas_threads=value)
    assert seen == [{2}]
    assert blas_threads() == {user_threads}


def test_the_environment_variable_sets_the_count(user_threads, monkeypatch):
    monkeypatch.setenv(blas.ENV_VAR, "2")
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    gp.check_gradient(recording(loss, seen), grad, params)
    assert seen == [{2}]


def test_the_option_wins_over_the_environment_variable(user_threads, monkeypatch):
    monkeypatch.setenv(blas.ENV_VAR, "off")
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    gp.check_gradient(recording(loss, seen), grad, params, blas_threads="auto")
    assert seen == [{blas.POLICY["check_gradient"]}]


@pytest.mark.parametrize("where", ["option", "variable"])
def test_off_leaves_the_callers_setting_in_place(user_threads, monkeypatch, where):
    options = {"blas_threads": "OFF"} if where == "option" else {}
    if where == "variable":
        monkeypatch.setenv(blas.ENV_VAR, "off")
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    gp.check_gradient(recording(loss, seen), grad, params, **options)
    assert seen == [{user_threads}]


def test_no_environment_variable_is_changed(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # as some machines set it
    before = dict(os.environ)
    loss, grad, params = tiny_problem()
    gp.check_gradient(loss, grad, params, blas_threads=2)
    assert dict(os.environ) == before


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "0", "x", "two", ""],
                         ids=["zero", "negative", "float", "bool", "zero-text", "x", "word",
                              "empty"])
def test_a_bad_option_is_refused_naming_it_and_the_allowed_values(value):
    loss, grad, params = tiny_problem()
    with pytest.raises(gp.InputError, match="blas_threads must be a number of threads >= 1, "
                       "'auto' .* or 'off'"):
        gp.check_gradient(loss, grad, params, blas_threads=value)


def test_a_bad_environment_variable_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv(blas.ENV_VAR, "many")
    model = gp.Autoencoder(6, 3)
    with pytest.raises(gp.InputError, match=f"environment variable {blas.ENV_VAR} must be a "
                       "number of threads >= 1, 'auto'"):
        gp.check_model(model, model.init_params(0), np.ones((1, 6)) / 2)


def test_a_bad_option_is_refused_inside_another_call_too(user_threads):
    loss, grad, params = tiny_problem()
    with blas.limited("check_model"):
        with pytest.raises(gp.InputError, match="blas_threads must be"):
            gp.check_gradient(loss, grad, params, blas_threads="none")
    assert blas_threads() == {user_threads}


@pytest.mark.parametrize("command", ["check", "train"])
def test_the_cli_refuses_a_bad_flag_with_exit_2(command, capsys):
    assert main([command, "--blas-threads", "0"]) == 2
    error = capsys.readouterr().err
    assert "--blas-threads" in error
    assert "expected a number of threads >= 1, 'auto'" in error


def test_the_cli_refuses_a_bad_environment_variable_with_exit_2(monkeypatch, capsys):
    monkeypatch.setenv(blas.ENV_VAR, "-3")
    assert main(["check"]) == 2
    assert f"environment variable {blas.ENV_VAR} must be" in capsys.readouterr().err


def test_the_cli_flag_reaches_the_check(user_threads, monkeypatch, capsys):
    seen = []
    real = blas._POOLS.enter

    def spy(count):
        seen.append(count)
        real(count)

    monkeypatch.setattr(blas._POOLS, "enter", spy)
    assert main(["check", "--blas-threads", "2", "--hidden", "4"]) == 0
    assert seen == [2]
    assert blas_threads() == {user_threads}


# --- nesting and threads ------------------------------------------------------------------


def test_a_nested_call_keeps_the_outer_setting(user_threads):
    loss, grad, params = tiny_problem()
    seen: list[set[int]] = []
    with blas.limited("check_model", 2):
        gp.check_gradient(recording(loss, seen), grad, params, blas_threads=1)
        assert blas_threads() == {2}
    assert seen == [{2}]
    assert blas_threads() == {user_threads}


def test_a_call_from_another_thread_keeps_the_running_calls_setting(user_threads):
    inside, release = threading.Event(), threading.Event()
    seen = []

    def second():
        with blas.limited("train", 2):  # enters while the main thread's call holds the pools
            seen.append(blas_threads())
            inside.set()
            release.wait(10)

    with blas.limited("check_model", 1):
        worker = threading.Thread(target=second)
        worker.start()
        assert inside.wait(10)
        assert blas_threads() == {1}
        release.set()
        worker.join(10)
        assert blas_threads() == {1}  # the other thread's end restored nothing
    assert seen == [{1}]
    assert blas_threads() == {user_threads}  # restored by the call that set it


def test_the_decorator_needs_a_keyword_only_option():
    def front_door(x, blas_threads=None):
        return x

    with pytest.raises(TypeError, match="keyword-only blas_threads"):
        blas.policy("train")(front_door)
