"""Logits in, per-example statistics out (NumPy, float64, any leading axes).

``logits`` has shape ``[..., N, C]`` and ``labels`` ``[N]`` (int). Every function returns ``[..., N]``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def _true_and_rest(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if z.shape[-2] != y.shape[0]:
        raise ValueError(f"logits hold {z.shape[-2]} examples, labels {y.shape[0]}")
    onehot = np.eye(z.shape[-1], dtype=bool)[y]  # [N, C]
    zy = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    rest = np.where(onehot, -np.inf, z)
    return zy, rest


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence φ = log(p_y / (1 − p_y)), computed stably as
    z_y − logsumexp_{y'≠y} z_{y'} (Carlini et al. 2022, Sec. VI-A). Finite for any finite logits."""
    zy, rest = _true_and_rest(logits, labels)
    return zy - logsumexp(rest, axis=-1)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example loss −log softmax(z)_y."""
    z = np.asarray(logits, dtype=np.float64)
    zy, _ = _true_and_rest(z, labels)
    return logsumexp(z, axis=-1) - zy


def true_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label (RMIA's signal)."""
    return np.exp(-cross_entropy(logits, labels))


def sorted_probs(logits: np.ndarray) -> np.ndarray:
    """Softmax vector sorted in decreasing order, ``[..., N, C]`` (label-free Shokri feature)."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - logsumexp(z, axis=-1, keepdims=True))
    return -np.sort(-p, axis=-1)
