"""Checksums used to bind the audit, the released arrays and the bundle files together.

Two kinds of digest:

* ``file_sha256(path)``: the sha256 of a file's bytes (BagIt manifest, Croissant ``sha256``, the
  audit's ``run_sha256`` over ``RUN/distilled.npz``).
* ``arrays_sha256(images, labels, classes)``: a canonical digest of the released *content*, which
  does not depend on how the arrays are containerised (npz compression, member order, zip
  timestamps). The bundle's ``data/distilled.npz`` holds only these three arrays, so its bytes differ
  from the run's ``distilled.npz``; this digest is what links the two (docs/release.md, "Binding").
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_ARRAYS_DOMAIN = b"rcig-release/released-arrays/v1\n"
_CHUNK = 1 << 20


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a regular file's bytes; never follows a symlink (raises ``OSError``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name}: not a regular file")
        h = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _array_part(name: str, a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    header = json.dumps(
        {"name": name, "dtype": a.dtype.newbyteorder("<").str, "shape": list(a.shape)}
    )
    return header.encode() + b"\n" + a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def arrays_sha256(images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> str:
    """Canonical sha256 of the released content.

    Args:
      images: float32 [N,H,W,C] in [0,1].
      labels: float32 [N,C] soft labels.
      classes: C class names.

    Returns:
      Hex sha256 over a domain tag, then each array's name, little-endian dtype, shape and raw
      bytes, then the class names as a JSON list. Equal content gives an equal digest whatever file
      holds it.
    """
    h = hashlib.sha256(_ARRAYS_DOMAIN)
    h.update(_array_part("images", np.asarray(images, dtype=np.float32)))
    h.update(_array_part("labels", np.asarray(labels, dtype=np.float32)))
    h.update(b"classes\n" + json.dumps([str(c) for c in classes], ensure_ascii=False).encode())
    return h.hexdigest()
