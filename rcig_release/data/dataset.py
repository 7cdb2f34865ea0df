"""The ``Dataset`` every source returns, and its fingerprint.

A ``Dataset`` holds the train and test splits in *pixel space*: float32 images ``[N,H,W,C]`` in
``[0, 1]`` and int64 labels in ``0..C-1``. The fingerprint is a sha256 over the four arrays so a run
can record *which* data it saw without storing any of it.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

_FINGERPRINT_DOMAIN = b"rcig-release/dataset/v1\n"
_ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def fingerprint_arrays(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> str:
    """Canonical sha256 of the four split arrays.

    Each array is hashed as its name, little-endian dtype string, shape and C-order bytes, in the
    fixed order ``x_train, y_train, x_test, y_test``, so the digest does not depend on memory
    layout or byte order of the arrays passed in.

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    h = hashlib.sha256(_FINGERPRINT_DOMAIN)
    for name, arr in zip(_ARRAY_NAMES, (x_train, y_train, x_test, y_test), strict=True):
        a = np.asarray(arr)
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        header = f"{name}|{a.dtype.str}|{','.join(str(s) for s in a.shape)}\n"
        h.update(header.encode("ascii"))
        h.update(a.data.cast("B"))
    return "sha256:" + h.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test splits in pixel space.

    Attributes:
        x_train: float32 ``[N,H,W,C]`` in ``[0, 1]``.
        y_train: int64 ``[N]`` in ``0..C-1``.
        x_test: float32 ``[M,H,W,C]`` in ``[0, 1]``.
        y_test: int64 ``[M]``.
        classes: class names, index = label.
        source: the ``--data`` value as given by the user.
        fingerprint: ``"sha256:<hex>"`` of the four arrays (``fingerprint_arrays``).
        split_seed: the seed of the stratified split when this package made the split, ``None``
            when the source came already split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    fingerprint: str
    split_seed: int | None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def make_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...],
    source: str,
    split_seed: int | None,
) -> Dataset:
    """Builds a ``Dataset`` from arrays already in the canonical dtypes, computing the fingerprint.

    The arrays are made read-only so a ``Dataset`` cannot be changed behind its fingerprint.
    """
    arrays: list[np.ndarray] = [
        np.ascontiguousarray(x_train, dtype=np.float32),
        np.ascontiguousarray(y_train, dtype=np.int64),
        np.ascontiguousarray(x_test, dtype=np.float32),
        np.ascontiguousarray(y_test, dtype=np.int64),
    ]
    for a in arrays:
        a.flags.writeable = False
    x_tr, y_tr, x_te, y_te = arrays
    return Dataset(
        x_tr,
        y_tr,
        x_te,
        y_te,
        classes=tuple(str(c) for c in classes),
        source=source,
        fingerprint=fingerprint_arrays(x_tr, y_tr, x_te, y_te),
        split_seed=split_seed,
    )
