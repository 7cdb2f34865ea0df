"""Size caps checked before anything big is allocated (docs/data.md, "Size limits").

Two caps, each read from an environment variable so that every command and the library share one
mechanism:

* ``RCIG_RELEASE_MAX_BYTES`` (default 4 GiB): the most bytes the arrays of one ``.npz`` file may
  take once loaded (shape × item size, summed over its arrays, as stored), and the most bytes the
  decoded images of one image folder may take (8-bit pixels: 1 byte per channel).
* ``RCIG_RELEASE_MAX_PIXELS`` (default 16,777,216 = 4096×4096): the most pixels (width × height)
  of one image file, checked from its header before it is decoded.

A value may be an integer, optionally with a binary suffix for bytes (``8G``, ``512M``).
"""

from __future__ import annotations

import os
import re

from rcig_release.errors import InputError

MAX_BYTES_ENV = "RCIG_RELEASE_MAX_BYTES"
MAX_PIXELS_ENV = "RCIG_RELEASE_MAX_PIXELS"
DEFAULT_MAX_BYTES = 4 * 2**30
DEFAULT_MAX_PIXELS = 4096 * 4096

_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_VALUE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def _read(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return default
    m = _VALUE.match(raw)
    if not m or int(m.group(1)) < 1:
        raise InputError(f"{env} must be a positive integer such as 8G or 100000000 (got {raw!r})")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def max_bytes() -> int:
    """The byte cap (``$RCIG_RELEASE_MAX_BYTES`` or 4 GiB)."""
    return _read(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


def max_pixels() -> int:
    """The per-image pixel cap (``$RCIG_RELEASE_MAX_PIXELS`` or 4096×4096)."""
    return _read(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def fmt_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``; exact below 1 KiB."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "EiB":
            break
    return f"{value:,.1f} {unit}"


def check_bytes(n: int, what: str, detail: str = "") -> None:
    """Raises ``InputError`` naming ``what``, its size, the cap and the variable if ``n`` > cap."""
    cap = max_bytes()
    if n > cap:
        detail = f" ({detail})" if detail else ""
        raise InputError(
            f"{what} is too large: {fmt_bytes(n)} once loaded{detail}, more than the "
            f"cap of {fmt_bytes(cap)} (raise it with {MAX_BYTES_ENV}, e.g. "
            f"{MAX_BYTES_ENV}=16G)"
        )


def check_pixels(width: int, height: int, what: str) -> None:
    """Raises ``InputError`` if one ``width`` × ``height`` image exceeds the pixel cap."""
    cap = max_pixels()
    if width * height > cap:
        raise InputError(
            f"{what} is too large: {width}x{height} = {width * height:,} pixels, "
            f"more than the cap of {cap:,} pixels (raise it with {MAX_PIXELS_ENV})"
        )
