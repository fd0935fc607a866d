"""Spec for the exact engine's work arrays kept between checks (``engine.exact.arena``).

A check of the same shapes as an earlier one takes that check's per-entry arrays from the
pool instead of fresh memory. That must change nothing a caller sees: a report is the same
whether the pool was empty or full, and a report already returned keeps its values when a
later check reuses the arrays its own check used.
"""

from __future__ import annotations

import threading
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import pytest

import gradproof as gp
from gradproof.check import MIN_CHUNK_BYTES
from gradproof.engine.exact import arena
from gradproof.engine.exact.arena import Arena, counting, pooled_bytes
from gradproof.engine.exact.evaluator import ExactRun
from gradproof.engine.probes import Measured
from gradproof.finite_diff import Rule

CONFIGS = {
    "sigmoid": dict(activation="sigmoid"),
    "relu": dict(activation="relu", output_activation="identity"),  # kinks: slopes measured
    "tied": dict(tied=True, activation="tanh"),
}


def _problem(config: dict, n_visible: int, n_hidden: int, batch: int, seed: int):
    model = gp.Autoencoder(n_visible, n_hidden, **config)
    rng = np.random.default_rng(seed)
    params = model.init_params(seed=seed)
    x = rng.random((batch, n_visible)) * (rng.random((batch, n_visible)) > 0.3)
    _, grads = model.loss_and_grad(params, x)
    return model, params, x, grads


def _wrong(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A scaled decoder gradient and a sign-flipped hidden bias: failures and a diagnosis."""
    wrong = {name: g.copy() for name, g in grads.items()}
    wrong["W2" if "W2" in wrong else "W1"] *= 2.0
    wrong["b1"] *= -1.0
    return wrong


def _without_time(report: gp.GradReport) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("seconds", None)
    return data


def _arrays(value: Any, seen: set[int] | None = None) -> list[np.ndarray]:
    """Every ndarray reachable from a report through dataclass fields, dicts and sequences."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        return [a for f in fields(value) for a in _arrays(getattr(value, f.name), seen)]
    if isinstance(value, dict):
        return [a for item in value.values() for a in _arrays(item, seen)]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in _arrays(item, seen)]
    return []


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("seed", [0, 1])
def test_a_report_is_the_same_with_the_pool_empty_or_full(config, seed, monkeypatch):
    shape_rng = np.random.default_rng(seed)
    n_visible, n_hidden, batch = (int(v) for v in shape_rng.integers([5, 2, 1], [12, 7, 5]))
    model, params, x, grads = _problem(config, n_visible, n_hidden, batch, seed)
    wrong = _wrong(grads)
    monkeypatch.setattr(arena, "_POOL", arena._Pool())  # a cold pool for the first run
    cold = gp.check_model(model, params, x, grad=wrong)
    assert pooled_bytes() > 0, "a closed check gives its arrays back"
    warm = gp.check_model(model, params, x, grad=wrong)
    assert _without_time(warm) == _without_time(cold)
    assert not cold.passed
    assert gp.check_model(model, params, x).passed


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_a_returned_report_keeps_its_values_when_a_later_check_reuses_the_arrays(config):
    model, params, x, grads = _problem(config, 9, 4, 3, seed=5)
    first = gp.check_model(model, params, x, grad=_wrong(grads))
    before = _without_time(first)
    pooled = [a for stack in arena._POOL.free.values() for a in stack]
    held = [a for a in _arrays(first) if a.size]
    assert not any(np.shares_memory(a, p) for a in held for p in pooled)
    other = model.init_params(seed=11)
    gp.check_model(model, other, x[::-1], grad=grads)  # same shapes, other values
    assert _without_time(first) == before


def test_an_array_given_back_is_lent_again_for_the_same_shape_and_dtype():
    one = Arena()
    a = one.empty((3, 1000))
    b = one.empty(1000, np.int8)
    one.close()
    two = Arena()
    assert two.empty((3, 1000)) is a
    assert two.empty(1000, np.int8) is b
    assert two.empty(1000, np.int16) is not b  # another dtype: another array
    two.close()


def test_arrays_lent_at_once_are_distinct():
    one, two = Arena(), Arena()
    shape = (4, 257)
    seen = []

    def borrow(lender: Arena) -> None:
        for _ in range(50):
            seen.append(lender.empty(shape))

    threads = [threading.Thread(target=borrow, args=(lender,)) for lender in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(a) for a in seen}) == 100
    one.close()
    two.close()


def test_the_pool_keeps_at_most_its_bound(monkeypatch):
    monkeypatch.setattr(arena, "POOL_BYTES", 10_000)
    monkeypatch.setattr(arena, "_POOL", arena._Pool())
    lender = Arena()
    kept = [lender.empty(500) for _ in range(4)]  # 4 x 4,000 bytes
    lender.empty(5000)  # 40,000 bytes: never kept
    lender.close()
    assert pooled_bytes() == 8_000
    again = Arena()
    reused = {id(again.empty(500)) for _ in range(4)}
    # The first given back went first: the two kept are the last two.
    assert reused & {id(a) for a in kept} == {id(a) for a in kept[2:]}
    again.close()


def test_counting_is_a_read_only_arange():
    values = counting(17)
    np.testing.assert_array_equal(values, np.arange(17))
    assert not values.flags.writeable
    np.testing.assert_array_equal(counting(40)[3:], np.arange(3, 40))


def _interrupted(model, params, x, grad, stop_after: int):
    """An exact run stopped by a KeyboardInterrupt at its ``stop_after``-th piece: its report
    and every per-entry value it holds."""
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == stop_after:
            raise KeyboardInterrupt

    with ExactRun(model, Rule(10.0, None, None), MIN_CHUNK_BYTES, True, progress) as run:
        run.setup(params, x, grad)
        run.measure()
        report = run.report()
        values = {
            name: np.stack([m.analytic, m.numeric, m.estimate, m.tolerance, m.step, m.floor])
            for name, (m,) in run.measured.items()
        }
    return report, values


@pytest.mark.parametrize("stop_after", [1, 2, 5])
def test_an_interrupted_check_holds_nan_where_no_step_wrote(stop_after, monkeypatch):
    # Enough entries for several chunks of MIN_CHUNK_BYTES per tensor.
    model, params, x, grads = _problem(CONFIGS["sigmoid"], 60, 40, 3, seed=3)
    wrong = _wrong(grads)
    # The pool then lends arrays that hold another check's values.
    gp.check_model(model, model.init_params(seed=9), x, grad=grads)
    report, values = _interrupted(model, params, x, wrong, stop_after)
    unfilled = Measured.empty.__func__
    monkeypatch.setattr(Measured, "empty", classmethod(
        lambda cls, *args, **options: unfilled(cls, *args, **{**options, "filled": True})
    ))
    reference, filled = _interrupted(model, params, x, wrong, stop_after)
    assert report.partial
    assert _without_time(report) == _without_time(reference)
    for name, array in filled.items():
        assert np.isnan(array[0]).any(), "the interrupt left entries unmeasured"
        np.testing.assert_array_equal(values[name], array, err_msg=name)
