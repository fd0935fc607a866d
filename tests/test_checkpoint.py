"""Checkpoints: exact round trips, no pickle, atomic replacement, clear errors on bad files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import gradproof.checkpoint as checkpoint_module
from gradproof.checkpoint import EpochMetrics, TrainState, load_checkpoint, save_checkpoint
from gradproof.errors import DataError, InputError
from gradproof.nn.autoencoder import Autoencoder


def _state(params: dict[str, np.ndarray], seed: int = 0) -> TrainState:
    rng = np.random.default_rng(seed)
    return TrainState(
        method="sgd",
        learning_rate=0.005,
        momentum=0.5,
        batch_size=100,
        seed=7,
        epoch=2,
        step=20,
        velocity={name: rng.standard_normal(v.shape).astype(v.dtype) for name, v in params.items()},
        history=[
            EpochMetrics(
                epoch=1, step=10, loss=12.5, train_error=30.25, test_error=31.0, seconds=0.1
            ),
            EpochMetrics(
                epoch=2, step=20, loss=9.75, train_error=20.5, test_error=None, seconds=0.2
            ),
        ],
        info={"limit": 200, "data_dir": None},
    )


@pytest.mark.parametrize(
    "model",
    [
        Autoencoder(n_hidden=8),
        Autoencoder(n_hidden=8, dtype="float32"),
        Autoencoder(layers=[784, 12, 6, 12, 784], activation="tanh", tied=True, bias=False),
        Autoencoder(n_hidden=8, loss="cross_entropy", reduction="mean", weight_decay=0.5),
    ],
    ids=["seed-like", "float32", "tied-no-bias", "cross-entropy"],
)
def test_a_checkpoint_round_trips_exactly(tmp_path, model):
    params = model.init_params(seed=3)
    state = _state(params)
    path = save_checkpoint(tmp_path / "c.npz", model, params, state)

    loaded_model, loaded_params, loaded_state = load_checkpoint(path)

    assert loaded_model.config() == model.config()
    assert loaded_params.keys() == params.keys()
    for name, value in params.items():
        assert loaded_params[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded_params[name], value)
        np.testing.assert_array_equal(loaded_state.velocity[name], state.velocity[name])
    assert loaded_state.scalars() == state.scalars()


def test_the_file_needs_no_pickle_and_keeps_the_config_as_json(tmp_path):
    model = Autoencoder(n_hidden=8)
    params = model.init_params()
    path = save_checkpoint(tmp_path / "c.npz", model, params, _state(params))
    with np.load(path, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    assert all(value.dtype != object for value in entries.values())
    assert json.loads(str(entries["config"][0])) == model.config()
    assert {"param/W1", "param/b1", "velocity/W2"} <= entries.keys()


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = Autoencoder(n_hidden=8)
    old_params = model.init_params(seed=1)
    path = save_checkpoint(tmp_path / "c.npz", model, old_params, _state(old_params))
    before = path.read_bytes()

    def savez_then_fail(stream, **arrays):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.np, "savez", savez_then_fail)
    new_params = model.init_params(seed=2)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, new_params, _state(new_params))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left behind
    _, params, _ = load_checkpoint(path)
    np.testing.assert_array_equal(params["W1"], old_params["W1"])


def test_a_state_that_is_not_json_ready_is_refused(tmp_path):
    model = Autoencoder(n_hidden=8)
    state = _state(model.init_params())
    state.info = {"when": object()}
    with pytest.raises(InputError, match="JSON"):
        save_checkpoint(tmp_path / "c.npz", model, model.init_params(), state)
    assert not (tmp_path / "c.npz").exists()


def _archive(path, **changes):
    """Write a valid checkpoint's entries to ``path`` with ``changes`` (None removes one)."""
    model = Autoencoder(n_hidden=8)
    params = model.init_params()
    source = save_checkpoint(path.with_name("source.npz"), model, params, _state(params))
    with np.load(source) as archive:
        entries = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del entries[key]
        else:
            entries[key] = value
    np.savez(path, **entries)
    return path


def _text_file(path):
    path.write_text("not a checkpoint")
    return path


def _npy_file(path):
    with path.open("wb") as stream:  # a file object keeps np.save from appending ".npy"
        np.save(stream, np.zeros(3))
    return path


def _missing(path):
    return path


def _empty_zip(path):
    with zipfile.ZipFile(path, "w"):
        pass
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_missing, "does not exist"),
        (_text_file, "not a .npz archive (not a zip file)"),
        (_npy_file, "not a .npz archive (a .npy array)"),
        (_empty_zip, "no format, version, config, state"),
        (lambda p: _archive(p, config=None), "no config"),
        (lambda p: _archive(p, state=None), "no state"),
        (lambda p: _archive(p, format=np.array(["something-else"])), "format"),
        (lambda p: _archive(p, version=np.array([99])), "version"),
        (lambda p: _archive(p, config=np.array(["{not json"])), "bad model config"),
        (lambda p: _archive(p, config=np.array(['{"activation": "softmax"}'])), "bad model config"),
        (lambda p: _archive(p, config=np.array([1.0])), "one string"),
        (lambda p: _archive(p, param__W1=np.zeros((3, 3))), "W1"),
        (lambda p: _archive(p, param__b2=None), "b2"),
        (lambda p: _archive(p, state=np.array(['{"method": "sgd"}'])), "bad training state"),
        (lambda p: _archive(p, velocity__W1=np.zeros(2)), "velocity"),
        (lambda p: _archive(p, extra=np.array([{"a": 1}], dtype=object)), "unreadable entry"),
    ],
    ids=["missing", "text", "npy", "empty-zip", "no-config", "no-state", "format", "version",
         "config-not-json", "config-bad-activation", "config-not-string", "param-shape",
         "param-missing", "state-incomplete", "velocity-shape", "pickled-entry"],
)
def test_a_bad_file_raises_data_error_naming_it(tmp_path, make, words):
    path = make(tmp_path / "bad.npz")
    with pytest.raises(DataError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message
    assert words in message
