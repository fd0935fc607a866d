"""gradproof.torch: check PyTorch backward code against finite differences.

Contract: ``check_function(fn, *inputs, names=None, seed=0, **options)`` checks the inputs
that require grad of any callable of tensors (a custom ``autograd.Function.apply`` above
all); ``check_module(module, inputs, loss_fn=None, *, seed=0, **options)`` checks a
module's parameters. Both reduce the outputs to a scalar (a fixed, seeded random projection,
or ``loss_fn``), take the analytic gradient from backward, run everything in float64 copies
on the tensors' own device, and return a ``gradproof.GradReport`` from
``gradproof.check_gradient``. ``import gradproof`` never imports torch; this package does
(``pip install gradproof[torch]``).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401  (the top-level torch: imports are absolute)
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        "gradproof.torch needs PyTorch, which is not installed: pip install 'gradproof[torch]'",
        name="torch",
    ) from exc

from gradproof.torch.function import check_function
from gradproof.torch.module import check_module

__all__ = ["check_function", "check_module"]
