"""Keeping absolute paths, user names and host names out of bundle files.

``redact`` rewrites JSON-like values before they are written (an absolute path keeps only its base
name); ``find_leaks`` scans a finished text file and names what it found, so the writer can refuse
to publish rather than trust the redaction.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from functools import lru_cache
from typing import Any

REDACTED = "<redacted>"
# An absolute POSIX path with at least one more component, a home-relative path, or a Windows drive path.
_ABS_PATH = re.compile(r"(?<![\w.:/])(?:~|/(?:[A-Za-z0-9_.-]+))/[^\s\"'<>]*|\b[A-Za-z]:\\[^\s\"'<>]*")
# Directories that only ever appear as the start of an absolute path on a real machine.
_ROOTS = ("home", "Users", "root", "tmp", "var", "work", "mnt", "opt", "srv", "private", "usr", "etc", "data")


@lru_cache(maxsize=1)
def _identities() -> tuple[str, ...]:
    names = set()
    for get in (getpass.getuser, socket.gethostname, socket.getfqdn):
        try:
            value = get()
        except Exception:  # noqa: BLE001 - any failure just means one name fewer to look for
            continue
        if value and len(value) >= 2 and value not in ("localhost", "localhost.localdomain"):
            names.add(value)
            names.add(value.split(".")[0])
    home = os.path.expanduser("~")
    if home not in ("~", "/"):
        names.add(home)
    return tuple(sorted((n for n in names if len(n) >= 2), key=len, reverse=True))


def _identity_pattern() -> re.Pattern | None:
    ids = _identities()
    if not ids:
        return None
    return re.compile(r"(?<![\w])(?:" + "|".join(re.escape(i) for i in ids) + r")(?![\w])")


def _is_abs_path(s: str) -> bool:
    if re.match(r"^[A-Za-z]:\\", s) or s.startswith("~/"):
        return True
    if s.startswith("/") and len(s) > 1:
        return True
    return False


def redact_str(s: str) -> str:
    if _is_abs_path(s):
        base = re.split(r"[\\/]", s.rstrip("/\\"))[-1]
        s = f"{REDACTED}/{base}" if base else REDACTED
    pattern = _identity_pattern()
    return pattern.sub(REDACTED, s) if pattern else s


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with absolute paths and user/host names removed."""
    if isinstance(obj, str):
        return redact_str(obj)
    if isinstance(obj, dict):
        return {redact_str(str(k)): redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def find_leaks(text: str) -> list[str]:
    """What in ``text`` looks like an absolute path or this machine's user or host name."""
    found = []
    for m in _ABS_PATH.finditer(text):
        token = m.group(0)
        first = token.lstrip("/").split("/")[0]
        if token.startswith("~") or re.match(r"[A-Za-z]:\\", token) or first in _ROOTS:
            found.append("an absolute path")
            break
    pattern = _identity_pattern()
    if pattern and pattern.search(text):
        found.append("a user or host name")
    return found
