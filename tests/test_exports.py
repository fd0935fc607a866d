"""The package's lazy public names: each is the object its module defines, whatever was imported."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import gradproof


def _submodules() -> list[str]:
    return [
        info.name for info in pkgutil.walk_packages(gradproof.__path__, "gradproof.")
        if not info.name.startswith(("gradproof.torch", "gradproof.__main__"))
    ]


@pytest.mark.parametrize("name", gradproof.__all__)
def test_a_public_name_is_never_shadowed_by_a_submodule(name):
    for module in _submodules():
        importlib.import_module(module)
    value = getattr(gradproof, name)
    assert not isinstance(value, types.ModuleType), f"gradproof.{name} is a module"
