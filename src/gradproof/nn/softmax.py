"""The softmax output and its cross-entropy: an output-only pair, outside the elementwise records.

Contract: ``softmax(s) -> z`` maps output pre-activations (batch, n_classes) to row-wise
probabilities; ``softmax_cross_entropy(t, s) -> (value, d_s)`` returns
``-Σ_i Σ_k t_ik log z_ik`` summed over the examples and its gradient ``dJ/ds`` (batch,
n_classes), for targets ``t`` whose rows are probability vectors (one-hot labels).

Why not a record in ``ACTIVATIONS`` / ``LOSSES``: those records are elementwise (an activation's
derivative, a loss's entries and shift series are per entry), and the exact check relies on
that. A softmax couples each row, so it is its own output and its own loss, and the network
pairs them: only this loss reads a softmax output, and this loss reads nothing else.
"""

from __future__ import annotations

import numpy as np


def _log_sum_exp(s: np.ndarray) -> np.ndarray:
    # log Σ_k e^{s_k} with the row maximum taken out, so that no exponential overflows.
    top = s.max(axis=1, keepdims=True)  # (batch, 1)
    return (top + np.log(np.exp(s - top).sum(axis=1, keepdims=True)))[:, 0]  # (batch,)


def softmax(s: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``z_ik = e^{s_ik} / Σ_j e^{s_ij}``, shape and dtype of ``s``."""
    e = np.exp(s - s.max(axis=1, keepdims=True))  # (batch, n_classes), the largest entry 1
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(t: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed cross-entropy of a softmax output and its gradient in the pre-activation.

    Parameters
    ----------
    t : ndarray, shape (batch, n_classes)
        Targets; rows of one-hot labels, or any probability vectors.
    s : ndarray, shape (batch, n_classes)
        Output pre-activations.

    Returns
    -------
    value : float
        ``Σ_i [ (Σ_k t_ik) lse(s_i) - t_i · s_i ]``, which is ``-Σ t log softmax(s)`` without
        taking the log of a probability that rounds to zero.
    d_s : ndarray, shape (batch, n_classes)
        ``softmax(s) Σ_k t_ik - t``: ``z - t`` for one-hot rows, the softmax's slope having
        cancelled against the log.
    """
    mass = t.sum(axis=1)  # (batch,): 1 for one-hot rows
    value = float(np.dot(mass, _log_sum_exp(s)) - np.vdot(t, s))
    d_s = softmax(s) * mass[:, None]  # (batch, n_classes)
    d_s -= t
    return value, d_s
