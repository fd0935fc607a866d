"""The ``precision`` note for tensors that are checked as float64 copies of a lower precision."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradproof.report import Finding

# Tensors a note names before "and N more".
_SHOWN = 4


def precision_note(tensors: Mapping[str, torch.Tensor], group: str) -> Finding | None:
    """One note naming the checked tensors that are not float64, or None when all are.

    ``group`` names them together when there are several ("inputs", "module").
    """
    low = {name: t.dtype for name, t in tensors.items() if t.dtype != torch.float64}
    if not low:
        return None
    shown = [f"{name} ({str(dtype).removeprefix('torch.')})" for name, dtype in low.items()]
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + [f"{len(shown) - _SHOWN} more"]
    listed = ", ".join(shown)
    verb = "is checked as a float64 copy" if len(low) == 1 else "are checked as float64 copies"
    return Finding(
        "precision", (next(iter(low)) if len(low) == 1 else group,),
        f"{listed} {verb}, on {'its' if len(low) == 1 else 'their'} own device: the check tests "
        "the math of forward and backward; rounding in the lower precision is neither tested "
        "nor able to fail it",
        details={"dtypes": {name: str(dtype) for name, dtype in low.items()}},
    )
