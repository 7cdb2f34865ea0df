"""Checksum-verified downloads into a local cache.

A file is fetched once into ``<cache>/<dataset>/<file name>``: streamed to a temporary file in the
same folder, verified, then moved into place with ``os.replace``, so a partial or corrupt
download never sits in the cache under the real name. A cached file is verified again before use
and fetched afresh if it no longer matches. With the file cached, nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rcig_release.errors import InputError

CACHE_ENV = "RCIG_RELEASE_CACHE"
MIRROR_ENV = "RCIG_RELEASE_MIRROR"
_CHUNK = 1 << 20
_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One published file and its checksums.

    Attributes:
        name: file name on the server and in the cache.
        md5: the publisher's md5 of the file, if they give one.
        sha256: sha256 of the file, if known.
        content_sha256: sha256 of the *decompressed* content (gzip files), if known; checked by the
            parser that decompresses it (``check_content``).
    """

    name: str
    md5: str | None = None
    sha256: str | None = None
    content_sha256: str | None = None


def default_cache_dir() -> Path:
    """``$RCIG_RELEASE_CACHE`` if set, else ``~/.cache/rcig-release``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rcig-release"


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def file_matches(path: Path, spec: RemoteFile) -> bool:
    """True if the file's md5 and sha256 match every checksum the spec gives."""
    md5, sha = _digests(path)
    return (spec.md5 is None or md5 == spec.md5.lower()) and (
        spec.sha256 is None or sha == spec.sha256.lower()
    )


def check_content(data: bytes, spec: RemoteFile, dataset: str) -> None:
    """Raises ``InputError`` if decompressed ``data`` does not match ``spec.content_sha256``."""
    if (
        spec.content_sha256 is not None
        and hashlib.sha256(data).hexdigest() != spec.content_sha256.lower()
    ):
        raise InputError(
            f"{dataset}: the content of {spec.name} does not match its published "
            "checksum; delete it from the cache and try again"
        )


def _fetch(url: str, dest: Path, spec: RemoteFile, dataset: str) -> None:
    """Downloads ``url`` to a temp file next to ``dest``, verifies it, then ``os.replace``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                out.write(block)
        if not file_matches(tmp, spec):
            raise InputError(
                f"{dataset}: downloaded {spec.name} from {url} does not match its "
                "published checksum (not used)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_files(
    dataset: str,
    files: tuple[RemoteFile, ...],
    base_urls: tuple[str, ...],
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Makes sure every file is in the cache and verified; downloads what is missing.

    Args:
        dataset: cache sub-folder and name for messages, e.g. ``"mnist"``.
        files: the published files.
        base_urls: hosts to try in order; the URL is ``base.rstrip('/') + '/' + name``.
        cache_dir: cache root (default ``default_cache_dir()``).
        log: optional callback for progress lines (no data in them).

    Returns:
        ``{file name: cached path}``.

    Raises:
        InputError: every host failed for a file, or a download failed verification.
    """
    root = (cache_dir if cache_dir is not None else default_cache_dir()) / dataset
    paths: dict[str, Path] = {}
    for spec in files:
        dest = root / spec.name
        if dest.is_file() and file_matches(dest, spec):
            paths[spec.name] = dest
            continue
        errors: list[str] = []
        for base in base_urls:
            url = base.rstrip("/") + "/" + spec.name
            if log is not None:
                log(f"downloading {url}")
            try:
                _fetch(url, dest, spec, dataset)
                break
            except InputError as e:  # checksum mismatch: try the next host
                errors.append(str(e))
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url}: {reason}")
        else:
            raise InputError(
                f"{dataset}: could not get {spec.name} (not in the cache {root}; "
                f"tried {'; '.join(errors)}); offline: copy the file into {root}, or set "
                f"{MIRROR_ENV} to a folder URL or local http server that serves it (docs/data.md)"
            )
        paths[spec.name] = dest
    return paths


def mirror_urls(default: tuple[str, ...], base_url: str | None) -> tuple[str, ...]:
    """``base_url``, else ``$RCIG_RELEASE_MIRROR``, else the official hosts."""
    override = base_url or os.environ.get(MIRROR_ENV)
    return (override,) if override else default
