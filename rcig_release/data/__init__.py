"""Data: sources, validation, splits, fingerprint and preprocessing (docs/data.md).

``load_dataset(spec)`` picks the source from ``spec``:

* ``"digits"``: scikit-learn's bundled 8×8 digits (the default);
* ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``: downloaded once into the cache;
* a path to an ``.npz`` file;
* a path to an image folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rcig_release.data.dataset import Dataset, fingerprint_arrays
from rcig_release.data.preprocess import (
    Preprocessor,
    fit_preprocessor,
    fixed_preprocessor,
    preprocessor_for,
)
from rcig_release.data.validate import check_ipc
from rcig_release.errors import InputError

BUILTIN = "digits"
REMOTE = ("mnist", "fashion-mnist", "cifar10")

__all__ = [
    "Dataset",
    "Preprocessor",
    "check_ipc",
    "fingerprint_arrays",
    "fit_preprocessor",
    "fixed_preprocessor",
    "load_dataset",
    "preprocessor_for",
]


def load_dataset(
    spec: str,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Loads a data source into a validated pixel-space ``Dataset``.

    Args:
        spec: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, an ``.npz`` path or an image
            folder (the ``--data`` value; recorded as ``Dataset.source``).
        seed: seed of the stratified split for sources that are not split already.
        cache_dir: download cache (default ``$RCIG_RELEASE_CACHE`` or ``~/.cache/rcig-release``).
        base_url: host serving the downloadable files under their official names (default
            ``$RCIG_RELEASE_MIRROR``, else the official hosts).
        test_fraction: share of each class held out when this function makes the split.
        log: optional callback for progress lines (downloads).

    Returns:
        A ``Dataset`` (float32 [N,H,W,C] in [0,1], int64 labels, class names, fingerprint).

    Raises:
        InputError: the source is missing, unreadable or invalid (one line, no pixel values).

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.image_shape, ds.num_classes, ds.n_train + ds.n_test
        ((8, 8, 1), 10, 1797)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(
            "--data must name a source (digits, mnist, fashion-mnist, cifar10, an "
            ".npz file or an image folder)"
        )
    if spec == BUILTIN:
        from rcig_release.data.sources import load_digits_dataset

        return load_digits_dataset(spec, seed=seed, test_fraction=test_fraction)
    if spec in REMOTE:
        from rcig_release.data.remote import load_remote_dataset

        return load_remote_dataset(
            spec, cache_dir=Path(cache_dir) if cache_dir else None, base_url=base_url, log=log
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        from rcig_release.data.folder import load_folder_dataset

        return load_folder_dataset(spec, path, seed=seed, test_fraction=test_fraction)
    if path.is_file() or path.suffix.lower() == ".npz":
        from rcig_release.data.sources import load_npz_dataset

        return load_npz_dataset(spec, path, seed=seed, test_fraction=test_fraction)
    raise InputError(
        f"data source not found: {spec} (expected digits, mnist, fashion-mnist, "
        "cifar10, an .npz file or an image folder)"
    )
