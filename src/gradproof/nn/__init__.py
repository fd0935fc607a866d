"""Neural-network building blocks with hand-written forward and backward passes.

Contract for every layer-like piece here (row-vector convention, params a dict of named
arrays)::

    forward(params, x) -> (out, cache)
    backward(params, cache, d_out) -> (d_x, grads)     # grads keyed and shaped like params

``Network`` is the general feed-forward family (classifiers and autoencoders, the forms of
their losses and penalties that people write): it composes ``Dense`` layers with a data term
and the optional weight decay and sparsity penalties, in the one layer walk of the package.
``Autoencoder`` is one configuration of it (``model.network``), with the options, workspace and
checkpoint format that training reads; its ``backward(params, cache)`` starts from the loss
itself.
"""

from gradproof.nn.activations import ACTIVATIONS, Activation
from gradproof.nn.autoencoder import Autoencoder
from gradproof.nn.layers import Dense, DenseCache
from gradproof.nn.losses import LOSSES, REDUCTIONS, Loss
from gradproof.nn.network import ForwardCache, Network
from gradproof.nn.validation import DTYPES

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
