"""Reading what a release needs from a run directory: the arrays, run.json, eval.json, the audit.

Every file is read without following symlinks (a symlink in RUN is refused, so nothing outside the
run can end up in a bundle). The audit is validated strictly on the fields a release depends on
(``run_sha256``, ``attacks``, ``copy_check``) and leniently on the rest, and it must be the audit of
this run's ``distilled.npz`` (its ``run_sha256``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release import limits
from rcig_release.errors import InputError
from rcig_release.npzfile import NpzUnreadable, array_headers, read_npz
from rcig_release.release.hashing import arrays_sha256, bytes_sha256
from rcig_release.safeio import loads_json, read_file

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class ReleaseInputs:
    images: np.ndarray  # float32 [N,H,W,C] in [0,1], pixel space
    labels: np.ndarray  # float32 [N,C] learned (soft) labels
    classes: tuple[str, ...]
    run_json: dict
    eval_json: dict
    audit: dict
    run_sha256: str  # sha256 of RUN/distilled.npz
    content_sha256: str  # hashing.arrays_sha256(images, labels, classes)
    roc_png: bytes | None  # RUN/audit/roc.png when present
    scores: dict[str, np.ndarray] | None  # RUN/audit/scores.npz when present
    init_indices: np.ndarray | None = (
        None  # int64 [N]: training record each image started from, -1 none
    )
    run_json_sha256: str | None = None  # sha256 of RUN/run.json (the audit recorded the same)
    npz_arrays: Mapping[str, np.ndarray] | None = (
        None  # every array of RUN/distilled.npz (--replay)
    )
    # what the bundle carries for recomputing the game (recompute.bundle_files), set by release
    game_files: dict[str, bytes] | None = None


def read_nofollow(path: Path, what: str) -> bytes:
    """The bytes of a regular file; a symlink or anything else is an ``InputError``."""
    return read_file(path, what)  # size from lstat checked first (RCIG_RELEASE_MAX_FILE_BYTES)


def json_object(data: bytes, what: str) -> dict:
    """``data`` parsed as one JSON object (depth and digit caps), or an ``InputError`` naming
    ``what``."""
    obj = loads_json(data, what)  # depth and digit caps: one line, never a traceback
    if not isinstance(obj, dict):
        raise InputError(f"{what} must hold a JSON object")
    return obj


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


MAX_NAME_CHARS = 1000  # one class name, checked from the classes array's header


def check_release_headers(data: bytes, what: str) -> None:
    """From the array headers alone, before anything is decompressed: the class count (the
    labels' columns and the classes array) under ``RCIG_RELEASE_MAX_CLASSES`` and class names of
    at most ``MAX_NAME_CHARS`` characters. An archive that cannot be parsed passes: the loader
    names it."""
    try:
        headers = {h.key: h for h in array_headers(data, what)}
    except NpzUnreadable:
        return
    for key, axis in (("labels", 1), ("classes", 0)):
        h = headers.get(key)
        if h is not None and len(h.shape) > axis:
            limits.check_classes(h.shape[axis], what)
    h = headers.get("classes")
    if h is not None and h.dtype.kind == "U" and h.dtype.itemsize // 4 > MAX_NAME_CHARS:
        raise InputError(
            f"{what}: class names may have up to {MAX_NAME_CHARS} characters (the classes "
            f"array holds names of up to {h.dtype.itemsize // 4:,})"
        )


def load_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The arrays of an npz; its headers are checked against the byte and class caps first."""
    check_release_headers(data, what)
    try:
        return read_npz(data, what)
    except NpzUnreadable:
        raise InputError(f"{what} is not a readable npz (or holds pickled objects)") from None


def validate_arrays(
    arrays: Mapping[str, np.ndarray], what: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Checks and returns (images float32 [N,H,W,C], labels float32 [N,C], classes)."""
    for key in ("images", "labels", "classes"):
        if key not in arrays:
            raise InputError(f"{what}: missing array {key!r}")
    images, labels, classes = arrays["images"], arrays["labels"], arrays["classes"]
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3):
        raise InputError(
            f"{what}: images must be [N,H,W,C] with N > 0 and C in (1, 3), got {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating) or not np.issubdtype(labels.dtype, np.floating):
        raise InputError(f"{what}: images and labels must be floating point")
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise InputError(
            f"{what}: labels must be [N,C] with N = {images.shape[0]}, got {labels.shape}"
        )
    if classes.ndim != 1 or classes.dtype.kind != "U" or classes.shape[0] != labels.shape[1]:
        raise InputError(f"{what}: classes must be {labels.shape[1]} strings")
    if not (np.isfinite(images).all() and np.isfinite(labels).all()):
        raise InputError(f"{what}: images or labels contain non-finite values")
    if images.min() < 0.0 or images.max() > 1.0:
        raise InputError(f"{what}: images must be in pixel space [0, 1]")
    names = tuple(str(c) for c in classes)
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise InputError(f"{what}: class names must be distinct and non-empty")
    if len(names) < 2:
        raise InputError(f"{what}: a release needs at least 2 classes (got {len(names)})")
    return images.astype(np.float32), labels.astype(np.float32), names


def _metric_dict(m: Any, where: str) -> None:
    if not isinstance(m, Mapping):
        raise InputError(f"audit.json: {where} must be an object")
    for key in ("tpr_at_fpr", "tpr_at_fpr_ci", "groups"):
        if key in m and m[key] is not None and not isinstance(m[key], Mapping):
            raise InputError(f"audit.json: {where}.{key} must be an object")


def _prob(x: Any, where: str) -> None:
    if x is not None and not (_finite(x) and 0.0 <= x <= 1.0):
        raise InputError(f"audit.json: {where} must be a number in [0, 1] or null")


def _count_field(x: Any, where: str) -> None:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise InputError(f"audit.json: {where} must be a count")


def validate_game(game: Any) -> None:
    """The game section the gate reads: every field a rule uses has the right type and range."""
    if not isinstance(game, Mapping) or not isinstance(game.get("attacks"), Mapping):
        raise InputError("audit.json: game must be an object with attacks")
    for name, a in game["attacks"].items():
        groups = a.get("groups") if isinstance(a, Mapping) else None
        if not isinstance(groups, Mapping) or not groups:
            raise InputError(f"audit.json: game.attacks.{name}.groups must be a non-empty object")
        for g, gm in groups.items():
            where = f"game.attacks.{name}.groups.{g}"
            if not isinstance(gm, Mapping) or not isinstance(gm.get("p_value"), Mapping):
                raise InputError(f"audit.json: {where}.p_value must be an object")
            for key, p in gm["p_value"].items():
                _prob(p, f"{where}.p_value.{key}")
            _prob(gm.get("auc"), f"{where}.auc")
            for key in ("epsilon_lower_bound", "max_epsilon"):
                if key in gm and not (_finite(gm[key]) and gm[key] >= 0):
                    raise InputError(f"audit.json: {where}.{key} must be a finite number >= 0")
            folds = gm.get("folds")
            if not isinstance(folds, list) or not folds:
                raise InputError(f"audit.json: {where}.folds must be a non-empty list")
            for i, f in enumerate(folds):
                tests = (
                    [f.get("auc")] + list((f.get("tpr_at_fpr") or {}).values())
                    if isinstance(f, Mapping)
                    else [None]
                )
                for t in tests:
                    if not isinstance(t, Mapping):
                        raise InputError(f"audit.json: {where}.folds[{i}] is malformed")
                    _count_field(t.get("n_in"), f"{where}.folds[{i}] n_in")
                    _count_field(t.get("n_out"), f"{where}.folds[{i}] n_out")
    eps = game.get("epsilon")
    if eps is not None and (
        not isinstance(eps, Mapping)
        or (
            eps.get("confidence") is not None
            and not (_finite(eps["confidence"]) and 0 < eps["confidence"] < 1)
        )
    ):
        raise InputError("audit.json: game.epsilon.confidence must be a number in (0, 1)")


def validate_audit(audit: Mapping) -> None:
    """Strict on the fields a release depends on; optional fields are only type-checked."""
    if "game" in audit:
        validate_game(audit["game"])
    sha = audit.get("run_sha256")
    if not isinstance(sha, str) or not _HEX64.match(sha.lower().removeprefix("sha256:")):
        raise InputError("audit.json: run_sha256 missing or not a sha256 hex digest")
    attacks = audit.get("attacks")
    if not isinstance(attacks, Mapping) or not attacks:
        raise InputError("audit.json: attacks missing or empty")
    for name, m in attacks.items():
        _metric_dict(m, f"attacks.{name}")
        groups = m.get("groups") or {}
        for g, gm in groups.items():
            _metric_dict(gm, f"attacks.{name}.groups.{g}")
    cc = audit.get("copy_check")
    if not isinstance(cc, Mapping):
        raise InputError("audit.json: copy_check missing")
    near = cc.get("near_copies")
    if not isinstance(near, int) or isinstance(near, bool) or near < 0:
        raise InputError("audit.json: copy_check.near_copies must be a count")
    if not _finite(cc.get("threshold")) or cc["threshold"] < 0:
        raise InputError("audit.json: copy_check.threshold must be a finite number >= 0")
    if "per_image" in cc and not isinstance(cc["per_image"], (list, Mapping)):
        raise InputError("audit.json: copy_check.per_image must be a list or an object of columns")
    if "baselines" in audit and not isinstance(audit["baselines"], Mapping):
        raise InputError("audit.json: baselines must be an object")


def init_indices_of(arrays: Mapping[str, np.ndarray], run_json: Mapping, n: int) -> np.ndarray:
    """The training index each released image started from (-1: noise), from RUN/distilled.npz's
    ``init_indices`` and run.json's ``init.indices`` (which must agree when both are present)."""
    found = []
    if "init_indices" in arrays:
        found.append(("RUN/distilled.npz: init_indices", arrays["init_indices"]))
    init = run_json.get("init")
    if isinstance(init, Mapping) and init.get("indices") is not None:
        found.append(("run.json: init.indices", init["indices"]))
    checked = []
    for what, raw in found:
        try:
            a = np.asarray(raw)
            ok = a.shape == (n,) and (a.size == 0 or np.issubdtype(a.dtype, np.integer))
        except (TypeError, ValueError):
            ok = False
        if not ok or (a < -1).any():
            raise InputError(f"{what} must be {n} integers >= -1 (one per released image)")
        checked.append(a.astype(np.int64))
    if len(checked) == 2 and not np.array_equal(checked[0], checked[1]):
        raise InputError("RUN/distilled.npz init_indices and run.json init.indices disagree")
    if checked:
        return checked[0]
    mode = init.get("mode") if isinstance(init, Mapping) else None
    if mode == "real" or (
        isinstance(run_json.get("config"), Mapping) and run_json["config"].get("init") == "real"
    ):
        raise InputError("a real-init run without init_indices: the memorisation check needs them")
    return np.full(n, -1, np.int64)


def load_release_inputs(run_dir: str | Path) -> ReleaseInputs:
    """Reads RUN/{distilled.npz, run.json, eval.json, audit/audit.json} (+ roc.png, scores.npz)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"run directory not found: {run.name or run}")
    npz_bytes = read_nofollow(run / "distilled.npz", "RUN/distilled.npz")
    arrays = load_npz(npz_bytes, "RUN/distilled.npz")
    images, labels, classes = validate_arrays(arrays, "RUN/distilled.npz")
    run_json_bytes = read_nofollow(run / "run.json", "RUN/run.json")
    run_json = json_object(run_json_bytes, "RUN/run.json")
    try:
        eval_bytes = read_nofollow(run / "eval.json", "RUN/eval.json")
    except InputError as e:
        raise InputError(f"{e} (run `rcig-release evaluate` first)") from None
    eval_json = json_object(eval_bytes, "RUN/eval.json")
    try:
        audit_bytes = read_nofollow(run / "audit" / "audit.json", "RUN/audit/audit.json")
    except InputError as e:
        raise InputError(f"{e} (run `rcig-release audit` first)") from None
    audit = json_object(audit_bytes, "RUN/audit/audit.json")
    validate_audit(audit)

    run_sha = bytes_sha256(npz_bytes)
    if audit["run_sha256"].lower().removeprefix("sha256:") != run_sha:
        raise InputError(
            "RUN/distilled.npz changed since the audit: audit.json run_sha256 does not match it "
            "(stale audit? re-run it)"
        )
    run_json_sha = check_run_json_audited(audit, run_json_bytes)
    init_indices = init_indices_of(arrays, run_json, len(images))

    roc = None
    if os.path.lexists(run / "audit" / "roc.png"):
        roc = read_nofollow(run / "audit" / "roc.png", "RUN/audit/roc.png")
    scores = None
    if os.path.lexists(run / "audit" / "scores.npz"):
        scores = load_npz(
            read_nofollow(run / "audit" / "scores.npz", "RUN/audit/scores.npz"),
            "RUN/audit/scores.npz",
        )
    return ReleaseInputs(
        images=images,
        labels=labels,
        classes=classes,
        run_json=run_json,
        eval_json=eval_json,
        audit=audit,
        run_sha256=run_sha,
        content_sha256=arrays_sha256(images, labels, classes),
        roc_png=roc,
        scores=scores,
        init_indices=init_indices,
        run_json_sha256=run_json_sha,
        npz_arrays=arrays,
    )


def check_run_json_audited(audit: Mapping, run_json_bytes: bytes) -> str:
    """The sha256 of RUN/run.json, which must be the one the audit recorded (``run_json_sha256``):
    the audit's shadows re-ran run.json's configuration, so a run.json edited after the audit
    describes a pipeline nobody audited."""
    digest = bytes_sha256(run_json_bytes)
    recorded = audit.get("run_json_sha256")
    if not isinstance(recorded, str) or not _HEX64.match(recorded.lower()):
        raise InputError(
            "audit.json: run_json_sha256 missing (an audit written before the audit recorded "
            "the run.json it audited): re-run rcig-release audit"
        )
    if recorded.lower() != digest:
        raise InputError(
            "RUN/run.json changed since the audit: its sha256 is not audit.json's "
            "run_json_sha256 (re-run rcig-release audit)"
        )
    return digest
