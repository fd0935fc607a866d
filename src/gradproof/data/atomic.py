"""Atomic file writes: write beside the target, then rename over it.

A reader never sees a half-written file: the data goes to a temporary file in the target's
directory (so the final ``os.replace`` stays on one file system and is atomic), and the
temporary file is removed when anything inside the ``with`` block raises.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` when the block ends cleanly.

    Parameters
    ----------
    path : Path
        The final file. Its directory must exist.

    Yields
    ------
    BinaryIO
        The temporary file, open for writing; its ``name`` is the temporary path, so the
        block may flush it and read it back (to verify it) before it is put in place.
    """
    # Exclusive creation with a random name; unlike tempfile.mkstemp's 0600 it keeps the
    # umask's permissions, which the final file should have.
    temp_name = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    stream = open(temp_name, "xb")
    try:
        with stream:
            yield stream
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
