"""Fixtures for every test: MNIST comes from the bundled sample, whatever the machine caches.

``load_mnist`` uses a full MNIST it finds in the user's cache; the tests that count on the
sample's 5000 images get an empty cache home instead.
"""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def _empty_cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("empty-cache-home")


@pytest.fixture(autouse=True)
def _no_cached_mnist(monkeypatch, _empty_cache_home):
    monkeypatch.setenv("XDG_CACHE_HOME", str(_empty_cache_home))


@pytest.fixture
def octave():
    """Skip without octave-cli, or fail in CI: CI installs it (.ci/run), so a skip there would
    hide a broken install."""
    if shutil.which("octave-cli") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("octave-cli is missing in CI, which must install it (.ci/run)")
        pytest.skip("GNU Octave (octave-cli) is not installed")
