"""MNIST data: the IDX reader, the bundled sample, user directories and verified downloads.

Test files are built byte by byte here (``idx_bytes``), independently of ``write_idx``, so the
reader is not only checked against its own writer. Nothing here touches the network: downloads
are served by a fake opener or from ``file://`` URLs in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradproof as gp
from gradproof.data import mnist
from gradproof.data.download import fetch_verified
from gradproof.data.idx import read_idx, uncompressed_sha256, write_idx
from gradproof.errors import DataError, InputError

FULL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LABELS_MAGIC, IMAGES_MAGIC = 0x00000801, 0x00000803


# ---------------------------------------------------------------------------------------------
# helpers and fixtures


def idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, then the data."""
    return struct.pack(f">I{len(dims)}I", magic, *dims) + data


def put(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path``, gzip-compressed when the name ends in .gz."""
    path.write_bytes(gzip.compress(content, mtime=0) if path.suffix == ".gz" else content)
    return path


def synthetic_split(seed: int, n: int) -> tuple[bytes, bytes]:
    """Raw IDX bytes (images, labels) of ``n`` random 28 x 28 digits."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return (
        idx_bytes(IMAGES_MAGIC, (n, 28, 28), pixels.tobytes()),
        idx_bytes(LABELS_MAGIC, (n,), labels.tobytes()),
    )


SYNTHETIC = {"train": synthetic_split(seed=1, n=12), "test": synthetic_split(seed=2, n=4)}


def write_synthetic(directory: Path, suffix: dict[str, str]) -> Path:
    """Write SYNTHETIC into ``directory``, each split's files named with ``suffix[split]``."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, contents in SYNTHETIC.items():
        for name, content in zip(mnist.SPLIT_FILES[split], contents):
            put(directory / f"{name}{suffix[split]}", content)
    return directory


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """No user MNIST directory, and a throwaway cache home, whatever the developer's shell has."""
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """Synthetic MNIST: raw training files, gzipped test files."""
    return write_synthetic(tmp_path / "mnist", {"train": "", "test": ".gz"})


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A file:// mirror serving SYNTHETIC gzipped, with load_mnist's checksums pointed at it."""
    served = write_synthetic(tmp_path / "mirror", {"train": ".gz", "test": ".gz"})
    checksums = {
        name: hashlib.sha256(content).hexdigest()
        for split, contents in SYNTHETIC.items()
        for name, content in zip(mnist.SPLIT_FILES[split], contents)
    }
    monkeypatch.setattr(mnist, "SHA256", checksums)
    monkeypatch.setattr(mnist, "MIRRORS", (served.as_uri(),))
    return served


class FakeResponse(io.BytesIO):
    def __init__(self, content: bytes, content_length: int | None):
        super().__init__(content)
        self.headers = {} if content_length is None else {"Content-Length": str(content_length)}


class FakeOpener:
    """Serves fixed bytes by URL; any other URL fails like an unreachable host."""

    def __init__(self, served: dict[str, bytes], content_length: dict[str, int] | None = None):
        self.served = served
        self.content_length = content_length or {}
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float) -> FakeResponse:
        self.urls.append(url)
        if url not in self.served:
            raise urllib.error.URLError("no route to host")
        content = self.served[url]
        return FakeResponse(content, self.content_length.get(url, len(content)))


def fetch_unverifiable(directory: Path, opener: FakeOpener) -> Path:
    """Fetch labels.gz from one fake mirror; no content has the all-zero checksum."""
    return fetch_verified(
        "labels.gz", directory, sha256="0" * 64, mirrors=["https://m.example"], opener=opener
    )


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Each file's bytes and modification time, to show a directory was left alone."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


# ---------------------------------------------------------------------------------------------
# the bundled sample


def test_sample_training_split_is_the_first_5000_real_digits():
    images, labels = gp.load_mnist("train")
    assert images.shape == (5000, 784)
    assert images.dtype == np.float64
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == np.uint8 and labels.shape == (5000,)
    assert set(np.unique(labels)) == set(range(10))
    # The first ten training labels of real MNIST.
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # Pixels are bytes / 255, so scaling back gives integers.
    np.testing.assert_array_equal(images * 255, np.round(images * 255))


def test_sample_test_split_is_the_first_1000_real_digits():
    images, labels = gp.load_mnist("test")
    assert images.shape == (1000, 784)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.max() <= 9
    assert labels[:3].tolist() == [7, 2, 1]


def test_sample_limit_and_float32():
    images, labels = gp.load_mnist("train", limit=7, dtype=np.float32)
    full, full_labels = gp.load_mnist("train")
    assert images.shape == (7, 784) and images.dtype == np.float32
    np.testing.assert_allclose(images, full[:7], rtol=1e-7)
    np.testing.assert_array_equal(labels, full_labels[:7])


def test_limit_beyond_the_data_keeps_everything():
    images, _ = gp.load_mnist("test", limit=10**6)
    assert images.shape == (1000, 784)


def test_sample_is_small_and_attributed():
    files = sorted(mnist.SAMPLE_DIR.glob("*.gz"))
    names = [name for pair in mnist.SPLIT_FILES.values() for name in pair]
    assert [f.name for f in files] == sorted(f"{name}.gz" for name in names)
    assert sum(f.stat().st_size for f in files) <= 2 * 1024 * 1024
    note = (mnist.SAMPLE_DIR / "README.md").read_text()
    for words in ("LeCun", "Cortes", "Burges", "CC BY-SA 3.0", "first 5000", "first 1000"):
        assert words in note


def test_mnist_source_describes_each_source(tmp_path, monkeypatch):
    assert "bundled MNIST sample" in mnist.mnist_source()
    cache = tmp_path / "cache"
    assert str(cache) in mnist.mnist_source(download=True, cache_dir=cache)
    assert "data_dir argument" in mnist.mnist_source(data_dir=tmp_path)
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
    assert "GRADPROOF_MNIST_DIR" in mnist.mnist_source(download=True)
    assert "data_dir argument" in mnist.mnist_source(data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# IDX round trip


@settings(max_examples=30, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(0, 40)),
        st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(1, 9)),
    ),
    gzipped=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_write_then_read_round_trips(tmp_path_factory, shape, gzipped, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gzipped else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # the result is an ordinary writable array


def test_writer_matches_the_format_byte_for_byte(tmp_path):
    labels = np.array([5, 0, 4], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == idx_bytes(LABELS_MAGIC, (3,), bytes([5, 0, 4]))


def test_gzip_output_is_deterministic(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # wraps mod 256
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b.gz", images)
    first = (tmp_path / "a.gz").read_bytes()
    assert first == (tmp_path / "b.gz").read_bytes()
    assert first[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz", "b.gz"]  # no temporary files


@pytest.mark.parametrize(
    "array",
    [np.zeros((2, 3), dtype=np.uint8), np.zeros(3, dtype=np.float64)],
    ids=["2d", "float"],
)
def test_write_idx_rejects_what_it_cannot_store(tmp_path, array):
    with pytest.raises(InputError, match="write_idx"):
        write_idx(tmp_path / "x", array)


# ---------------------------------------------------------------------------------------------
# bad IDX files: each a DataError naming the file and what was expected


@pytest.mark.parametrize(
    ("magic", "dims"),
    [(0x00000802, (2, 2)), (0x00000D03, (1, 1, 1)), (0x12345678, (1,))],
    ids=["two-dims", "float-type", "garbage"],
)
def test_wrong_magic_number(tmp_path, magic, dims):
    path = put(tmp_path / "bad-idx", idx_bytes(magic, dims, bytes(4)))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "0x00000801" in message and "0x00000803" in message
    assert f"0x{magic:08x}" in message


def test_labels_where_images_are_required(tmp_path):
    path = put(tmp_path / "labels", idx_bytes(LABELS_MAGIC, (1,), b"\x03"))
    with pytest.raises(DataError, match="expected magic number 0x00000803 .images., found 0x0+801"):
        read_idx(path, ndim=3)


def test_gzip_data_in_a_raw_named_file_gets_a_hint(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(LABELS_MAGIC, (1,), b"\x03")))
    with pytest.raises(DataError, match="looks gzip-compressed"):
        read_idx(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x00\x00", "too short for the 4-byte magic"),
        (struct.pack(">I", IMAGES_MAGIC) + struct.pack(">I", 2), "truncated IDX header"),
        (idx_bytes(IMAGES_MAGIC, (2, 28, 28), bytes(784 + 10)), "truncated file or wrong header"),
    ],
    ids=["magic", "dims", "data"],
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_file(tmp_path, content, words, suffix):
    path = put(tmp_path / f"images{suffix}", content)
    with pytest.raises(DataError, match=words) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_data_message_says_expected_and_found(tmp_path):
    path = put(tmp_path / "images", idx_bytes(IMAGES_MAGIC, (2, 28, 28), bytes(100)))
    with pytest.raises(DataError, match=r"2 x 28 x 28 \(1568 data bytes\), but the file holds 100"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_extra_bytes_after_the_data(tmp_path, suffix):
    path = put(tmp_path / f"labels{suffix}", idx_bytes(LABELS_MAGIC, (3,), bytes(5)))
    with pytest.raises(DataError, match="extra bytes after the data: the header declares 3 "):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_absurd_header_fails_without_allocating(tmp_path, suffix):
    # 2**31 images of 28 x 28 would be 1.6 TB; the file holds 1 KiB.
    path = put(tmp_path / f"images{suffix}", idx_bytes(IMAGES_MAGIC, (2**31, 28, 28), bytes(1024)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="2147483648 x 28 x 28") as info:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert str(path) in str(info.value)


def test_gz_file_that_is_not_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(IMAGES_MAGIC, (1, 28, 28), bytes(784)))
    with pytest.raises(DataError, match="named .gz but not valid gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_stream_cut_short(tmp_path):
    path = tmp_path / "images.gz"
    compressed = gzip.compress(idx_bytes(IMAGES_MAGIC, (1, 28, 28), bytes(range(256)) * 4)[:800])
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="gzip data is truncated or corrupt"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read the file") as info:
        read_idx(tmp_path / "nothing-here")
    assert "nothing-here" in str(info.value)


# ---------------------------------------------------------------------------------------------
# a directory the user names


def test_data_dir_with_raw_and_gzipped_files(mnist_dir):
    for split, (images_raw, labels_raw) in SYNTHETIC.items():
        images, labels = gp.load_mnist(split, data_dir=mnist_dir)
        expected = np.frombuffer(images_raw[16:], dtype=np.uint8).reshape(-1, 784) / 255
        np.testing.assert_array_equal(images, expected)
        np.testing.assert_array_equal(labels, np.frombuffer(labels_raw[8:], dtype=np.uint8))


def test_env_var_names_the_directory(mnist_dir, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(mnist_dir))
    images, _ = gp.load_mnist("train")
    assert images.shape == (12, 784)


def test_data_dir_wins_over_env_var(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "elsewhere"))
    images, _ = gp.load_mnist("test", data_dir=mnist_dir)
    assert images.shape == (4, 784)


def test_env_var_wins_over_download(mnist_dir, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(mnist_dir))
    monkeypatch.setattr(mnist, "MIRRORS", ())  # any download attempt would fail
    images, _ = gp.load_mnist("test", download=True)
    assert images.shape == (4, 784)


def test_data_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError, match="does not exist") as info:
        gp.load_mnist(data_dir=missing)
    assert str(missing) in str(info.value) and "data_dir argument" in str(info.value)


def test_env_dir_that_does_not_exist_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match="GRADPROOF_MNIST_DIR.*does not exist"):
        gp.load_mnist()


def test_data_dir_that_is_a_file(tmp_path):
    path = put(tmp_path / "file", b"x")
    with pytest.raises(DataError, match="is not a directory"):
        gp.load_mnist(data_dir=path)


def test_missing_files_are_listed(tmp_path):
    directory = write_synthetic(tmp_path / "partial", {"train": "", "test": ""})
    (directory / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        gp.load_mnist("test", data_dir=directory)
    message = str(info.value)
    assert str(directory) in message
    assert "t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz" in message
    assert "t10k-images" not in message  # that one was found


def test_images_and_labels_disagree_on_the_count(tmp_path):
    directory = write_synthetic(tmp_path / "d", {"train": "", "test": ""})
    put(directory / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, (3,), bytes(3)))
    with pytest.raises(DataError, match="holds 4 images but .* holds 3 labels") as info:
        gp.load_mnist("test", data_dir=directory)
    assert "t10k-images-idx3-ubyte" in str(info.value)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_images_that_are_not_28_by_28(tmp_path):
    directory = write_synthetic(tmp_path / "d", {"train": "", "test": ""})
    put(directory / "t10k-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, (4, 27, 27), bytes(4 * 729)))
    with pytest.raises(DataError, match="expected 28 x 28 images, found 27 x 27"):
        gp.load_mnist("test", data_dir=directory)


def test_labels_that_are_not_digits(tmp_path):
    directory = write_synthetic(tmp_path / "d", {"train": "", "test": ""})
    put(directory / "t10k-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, (4,), bytes([1, 2, 12, 3])))
    with pytest.raises(DataError, match="0..9, found the label 12"):
        gp.load_mnist("test", data_dir=directory)


@pytest.mark.parametrize("split", ["validation", "TRAIN", None], ids=str)
def test_unknown_split(split):
    with pytest.raises(InputError, match="unknown MNIST split.*'train', 'test'"):
        gp.load_mnist(split)


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "10"], ids=repr)
def test_bad_limit(limit):
    with pytest.raises(InputError, match="limit must be a positive integer"):
        gp.load_mnist(limit=limit)


@pytest.mark.parametrize("dtype", [np.int32, "uint8", "not-a-dtype"], ids=str)
def test_bad_dtype(dtype):
    with pytest.raises(InputError, match="dtype must be a floating type"):
        gp.load_mnist(dtype=dtype)


# ---------------------------------------------------------------------------------------------
# downloads (offline: fake opener or file:// URLs)


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.default_cache_dir() == tmp_path / "xdg" / "gradproof" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as XDG asks
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.default_cache_dir() == tmp_path / "home" / ".cache" / "gradproof" / "mnist"


def test_fetch_verified_reports_progress_and_leaves_only_the_file(tmp_path):
    content = idx_bytes(LABELS_MAGIC, (3,), bytes([1, 2, 3]))
    opener = FakeOpener({"https://m.example/labels.gz": gzip.compress(content)})
    calls = []
    path = fetch_verified(
        "labels.gz",
        tmp_path,
        sha256=hashlib.sha256(content).hexdigest(),
        mirrors=["https://m.example/"],
        opener=opener,
        progress=lambda done, total, name: calls.append((done, total, name)),
    )
    size = len(opener.served["https://m.example/labels.gz"])
    assert path == tmp_path / "labels.gz"
    assert calls[0] == (0, size, "labels.gz") and calls[-1] == (size, size, "labels.gz")
    assert read_idx(path).tolist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["labels.gz"]


def test_fetch_tries_the_next_mirror(tmp_path):
    content = idx_bytes(LABELS_MAGIC, (1,), b"\x07")
    opener = FakeOpener({"https://second.example/mnist/labels.gz": gzip.compress(content)})
    fetch_verified(
        "labels.gz",
        tmp_path,
        sha256=hashlib.sha256(content).hexdigest(),
        mirrors=["https://first.example/mnist", "https://second.example/mnist/"],
        opener=opener,
    )
    assert opener.urls == [
        "https://first.example/mnist/labels.gz",
        "https://second.example/mnist/labels.gz",
    ]
    assert uncompressed_sha256(tmp_path / "labels.gz") == hashlib.sha256(content).hexdigest()


def test_every_mirror_failing_lists_each_url(tmp_path):
    with pytest.raises(DataError) as info:
        fetch_verified(
            "labels.gz",
            tmp_path,
            sha256="0" * 64,
            mirrors=["https://a.example/", "https://b.example/"],
            opener=FakeOpener({}),
        )
    message = str(info.value)
    assert "could not download labels.gz" in message and str(tmp_path) in message
    assert "https://a.example/labels.gz: <urlopen error no route to host>" in message
    assert "https://b.example/labels.gz" in message
    assert list(tmp_path.iterdir()) == []


def test_incomplete_download_is_rejected(tmp_path):
    url = "https://m.example/labels.gz"
    opener = FakeOpener({url: gzip.compress(b"abc")}, content_length={url: 1000})
    with pytest.raises(DataError, match="incomplete download"):
        fetch_unverifiable(tmp_path, opener)
    assert list(tmp_path.iterdir()) == []


def test_download_that_is_not_gzip_is_rejected(tmp_path):
    url = "https://m.example/labels.gz"
    opener = FakeOpener({url: b"<html>not found</html>"})
    with pytest.raises(DataError, match="not valid gzip data"):
        fetch_unverifiable(tmp_path, opener)
    assert list(tmp_path.iterdir()) == []


def test_load_mnist_downloads_into_the_cache_once(mirror, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    seen = []
    images, labels = gp.load_mnist(
        "test", download=True, cache_dir=cache, progress=lambda *call: seen.append(call)
    )
    assert images.shape == (4, 784)
    assert sorted(p.name for p in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert {name for _, _, name in seen} == {f"{name}.gz" for name in mnist.SPLIT_FILES["test"]}
    # The second time the cache serves it: with no mirrors at all, it still loads.
    monkeypatch.setattr(mnist, "MIRRORS", ())
    again, again_labels = gp.load_mnist("test", download=True, cache_dir=cache)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)


def test_download_goes_to_the_xdg_cache_by_default(mirror, tmp_path):
    gp.load_mnist("test", download=True)
    cached = tmp_path / "xdg-cache" / "gradproof" / "mnist"
    assert (cached / "t10k-images-idx3-ubyte.gz").is_file()


def test_without_download_nothing_is_fetched(mirror, tmp_path):
    images, _ = gp.load_mnist("test", cache_dir=tmp_path / "cache")
    assert images.shape == (1000, 784)  # the bundled sample
    assert not (tmp_path / "cache").exists()


def test_checksum_mismatch_removes_only_the_bad_download(mirror, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    # Already cached: the labels, and a file of the user's own.
    put(cache / "t10k-labels-idx1-ubyte.gz", SYNTHETIC["test"][1])
    put(cache / "notes.txt", b"mine")
    before = snapshot(cache)
    # The mirror now serves images whose content is not the published one.
    tampered = SYNTHETIC["test"][0][:-1] + b"\x01"
    put(mirror / "t10k-images-idx3-ubyte.gz", tampered)
    expected = mnist.SHA256["t10k-images-idx3-ubyte"]
    with pytest.raises(DataError) as info:
        gp.load_mnist("test", download=True, cache_dir=cache)
    message = str(info.value)
    assert f"expected SHA-256 {expected}" in message
    assert f"got {hashlib.sha256(tampered).hexdigest()}" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert snapshot(cache) == before  # bad download gone, the rest untouched


# ---------------------------------------------------------------------------------------------
# a full MNIST already in the cache, used without download=True


@pytest.fixture
def checksums(monkeypatch) -> dict[str, str]:
    """load_mnist's checksums pointed at SYNTHETIC, which then stands for the full MNIST."""
    sums = {
        name: hashlib.sha256(content).hexdigest()
        for split, contents in SYNTHETIC.items()
        for name, content in zip(mnist.SPLIT_FILES[split], contents)
    }
    monkeypatch.setattr(mnist, "SHA256", sums)
    monkeypatch.setattr(mnist, "MIRRORS", ())  # any download attempt would fail
    return sums


def test_a_verified_full_set_in_the_cache_is_used_without_download(tmp_path, checksums):
    cache = write_synthetic(tmp_path / "cache", {"train": ".gz", "test": ""})
    for split, count in (("train", 12), ("test", 4)):
        result = gp.load_mnist(split, cache_dir=cache)
        assert result.images.shape == (count, 784)
        assert result.source == f"the full MNIST in the cache {cache} (verified by SHA-256)"
    assert mnist.mnist_source(cache_dir=cache) == result.source


def test_the_default_cache_is_looked_in_too(tmp_path, checksums):
    write_synthetic(tmp_path / "xdg-cache" / "gradproof" / "mnist", {"train": "", "test": ""})
    images, labels = gp.load_mnist("test")  # still unpacks as a pair
    assert images.shape == (4, 784) and labels.shape == (4,)


def test_a_cached_file_that_fails_its_checksum_falls_back_to_the_sample_and_says_why(tmp_path, checksums):
    cache = write_synthetic(tmp_path / "cache", {"train": "", "test": ""})
    put(cache / "t10k-labels-idx1-ubyte", SYNTHETIC["test"][1][:-1] + b"\x09")
    result = gp.load_mnist("test", cache_dir=cache)
    assert result.images.shape == (mnist.SAMPLE_SIZES["test"], 784)
    assert result.source.startswith("the bundled MNIST sample")
    assert result.source.endswith(
        f"; not the cache {cache}, whose t10k-labels-idx1-ubyte does not match MNIST's SHA-256"
    )
    assert gp.load_mnist("train", cache_dir=cache).images.shape == (12, 784)  # train verifies


def test_a_partial_cache_is_not_mixed_with_the_sample(tmp_path, checksums):
    cache = write_synthetic(tmp_path / "cache", {"train": "", "test": ""})
    (cache / "t10k-images-idx3-ubyte").unlink()
    result = gp.load_mnist("train", cache_dir=cache)
    assert len(result.images) == mnist.SAMPLE_SIZES["train"]
    assert result.source.endswith("whose full set lacks t10k-images-idx3-ubyte")


def test_without_a_cache_the_sample_is_used_and_named(tmp_path):
    result = gp.load_mnist("test", limit=3, cache_dir=tmp_path / "nothing")
    assert result.source == mnist.mnist_source() == (
        "the bundled MNIST sample (the first 5000 training and the first 1000 test images)"
    )


# ---------------------------------------------------------------------------------------------
# the full MNIST, where the development machine has it


@pytest.mark.skipif(
    not FULL_MNIST.is_dir(), reason="no full MNIST in shared/data/mnist beside the repository"
)
def test_full_mnist_matches_published_checksums_and_counts():
    for names in mnist.SPLIT_FILES.values():
        for name in names:
            with gzip.open(FULL_MNIST / f"{name}.gz", "rb") as stream:
                assert hashlib.sha256(stream.read()).hexdigest() == mnist.SHA256[name]
    for split, count in (("train", 60000), ("test", 10000)):
        images, labels = gp.load_mnist(split, data_dir=FULL_MNIST)
        assert images.shape == (count, 784) and labels.shape == (count,)
        # The bundled sample is exactly the first images of the full set.
        sample_images, sample_labels = gp.load_mnist(split)
        n = mnist.SAMPLE_SIZES[split]
        np.testing.assert_array_equal(sample_images, images[:n])
        np.testing.assert_array_equal(sample_labels, labels[:n])
    assert labels.max() == 9
