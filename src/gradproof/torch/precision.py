"""The ``precision`` note for tensors that are checked as float64 copies of a lower precision."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradproof.report import Finding

# Tensors a note's text lists with their dtypes before "and N more".
_SHOWN = 4


def precision_note(tensors: Mapping[str, torch.Tensor]) -> Finding | None:
    """One note on the checked tensors that are not float64, or None when all are.

    The note concerns those tensors by their own names (the report shows them once, as it
    shows any note on several tensors: ``a, b`` or ``every tensor (...)``), and its text says
    each one's precision: one dtype for all, or each tensor's where they differ.
    """
    low = {name: str(t.dtype).removeprefix("torch.") for name, t in tensors.items()
           if t.dtype != torch.float64}
    if not low:
        return None
    one = len(low) == 1
    if len(set(low.values())) == 1:
        what = next(iter(low.values()))
    else:
        shown = [f"{name} {dtype}" for name, dtype in low.items()]
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN] + [f"{len(shown) - _SHOWN} more"]
        what = ", ".join(shown)
    copies = "a float64 copy, on its" if one else "float64 copies, on their"
    return Finding(
        "precision", tuple(low),
        f"{what}, checked as {copies} own device: the check tests the math of forward and "
        "backward; rounding in the lower precision is neither tested nor able to fail it",
        details={"dtypes": {name: f"torch.{dtype}" for name, dtype in low.items()}},
    )
