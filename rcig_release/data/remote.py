"""Downloadable benchmarks: MNIST, Fashion-MNIST (gzip IDX) and CIFAR-10 (binary version).

The formats are parsed directly, with no pickle:

* IDX: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, each dimension as a
  big-endian uint32, then the data in C order.
* CIFAR-10 binary (``cifar-10-binary.tar.gz``): members
  ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``, each a run of
  3,073-byte records: one label byte, then 1,024 red, 1,024 green and 1,024 blue bytes of a
  32×32 image, row-major. Members are read from the tar stream; nothing is extracted to disk.

Checksums: the publishers' md5s (MNIST as mirrored by torchvision, Fashion-MNIST from its README,
CIFAR-10 from its web page); for MNIST also the sha256 of the decompressed IDX files
(docs/data.md says where they come from).
"""

from __future__ import annotations

import dataclasses
import gzip
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rcig_release.data.dataset import Dataset, make_dataset
from rcig_release.data.download import RemoteFile, check_content, ensure_files, mirror_urls
from rcig_release.data.validate import check_label_range
from rcig_release.errors import InputError

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
_CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclasses.dataclass(frozen=True)
class RemoteSource:
    """A downloadable dataset: files, hosts, class names and the format of its files."""

    name: str
    files: tuple[RemoteFile, ...]
    urls: tuple[str, ...]
    classes: tuple[str, ...]
    kind: str  # "idx" or "cifar-binary"


REMOTE_SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        name="mnist",
        files=(
            RemoteFile(
                MNIST_FILES["train_images"],
                md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
                content_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            RemoteFile(
                MNIST_FILES["train_labels"],
                md5="d53e105ee54ea40749a09fcbcd1e9432",
                content_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            RemoteFile(
                MNIST_FILES["test_images"],
                md5="9fb629c4189551a2d022fa330f9573f3",
                content_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            RemoteFile(
                MNIST_FILES["test_labels"],
                md5="ec29112dd5afa0611ce80d1b7f02629c",
                content_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
        # The publisher's host first; the S3 mirror serves byte-identical files.
        urls=(
            "http://yann.lecun.com/exdb/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
        classes=tuple(str(i) for i in range(10)),
        kind="idx",
    ),
    "fashion-mnist": RemoteSource(
        name="fashion-mnist",
        files=(
            RemoteFile(MNIST_FILES["train_images"], md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile(MNIST_FILES["train_labels"], md5="25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile(MNIST_FILES["test_images"], md5="bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile(MNIST_FILES["test_labels"], md5="bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        kind="idx",
    ),
    "cifar10": RemoteSource(
        name="cifar10",
        files=(RemoteFile(CIFAR_ARCHIVE, md5="c32a1d4ab5d03f1284b67883e8d87530"),),
        urls=("https://www.cs.toronto.edu/~kriz/",),
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        kind="cifar-binary",
    ),
}


def parse_idx(data: bytes, what: str) -> np.ndarray:
    """Parses an uncompressed IDX file of unsigned bytes into a uint8 array of its shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{what} is not an IDX file")
    if data[2] != 0x08:
        raise InputError(f"{what}: unsupported IDX element type (only unsigned bytes)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError(f"{what} is a truncated IDX file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(data) != header + size:
        raise InputError(f"{what}: IDX size does not match its header (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(shape)


def _read_gzip(path: Path, spec: RemoteFile, dataset: str) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error):
        raise InputError(f"{dataset}: {spec.name} is not a valid gzip file") from None
    check_content(data, spec, dataset)
    return data


def _load_idx_source(src: RemoteSource, paths: dict[str, Path]) -> tuple[np.ndarray, ...]:
    specs = {f.name: f for f in src.files}
    arrays = {}
    for key, fname in MNIST_FILES.items():
        data = _read_gzip(paths[fname], specs[fname], src.name)
        arrays[key] = parse_idx(data, f"{src.name}/{fname}")
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise InputError(
                f"{src.name}: {split} images and labels do not match "
                f"(shapes {x.shape} and {y.shape})"
            )
        out += [x[..., None].astype(np.float32) / np.float32(255.0), y.astype(np.int64)]
    return tuple(out)


def parse_cifar_records(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Parses CIFAR-10 binary records into uint8 ``[N,32,32,3]`` images and int64 labels."""
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise InputError(f"{what}: size is not a whole number of CIFAR-10 records")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def _load_cifar_binary(src: RemoteSource, paths: dict[str, Path]) -> tuple[np.ndarray, ...]:
    archive = paths[CIFAR_ARCHIVE]
    wanted = {f"{CIFAR_DIR}/{n}" for n in CIFAR_TRAIN + CIFAR_TEST}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                if m.name in wanted and m.isfile():
                    f = tar.extractfile(m)
                    if f is not None:
                        members[m.name] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        raise InputError(f"{src.name}: {CIFAR_ARCHIVE} is not a valid tar.gz archive") from None
    missing = sorted(wanted - set(members))
    if missing:
        raise InputError(f"{src.name}: {CIFAR_ARCHIVE} lacks {', '.join(missing)}")
    out = []
    for names in (CIFAR_TRAIN, CIFAR_TEST):
        parts = [parse_cifar_records(members[f"{CIFAR_DIR}/{n}"], f"{src.name}/{n}") for n in names]
        x = np.concatenate([p[0] for p in parts])
        out += [x.astype(np.float32) / np.float32(255.0), np.concatenate([p[1] for p in parts])]
    return tuple(out)


def load_remote_dataset(
    name: str,
    *,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Downloads (once) and parses one of ``REMOTE_SOURCES``; official train/test splits."""
    src = REMOTE_SOURCES[name]
    paths = ensure_files(
        src.name, src.files, mirror_urls(src.urls, base_url), cache_dir=cache_dir, log=log
    )
    if src.kind == "idx":
        x_tr, y_tr, x_te, y_te = _load_idx_source(src, paths)
    else:
        x_tr, y_tr, x_te, y_te = _load_cifar_binary(src, paths)
    check_label_range(y_tr, len(src.classes), f"{name} train labels")
    check_label_range(y_te, len(src.classes), f"{name} test labels")
    return make_dataset(x_tr, y_tr, x_te, y_te, src.classes, name, split_seed=None)
