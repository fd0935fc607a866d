"""gradproof: train autoencoders with hand-written backprop and prove their gradients right.

The public API (see the README)::

    import gradproof as gp
    model = gp.Autoencoder(n_visible=784, n_hidden=200)
    params = model.init_params(seed=0)
    report = gp.check_gradient(loss, grad, params)
    report = gp.check_model(model, params, x)
    report = gp.check_vjp(affine_forward, affine_backward, (x, w, b))
    report = gp.check_network(loss, grad, params, x, y)

Names are imported lazily so that ``import gradproof`` stays cheap and never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. No name may be that of a submodule (``diagnose``,
# ``identify``): importing the submodule sets the package attribute to the module itself.
_EXPORTS = {
    "Autoencoder": "gradproof.nn.autoencoder",
    "Network": "gradproof.nn.network",
    "load_mnist": "gradproof.data.mnist",
    "read_idx": "gradproof.data.idx",
    "check_gradient": "gradproof.check",
    "check_model": "gradproof.check",
    "check_vjp": "gradproof.vjp",
    "check_network": "gradproof.network_check",
    "Layout": "gradproof.layouts",
    "GradReport": "gradproof.report",
    "TensorResult": "gradproof.report",
    "Finding": "gradproof.report",
    "FINDING_KINDS": "gradproof.report",
    "diagnose_model": "gradproof.mistakes",
    "MISTAKES": "gradproof.mistakes",
    "GradproofError": "gradproof.errors",
    "InputError": "gradproof.errors",
    "DataError": "gradproof.errors",
    "TrainingDiverged": "gradproof.errors",
    "GradientMismatch": "gradproof.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'gradproof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
