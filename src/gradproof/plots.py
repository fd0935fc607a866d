"""PNG figures of a training run: loss curves, reconstructions, and the encoder's filters.

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas and writes a
PNG, so nothing touches pyplot's global state or needs a display. Images are shown as square
tiles (28 x 28 for MNIST); a model whose ``n_visible`` is not a perfect square gets no image
figures, and ``save_training_plots`` says so in its notes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gradproof.checkpoint import EpochMetrics
from gradproof.nn.autoencoder import Autoencoder

LOSS_FILE = "loss.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
FILTERS_FILE = "filters.png"
_DPI = 100


@dataclass
class PlotFiles:
    """What ``save_training_plots`` wrote, and why it skipped anything."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def image_side(n_visible: int) -> int | None:
    """The side of a square image of ``n_visible`` pixels, or None when there is none."""
    side = math.isqrt(n_visible)
    return side if side * side == n_visible else None


def plot_loss_curves(history: Sequence[EpochMetrics], path: str | os.PathLike[str]) -> Path:
    """Plot the reconstruction errors and the objective per epoch.

    Parameters
    ----------
    history : sequence of EpochMetrics
        At least one epoch.
    path : path-like
        The PNG to write.
    """
    epochs = [m.epoch for m in history]
    fig = _figure(10, 4)
    errors, objective = fig.subplots(1, 2)
    errors.plot(epochs, [m.train_error for m in history], marker=".", label="train")
    tests = [(m.epoch, m.test_error) for m in history if m.test_error is not None]
    if tests:
        errors.plot(*zip(*tests, strict=True), marker=".", label="test")
    errors.set(
        title="Reconstruction error", xlabel="epoch", ylabel="mean over images of sum (z - x)^2"
    )
    errors.legend()
    objective.plot(epochs, [m.loss for m in history], marker=".", color="tab:green")
    objective.set(title="Objective", xlabel="epoch", ylabel="mean loss per step")
    for axes in (errors, objective):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_reconstructions(
    model: Autoencoder,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    path: str | os.PathLike[str],
    *,
    n: int = 16,
) -> Path | None:
    """Show the first ``n`` images of ``x`` beside their reconstructions.

    Returns the path written, or None when ``model.n_visible`` is not a square image.
    """
    side = image_side(model.n_visible)
    if side is None:
        return None
    inputs = np.asarray(x[:n], dtype=np.float64)  # (k, n_visible)
    outputs = np.asarray(model.reconstruct(params, inputs), dtype=np.float64)  # (k, n_visible)
    columns = math.ceil(math.sqrt(len(inputs)))
    fig = _figure(8, 4.3)
    for axes, images, title in zip(
        fig.subplots(1, 2), (inputs, outputs), ("inputs", "reconstructions"), strict=True
    ):
        tiles = images.reshape(-1, side, side)  # (k, side, side)
        axes.imshow(_mosaic(tiles, columns, fill=1.0), cmap="gray", vmin=0.0, vmax=1.0)
        axes.set_title(title)
        axes.set_axis_off()
    return _save(fig, path)


def plot_filters(
    model: Autoencoder,
    params: dict[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    n: int = 100,
) -> Path | None:
    """Show the encoder's first ``n`` filters (columns of W1) as image tiles.

    Each tile is scaled to its own largest absolute weight, grey at zero. Returns the path
    written, or None when ``model.n_visible`` is not a square image.
    """
    side = image_side(model.n_visible)
    if side is None:
        return None
    w1 = np.asarray(model.weights(params)[0], dtype=np.float64)  # (n_visible, n_hidden)
    tiles = w1[:, :n].T.reshape(-1, side, side)  # (k, side, side): one filter per hidden unit
    scale = np.abs(tiles).max(axis=(1, 2), keepdims=True)
    tiles = tiles / np.where(scale > 0, scale, 1.0)  # each in [-1, 1]
    fig = _figure(6, 6.3)
    axes = fig.subplots()
    columns = math.ceil(math.sqrt(len(tiles)))
    axes.imshow(_mosaic(tiles, columns, fill=1.0), cmap="gray", vmin=-1.0, vmax=1.0)
    axes.set_title(f"Encoder filters (W1 columns, {len(tiles)} of {w1.shape[1]})")
    axes.set_axis_off()
    return _save(fig, path)


def save_training_plots(
    out_dir: str | os.PathLike[str],
    model: Autoencoder,
    params: dict[str, np.ndarray],
    history: Sequence[EpochMetrics],
    x: np.ndarray,
) -> PlotFiles:
    """Write the loss curves, reconstructions of ``x`` and the filters into ``out_dir``.

    Returns
    -------
    PlotFiles
        The files written and a note for each figure skipped.
    """
    out = Path(out_dir)
    result = PlotFiles()
    if history:
        result.files.append(plot_loss_curves(history, out / LOSS_FILE))
    else:
        result.notes.append("no epochs were trained, so there are no loss curves")
    images = [
        plot_reconstructions(model, params, x, out / RECONSTRUCTIONS_FILE),
        plot_filters(model, params, out / FILTERS_FILE),
    ]
    if None in images:
        result.notes.append(
            f"n_visible = {model.n_visible} is not a square image, so the reconstructions and "
            f"filters were not drawn"
        )
    result.files.extend(path for path in images if path is not None)
    return result


def _mosaic(tiles: np.ndarray, columns: int, *, fill: float, pad: int = 1) -> np.ndarray:
    """Arrange tiles (k, h, w) in a grid ``columns`` wide, ``pad`` pixels of ``fill`` apart."""
    k, h, w = tiles.shape
    rows = math.ceil(k / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), fill)
    for i, tile in enumerate(tiles):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[top : top + h, left : left + w] = tile
    return grid


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
