"""Local sources: scikit-learn's bundled digits and ``.npz`` archives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcig_release import limits
from rcig_release.data.dataset import Dataset, make_dataset
from rcig_release.data.splits import stratified_split
from rcig_release.data.validate import (
    as_images,
    as_labels,
    check_label_range,
    check_same_image_shape,
)
from rcig_release.errors import InputError
from rcig_release.npzfile import NpzUnreadable, read_npz

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
FLAT_KEYS = ("x", "y")


def load_digits_dataset(source: str, *, seed: int, test_fraction: float) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, pixel values 0..16 scaled by 1/16).

    Split: stratified, ``random_state=seed``; classes ``"0".."9"``; shape ``[N, 8, 8, 1]``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., None]
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, te = stratified_split(y, seed=seed, test_fraction=test_fraction, what="digits")
    return make_dataset(
        x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)), source, split_seed=seed
    )


def _read_npz(path: Path, name: str) -> dict[str, np.ndarray]:
    """Reads every array, header checked against the byte cap first (``npzfile``), never with
    pickle; each failure becomes one ``InputError``."""
    corrupt = f"{name} is corrupt or truncated (cannot read it as .npz)"
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError:
        raise InputError(f"cannot read {name}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise InputError(f"{name} is a single .npy array, not an .npz archive")
    if len(magic) < 4 or magic[:2] != b"PK":
        raise InputError(f"{name} is not an .npz archive" if len(magic) >= 4 else corrupt)
    try:
        return read_npz(path, name)
    except NpzUnreadable as e:
        if e.pickle:
            raise InputError(
                f"{name} needs pickle to load (object arrays); save plain numeric "
                "arrays and string class names instead"
            ) from None
        raise InputError(corrupt) from None


def _npz_classes(arrays: dict[str, np.ndarray], name: str, num_labels: int) -> tuple[str, ...]:
    if "classes" not in arrays:
        # the highest label sets the count: capped before one name is made (labels up to 1e12)
        limits.check_classes(num_labels, f"{name} (labels up to {num_labels - 1:,}, no 'classes')")
        return tuple(str(i) for i in range(num_labels))
    c = arrays["classes"]
    if c.ndim != 1 or c.dtype.kind not in "US" or c.shape[0] == 0:
        raise InputError(f"{name}: 'classes' must be a non-empty 1-D array of strings")
    limits.check_classes(int(c.shape[0]), name)
    names = tuple(
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in c.tolist()
    )
    if len(set(names)) != len(names):
        raise InputError(f"{name}: 'classes' has duplicate names")
    return names


def load_npz_dataset(source: str, path: Path, *, seed: int, test_fraction: float) -> Dataset:
    """An ``.npz`` with ``x_train, y_train, x_test, y_test`` or ``x, y`` (split here).

    Optional ``classes`` (strings). Without it the class count is ``max(label) + 1`` and names are
    ``"0".."C-1"``.
    """
    name = path.name
    if not path.is_file():
        raise InputError(f"data file not found: {source}")
    arrays = _read_npz(path, name)
    keys = set(arrays)
    if set(SPLIT_KEYS) <= keys:
        x_tr = as_images(arrays["x_train"], "x_train")
        y_tr = as_labels(arrays["y_train"], x_tr.shape[0], "y_train")
        x_te = as_images(arrays["x_test"], "x_test")
        y_te = as_labels(arrays["y_test"], x_te.shape[0], "y_test")
        check_same_image_shape(x_tr, x_te, "x_train", "x_test")
        split_seed = None
    elif set(FLAT_KEYS) <= keys:
        x = as_images(arrays["x"], "x")
        y = as_labels(arrays["y"], x.shape[0], "y")
        split_seed = seed
    else:
        raise InputError(
            f"{name} has keys {sorted(keys)}; expected x_train, y_train, x_test, y_test (or x, y)"
        )
    all_y = np.concatenate([y_tr, y_te]) if split_seed is None else y
    num_labels = max(int(all_y.max()) + 1, 1)
    classes = _npz_classes(arrays, name, num_labels)
    if split_seed is None:
        check_label_range(y_tr, len(classes), "y_train")
        check_label_range(y_te, len(classes), "y_test")
    else:
        check_label_range(y, len(classes), "y")
        tr, te = stratified_split(y, seed=seed, test_fraction=test_fraction, what=name)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    return make_dataset(x_tr, y_tr, x_te, y_te, classes, source, split_seed=split_seed)
