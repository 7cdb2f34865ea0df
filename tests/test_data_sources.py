"""Data sources and validation: digits, .npz, image folders, fingerprint, bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from rcig_release.data import Dataset, check_ipc, fingerprint_arrays, load_dataset
from rcig_release.errors import InputError

# --------------------------------------------------------------------------- helpers


def _toy(n_per_class=5, classes=3, hw=(4, 5), channels=None, seed=0):
    rng = np.random.default_rng(seed)
    n = n_per_class * classes
    shape = (n, *hw) if channels is None else (n, *hw, channels)
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    return x, y


def _write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _assert_clean_message(err: pytest.ExceptionInfo, *forbidden: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    for f in forbidden:
        assert f not in msg


# --------------------------------------------------------------------------- digits


def test_digits_matches_sklearn_stratified_split():
    ds = load_dataset("digits", seed=3)
    bunch = load_digits()
    idx = np.arange(len(bunch.target))
    tr, te = train_test_split(idx, test_size=0.2, stratify=bunch.target, random_state=3)
    tr, te = np.sort(tr), np.sort(te)
    assert ds.x_train.shape == (len(tr), 8, 8, 1) and ds.x_test.shape == (len(te), 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[..., 0], (bunch.images[tr] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, bunch.target[te])
    assert ds.n_train + ds.n_test == 1797
    assert ds.classes == tuple("0123456789") and ds.num_classes == 10
    assert ds.image_shape == (8, 8, 1)
    assert ds.source == "digits" and ds.split_seed == 3
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0


def test_digits_split_is_deterministic_and_seed_dependent():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert a.fingerprint.startswith("sha256:") and len(a.fingerprint) == 7 + 64


def test_dataset_is_frozen_and_read_only():
    ds = load_dataset("digits")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.source = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0, 0] = 1.0


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_canonical_and_sensitive():
    x, y = _toy()
    xf = x.astype(np.float32)[..., None] / 255
    base = fingerprint_arrays(xf, y, xf[:3], y[:3])
    # memory layout and byte order do not matter
    assert fingerprint_arrays(np.asfortranarray(xf), y.astype(">i8"), xf[:3].copy(), y[:3]) == base
    # one pixel, one label, the split boundary or the shape do
    x2 = xf.copy()
    x2[0, 0, 0, 0] += 1e-3
    assert fingerprint_arrays(x2, y, xf[:3], y[:3]) != base
    y2 = y.copy()
    y2[-1] = 0
    assert fingerprint_arrays(xf, y2, xf[:3], y[:3]) != base
    assert fingerprint_arrays(xf[:-1], y[:-1], xf[-1:], y[-1:]) != base
    assert fingerprint_arrays(xf.reshape(len(xf), 5, 4, 1), y, xf[:3], y[:3]) != base


# --------------------------------------------------------------------------- npz


def test_npz_presplit_uint8_hw(tmp_path):
    x, y = _toy()
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    ds = load_dataset(str(p))
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (15, 4, 5, 1) and ds.x_test.shape == (4, 4, 5, 1)
    np.testing.assert_allclose(ds.x_train[..., 0], x / 255.0, rtol=0, atol=1e-7)
    assert ds.classes == ("0", "1", "2") and ds.split_seed is None
    assert ds.fingerprint == fingerprint_arrays(ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def test_npz_flat_float_rgb_is_split_stratified_with_classes(tmp_path):
    x, y = _toy(n_per_class=10, classes=2, channels=3)
    xf = x.astype(np.float64) / 255.0
    p = tmp_path / "d.npz"
    np.savez_compressed(p, x=xf, y=y.astype(np.int32), classes=np.array(["cat", "dog"]))
    ds = load_dataset(str(p), seed=5, test_fraction=0.3)
    assert ds.image_shape == (4, 5, 3) and ds.classes == ("cat", "dog")
    assert ds.n_train == 14 and ds.n_test == 6
    assert np.bincount(ds.y_test).tolist() == [3, 3]
    assert ds.split_seed == 5
    tr, te = train_test_split(np.arange(20), test_size=0.3, stratify=y, random_state=5)
    np.testing.assert_allclose(ds.x_test, xf[np.sort(te)].astype(np.float32))


def test_npz_float_integral_labels_accepted(tmp_path):
    x, y = _toy()
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y.astype(np.float32))
    assert load_dataset(str(p)).y_train.dtype == np.int64


def test_shared_mnist_loads_if_present():
    """The benchmark file loads through the .npz path (skipped where it is absent)."""
    from pathlib import Path

    p = Path("/work/shared/data/mnist.npz")
    if not p.is_file():
        pytest.skip("benchmark file not on this machine")
    ds = load_dataset(str(p))
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.n_test == 10000
    assert abs(float(ds.x_train.mean()) - 0.1306605) < 1e-5


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "not found"),
        ("truncated", "corrupt or truncated"),
        ("pickle", "needs pickle"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("float_range", "must be in [0, 1]"),
        ("int_range", "0..255"),
        ("label_float", "labels must be integers"),
        ("label_neg", "outside 0..2"),
        ("label_too_big", "outside 0..1"),
        ("keys", "expected x_train, y_train, x_test, y_test"),
        ("shape_5d", "N×H×W or N×H×W×C"),
        ("shape_nchw", "channels-last"),
        ("sizes", "images of different sizes"),
        ("count", "labels but there are"),
        ("onehot", "1-D array"),
        ("npy", "not an .npz"),
        ("junk", "not an .npz"),
        ("empty", "no images"),
    ],
)
def test_npz_bad_inputs(tmp_path, case, expect):
    x, y = _toy()
    p = tmp_path / "bad.npz"
    xf = x.astype(np.float32) / 255
    if case == "truncated":
        np.savez_compressed(p, x=x, y=y)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif case == "pickle":
        np.savez(p, x=np.array([x[0], x[1]], dtype=object), y=y[:2])
    elif case in ("nan", "inf"):
        xf[3, 1, 1] = np.nan if case == "nan" else np.inf
        np.savez(p, x=xf, y=y)
    elif case == "float_range":
        np.savez(p, x=xf * 255, y=y)
    elif case == "int_range":
        np.savez(p, x=x.astype(np.int32) * 2, y=y)
    elif case == "label_float":
        np.savez(p, x=x, y=y + 0.5)
    elif case == "label_neg":
        y2 = y.copy()
        y2[0] = -1
        np.savez(p, x=x, y=y2)
    elif case == "label_too_big":
        np.savez(p, x=x, y=y, classes=np.array(["a", "b"]))
    elif case == "keys":
        np.savez(p, images=x, labels=y)
    elif case == "shape_5d":
        np.savez(p, x=x[:, None, :, :, None], y=y)
    elif case == "shape_nchw":
        np.savez(p, x=np.zeros((15, 3, 8, 8), np.uint8), y=y)
    elif case == "sizes":
        np.savez(p, x_train=x, y_train=y, x_test=x[:, :3], y_test=y)
    elif case == "count":
        np.savez(p, x=x, y=y[:-1])
    elif case == "onehot":
        np.savez(p, x=x, y=np.eye(3)[y])
    elif case == "npy":
        np.save(tmp_path / "a.npy", x)
        (tmp_path / "a.npy").rename(p)
    elif case == "junk":
        p.write_bytes(b"hello, this is not an archive")
    elif case == "empty":
        np.savez(p, x_train=x[:0], y_train=y[:0], x_test=x, y_test=y)
    spec = str(tmp_path / "nothere.npz") if case == "missing" else str(p)
    with pytest.raises(InputError) as err:
        load_dataset(spec)
    assert expect in str(err.value)
    _assert_clean_message(err, "nan,", "inf,", "[[")


# --------------------------------------------------------------------------- image folders


def test_folder_presplit_grey(tmp_path):
    rng = np.random.default_rng(1)
    imgs = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("b_cls", "a_cls"):
            for i in range(n):
                a = rng.integers(0, 256, (6, 7), dtype=np.uint8)
                imgs[(split, cls, i)] = a
                _write_png(tmp_path / split / cls / f"{i}.png", a)
    (tmp_path / "train" / "a_cls" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ("a_cls", "b_cls")  # sorted folder names
    assert ds.x_train.shape == (6, 6, 7, 1) and ds.x_test.shape == (4, 6, 7, 1)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1] and ds.split_seed is None
    np.testing.assert_allclose(
        ds.x_train[3, ..., 0], imgs[("train", "b_cls", 0)] / 255.0, atol=1e-7
    )


def test_folder_flat_rgb_jpeg_and_png_split(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("x", "y"):
        for i in range(5):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            ext = "png" if i % 2 else "JPG"
            p = tmp_path / cls / f"{i}.{ext}"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(p, format="PNG" if ext == "png" else "JPEG")
    ds = load_dataset(str(tmp_path), seed=0)
    assert ds.image_shape == (8, 8, 3) and ds.classes == ("x", "y")
    assert ds.n_train == 8 and ds.n_test == 2 and ds.split_seed == 0
    assert np.bincount(ds.y_test).tolist() == [1, 1]


def test_folder_mixed_grey_and_colour_becomes_rgb(tmp_path):
    g = np.full((4, 4), 200, np.uint8)
    c = np.zeros((4, 4, 3), np.uint8)
    for i in range(2):
        _write_png(tmp_path / "a" / f"{i}.png", g)
        _write_png(tmp_path / "b" / f"{i}.png", c)
    ds = load_dataset(str(tmp_path), test_fraction=0.5)
    assert ds.image_shape == (4, 4, 3)
    grey = np.concatenate([ds.x_train, ds.x_test])[np.concatenate([ds.y_train, ds.y_test]) == 0]
    np.testing.assert_allclose(grey, 200 / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    "case,expect",
    [
        ("empty", "is empty"),
        ("empty_class", "class folder b has no PNG/JPEG images"),
        ("corrupt", "corrupt or unreadable image: b/bad.png"),
        ("truncated", "corrupt or unreadable image: a/1.png"),
        ("sizes", "images of different sizes"),
        ("train_only", "has train/ but no test/"),
        ("class_mismatch", "same class folders"),
        ("single", "fewer than 2 images"),
    ],
)
def test_folder_bad_inputs(tmp_path, case, expect):
    root = tmp_path / "imgs"
    root.mkdir()
    a = np.full((5, 5), 7, np.uint8)
    if case in ("empty_class", "corrupt", "truncated", "sizes", "single"):
        for i in range(3):
            _write_png(root / "a" / f"{i}.png", a)
        (root / "b").mkdir()
        if case == "corrupt":
            for i in range(3):
                _write_png(root / "b" / f"{i}.png", a)
            (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        elif case == "truncated":
            for i in range(3):
                _write_png(root / "b" / f"{i}.png", a)
            noisy = np.random.default_rng(0).integers(0, 256, (5, 5), dtype=np.uint8)
            _write_png(root / "a" / "1.png", noisy)
            data = (root / "a" / "1.png").read_bytes()
            (root / "a" / "1.png").write_bytes(data[: len(data) // 2])  # cut inside the pixels
        elif case == "sizes":
            _write_png(root / "b" / "0.png", np.zeros((6, 5), np.uint8))
        elif case == "single":
            _write_png(root / "b" / "0.png", a)
    elif case == "train_only":
        _write_png(root / "train" / "a" / "0.png", a)
    elif case == "class_mismatch":
        _write_png(root / "train" / "a" / "0.png", a)
        _write_png(root / "test" / "b" / "0.png", a)
    with pytest.raises(InputError) as err:
        load_dataset(str(root))
    assert expect in str(err.value)
    _assert_clean_message(err, str(tmp_path))  # relative names only, no absolute paths


def test_unknown_source_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="data source not found"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="must name a source"):
        load_dataset("")


# --------------------------------------------------------------------------- check_ipc


def test_check_ipc():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    check_ipc(y, 2, 3)
    with pytest.raises(InputError, match=r"class 1 has 2 training image\(s\), fewer than --ipc 3"):
        check_ipc(y, 3, 3)
    with pytest.raises(InputError, match="class 3 has 0"):
        check_ipc(y, 1, 4)  # a class with no training image at all
    with pytest.raises(InputError, match="at least 1"):
        check_ipc(y, 0, 3)
    ds = load_dataset("digits")
    check_ipc(ds, 10)
    with pytest.raises(InputError, match=r"class \d+ \('\d'\) has"):
        check_ipc(ds, 1000)
