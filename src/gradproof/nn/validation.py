"""The checks shared by the networks' options, parameters and inputs.

Each check returns the value normalised (a bool, a float, an array of the network's dtype) or
raises ``InputError`` naming the option, tensor or shape and what it expects. ``Network`` and
``Autoencoder`` read their options through these, so that one option gets one message.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradproof.errors import InputError

# Supported compute dtypes, by name.
DTYPES: tuple[str, ...] = ("float64", "float32")

Params = dict[str, np.ndarray]


def listed(names: Sequence[str]) -> str:
    """``names`` joined by commas, or "none"."""
    return ", ".join(names) if names else "none"


def check_choice(value: Any, registry: Mapping[str, Any], what: str) -> str:
    """``value`` when it is a key of ``registry``."""
    if not isinstance(value, str) or value not in registry:
        raise InputError(f"unknown {what} {value!r}; choose one of: {', '.join(registry)}")
    return value


def is_positive_int(value: Any) -> bool:
    """Whether ``value`` is an integer >= 1 (a bool is not one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_flag(value: Any, what: str) -> bool:
    """``value`` as a bool, when it is one (numpy's included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be True or False; got {value!r}")
    return bool(value)


def real_number(value: Any, what: str) -> float:
    """``value`` as a float, when it is a finite real number (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number; got {value!r}")
    return float(value)


def check_nonnegative(value: Any, what: str) -> float:
    """``value`` as a float >= 0: the weight of a penalty."""
    number = real_number(value, what)
    if number < 0:
        raise InputError(f"{what} must be >= 0 (it weighs a penalty); got {value!r}")
    return number


def check_open_unit(value: Any, what: str) -> float:
    """``value`` as a float in (0, 1): a target mean activation."""
    number = real_number(value, what)
    if not 0 < number < 1:
        raise InputError(
            f"{what} must lie strictly between 0 and 1 (a target mean activation); got {value!r}"
        )
    return number


def check_dtype(dtype: Any) -> np.dtype:
    """``dtype`` resolved, when it names one of ``DTYPES``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if dtype is None or resolved is None or resolved.name not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return resolved


def real_array(value: Any, what: str, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``dtype``, without a copy when it already is one."""
    try:
        arr = np.asarray(value)
    except ValueError as err:
        raise InputError(f"{what} is not a rectangular numeric array: {err}") from err
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} has dtype {arr.dtype}; expected real numbers ({dtype.name})")
    return arr.astype(dtype, copy=False)


def all_finite(arr: np.ndarray) -> bool:
    """Whether every entry of a float array is finite (neither NaN nor +-Inf).

    The array's max and min instead of a boolean mask of the whole array: NaN anywhere makes
    both NaN, +Inf shows in the max and -Inf in the min. Both are single-threaded SIMD
    reductions; a BLAS dot product is faster on an idle machine but runs threaded, and on
    loaded cores it stalled for milliseconds per call inside a gradient check's loss loop.
    """
    if arr.size == 0:
        return True
    return bool(np.isfinite(arr.max()) and np.isfinite(arr.min()))


def checked_params(
    params: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtype: Any,
    described: str,
    check_finite: bool = True,
) -> Params:
    """``params`` as arrays of ``dtype``, exactly the names and shapes of ``shapes``.

    ``described`` names the network in the messages ("this model (layers [...], ...)").

    Raises
    ------
    InputError
        Not a dict; missing or extra names (listed); a non-numeric array, a wrong shape or
        (with ``check_finite``) a NaN or Inf, naming the parameter.
    """
    if not isinstance(params, Mapping):
        raise InputError(
            f"params must be a dict of named arrays ({', '.join(shapes)}); "
            f"got {type(params).__name__}"
        )
    missing = [name for name in shapes if name not in params]
    extra = [str(name) for name in params if name not in shapes]
    if missing or extra:
        raise InputError(
            f"params do not fit {described}: missing {listed(missing)}; extra "
            f"{listed(extra)}; expected exactly {listed(list(shapes))}"
        )
    checked: Params = {}
    for name, shape in shapes.items():
        arr = real_array(params[name], f"parameter {name}", np.dtype(dtype))
        if arr.shape != shape:
            raise InputError(f"parameter {name} has shape {arr.shape}; expected {shape}")
        if check_finite and not all_finite(arr):
            raise InputError(f"parameter {name} has non-finite values (NaN or Inf)")
        checked[name] = arr
    return checked
