"""`verify`: is a bundle intact, and does everything it states follow from what it holds?

Returns one line per problem (an empty list means intact):
- every missing, extra or changed file against manifest-sha256.txt and croissant.json, and every
  symlink (never followed);
- broken bindings between the released arrays (``data/distilled.npz``), the provenance, the verdict
  and the audit (content digest, ``run_sha256``);
- ``data/``: image files, their folders and ``labels.csv`` against the arrays (``layout.py``);
- every statistic the gate reads recomputed from the bundled score files
  (``report/game_scores.npz``, ``report/game_records.json``) and compared with the bundled audit
  (``recompute.py``); the verdict recomputed from the bundled policy and those statistics, the
  card and the report rebuilt and compared (``consistency.py``);
- a DP release's guarantee: its ε recomputed by the accountant from the bundled σ, sampling rate,
  steps and δ, the audit's check of it, and the same statement in the verdict and croissant.json
  (``consistency.check_dp``);
- with a key, the OpenSSH signature of the manifest (``signing.py``).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from rcig_release import limits
from rcig_release.errors import InputError
from rcig_release.npzfile import check_npz_limits
from rcig_release.release import consistency, coverage, layout, recompute, signing
from rcig_release.release import fingerprint as fpmod
from rcig_release.release.derived import (
    CROISSANT,
    HISTOGRAMS,
    MANIFEST,
    POLICY_FILE,
    ROC,
    SIGNATURE,
    outcome_of,
)
from rcig_release.release.hashing import arrays_sha256, bytes_sha256
from rcig_release.release.inputs import check_release_headers, load_npz, validate_arrays
from rcig_release.safeio import loads_json

REQUIRED = (
    "README.md",
    "data/distilled.npz",
    "data/labels.csv",
    "data/metadata.jsonl",
    "report/audit.json",
    ROC,
    HISTOGRAMS,
    "report/report.html",
    "policy/verdict.json",
    POLICY_FILE,
    "provenance.json",
    CROISSANT,
    MANIFEST,
)
# A DP bundle that withholds its private statistics has no report/ (coverage.WITHHELD).
REQUIRED_WITHHELD = tuple(p for p in REQUIRED if not coverage.is_private_stat(p))
# Every file a bundle may hold besides the images under data/images/ (layout.check_images).
KNOWN = frozenset(REQUIRED) | {recompute.BUNDLE_SCORES, recompute.BUNDLE_RECORDS, SIGNATURE}
_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")


def _scan(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """Reads every regular file under root without following symlinks. The walk is counted
    against ``RCIG_RELEASE_MAX_FILES``, and every size (``lstat``) against
    ``RCIG_RELEASE_MAX_FILE_BYTES`` and their sum against ``RCIG_RELEASE_MAX_BYTES``, before a
    single file is read (``InputError``, exit 2)."""
    found: list[tuple[str, Path]] = []
    problems: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                problems.append(
                    f"symlink (not followed): {(base / d).relative_to(root).as_posix()}"
                )
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
            found.append((rel, p))
            limits.check_files(len(found), f"bundle {root.name}")
            limits.check_file_bytes(st.st_size, f"bundle file {rel}")
            total += st.st_size
            limits.check_bytes(total, f"bundle {root.name}", "its files together")
    files: dict[str, bytes] = {}
    cap = limits.max_file_bytes()
    for rel, p in found:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            files[rel] = fh.read(cap + 1)
        limits.check_file_bytes(len(files[rel]), f"bundle file {rel}")  # grew meanwhile
    return files, problems


def _json(files: dict[str, bytes], path: str, problems: list[str]) -> dict | None:
    if path not in files:
        return None
    try:
        obj = loads_json(files[path], path)
    except InputError as e:  # names the file: deep, a long integer, bad UTF-8, a syntax error
        problems.append(str(e))
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return obj


def _check_manifest(
    files: dict[str, bytes], problems: list[str], required: tuple[str, ...] = REQUIRED
) -> None:
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
        if (
            path.startswith("/")
            or "\\" in path
            or ".." in path.split("/")
            or path in (MANIFEST, SIGNATURE)
        ):
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
        if path not in (MANIFEST, SIGNATURE) and path not in listed:
            problems.append(f"extra: {path} (not in {MANIFEST})")
    for path in required:
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
    for path in sorted(set(files) - set(listed) - {CROISSANT, MANIFEST, SIGNATURE}):
        problems.append(f"extra: {path} (not in {CROISSANT})")


def _arrays(
    files: dict[str, bytes], problems: list[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]] | None:
    if "data/distilled.npz" not in files:
        return None
    try:
        return validate_arrays(
            load_npz(files["data/distilled.npz"], "data/distilled.npz"), "data/distilled.npz"
        )
    except InputError as e:
        problems.append(str(e))
        return None


def _check_binding(
    content: str,
    prov: dict,
    verdict: dict,
    audit: dict | None,
    files: dict[str, bytes],
    problems: list[str],
) -> None:
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
            problems.append(
                "report/audit.json: not the audit of the released data (run_sha256 differs from provenance.json)"
            )


def _check_statements(
    files: dict[str, bytes],
    arrays,
    prov: dict,
    verdict: dict,
    audit: dict | None,
    content: str | None,
    problems: list[str],
) -> None:
    """The verdict recomputed from the bundled policy and audit; the card and report rebuilt.
    A DP bundle that withholds its private statistics has no audit to recompute the verdict
    from: its verdict is checked for consistency and its card rebuilt (``_check_withheld``)."""
    if consistency.layout(prov) == coverage.WITHHELD:
        _check_withheld(files, arrays, prov, verdict, content, problems)
        return
    if audit is None or not verdict or arrays is None:
        return
    # the game's class groups are the classes of the arrays: checked first, cheaply, so a forged
    # class count cannot make verify recompute the game for 10,000 classes that have no records
    game_classes = _game_class_groups(audit)
    if game_classes is not None and game_classes != len(arrays[2]):
        problems.append(
            f"report/audit.json: the game has {game_classes} class groups, data/distilled.npz "
            f"{len(arrays[2])} classes"
        )
        return
    # every statistic the gate reads, recomputed from the bundled score files (recompute.py)
    audit = recompute.verify_audit(
        files, audit, consistency.decision_inputs(prov)[0], len(arrays[2]), problems
    )
    if audit is None:
        return
    consistency.check_dp(files, prov, verdict, audit, problems)
    policy = consistency.load_policy_file(files, verdict, prov, problems)
    if policy is None:
        return
    decision = consistency.recompute(audit, prov, policy, problems)
    if decision is None:
        return
    override = consistency.check_verdict(verdict, decision, problems)
    consistency.check_replay(verdict, policy, prov, problems)
    if arrays is None or content is None:
        return
    images, labels, classes = arrays
    safety = consistency.check_safety(verdict, audit, policy, len(images), problems)
    if safety is None:
        return
    s = consistency.summary(
        files, images, labels, classes, audit, prov, decision, safety, override, content
    )
    if s is None:
        problems.append(
            "provenance.json: no release name and licence; README.md and report/report.html not checked"
        )
        return
    tool = got if isinstance(got := prov.get("tool"), dict) else {}
    consistency.check_documents(files, s, images, labels, tool.get("version"), problems)
    consistency.check_croissant(files, s, policy.name, prov, problems)


def _game_class_groups(audit: dict) -> int | None:
    """How many ``class_<k>`` groups the bundled game's first attack has (None: no such record)."""
    game = audit.get("game")
    attacks = game.get("attacks") if isinstance(game, dict) else None
    if not isinstance(attacks, dict) or not attacks:
        return None
    first = next(iter(attacks.values()))
    groups = first.get("groups") if isinstance(first, dict) else None
    if not isinstance(groups, dict):
        return None
    return sum(1 for g in groups if isinstance(g, str) and g.startswith("class_"))


def _check_withheld(
    files: dict[str, bytes],
    arrays,
    prov: dict,
    verdict: dict,
    content: str | None,
    problems: list[str],
) -> None:
    if not verdict:
        return
    consistency.check_dp(files, prov, verdict, None, problems)
    policy = consistency.load_policy_file(files, verdict, prov, problems)
    if policy is None:
        return
    override = consistency.check_withheld_verdict(verdict, problems)
    consistency.check_replay(verdict, policy, prov, problems)
    if arrays is None or content is None:
        return
    images, labels, classes = arrays
    s = consistency.summary(
        files,
        images,
        labels,
        classes,
        {},
        prov,
        None,
        None,
        override,
        content,
        outcome=outcome_of(verdict),
    )
    if s is None:
        problems.append("provenance.json: no release name and licence; README.md not checked")
        return
    tool = got if isinstance(got := prov.get("tool"), dict) else {}
    consistency.check_documents(files, s, images, labels, tool.get("version"), problems)
    consistency.check_croissant(files, s, policy.name, prov, problems)


def _check_signature(files: dict[str, bytes], key: str | Path, problems: list[str]) -> None:
    if SIGNATURE not in files:
        problems.append(
            f"missing: {SIGNATURE} (the bundle is unsigned; --key needs a signed bundle)"
        )
    elif MANIFEST in files:
        wrong = signing.verify_manifest(files[MANIFEST], files[SIGNATURE], key)
        if wrong:
            problems.append(f"{SIGNATURE}: {wrong}")


def verify_files(files: dict[str, bytes], key: str | Path | None = None) -> list[str]:
    """Every problem found in a bundle given as ``{relative path: bytes}`` (empty when intact).

    With ``key`` (a public key or allowed-signers file) the manifest's OpenSSH signature must
    verify; a missing ssh-keygen or an unreadable key is an ``InputError``.
    """
    if key is not None:  # exit 2 before any verdict on the bundle
        signing.ssh_keygen()
        signing.read_key(key, "public key")
    problems: list[str] = []
    prov = _json(files, "provenance.json", []) or {}  # problems named below, in their place
    withheld = consistency.layout(prov) == coverage.WITHHELD
    _check_manifest(files, problems, REQUIRED_WITHHELD if withheld else REQUIRED)
    _check_croissant(files, problems)
    arrays = _arrays(files, problems)
    prov = _json(files, "provenance.json", problems) or {}
    verdict = _json(files, "policy/verdict.json", problems) or {}
    audit = _json(files, "report/audit.json", problems)
    consistency.check_layout(files, prov, verdict, problems)
    content = None
    if arrays is not None:
        content = arrays_sha256(*arrays)
        _check_binding(content, prov, verdict, audit, files, problems)
        layout.check_images(files, *arrays, problems)
        layout.check_labels_csv(files, arrays[1], arrays[2], problems)
        layout.check_derived_data(files, arrays[1], arrays[2], problems)
    for path in sorted(files):
        if path not in KNOWN and not path.startswith(layout.IMAGES):
            problems.append(
                f"unexpected: {path} (not a file of the bundle layout; docs/release.md, 'Verify')"
            )
    try:
        _check_statements(files, arrays, prov, verdict, audit, content, problems)
    except Exception as e:  # noqa: BLE001 - a forged file must give a problem line, never a traceback
        problems.append(
            f"the verdict, card and report cannot be rebuilt from the bundle ({type(e).__name__})"
        )
    if key is not None:
        _check_signature(files, key, problems)
    return list(dict.fromkeys(problems))


def run_fingerprint(run: str | Path) -> str:
    """The unsalted fingerprint a run directory records (``RUN/run.json`` ``data.fingerprint``)."""
    from rcig_release.release.inputs import read_nofollow

    try:
        rj = loads_json(read_nofollow(Path(run) / "run.json", "RUN/run.json"), "RUN/run.json")
        fp = rj["data"]["fingerprint"]
    except (InputError, KeyError, TypeError):
        raise InputError("RUN/run.json: no data.fingerprint to check the bundle against") from None
    if not isinstance(fp, str):
        raise InputError("RUN/run.json: data.fingerprint is not a string")
    return fp


def data_fingerprint(spec: str, prov: dict) -> str:
    """The fingerprint of the data ``spec`` names, split with the seed the bundle records."""
    from rcig_release.data import load_dataset

    info = prov.get("data") if isinstance(prov.get("data"), dict) else {}
    seed = (info or {}).get("split_seed")
    return load_dataset(spec, seed=0 if not isinstance(seed, int) else seed).fingerprint


def check_fingerprint(
    files: dict[str, bytes],
    key_path: str | Path,
    *,
    run: str | Path | None = None,
    data: str | None = None,
) -> list[str]:
    """The bundle's keyed fingerprint against the data's under the custodian's key: the data is
    the run directory's recorded fingerprint (``run``) or the data set itself (``data``).
    An unreadable key or run is an ``InputError`` (exit 2)."""
    if run is None and data is None:
        raise InputError(
            "--fingerprint-key needs --run RUN or --data SPEC: the data whose fingerprint the "
            "bundle should hold"
        )
    key, _ = fpmod.read_key(Path(key_path))
    try:
        prov = loads_json(files["provenance.json"], "provenance.json")
    except (KeyError, InputError):
        return ["provenance.json: missing or unreadable; the keyed fingerprint cannot be checked"]
    prints = []
    if run is not None:
        prints.append(run_fingerprint(run))
    if data is not None:
        prints.append(data_fingerprint(data, prov if isinstance(prov, dict) else {}))
    problems = [
        fpmod.check(prov.get("data") if isinstance(prov, dict) else None, fp, key) for fp in prints
    ]
    return [p for p in problems if p]


def verify_bundle(
    path: str | Path,
    key: str | Path | None = None,
    *,
    fingerprint_key: str | Path | None = None,
    run: str | Path | None = None,
    data: str | None = None,
) -> list[str]:
    """Every problem found in the bundle at ``path`` (empty when intact); see ``verify_files``.
    With ``fingerprint_key`` (and ``run`` or ``data``) the keyed data fingerprint is checked too
    (``check_fingerprint``)."""
    root = Path(path)
    if root.is_symlink():
        raise InputError(f"bundle is a symlink; refusing to follow it: {root.name}")
    if not root.is_dir():
        raise InputError(f"bundle directory not found: {root.name or root}")
    if key is not None:
        signing.ssh_keygen()
        signing.read_key(key, "public key")
    if fingerprint_key is None and (run is not None or data is not None):
        raise InputError("--run and --data name the data for --fingerprint-key; pass the key")
    if fingerprint_key is not None:
        if run is None and data is None:
            check_fingerprint({}, fingerprint_key)  # the one-line error, before any work
        fpmod.read_key(Path(fingerprint_key))
    files, problems = _scan(root)
    if "data/distilled.npz" in files:  # exit 2 before anything is allocated (limits.py)
        check_npz_limits(files["data/distilled.npz"], "data/distilled.npz")
        check_release_headers(files["data/distilled.npz"], "data/distilled.npz")
    found = problems + verify_files(files, key)
    if fingerprint_key is not None:
        found += check_fingerprint(files, fingerprint_key, run=run, data=data)
    return list(dict.fromkeys(found))
