"""Neural-network building blocks with hand-written forward and backward passes.

Contract for every layer-like piece here (row-vector convention, params a dict of named
arrays)::

    forward(params, x) -> (out, cache)
    backward(params, cache, d_out) -> (d_x, grads)     # grads keyed and shaped like params

``Autoencoder`` composes ``Dense`` layers with a loss from ``LOSSES`` and the optional weight
decay and sparsity penalties; its ``backward(params, cache)`` starts from the loss itself.
``Network`` is the general feed-forward family (classifiers and autoencoders, the forms of
their losses and penalties that people write); ``Autoencoder`` is one configuration of it.
"""

from gradproof.nn.activations import ACTIVATIONS, Activation
from gradproof.nn.autoencoder import DTYPES, Autoencoder, ForwardCache
from gradproof.nn.layers import Dense, DenseCache
from gradproof.nn.losses import LOSSES, REDUCTIONS, Loss
from gradproof.nn.network import Network

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "LOSSES",
    "REDUCTIONS",
    "Activation",
    "Autoencoder",
    "Dense",
    "DenseCache",
    "ForwardCache",
    "Loss",
    "Network",
]
