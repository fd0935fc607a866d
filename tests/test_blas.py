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
from gradproof import blas, cpu_load
from gradproof.cli import main
from gradproof.cpu_load import Sample, others_busy, threads_for
from gradproof.train import StepDone, train


def blas_threads() -> set[int]:
    """The thread counts of every loaded BLAS library (one value when they agree)."""
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture(autouse=True)
def _no_user_variable(monkeypatch):
    # The policy's own defaults, whatever the machine running the tests says.
    monkeypatch.delenv(blas.ENV_VAR, raising=False)


def _user_setting(count: int):
    with threadpool_limits(count, user_api="blas"):
        assert blas_threads() == {count}
        yield count


@pytest.fixture
def user_threads():
    """The caller's own setting during a test: one more than any policy, so that a call
    that leaves it in place cannot pass for one that applied the policy."""
    yield from _user_setting(max(blas.POLICY.values()) + 1)


@pytest.fixture
def user_threads_apart():
    """As ``user_threads``, and more than the two threads that the load follower chooses on
    the made-up two-core machine of these tests."""
    yield from _user_setting(max(blas.POLICY.values()) + 2)


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


# --- the count that follows the load (training's "auto") ----------------------------------
#
# Training's count starts at POLICY["train"] and is chosen again every window from the cores
# other processes left free (gradproof.cpu_load): this process's own CPU time is not load.
# The decision is checked with made-up CPU samples; the pools must hold the chosen count
# while the call runs and the caller's own setting afterwards, also after an error.


class FakeMachine:
    """Made-up samples of a 2-core machine: each window of one second, this process uses
    ``own`` cores and other processes ``others`` (a list: one window each, the last repeated)."""

    def __init__(self, own: float, others: list[float]):
        self.own, self.others = own, others
        self.windows = 0
        self.busy = self.mine = 0.0

    def __call__(self, stat_path: str | None = None, cpus: frozenset[int] | None = None
                 ) -> Sample:
        sample = Sample(wall=float(self.windows), busy=self.busy, own=self.mine, load=None)
        others = self.others[min(self.windows, len(self.others) - 1)]
        self.busy += self.own + others
        self.mine += self.own
        self.windows += 1
        return sample


# --- the decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "own, machine_busy, expected",
    [(1.0, 1.05, 0.05), (2.0, 2.0, 0.0), (1.0, 2.0, 1.0), (0.7, 2.0, 1.3)],
    ids=["idle-one-thread", "idle-two-threads", "one-busy-core", "starved-by-one-busy-core"],
)
def test_others_busy_leaves_out_this_process_own_time(own, machine_busy, expected):
    before = Sample(wall=10.0, busy=100.0, own=5.0, load=None)
    after = Sample(wall=10.5, busy=100.0 + machine_busy / 2, own=5.0 + own / 2, load=None)
    assert others_busy(before, after) == pytest.approx(expected)


def test_without_proc_stat_the_load_average_stands_in_less_the_process_own_share():
    before = Sample(wall=0.0, busy=None, own=0.0, load=None)
    after = Sample(wall=2.0, busy=None, own=2.0, load=2.1)  # this process: one core
    assert others_busy(before, after) == pytest.approx(1.1)
    assert others_busy(before, Sample(2.0, None, 2.0, None)) is None  # nothing to go by
    assert others_busy(after, after) is None  # no time passed


@pytest.mark.parametrize(
    "free, most, expected",
    [(2.0, 2, 2), (1.6, 2, 2), (1.4, 2, 1), (1.0, 2, 1), (0.1, 2, 1), (7.9, 4, 4), (2.6, 8, 3)],
)
def test_a_core_counts_when_at_least_half_of_it_is_free(free, most, expected):
    assert threads_for(free, most) == expected


def test_proc_stat_gives_the_busy_seconds_of_the_cpus_asked_for(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice, in hundredths
    stat.write_text(
        "cpu  300 20 80 5000 100 0 10 0 40 0\n"
        "cpu0 100 0 50 2500 50 0 0 0 40 0\n"
        "cpu1 200 20 30 2500 50 0 10 0 0 0\n"
        "intr 1 2 3\n"
    )
    # user, nice, system, irq, softirq, steal; guest is in user, idle and iowait are idle
    assert cpu_load.read_sample(str(stat)).busy == pytest.approx(4.1)
    assert cpu_load.read_sample(str(stat), frozenset({0})).busy == pytest.approx(1.5)
    assert cpu_load.read_sample(str(stat), frozenset({0, 1})).busy == pytest.approx(4.1)
    assert cpu_load.read_sample(str(stat), frozenset({7})).busy is None
    assert cpu_load.read_sample(str(tmp_path / "missing")).busy is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_load.read_sample(str(stat)).busy is None


# --- the follower on the pools ------------------------------------------------------------


def test_the_count_follows_the_free_cores_and_the_callers_setting_comes_back(user_threads_apart):
    machine = FakeMachine(own=1.0, others=[0.0, 0.0, 1.0, 0.1])
    with blas.limited("train"):
        assert blas_threads() == {blas.POLICY["train"]}
        follower = blas.LoadFollower(blas.POLICY["train"], every=0.0, sample=machine, cpus=2)
        seen = []
        for _ in range(4):
            follower.tick()
            seen.append((follower.count, blas_threads()))
    assert seen == [(2, {2}), (2, {2}), (1, {1}), (2, {2})]
    assert blas_threads() == {user_threads_apart}


def test_the_callers_setting_comes_back_after_an_error_with_a_changed_count(user_threads_apart):
    machine = FakeMachine(own=1.0, others=[0.0])
    with pytest.raises(ZeroDivisionError), blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=machine, cpus=2)
        follower.tick()
        assert blas_threads() == {2}
        raise ZeroDivisionError("planted")
    assert blas_threads() == {user_threads_apart}


def test_a_call_nested_in_another_leaves_the_outer_setting(user_threads_apart):
    with blas.limited("check_model"), blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=FakeMachine(1.0, [0.0]), cpus=2)
        follower.tick()
        assert follower.count == 1
        assert blas_threads() == {blas.POLICY["check_model"]}
    assert blas_threads() == {user_threads_apart}


def test_nothing_measured_keeps_the_count(user_threads_apart):
    def no_source() -> Sample:
        return Sample(wall=0.0, busy=None, own=0.0, load=None)

    with blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=no_source, cpus=2)
        follower.tick()
        assert follower.count == 1
        assert blas_threads() == {1}


@pytest.mark.parametrize("setting", [1, 2, "off"])
def test_a_number_or_off_pins_the_count(monkeypatch, setting):
    assert blas.follower("train", setting) is None
    monkeypatch.setenv(blas.ENV_VAR, str(setting))
    assert blas.follower("train") is None


def test_only_training_follows_the_load():
    assert isinstance(blas.follower("train"), blas.LoadFollower)
    assert isinstance(blas.follower("train", "auto"), blas.LoadFollower)
    assert blas.follower("check_gradient") is None


# --- in training --------------------------------------------------------------------------


def training_with(monkeypatch, machine, seen, stop_at=None, **options):
    """Train a small float32 model with the follower's windows at every step and the CPU
    samples of ``machine``, appending to ``seen`` the BLAS counts each step saw (and
    interrupting after step ``stop_at``, when given)."""
    monkeypatch.setattr(blas, "FOLLOW_SECONDS", 0.0)
    monkeypatch.setattr(cpu_load, "read_sample", machine)
    monkeypatch.setattr(cpu_load, "usable_cpus", lambda: frozenset({0, 1}))
    model = gp.Autoencoder(6, 3, dtype="float32")
    x = np.random.default_rng(0).random((16, 6)).astype(np.float32)

    def record(event):
        if isinstance(event, StepDone):
            seen.append(blas_threads())
            if event.step == stop_at:
                raise KeyboardInterrupt

    train(model, model.init_params(0), x, epochs=2, batch_size=4, callback=record, **options)


def test_training_takes_the_second_core_when_the_machine_is_idle(user_threads_apart, monkeypatch):
    seen = []
    training_with(monkeypatch, FakeMachine(own=1.0, others=[0.0]), seen)
    assert seen == [{2}] * 8
    assert blas_threads() == {user_threads_apart}


def test_training_stays_on_one_thread_beside_a_busy_core(user_threads_apart, monkeypatch):
    seen = []
    training_with(monkeypatch, FakeMachine(own=1.0, others=[1.0]), seen)
    assert seen == [{1}] * 8
    assert blas_threads() == {user_threads_apart}


def test_training_with_a_pinned_count_does_not_follow(user_threads_apart, monkeypatch):
    seen = []
    training_with(monkeypatch, FakeMachine(own=1.0, others=[0.0]), seen, blas_threads=1)
    assert seen == [{1}] * 8
    assert blas_threads() == {user_threads_apart}


def test_an_interrupt_after_a_changed_count_restores_the_callers_setting(user_threads_apart,
                                                                          monkeypatch):
    seen = []
    with pytest.raises(KeyboardInterrupt):
        training_with(monkeypatch, FakeMachine(own=1.0, others=[0.0]), seen, stop_at=3)
    assert seen == [{2}] * 3  # the follower had changed the count
    assert blas_threads() == {user_threads_apart}
