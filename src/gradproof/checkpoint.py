"""Checkpoints: a model, its parameters and the training state in one ``.npz`` file.

Contract: ``save_checkpoint(path, model, params, state)`` replaces ``path`` atomically, and
``load_checkpoint(path) -> (model, params, state)`` gives back equal objects, bit for bit, so
that training resumed from a checkpoint continues exactly where it stopped. The file is an
ordinary NumPy archive read with ``allow_pickle=False``; no Python object is ever unpickled:

======================  ==========  =================================================
entry                   dtype       content
======================  ==========  =================================================
``format``              str, (1,)   ``"gradproof-checkpoint"``
``version``             int, (1,)   ``1``
``config``              str, (1,)   JSON of ``model.config()``
``state``               str, (1,)   JSON of the ``TrainState`` scalars and history
``param/<name>``        any float   each parameter, e.g. ``param/W1``
``velocity/<name>``     any float   the momentum buffer of each parameter (SGD, GD)
======================  ==========  =================================================

``TrainState`` and ``EpochMetrics`` live here because they are exactly what a checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradproof.data.atomic import atomic_write
from gradproof.errors import DataError, InputError
from gradproof.nn.autoencoder import Autoencoder

FORMAT = "gradproof-checkpoint"
VERSION = 1
_PARAM_PREFIX = "param/"
_VELOCITY_PREFIX = "velocity/"


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch of training achieved.

    Attributes
    ----------
    epoch : int
        Number of epochs completed, counting from 1.
    step : int
        Optimiser steps taken since training began, after this epoch.
    loss : float
        Mean over the epoch's steps of the objective (``model.loss``, regularisers included)
        on each step's batch, before that step's update.
    train_error, test_error : float or None
        Reconstruction error after the epoch: the mean over images of the summed squared
        pixel error, ``mean_i sum_j (z_ij - x_ij)^2``. ``test_error`` is None without test data.
    seconds : float
        Wall time of the epoch, evaluation included.
    """

    epoch: int
    step: int
    loss: float
    train_error: float
    test_error: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the metrics as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class TrainState:
    """Everything beyond the parameters that training needs to resume exactly.

    Attributes
    ----------
    method, learning_rate, momentum, batch_size, seed
        The options of the run that produced this state (``train`` reuses them on resume
        unless told otherwise).
    epoch : int
        Epochs completed.
    step : int
        Optimiser steps taken.
    velocity : dict of str to ndarray
        The momentum buffer of each parameter (SGD and GD; empty for L-BFGS). The shuffling
        needs no saved generator: epoch ``e`` shuffles with ``default_rng((seed, e))``.
    history : list of EpochMetrics
        One record per completed epoch.
    info : dict
        JSON-ready notes the caller wants kept with the checkpoint (the CLI keeps its data
        options here, so that ``--resume`` trains on the same images).
    """

    method: str
    learning_rate: float
    momentum: float
    batch_size: int
    seed: int
    epoch: int = 0
    step: int = 0
    velocity: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[EpochMetrics] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, Any]:
        """Return every field except ``velocity`` as JSON-ready data."""
        return {
            "method": self.method,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "history": [metrics.to_dict() for metrics in self.history],
            "info": self.info,
        }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Autoencoder,
    params: dict[str, np.ndarray],
    state: TrainState,
) -> Path:
    """Write ``model``, ``params`` and ``state`` to ``path``, replacing it atomically.

    The archive is written to a temporary file beside ``path`` and renamed over it only once
    complete, so a crash or an error while saving leaves any previous checkpoint intact.

    Parameters
    ----------
    path : path-like
        The checkpoint file (conventionally ``*.npz``; the name is used as given). Its
        directory is created if missing.
    model : Autoencoder
        Its ``config()`` is stored as JSON.
    params : dict of str to ndarray
        The parameters, stored with their dtype.
    state : TrainState
        The training state; ``state.info`` must be JSON-ready.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    try:
        state_json = json.dumps(state.scalars(), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(f"training state for {path} is not JSON-ready: {error}") from error
    arrays: dict[str, np.ndarray] = {
        "format": np.array([FORMAT]),
        "version": np.array([VERSION]),
        "config": np.array([json.dumps(model.config())]),
        "state": np.array([state_json]),
    }
    arrays.update({_PARAM_PREFIX + name: np.asarray(value) for name, value in params.items()})
    arrays.update(
        {_VELOCITY_PREFIX + name: np.asarray(value) for name, value in state.velocity.items()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:
        np.savez(stream, **arrays)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[Autoencoder, dict[str, np.ndarray], TrainState]:
    """Read a checkpoint written by ``save_checkpoint``.

    Parameters
    ----------
    path : path-like
        The checkpoint file.

    Returns
    -------
    model : Autoencoder
        Rebuilt with ``Autoencoder.from_config``.
    params : dict of str to ndarray
        Validated against the model.
    state : TrainState
        The training state, velocity included.

    Raises
    ------
    DataError
        Naming the file, when it is missing, not an ``.npz`` archive, lacks an entry, or
        holds a bad model configuration, state or parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    arrays = _read_npz(path)
    missing = [key for key in ("format", "version", "config", "state") if key not in arrays]
    if missing:
        raise DataError(
            f"checkpoint {path} is not a gradproof checkpoint: it has no {', '.join(missing)} "
            f"entry (found: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    if _json_text(path, arrays, "format") != FORMAT:
        raise DataError(f"checkpoint {path} is not a gradproof checkpoint (format entry differs)")
    if arrays["version"].tolist() != [VERSION]:
        raise DataError(
            f"checkpoint {path} has format version {arrays['version'].tolist()}; "
            f"this gradproof reads version {VERSION}"
        )
    model = _model_from_config(path, _json_text(path, arrays, "config"))
    params = _prefixed(arrays, _PARAM_PREFIX)
    try:
        model.validate_params(params)
    except InputError as error:
        raise DataError(
            f"checkpoint {path} holds parameters that do not fit its model: {error}"
        ) from error
    state = _state_from_json(path, _json_text(path, arrays, "state"))
    state.velocity = _prefixed(arrays, _VELOCITY_PREFIX)
    _check_velocity(path, state.velocity, params)
    return model, params, state


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of the archive at ``path`` without unpickling anything."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as stream:
            is_npy = stream.read(6) == b"\x93NUMPY"
        what = "a .npy array" if is_npy else "not a zip file"
        raise DataError(f"checkpoint {path} is not a .npz archive ({what})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # ValueError: an entry that only pickle could read (an object array).
        raise DataError(f"checkpoint {path} has an unreadable entry: {error}") from error


def _json_text(path: Path, arrays: dict[str, np.ndarray], key: str) -> str:
    """Return the single string stored under ``key``."""
    value = arrays[key]
    if value.shape != (1,) or value.dtype.kind != "U":
        raise DataError(
            f"checkpoint {path}: entry '{key}' should hold one string, "
            f"got dtype {value.dtype} and shape {value.shape}"
        )
    return str(value[0])


def _model_from_config(path: Path, text: str) -> Autoencoder:
    try:
        config = json.loads(text)
        if not isinstance(config, dict):
            raise TypeError(f"expected a JSON object, got {type(config).__name__}")
        return Autoencoder.from_config(config)
    except (ValueError, TypeError, KeyError) as error:
        # InputError is a ValueError: a config the model rejects lands here too.
        raise DataError(f"checkpoint {path} has a bad model config: {error}") from error


def _state_from_json(path: Path, text: str) -> TrainState:
    try:
        data = json.loads(text)
        history = [EpochMetrics(**entry) for entry in data.pop("history")]
        state = TrainState(**data, history=history)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise DataError(f"checkpoint {path} has a bad training state: {error}") from error
    return state


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Return the entries whose key starts with ``prefix``, keyed by the rest of the key."""
    return {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}


def _check_velocity(
    path: Path, velocity: dict[str, np.ndarray], params: dict[str, np.ndarray]
) -> None:
    for name, value in velocity.items():
        if name not in params or value.shape != params[name].shape:
            raise DataError(
                f"checkpoint {path}: velocity '{name}' with shape {value.shape} matches no "
                f"parameter of that shape"
            )
