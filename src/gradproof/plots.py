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
# Images shown beside their reconstructions, and images the filters' statistics come from.
RECONSTRUCTED = 16
FILTER_STATISTICS = 2000


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


def filter_tiles(
    model: Autoencoder, params: dict[str, np.ndarray], x: np.ndarray, *, n: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The encoder's filters as the picture shows them, most active unit first.

    A raw column of W1 looks like speckle: the weights of pixels that are 0 in every training
    image (MNIST's border) keep their random initial values, since no gradient reaches them. Each weight is
    therefore multiplied by its pixel's standard deviation over ``x``, which is how much that
    pixel can move the unit; such pixels become exactly 0 (grey). Each tile is then scaled to
    its own 99th percentile of |value| (clipped to [-1, 1]), so one outlier does not grey out
    the rest, and weak units show their pattern as clearly as strong ones.

    Parameters
    ----------
    model : Autoencoder
        With a square ``n_visible``.
    params : dict of str to ndarray
    x : ndarray, shape (m, n_visible)
        Images the statistics come from (m >= 1).
    n : int
        How many units to show at most.

    Returns
    -------
    tiles : ndarray, shape (k, side, side)
        In [-1, 1]; k = min(n, hidden units).
    units : ndarray of int, shape (k,)
        The hidden unit (column of W1) of each tile.
    mean_activation : ndarray, shape (k,)
        Each unit's mean activation over ``x``, the order of the tiles (descending).
    """
    side = image_side(model.n_visible)
    if side is None:
        raise ValueError(f"n_visible = {model.n_visible} is not a square image")
    x = np.asarray(x, dtype=np.float64)  # (m, n_visible)
    _, cache = model.forward(params, x)
    activity = np.asarray(cache.activations[1], dtype=np.float64).mean(axis=0)  # (n_hidden,)
    units = np.argsort(-activity, kind="stable")[:n]  # (k,)
    w1 = np.asarray(model.weights(params)[0], dtype=np.float64)  # (n_visible, n_hidden)
    # A constant pixel's std can round to 1e-17 rather than 0: its spread is set to 0 exactly.
    spread = np.where(np.ptp(x, axis=0) > 0, x.std(axis=0), 0.0)  # (n_visible,)
    effect = w1[:, units] * spread[:, None]  # (n_visible, k): weight x pixel spread
    tiles = effect.T.reshape(-1, side, side)  # (k, side, side): one filter per hidden unit
    scale = np.percentile(np.abs(tiles), 99, axis=(1, 2), keepdims=True)  # (k, 1, 1)
    tiles = np.clip(tiles / np.where(scale > 0, scale, 1.0), -1.0, 1.0)
    return tiles, units, activity[units]


def plot_filters(
    model: Autoencoder,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    path: str | os.PathLike[str],
    *,
    n: int = 100,
) -> Path | None:
    """Show the encoder's filters of the ``n`` most active hidden units as image tiles.

    See ``filter_tiles`` for what a tile shows. Returns the path written, or None when
    ``model.n_visible`` is not a square image.
    """
    if image_side(model.n_visible) is None:
        return None
    tiles, units, activity = filter_tiles(model, params, x, n=n)
    fig = _figure(6, 6.6)
    axes = fig.subplots()
    columns = math.ceil(math.sqrt(len(tiles)))
    axes.imshow(_mosaic(tiles, columns, fill=1.0), cmap="gray", vmin=-1.0, vmax=1.0)
    hidden = model.weights(params)[0].shape[1]
    axes.set_title(
        f"Encoder filters: {len(tiles)} of {hidden} hidden units, most active first\n"
        f"(mean activation {activity[0]:.2g} to {activity[-1]:.2g} over {len(x)} images)\n"
        "W1 column x pixel std: light raises the unit, dark lowers it, grey never varies",
        fontsize=9,
    )
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

    The first ``RECONSTRUCTED`` images of ``x`` are reconstructed; the filters' statistics
    come from the first ``FILTER_STATISTICS`` images.

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
        plot_reconstructions(model, params, x, out / RECONSTRUCTIONS_FILE, n=RECONSTRUCTED),
        plot_filters(model, params, x[:FILTER_STATISTICS], out / FILTERS_FILE),
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
