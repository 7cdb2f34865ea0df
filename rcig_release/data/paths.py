"""Where a data source lives on disk, and the rule that keeps outputs out of it.

An output directory (``distill --out``) must not be the data source, lie inside it (it would
become one more class of an image folder) or contain it (``--force`` would move the data aside).
"""

from __future__ import annotations

import os
from pathlib import Path

from rcig_release.errors import InputError

NAMED_SOURCES = ("digits", "mnist", "fashion-mnist", "cifar10")


def local_path(spec: str) -> Path | None:
    """The file or folder a ``--data`` value names, or ``None`` for a built-in/downloaded name."""
    if not isinstance(spec, str) or not spec.strip() or spec in NAMED_SOURCES:
        return None
    return Path(spec).expanduser()


def check_out_apart(spec: str, out: str | os.PathLike, flag: str = "--out") -> None:
    """Raises ``InputError`` if ``out`` is, is inside, or contains the data source ``spec``.

    Both paths are compared after resolving symlinks and ``..``; a source that does not exist
    passes (the loader reports it).
    """
    src = local_path(spec)
    if src is None or not src.exists():
        return
    data = src.resolve()
    dest = Path(out).expanduser().resolve()
    kind = "folder" if data.is_dir() else "file"
    if dest == data:
        raise InputError(f"{flag} {out} is the data {kind} itself; write the output elsewhere")
    if data in dest.parents:
        raise InputError(
            f"{flag} {out} is inside the data folder {spec}; write the output outside it"
        )
    if dest in data.parents:
        raise InputError(
            f"{flag} {out} contains the data {kind} {spec}; write the output elsewhere"
        )
