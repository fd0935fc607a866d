"""Spec for the thread count that follows the load (``blas.LoadFollower``, ``gradproof.cpu_load``).

Training's "auto" count starts at ``POLICY["train"]`` and is chosen again every window from
the cores other processes left free: this process's own CPU time is not load. The decision is
checked here with made-up CPU samples; the pools are checked to hold the chosen count while
the call runs and the caller's own setting afterwards, also after an error.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import gradproof as gp
from gradproof import blas, cpu_load
from gradproof.cpu_load import Sample, others_busy, threads_for
from gradproof.train import StepDone, train

# The caller's own count: neither of the counts the follower chooses on two cores.
USER_COUNT = 5


def blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture(autouse=True)
def _no_user_variable(monkeypatch):
    monkeypatch.delenv(blas.ENV_VAR, raising=False)


@pytest.fixture
def user_threads():
    with threadpool_limits(USER_COUNT, user_api="blas"):
        assert blas_threads() == {USER_COUNT}
        yield USER_COUNT


class FakeMachine:
    """Made-up samples of a 2-core machine: each window of one second, this process uses
    ``own`` cores and other processes ``others`` (a list: one window each, the last repeated)."""

    def __init__(self, own: float, others: list[float]):
        self.own, self.others = own, others
        self.windows = 0
        self.busy = self.mine = 0.0

    def __call__(self) -> Sample:
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


def test_proc_stat_gives_the_busy_seconds(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice, in hundredths
    stat.write_text("cpu  300 20 80 5000 100 0 10 0 40 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    sample = cpu_load.read_sample(str(stat))
    assert sample.busy == pytest.approx(4.1)  # user, nice, system, softirq; guest is in user
    assert cpu_load.read_sample(str(tmp_path / "missing")).busy is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_load.read_sample(str(stat)).busy is None


# --- the follower on the pools ------------------------------------------------------------


def test_the_count_follows_the_free_cores_and_the_callers_setting_comes_back(user_threads):
    machine = FakeMachine(own=1.0, others=[0.0, 0.0, 1.0, 0.1])
    with blas.limited("train"):
        assert blas_threads() == {blas.POLICY["train"]}
        follower = blas.LoadFollower(blas.POLICY["train"], every=0.0, sample=machine, cpus=2,
                                     most=2)
        seen = []
        for _ in range(4):
            follower.tick()
            seen.append((follower.count, blas_threads()))
    assert seen == [(2, {2}), (2, {2}), (1, {1}), (2, {2})]
    assert blas_threads() == {user_threads}


def test_the_callers_setting_comes_back_after_an_error_with_a_changed_count(user_threads):
    machine = FakeMachine(own=1.0, others=[0.0])
    with pytest.raises(ZeroDivisionError), blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=machine, cpus=2, most=2)
        follower.tick()
        assert blas_threads() == {2}
        raise ZeroDivisionError("planted")
    assert blas_threads() == {user_threads}


def test_a_call_nested_in_another_leaves_the_outer_setting(user_threads):
    with blas.limited("check_model"), blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=FakeMachine(1.0, [0.0]), cpus=2,
                                     most=2)
        follower.tick()
        assert follower.count == 1
        assert blas_threads() == {blas.POLICY["check_model"]}
    assert blas_threads() == {user_threads}


def test_nothing_measured_keeps_the_count(user_threads):
    def no_source() -> Sample:
        return Sample(wall=0.0, busy=None, own=0.0, load=None)

    with blas.limited("train"):
        follower = blas.LoadFollower(1, every=0.0, sample=no_source, cpus=2, most=2)
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


def training_with(monkeypatch, machine, **options):
    """Train a small float32 model with the follower's windows at every step and the CPU
    samples of ``machine``; return the BLAS counts each step saw."""
    monkeypatch.setattr(blas, "FOLLOW_SECONDS", 0.0)
    monkeypatch.setattr(cpu_load, "read_sample", machine)
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(blas, "_usable_cpus", lambda: 2)
    model = gp.Autoencoder(6, 3, dtype="float32")
    x = np.random.default_rng(0).random((16, 6)).astype(np.float32)
    seen = []
    train(model, model.init_params(0), x, epochs=2, batch_size=4,
          callback=lambda event: seen.append(blas_threads()) if isinstance(event, StepDone)
          else None, **options)
    return seen


def test_training_takes_the_second_core_when_the_machine_is_idle(user_threads, monkeypatch):
    seen = training_with(monkeypatch, FakeMachine(own=1.0, others=[0.0]))
    assert seen == [{2}] * 8
    assert blas_threads() == {user_threads}


def test_training_stays_on_one_thread_beside_a_busy_core(user_threads, monkeypatch):
    seen = training_with(monkeypatch, FakeMachine(own=1.0, others=[1.0]))
    assert seen == [{1}] * 8
    assert blas_threads() == {user_threads}


def test_training_with_a_pinned_count_does_not_follow(user_threads, monkeypatch):
    seen = training_with(monkeypatch, FakeMachine(own=1.0, others=[0.0]), blas_threads=1)
    assert seen == [{1}] * 8
    assert blas_threads() == {user_threads}


def test_an_interrupt_after_a_changed_count_restores_the_callers_setting(user_threads,
                                                                          monkeypatch):
    def stop(event):
        if isinstance(event, StepDone) and event.step == 3:
            assert blas_threads() == {2}
            raise KeyboardInterrupt

    monkeypatch.setattr(blas, "FOLLOW_SECONDS", 0.0)
    monkeypatch.setattr(cpu_load, "read_sample", FakeMachine(own=1.0, others=[0.0]))
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(blas, "_usable_cpus", lambda: 2)
    model = gp.Autoencoder(6, 3, dtype="float32")
    x = np.random.default_rng(0).random((16, 6)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt):
        train(model, model.init_params(0), x, epochs=2, batch_size=4, callback=stop)
    assert blas_threads() == {user_threads}
