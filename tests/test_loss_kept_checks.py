"""Spec for ``Autoencoder.loss``'s kept checks of its parameters (``_loss_params``).

A black-box gradient check calls ``loss`` thousands of times with the same dict of the same
arrays, only their values changed; the checks of names, shapes and dtypes are then kept from
the last call. These tests hold the kept checks to what a fresh check would say: every change
that a fresh check would refuse is refused, with the same message, and every change of values
is seen.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.errors import InputError
from gradproof.nn import Autoencoder


@pytest.fixture
def model():
    return Autoencoder(layers=[6, 3, 6])


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(0, 1, (2, 6))


def fresh_loss(model, params, x):
    """The loss of a copy of ``params`` (another dict, other arrays: nothing kept applies)."""
    return model.loss({name: np.array(value) for name, value in params.items()}, x)


# float32 arrays for a float64 model are converted on every call: a kept copy would miss
# the change.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["as-given", "converted"])
def test_values_changed_in_place_are_seen(model, x, dtype):
    params = {name: value.astype(dtype) for name, value in model.init_params(seed=0).items()}
    before = model.loss(params, x)
    params["W2"][1, 2] += 0.5
    params["b1"][0] -= 0.25
    after = model.loss(params, x)
    assert after != before
    assert after == fresh_loss(model, params, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_non_finite_value_written_in_place_is_refused_by_name(model, x, bad):
    params = model.init_params(seed=0)
    model.loss(params, x)
    params["W1"][2, 1] = bad
    with pytest.raises(InputError, match="parameter W1 has non-finite values"):
        model.loss(params, x)


def reshape_in_place(params):
    params["W2"].shape = (6, 3)


# A change after a first call -> what a fresh check says of it.
REFUSED_CHANGES = {
    "replaced-by-another-shape": (
        lambda params: params.update(W2=np.zeros((6, 3))),
        r"parameter W2 has shape \(6, 3\); expected \(3, 6\)",
    ),
    "reshaped-in-place": (reshape_in_place, r"parameter W2 has shape \(6, 3\)"),
    "name-added": (lambda params: params.update(W3=np.zeros((6, 6))), "extra W3"),
    "name-removed": (lambda params: params.pop("b2"), "missing b2"),
}


@pytest.mark.parametrize("change", list(REFUSED_CHANGES))
def test_a_change_of_names_or_shapes_is_refused(model, x, change):
    params = model.init_params(seed=0)
    model.loss(params, x)
    apply, message = REFUSED_CHANGES[change]
    apply(params)
    with pytest.raises(InputError, match=message):
        model.loss(params, x)


def test_another_dict_of_the_same_arrays_is_checked_afresh(model, x):
    params = model.init_params(seed=0)
    model.loss(params, x)
    other = dict(params, b1=np.zeros(4))
    with pytest.raises(InputError, match=r"parameter b1 has shape \(4,\)"):
        model.loss(other, x)
