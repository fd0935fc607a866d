"""Make the MNIST sample bundled with gradproof from the full MNIST files.

Usage::

    python scripts/make_mnist_sample.py --source DIR [--out DIR]

``--source`` names a directory holding the four standard MNIST files, raw or gzipped
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``). Each file is first checked
against the published SHA-256 of its uncompressed content, so the sample is real MNIST. The
script then writes the first 5000 training and the first 1000 test images with their labels
as gzipped IDX files, under the same names, into ``--out`` (default: the package's
``src/gradproof/data/sample``). The output is deterministic: running it twice gives the same
bytes. The attribution note ``README.md`` in that folder is kept by hand.

Run it with the project's environment (gradproof importable). Exit code 0 on success, 2 when
a source file is missing, malformed or not the published MNIST.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradproof.data.idx import read_idx, uncompressed_sha256, write_idx
from gradproof.data.mnist import SAMPLE_SIZES, SHA256, SPLIT_FILES
from gradproof.errors import DataError

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "gradproof" / "data" / "sample"


def _source_file(source: Path, name: str) -> Path:
    """``source/name`` if it exists, else ``source/name.gz`` (which read errors then name)."""
    raw = source / name
    return raw if raw.is_file() else source / f"{name}.gz"


def _verified(path: Path, name: str) -> Path:
    """``path``, after checking it is the published MNIST file ``name``."""
    got = uncompressed_sha256(path)
    if got != SHA256[name]:
        raise DataError(
            f"{path}: not the published MNIST file: expected SHA-256 {SHA256[name]}, got {got}"
        )
    return path


def make_sample(source: Path, out: Path) -> list[Path]:
    """Write the sample files into ``out`` and return their paths."""
    written = []
    for split, names in SPLIT_FILES.items():
        for name in names:
            array = read_idx(_verified(_source_file(source, name), name))
            path = out / f"{name}.gz"
            write_idx(path, array[: SAMPLE_SIZES[split]])  # the first images (or labels)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="directory of full MNIST")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the sample goes")
    args = parser.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        written = make_sample(args.source, args.out)
    except (DataError, OSError) as exc:
        print(f"make_mnist_sample: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path.name}: {path.stat().st_size} bytes")
    print(f"total: {sum(path.stat().st_size for path in written)} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
