"""Atomic checkpoints of a pytree with flax.serialization (msgpack) plus a JSON meta file.

Both files are written to a temporary name in the same directory and moved into place with
``os.replace``, so a run killed at any instant leaves either the previous checkpoint or the new
one, never a torn file. The meta file is written last and names the state file's sha256, so a
state file from another checkpoint is never paired with the wrong meta.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from rcig_release.errors import InputError

STATE = "state.msgpack"
META = "meta.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save(directory: Path, state: Any, meta: dict[str, Any]) -> None:
    data = serialization.to_bytes(state)
    atomic_write_bytes(directory / STATE, data)
    meta = {**meta, "state_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(directory / META, json.dumps(meta, indent=1, sort_keys=True))


def exists(directory: Path) -> bool:
    return (directory / STATE).is_file() and (directory / META).is_file()


def load(directory: Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores a state with the structure of ``template``; InputError if missing or corrupt."""
    if not exists(directory):
        raise InputError(f"no checkpoint to resume from in {directory}")
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        data = (directory / STATE).read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("state_sha256"):
            raise ValueError("state file does not match its meta file")
        return serialization.from_bytes(template, data), meta
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"checkpoint in {directory} is unreadable: {e}") from None


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(o: Any) -> Any:
    """JSON has no inf/nan: they become null."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
