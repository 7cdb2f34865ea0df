"""Image-folder source: ``DIR/train/<class>/*`` + ``DIR/test/<class>/*``, or ``DIR/<class>/*``.

Class names are the sub-folder names, sorted. Files with the extensions ``.png``, ``.jpg`` and
``.jpeg`` (any case) are read with pillow; hidden entries and other files are ignored. Grayscale
images stay one channel; if any image has colour, all are converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rcig_release.data.dataset import Dataset, make_dataset
from rcig_release.data.splits import stratified_split
from rcig_release.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GREY_MODES = {"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N"}
_COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


def _visible_dirs(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _image_files(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)


def _scan(split_dir: Path, root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and ``(file, label)`` pairs under ``split_dir``."""
    class_dirs = _visible_dirs(split_dir)
    if not class_dirs:
        where = (f"image folder {root.name}" if split_dir == root
                 else f"{split_dir.relative_to(root).as_posix()}/")
        raise InputError(f"{where} is empty: no class sub-folders (expected <class>/<images>)")
    items: list[tuple[Path, int]] = []
    for label, cdir in enumerate(class_dirs):
        files = _image_files(cdir)
        if not files:
            raise InputError(f"class folder {cdir.relative_to(root).as_posix()} has no "
                             "PNG/JPEG images")
        items.extend((f, label) for f in files)
    return [c.name for c in class_dirs], items


def _read_image(path: Path, root: Path) -> np.ndarray:
    """One image as ``[H, W, 1]`` uint8/uint16 or ``[H, W, 3]`` uint8, without scaling."""
    rel = path.relative_to(root).as_posix()
    try:
        with Image.open(path) as im:
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        raise InputError(f"corrupt or unreadable image: {rel}") from None
    raise InputError(f"unsupported image mode {mode} in {rel} (use 8-bit grayscale or RGB)")


def _load_items(items: list[tuple[Path, int]], root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    images: list[np.ndarray] = []
    first: tuple[str, tuple[int, int]] | None = None
    for path, _ in items:
        img = _read_image(path, root)
        hw = (int(img.shape[0]), int(img.shape[1]))
        if first is None:
            first = (path.relative_to(root).as_posix(), hw)
        elif hw != first[1]:
            (w0, h0), rel = first[1][::-1], path.relative_to(root).as_posix()
            raise InputError(f"images of different sizes: {first[0]} is {w0}x{h0} "
                             f"but {rel} is {hw[1]}x{hw[0]}")
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
    """Loads an image folder (layout in the module docstring)."""
    if not root.is_dir():
        raise InputError(f"image folder not found: {source}")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        classes, train_items = _scan(train_dir, root)
        test_classes, test_items = _scan(test_dir, root)
        if test_classes != classes:
            missing = sorted(set(classes) ^ set(test_classes))
            raise InputError(f"train/ and test/ must have the same class folders "
                             f"(differ in: {', '.join(missing)})")
        tr_imgs, y_tr = _load_items(train_items, root)
        te_imgs, y_te = _load_items(test_items, root)
        if tr_imgs[0].shape[:2] != te_imgs[0].shape[:2]:
            a, b = train_items[0][0], test_items[0][0]
            raise InputError(f"images of different sizes: {a.relative_to(root).as_posix()} and "
                             f"{b.relative_to(root).as_posix()}")
        colour = any(i.shape[-1] == 3 for i in tr_imgs + te_imgs)
        x_tr, x_te = _to_pixels(tr_imgs, colour), _to_pixels(te_imgs, colour)
        return make_dataset(x_tr, y_tr, x_te, y_te, tuple(classes), source, split_seed=None)
    if train_dir.is_dir() != test_dir.is_dir():
        present = "train" if train_dir.is_dir() else "test"
        absent = "test" if present == "train" else "train"
        raise InputError(f"image folder has {present}/ but no {absent}/ (use both, or put the "
                         "class folders directly in the folder)")
    classes, items = _scan(root, root)
    imgs, y = _load_items(items, root)
    x = _to_pixels(imgs, any(i.shape[-1] == 3 for i in imgs))
    tr, te = stratified_split(y, seed=seed, test_fraction=test_fraction, what=root.name)
    return make_dataset(x[tr], y[tr], x[te], y[te], tuple(classes), source, split_seed=seed)
