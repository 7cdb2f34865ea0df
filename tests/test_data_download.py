"""Downloads against a local HTTP server serving small files written in the official formats."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import numpy as np
import pytest

from rcig_release.data import load_dataset, remote
from rcig_release.data.download import RemoteFile
from rcig_release.errors import InputError

# --------------------------------------------------------------------------- official formats


def _idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    return header + a.astype(np.uint8).tobytes()


def _cifar_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """x uint8 [N,32,32,3] -> records of label byte + R plane + G plane + B plane."""
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.concatenate([y.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path/www`` on 127.0.0.1; yields (base_url, www_dir, list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", www, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _write_mnist_like(www, monkeypatch, name="mnist", n_train=12, n_test=6, seed=0):
    """Writes the four .gz IDX files and points the source's checksums at them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    files = []
    for key, fname in remote.MNIST_FILES.items():
        raw = _idx_bytes(arrays[key])
        gz = gzip.compress(raw, mtime=0)
        (www / fname).write_bytes(gz)
        files.append(RemoteFile(fname, md5=_md5(gz), content_sha256=_sha(raw)))
    src = dataclasses.replace(remote.REMOTE_SOURCES[name], files=tuple(files))
    monkeypatch.setitem(remote.REMOTE_SOURCES, name, src)
    return arrays


# --------------------------------------------------------------------------- tests


def test_mnist_download_parse_cache_and_offline(server, tmp_path, monkeypatch):
    base, www, requests = server
    arrays = _write_mnist_like(www, monkeypatch)
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", cache_dir=cache, base_url=base)
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (6, 28, 28, 1)
    np.testing.assert_allclose(ds.x_train[..., 0], arrays["train_images"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.classes == tuple("0123456789") and ds.source == "mnist" and ds.split_seed is None
    cached = sorted(p.name for p in (cache / "mnist").iterdir())
    assert cached == sorted(remote.MNIST_FILES.values())  # no temp files left behind
    assert len(requests) == 4
    # second load: served from the cache, even with no server reachable
    again = load_dataset("mnist", cache_dir=cache, base_url=_closed_port_url())
    assert again.fingerprint == ds.fingerprint
    assert len(requests) == 4


def test_env_mirror_and_cache_fashion_mnist(server, tmp_path, monkeypatch):
    base, www, requests = server
    _write_mnist_like(www, monkeypatch, name="fashion-mnist")
    monkeypatch.setenv("RCIG_RELEASE_MIRROR", base)
    monkeypatch.setenv("RCIG_RELEASE_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset("fashion-mnist")
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert (tmp_path / "envcache" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert all(r.startswith("/") for r in requests) and len(requests) == 4


def test_checksum_mismatch_is_refused_and_not_cached(server, tmp_path, monkeypatch):
    base, www, _ = server
    _write_mnist_like(www, monkeypatch)
    src = remote.REMOTE_SOURCES["mnist"]
    bad = (dataclasses.replace(src.files[0], md5="0" * 32),) + src.files[1:]
    monkeypatch.setitem(remote.REMOTE_SOURCES, "mnist", dataclasses.replace(src, files=bad))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="does not match its published checksum") as err:
        load_dataset("mnist", cache_dir=cache, base_url=base)
    assert "\n" not in str(err.value)
    assert not (cache / "mnist" / src.files[0].name).exists()
    assert not list((cache / "mnist").glob("*.part"))  # the temp file is gone too


def test_content_checksum_mismatch(server, tmp_path, monkeypatch):
    base, www, _ = server
    _write_mnist_like(www, monkeypatch)
    src = remote.REMOTE_SOURCES["mnist"]
    bad = (dataclasses.replace(src.files[0], content_sha256="f" * 64),) + src.files[1:]
    monkeypatch.setitem(remote.REMOTE_SOURCES, "mnist", dataclasses.replace(src, files=bad))
    with pytest.raises(InputError, match="content of train-images-idx3-ubyte.gz does not match"):
        load_dataset("mnist", cache_dir=tmp_path / "cache", base_url=base)


def test_corrupt_cached_file_is_fetched_again(server, tmp_path, monkeypatch):
    base, www, requests = server
    _write_mnist_like(www, monkeypatch)
    cache = tmp_path / "cache"
    first = load_dataset("mnist", cache_dir=cache, base_url=base)
    (cache / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"damaged")
    second = load_dataset("mnist", cache_dir=cache, base_url=base)
    assert second.fingerprint == first.fingerprint
    assert requests[-1] == "/t10k-images-idx3-ubyte.gz" and len(requests) == 5


def test_unreachable_or_missing_files(server, tmp_path, monkeypatch):
    base, www, _ = server
    _write_mnist_like(www, monkeypatch)
    with pytest.raises(InputError, match="could not get train-images-idx3-ubyte.gz") as e:
        load_dataset("mnist", cache_dir=tmp_path / "c1", base_url=_closed_port_url())
    # offline, the one line says where the file must go and how to point at a mirror
    assert str(tmp_path / "c1" / "mnist") in str(e.value) and "RCIG_RELEASE_MIRROR" in str(e.value)
    (www / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="could not get t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", cache_dir=tmp_path / "c2", base_url=base)


def test_cifar10_binary_archive(server, tmp_path, monkeypatch):
    base, www, _ = server
    rng = np.random.default_rng(3)
    parts = {}
    for name in remote.CIFAR_TRAIN + remote.CIFAR_TEST:
        x = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, 2).astype(np.int64)
        parts[name] = (x, y)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (x, y) in parts.items():
            data = _cifar_bytes(x, y)
            info = tarfile.TarInfo(f"{remote.CIFAR_DIR}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo(f"{remote.CIFAR_DIR}/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    archive = buf.getvalue()
    (www / remote.CIFAR_ARCHIVE).write_bytes(archive)
    src = remote.REMOTE_SOURCES["cifar10"]
    monkeypatch.setitem(
        remote.REMOTE_SOURCES,
        "cifar10",
        dataclasses.replace(
            src, files=(RemoteFile(remote.CIFAR_ARCHIVE, md5=_md5(archive), sha256=_sha(archive)),)
        ),
    )
    ds = load_dataset("cifar10", cache_dir=tmp_path / "cache", base_url=base)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    x_tr = np.concatenate([parts[n][0] for n in remote.CIFAR_TRAIN])
    np.testing.assert_allclose(ds.x_train, x_tr / 255.0, atol=1e-7)  # channel order R, G, B
    np.testing.assert_array_equal(ds.y_test, parts["test_batch.bin"][1])
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"


def test_parsers_reject_corrupt_data():
    good = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    assert remote.parse_idx(good, "f").shape == (3, 4, 4)
    with pytest.raises(InputError, match="truncated or corrupt"):
        remote.parse_idx(good[:-5], "f")
    with pytest.raises(InputError, match="not an IDX file"):
        remote.parse_idx(b"\x01\x02\x03\x04", "f")
    with pytest.raises(InputError, match="unsupported IDX element type"):
        remote.parse_idx(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0\0\0\0", "f")
    with pytest.raises(InputError, match="whole number of CIFAR-10 records"):
        remote.parse_cifar_records(b"\0" * 3000, "f")


def test_official_checksums_are_recorded():
    """Every remote file carries a publisher checksum; MNIST also its IDX content sha256."""
    for src in remote.REMOTE_SOURCES.values():
        for f in src.files:
            assert f.md5 is not None and len(f.md5) == 32
    assert all(
        f.content_sha256 and len(f.content_sha256) == 64
        for f in remote.REMOTE_SOURCES["mnist"].files
    )
