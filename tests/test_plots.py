"""Training plots: PNG files for square images, a note instead of figures for other shapes."""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.checkpoint import EpochMetrics
from gradproof.nn.autoencoder import Autoencoder
from gradproof.plots import image_side, save_training_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    EpochMetrics(epoch=1, step=2, loss=9.0, train_error=5.0, test_error=5.5, seconds=0.1),
    EpochMetrics(epoch=2, step=4, loss=7.0, train_error=4.0, test_error=None, seconds=0.1),
]


@pytest.mark.parametrize(("n", "side"), [(784, 28), (16, 4), (1, 1), (10, None), (783, None)])
def test_image_side_is_the_square_root_when_there_is_one(n, side):
    assert image_side(n) == side


def test_square_images_get_all_three_figures(tmp_path):
    model = Autoencoder(n_visible=16, n_hidden=5)
    x = np.random.default_rng(0).random((7, 16))
    plots = save_training_plots(tmp_path / "plots", model, model.init_params(), HISTORY, x)
    assert [path.name for path in plots.files] == ["loss.png", "reconstructions.png", "filters.png"]
    assert plots.notes == []
    for path in plots.files:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_other_shapes_get_the_loss_curves_and_a_note(tmp_path):
    model = Autoencoder(n_visible=10, n_hidden=4)
    x = np.random.default_rng(0).random((3, 10))
    plots = save_training_plots(tmp_path, model, model.init_params(), HISTORY, x)
    assert [path.name for path in plots.files] == ["loss.png"]
    assert "n_visible = 10 is not a square image" in plots.notes[0]


def test_no_history_means_no_loss_curves_and_says_so(tmp_path):
    model = Autoencoder(n_visible=16, n_hidden=5)
    x = np.random.default_rng(0).random((3, 16))
    plots = save_training_plots(tmp_path, model, model.init_params(), [], x)
    assert "loss.png" not in [path.name for path in plots.files]
    assert "no epochs" in plots.notes[0]


def test_filter_tiles_weigh_each_pixel_by_its_spread_and_put_the_most_active_unit_first():
    from gradproof.plots import filter_tiles

    model = Autoencoder(n_visible=16, n_hidden=5)
    params = model.init_params(seed=2)
    params["b1"] = np.array([-40.0, 40.0, 0.0, -20.0, 20.0])  # dominates x @ W1 (|.| < 10)
    x = np.random.default_rng(2).random((40, 16))
    x[:, 0] = 0.3  # a pixel that never varies, like MNIST's border
    tiles, units, activity = filter_tiles(model, params, x, n=4)
    assert list(units) == [1, 4, 2, 3] and np.all(np.diff(activity) < 0)
    assert tiles.shape == (4, 4, 4) and np.abs(tiles).max() <= 1.0
    assert np.all(tiles[:, 0, 0] == 0.0)  # the constant pixel is grey in every tile
    # Below the clipping, a tile is W1's column times the pixels' spread, up to a positive factor.
    effect = params["W1"][:, 1] * x.std(axis=0)
    shown = tiles[0].ravel()
    kept = (np.abs(shown) < 1.0) & (shown != 0.0)  # unclipped, and not the constant pixel
    ratio = shown[kept] / effect[kept]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    assert ratio[0] > 0
