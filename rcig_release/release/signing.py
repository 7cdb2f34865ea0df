"""OpenSSH signatures over a bundle's manifest, so a reader can check a bundle without rcig-release.

``release --sign KEY`` runs ``ssh-keygen -Y sign -f KEY -n rcig-release-bundle`` over
``manifest-sha256.txt`` and writes the signature to ``manifest-sha256.txt.sig``; the manifest holds
the sha256 of every other file, so the signature covers the whole bundle. ``verify --key FILE``
runs ``ssh-keygen -Y verify`` with FILE as the trusted key: a public key (``ssh-ed25519 AAAA…``,
one or more lines) or an OpenSSH allowed-signers file. The commands a reader can run by hand are in
docs/release.md ("Signatures").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rcig_release.errors import InputError

NAMESPACE = "rcig-release-bundle"
# The principal written into the allowed-signers file built from a bare public key.
SIGNER = "bundle-signer"
_KEY_TYPE = re.compile(r"^(?:ssh-|ecdsa-|sk-ssh-|sk-ecdsa-)[A-Za-z0-9@.-]+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_TIMEOUT_S = 600  # signing may wait for a passphrase typed on the terminal


def ssh_keygen() -> str:
    """The ssh-keygen executable; ``InputError`` (exit 2) when it is not on PATH."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise InputError(
            "ssh-keygen not found on PATH (OpenSSH 8.2 or later signs and checks bundles)"
        )
    return exe


def read_key(path: str | Path, what: str) -> bytes:
    """The bytes of a key file; ``InputError`` when it cannot be read."""
    from rcig_release import limits

    p = Path(path)
    try:
        limits.check_file_bytes(p.stat().st_size, f"{what} {p.name}")  # before reading
        data = p.read_bytes()
    except OSError:
        raise InputError(f"{what} not readable: {p.name}") from None
    if not data.strip():
        raise InputError(f"{what} is empty: {p.name}")
    return data


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Signing data on standard input")]
    return lines[-1] if lines else "no message"


def _run(args: list[str], data: bytes | None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args, input=data, capture_output=True, timeout=_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"ssh-keygen did not finish within {_TIMEOUT_S} s") from None
    except OSError as e:
        raise InputError(f"ssh-keygen could not be run ({e.strerror})") from None


def sign_manifest(manifest: bytes, key: str | Path) -> bytes:
    """An armoured OpenSSH signature of ``manifest`` made with the private key ``key``."""
    exe = ssh_keygen()
    read_key(key, "signing key")
    res = _run([exe, "-Y", "sign", "-f", str(key), "-n", NAMESPACE], manifest)
    if res.returncode != 0 or not res.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise InputError(
            f"ssh-keygen could not sign with {Path(key).name}: {_last_line(res.stderr)}"
        )
    return res.stdout


def _public_keys(text: str) -> list[tuple[str, str]] | None:
    """(type, base64) per line when every line is a public key, else None (an allowed-signers file)."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not _KEY_TYPE.match(parts[0]) or not _BASE64.match(parts[1]):
            return None
        keys.append((parts[0], parts[1]))
    return keys or None


def verify_manifest(manifest: bytes, signature: bytes, key: str | Path) -> str | None:
    """None when ``signature`` is a valid signature of ``manifest`` by ``key``, else what is wrong.

    ``key`` is a public key file or an OpenSSH allowed-signers file. A missing ssh-keygen or an
    unreadable key file is an ``InputError`` (exit 2), not a verdict on the bundle.
    """
    exe = ssh_keygen()
    try:
        text = read_key(key, "public key").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"public key is not a text file: {Path(key).name}") from None
    keys = _public_keys(text)
    with tempfile.TemporaryDirectory(prefix="rcig-verify-") as tmp:
        sig = Path(tmp) / "manifest.sig"
        sig.write_bytes(signature)
        if keys is not None:
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(
                "".join(f'{SIGNER} namespaces="{NAMESPACE}" {t} {b}\n' for t, b in keys)
            )
            principal = SIGNER
        else:
            allowed = Path(key)
            found = _run([exe, "-Y", "find-principals", "-s", str(sig), "-f", str(allowed)], None)
            names = found.stdout.decode("utf-8", "replace").split()
            if found.returncode != 0 or not names:
                return f"not made by a key in {Path(key).name} ({_last_line(found.stderr)})"
            principal = names[0]
        res = _run(
            [
                exe,
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                principal,
                "-n",
                NAMESPACE,
                "-s",
                str(sig),
            ],
            manifest,
        )
    if res.returncode != 0:
        return f"does not verify with {Path(key).name} ({_last_line(res.stderr)})"
    return None
