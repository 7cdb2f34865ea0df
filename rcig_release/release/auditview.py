"""Read-only accessors over audit.json that accept both layouts the audit may write.

The release was specified against one schema (``baselines.naive_release.accuracy``,
``copy_check.per_image`` as a list of objects) and the audit runner writes another
(``baselines.naive.targets.test_accuracy_mean``, ``per_image`` as an object of columns). Both are
accepted here, in one place, so policy evaluation, the card and the report agree. docs/release.md
lists the fields and their alternatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

BASELINE_KEYS = {"naive": ("naive_release", "naive"), "real": ("real_model", "full_data")}


def number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def baseline(audit: Mapping, kind: str) -> Mapping | None:
    """The naive-release (``kind="naive"``) or real-model (``"real"``) baseline, if present."""
    b = audit.get("baselines")
    if not isinstance(b, Mapping):
        return None
    for key in BASELINE_KEYS[kind]:
        if isinstance(b.get(key), Mapping):
            return b[key]
    return None


def target_accuracy(entry: Mapping | None) -> tuple[float | None, str]:
    """(accuracy, where it came from) of a baseline or of the audit's own release targets."""
    if not isinstance(entry, Mapping):
        return None, ""
    acc = number(entry.get("accuracy"))
    if acc is not None:
        return acc, "accuracy"
    targets = entry.get("targets")
    if isinstance(targets, Mapping):
        acc = number(targets.get("test_accuracy_mean"))
        if acc is not None:
            return acc, "targets"
    return None, ""


def baseline_attacks(audit: Mapping, kind: str) -> Mapping:
    b = baseline(audit, kind)
    a = b.get("attacks") if b else None
    return a if isinstance(a, Mapping) else {}


def shadow_count(audit: Mapping) -> int | None:
    n = number(audit.get("n_shadows"))
    if n is None and isinstance(audit.get("config"), Mapping):
        n = number(audit["config"].get("shadows"))
    return int(n) if n is not None else None


_TRAIN = ("nearest_train_distance", "nearest_train_l2")
_TEST = (
    "nearest_test_distance",
    "nearest_holdout_distance",
    "nearest_holdout_l2",
    "nearest_test_l2",
)


def _first(row: Mapping, keys: tuple[str, ...]) -> Any:
    return next((row[k] for k in keys if k in row), None)


def copy_rows(copy_check: Mapping) -> list[dict]:
    """Per released image: nearest_train, nearest_test, ratio, near_copy (either layout)."""
    per = copy_check.get("per_image")
    if isinstance(per, Mapping):  # columns
        n = max((len(v) for v in per.values() if isinstance(v, list)), default=0)
        rows: list[Mapping] = [
            {k: (v[i] if isinstance(v, list) and i < len(v) else None) for k, v in per.items()}
            for i in range(n)
        ]
    elif isinstance(per, list):
        rows = [r for r in per if isinstance(r, Mapping)]
    else:
        rows = []
    return [
        {
            "nearest_train": number(_first(r, _TRAIN)),
            "nearest_test": number(_first(r, _TEST)),
            "ratio": number(r.get("ratio")),
            "near_copy": r.get("near_copy") if isinstance(r.get("near_copy"), bool) else None,
        }
        for r in rows
    ]
