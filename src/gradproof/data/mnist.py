"""MNIST as float arrays: where the files come from, and loading one split.

Where the files come from, first match wins:

1. the ``data_dir`` argument;
2. the environment variable ``GRADPROOF_MNIST_DIR``;
3. with ``download=True``, the cache directory (``cache_dir``, else
   ``$XDG_CACHE_HOME/gradproof/mnist``, else ``~/.cache/gradproof/mnist``): files missing there
   are downloaded from the public mirrors and verified by the SHA-256 of their uncompressed
   content;
4. without ``download``, the full MNIST already in that cache: all four files present, and
   the split's two verified by the same SHA-256 (a file that does not match is never used);
5. the sample bundled with the package: the first 5000 training and the first 1000 test
   images of MNIST (attribution in ``sample/README.md``).

``load_mnist`` says which it used: its result unpacks as ``(images, labels)`` and carries
``source``, the description the command line prints.

A directory holds the standard files, each raw or gzipped: ``train-images-idx3-ubyte[.gz]``,
``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from gradproof.data.download import ProgressCallback, fetch_verified
from gradproof.data.idx import read_idx, uncompressed_sha256
from gradproof.errors import DataError, InputError

ENV_VAR = "GRADPROOF_MNIST_DIR"

# Split -> (images file, labels file), without the optional .gz suffix.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the uncompressed files, as published with the dataset's public mirrors.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Base URLs serving the gzipped files, tried in turn.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
# Split -> number of images in the bundled sample (the first ones of the full set).
SAMPLE_SIZES: dict[str, int] = {"train": 5000, "test": 1000}

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


@dataclass(frozen=True)
class _Source:
    """A directory of MNIST files and why it was chosen."""

    directory: Path
    origin: str  # what chose it, as error messages name it
    download: bool  # fetch missing files into ``directory``
    description: str  # for people, as ``mnist_source`` returns it


def default_cache_dir() -> Path:
    """The per-user download cache: ``$XDG_CACHE_HOME/gradproof/mnist`` or ``~/.cache/...``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG base-directory rules ask.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "gradproof" / "mnist"


def _user_directory(directory: str | os.PathLike[str], origin: str) -> _Source:
    path = Path(directory).expanduser()
    return _Source(path, origin, False, f"MNIST files in {path} (from {origin})")


def _resolve(
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    cache_dir: str | os.PathLike[str] | None,
    split: str = "train",
) -> _Source:
    """Pick the source: data_dir, then the environment variable, then the cache (downloading
    with ``download``, else only a verified full set), then the sample."""
    if data_dir is not None:
        return _user_directory(data_dir, "the data_dir argument")
    if os.environ.get(ENV_VAR):
        return _user_directory(os.environ[ENV_VAR], f"the environment variable {ENV_VAR}")
    cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    if download:
        description = f"MNIST in the cache {cache}, downloaded from public mirrors when missing"
        return _Source(cache, "the download cache", True, description)
    unverified = _unverified(cache, split)
    if not unverified:
        description = f"the full MNIST in the cache {cache} (verified by SHA-256)"
        return _Source(cache, "the download cache", False, description)
    description = (
        f"the bundled MNIST sample (the first {SAMPLE_SIZES['train']} training and "
        f"the first {SAMPLE_SIZES['test']} test images)"
    )
    if unverified != "absent":
        description += f"; not the cache {cache}, whose {unverified}"
    return _Source(SAMPLE_DIR, "the bundled sample", False, description)


def _unverified(cache: Path, split: str) -> str:
    """Why the cache does not hold a usable full MNIST for ``split``: ``"absent"`` when it has
    none of it, else what is missing or fails its SHA-256; ``""`` when it is usable."""
    files = {name: _existing(cache, name) for names in SPLIT_FILES.values() for name in names}
    found = {name: path for name, path in files.items() if path is not None}
    if not found:
        return "absent"
    if len(found) < len(files):
        return f"full set lacks {', '.join(name for name in files if name not in found)}"
    wrong = [name for name in SPLIT_FILES[split] if not _matches(found[name], SHA256[name])]
    if not wrong:
        return ""
    return f"{' and '.join(wrong)} do{'es' if len(wrong) == 1 else ''} not match MNIST's SHA-256"


# (path, size, mtime) -> whether the file's uncompressed content has the expected SHA-256:
# each file is hashed once per process, not at every load.
_VERIFIED: dict[tuple[str, int, int], bool] = {}


def _matches(path: Path, sha256: str) -> bool:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        try:
            _VERIFIED[key] = uncompressed_sha256(path) == sha256
        except DataError:  # unreadable or bad gzip: not MNIST either
            _VERIFIED[key] = False
    return _VERIFIED[key]


def mnist_source(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
) -> str:
    """Describe, for people, where ``load_mnist`` with these arguments reads MNIST from.

    Nothing is downloaded; a full MNIST in the cache is verified (hashed) as ``load_mnist``
    would. The arguments mean what they mean for ``load_mnist``.
    """
    return _resolve(data_dir, download, cache_dir, split).description


def _existing(directory: Path, name: str) -> Path | None:
    """``directory/name``, else ``directory/name.gz``, else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _prepare_directory(source: _Source) -> None:
    directory = source.directory
    if source.download:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"cannot create the MNIST cache directory {directory}: {exc.strerror or exc}"
            ) from exc
    elif not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"MNIST directory {directory} (from {source.origin}) {problem}")


def _locate(
    source: _Source, split: str, progress: ProgressCallback | None
) -> tuple[Path, Path]:
    """The split's (images, labels) files in ``source``, downloaded first where allowed."""
    _prepare_directory(source)
    found: list[Path] = []
    missing: list[str] = []
    for name in SPLIT_FILES[split]:
        path = _existing(source.directory, name)
        if path is None and source.download:
            path = fetch_verified(
                f"{name}.gz",
                source.directory,
                sha256=SHA256[name],
                mirrors=MIRRORS,
                progress=progress,
            )
        if path is None:
            missing.append(f"{name} or {name}.gz")
        else:
            found.append(path)
    if missing:
        raise DataError(
            f"MNIST directory {source.directory} (from {source.origin}) lacks the {split} "
            f"files: looked for {' and '.join(missing)}"
        )
    images_path, labels_path = found
    return images_path, labels_path


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check an images file and its labels file."""
    images = read_idx(images_path, ndim=3)  # (n, 28, 28) uint8
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: expected 28 x 28 images, found {images.shape[1]} x {images.shape[2]}"
        )
    labels = read_idx(labels_path, ndim=1)  # (n,) uint8
    if len(labels) != len(images):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the counts must agree"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise DataError(
            f"{labels_path}: expected digit labels 0..9, found the label {labels.max()}"
        )
    return images, labels


def _check_options(split: object, limit: object, dtype: DTypeLike) -> tuple[int | None, np.dtype]:
    if not isinstance(split, str) or split not in SPLIT_FILES:
        raise InputError(
            f"unknown MNIST split {split!r}: expected one of {', '.join(map(repr, SPLIT_FILES))}"
        )
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise InputError(f"limit must be a positive integer or None, got {limit!r}")
        limit = int(limit)
    try:
        float_dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be a floating type such as float64, got {dtype!r}") from None
    if float_dtype.kind != "f":
        raise InputError(f"dtype must be a floating type such as float64, got {float_dtype}")
    return limit, float_dtype


class MnistSplit(tuple):
    """``(images, labels)``, unpacking as a pair, with ``source``: where they were read from.

    Attributes
    ----------
    images : np.ndarray, shape (n, 784)
    labels : np.ndarray of uint8, shape (n,)
    source : str
        For people: the directory, the verified cache or the bundled sample, and why.
    """

    source: str

    def __new__(cls, images: np.ndarray, labels: np.ndarray, source: str) -> MnistSplit:
        split = super().__new__(cls, (images, labels))
        split.source = source
        return split

    @property
    def images(self) -> np.ndarray:
        return self[0]

    @property
    def labels(self) -> np.ndarray:
        return self[1]


def load_mnist(
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    dtype: DTypeLike = np.float64,
    progress: ProgressCallback | None = None,
) -> MnistSplit:
    """Load one split of MNIST as pixel rows in [0, 1] and digit labels.

    Parameters
    ----------
    split : {"train", "test"}
        The 60000 training or 10000 test images (5000 / 1000 in the bundled sample).
    data_dir : str or PathLike, optional
        A directory holding the MNIST files (raw or ``.gz``); overrides everything else.
    download : bool
        When neither ``data_dir`` nor ``GRADPROOF_MNIST_DIR`` is given: use the download
        cache, fetching missing files from the public mirrors. Without it (and without a
        directory) a full MNIST already in the cache is used when its files match their
        SHA-256, else the bundled sample; nothing touches the network.
    cache_dir : str or PathLike, optional
        The download cache; default ``$XDG_CACHE_HOME/gradproof/mnist`` or
        ``~/.cache/gradproof/mnist``.
    limit : int, optional
        Keep only the first ``limit`` images (all of them when fewer exist).
    dtype : floating dtype
        The images' dtype, float64 by default.
    progress : callable, optional
        ``progress(done_bytes, total_bytes, filename)`` during a download; ``total_bytes``
        is None when the server does not send it.

    Returns
    -------
    MnistSplit
        Unpacks as ``images, labels``; ``.source`` says where they came from.
    images : np.ndarray, shape (n, 784)
        Each row one 28 x 28 image in row-major order, pixel bytes divided by 255.
    labels : np.ndarray of uint8, shape (n,)
        The digits 0..9.

    Raises
    ------
    InputError
        For an unknown split, a bad ``limit`` or a non-floating ``dtype``.
    DataError
        Naming the directory or file: a directory that does not exist, missing files (with
        the names looked for), a malformed IDX file, images and labels that disagree, or a
        download that failed or did not match its checksum.
    """
    limit, float_dtype = _check_options(split, limit, dtype)
    source = _resolve(data_dir, download, cache_dir, split)
    images_path, labels_path = _locate(source, split, progress)
    images, labels = _read_split(images_path, labels_path)
    images, labels = images[:limit], labels[:limit].copy()  # a slice of None keeps all
    pixels = images.reshape(len(images), -1).astype(float_dtype)  # (n, 784)
    pixels /= 255  # pixel bytes 0..255 -> [0, 1]
    return MnistSplit(pixels, labels, source.description)
