"""IDX files (the format MNIST ships in), raw or gzip-compressed: read, validate, write.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the data in C
order. The magic number is two zero bytes, a type code and the number of dimensions. gradproof
reads the two kinds MNIST uses, both unsigned bytes (type code 0x08): labels in one dimension
(magic 0x00000801) and images in three (magic 0x00000803). A path ending in ``.gz`` is read
through gzip; any other path is read as it is.

Validation comes before allocation: the header's dimensions are checked against the number of
bytes that actually follow, and a gzip stream is decompressed in chunks and never past the
size the header declares, so a corrupt header declaring 2**31 images fails with a
``DataError`` instead of asking for a terabyte.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gradproof.data.atomic import atomic_write
from gradproof.errors import DataError, InputError

_UBYTE = 0x08
# Number of dimensions -> what an MNIST file with that many dimensions holds.
_KIND_BY_NDIM = {1: "labels", 3: "images"}
_CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 0xFFFFFFFF  # a dimension is stored as a uint32


def _magic(ndim: int) -> int:
    return (_UBYTE << 8) | ndim


def _expected_magic(ndim: int | None) -> str:
    ndims = sorted(_KIND_BY_NDIM) if ndim is None else [ndim]
    return " or ".join(f"0x{_magic(d):08x} ({_KIND_BY_NDIM[d]})" for d in ndims)


def _is_gzip_name(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def _shape_text(dims: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in dims)


@contextlib.contextmanager
def _opened(path: Path, gzipped: bool) -> Iterator[BinaryIO]:
    """Open ``path`` for reading (through gzip if asked); read failures become DataError."""
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as stream:
            yield stream
    except gzip.BadGzipFile as exc:  # a subclass of OSError, so it comes first
        raise DataError(f"{path}: named .gz but not valid gzip data ({exc})") from exc
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{path}: the gzip data is truncated or corrupt ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc


def _read_capped(stream: BinaryIO, cap: int) -> bytearray:
    """Read to the end of ``stream`` but never more than ``cap`` bytes, in bounded chunks.

    ``stream.read(cap)`` would allocate ``cap`` bytes up front; chunks keep the allocation
    proportional to what the stream really holds.
    """
    data = bytearray()
    while len(data) < cap:
        chunk = stream.read(min(_CHUNK_BYTES, cap - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_ndim(path: Path, stream: BinaryIO, ndim: int | None) -> int:
    """Read and check the magic number; return the number of dimensions it declares."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(
            f"{path}: truncated IDX file: {len(head)} bytes, too short for the 4-byte magic "
            f"number (expected {_expected_magic(ndim)})"
        )
    (magic,) = struct.unpack(">I", head)
    found_ndim = magic & 0xFF
    allowed = _KIND_BY_NDIM if ndim is None else {ndim}
    if magic != _magic(found_ndim) or found_ndim not in allowed:
        hint = ""
        if head.startswith(_GZIP_MAGIC):
            hint = "; the file looks gzip-compressed, so give it a .gz suffix"
        raise DataError(
            f"{path}: not an MNIST IDX file: expected magic number {_expected_magic(ndim)}, "
            f"found 0x{magic:08x}{hint}"
        )
    return found_ndim


def _check_data_length(
    path: Path, dims: tuple[int, ...], found: int, at_least: bool = False
) -> None:
    """Raise unless exactly ``prod(dims)`` data bytes follow the header."""
    need = math.prod(dims)
    if found == need:
        return
    problem = "truncated file or wrong header" if found < need else "extra bytes after the data"
    holds = f"at least {found}" if at_least else str(found)
    raise DataError(
        f"{path}: {problem}: the header declares {_shape_text(dims)} "
        f"({need} data bytes), but the file holds {holds} data bytes"
    )


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw, or gzip when the name ends in ``.gz``).

    Parameters
    ----------
    path : str or PathLike
        The file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.
    ndim : {None, 1, 3}
        Require labels (1) or images (3); ``None`` accepts either.

    Returns
    -------
    np.ndarray of uint8, shape given by the header
        ``(n,)`` for labels, ``(n, rows, cols)`` for images. The array is writable.

    Raises
    ------
    DataError
        Naming the file and what was expected versus found: a wrong magic number, a
        truncated file, dimensions that disagree with the file's length, or a ``.gz`` file
        that is not gzip.
    """
    path = Path(path)
    if ndim is not None and ndim not in _KIND_BY_NDIM:
        raise InputError(f"read_idx: ndim must be None, 1 (labels) or 3 (images), got {ndim!r}")
    gzipped = _is_gzip_name(path)
    with _opened(path, gzipped) as stream:
        found_ndim = _read_ndim(path, stream, ndim)
        dim_bytes = stream.read(4 * found_ndim)
        if len(dim_bytes) < 4 * found_ndim:
            raise DataError(
                f"{path}: truncated IDX header: expected {found_ndim} dimensions "
                f"({4 * found_ndim} bytes) after the magic number, found {len(dim_bytes)} bytes"
            )
        dims = struct.unpack(f">{found_ndim}I", dim_bytes)
        if not gzipped:
            # The size on disk settles the question before a single data byte is read.
            header_bytes = 4 + 4 * found_ndim
            _check_data_length(path, dims, os.fstat(stream.fileno()).st_size - header_bytes)
        # One byte past the declared size is enough to tell "too long" from "exact".
        data = _read_capped(stream, math.prod(dims) + 1)
    _check_data_length(path, dims, len(data), at_least=len(data) > math.prod(dims))
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def uncompressed_sha256(path: str | os.PathLike[str], *, gzipped: bool | None = None) -> str:
    """SHA-256 (hex) of a file's content, decompressed first when it is gzip.

    Parameters
    ----------
    path : str or PathLike
        The file.
    gzipped : bool or None
        Whether to decompress; ``None`` decides from a ``.gz`` suffix.

    Raises
    ------
    DataError
        When the file cannot be read or its gzip data is invalid.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with _opened(path, _is_gzip_name(path) if gzipped is None else gzipped) as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when the name ends in ``.gz``.

    The write is atomic (temporary file, then rename). Gzip output is deterministic: no file
    name and a zero timestamp in the gzip header, so the same array gives the same bytes.

    Parameters
    ----------
    path : str or PathLike
        The file to write; its directory must exist.
    array : np.ndarray of uint8, shape (n,) or (n, rows, cols)
        Labels or images.

    Raises
    ------
    InputError
        When the array is not uint8 or not 1- or 3-dimensional.
    DataError
        When the file cannot be written.
    """
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise InputError(f"write_idx: {path}: the array must be uint8, got {array.dtype}")
    if array.ndim not in _KIND_BY_NDIM or max(array.shape, default=0) > _MAX_DIM:
        raise InputError(
            f"write_idx: {path}: expected shape (n,) for labels or (n, rows, cols) for images "
            f"with each size below 2**32, got {array.shape}"
        )
    header = struct.pack(f">I{array.ndim}I", _magic(array.ndim), *array.shape)
    try:
        with atomic_write(path) as out:
            sink = (
                gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9)
                if _is_gzip_name(path)
                else contextlib.nullcontext(out)
            )
            with sink as stream:
                stream.write(header)
                stream.write(array.tobytes())
    except OSError as exc:
        raise DataError(f"{path}: cannot write the file ({exc.strerror or exc})") from exc
