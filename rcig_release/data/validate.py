"""Checks that turn user arrays into the canonical pixel-space form, or raise ``InputError``.

Every message names the array, a shape, a count or a class index: never a pixel value or a
record's label (rcig_release.errors).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rcig_release.errors import InputError

SUPPORTED_CHANNELS = (1, 3)


def as_images(x: Any, what: str) -> np.ndarray:
    """Validates images and returns them as float32 ``[N,H,W,C]`` in ``[0, 1]``.

    Accepts ``N×H×W`` (one channel added) or ``N×H×W×C`` with C in {1, 3}; integer pixels in
    0..255 (scaled by 1/255) or floating pixels in [0, 1].

    Args:
        x: the array.
        what: its name for messages, e.g. ``"x_train"``.

    Raises:
        InputError: wrong dtype or shape, NaN/inf, or values out of range.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(
            f"{what} must have shape N×H×W or N×H×W×C (got {x.ndim} dimensions, "
            f"shape {tuple(x.shape)})"
        )
    n, h, w, c = x.shape
    if n == 0:
        raise InputError(f"{what} has no images")
    if h < 1 or w < 1:
        raise InputError(f"{what} has empty images (shape {tuple(x.shape)})")
    if c not in SUPPORTED_CHANNELS:
        raise InputError(
            f"{what} must be channels-last with 1 or 3 channels (got shape {tuple(x.shape)})"
        )
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InputError(f"{what}: integer pixels must be in 0..255")
        return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InputError(f"{what} contains NaN or infinite pixels")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise InputError(
                f"{what}: float pixels must be in [0, 1] "
                "(save 0..255 data as uint8, or divide by 255)"
            )
        return x.astype(np.float32)
    raise InputError(f"{what} has unsupported dtype {x.dtype} (use uint8 0..255 or float 0..1)")


def as_labels(y: Any, n: int, what: str) -> np.ndarray:
    """Validates integer class labels and returns them as int64 ``[n]``.

    Integer dtypes are accepted; floating labels only if every value is a whole number. A shape
    of ``[n, 1]`` is flattened; one-hot ``[n, C]`` is refused.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(
            f"{what} must be a 1-D array of integer class labels (got shape {tuple(y.shape)})"
        )
    if y.shape[0] != n:
        raise InputError(f"{what} has {y.shape[0]} labels but there are {n} images")
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise InputError(f"{what}: labels must be integers")
        return y.astype(np.int64)
    raise InputError(f"{what}: labels must be integers (got dtype {y.dtype})")


def check_label_range(y: np.ndarray, num_classes: int, what: str) -> None:
    """Raises ``InputError`` unless every label is in ``0..num_classes-1``."""
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(np.count_nonzero((y < 0) | (y >= num_classes)))
        raise InputError(f"{what}: {bad} label(s) outside 0..{num_classes - 1}")


def check_same_image_shape(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise InputError(
            f"images of different sizes: {what_a} has H×W×C "
            f"{'×'.join(map(str, a.shape[1:]))}, {what_b} has "
            f"{'×'.join(map(str, b.shape[1:]))}"
        )


def check_ipc(dataset_or_y: Any, ipc: int, num_classes: int | None = None) -> None:
    """Raises ``InputError`` if ``ipc < 1`` or a class has fewer than ``ipc`` training images.

    Args:
        dataset_or_y: a ``Dataset`` (its ``y_train`` is used) or an int label array.
        ipc: images per class requested for the distilled set.
        num_classes: the class count; defaults to ``dataset.num_classes`` or ``max(y) + 1``.
    """
    y = getattr(dataset_or_y, "y_train", dataset_or_y)
    y = np.asarray(y, dtype=np.int64)
    if num_classes is None:
        num_classes = getattr(dataset_or_y, "num_classes", None)
        if num_classes is None:
            num_classes = int(y.max()) + 1 if y.size else 0
    if ipc < 1:
        raise InputError(f"--ipc must be at least 1 (got {ipc})")
    counts = np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes)
    short = np.flatnonzero(counts < ipc)
    if short.size:
        k = int(short[0])
        classes = getattr(dataset_or_y, "classes", None)
        name = f" ({classes[k]!r})" if classes is not None and k < len(classes) else ""
        more = f" (and {short.size - 1} more class(es))" if short.size > 1 else ""
        raise InputError(
            f"class {k}{name} has {int(counts[k])} training image(s), fewer than --ipc {ipc}{more}"
        )
