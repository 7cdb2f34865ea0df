"""The deterministic stratified train/test split used when a source is not split already."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from rcig_release.errors import InputError


def stratified_split(
    y: np.ndarray, *, seed: int, test_fraction: float = 0.2, what: str = "data"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified split (scikit-learn ``train_test_split``, ``random_state=seed``).

    Args:
        y: int labels ``[N]``.
        seed: the split seed (recorded as ``Dataset.split_seed``).
        test_fraction: share of each class that goes to the test split, in (0, 1).
        what: the source's name for messages.

    Returns:
        ``(train_idx, test_idx)``, int64, each sorted ascending so the splits keep source order.

    Raises:
        InputError: a bad fraction, or a class too small to appear in both splits.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test fraction must be between 0 and 1 (got {test_fraction})")
    y = np.asarray(y)
    counts = np.bincount(y) if y.size else np.zeros(0, dtype=np.int64)
    present = np.flatnonzero(counts)
    small = [int(k) for k in present if counts[k] < 2]
    if small:
        raise InputError(
            f"{what}: class {small[0]} has fewer than 2 images, too few to split "
            "into train and test"
        )
    idx = np.arange(y.shape[0])
    try:
        tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    except ValueError as e:  # e.g. a test split smaller than the number of classes
        raise InputError(
            f"{what}: cannot make a stratified split with test fraction {test_fraction}: {e}"
        ) from None
    return np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)
