"""What a careful forger does after editing an unsigned bundle: croissant.json's checksums and
sizes updated in place, in the writer's format (a file added is listed as the writer would list
it, a file removed is dropped), then the manifest rewritten. Only the edit itself then differs
from a bundle the writer made (croissant.json included, which verify rebuilds)."""

import json
from pathlib import Path

from rcig_release.release.croissant import _MIME
from rcig_release.release.hashing import bytes_sha256

SKIP = ("manifest-sha256.txt", "croissant.json", "manifest-sha256.txt.sig")


def reseal(bundle: Path, croissant: bool = True) -> None:
    files = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(bundle).as_posix() not in SKIP
    )
    if croissant and (bundle / "croissant.json").is_file():
        meta = json.loads((bundle / "croissant.json").read_text())
        dist = [d for d in meta["distribution"] if d.get("@type") == "cr:FileObject"]
        sets = [d for d in meta["distribution"] if d.get("@type") != "cr:FileObject"]
        by_path = {d["contentUrl"]: d for d in dist if d.get("contentUrl") in files}
        for f in files:
            data = (bundle / f).read_bytes()
            d = by_path.setdefault(
                f,
                {
                    "@type": "cr:FileObject",
                    "@id": f,
                    "name": f,
                    "contentUrl": f,
                    "contentSize": "",
                    "encodingFormat": _MIME.get(Path(f).suffix, "application/octet-stream"),
                    "sha256": "",
                },
            )
            d["contentSize"], d["sha256"] = f"{len(data)} B", bytes_sha256(data)
        meta["distribution"] = [by_path[f] for f in sorted(by_path)] + sets
        (bundle / "croissant.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
        )
    listed = sorted(files + (["croissant.json"] if (bundle / "croissant.json").is_file() else []))
    (bundle / "manifest-sha256.txt").write_text(
        "".join(f"{bytes_sha256((bundle / f).read_bytes())}  {f}\n" for f in listed)
    )
