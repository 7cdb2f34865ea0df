""".npz archives from outside, read safely: every array header is checked first.

``read_npz`` parses the ``.npy`` header of every array in the archive (format 1.0 or 2.0: shape,
dtype, order), refuses object arrays (they would need pickle), adds up ``shape × item size`` and
checks the total against the byte cap (``rcig_release.limits``) before a single array is
allocated; then it reads exactly that many bytes per array. Zip members that are not ``.npy``
arrays are ignored. ``check_npz_limits`` runs only the cap check, for callers that load later.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from rcig_release import limits
from rcig_release.errors import InputError

Source = str | Path | bytes
# what a corrupt or truncated member raises from zipfile, zlib or numpy's header and data readers
_CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)
_HEADER_MAX = 100_000  # bytes of one .npy header (numpy's own default limit is 10,000)


class NpzUnreadable(InputError):
    """The archive cannot be read as plain arrays (not a zip, truncated, a bad header, pickle)."""

    def __init__(self, message: str, *, pickle: bool = False):
        super().__init__(message)
        self.pickle = pickle


@dataclasses.dataclass(frozen=True)
class ArrayHeader:
    key: str  # the member name without ``.npy`` (np.load's key)
    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _zip(source: Source, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError):
        raise NpzUnreadable(f"{what} is corrupt or truncated (cannot read it as .npz)") from None


def _read_header(fp: IO[bytes], key: str, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=_HEADER_MAX)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=_HEADER_MAX)
        else:
            raise ValueError(f"npy format {version}")
    except (ValueError, TypeError, SyntaxError, EOFError, OSError, zlib.error, zipfile.BadZipFile):
        raise NpzUnreadable(
            f"{what} is corrupt or truncated (array {key} has an unreadable header)"
        ) from None
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise NpzUnreadable(f"{what} is corrupt (array {key} has an invalid shape)")
    if dtype.hasobject:
        raise NpzUnreadable(f"{what} needs pickle to load (array {key} holds objects)", pickle=True)
    return tuple(shape), bool(fortran), dtype


def _headers(zf: zipfile.ZipFile, what: str) -> list[ArrayHeader]:
    out = []
    for member in dict.fromkeys(zf.namelist()):
        if not member.endswith(".npy"):
            continue
        key = member[:-4]
        try:
            with zf.open(member) as fp:
                shape, fortran, dtype = _read_header(fp, key, what)
        except NpzUnreadable:
            raise
        except _CORRUPT:
            raise NpzUnreadable(
                f"{what} is corrupt or truncated (cannot read array {key})"
            ) from None
        out.append(ArrayHeader(key, member, shape, dtype, fortran))
    return out


def _check_total(headers: list[ArrayHeader], what: str) -> None:
    total = sum(h.nbytes for h in headers)
    if total > limits.max_bytes():
        big = max(headers, key=lambda h: h.nbytes)
        shape = "×".join(map(str, big.shape)) or "scalar"
        limits.check_bytes(total, what, f"largest array {big.key}: {shape} {big.dtype}")


def array_headers(source: Source, what: str) -> list[ArrayHeader]:
    """The header of every ``.npy`` member; ``NpzUnreadable`` if the archive cannot be parsed."""
    with _zip(source, what) as zf:
        return _headers(zf, what)


def check_npz_limits(source: Source, what: str) -> None:
    """Raises ``InputError`` if the arrays of the archive exceed the byte cap once loaded.

    An archive that cannot be parsed passes silently: the caller's loader reports it.
    """
    try:
        headers = array_headers(source, what)
    except NpzUnreadable:
        return
    _check_total(headers, what)


def _read_data(fp: IO[bytes], h: ArrayHeader, what: str) -> np.ndarray:
    buf = bytearray(h.nbytes)
    view, got = memoryview(buf), 0
    while got < h.nbytes:
        n = fp.readinto(view[got:])  # type: ignore[attr-defined]  # a ZipExtFile, typed IO[bytes]
        if not n:
            raise NpzUnreadable(f"{what} is corrupt or truncated (array {h.key} is short)")
        got += n
    if h.dtype.itemsize == 0:
        return np.zeros(h.shape, h.dtype)
    flat = np.frombuffer(buf, dtype=h.dtype)
    return flat.reshape(h.shape, order="F" if h.fortran else "C")


def read_npz(source: Source, what: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` array of the archive, after the header check (no pickle, byte cap).

    Args:
        source: a path or the archive's bytes.
        what: the name used in messages (e.g. ``"d.npz"``, ``"RUN/distilled.npz"``).

    Raises:
        NpzUnreadable: not a zip, truncated, a bad header, or object arrays (``.pickle`` set).
        InputError: the arrays would take more than ``RCIG_RELEASE_MAX_BYTES``.
    """
    with _zip(source, what) as zf:
        headers = _headers(zf, what)
        _check_total(headers, what)
        arrays: dict[str, np.ndarray] = {}
        for h in headers:
            try:
                with zf.open(h.member) as fp:
                    if _read_header(fp, h.key, what) != (h.shape, h.fortran, h.dtype):
                        raise NpzUnreadable(f"{what} changed while it was read")
                    arrays[h.key] = _read_data(fp, h, what)
            except NpzUnreadable:
                raise
            except _CORRUPT:
                raise NpzUnreadable(
                    f"{what} is corrupt or truncated (cannot read array {h.key})"
                ) from None
    return arrays
