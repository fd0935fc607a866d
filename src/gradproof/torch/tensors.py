"""Tensors in and out of a check: float64 copies, validation, and the fixed random projection.

Contract: the torch adapter checks a callable of tensors through a scalar,
``J(inputs) = sum_k <weights_k, outputs_k>``, with ``weights`` drawn once (seeded) and kept for
the whole check, so that the gradient of J is one vector-Jacobian product: what backward
returns for ``grad_output = weights``. Everything runs on float64 copies of the tensors, on
each tensor's own device. Every helper here raises ``InputError`` naming the tensor (by the
name the report uses) and what was expected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from gradproof.errors import InputError

# Projection weights: random signs times magnitudes in [LOW, HIGH], so that every output entry
# counts (no weight near zero hides an output) and no two entries are weighted alike.
WEIGHT_LOW, WEIGHT_HIGH = 0.5, 1.5


def float64_copy(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """A detached float64 copy of a real floating tensor, on the tensor's own device.

    Integer and boolean tensors are returned detached and unchanged (indices, masks).
    """
    if tensor.is_complex():
        raise InputError(f"{what} is complex ({tensor.dtype}); only real tensors can be checked")
    if not tensor.is_floating_point():
        return tensor.detach()
    try:
        return tensor.detach().to(dtype=torch.float64, copy=True)
    except (TypeError, RuntimeError) as exc:
        raise InputError(
            f"{what} is on {tensor.device}, which cannot hold a float64 copy ({exc}); the check "
            "needs float64: move the tensors to the CPU (or a CUDA device) first"
        ) from None


def check_values(tensor: torch.Tensor, what: str, *, allow_inf: bool) -> None:
    """InputError if a floating tensor holds NaN (or, unless ``allow_inf``, +-inf)."""
    if not tensor.is_floating_point():
        return
    tensor = tensor.detach()
    bad = torch.isnan(tensor) if allow_inf else ~torch.isfinite(tensor)
    count = int(bad.sum())
    if not count:
        return
    index = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    value = float(tensor[index]) if index else float(tensor)
    where = f" at {list(index)}" if index else ""
    expected = "no NaN" if allow_inf else "finite values only"
    raise InputError(
        f"{what} holds {value}{where} ({count} such entries in all); expected {expected}: "
        "finite differences are meaningless there"
    )


def as_outputs(result: Any, who: str) -> tuple[torch.Tensor, ...]:
    """``who``'s result as a tuple of tensors: a tensor, or a tuple / list of tensors."""
    outputs = (result,) if isinstance(result, torch.Tensor) else result
    if not isinstance(outputs, (tuple, list)) or not outputs:
        raise InputError(
            f"{who} must return a tensor or a tuple of tensors; it returned {_describe(result)}"
        )
    for k, output in enumerate(outputs):
        if not isinstance(output, torch.Tensor):
            raise InputError(
                f"{who} must return a tensor or a tuple of tensors; output {k} of its "
                f"{type(result).__name__} is {_describe(output)}"
            )
        if output.is_complex():
            raise InputError(
                f"output {k} of {who} is complex ({output.dtype}); only real outputs can be "
                "checked"
            )
    if not any(output.is_floating_point() for output in outputs):
        dtypes = ", ".join(str(output.dtype) for output in outputs)
        raise InputError(
            f"{who} returned no floating-point tensor (dtypes {dtypes}): there is nothing to "
            "differentiate"
        )
    return tuple(outputs)


def projection(outputs: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor | None, ...]:
    """Fixed random weights for the floating outputs (None for integer / boolean ones)."""
    rng = np.random.default_rng(seed)
    weights: list[torch.Tensor | None] = []
    for output in outputs:
        if not output.is_floating_point():
            weights.append(None)
            continue
        shape = tuple(output.shape)
        w = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(WEIGHT_LOW, WEIGHT_HIGH, size=shape)
        weights.append(torch.as_tensor(np.asarray(w), dtype=torch.float64, device=output.device))
    return tuple(weights)


def project(
    outputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """The scalar ``sum_k <weights_k, outputs_k>`` in float64."""
    terms = [(out.to(torch.float64) * w).sum() for out, w in zip(outputs, weights) if w is not None]
    return sum(terms[1:], terms[0])


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's random state seeded, and the caller's state restored afterwards.

    Every evaluation draws the same random numbers (a dropout mask inside the function is the
    same at every finite-difference step as in the analytic pass), and the user's global
    random stream is left as it was.
    """
    if device.type == "cpu":
        # Only the CPU generator: torch.manual_seed would also queue seeds for every other
        # device type, which costs more than a small function's evaluation.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield
        return
    # Every device of the type is forked (and named, which keeps fork_rng from warning).
    devices = list(range(torch.get_device_module(device.type).device_count()))
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a tensor (from any device)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({value!r:.60})"
