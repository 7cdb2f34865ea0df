"""Validation of TOML inputs (release policies, ``--config`` files) by pydantic models, with the
first problem turned into one ``InputError`` line.

The models forbid unknown keys (``extra="forbid"``) and are strict (a string is no number, a
boolean no integer; a TOML integer is accepted where a number is expected). Of pydantic's
errors, an unknown key is reported first, with the closest known key of its table, so a typo
reads "unknown key audit.min_shadow (did you mean audit.min_shadows?)" rather than "missing
key"; then missing keys and wrong types, naming the key path and the expected type. Never
pydantic's multi-line report.
"""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rcig_release.errors import InputError

# every schema's settings: unknown keys refused, no coercion, immutable once validated
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)

M = TypeVar("M", bound=BaseModel)
Path = tuple[str | int, ...]  # keys of nested tables, and indices into arrays

_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "model_type": "a table",
    "dict_type": "a table",
    "model_attributes_type": "a table",
}
_MISSING = object()


def toml_type(value: Any) -> str:
    """What a TOML value is, in TOML's words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return type(value).__name__


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation may hold (``M``, ``M | None``, ``list[M]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType or origin is list:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def known_keys(model: type[BaseModel], table: Path) -> list[str]:
    """The keys a table at ``table`` (a path of keys, no indices) may hold."""
    models = [model]
    for key in table:
        models = [
            m
            for parent in models
            if isinstance(key, str) and key in parent.model_fields
            for m in _models_in(parent.model_fields[key].annotation)
        ]
    return sorted({k for m in models for k in m.model_fields})


def _input_path(raw: Any, loc: Sequence[str | int]) -> Path:
    """The part of pydantic's ``loc`` that is keys and indices of the input (without the union
    members' tags that pydantic appends, e.g. ``'float'``, ``'literal[False]'``)."""
    path: list[str | int] = []
    node = raw
    for part in loc:
        if isinstance(node, Mapping) and isinstance(part, str):
            path.append(part)
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        else:
            break
    return tuple(path)


def _expected(error: Mapping[str, Any]) -> str:
    if error["type"] == "literal_error":
        return str(error.get("ctx", {}).get("expected", "")).replace("False", "false")
    return _EXPECTED.get(error["type"], "")


def one_line(
    exc: ValidationError,
    raw: Any,
    model: type[BaseModel],
    unknown: Callable[[Path], str | None] | None = None,
) -> str:
    """pydantic's first relevant error as one line (without the file's name): unknown keys first;
    ``unknown(path)`` may word an unknown key's line itself (else: the closest known key)."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    error = extra[0] if extra else errors[0]
    path = _input_path(raw, error["loc"])
    key = dotted(path)
    if error["type"] == "extra_forbidden":
        custom = unknown(path) if unknown is not None else None
        if custom is not None:
            return custom
        table = path[:-1]
        close = difflib.get_close_matches(str(path[-1]), known_keys(model, table), n=1, cutoff=0.6)
        hint = f" (did you mean {dotted((*table, close[0]))}?)" if close else ""
        return f"unknown key {key}{hint}"
    if error["type"] == "missing":
        return f"missing key {key}"
    expected = [
        x
        for e in errors
        if _input_path(raw, e["loc"]) == path and e["type"] != "missing"
        for x in [_expected(e)]
        if x
    ]
    if expected:
        want = " or ".join(dict.fromkeys(expected))
        if want == "a table":
            return f"{key} must be a table"
        return f"{key} has the wrong type: expected {want}, got {toml_type(error['input'])}"
    return f"{key}: {error['msg']}"  # pydantic's own line, for errors no schema here raises


def validate(
    model: type[M],
    raw: Any,
    where: str,
    unknown: Callable[[Path], str | None] | None = None,
) -> M:
    """``model`` validated from the parsed TOML ``raw``; ``InputError("{where}: ...")`` (one line)
    on the first problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise InputError(f"{where}: {one_line(e, raw, model, unknown)}") from None
