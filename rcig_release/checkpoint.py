"""Atomic checkpoints of a pytree with flax.serialization (msgpack) plus a JSON meta file.

Both files are written to a temporary name in the same directory and moved into place with
``os.replace``, so no file is ever torn. The state file is named by its content hash
(``state-<sha256[:16]>.msgpack``) and the meta file, written last, names it: a run killed between
the two writes leaves the previous meta pointing at the previous state file, which is deleted only
after the new meta is in place. So the pair on disk is always one consistent checkpoint.
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

STATE = "state.msgpack"  # the single state file of checkpoints written before content naming
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


def _previous_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def save(directory: Path, state: Any, meta: dict[str, Any]) -> None:
    """Writes the state file, then the meta naming it. The meta also carries the chain of every
    checkpoint of the run so far (``chain``: step and state sha256 of each, this one last) and
    ``previous_state_sha256``, the state this one replaces (``verify_chain``)."""
    data = serialization.to_bytes(state)
    sha = hashlib.sha256(data).hexdigest()
    name = f"state-{sha[:16]}.msgpack"
    atomic_write_bytes(directory / name, data)
    previous = _previous_meta(directory)
    chain = [c for c in previous.get("chain", []) if isinstance(c, dict)]
    prev_sha = previous.get("state_sha256")
    if not chain or chain[-1].get("state_sha256") != sha:  # the same state saved twice: one link
        chain.append({"step": meta.get("step"), "state_sha256": sha})
        prev_sha = prev_sha if prev_sha != sha else None
    else:
        prev_sha = previous.get("previous_state_sha256")
    meta = {
        **meta,
        "state_sha256": sha,
        "state_file": name,
        "previous_state_sha256": prev_sha,
        "chain": chain,
    }
    atomic_write_text(directory / META, json.dumps(meta, indent=1, sort_keys=True))
    for old in [directory / STATE, *directory.glob("state-*.msgpack")]:
        if old.name != name:
            old.unlink(missing_ok=True)


def exists(directory: Path) -> bool:
    return (directory / META).is_file()


def load(directory: Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores a state with the structure of ``template``; InputError if missing or corrupt."""
    if not exists(directory):
        raise InputError(f"no checkpoint to resume from in {directory}")
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        name = Path(str(meta.get("state_file", STATE))).name  # a bare name inside directory
        data = (directory / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("state_sha256"):
            raise ValueError("state file does not match its meta file")
        return serialization.from_bytes(template, data), meta
    except FileNotFoundError:
        raise InputError(
            f"checkpoint in {directory} is unreadable: its state file is missing"
        ) from None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"checkpoint in {directory} is unreadable: {e}") from None


def verify_chain(directory: Path) -> tuple[dict[str, Any], bytes]:
    """The last checkpoint's meta and state bytes, after checking its chain: the state file's
    sha256 is the meta's, the chain's steps increase and end with this state, and
    ``previous_state_sha256`` is the link before it. ``InputError`` naming what is wrong.

    Earlier state files are deleted as the run goes, so only the last state can be hashed; the
    chain records the digests of the others."""
    where = f"checkpoint in {directory.name}"
    if not exists(directory):
        raise InputError(f"no checkpoint in {directory.name}: the run has no checkpoint chain")
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        name = Path(str(meta["state_file"])).name
        data = (directory / name).read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{where}: meta.json or its state file is missing or unreadable") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha != meta.get("state_sha256"):
        raise InputError(f"{where}: the state file's sha256 is not the one meta.json records")
    chain = meta.get("chain")
    if not isinstance(chain, list) or not chain:
        raise InputError(f"{where}: meta.json has no checkpoint chain (a run from before it)")
    steps = [c.get("step") if isinstance(c, dict) else None for c in chain]
    ints = [t for t in steps if isinstance(t, int) and not isinstance(t, bool)]
    if len(ints) != len(steps) or any(b <= a for a, b in zip(ints, ints[1:], strict=False)):
        raise InputError(f"{where}: the chain's steps do not increase")
    if chain[-1].get("state_sha256") != sha or steps[-1] != meta.get("step"):
        raise InputError(f"{where}: the chain does not end with the state file")
    prev = chain[-2].get("state_sha256") if len(chain) > 1 else None
    if meta.get("previous_state_sha256") != prev:
        raise InputError(f"{where}: previous_state_sha256 is not the chain's previous link")
    return meta, data


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


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (inf/nan as null, numpy values as Python ones), keys sorted."""
    return json.dumps(
        _finite(obj), indent=indent, sort_keys=True, default=_jsonable, allow_nan=False
    )


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json_text(obj) + "\n").encode("utf-8"))
