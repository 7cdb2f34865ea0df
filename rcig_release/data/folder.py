"""Image-folder source: ``DIR/train/<class>/*`` + ``DIR/test/<class>/*``, or ``DIR/<class>/*``.

Class names are the sub-folder names, sorted. Files with the extensions ``.png``, ``.jpg`` and
``.jpeg`` (any case) are read with pillow; hidden entries and other files are ignored. Grayscale
images stay one channel; if any image has colour, all are converted to RGB.

Limits (docs/data.md): symlinks are never followed (a class folder, ``train/``, ``test/`` or an
image file that is a symlink is refused, wherever it points; only ``DIR`` itself may be one).
Every image's header is read first: its width × height is checked against
``RCIG_RELEASE_MAX_PIXELS``, all sizes must agree, and the decoded total against
``RCIG_RELEASE_MAX_BYTES``, before a single image is decoded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from rcig_release import limits
from rcig_release.data.dataset import Dataset, make_dataset
from rcig_release.data.splits import stratified_split
from rcig_release.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_FORMATS = ("PNG", "JPEG")  # the decoders Pillow may use, whatever the content claims
_GREY_MODES = {"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N"}
_COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _no_symlink(p: Path, root: Path) -> None:
    if p.is_symlink():
        raise InputError(
            f"symlink in the image folder: {_rel(p, root)} (symlinks are not "
            "followed; copy the file or folder in instead)"
        )


def _visible_dirs(d: Path, root: Path) -> list[Path]:
    out = []
    for p in d.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir():  # follows a link, so a link to a folder is caught here
            _no_symlink(p, root)
            out.append(p)
            limits.check_classes(len(out), f"image folder {root.name}")
    return sorted(out, key=lambda p: p.name)


def _image_files(d: Path, root: Path) -> list[Path]:
    out = []
    for p in d.iterdir():
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        _no_symlink(p, root)
        if p.is_file():
            out.append(p)
            limits.check_files(len(out), f"image folder {root.name}")
    return sorted(out, key=lambda p: p.name)


def _scan(split_dir: Path, root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and ``(file, label)`` pairs under ``split_dir``."""
    class_dirs = _visible_dirs(split_dir, root)
    limits.check_classes(len(class_dirs), f"image folder {root.name}")
    if not class_dirs:
        where = f"image folder {root.name}" if split_dir == root else f"{_rel(split_dir, root)}/"
        raise InputError(f"{where} is empty: no class sub-folders (expected <class>/<images>)")
    items: list[tuple[Path, int]] = []
    for label, cdir in enumerate(class_dirs):
        files = _image_files(cdir, root)
        if not files:
            raise InputError(f"class folder {_rel(cdir, root)} has no PNG/JPEG images")
        items.extend((f, label) for f in files)
        limits.check_files(len(items), f"image folder {root.name}")
    return [c.name for c in class_dirs], items


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """Opens without following a symlink; pillow parses only the header here. Pillow's own
    decompression-bomb check is off while the header is parsed: ``_probe`` applies the
    (adjustable) pixel cap instead, with the image's real width and height in the message."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    f: IO[bytes] = os.fdopen(fd, "rb")
    with f:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(f, formats=_FORMATS)  # never a decoder the content picks
        finally:
            Image.MAX_IMAGE_PIXELS = saved
        with im:
            yield im


def _bytes_per_pixel(mode: str) -> int:
    if mode.startswith("I;16"):
        return 2
    return 1 if mode in _GREY_MODES else 3


def _probe(path: Path, root: Path) -> tuple[int, int, int]:
    """``(width, height, decoded bytes)`` from the header only; the pixel cap is checked here."""
    rel = _rel(path, root)
    try:
        with _open(path) as im:
            (w, h), mode = im.size, im.mode
    except _UNREADABLE:
        raise InputError(f"corrupt or unreadable image: {rel}") from None
    limits.check_pixels(w, h, f"image {rel}")
    if mode not in _GREY_MODES and mode not in _COLOUR_MODES:
        raise InputError(f"unsupported image mode {mode} in {rel} (use 8-bit grayscale or RGB)")
    return w, h, w * h * _bytes_per_pixel(mode)


def _check_headers(items: list[tuple[Path, int]], root: Path, what: str) -> None:
    """Pixel cap per image, one size for all, and the decoded total under the byte cap."""
    first: tuple[str, int, int] | None = None
    total = 0
    for path, _ in items:
        w, h, nbytes = _probe(path, root)
        if first is None:
            first = (_rel(path, root), w, h)
        elif (w, h) != first[1:]:
            raise InputError(
                f"images of different sizes: {first[0]} is {first[1]}x{first[2]} "
                f"but {_rel(path, root)} is {w}x{h}"
            )
        total += nbytes
    if first is not None:
        limits.check_bytes(
            total, f"image folder {what}", f"{len(items)} images of {first[1]}x{first[2]} pixels"
        )


def _read_image(path: Path, root: Path) -> np.ndarray:
    """One image as ``[H, W, 1]`` uint8/uint16 or ``[H, W, 3]`` uint8, without scaling."""
    rel = _rel(path, root)
    try:
        with _open(path) as im:
            limits.check_pixels(*im.size, f"image {rel}")  # the file may have changed
            im.load()
            mode = im.mode
            if mode in _GREY_MODES:
                if mode.startswith("I;16"):
                    arr = np.asarray(im, dtype=np.uint16)
                else:
                    arr = np.asarray(im.convert("L"), dtype=np.uint8)
                return arr[..., None]
            if mode in _COLOUR_MODES:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except _UNREADABLE:
        raise InputError(f"corrupt or unreadable image: {rel}") from None
    raise InputError(f"unsupported image mode {mode} in {rel} (use 8-bit grayscale or RGB)")


def _load_items(items: list[tuple[Path, int]], root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images: list[np.ndarray] = []
    first: tuple[str, tuple[int, int]] | None = None
    for path, _ in items:
        img = _read_image(path, root)
        hw = (int(img.shape[0]), int(img.shape[1]))
        if first is None:
            first = (_rel(path, root), hw)
        elif hw != first[1]:
            (w0, h0), rel = first[1][::-1], _rel(path, root)
            raise InputError(
                f"images of different sizes: {first[0]} is {w0}x{h0} but {rel} is {hw[1]}x{hw[0]}"
            )
        images.append(img)
    labels = np.array([label for _, label in items], dtype=np.int64)
    return images, labels


def _to_pixels(images: list[np.ndarray], colour: bool) -> np.ndarray:
    """Stacks to float32 ``[N,H,W,C]`` in [0, 1]; grey images are repeated to RGB if ``colour``."""
    out = []
    for img in images:
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        f = img.astype(np.float32) / np.float32(scale)
        if colour and f.shape[-1] == 1:
            f = np.repeat(f, 3, axis=-1)
        out.append(f)
    return np.stack(out).astype(np.float32)


def load_folder_dataset(source: str, root: Path, *, seed: int, test_fraction: float) -> Dataset:
    """Loads an image folder (layout and limits in the module docstring). ``root`` itself may be
    a symlink; nothing inside it may."""
    if not root.is_dir():
        raise InputError(f"image folder not found: {source}")
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if d.is_dir():
            _no_symlink(d, root)
    if train_dir.is_dir() and test_dir.is_dir():
        classes, train_items = _scan(train_dir, root)
        test_classes, test_items = _scan(test_dir, root)
        if test_classes != classes:
            missing = sorted(set(classes) ^ set(test_classes))
            raise InputError(
                f"train/ and test/ must have the same class folders "
                f"(differ in: {', '.join(missing)})"
            )
        _check_headers(train_items + test_items, root, root.name)
        tr_imgs, y_tr = _load_items(train_items, root)
        te_imgs, y_te = _load_items(test_items, root)
        if tr_imgs[0].shape[:2] != te_imgs[0].shape[:2]:
            a, b = train_items[0][0], test_items[0][0]
            raise InputError(f"images of different sizes: {_rel(a, root)} and {_rel(b, root)}")
        colour = any(i.shape[-1] == 3 for i in tr_imgs + te_imgs)
        x_tr, x_te = _to_pixels(tr_imgs, colour), _to_pixels(te_imgs, colour)
        return make_dataset(x_tr, y_tr, x_te, y_te, tuple(classes), source, split_seed=None)
    if train_dir.is_dir() != test_dir.is_dir():
        present = "train" if train_dir.is_dir() else "test"
        absent = "test" if present == "train" else "train"
        raise InputError(
            f"image folder has {present}/ but no {absent}/ (use both, or put the "
            "class folders directly in the folder)"
        )
    classes, items = _scan(root, root)
    _check_headers(items, root, root.name)
    imgs, y = _load_items(items, root)
    x = _to_pixels(imgs, any(i.shape[-1] == 3 for i in imgs))
    tr, te = stratified_split(y, seed=seed, test_fraction=test_fraction, what=root.name)
    return make_dataset(x[tr], y[tr], x[te], y[te], tuple(classes), source, split_seed=seed)
