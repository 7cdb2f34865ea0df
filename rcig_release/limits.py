"""Size caps checked before anything big is allocated (docs/data.md, "Size limits").

Two caps, each read from an environment variable so that every command and the library share one
mechanism:

* ``RCIG_RELEASE_MAX_BYTES`` (default 4 GiB): the most bytes the arrays of one ``.npz`` file may
  take once loaded (shape × item size, summed over its arrays, as stored), and the most bytes the
  decoded images of one image folder may take (8-bit pixels: 1 byte per channel).
* ``RCIG_RELEASE_MAX_PIXELS`` (default 16,777,216 = 4096×4096): the most pixels (width × height)
  of one image file, checked from its header before it is decoded.
* ``RCIG_RELEASE_MAX_FILE_BYTES`` (default 1 GiB): the most bytes of one file read whole (a
  JSON or TOML file, a file of a run directory or of a bundle), checked with ``lstat`` before it
  is opened.
* ``RCIG_RELEASE_MAX_FILES`` (default 1,000,000): the most files of one image folder or bundle,
  counted while the directory is walked.
* ``RCIG_RELEASE_MAX_CLASSES`` (default 10,000): the most classes of a data set or a release,
  checked from the array headers (or the highest label) before one class name is made.

Fixed caps on parsed text (no variable: no real file comes near them): JSON and TOML nesting
depth ``MAX_DEPTH`` (64) and integer literals of at most ``MAX_INT_DIGITS`` (100) digits.

A value may be an integer, optionally with a binary suffix for bytes (``8G``, ``512M``).
"""

from __future__ import annotations

import os
import re

from rcig_release.errors import InputError

MAX_BYTES_ENV = "RCIG_RELEASE_MAX_BYTES"
MAX_PIXELS_ENV = "RCIG_RELEASE_MAX_PIXELS"
MAX_FILE_BYTES_ENV = "RCIG_RELEASE_MAX_FILE_BYTES"
MAX_FILES_ENV = "RCIG_RELEASE_MAX_FILES"
MAX_CLASSES_ENV = "RCIG_RELEASE_MAX_CLASSES"
DEFAULT_MAX_BYTES = 4 * 2**30
DEFAULT_MAX_FILE_BYTES = 2**30
DEFAULT_MAX_FILES = 1_000_000
DEFAULT_MAX_CLASSES = 10_000
MAX_DEPTH = 64
MAX_INT_DIGITS = 100
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


def max_file_bytes() -> int:
    """The cap on one file read whole (``$RCIG_RELEASE_MAX_FILE_BYTES`` or 1 GiB)."""
    return _read(MAX_FILE_BYTES_ENV, DEFAULT_MAX_FILE_BYTES)


def max_files() -> int:
    """The cap on the files of one folder tree (``$RCIG_RELEASE_MAX_FILES`` or 1,000,000)."""
    return _read(MAX_FILES_ENV, DEFAULT_MAX_FILES)


def max_classes() -> int:
    """The cap on the classes (``$RCIG_RELEASE_MAX_CLASSES`` or 10,000)."""
    return _read(MAX_CLASSES_ENV, DEFAULT_MAX_CLASSES)


def check_file_bytes(n: int, what: str) -> None:
    """Raises ``InputError`` if a file of ``n`` bytes is over the one-file cap."""
    cap = max_file_bytes()
    if n > cap:
        raise InputError(
            f"{what} is too large: {fmt_bytes(n)}, more than the cap of {fmt_bytes(cap)} for one "
            f"file (raise it with {MAX_FILE_BYTES_ENV})"
        )


def check_files(n: int, what: str) -> None:
    """Raises ``InputError`` once a walk has counted more than the file cap."""
    cap = max_files()
    if n > cap:
        raise InputError(
            f"{what} holds more than {cap:,} files, the cap (raise it with {MAX_FILES_ENV})"
        )


def check_classes(n: int, what: str) -> None:
    """Raises ``InputError`` if ``n`` classes are over the class cap (and below 0)."""
    cap = max_classes()
    if n > cap:
        raise InputError(
            f"{what} has {n:,} classes, more than the cap of {cap:,} (raise it with "
            f"{MAX_CLASSES_ENV})"
        )
