"""The bundle's file names and the pure functions that make its derived files.

``release`` (``bundle.py``) writes labels.csv, data/metadata.jsonl, croissant.json and the verdict's
DP section with these functions, and ``verify`` (``layout.py``, ``consistency.py``) rebuilds them
with the same functions and compares the bytes, so writer and checker cannot drift. This module
imports neither side.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from rcig_release.release import coverage
from rcig_release.release import dp as dpmod
from rcig_release.release.croissant import croissant, croissant_dp_text
from rcig_release.release.documents import Outcome
from rcig_release.release.escape import csv_cell

MANIFEST = "manifest-sha256.txt"

CROISSANT = "croissant.json"

POLICY_FILE = "policy/policy.toml"  # the exact bytes of the policy the verdict was reached with

SIGNATURE = MANIFEST + ".sig"  # OpenSSH signature of the manifest (release --sign)

ROC = "report/roc.png"  # the membership game's ROC per attack (figures.game_roc_png)
HISTOGRAMS = "report/histograms.png"  # the game's IN/OUT score histograms (figures.histograms_png)

_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def sanitize(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (the bundle's JSON is strict)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def class_dir_names(classes: tuple[str, ...]) -> tuple[str, ...]:
    """A safe directory name per class, distinct even on case-insensitive file systems.

    NFKC, runs of anything but letters, digits, ``_ . -`` become ``_``; a name longer than 48
    characters, or one that would equal another class's (ignoring case), ends in ``-`` and the
    first 8 hex digits of the sha256 of the original name, so truncation never merges classes
    (a Windows device name such as ``con`` or ``nul.txt`` gets the suffix too); names still
    equal get ``-<class id>`` (and ``-<k>`` after it until no other folder has the name). Linear
    in the number of classes.
    """

    def digest(c: str) -> str:
        return hashlib.sha256(c.encode("utf-8")).hexdigest()[:8]

    names: list[str] = []
    for i, c in enumerate(classes):
        s = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFKC", c)).strip("._-") or f"class_{i}"
        reserved = s.split(".")[0].casefold() in _RESERVED
        names.append(f"{s[:48]}-{digest(c)}" if len(s) > 48 or reserved else s)
    # linear in the class count: counts, not list.count (100,000 classes named in a blink)
    count = Counter(n.casefold() for n in names)
    names = [
        f"{n}-{digest(c)}" if count[n.casefold()] > 1 else n
        for n, c in zip(names, classes, strict=True)
    ]
    count = Counter(n.casefold() for n in names)
    taken = {n.casefold() for n in names if count[n.casefold()] == 1}
    out: list[str] = []
    for i, n in enumerate(names):
        if count[n.casefold()] == 1:
            out.append(n)
            continue
        # unique by construction: the class id, then a counter, until no other folder has it
        cand, k = f"{n}-{i}", 0
        while cand.casefold() in taken:
            k += 1
            cand = f"{n}-{i}-{k}"
        taken.add(cand.casefold())
        out.append(cand)
    return tuple(out)


def labels_csv(
    labels: np.ndarray, classes: tuple[str, ...], files: list[str], image_class: np.ndarray
) -> bytes:
    """index,file,class,<one soft-label column per class>; text cells pass through ``csv_cell``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "file", "class", *(csv_cell(c) for c in classes)])
    for i, f in enumerate(files):
        # repr of a float32 widened to float64 round-trips exactly back to the float32
        w.writerow(
            [
                i,
                csv_cell(f),
                csv_cell(classes[image_class[i]]),
                *(repr(float(v)) for v in labels[i]),
            ]
        )
    return buf.getvalue().encode("utf-8")


def metadata_jsonl(labels: np.ndarray, files: list[str], image_class: np.ndarray) -> bytes:
    """data/metadata.jsonl for the Hugging Face imagefolder builder: one line per image with its
    ``file_name`` (relative to data/), ``index``, ``label`` (the class id, as in the npz) and
    ``soft_label`` (the float32 soft label, exact)."""
    lines = []
    for i, f in enumerate(files):
        lines.append(
            json.dumps(
                {
                    "file_name": f.removeprefix("data/"),
                    "index": i,
                    "label": int(image_class[i]),
                    "soft_label": [float(v) for v in labels[i]],
                },
                ensure_ascii=False,
                allow_nan=False,
            )
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def dp_verdict(run_json: Mapping, audit: Mapping) -> dict | None:
    """verdict.json's ``dp``: the guarantee and the audit's check of it (None without DP; the
    check is null when the audit is withheld: ``audit`` is then ``{}``)."""
    dp = run_json.get("dp")
    if not isinstance(dp, dict):
        return None
    return {"guarantee": dpmod.guarantee(dp), "audit_check": dpmod.audit_check(audit.get("dp"))}


def croissant_bytes(
    files: Mapping[str, bytes],
    *,
    name: str,
    license_spdx: str | None,
    classes: tuple[str, ...],
    n_images: int,
    policy_name: str,
    verdict: str,
    dp: dict | None,
    private_stats: str,
    date_published: str,
    demonstration: bool = False,
) -> bytes:
    """croissant.json's bytes: a pure function of the other bundle files (the manifest and the
    signature excluded), the release's name and licence, the classes, the policy's name, the
    verdict, the DP statement and the publication date. ``release`` writes it and ``verify``
    rebuilds it with this function and compares the bytes."""
    listed = {p: b for p, b in files.items() if p not in (CROISSANT, MANIFEST, SIGNATURE)}
    return json_bytes(
        croissant(
            name,
            license_spdx,
            listed,
            classes,
            f"{n_images} synthetic images distilled with RCIG from a private image set, released "
            f"behind the {'demonstration' if demonstration else 'privacy'} policy "
            f"'{policy_name}' (verdict: {verdict}"
            f"{'; a demonstration at reduced audit sizes, not a privacy audit' if demonstration else ''}); "
            f"{croissant_dp_text(dp)}.",
            date_published=date_published,
            dp=dp,
            private_stats=private_stats,
            demonstration=demonstration,
        )
    )


def coverage_of(paths: set[str], prov: Mapping) -> tuple[tuple[str, str, str, str], ...]:
    """The card's file-by-file coverage table of a DP bundle (empty without DP)."""
    if prov.get("dp") is None:
        return ()
    rel = prov.get("release") if isinstance(prov.get("release"), Mapping) else {}
    included = (rel or {}).get("private_stats", coverage.INCLUDED) != coverage.WITHHELD
    return tuple(coverage.rows(paths - {SIGNATURE}, included=included))


def outcome_of(verdict: Mapping) -> Outcome:
    """The decision as a withheld verdict.json states it (what the card of such a bundle shows)."""
    pol = verdict.get("policy") if isinstance(verdict.get("policy"), Mapping) else {}
    failed = verdict.get("failed")
    return Outcome(
        verdict=str(verdict.get("verdict")),
        policy_name=str((pol or {}).get("name")),
        policy_sha256=str((pol or {}).get("sha256")),
        failed=tuple(str(f) for f in failed) if isinstance(failed, list) else (),
        demonstration=bool(verdict.get("demonstration")),
    )
