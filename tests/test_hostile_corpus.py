"""A corpus of hostile inputs through the real CLI (issue 22): no traceback, the documented exit
code, at most 60 s and 2 GiB per case.

Every case is a command line (`verify`, `distill`, `evaluate`, `release`, `audit`) on files built
here: small in bytes, hostile in their headers, nesting, names or sizes. They run in one worker
process (tests/hostile_worker.py) that imports the CLI once and forks a child per case with
``RLIMIT_AS`` = its own address space + 2 GiB and a 60 s alarm; the child's peak RSS comes from
``wait4``. Each case asserts: no traceback and no escaped exception, the exit code it documents
(2 bad input, 1 a bundle that is not intact; docs/release.md "Exit codes"), the text that names the
problem, no raw control character on the terminal, under 60 s and under 2 GiB.

Categories (``CATEGORY`` below): derived (a resealed edit of a file users load), json/toml (deep
nesting, long integers, bad encodings in every parsed file), sizes (lstat, counts, npz and PNG
headers), terminal (control and bidi characters in file names), names (class names release
refuses, now refused at distill too), data (what distill reads), release (options and run files),
evaluate/audit (run files, image sizes).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resealing
from release_fixtures import fake_run, loader_for, private_data, rebind_audit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
TIME_LIMIT, MEMORY_LIMIT = 60.0, 2 * 2**30
GIB4 = 4 * 2**30


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    category: str
    build: Callable  # (ctx, case_dir) -> (args, env)
    code: int | tuple[int, ...]
    names: tuple[str, ...] = ()  # text the output must contain (the file, the limit, ...)


CASES: list[Case] = []


def case(cid: str, category: str, code, *names: str):
    def register(fn):
        CASES.append(Case(cid, category, fn, code, names))
        return fn

    return register


# --- helpers --------------------------------------------------------------------------------------


def copy_bundle(ctx, d: Path) -> Path:
    b = d / "bundle"
    shutil.copytree(ctx.bundle, b)
    return b


def copy_run(ctx, d: Path) -> Path:
    r = d / "run"
    shutil.copytree(ctx.run, r)
    return r


def npz_file(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def npy_header(shape, descr="<f4") -> bytes:
    head = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * ((64 - (10 + len(head) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head


def claiming_npz(path: Path, **members) -> Path:
    """An npz whose members are headers only: (shape, descr) claims, no data."""
    with zipfile.ZipFile(path, "w") as z:
        for key, (shape, descr) in members.items():
            z.writestr(f"{key}.npy", npy_header(shape, descr))
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR states width × height, with a tiny IDAT (a header bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def png_bytes(px: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format=fmt)
    return buf.getvalue()


def data_npz(d: Path, *, classes=None, n=40, shape=(8, 8), n_classes=3, **over) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "y": np.arange(n) % n_classes,
    }
    if classes is not None:
        arrays["classes"] = np.array(classes)
    arrays.update(over)
    return npz_file(d / "data.npz", **arrays)


def distill_args(d: Path, data: Path | str, *extra: str) -> list[str]:
    # --preset cpu: no JAX backend is started to pick a preset (every case fails before training)
    return [
        "distill",
        "--data",
        str(data),
        "--out",
        str(d / "out"),
        "--steps",
        "1",
        "--preset",
        "cpu",
        "--quiet",  # no progress line: the error is the only line on stderr
        *extra,
    ]


def folder(d: Path, classes=("a", "b"), n=3, size=(8, 8)) -> Path:
    root = d / "images"
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            (root / c / f"{i}.png").write_bytes(png_bytes(np.full(size, 40 * i, np.uint8)))
    return root


def deep_array(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def deep_object(n: int = 50_000) -> str:
    return '{"a":' * n + "1" + "}" * n


def long_int(digits: int = 5000) -> str:
    return '{"n": ' + "9" * digits + "}"


JSON_PAYLOADS: dict[str, bytes] = {
    "deep-array": deep_array().encode(),
    "deep-object": deep_object().encode(),
    "deep-mixed": ('{"a":[' * 20_000 + "]}" * 20_000).encode(),
    "long-int": long_int().encode(),
    "long-negative-int": ('{"n": -' + "1" * 5000 + "}").encode(),
    "int-in-list": ("[" + "7" * 4400 + "]").encode(),
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "nan": b'{"a": NaN}',
    "truncated": b'{"a": [1, 2',
    "top-level-array": b"[1, 2, 3]",
    "empty": b"",
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "huge-float": b'{"a": 1e99999}',
    "deep-in-string": ('{"a": "' + "[" * 100_000 + '"}').encode(),  # not deep: a string
}
BUNDLE_JSON = (
    "provenance.json",
    "policy/verdict.json",
    "report/audit.json",
    "croissant.json",
    "report/game_records.json",
)
TOML_PAYLOADS: dict[str, bytes] = {
    "deep-array": ("x = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
    "deep-inline-table": ("x = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n").encode(),
    "long-int": ("x = " + "9" * 5000 + "\n").encode(),
    "invalid-utf8": b'x = "\xff"\n',
    "dotted-keys": ("x." * 20_000 + "y = 1\n").encode(),
}


# --- derived files: a resealed edit of what users load is named (exit 1) ----------------------


def _edit_jsonl(rel: str, edit):
    def build(ctx, d):
        b = copy_bundle(ctx, d)
        rows = [json.loads(x) for x in (b / rel).read_text().splitlines()]
        edit(rows)
        (b / rel).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        resealing.reseal(b)
        return ["verify", str(b)], {}

    return build


def _edit_json(rel: str, edit, croissant: bool = True):
    def build(ctx, d):
        b = copy_bundle(ctx, d)
        obj = json.loads((b / rel).read_text())
        edit(obj)
        (b / rel).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
        resealing.reseal(b, croissant=croissant)
        return ["verify", str(b)], {}

    return build


def _edit_text(rel: str, edit):
    def build(ctx, d):
        b = copy_bundle(ctx, d)
        (b / rel).write_bytes(edit((b / rel).read_bytes()))
        resealing.reseal(b)
        return ["verify", str(b)], {}

    return build


def _swap_files(rows):
    rows[0]["file_name"], rows[1]["file_name"] = rows[1]["file_name"], rows[0]["file_name"]


def _classes_rs(meta) -> dict:
    return next(r for r in meta["recordSet"] if r["@id"] == "classes")


DERIVED = {
    "metadata-label": (
        "data/metadata.jsonl",
        _edit_jsonl("data/metadata.jsonl", lambda r: r[0].update(label=(r[0]["label"] + 1) % 3)),
    ),
    "metadata-soft-label": (
        "data/metadata.jsonl",
        _edit_jsonl("data/metadata.jsonl", lambda r: r[0]["soft_label"].__setitem__(0, 0.5)),
    ),
    "metadata-swapped-files": (
        "data/metadata.jsonl",
        _edit_jsonl("data/metadata.jsonl", _swap_files),
    ),
    "metadata-one-row": (
        "data/metadata.jsonl",
        _edit_jsonl(
            "data/metadata.jsonl",
            lambda r: r[1:].clear() if False else r.__delitem__(slice(1, None)),
        ),
    ),
    "metadata-extra-key": (
        "data/metadata.jsonl",
        _edit_jsonl("data/metadata.jsonl", lambda r: r[0].update(note="x")),
    ),
    "croissant-class-name": (
        "croissant.json",
        _edit_json(
            "croissant.json",
            lambda m: _classes_rs(m)["data"][0].update({"classes/name": "forged"}),
            croissant=False,
        ),
    ),
    "croissant-name": (
        "croissant.json",
        _edit_json("croissant.json", lambda m: m.update(name="forged"), croissant=False),
    ),
    "croissant-licence": (
        "croissant.json",
        _edit_json("croissant.json", lambda m: m.update(license="CC0-1.0"), croissant=False),
    ),
    "croissant-description": (
        "croissant.json",
        _edit_json("croissant.json", lambda m: m.update(description="safe"), croissant=False),
    ),
    "croissant-date": (
        "croissant.json",
        _edit_json("croissant.json", lambda m: m.update(datePublished="x"), croissant=False),
    ),
    "croissant-recordset-dropped": (
        "croissant.json",
        _edit_json("croissant.json", lambda m: m["recordSet"].pop(), croissant=False),
    ),
    "labels-csv-class-cell": (
        "data/labels.csv",
        _edit_text("data/labels.csv", lambda b: b.replace(b",zero,", b",one,", 1)),
    ),
    "labels-csv-quoted": (
        "data/labels.csv",
        _edit_text("data/labels.csv", lambda b: b.replace(b"index,file", b'"index","file"', 1)),
    ),
    "labels-csv-crlf": (
        "data/labels.csv",
        _edit_text("data/labels.csv", lambda b: b.replace(b"\n", b"\r\n")),
    ),
    "readme-line": (
        "README.md",
        _edit_text("README.md", lambda b: b.replace(b"---\n", b"---\nx: 1\n", 1)),
    ),
    "readme-appended": ("README.md", _edit_text("README.md", lambda b: b + b"\nAll clear.\n")),
    "report-text": (
        "report/report.html",
        _edit_text("report/report.html", lambda b: b.replace(b"<h1>", b"<h1>OK ", 1)),
    ),
    "verdict-verdict": (
        "policy/verdict.json",
        _edit_json("policy/verdict.json", lambda v: v.update(verdict="overridden")),
    ),
    "verdict-rule-value": (
        "policy/verdict.json",
        _edit_json("policy/verdict.json", lambda v: v["rules"][0].update(value=0.0)),
    ),
    "provenance-name": (
        "README.md",
        _edit_json("provenance.json", lambda p: p["release"].update(name="forged")),
    ),
    "provenance-licence": (
        "croissant.json",
        _edit_json("provenance.json", lambda p: p["release"].update(license="CC0-1.0")),
    ),
    "policy-comment": (
        "policy/policy.toml",
        _edit_text("policy/policy.toml", lambda b: b + b"# x\n"),
    ),
    "audit-auc": (
        "report/audit.json",
        _edit_json(
            "report/audit.json", lambda a: a.update(n_shadows=(a.get("n_shadows") or 0) + 1)
        ),
    ),
}
for _k, (_path, _build) in DERIVED.items():
    case(f"derived-{_k}", "derived", 1, _path)(_build)


@case("derived-image-pixels", "derived", 1, "pixels differ")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    png = next((b / "data/images").rglob("*.png"))
    px = np.asarray(Image.open(png)).copy()
    png.write_bytes(png_bytes(255 - px))
    resealing.reseal(b)
    return ["verify", str(b)], {}


@case("derived-image-moved", "derived", 1, "not where the release files")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    png = next((b / "data/images").rglob("0.png"))
    other = next(p for p in (b / "data/images").iterdir() if p != png.parent)
    png.rename(other / "0.png")
    resealing.reseal(b)
    return ["verify", str(b)], {}


for _extra in ("notes.txt", "data/extra.json", "report/x.html", "policy/other.toml", ".hidden"):

    @case(f"derived-unexpected-{_extra}", "derived", 1, f"unexpected: {_extra}")
    def _(ctx, d, _extra=_extra):
        b = copy_bundle(ctx, d)
        (b / _extra).write_text("{}\n")
        resealing.reseal(b)
        return ["verify", str(b)], {}


for _gone in ("data/metadata.jsonl", "data/labels.csv", "README.md", "report/report.html"):

    @case(f"derived-missing-{_gone}", "derived", 1, f"missing: {_gone}")
    def _(ctx, d, _gone=_gone):
        b = copy_bundle(ctx, d)
        (b / _gone).unlink()
        resealing.reseal(b)
        return ["verify", str(b)], {}


# --- parsed files: deep, long, malformed (verify: exit 1 naming the file; release: exit 2) ----

# every payload against provenance.json (read first), the sharpest six against the others
SHARP = ("deep-array", "deep-object", "long-int", "invalid-utf8", "nan", "top-level-array")
for _rel in BUNDLE_JSON:
    for _name, _payload in JSON_PAYLOADS.items():
        if _rel != "provenance.json" and _name not in SHARP:
            continue

        # a broken file in a bundle makes it not intact (exit 1) and is named
        @case(f"json-verify-{_rel}-{_name}", "json", 1, _rel)
        def _(ctx, d, _rel=_rel, _payload=_payload):
            b = copy_bundle(ctx, d)
            (b / _rel).write_bytes(_payload)
            resealing.reseal(b, croissant=False)
            return ["verify", str(b)], {}


for _rel in (
    "run.json",
    "eval.json",
    "audit/audit.json",
    "audit/audit_config.json",
    "audit/records.json",
):
    for _name in ("deep-array", "long-int", "invalid-utf8"):

        @case(f"json-release-{_rel}-{_name}", "json", 2, _rel.split("/")[-1])
        def _(ctx, d, _rel=_rel, _name=_name):
            r = copy_run(ctx, d)
            (r / _rel).write_bytes(JSON_PAYLOADS[_name])
            return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], {}


for _name, _payload in TOML_PAYLOADS.items():

    @case(f"toml-release-policy-{_name}", "toml", 2, "policy")
    def _(ctx, d, _payload=_payload):
        (d / "p.toml").write_bytes(_payload)
        return ["release", str(ctx.run), "--policy", str(d / "p.toml"), "--out", str(d / "b")], {}

    @case(f"toml-distill-config-{_name}", "toml", 2, "config file")
    def _(ctx, d, _payload=_payload):
        (d / "c.toml").write_bytes(_payload)
        return ["distill", "--config", str(d / "c.toml"), "--out", str(d / "out")], {}

    @case(f"toml-verify-policy-{_name}", "toml", 1, "policy/policy.toml")
    def _(ctx, d, _payload=_payload):
        b = copy_bundle(ctx, d)
        (b / "policy/policy.toml").write_bytes(_payload)
        resealing.reseal(b)
        return ["verify", str(b)], {}


for _name in ("deep-array", "long-int", "invalid-utf8"):

    @case(f"json-evaluate-run.json-{_name}", "json", 2)
    def _(ctx, d, _name=_name):
        r = copy_run(ctx, d)
        (r / "run.json").write_bytes(JSON_PAYLOADS[_name])
        return ["evaluate", str(r), "--steps", "1"], {}

    @case(f"json-audit-run.json-{_name}", "json", 2)
    def _(ctx, d, _name=_name):
        r = copy_run(ctx, d)
        (r / "run.json").write_bytes(JSON_PAYLOADS[_name])
        return ["audit", str(r), "--shadows", "2"], {}


MANIFESTS = {
    "malformed": b"not a manifest\n",
    "dotdot": b"0" * 64 + b"  ../outside\n",
    "absolute": b"0" * 64 + b"  /etc/passwd\n",
    "backslash": b"0" * 64 + b"  a\\b\n",
    "many-lines": b"".join(b"0" * 64 + b"  f%d\n" % i for i in range(5_000)),
    "invalid-utf8": b"\xff\xfe\n",
    "empty": b"",
}
for _name, _m in MANIFESTS.items():

    @case(f"manifest-{_name}", "json", 1, "manifest-sha256.txt")
    def _(ctx, d, _m=_m):
        b = copy_bundle(ctx, d)
        (b / "manifest-sha256.txt").write_bytes(_m)
        return ["verify", str(b)], {}


# --- sizes and counts: lstat and headers before any read ---------------------------------------


@case("size-sparse-4gb-in-report", "sizes", 2, "report/huge.bin", "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    with open(b / "report/huge.bin", "wb") as f:
        f.truncate(GIB4)  # sparse: 4 GiB by lstat, no disk
    return ["verify", str(b)], {}


@case("size-sparse-2gb-readme", "sizes", 2, "README.md", "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    with open(b / "README.md", "r+b") as f:
        f.truncate(2 * 2**30)
    return ["verify", str(b)], {}


@case("size-file-cap-lowered", "sizes", 2, "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    return ["verify", str(copy_bundle(ctx, d))], {"RCIG_RELEASE_MAX_FILE_BYTES": "1K"}


@case("size-total-cap-lowered", "sizes", 2, "RCIG_RELEASE_MAX_BYTES")
def _(ctx, d):
    return ["verify", str(copy_bundle(ctx, d))], {"RCIG_RELEASE_MAX_BYTES": "20K"}


@case("size-too-many-files", "sizes", 2, "RCIG_RELEASE_MAX_FILES")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    for i in range(40):
        (b / f"f{i}").write_bytes(b"")
    return ["verify", str(b)], {"RCIG_RELEASE_MAX_FILES": "30"}


@case("size-bad-cap-value", "sizes", 2, "RCIG_RELEASE_MAX_FILES")
def _(ctx, d):
    return ["verify", str(copy_bundle(ctx, d))], {"RCIG_RELEASE_MAX_FILES": "lots"}


def _bundle_npz(build_npz):
    def build(ctx, d):
        b = copy_bundle(ctx, d)
        build_npz(b / "data/distilled.npz")
        resealing.reseal(b)
        return ["verify", str(b)], {}

    return build


NPZ_BUNDLE = {
    # 100,000 classes in a few hundred KB: refused from the headers (issue: verify hung)
    "100k-classes": (
        lambda p: npz_file(
            p,
            images=np.zeros((3, 8, 8, 1), np.float32),
            labels=np.zeros((3, 100_000), np.float32),
            classes=np.array([f"c{i}" for i in range(100_000)]),
        ),
        2,
        "RCIG_RELEASE_MAX_CLASSES",
    ),
    "claims-1e12-images": (
        lambda p: claiming_npz(
            p, images=((10**12, 8, 8, 1), "<f4"), labels=((3, 3), "<f4"), classes=((3,), "<U4")
        ),
        2,
        "RCIG_RELEASE_MAX_BYTES",
    ),
    "claims-1e6-classes-header": (
        lambda p: claiming_npz(
            p, images=((3, 8, 8, 1), "<f4"), labels=((3, 10**6), "<f4"), classes=((10**6,), "<U2")
        ),
        2,
        "RCIG_RELEASE_MAX_CLASSES",
    ),
    "long-class-name": (
        lambda p: npz_file(
            p,
            images=np.zeros((3, 8, 8, 1), np.float32),
            labels=np.eye(3, dtype=np.float32),
            classes=np.array(["a" * 100_000, "b", "c"]),
        ),
        2,
        "class names",
    ),
    "pickle": (
        lambda p: np.savez(p, images=np.array([object()], dtype=object)),
        1,
        "data/distilled.npz",
    ),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:100]), 1, "data/distilled.npz"),
    "not-a-zip": (lambda p: p.write_bytes(b"hello"), 1, "data/distilled.npz"),
    "one-class": (
        lambda p: npz_file(
            p,
            images=np.zeros((3, 8, 8, 1), np.float32),
            labels=np.ones((3, 1), np.float32),
            classes=np.array(["only"]),
        ),
        1,
        "at least 2 classes",
    ),
    "nan-pixels": (
        lambda p: npz_file(
            p,
            images=np.full((3, 8, 8, 1), np.nan, np.float32),
            labels=np.eye(3, dtype=np.float32),
            classes=np.array(["a", "b", "c"]),
        ),
        1,
        "non-finite",
    ),
}
for _name, (_fn, _code, _text) in NPZ_BUNDLE.items():
    case(f"size-bundle-npz-{_name}", "sizes", _code, _text)(_bundle_npz(_fn))


@case("size-bundle-10k-classes-at-cap", "sizes", 1)
def _(ctx, d):
    """At the class cap: verify finishes (folder naming and checks are linear)."""
    b = copy_bundle(ctx, d)
    labels = np.zeros((3, 10_000), np.float32)
    labels[np.arange(3), np.arange(3)] = 1
    npz_file(
        b / "data/distilled.npz",
        images=np.zeros((3, 8, 8, 1), np.float32),
        labels=labels,
        classes=np.array([f"C{i % 7}x{i}" if i % 3 else f"c{i // 3}" for i in range(10_000)]),
    )
    resealing.reseal(b)
    return ["verify", str(b)], {}


@case("size-bundle-100k-classes-cap-raised", "sizes", 1)
def _(ctx, d):
    """With the cap raised to 100,000: still linear, finishes under the time limit."""
    args, _ = NPZ_BUNDLE_BUILD(ctx, d)
    return args, {"RCIG_RELEASE_MAX_CLASSES": "100000"}


NPZ_BUNDLE_BUILD = _bundle_npz(NPZ_BUNDLE["100k-classes"][0])

PNG_IN_BUNDLE = {
    "claims-100000x100000": png_claiming(100_000, 100_000),
    "claims-2^31": png_claiming(2**31 - 1, 2**31 - 1),
    "claims-9000x9000": png_claiming(9000, 9000),
    "gif-named-png": png_bytes(np.zeros((8, 8), np.uint8), "GIF"),
    "jpeg-named-png": png_bytes(np.zeros((8, 8), np.uint8), "JPEG"),
    "truncated": png_bytes(np.zeros((8, 8), np.uint8))[:30],
    "empty": b"",
}
for _name, _png in PNG_IN_BUNDLE.items():

    @case(f"size-bundle-png-{_name}", "sizes", 1, "data/images/")
    def _(ctx, d, _png=_png):
        b = copy_bundle(ctx, d)
        next((b / "data/images").rglob("0.png")).write_bytes(_png)
        resealing.reseal(b)
        return ["verify", str(b)], {}


@case("size-bundle-fifo", "sizes", 1, "not a regular file")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    os.mkfifo(b / "report/pipe")
    return ["verify", str(b)], {}


@case("size-bundle-symlink", "sizes", 1, "symlink")
def _(ctx, d):
    b = copy_bundle(ctx, d)
    (b / "report/link").symlink_to("/dev/zero")
    return ["verify", str(b)], {}


@case("size-bundle-is-a-file", "sizes", 2, "bundle directory not found")
def _(ctx, d):
    (d / "b").write_text("x")
    return ["verify", str(d / "b")], {}


@case("size-bundle-empty-dir", "sizes", 1, "missing")
def _(ctx, d):
    (d / "b").mkdir()
    return ["verify", str(d / "b")], {}


# --- terminal: control characters in file names never reach the terminal raw ----------------

TERMINAL_NAMES = {
    "esc-green-intact": "\x1b[32mbundle intact\x1b[0m",
    "esc-clear-screen": "\x1b[2J\x1b[H",
    "esc-osc-title": "\x1b]0;pwned\x07",
    "csi-c1": "\x9b31mred",
    "c1-nel": "a\x85b",
    "bidi-rlo": "txt.\u202egnp",
    "bidi-isolate": "a\u2066b\u2069",
    "backspace": "ok\x08\x08\x08no",
    "cr-overwrite": "problem\rbundle intact",
    "newline": "two\nlines",
    "del": "a\x7fb",
    "rlm-feff": "a\u200f\ufeffb",
}


STATUS_LINE = re.compile(r"^(device: JAX |(distill|evaluate|audit|release|verify|check): )")


def assert_one_error_line(stderr: str) -> None:
    """Bad input is one line, ``error: ...``, the last; before it only the device line (every
    command that loads JAX names it first) and progress lines may stand."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    assert all(STATUS_LINE.match(line) for line in lines[:-1]), stderr


def assert_terminal_clean(text: str) -> None:
    from rcig_release.release.escape import control_char

    # the one newline per line is ours; anything else refused must be escaped
    assert control_char(text.replace("\n", "")) is None, repr(text[:300])


for _name, _fname in TERMINAL_NAMES.items():

    @case(f"terminal-verify-extra-file-{_name}", "terminal", 1, "unexpected")
    def _(ctx, d, _fname=_fname):
        b = copy_bundle(ctx, d)
        (b / _fname).write_text("x")
        resealing.reseal(b)
        return ["verify", str(b)], {}

    if _name not in (
        "esc-green-intact",
        "csi-c1",
        "bidi-rlo",
        "cr-overwrite",
        "newline",
        "rlm-feff",
    ):
        continue

    @case(f"terminal-distill-corrupt-image-{_name}", "terminal", 2, "corrupt or unreadable")
    def _(ctx, d, _fname=_fname):
        root = folder(d)
        (root / "a" / (_fname + ".png")).write_bytes(b"not a png")
        return distill_args(d, root), {}

    @case(f"terminal-verify-missing-bundle-{_name}", "terminal", 2, "not found")
    def _(ctx, d, _fname=_fname):
        return ["verify", str(d / _fname)], {}


@case("terminal-usage-error-option", "terminal", 2, "No such option")
def _(ctx, d):
    return ["verify", str(ctx.bundle), "--\x1b[31mkey"], {}


# --- names: what release refuses is refused at distill, before any work ----------------------

REFUSED_NAMES = {
    "rlm-u200f": "cat\u200f",
    "bom-ufeff": "\ufeffcat",
    "tag-characters": "cat\U000e0041\U000e0042",
    "zwsp-u200b": "c\u200bat",
    "word-joiner": "c\u2060at",
    "soft-hyphen": "c\u00adat",
    "lrm-u200e": "cat\u200e",
    "arabic-mark": "cat\u061c",
    "esc": "cat\x1b[31m",
    "newline": "ca\nt",
    "tab": "ca\tt",
    "rlo": "cat\u202e",
    "lri": "cat\u2066",
    "c1": "cat\x85",
    "del": "cat\x7f",
    "line-separator": "cat\u2028",
    "empty": "",
    "blank": "   ",
}
for _name, _bad in REFUSED_NAMES.items():

    @case(f"names-distill-{_name}", "names", 2, "class name")
    def _(ctx, d, _bad=_bad):
        return distill_args(d, data_npz(d, classes=["ok", _bad, "fine"])), {}

    @case(f"names-release-{_name}", "names", 2, "class name")
    def _(ctx, d, _bad=_bad):
        r = copy_run(ctx, d)
        with np.load(r / "distilled.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["classes"] = np.array(["zero", _bad, "two"])
        np.savez_compressed(r / "distilled.npz", **arrays)
        rebind_audit(r)
        return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], ctx.env


@case("names-distill-duplicate", "names", 2, "duplicate")
def _(ctx, d):
    return distill_args(d, data_npz(d, classes=["a", "a", "b"])), {}


@case("names-release-duplicate", "names", 2, "distinct")
def _(ctx, d):
    r = copy_run(ctx, d)
    with np.load(r / "distilled.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["classes"] = np.array(["zero", "zero", "two"])
    np.savez_compressed(r / "distilled.npz", **arrays)
    rebind_audit(r)
    return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], ctx.env


@case("names-distill-too-long", "names", 2, "characters")
def _(ctx, d):
    return distill_args(d, data_npz(d, classes=["a" * 5000, "b", "c"])), {}


# --- data distill reads ------------------------------------------------------------------------


@case("data-labels-1e12-no-classes", "data", 2, "RCIG_RELEASE_MAX_CLASSES")
def _(ctx, d):
    return distill_args(d, data_npz(d, y=np.array([0, 10**12] * 20, dtype=np.int64))), {}


@case("data-100k-classes-array", "data", 2, "RCIG_RELEASE_MAX_CLASSES")
def _(ctx, d):
    return distill_args(d, data_npz(d, classes=[f"c{i}" for i in range(100_000)])), {}


@case("data-one-class", "data", 2, "at least 2 classes")
def _(ctx, d):
    return distill_args(d, data_npz(d, n_classes=1)), {}


@case("data-one-class-named", "data", 2, "at least 2 classes")
def _(ctx, d):
    return distill_args(d, data_npz(d, n_classes=1, classes=["only"])), {}


for _shape in ((4, 4), (2, 2), (1, 1), (8, 4), (3, 64)):

    @case(f"data-too-small-{_shape[0]}x{_shape[1]}", "data", 2, "too small for the depth-")
    def _(ctx, d, _shape=_shape):
        return distill_args(d, data_npz(d, shape=_shape)), {}


@case("data-zca-128x128-colour", "data", 2, "RCIG_RELEASE_MAX_BYTES", "--no-zca")
def _(ctx, d):
    return distill_args(d, data_npz(d, n=6, shape=(128, 128, 3), n_classes=2)), {}


@case("data-zca-128x128-colour-explicit", "data", 2, "RCIG_RELEASE_MAX_BYTES")
def _(ctx, d):
    return distill_args(d, data_npz(d, n=6, shape=(128, 128, 3), n_classes=2), "--zca"), {}


@case("data-zca-64x64-colour", "data", 2, "RCIG_RELEASE_MAX_BYTES")
def _(ctx, d):
    return distill_args(d, data_npz(d, n=6, shape=(64, 64, 3), n_classes=2)), {}


DATA_NPZ = {
    "claims-1e12-images": (
        lambda d: claiming_npz(d / "x.npz", x=((10**12, 8, 8), "|u1"), y=((10**12,), "<i8")),
        "RCIG_RELEASE_MAX_BYTES",
    ),
    "pickle": (
        lambda d: (np.savez(d / "x.npz", x=np.array([object()]), y=np.zeros(1)), d / "x.npz")[1],
        "pickle",
    ),
    "truncated": (
        lambda d: (d / "x.npz").write_bytes(data_npz(d).read_bytes()[:200]) and d / "x.npz",
        "corrupt",
    ),
    "not-a-zip": (
        lambda d: (d / "x.npz").write_bytes(b"hello world") and d / "x.npz",
        "not an .npz",
    ),
    "npy-not-npz": (
        lambda d: (
            np.save(d / "x.npy", np.zeros(3)),
            (d / "x.npy").rename(d / "x.npz"),
            d / "x.npz",
        )[2],
        "single .npy",
    ),
    "nan-pixels": (lambda d: data_npz(d, x=np.full((40, 8, 8), np.nan, np.float32)), "NaN"),
    "float-over-1": (lambda d: data_npz(d, x=np.full((40, 8, 8), 2.0, np.float32)), "[0, 1]"),
    "negative-labels": (lambda d: data_npz(d, y=-np.ones(40, np.int64)), "label"),
    "fraction-labels": (lambda d: data_npz(d, y=np.full(40, 0.5)), "integers"),
    "one-hot-labels": (lambda d: data_npz(d, y=np.eye(40)), "1-D"),
    "no-keys": (lambda d: npz_file(d / "x.npz", a=np.zeros(3)), "expected"),
    "4-channels": (lambda d: data_npz(d, x=np.zeros((40, 8, 8, 4), np.uint8)), "1 or 3 channels"),
    "classes-2d": (lambda d: data_npz(d, classes=[["a", "b"], ["c", "d"]]), "'classes'"),
    "empty-x": (
        lambda d: data_npz(d, x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64)),
        "no images",
    ),
}
for _name, (_fn, _text) in DATA_NPZ.items():

    @case(f"data-npz-{_name}", "data", 2, _text)
    def _(ctx, d, _fn=_fn):
        return distill_args(d, _fn(d)), {}


@case("data-folder-one-class", "data", 2, "at least 2 classes")
def _(ctx, d):
    return distill_args(d, folder(d, classes=("only",), n=6)), {}


@case("data-folder-too-many-classes", "data", 2, "RCIG_RELEASE_MAX_CLASSES")
def _(ctx, d):
    return distill_args(d, folder(d, classes=tuple("abcde"))), {"RCIG_RELEASE_MAX_CLASSES": "3"}


@case("data-folder-too-many-files", "data", 2, "RCIG_RELEASE_MAX_FILES")
def _(ctx, d):
    return distill_args(d, folder(d, n=6)), {"RCIG_RELEASE_MAX_FILES": "5"}


@case("data-folder-png-claims-100000x100000", "data", 2, "RCIG_RELEASE_MAX_PIXELS")
def _(ctx, d):
    root = folder(d)
    (root / "a" / "9.png").write_bytes(png_claiming(100_000, 100_000))
    return distill_args(d, root), {}


@case("data-folder-gif-named-png", "data", 2, "corrupt or unreadable")
def _(ctx, d):
    root = folder(d)
    (root / "a" / "9.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8), "GIF"))
    return distill_args(d, root), {}


@case("data-folder-bmp-named-jpg", "data", 2, "corrupt or unreadable")
def _(ctx, d):
    root = folder(d)
    (root / "a" / "9.jpg").write_bytes(png_bytes(np.zeros((8, 8), np.uint8), "BMP"))
    return distill_args(d, root), {}


@case("data-folder-too-small", "data", 2, "at least 8 pixels")
def _(ctx, d):
    return distill_args(d, folder(d, size=(4, 4))), {}


@case("data-folder-symlink", "data", 2, "symlink")
def _(ctx, d):
    root = folder(d)
    (root / "a" / "9.png").symlink_to(root / "a" / "0.png")
    return distill_args(d, root), {}


@case("data-folder-class-name-rlm", "data", 2, "class name")
def _(ctx, d):
    return distill_args(d, folder(d, classes=("a", "b\u200f"))), {}


@case("data-folder-empty", "data", 2, "empty")
def _(ctx, d):
    (d / "images").mkdir()
    return distill_args(d, d / "images"), {}


# --- release options and run files --------------------------------------------------------------

LICENCES = {
    "trailing-newline": "MIT\n",
    "trailing-cr": "MIT\r",
    "leading-space": " MIT",
    "trailing-space": "MIT ",
    "empty": "",
    "too-long": "A" * 65,
    "esc": "MIT\x1b[31m",
    "slash": "MIT/GPL",
    "unicode-digit": "MIT\u0661",
}
for _name, _lic in LICENCES.items():

    @case(f"release-licence-{_name}", "release", 2, "--license")
    def _(ctx, d, _lic=_lic):
        return [
            "release",
            str(ctx.run),
            "--policy",
            str(DEFAULT),
            "--out",
            str(d / "b"),
            "--license",
            _lic,
        ], ctx.env


for _opt in ("--name", "--override"):
    for _name, _bad in (
        ("rlm", "x\u200fy"),
        ("bom", "\ufeffx"),
        ("tag", "x\U000e0041"),
        ("esc", "x\x1b[2J"),
    ):

        @case(f"release-{_opt[2:]}-{_name}", "release", 2, _opt)
        def _(ctx, d, _opt=_opt, _bad=_bad):
            return [
                "release",
                str(ctx.run),
                "--policy",
                str(DEFAULT),
                "--out",
                str(d / "b"),
                _opt,
                _bad,
            ], ctx.env


@case("release-100k-classes", "release", 2, "RCIG_RELEASE_MAX_CLASSES")
def _(ctx, d):
    r = copy_run(ctx, d)
    with np.load(r / "distilled.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = np.zeros((len(arrays["images"]), 100_000), np.float32)
    arrays["classes"] = np.array([f"c{i}" for i in range(100_000)])
    np.savez_compressed(r / "distilled.npz", **arrays)
    rebind_audit(r)
    return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], ctx.env


@case("release-one-class", "release", 2, "at least 2 classes")
def _(ctx, d):
    r = copy_run(ctx, d)
    with np.load(r / "distilled.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = np.ones((len(arrays["images"]), 1), np.float32)
    arrays["classes"] = np.array(["only"])
    np.savez_compressed(r / "distilled.npz", **arrays)
    rebind_audit(r)
    return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], ctx.env


@case("release-sparse-4gb-run-json", "release", 2, "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    r = copy_run(ctx, d)
    with open(r / "run.json", "r+b") as f:
        f.truncate(GIB4)
    return ["release", str(r), "--policy", str(DEFAULT), "--out", str(d / "b")], ctx.env


def _sparse(path: Path, size: int = GIB4) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@case("release-sparse-4gb-policy", "release", 2, "policy file", "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    return [
        "release",
        str(ctx.run),
        "--policy",
        str(_sparse(d / "p.toml")),
        "--out",
        str(d / "b"),
    ], ctx.env


@case("release-sparse-4gb-fingerprint-key", "release", 2, "fingerprint key")
def _(ctx, d):
    key = _sparse(d / "k")
    key.chmod(0o600)
    return [
        "release",
        str(ctx.run),
        "--policy",
        str(DEFAULT),
        "--out",
        str(d / "b"),
        "--fingerprint-key",
        str(key),
    ], ctx.env


@case("sizes-distill-sparse-4gb-config", "sizes", 2, "config file", "RCIG_RELEASE_MAX_FILE_BYTES")
def _(ctx, d):
    return distill_args(d, data_npz(d), "--config", str(_sparse(d / "c.toml"))), {}


@case(
    "sizes-verify-sparse-4gb-key",
    "sizes",
    2,
    *(
        ("RCIG_RELEASE_MAX_FILE_BYTES",) if shutil.which("ssh-keygen") else ()
    ),  # else: no ssh-keygen
)
def _(ctx, d):
    return ["verify", str(ctx.bundle), "--key", str(_sparse(d / "k.pub"))], {}


# --- evaluate: the images against the network ---------------------------------------------------

for _side in (4, 2, 1):

    @case(f"evaluate-images-{_side}x{_side}", "evaluate", 2, "at least 8 pixels")
    def _(ctx, d, _side=_side):
        from rcig_release import rundir

        r = copy_run(ctx, d)
        with np.load(r / "distilled.npz") as z:
            arrays = {k: z[k] for k in z.files}
        n = len(arrays["images"])
        small = np.zeros((n, _side, _side, 1), np.float32)
        rundir.write_distilled(
            r,
            images=small,
            labels=arrays["labels"],
            classes=arrays["classes"],
            images_model=small,
            log_temp=0.0,
            init_indices=arrays["init_indices"],
            prep_arrays={
                "prep_mean": np.zeros(1, np.float32),
                "prep_std": np.ones(1, np.float32),
                "prep_zca": np.zeros((0, 0), np.float32),
                "prep_zca_mean": np.zeros((0,), np.float32),
            },
        )
        return ["evaluate", str(r), "--steps", "1", "--models", "1"], {}


CATEGORIES = Counter(c.category for c in CASES)


# --- running the corpus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    data = private_data()
    ctx = type("Ctx", (), {})()
    ctx.run = fake_run(tmp / "base-run", data=data, ipc=1)
    ctx.bundle = tmp / "base-bundle"
    from rcig_release.release.bundle import release

    release(ctx.run, DEFAULT, ctx.bundle, load_private=loader_for(data), license_spdx="MIT")
    ctx.env = {"XDG_CONFIG_HOME": str(tmp / "config")}
    warm = tmp / "warm"
    warm.mkdir()
    specs = [  # run in the worker itself before any case, so every child starts warm
        {
            "id": "warm-verify",
            "args": ["verify", str(ctx.bundle)],
            "cwd": str(warm),
            "warmup": True,
        },
        {
            "id": "warm-distill",
            "args": distill_args(warm, data_npz(warm, n_classes=1)),
            "cwd": str(warm),
            "warmup": True,
        },
    ]
    for i, c in enumerate(CASES):
        d = tmp / f"case{i:03d}"
        d.mkdir()
        args, env = c.build(ctx, d)
        specs.append({"id": c.id, "args": [str(a) for a in args], "env": env, "cwd": str(d)})
    (tmp / "out").mkdir()
    (tmp / "cases.json").write_text(json.dumps(specs))
    worker = Path(__file__).with_name("hostile_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp / "cases.json"), str(tmp / "out" / "results.json")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp / "out" / "results.json").read_text())
    return {r["id"]: r for r in got}


def test_the_corpus_is_large_and_covers_every_category():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 200, len(CASES)
    assert set(CATEGORIES) == {
        "derived",
        "json",
        "toml",
        "sizes",
        "terminal",
        "names",
        "data",
        "release",
        "evaluate",
    }, CATEGORIES


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_hostile_input(results, c):
    r = results[c.id]
    output = r["stdout"] + r["stderr"]
    assert "Traceback" not in output and r["code"] not in (70, 71), output[-2000:]
    assert r["code"] >= 0, f"killed by signal {-r['code']} (60 s alarm: a hang)"
    codes = c.code if isinstance(c.code, tuple) else (c.code,)
    assert r["code"] in codes, (r["code"], output[-1500:])
    for text in c.names:
        assert text in output, (text, output[-1500:])
    assert_terminal_clean(output)
    assert "MemoryError" not in output and "more memory than is available" not in output
    assert r["seconds"] < TIME_LIMIT, r["seconds"]
    assert r["max_rss"] < MEMORY_LIMIT, r["max_rss"]
    if r["code"] == 2:  # bad input: one error line (after the device line and any progress)
        assert_one_error_line(r["stderr"])


def test_corpus_summary(results, capsys):
    """Per category: cases, worst time and peak memory (printed; figures in docs/benchmarks.md)."""
    rows = []
    for cat in sorted(CATEGORIES):
        rs = [results[c.id] for c in CASES if c.category == cat]
        rows.append(
            f"{cat:10s} {len(rs):4d} cases  max {max(r['seconds'] for r in rs):5.1f} s  "
            f"sum {sum(r['seconds'] for r in rs):6.1f} s  peak RSS "
            f"{max(r['max_rss'] for r in rs) / 2**20:6.0f} MiB"
        )
    with capsys.disabled():
        print("\nhostile corpus:\n" + "\n".join(rows))
    assert all(r["max_rss"] < MEMORY_LIMIT for r in results.values())
