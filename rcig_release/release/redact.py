"""Keeping what identifies this machine out of bundle files.

Two halves with different jobs:

- ``redact`` rewrites *machine-recorded* JSON (run.json, eval.json, audit.json) before it is
  written: an absolute path keeps only its base name, and this machine's user and host names become
  ``<redacted>``. It is never applied to what the user typed (``--name``, ``--override``, class
  names): those are written as given, or refused.
- ``find_leaks`` scans a finished text file and names what it found, so the writer refuses to
  publish rather than trust the redaction. It reads only human-readable text (the payloads of
  ``data:`` URIs are skipped) and looks only for what identifies the machine: an absolute
  path under a system root, a home-relative path, the home directory, ``user@…`` / ``…@host``,
  the host name in a path-like context (``//host``, ``\\\\host``, ``host:/``), the fully qualified
  host name, and the user or host name right after a word such as ``user``, ``host`` or
  ``hostname``. A bare word equal to the user or host name (a class called ``root``, a dataset
  called ``vm``) identifies nothing and is not refused.
"""

from __future__ import annotations

import getpass
import html
import os
import re
import socket
from functools import lru_cache
from typing import Any

REDACTED = "<redacted>"
# An absolute POSIX path with at least one more component, a home-relative path, or a Windows drive path.
_ABS_PATH = re.compile(
    r"(?<![\w.:/])(?:~[\w.-]*|/(?:[A-Za-z0-9_.-]+))/[^\s\"'<>]*|\b[A-Za-z]:\\[^\s\"'<>]*"
)
# Directories that only ever appear as the start of an absolute path on a real machine.
_ROOTS = (
    "home",
    "Users",
    "root",
    "tmp",
    "var",
    "work",
    "mnt",
    "opt",
    "srv",
    "private",
    "usr",
    "etc",
    "data",
)
# Embedded binary: the base64 payload of data: URIs (the PNGs in report.html).
_BINARY = re.compile(r"data:[\w.+/-]+;base64,[A-Za-z0-9+/=]*")
_CONTEXT_WORDS = r"(?:user|username|user_name|login|account|host|hostname|host_name|node|nodename|machine|server)"


@lru_cache(maxsize=1)
def _names() -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """(user names, host names, home directory) of this machine; names of 2+ characters."""
    users: set[str] = set()
    hosts: set[str] = set()
    for get, into in (
        (getpass.getuser, users),
        (socket.gethostname, hosts),
        (socket.getfqdn, hosts),
    ):
        try:
            value = get()
        except Exception:  # noqa: BLE001 - any failure just means one name fewer to look for
            continue
        if value and value not in ("localhost", "localhost.localdomain"):
            into.add(value)
            into.add(value.split(".")[0])
    expanded = os.path.expanduser("~")
    home = expanded.rstrip("/") if expanded not in ("~", "/") else None

    def keep(names):
        return tuple(sorted((n for n in names if len(n) >= 2), key=len, reverse=True))

    return keep(users), keep(hosts), home


def _alt(names: tuple[str, ...]) -> str:
    return "|".join(re.escape(n) for n in names)


def _identity_pattern() -> re.Pattern | None:
    """Any user or host name as a whole word (for rewriting machine-recorded JSON only)."""
    users, hosts, home = _names()
    ids = tuple(
        sorted(set(users) | set(hosts) | ({home} if home else set()), key=len, reverse=True)
    )
    if not ids:
        return None
    return re.compile(r"(?<![\w])(?:" + _alt(ids) + r")(?![\w])")


@lru_cache(maxsize=1)
def _leak_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    users, hosts, home = _names()
    pats: list[tuple[str, str]] = []
    if home:
        pats.append(("the home directory", r"(?<![\w./-])" + re.escape(home) + r"(?![\w.-])"))
    if users:
        u = _alt(users)
        pats += [
            ("the user name", rf"(?<![\w.+-])(?:{u})@[\w.-]+"),
            ("the user name", rf"~(?:{u})(?![\w.-])"),
            ("the user name", rf"(?i:\b{_CONTEXT_WORDS})[\"']?\s*[:=]?\s*[\"']?(?:{u})(?![\w.-])"),
        ]
    if hosts:
        h = _alt(hosts)
        pats += [
            ("the host name", rf"@(?:{h})(?![\w-])"),
            ("the host name", rf"(?://|\\\\)(?:{h})(?![\w-])"),
            ("the host name", rf"(?<![\w.-])(?:{h}):[/~\\]"),
            ("the host name", rf"(?i:\b{_CONTEXT_WORDS})[\"']?\s*[:=]?\s*[\"']?(?:{h})(?![\w-])"),
        ]
        fqdn = [n for n in hosts if "." in n]
        if fqdn:
            pats.append(("the host name", rf"(?<![\w.-])(?:{_alt(tuple(fqdn))})(?![\w-])"))
    return tuple((what, re.compile(p)) for what, p in pats)


def _is_abs_path(s: str) -> bool:
    if re.match(r"^[A-Za-z]:\\", s) or s.startswith("~/"):
        return True
    if s.startswith("/") and len(s) > 1:
        return True
    return False


def redact_str(s: str) -> str:
    """A machine-recorded string without absolute paths or user/host names."""
    if _is_abs_path(s):
        base = re.split(r"[\\/]", s.rstrip("/\\"))[-1]
        s = f"{REDACTED}/{base}" if base else REDACTED
    pattern = _identity_pattern()
    return pattern.sub(REDACTED, s) if pattern else s


def redact(obj: Any) -> Any:
    """A copy of a machine-recorded JSON-like value with absolute paths and user/host names removed."""
    if isinstance(obj, str):
        return redact_str(obj)
    if isinstance(obj, dict):
        return {redact_str(str(k)): redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def _shown(token: str) -> str:
    return repr(token if len(token) <= 60 else token[:57] + "...")


def find_leaks(text: str) -> list[str]:
    """What in the human-readable part of ``text`` identifies this machine, each with the match."""
    text = html.unescape(_BINARY.sub(" ", text))  # the card writes ``@`` and ``:`` as entities
    found = []
    for m in _ABS_PATH.finditer(text):
        token = m.group(0)
        first = token.lstrip("/").split("/")[0]
        if token.startswith("~") or re.match(r"[A-Za-z]:\\", token) or first in _ROOTS:
            found.append(f"an absolute path {_shown(token)}")
            break
    for what, pattern in _leak_patterns():
        hit = pattern.search(text)
        if hit:
            found.append(f"{what} in {_shown(hit.group(0))}")
    return found
