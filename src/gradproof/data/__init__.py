"""MNIST data: a validated IDX reader, the bundled real-MNIST sample, verified downloads.

``load_mnist(split)`` returns ``(images, labels)``: images of shape (n, 784) in [0, 1] and
uint8 labels. See ``gradproof.data.mnist`` for where the files come from.
"""

from gradproof.data.idx import read_idx, uncompressed_sha256, write_idx
from gradproof.data.mnist import default_cache_dir, load_mnist, mnist_source

__all__ = [
    "default_cache_dir",
    "load_mnist",
    "mnist_source",
    "read_idx",
    "uncompressed_sha256",
    "write_idx",
]
