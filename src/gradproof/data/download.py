"""Verified downloads: fetch a gzip file from the first mirror that serves the right content.

Each try streams into a temporary file beside the target, checks the SHA-256 of the
*uncompressed* content, and only then renames it into place; a failed or mismatching try
leaves nothing behind, and nothing else in the directory is touched. Only ``urllib`` is
used. The URL opener is an argument (default ``urllib.request.urlopen``) so that tests can
serve bytes without a network.
"""

from __future__ import annotations

import http.client
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gradproof.data.atomic import atomic_write
from gradproof.data.idx import uncompressed_sha256
from gradproof.errors import DataError

# progress(done_bytes, total_bytes, filename); total_bytes is None when the server omits it.
ProgressCallback = Callable[[int, int | None, str], None]
# opener(url, timeout=seconds) -> a binary response usable in ``with``, with a ``headers``
# mapping (urllib.request.urlopen has this shape).
Opener = Callable[..., Any]

_CHUNK_BYTES = 1 << 16
_TIMEOUT_S = 60.0


class _TryFailed(Exception):
    """One mirror did not deliver a verified file; the message says why."""


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _copy(
    response: Any, out: BinaryIO, filename: str, progress: ProgressCallback | None
) -> None:
    total = _content_length(response)
    done = 0
    if progress is not None:
        progress(done, total, filename)
    while chunk := response.read(_CHUNK_BYTES):
        out.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total, filename)
    if total is not None and done != total:
        raise _TryFailed(f"incomplete download: {done} of {total} bytes")


def _fetch_from(
    url: str,
    dest: Path,
    sha256: str,
    opener: Opener,
    progress: ProgressCallback | None,
) -> None:
    """Download ``url`` to ``dest`` if its uncompressed SHA-256 is ``sha256``."""
    with atomic_write(dest) as out:
        try:
            with opener(url, timeout=_TIMEOUT_S) as response:
                _copy(response, out, dest.name, progress)
        except (OSError, http.client.HTTPException) as exc:
            raise _TryFailed(str(exc)) from exc
        out.flush()
        try:
            got = uncompressed_sha256(out.name, gzipped=True)
        except DataError as exc:
            raise _TryFailed(f"the download is not valid gzip data ({exc})") from exc
        if got != sha256:
            raise _TryFailed(
                f"checksum mismatch for the uncompressed {dest.name}: expected SHA-256 "
                f"{sha256}, got {got}; the bad download was removed"
            )


def fetch_verified(
    filename: str,
    directory: Path,
    *,
    sha256: str,
    mirrors: Sequence[str],
    opener: Opener | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``filename`` (gzip) into ``directory`` from the first mirror that works.

    Parameters
    ----------
    filename : str
        The file's name on the mirrors and in ``directory``, e.g. ``"t10k-labels-idx1-ubyte.gz"``.
    directory : Path
        Where the verified file goes; it must exist.
    sha256 : str
        SHA-256 (hex) of the file's *uncompressed* content.
    mirrors : sequence of str
        Base URLs, tried in turn; ``filename`` is appended to each.
    opener : callable, optional
        ``opener(url, timeout=...)`` returning a response like ``urllib.request.urlopen``'s.
    progress : callable, optional
        Called as ``progress(done_bytes, total_bytes, filename)`` while bytes arrive;
        ``total_bytes`` is None when the server does not say.

    Returns
    -------
    Path
        ``directory / filename``, verified.

    Raises
    ------
    DataError
        When no mirror delivers the file with the expected checksum; the message lists each
        URL tried and why it failed (for a checksum mismatch: expected versus got).
    """
    open_url = urllib.request.urlopen if opener is None else opener
    dest = directory / filename
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{filename}"
        try:
            _fetch_from(url, dest, sha256, open_url, progress)
        except _TryFailed as exc:
            failures.append(f"{url}: {exc}")
        except OSError as exc:  # the temporary file could not be created or renamed
            raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        else:
            return dest
    tried = "".join(f"\n  - {failure}" for failure in failures) or " (no mirrors given)"
    raise DataError(f"could not download {filename} into {directory}:{tried}")
