"""The keyed data fingerprint a bundle publishes instead of the unsalted one (docs/release.md).

A run records ``data.fingerprint`` = ``"sha256:<hex>"`` of its four split arrays
(``rcig_release.data.fingerprint_arrays``): an exact function of the private data, kept in the run
directory, which the audit and the release use to check that they reload the same data. A bundle
never carries it (nor any other unsalted hash of the private arrays): anyone holding a candidate
data set, or all of it but one record and a list of candidates for that record, could test it
against the published digest. The bundle carries instead

    fingerprint_hmac = "hmac-sha256:" + HMAC-SHA256(key, fingerprint.encode("ascii")).hexdigest()

with a key the custodian keeps outside the bundle, and ``key_id`` =
HMAC-SHA256(key, ``KEY_ID_MESSAGE``)[:16 hex] so the custodian can tell which key a bundle was made
with (a 256-bit random key cannot be recovered from it). Without the key the digest is
indistinguishable from random (HMAC-SHA256 as a pseudorandom function); whoever holds the key can
test candidate data sets against it, so the key is as secret as the data.

Default key: ``$XDG_CONFIG_HOME/rcig-release/fingerprint.key`` (``~/.config/...`` when
``XDG_CONFIG_HOME`` is unset), 32 random bytes from ``secrets.token_bytes`` created with mode 0600
in a 0700 directory when absent. One key per custodian keeps keyed fingerprints of the same data
equal across that custodian's releases.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from rcig_release.errors import InputError

PREFIX = "hmac-sha256:"
KEY_BYTES = 32
KEY_ID_MESSAGE = b"rcig-release/fingerprint-key-id/v1"
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/rcig-release/fingerprint.key`` (``~/.config`` without it)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rcig-release" / "fingerprint.key"


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))


def read_key(path: Path, *, create: bool = False) -> tuple[bytes, bool]:
    """The key's bytes and whether it was created now.

    ``create``: a missing file is created (32 random bytes, mode 0600). Refused (``InputError``):
    a key shorter than 32 bytes, one that is not a regular file, and one that group or others can
    read or write (as ``ssh`` refuses such a private key)."""
    created = False
    if create and not os.path.lexists(path):
        try:
            _create(path)
        except OSError as e:
            raise InputError(
                f"cannot create the fingerprint key {path}: {e.strerror or type(e).__name__}"
            ) from None
        created = True
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"fingerprint key not found: {path}") from None
    except OSError:
        raise InputError(f"fingerprint key not readable: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"fingerprint key is not a regular file: {path}")
    if st.st_mode & 0o077:
        raise InputError(
            f"fingerprint key {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); it must be as private as the data: chmod 600 it"
        )
    from rcig_release import limits

    limits.check_file_bytes(st.st_size, f"fingerprint key {path}")  # from lstat, before reading
    try:
        key = path.read_bytes()
    except OSError:
        raise InputError(f"fingerprint key not readable: {path}") from None
    if len(key) < KEY_BYTES:
        raise InputError(
            f"fingerprint key {path} holds {len(key)} bytes; it needs at least {KEY_BYTES} "
            "random bytes"
        )
    return key, created


def keyed(fingerprint: str, key: bytes) -> str:
    """``"hmac-sha256:<hex>"`` of the run's ``"sha256:<hex>"`` fingerprint under ``key``."""
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise InputError("run.json: data.fingerprint is not a 'sha256:<64 hex digits>' fingerprint")
    return PREFIX + hmac.new(key, fingerprint.encode("ascii"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """16 hex digits naming the key (HMAC of a fixed message): which key made a bundle."""
    return hmac.new(key, KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def record(fingerprint: str, key: bytes) -> dict[str, str]:
    """What a bundle publishes about the data's identity (``provenance.json`` ``data``)."""
    return {"fingerprint_hmac": keyed(fingerprint, key), "fingerprint_key_id": key_id(key)}


def check(data: object, fingerprint: str, key: bytes) -> str | None:
    """None when ``data`` (provenance.json's ``data``) holds the keyed ``fingerprint``; else why not."""
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint_hmac"), str):
        return "provenance.json: data.fingerprint_hmac missing (a bundle from before keyed fingerprints?)"
    if data.get("fingerprint_key_id") != key_id(key):
        return (
            f"provenance.json: the keyed fingerprint was made with another key (key id "
            f"{data.get('fingerprint_key_id')!s:.16}, this key's is {key_id(key)})"
        )
    if not hmac.compare_digest(data["fingerprint_hmac"], keyed(fingerprint, key)):
        return (
            "provenance.json: data.fingerprint_hmac is not the keyed fingerprint of the data "
            "given: the bundle was not made from this data"
        )
    return None
