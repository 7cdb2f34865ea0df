"""Reading files and parsing text from outside, with every cap checked before the work grows.

- ``read_file``: a regular file's bytes, never through a symlink; its size from ``lstat`` is
  checked against ``RCIG_RELEASE_MAX_FILE_BYTES`` before it is opened, and no more than the cap
  is read (a file that grows meanwhile is refused too).
- ``loads_json``: strict JSON whose nesting depth (scanned before parsing, linear) is at most
  ``limits.MAX_DEPTH`` and whose integers have at most ``limits.MAX_INT_DIGITS`` digits; every
  failure is one ``InputError`` naming ``what`` (never a RecursionError or ValueError).
- ``loads_toml``: the same for TOML (depth checked on the parsed value, iteratively).

Limits and variables: ``rcig_release.limits`` (docs/data.md, "Size limits").
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release import limits
from rcig_release.errors import InputError

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of the regular file ``path`` (``what`` names it in messages)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InputError(f"{what} not found") from None
    except OSError:
        raise InputError(f"{what} not readable") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{what} is a symlink; refusing to follow it")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} is not a regular file")
    limits.check_file_bytes(st.st_size, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise InputError(f"{what} not readable") from None
    cap = limits.max_file_bytes()
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    limits.check_file_bytes(len(data), what)
    return data


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text (strings skipped), in linear time."""
    bare = _STRING.sub("", text)
    if not bare:
        return 0
    b = np.frombuffer(bare.encode("utf-8", "replace"), dtype=np.uint8)
    step = np.isin(b, (0x5B, 0x7B)).astype(np.int64) - np.isin(b, (0x5D, 0x7D))
    return int(np.cumsum(step).max(initial=0))


def _int(what: str):
    def parse(s: str) -> int:
        if len(s.lstrip("-")) > limits.MAX_INT_DIGITS:
            raise InputError(
                f"{what} holds an integer of {len(s.lstrip('-')):,} digits (at most "
                f"{limits.MAX_INT_DIGITS})"
            )
        return int(s)

    return parse


def _decode(data: bytes | str, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text") from None


def _too_deep(what: str) -> InputError:
    return InputError(f"{what} is nested more than {limits.MAX_DEPTH} levels deep")


def loads_json(data: bytes | str, what: str) -> Any:
    """Parses strict JSON (NaN and Infinity refused) under the depth and digit caps."""
    import json

    text = _decode(data, what)
    if json_depth(text) > limits.MAX_DEPTH:
        raise _too_deep(what)

    def constant(name: str) -> Any:
        raise InputError(f"{what} is not valid JSON ({name} is not a JSON number)")

    try:
        return json.loads(text, parse_int=_int(what), parse_constant=constant)
    except InputError:
        raise
    except RecursionError:
        raise _too_deep(what) from None
    except ValueError as e:  # JSONDecodeError included
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise InputError(f"{what} is not valid JSON{where}") from None


def depth(obj: Any) -> int:
    """Nesting depth of lists and dicts in ``obj``, iteratively (no recursion)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in x)
    return deepest


def toml_key_depth(text: str) -> int:
    """The most dots in one line's key (before ``=``) or table header, in linear time: an upper
    bound on how deep a dotted key nests (a dot inside a quoted key counts too)."""
    deepest = 0
    for line in text.splitlines():
        s = line.lstrip()
        if not s or s.startswith("#"):
            continue
        key = s if s.startswith("[") else s.split("=", 1)[0]
        deepest = max(deepest, key.count("."))
    return deepest


def loads_toml(data: bytes | str, what: str) -> dict[str, Any]:
    """Parses TOML; too deep, too long an integer or a syntax error is one ``InputError``."""
    text = _decode(data, what)
    if toml_key_depth(text) > limits.MAX_DEPTH:  # tomllib is slow on 10⁴-part dotted keys
        raise _too_deep(what)
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{what} is not valid TOML: {e}") from None
    except RecursionError:
        raise _too_deep(what) from None
    except ValueError:  # an integer over Python's digit limit
        raise InputError(
            f"{what} holds an integer too long to read (at most {limits.MAX_INT_DIGITS} digits)"
        ) from None
    if depth(obj) > limits.MAX_DEPTH:
        raise _too_deep(what)
    _check_ints(obj, what)
    return obj


def _check_ints(obj: Any, what: str) -> None:
    stack = [obj]
    bound = 10**limits.MAX_INT_DIGITS
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, int) and not isinstance(x, bool) and abs(x) >= bound:
            raise InputError(f"{what} holds an integer of more than {limits.MAX_INT_DIGITS} digits")
