"""The options of the front doors as data: each option's allowed values, checked in one place.

Contract: an option table maps an option's name to an ``Option`` (a predicate and the words
for what it accepts); ``validate(table, values)`` raises ``InputError("{name} must be
{expected}, got {value}")`` for the first option, in table order, whose value it refuses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.errors import InputError


@dataclass(frozen=True)
class Option:
    """One option's allowed values.

    Attributes
    ----------
    allows : callable
        ``allows(value) -> bool``.
    expected : str
        What it accepts, as the error message says it ("an integer >= 1").
    shown : callable
        How a refused value is shown (its repr by default).
    """

    allows: Callable[[Any], bool]
    expected: str
    shown: Callable[[Any], str] = repr

    def or_none(self) -> Option:
        """The same option, also allowing None (the default that means "not given")."""
        return Option(lambda v: v is None or self.allows(v), self.expected, self.shown)


def integer(low: int | None = None, unit: str = "") -> Option:
    """An integer (bool refused), at least ``low`` when given; ``unit`` follows the bound."""
    bound = "" if low is None else f" >= {low}"
    suffix = f" ({unit})" if unit else ""
    return Option(
        lambda v: not isinstance(v, bool)
        and isinstance(v, (int, np.integer))
        and (low is None or v >= low),
        f"an integer{bound}{suffix}",
    )


def number(positive: bool) -> Option:
    """A finite real number, > 0 when ``positive``, else >= 0."""
    return Option(
        lambda v: not isinstance(v, bool)
        and isinstance(v, (int, float, np.integer, np.floating))
        and math.isfinite(v)
        and (v > 0 if positive else v >= 0),
        f"a finite number {'> 0' if positive else '>= 0'}",
    )


def one_of(choices: tuple[str, ...]) -> Option:
    return Option(lambda v: isinstance(v, str) and v in choices, f"one of {list(choices)}")


def instance(kind: type | tuple[type, ...], words: str) -> Option:
    """An instance of ``kind``; a refused value is shown by its type's name."""
    return Option(lambda v: isinstance(v, kind), words, lambda v: type(v).__name__)


FLAG = Option(lambda v: isinstance(v, bool), "True or False")

PROGRESS = Option(
    callable, "a callable progress(done, total)", lambda v: type(v).__name__
).or_none()

# The options both front doors share: the tolerance rule and the progress callback.
RULE_OPTIONS: dict[str, Option] = {
    "rtol": number(positive=False).or_none(),
    "atol": number(positive=False).or_none(),
    "safety": number(positive=True),
}


def validate(table: Mapping[str, Option], values: Mapping[str, Any]) -> None:
    """Refuse the first value, in table order, that its option does not allow.

    Raises
    ------
    InputError
        "{name} must be {expected}, got {value}".
    """
    for name, option in table.items():
        value = values[name]
        if not option.allows(value):
            raise InputError(f"{name} must be {option.expected}, got {option.shown(value)}")
