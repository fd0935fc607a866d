"""Read a user's parameters, input and hand-written gradients from a .mat or .npz file.

Contract: ``read_arrays(path) -> {name: array}`` reads every numeric variable of a MATLAB /
Octave ``.mat`` file (v4 to v7 through ``scipy.io.loadmat``; v7.3, which is HDF5, through
``h5py`` when it is installed) or of a NumPy ``.npz`` archive (never unpickling anything).
``read_gradient_file(path, ...) -> GradientFile`` then works out which variable is what and
how it is laid out, and returns everything in gradproof's own convention: ``x`` of shape
(batch, n_visible), weights ``W{k}`` of shape (n_in, n_out), biases ``b{k}`` of shape (n_out,),
and the user's gradients keyed by the same names.

Names. By default: the input is ``x`` (or ``X``, ``data``, ``input``, ``inputs``, ``images``);
the parameters are ``W1, b1, W2, b2, ...`` or ``encoder`` / ``decoder`` (W1 / W2); the gradient
of a parameter ``P`` is ``gP``, ``dP``, ``gradP``, ``grad_P``, ``P_grad`` or ``Pgrad`` (``gEncoder``,
``dW1``, ``grad_W1`` ...). ``mapping`` (``--map``) overrides them: ``gEncoder=W1`` (a gradient
variable mapped to the tensor it is the gradient of), ``enc=W1``, ``delta_W1=dW1``, ``imgs=x``.

Layout. Examples may be rows (x is (m, n_visible)) or columns (MATLAB style, x is
(n_visible, m)); weights may be stored (n_in, n_out) or transposed, (n_out, n_in) as for
``W * x``. Each combination that chains x through the weights back to n_visible is a
candidate (the autoencoders among ``gradproof.layouts.fit_layouts``'s fits); when several fit (square layers), gradproof's own convention wins, then the
MATLAB column convention, and the choice is noted. A gradient is mapped the way its
parameter is, so a gradient computed as the transpose of its parameter keeps the transposed
shape for the checker to report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradproof.errors import DataError, InputError
from gradproof.layouts import EXAMPLES, WEIGHTS, fit_layouts
from gradproof.params import gradient_stems
from gradproof.terms import UserTensor

# File suffix -> what gradproof reads there.
SUFFIXES: dict[str, str] = {
    ".mat": "MATLAB / Octave .mat (v4 to v7; save(..., '-v7'))",
    ".npz": "NumPy .npz (numpy.savez)",
}

# HDF5 files start with this signature, at offset 0 or at a power of two from 512 on
# (MATLAB v7.3 puts a 512-byte header first).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HDF5_OFFSETS = (0, 512, 1024, 2048)
_RESAVE = (
    "re-save it in MATLAB / Octave with `save('file.mat', 'encoder', 'decoder', 'x', "
    "'gEncoder', 'gDecoder', '-v7')`"
)

# Preference when several layouts fit: gradproof's convention, then MATLAB's column one.
_PREFERENCE = (("rows", "in_out"), ("columns", "out_in"), ("rows", "out_in"), ("columns", "in_out"))

X_NAMES = ("x", "X", "data", "input", "inputs", "images")
# Names under which a user's code saves its loss value beside the gradient (``J`` in the
# courses that call the objective J).
LOSS_NAMES = ("J", "cost", "loss")
_PARAM = re.compile(r"^([Wb])(\d+)$", re.IGNORECASE)
_ALIASES = {"encoder": "W1", "decoder": "W2"}


@dataclass(frozen=True)
class GradientFile:
    """A user's parameters, input and gradients, in gradproof's convention.

    Attributes
    ----------
    path : Path
    x : ndarray, shape (batch, n_visible)
    params : dict of str to ndarray
        ``W{k}`` (n_in, n_out) and ``b{k}`` (n_out,), float64.
    grads : dict of str to ndarray
        The user's gradient of each parameter, mapped the way the parameter was (a weight's
        may therefore have the transposed shape); floats keep their precision.
    layers : list of int
        The layer sizes the shapes give.
    bias, tied : bool
        Whether the file has biases, and whether the decoder reuses the encoder's weights.
    names : dict of str to str
        gradproof name (``"x"``, ``"W1"``, ``"grad W1"``) -> the file's variable name.
    examples : {"rows", "columns"}
    weights : {"in_out", "out_in"}
    notes : list of str
        Assumptions made on the way (a layout chosen among several that fit).
    loss : float or None
        The loss value the user's code saved beside its gradient (a scalar named like
        ``LOSS_NAMES``), when the file has one.
    """

    path: Path
    x: np.ndarray
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    layers: list[int]
    bias: bool
    tied: bool
    names: dict[str, str]
    examples: str
    weights: str
    notes: list[str] = field(default_factory=list)
    loss: float | None = None


# ----------------------------------------------------------------------------- reading


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every numeric variable of a ``.mat`` or ``.npz`` file, by name.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict of str to ndarray
        Real numeric arrays as stored (MATLAB variables are at least 2-D); variables of other
        types (text, structs, cells) are left out.

    Raises
    ------
    DataError
        The file does not exist, has another suffix, is a MATLAB v7.3 file and h5py is not
        installed, holds a pickled object array, or cannot be parsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; gradproof reads "
            + " and ".join(SUFFIXES.values())
        )
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{path} {what}")
    if _is_hdf5(path):
        return _read_hdf5(path)
    arrays = _read_mat(path) if suffix == ".mat" else _read_npz(path)
    return {name: value for name, value in arrays.items() if _is_real(value)}


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(_HDF5_OFFSETS[-1] + len(HDF5_SIGNATURE))
    return any(head[o : o + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE for o in _HDF5_OFFSETS)


def _read_hdf5(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"{path} is a MATLAB v7.3 file (HDF5), which scipy cannot read: {_RESAVE}, or "
            "install h5py (`pip install h5py`) to read it as it is"
        ) from None
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            for name, item in handle.items():
                if isinstance(item, h5py.Dataset) and not name.startswith("#"):
                    value = np.asarray(item[()])
                    # MATLAB writes column-major data, which HDF5 shows with the axes reversed.
                    arrays[name] = value.T if value.ndim >= 2 else value
    except (OSError, ValueError) as error:
        raise DataError(
            f"{path} looks like HDF5 (MATLAB v7.3) but h5py cannot read it ({error}); {_RESAVE}"
        ) from None
    return {name: value for name, value in arrays.items() if _is_real(value)}


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        contents = loadmat(path)
    except Exception as error:  # noqa: BLE001 - scipy raises many types on a bad file
        with path.open("rb") as handle:
            head = handle.read(_MATLAB_V5_HEADER_BYTES)
        if not head.startswith(b"MATLAB"):
            raise DataError(f"{path} is not a MATLAB .mat file: {_what_it_is(head)}") from None
        raise DataError(
            f"{path} is a damaged MATLAB .mat file ({type(error).__name__}: {error}); save it "
            "again with `save(..., '-v7')` in MATLAB or Octave"
        ) from None
    return {name: value for name, value in contents.items() if not name.startswith("__")}


# MATLAB v5 and v7 files open with a 116-byte text header ("MATLAB 5.0 MAT-file, ...");
# scipy's message about anything else ("appears to be truncated") would mislead.
_MATLAB_V5_HEADER_BYTES = 116
# Other formats a file named .mat often turns out to be: (leading bytes, what it is).
_NOT_MAT = (
    (b"# Created by Octave", "it is Octave's text format (what a plain `save` writes); save "
     "it with `save -v7 file.mat ...` in Octave"),
    (b"PK\x03\x04", "it is a zip archive, as numpy.savez writes: name it .npz"),
    (b"\x93NUMPY", "it is a single NumPy .npy array; save named arrays with numpy.savez to "
     "an .npz file"),
)


def _what_it_is(head: bytes) -> str:
    """Say what a file that is not MATLAB's seems to be, from its first bytes."""
    for signature, text in _NOT_MAT:
        if head.startswith(signature):
            return text
    if not head:
        return "it is empty"
    shown = head[:24].decode("latin-1")
    return (
        f"it does not start with the header of MATLAB's v5 / v7 format, 'MATLAB 5.0 MAT-file' "
        f"(it starts with {shown!r}); save it with `save('file.mat', ..., '-v7')` in MATLAB or Octave"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(
            f"{path} is not a NumPy .npz archive gradproof can read ({error}); pickled data is "
            "refused: save plain numeric arrays with numpy.savez"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single .npy array, not an .npz archive of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError:
                raise DataError(
                    f"{path}: variable {name!r} is a pickled object array, which gradproof "
                    "refuses to load (unpickling can run code); save plain numeric arrays "
                    "with numpy.savez"
                ) from None
            except Exception as error:  # noqa: BLE001 - a damaged member raises zip/zlib errors
                raise DataError(f"{path}: variable {name!r} cannot be read ({error})") from None
    return arrays


def _is_real(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


# ------------------------------------------------------------------------------ names


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"gEncoder=W1,imgs=x"`` -> ``{"gEncoder": "W1", "imgs": "x"}``.

    Raises
    ------
    InputError
        An item without ``=``, an empty side, a target that is not ``x``, a parameter
        (``W1``, ``b2``) or a gradient name (``dW1``, ``gW1``, ``grad_W1``), or a variable
        named twice.
    """
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for item in text.split(","):
        variable, _, target = (part.strip() for part in item.partition("="))
        if not variable or not target:
            raise InputError(
                f"--map item {item.strip()!r} must look like VARIABLE=TARGET, e.g. gEncoder=W1"
            )
        if _target(target) is None:
            raise InputError(
                f"--map target {target!r} (for {variable}) is not x, a parameter like W1 or "
                "b2, or a gradient name like dW1, gW1 or grad_W1"
            )
        if variable in mapping:
            raise InputError(f"--map names variable {variable!r} twice")
        mapping[variable] = target
    return mapping


def _target(text: str) -> tuple[str, str] | None:
    """A mapping target as (role, tensor): ("x", "x"), ("param", "W1") or ("grad", "W1")."""
    if text in ("x", "X"):
        return "x", "x"
    param = _param_name(text)
    if param is not None:
        return "param", param
    stem = _gradient_stem(text)
    return None if stem is None else ("grad", _param_name(stem))


def _param_name(text: str) -> str | None:
    match = _PARAM.match(text)
    if match:
        return f"{match.group(1).upper() if match.group(1) in 'Ww' else 'b'}{int(match.group(2))}"
    return _ALIASES.get(text.lower())


def _gradient_stem(name: str) -> str | None:
    for stem in gradient_stems(name):
        if _param_name(stem) is not None:
            return stem
    return None


def _looks_like_gradient(name: str) -> bool:
    """A name like gEncoder, dW1, grad_w, W1_grad (a bare "g"/"d" prefix needs a capital or
    digit after it, so that "data" or "decoder" are not gradients)."""
    if re.match(r"^(grad|g_|d_)", name) or re.search(r"_?grad$", name):
        return True
    return bool(re.match(r"^[gd][A-Z0-9_]", name))


@dataclass
class _Roles:
    """Which file variable plays which part."""

    x: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # tensor -> variable
    grads: dict[str, str] = field(default_factory=dict)  # tensor -> variable

    def assign(self, role: str, tensor: str, variable: str) -> None:
        if role == "x":
            if self.x is not None and self.x != variable:
                raise DataError(
                    f"both {self.x!r} and {variable!r} look like the input x; "
                    f"name one with --map, e.g. --map {variable}=x"
                )
            self.x = variable
            return
        table = self.params if role == "param" else self.grads
        held = table.get(tensor)
        if held is not None and held != variable:
            what = tensor if role == "param" else f"the gradient of {tensor}"
            raise DataError(
                f"both {held!r} and {variable!r} look like {what}; "
                f"choose one with --map, e.g. --map {variable}={'d' if role == 'grad' else ''}"
                f"{tensor}"
            )
        table[tensor] = variable


def _roles(arrays: Mapping[str, np.ndarray], mapping: Mapping[str, str]) -> _Roles:
    roles = _Roles()
    for variable, target in mapping.items():
        if variable not in arrays:
            raise DataError(
                f"--map names variable {variable!r}, which the file does not hold; "
                f"it has {_listing(arrays)}"
            )
        role, tensor = _target(target)
        if role == "param" and _looks_like_gradient(variable):
            role = "grad"  # --map gEncoder=W1: the gradient of W1
        roles.assign(role, tensor, variable)
    free = [name for name in arrays if name not in mapping]
    for variable in free:
        if variable in X_NAMES and roles.x is None:
            roles.assign("x", "x", variable)
        elif _param_name(variable) is not None:
            roles.assign("param", _param_name(variable), variable)
    by_param_variable = {variable: tensor for tensor, variable in roles.params.items()}
    for variable in free:
        if variable == roles.x or variable in by_param_variable:
            continue
        for stem in gradient_stems(variable):
            # The stem names a parameter as the file does (gEncoder) or as gradproof does (dW1).
            tensor = by_param_variable.get(stem) or _match_case_insensitive(stem, by_param_variable)
            if tensor is None and _param_name(stem) in roles.params:
                tensor = _param_name(stem)
            if tensor is not None:
                roles.assign("grad", tensor, variable)
                break
    _check_mapped_gradients(roles, mapping)
    return roles


def _check_mapped_gradients(roles: _Roles, mapping: Mapping[str, str]) -> None:
    """A gradient mapped to a tensor the file's network does not have (``gEncoder=W9``)."""
    for tensor, variable in roles.grads.items():
        if variable in mapping and tensor not in roles.params:
            declared = ", ".join(
                f"{t} ({roles.params[t]})" if roles.params[t] != t else t
                for t in _sorted_tensors(roles.params)
            ) or "none (no variable looks like a weight or bias)"
            raise DataError(
                f"--map {variable}={mapping[variable]}: {tensor} is not a parameter of the "
                f"network in the file; its parameters are {declared}"
            )


def _match_case_insensitive(stem: str, by_variable: Mapping[str, str]) -> str | None:
    for variable, tensor in by_variable.items():
        if variable.lower() == stem.lower():
            return tensor
    return None


def _check_complete(roles: _Roles, arrays: Mapping[str, np.ndarray], path: Path) -> None:
    weights = sorted(_index(t) for t in roles.params if t.startswith("W"))
    missing: list[str] = []
    if roles.x is None:
        missing.append(f"the input x (named {', '.join(X_NAMES)})")
    if not weights:
        missing.append("the weights (W1, W2, ... or encoder, decoder)")
    elif weights != list(range(1, len(weights) + 1)):
        gaps = sorted(set(range(1, max(weights) + 1)) - set(weights))
        missing.append(f"weight{'s' if len(gaps) > 1 else ''} {', '.join(f'W{k}' for k in gaps)}")
    lacking = [t for t in roles.params if t not in roles.grads]
    if lacking:
        missing.append(
            "a gradient for " + ", ".join(
                f"{roles.params[t]} (like d{roles.params[t]}, g{_capital(roles.params[t])} or "
                f"grad_{roles.params[t]})" for t in _sorted_tensors(lacking)
            )
        )
    if missing:
        raise DataError(
            f"{path}: missing {'; '.join(missing)}. Found: {_listing(arrays)}. gradproof "
            "needs x, the weights (and biases, if any) and the gradient of each; name "
            "variables with --map VARIABLE=TARGET (e.g. --map gEncoder=W1,imgs=x)"
        )


def _capital(name: str) -> str:
    return name[:1].upper() + name[1:]


def _index(tensor: str) -> int:
    return int(tensor[1:])


def _sorted_tensors(tensors: Iterable[str]) -> list[str]:
    return sorted(tensors, key=lambda t: (_index(t), t[0] != "W"))


def _listing(arrays: Mapping[str, np.ndarray]) -> str:
    if not arrays:
        return "no numeric variables"
    return ", ".join(f"{name} ({_shape_text(value.shape)} {value.dtype})" for name, value in arrays.items())


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) or "scalar"


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    examples: str
    weights: str
    layers: list[int]


def _is_tied(weights: list[np.ndarray], biases: list[np.ndarray], tied: bool | None) -> bool:
    """Tied when the biases are twice as many as the weights, when one weight is all there is,
    or when asked; untied when there is a bias per weight."""
    if biases:
        return len(biases) == 2 * len(weights)
    if tied is not None:
        return tied
    return len(weights) == 1


def _layout(
    x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray], tied: bool,
    examples: str, weights_layout: str, shapes_text: str,
) -> tuple[_Layout, list[str]]:
    tried = [
        (e, w) for e, w in _PREFERENCE
        if examples in ("auto", e) and weights_layout in ("auto", w)
    ]
    shapes = {f"W{k}": w.shape for k, w in enumerate(weights, start=1)}
    shapes.update({f"b{k}": (b.size,) for k, b in enumerate(biases, start=1)})
    # The autoencoders among the family's fits, by (examples, weights) layout.
    autoencoders = {
        (fit.layout.examples, fit.layout.weights):
            _Layout(fit.layout.examples, fit.layout.weights, list(fit.layers))
        for fit in fit_layouts(shapes, x.shape)
        if fit.tied == tied and fit.layout.biases in ("vector", "absent")
        and len(fit.layers) >= 3 and fit.layers[0] == fit.layers[-1]
    }
    fits = [autoencoders[form] for form in tried if form in autoencoders]
    if not fits:
        forced = "" if (examples, weights_layout) == ("auto", "auto") else (
            f" with --examples {examples} --weights {weights_layout}"
        )
        raise DataError(
            f"the shapes fit no autoencoder{forced}: {shapes_text}. gradproof expects x as "
            "(examples, n_visible) or (n_visible, examples), weights that chain n_visible -> "
            "hidden ... -> n_visible, all stored (n_in, n_out) or all (n_out, n_in), and "
            f"{'one bias per layer' if not tied else 'biases for both halves'} when there are "
            "biases"
        )
    chosen = fits[0]
    notes = []
    if len(fits) > 1:
        alternatives = "; ".join(_layout_text(c) for c in fits[1:])
        notes.append(
            f"the shapes fit more than one layout; assumed {_layout_text(chosen)} (also "
            f"possible: {alternatives}); choose with --examples and --weights"
        )
    return chosen, notes


def _layout_text(layout: _Layout) -> str:
    stored = "(n_in, n_out)" if layout.weights == "in_out" else "(n_out, n_in)"
    return f"examples as {layout.examples}, weights stored {stored}"


# ---------------------------------------------------------------------------- assembly


def read_gradient_file(
    path: str | Path,
    *,
    mapping: Mapping[str, str] | None = None,
    examples: str = "auto",
    weights: str = "auto",
    tied: bool | None = None,
) -> GradientFile:
    """Read parameters, input and gradients from a file and bring them to gradproof's layout.

    Parameters
    ----------
    path : str or Path
        A ``.mat`` or ``.npz`` file.
    mapping : dict of str to str, optional
        File variable -> target (``"W1"``, ``"dW1"``, ``"x"``), as ``parse_mapping`` gives.
    examples : {"auto", "rows", "columns"}
        Whether x holds one example per row or per column.
    weights : {"auto", "in_out", "out_in"}
        Whether the weights are stored (n_in, n_out), or transposed.
    tied : bool, optional
        Whether the decoder reuses the encoder's weights; inferred when None.

    Returns
    -------
    GradientFile

    Raises
    ------
    DataError
        Missing variables (what was found and what is needed), shapes that fit no
        autoencoder, a gradient whose shape fits neither its parameter nor its transpose,
        NaN or Inf in a variable (named, with the index), or anything ``read_arrays`` raises.
    InputError
        ``examples`` or ``weights`` not one of their choices.
    """
    if examples not in ("auto", *EXAMPLES):
        raise InputError(f"examples must be auto, {' or '.join(EXAMPLES)}; got {examples!r}")
    if weights not in ("auto", *WEIGHTS):
        raise InputError(f"weights must be auto, {' or '.join(WEIGHTS)}; got {weights!r}")
    path = Path(path)
    arrays = read_arrays(path)
    roles = _roles(arrays, dict(mapping or {}))
    _check_complete(roles, arrays, path)
    for variable in [roles.x, *roles.params.values(), *roles.grads.values()]:
        _check_finite(arrays[variable], variable, path)

    names = _sorted_tensors(roles.params)
    x = np.asarray(arrays[roles.x], dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]  # one example
    weight_arrays = [_matrix(arrays[roles.params[t]], roles.params[t]) for t in names if t[0] == "W"]
    bias_names = [t for t in names if t[0] == "b"]
    bias_arrays = [_vector(arrays[roles.params[t]], roles.params[t]) for t in bias_names]
    _check_bias_names(bias_names, len(weight_arrays), path)
    is_tied = _is_tied(weight_arrays, bias_arrays, tied)
    if tied is not None and tied != is_tied:
        raise DataError(
            f"--tied {'was given' if tied else 'was not given'}, but the file has "
            f"{len(weight_arrays)} weight(s) and {len(bias_arrays)} bias(es), which make a "
            f"{'tied' if is_tied else 'untied'} autoencoder"
        )
    shapes_text = ", ".join(
        [f"x = {roles.x} ({_shape_text(arrays[roles.x].shape)})"]
        + [f"{t} = {roles.params[t]} ({_shape_text(arrays[roles.params[t]].shape)})" for t in names]
    )
    layout, notes = _layout(x, weight_arrays, bias_arrays, is_tied, examples, weights, shapes_text)

    flip = layout.weights == "out_in"
    params: dict[str, np.ndarray] = {}
    grads: dict[str, np.ndarray] = {}
    for t in names:
        variable, grad_variable = roles.params[t], roles.grads[t]
        value, grad = arrays[variable], arrays[grad_variable]
        if t[0] == "W":
            params[t] = np.asarray(value.T if flip else value, dtype=np.float64)
            grads[t] = _weight_grad(grad, value, flip, grad_variable, variable)
        else:
            params[t] = _vector(value, variable).astype(np.float64)
            grads[t] = _bias_grad(grad, params[t].size, grad_variable, variable)
    file_names = {"x": roles.x}
    for t in names:
        file_names[t] = roles.params[t]
        file_names[f"grad {t}"] = roles.grads[t]
    return GradientFile(
        path=path,
        x=np.ascontiguousarray(x if layout.examples == "rows" else x.T),
        params=params,
        grads=grads,
        layers=layout.layers,
        bias=bool(bias_arrays),
        tied=is_tied,
        names=file_names,
        examples=layout.examples,
        weights=layout.weights,
        notes=notes,
        loss=_loss_value(arrays, path),
    )


def _loss_value(arrays: Mapping[str, np.ndarray], path: Path) -> float | None:
    """The first ``LOSS_NAMES`` variable of the file, as a float; it must be one finite number."""
    variable = next((name for name in LOSS_NAMES if name in arrays), None)
    if variable is None:
        return None
    value = arrays[variable]
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: variable {variable} looks like the loss value but has shape "
            f"{value.shape}; expected one number (or rename it)"
        )
    _check_finite(value, variable, path)
    return float(value.reshape(()))


def _check_finite(value: np.ndarray, variable: str, path: Path) -> None:
    if value.dtype.kind != "f":
        return
    bad = ~np.isfinite(value)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    matlab = f"; in MATLAB terms {variable}({', '.join(str(i + 1) for i in index)})" if (
        path.suffix.lower() == ".mat"
    ) else ""
    raise DataError(
        f"{path}: variable {variable} has a non-finite value ({value[index]}) at index "
        f"{list(index)} (0-based{matlab}); {int(bad.sum())} of its {value.size} entries are "
        "NaN or Inf. Fix the computation that produced it before checking the gradient"
    )


def _matrix(value: np.ndarray, variable: str) -> np.ndarray:
    if value.ndim != 2:
        raise DataError(f"variable {variable} should be a weight matrix; it has shape {_shape_text(value.shape)}")
    return value


def _vector(value: np.ndarray, variable: str) -> np.ndarray:
    """A bias stored (n,), (1, n) or (n, 1), as (n,)."""
    if value.ndim > 2 or value.ndim == 2 and min(value.shape) != 1:
        raise DataError(
            f"variable {variable} should be a bias vector, (n,), (1, n) or (n, 1); it has "
            f"shape {_shape_text(value.shape)}"
        )
    return value.reshape(-1)


def _check_bias_names(bias_names: list[str], n_weights: int, path: Path) -> None:
    indices = [_index(t) for t in bias_names]
    if indices and indices != list(range(1, len(indices) + 1)):
        raise DataError(
            f"{path}: biases {', '.join(bias_names)} are not b1, b2, ... in sequence; the file "
            f"has {n_weights} weight(s)"
        )
    if indices and len(indices) not in (n_weights, 2 * n_weights):
        raise DataError(
            f"{path}: {len(indices)} biases for {n_weights} weights: an autoencoder has one bias "
            f"per layer ({n_weights}, or {2 * n_weights} with tied weights)"
        )


def _as_float(value: np.ndarray) -> np.ndarray:
    """Floats keep their precision (it sets the tolerance); integers become float64."""
    return value if value.dtype.kind == "f" else value.astype(np.float64)


def _weight_grad(
    grad: np.ndarray, param: np.ndarray, flip: bool, grad_variable: str, variable: str
) -> np.ndarray:
    if grad.shape not in (param.shape, param.shape[::-1]):
        raise DataError(
            f"gradient {grad_variable} has shape {_shape_text(grad.shape)}; expected "
            f"{_shape_text(param.shape)} like {variable} (or its transpose)"
        )
    return _as_float(grad.T if flip else grad)


def _bias_grad(grad: np.ndarray, size: int, grad_variable: str, variable: str) -> np.ndarray:
    vector = _vector(grad, grad_variable)
    if vector.size != size:
        raise DataError(
            f"gradient {grad_variable} has {vector.size} entries; expected {size} like {variable}"
        )
    return _as_float(vector)


def describe_layout(gradient_file: GradientFile) -> str:
    """One sentence: how the file was read (names and layout)."""
    names = ", ".join(
        f"{variable} -> {name}" for name, variable in gradient_file.names.items()
    )
    network = "-".join(str(n) for n in gradient_file.layers)
    if gradient_file.tied:
        network += ", tied"
    network += ", with biases" if gradient_file.bias else ", no biases"
    layout = _layout_text(_Layout(gradient_file.examples, gradient_file.weights, []))
    return f"{names}; {layout}; network {network}"


def user_terms(gradient_file: GradientFile) -> dict[str, UserTensor]:
    """How the file names and stores each tensor, for ``gradproof.terms.in_user_terms``.

    Subscripts are 1-based for a MATLAB file. They are swapped where the user's gradient
    array is the transpose of gradproof's: weights stored ``(n_out, n_in)``, or a gradient
    saved in the transposed shape (the two cancel when both hold).
    """
    flip = gradient_file.weights == "out_in"
    one_based = gradient_file.path.suffix.lower() == ".mat"
    terms = {}
    for name, grad in gradient_file.grads.items():
        misshapen = grad.shape != gradient_file.params[name].shape
        terms[name] = UserTensor(
            canonical=name,
            name=gradient_file.names[name],
            gradient=gradient_file.names[f"grad {name}"],
            transposed=name.startswith("W") and flip != misshapen,
            stored_transposed=name.startswith("W") and flip,
            one_based=one_based,
        )
    return terms
