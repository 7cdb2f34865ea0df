"""`verify`: is a bundle intact, and is its audit the audit of the data inside it?

Returns one line per problem: every missing, extra or changed file (against manifest-sha256.txt and
croissant.json), every symlink (never followed), and every broken binding between the released
arrays (``data/distilled.npz``), their PNG and CSV renderings, the provenance, the verdict and the
audit. An empty list means intact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from rcig_release.errors import InputError
from rcig_release.npzfile import check_npz_limits
from rcig_release.release.bundle import CROISSANT, MANIFEST
from rcig_release.release.hashing import arrays_sha256, bytes_sha256
from rcig_release.release.inputs import load_npz, validate_arrays
from rcig_release.release.safety import to_uint8

REQUIRED = (
    "README.md",
    "data/distilled.npz",
    "data/labels.csv",
    "report/audit.json",
    "report/roc.png",
    "report/report.html",
    "policy/verdict.json",
    "provenance.json",
    CROISSANT,
    MANIFEST,
)
_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")
_IMAGE = re.compile(r"^data/images/[^/]+/(\d+)\.png$")


def _scan(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """Reads every regular file under root without following symlinks."""
    files: dict[str, bytes] = {}
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                problems.append(f"symlink (not followed): {(base / d).relative_to(root).as_posix()}")
                dirnames.remove(d)
        for f in filenames:
            p = base / f
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"symlink (not followed): {rel}")
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"not a regular file: {rel}")
                continue
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                files[rel] = fh.read()
    return files, problems


def _json(files: dict[str, bytes], path: str, problems: list[str]) -> dict | None:
    if path not in files:
        return None
    try:
        obj = json.loads(files[path].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        problems.append(f"{path}: not valid JSON")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return obj


def _check_manifest(files: dict[str, bytes], problems: list[str]) -> None:
    if MANIFEST not in files:
        problems.append(f"missing: {MANIFEST}")
        return
    try:
        text = files[MANIFEST].decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{MANIFEST}: not UTF-8 text")
        return
    listed: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            problems.append(f"{MANIFEST}: line {n} is malformed")
            continue
        digest, path = m.groups()
        if path.startswith("/") or "\\" in path or ".." in path.split("/") or path == MANIFEST:
            problems.append(f"{MANIFEST}: line {n} names an invalid path")
            continue
        if path in listed:
            problems.append(f"{MANIFEST}: {path} listed twice")
        listed[path] = digest
    for path, digest in sorted(listed.items()):
        if path not in files:
            problems.append(f"missing: {path}")
        elif bytes_sha256(files[path]) != digest:
            problems.append(f"changed: {path} (sha256 differs from {MANIFEST})")
    for path in sorted(files):
        if path != MANIFEST and path not in listed:
            problems.append(f"extra: {path} (not in {MANIFEST})")
    for path in REQUIRED:
        if path not in files and path not in listed and path != MANIFEST:
            problems.append(f"missing: {path}")


def _check_croissant(files: dict[str, bytes], problems: list[str]) -> None:
    meta = _json(files, CROISSANT, problems)
    if meta is None:
        return
    dist = meta.get("distribution")
    if not isinstance(dist, list):
        problems.append(f"{CROISSANT}: no distribution list")
        return
    listed = {}
    for entry in dist:
        if isinstance(entry, dict) and isinstance(entry.get("contentUrl"), str):
            listed[entry["contentUrl"]] = entry.get("sha256")
    for path, digest in sorted(listed.items()):
        if path in files and bytes_sha256(files[path]) != digest:
            problems.append(f"changed: {path} (sha256 differs from {CROISSANT})")
        elif path not in files:
            problems.append(f"missing: {path} (listed in {CROISSANT})")
    for path in sorted(set(files) - set(listed) - {CROISSANT, MANIFEST}):
        problems.append(f"extra: {path} (not in {CROISSANT})")


def _check_binding(files: dict[str, bytes], problems: list[str]) -> None:
    if "data/distilled.npz" not in files:
        return
    try:
        images, labels, classes = validate_arrays(load_npz(files["data/distilled.npz"], "data/distilled.npz"),
                                                  "data/distilled.npz")
    except InputError as e:
        problems.append(str(e))
        return
    content = arrays_sha256(images, labels, classes)
    prov = _json(files, "provenance.json", problems) or {}
    verdict = _json(files, "policy/verdict.json", problems) or {}
    audit = _json(files, "report/audit.json", problems)
    for path, doc in (("provenance.json", prov), ("policy/verdict.json", verdict)):
        if path in files and doc and doc.get("content_sha256") != content:
            problems.append(f"data/distilled.npz: content digest does not match {path}")
    run_sha = prov.get("run_sha256")
    if verdict and verdict.get("run_sha256") != run_sha:
        problems.append("policy/verdict.json: run_sha256 differs from provenance.json")
    if audit is not None:
        a_sha = audit.get("run_sha256")
        a_sha = a_sha.lower().removeprefix("sha256:") if isinstance(a_sha, str) else None
        if a_sha != run_sha:
            problems.append("report/audit.json: not the audit of the released data (run_sha256 differs from provenance.json)")

    pixels = to_uint8(images)
    seen: set[int] = set()
    for path in sorted(files):
        if not path.startswith("data/images/"):
            continue
        m = _IMAGE.match(path)
        if not m or int(m.group(1)) >= len(images):
            problems.append(f"{path}: not an image of the release")
            continue
        i = int(m.group(1))
        seen.add(i)
        try:
            with Image.open(io.BytesIO(files[path])) as im:
                im.load()
                px = np.asarray(im)
        except Exception:  # noqa: BLE001 - any decoding failure is a broken image
            problems.append(f"{path}: not a readable PNG")
            continue
        if px.ndim == 2:
            px = px[..., None]
        if px.shape != pixels[i].shape or not np.array_equal(px, pixels[i]):
            problems.append(f"{path}: pixels differ from data/distilled.npz")
    for i in sorted(set(range(len(images))) - seen):
        problems.append(f"missing: the PNG of image {i}")

    if "data/labels.csv" in files:
        try:
            rows = list(csv.reader(io.StringIO(files["data/labels.csv"].decode("utf-8"))))
            header, body = rows[0], rows[1:]
            ok = header[3:] == list(classes) and len(body) == len(labels)
            if ok:
                values = np.array([[float(v) for v in r[3:]] for r in body], dtype=np.float32)
                ok = values.shape == labels.shape and np.array_equal(values, labels)
        except (UnicodeDecodeError, ValueError, IndexError):
            ok = False
        if not ok:
            problems.append("data/labels.csv: soft labels differ from data/distilled.npz")


def verify_bundle(path: str | Path) -> list[str]:
    """Every problem found in the bundle at ``path`` (empty when intact)."""
    root = Path(path)
    if root.is_symlink():
        raise InputError(f"bundle is a symlink; refusing to follow it: {root.name}")
    if not root.is_dir():
        raise InputError(f"bundle directory not found: {root.name or root}")
    files, problems = _scan(root)
    if "data/distilled.npz" in files:  # exit 2 before anything is allocated (limits.py)
        check_npz_limits(files["data/distilled.npz"], "data/distilled.npz")
    _check_manifest(files, problems)
    _check_croissant(files, problems)
    _check_binding(files, problems)
    return list(dict.fromkeys(problems))
