"""Does ``data/`` say one thing? Image files and ``labels.csv`` against ``data/distilled.npz``.

The arrays are the reference. Image ``i`` must be exactly ``data/images/<folder>/<i>.png`` where
``<folder>`` is the path-safe name of the class its soft label ranks highest (the writer's
``class_dir_names``), its pixels the 8-bit rendering of ``images[i]``; nothing else may lie under
``data/images/``. ``labels.csv`` must have the header ``index,file,class,<classes>`` and row ``i``
must name ``i``, that file, that class and the soft labels bit for bit. Every mismatch is one line.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
from PIL import Image

from rcig_release.release.derived import class_dir_names, labels_csv, metadata_jsonl
from rcig_release.release.escape import csv_uncell
from rcig_release.release.safety import to_uint8

IMAGES = "data/images/"
LABELS = "data/labels.csv"
METADATA = "data/metadata.jsonl"
_NUMBERED = re.compile(r"^data/images/[^/]+/0*(\d+)\.png$")


def expected_image_paths(labels: np.ndarray, classes: tuple[str, ...]) -> list[str]:
    """The path of each image, in index order, as the writer files it."""
    dirs = class_dir_names(classes)
    return [f"{IMAGES}{dirs[c]}/{i}.png" for i, c in enumerate(labels.argmax(1))]


def _pixels(data: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """The PNG's pixels, or None; a PNG whose header states another size than ``shape`` (H, W,
    ...) is not decoded (a header may claim any size)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.format != "PNG" or im.mode not in ("L", "RGB"):
                return None
            if im.size != (shape[1], shape[0]):
                return np.zeros((0,), np.uint8)
            im.load()
            px = np.asarray(im)
    except Exception:  # noqa: BLE001 - any decoding failure is a broken image
        return None
    return px[..., None] if px.ndim == 2 else px


def check_images(
    files: dict[str, bytes],
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    problems: list[str],
) -> None:
    expected = expected_image_paths(labels, classes)
    index = {p: i for i, p in enumerate(expected)}
    pixels = to_uint8(images)
    for path in sorted(p for p in files if p.startswith(IMAGES)):
        if path not in index:
            m = _NUMBERED.match(path)
            i = int(m.group(1)) if m else -1
            if 0 <= i < len(expected):
                problems.append(
                    f"{path}: not where the release files image {i} (expected {expected[i]})"
                )
            else:
                problems.append(f"{path}: not an image of the release")
            continue
        i = index[path]
        px = _pixels(files[path], pixels[i].shape)
        if px is None:
            problems.append(f"{path}: not a readable 8-bit PNG")
        elif px.shape != pixels[i].shape or not np.array_equal(px, pixels[i]):
            problems.append(f"{path}: pixels differ from data/distilled.npz")
    for i, path in enumerate(expected):
        if path not in files:
            problems.append(f"missing: {path} (image {i} of data/distilled.npz)")


def check_labels_csv(
    files: dict[str, bytes], labels: np.ndarray, classes: tuple[str, ...], problems: list[str]
) -> None:
    if LABELS not in files:
        return
    try:
        rows = list(csv.reader(io.StringIO(files[LABELS].decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error):
        problems.append(f"{LABELS}: not a readable CSV file")
        return
    header = ["index", "file", "class", *classes]
    if (
        not rows
        or rows[0][:3] != header[:3]
        or [csv_uncell(h) for h in rows[0][3:]] != list(classes)
    ):
        problems.append(
            f"{LABELS}: header is not index,file,class and the classes of data/distilled.npz"
        )
        return
    body = rows[1:]
    if len(body) != len(labels):
        problems.append(
            f"{LABELS}: {len(body)} rows for {len(labels)} images in data/distilled.npz"
        )
    paths = expected_image_paths(labels, classes)
    winners = labels.argmax(1)
    for i, row in enumerate(body[: len(labels)]):
        where = f"{LABELS}: row {i + 1}"
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} columns, expected {len(header)}")
            continue
        if row[0] != str(i):
            problems.append(f"{where}: index {row[0]!r} is not {i}")
        if row[1] != paths[i]:
            problems.append(f"{where}: file {row[1]!r} is not {paths[i]}")
        if csv_uncell(row[2]) != classes[winners[i]]:
            problems.append(
                f"{where}: class {row[2]!r} is not {classes[winners[i]]!r} (its label's highest class)"
            )
        try:
            values = np.array([float(v) for v in row[3:]], dtype=np.float32)
        except ValueError:
            values = None
        if values is None or not np.array_equal(values.view(np.uint32), labels[i].view(np.uint32)):
            problems.append(f"{where}: soft labels of image {i} differ from data/distilled.npz")


def first_difference(have: bytes, want: bytes) -> str:
    """Where two files first differ: ``line N`` (1-based) or ``the end`` (one is a prefix)."""
    a, b = have.split(b"\n"), want.split(b"\n")
    for n, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return f"line {n}"
    return f"line {min(len(a), len(b)) + 1} (one file is longer)"


def check_rebuilt(
    files: dict[str, bytes], path: str, want: bytes, source: str, problems: list[str]
) -> None:
    """``files[path]`` must be ``want`` byte for byte (when present; a missing file is named by
    the manifest check)."""
    if path in files and files[path] != want:
        problems.append(
            f"{path}: differs from the file rebuilt from {source} "
            f"(first at {first_difference(files[path], want)})"
        )


def check_derived_data(
    files: dict[str, bytes], labels: np.ndarray, classes: tuple[str, ...], problems: list[str]
) -> None:
    """``data/labels.csv`` and ``data/metadata.jsonl`` rebuilt from the arrays with the writer's
    functions (``derived.labels_csv``, ``derived.metadata_jsonl``) and compared byte for byte: what
    ``datasets``, the imagefolder loader and mlcroissant serve is what the arrays say."""
    paths = expected_image_paths(labels, classes)
    winners = labels.argmax(1)
    source = "data/distilled.npz"
    if not any(p.startswith(LABELS) for p in problems):  # the row checks name a difference
        check_rebuilt(files, LABELS, labels_csv(labels, classes, paths, winners), source, problems)
    check_rebuilt(files, METADATA, metadata_jsonl(labels, paths, winners), source, problems)
