"""Aggregate initialisations of the distilled set: each image starts from the mean of many
training records of its class, never from one record (``--init mean`` / ``--init centroids``).

* ``class_means``: the mean of every training record of the class (1 image per class; at more
  ipc the images would be identical, so ``mean`` needs ``init_noise`` > 0 there).
* ``class_centroids``: scikit-learn's k-means within the class (``ipc`` clusters), then a
  repair that moves, one by one, the record nearest to a too-small cluster's centre from a cluster
  that can spare one, until every cluster holds at least ``min_records`` records; each image is
  the mean of its cluster's records. At 1 ipc this is the class mean.

Both run in whatever space they are given (the pipeline gives model space: after the per-channel
standardisation, and ZCA for colour data; a mean commutes with these affine maps, a k-means
partition does with the per-channel standardisation but not with ZCA). Deterministic given the
seed. No record index is kept: the caller records −1 for every aggregate image.
"""

from __future__ import annotations

import numpy as np

from rcig_release.errors import InputError

AGGREGATE_MODES = ("mean", "centroids")
N_INIT = (
    1  # k-means starts (scikit-learn's n_init): one k-means++ start; MNIST 10 ipc: seconds a class
)


def class_means(x: np.ndarray, y: np.ndarray, num_classes: int, ipc: int) -> np.ndarray:
    """``[C * ipc, ...]``: each class's mean record, repeated ``ipc`` times (class by class)."""
    out = [
        np.repeat(np.asarray(x[y == c], np.float64).mean(0, keepdims=True), ipc, 0)
        for c in range(num_classes)
    ]
    return np.concatenate(out).astype(np.float32)


def balanced_kmeans(x: np.ndarray, k: int, min_records: int, seed: int) -> np.ndarray:
    """Cluster labels ``[len(x)]`` in ``0..k-1`` with every cluster of at least ``min_records``
    rows: scikit-learn's ``KMeans`` (seeded, ``N_INIT`` start), then the repair in the module
    docstring. ``len(x) >= k * min_records`` is the caller's to check."""
    from sklearn.cluster import KMeans

    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    if k == 1:
        return np.zeros(len(flat), np.int64)
    km = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(flat)
    labels = np.asarray(km.labels_, np.int64).copy()
    centres = np.asarray(km.cluster_centers_, np.float64)
    sizes = np.bincount(labels, minlength=k)
    for c in np.argsort(sizes, kind="stable"):
        while sizes[c] < min_records:
            donors = np.flatnonzero(sizes[labels] > min_records)
            d = ((flat[donors] - centres[c]) ** 2).sum(1)
            j = donors[int(np.argmin(d))]
            sizes[labels[j]] -= 1
            labels[j] = c
            sizes[c] += 1
    return labels


def class_centroids(
    x: np.ndarray, y: np.ndarray, num_classes: int, ipc: int, min_records: int, seed: int
) -> np.ndarray:
    """``[C * ipc, ...]``: per class, the means of ``ipc`` k-means clusters of at least
    ``min_records`` records each (``balanced_kmeans``), class by class."""
    out = []
    for c in range(num_classes):
        xc = np.asarray(x[y == c], np.float64)
        if len(xc) < ipc * min_records:
            raise InputError(
                f"--init centroids: class {c} has {len(xc)} training images, fewer than ipc × "
                f"init_min_records = {ipc} × {min_records}; lower ipc or init_min_records, or "
                "use --init noise"
            )
        labels = balanced_kmeans(xc, ipc, min_records, seed + 7919 * c)
        means = np.stack([xc[labels == j].mean(0) for j in range(ipc)])
        out.append(means)
    return np.concatenate(out).astype(np.float32)
