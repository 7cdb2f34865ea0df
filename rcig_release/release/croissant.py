"""croissant.json: Croissant 1.0 metadata of a bundle, as ``mlcroissant`` validates and reads it.

- ``distribution``: one ``cr:FileObject`` per bundle file (with ``sha256``, which ``verify`` checks)
  and a ``cr:FileSet`` of the PNGs under ``data/images/``.
- ``recordSet``:
  - ``classes``: the class ids and names, inline (``data``);
  - ``png``: one record per PNG, ``png/file`` (its path relative to data/) and ``png/image``;
  - ``images``: one record per line of ``data/metadata.jsonl``: ``index``, ``file``, the image
    (joined on ``file`` with ``png/file``), ``label`` (a class id) and ``soft_label`` (repeated
    float, one per class in id order).
  - ``differential_privacy`` (DP runs only): one inline record with the guarantee (ε, δ, unit,
    neighbouring relation, mechanism, accountant and its version, σ, clip norm, sampling and its
    rate, steps, batch sizes, target ε, preprocessing), the keys of run.json's ``dp``.
- ``citeAs``, ``datePublished``, ``version``, ``license``, ``url`` and the RAI note
  (``rai:personalSensitiveInformation``), which states the DP guarantee in one sentence or says
  there is none; so does the description.

Field ids are fixed words; class names appear only as JSON strings (``classes`` data, descriptions).
"""

from __future__ import annotations

from pathlib import Path

from rcig_release.release.hashing import bytes_sha256

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
_MIME = {
    ".png": "image/png",
    ".json": "application/json",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".html": "text/html",
    ".npz": "application/x-npz",
    ".txt": "text/plain",
    ".jsonl": "application/jsonlines",
    ".toml": "application/toml",
}
# The terms of the Croissant 1.0 JSON-LD context (all map to cr:<term> except those in _SPECIAL).
_TERMS = (
    "citeAs column conformsTo cr rai data dataType dct equivalentProperty examples extract field "
    "fileProperty fileObject fileSet format includes isLiveDataset jsonPath key md5 parentField path "
    "recordSet references regex repeated replace samplingRate sc separator source subField transform"
)
_SPECIAL = {
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "sc": "https://schema.org/",
}
PNG_SET = "png-files"
METADATA = "data/metadata.jsonl"


def context() -> dict:
    ctx: dict = {"@language": "en", "@vocab": "https://schema.org/"}
    for term in _TERMS.split():
        ctx[term] = _SPECIAL.get(term, f"cr:{term}")
    return ctx


def _field(
    rs: str, name: str, data_type: str, source: dict, description: str | None = None, **extra
) -> dict:
    f = {
        "@type": "cr:Field",
        "@id": f"{rs}/{name}",
        "name": name,
        "dataType": data_type,
        "source": source,
    }
    if description:
        f["description"] = description
    f.update(extra)
    return f


def _jsonl(column: str) -> dict:
    return {"fileObject": {"@id": METADATA}, "extract": {"column": column}}


DP_RECORD_SET = "differential_privacy"
# The guarantee's fields in the differential_privacy record set: (key of run.json dp, dataType).
DP_FIELDS = (
    ("epsilon", "sc:Float"),
    ("delta", "sc:Float"),
    ("unit", "sc:Text"),
    ("neighbouring", "sc:Text"),
    ("mechanism", "sc:Text"),
    ("accountant", "sc:Text"),
    ("accountant_version", "sc:Text"),
    ("noise_multiplier", "sc:Float"),
    ("clip_norm", "sc:Float"),
    ("sampling", "sc:Text"),
    ("sampling_rate", "sc:Float"),
    ("steps", "sc:Integer"),
    ("expected_batch_size", "sc:Float"),
    ("max_batch_size", "sc:Integer"),
    ("target_epsilon", "sc:Float"),
    ("preprocessing", "sc:Text"),
)


def croissant_dp_text(dp: dict | None) -> str:
    """The guarantee in one sentence (description, RAI note), or plainly none."""
    from rcig_release.release.dp import NO_GUARANTEE, statement

    return NO_GUARANTEE if dp is None else statement(dp)


def dp_record_set(dp: dict) -> dict:
    """The guarantee as an inline record set (one record), so a Croissant reader gets it as data."""
    fields = [
        {"@type": "cr:Field", "@id": f"{DP_RECORD_SET}/{k}", "name": k, "dataType": t}
        for k, t in DP_FIELDS
    ]
    return {
        "@type": "cr:RecordSet",
        "@id": DP_RECORD_SET,
        "name": DP_RECORD_SET,
        "description": "The release's differential-privacy guarantee, proven by the accountant "
        "(one record; provenance.json dp holds the same).",
        "field": fields,
        "data": [{f"{DP_RECORD_SET}/{k}": dp[k] for k, _ in DP_FIELDS}],
    }


def croissant(
    name: str,
    license_spdx: str | None,
    files: dict[str, bytes],
    classes: tuple[str, ...],
    description: str,
    *,
    date_published: str,
    version: str = "1.0.0",
    dp: dict | None = None,
    private_stats: str = "included",
    demonstration: bool = False,
) -> dict:
    """Croissant 1.0 metadata for the bundle ``files`` (every file but croissant.json itself);
    ``dp``: the run's DP statement (stated in the RAI note and the ``differential_privacy``
    record set), None for a release without one (the RAI note says so); ``demonstration``: a
    demonstration policy's bundle (keyword ``demonstration``, not ``privacy-audited``)."""
    dist: list[dict] = []
    for path in sorted(files):
        dist.append(
            {
                "@type": "cr:FileObject",
                "@id": path,
                "name": path,
                "contentUrl": path,
                "contentSize": f"{len(files[path])} B",
                "encodingFormat": _MIME.get(Path(path).suffix, "application/octet-stream"),
                "sha256": bytes_sha256(files[path]),
            }
        )
    dist.append(
        {
            "@type": "cr:FileSet",
            "@id": PNG_SET,
            "name": PNG_SET,
            "description": "The released images, data/images/<class folder>/<index>.png.",
            "encodingFormat": "image/png",
            "includes": "data/images/*/*.png",
        }
    )
    png = {"fileSet": {"@id": PNG_SET}}
    png_fields = [
        _field(
            "png",
            "file",
            "sc:Text",
            png
            | {
                "extract": {"fileProperty": "fullpath"},
                "transform": {"regex": r"^(?:.*/)?data/(images/[^/]+/[^/]+\.png)$"},
            },
        ),
        _field("png", "image", "sc:ImageObject", png | {"extract": {"fileProperty": "content"}}),
    ]
    class_fields = [
        {"@type": "cr:Field", "@id": "classes/id", "name": "id", "dataType": "sc:Integer"},
        {"@type": "cr:Field", "@id": "classes/name", "name": "name", "dataType": "sc:Text"},
    ]
    class_data = [{"classes/id": i, "classes/name": c} for i, c in enumerate(classes)]
    fields = [
        _field("images", "index", "sc:Integer", _jsonl("index"), "Row of data/distilled.npz."),
        _field(
            "images",
            "file",
            "sc:Text",
            _jsonl("file_name"),
            "Path of the PNG, relative to data/.",
            references={"field": {"@id": "png/file"}},
        ),
        _field(
            "images",
            "image",
            "sc:ImageObject",
            {"field": {"@id": "png/image"}},
            "The image (8-bit PNG).",
        ),
        _field(
            "images",
            "label",
            "sc:Integer",
            _jsonl("label"),
            "Class id (a classes/id): the class its soft label ranks highest.",
        ),
    ]
    fields.append(
        _field(
            "images",
            "soft_label",
            "sc:Float",
            _jsonl("soft_label"),
            "The soft label: one float32 value per class, in class-id order.",
            repeated=True,
        )
    )
    return {
        "@context": context(),
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": name,
        "description": description,
        "citeAs": (
            f"@misc{{rcig_release_bundle, title = {{{_bib(name)}}}, note = {{Synthetic images "
            f"distilled with RCIG and released with rcig-release}}, year = {{{date_published[:4]}}}}}"
        ),
        "datePublished": date_published,
        "license": license_spdx or "unspecified",
        "url": "README.md",
        "version": version,
        # a demonstration policy's bundle is not privacy-audited (``[policy] demonstration``)
        "keywords": ["synthetic", "dataset-distillation", "rcig"]
        + (["demonstration"] if demonstration else ["privacy-audited"]),
        "rai:personalSensitiveInformation": (
            "Synthetic images distilled from private data; "
            + (
                "membership-inference audit and copy check in report/audit.json, "
                if private_stats != "withheld"
                else "the audit's statistics are withheld (functions of the private data the "
                "guarantee does not cover); "
            )
            + "policy verdict in policy/verdict.json. Differential "
            f"privacy: {croissant_dp_text(dp)}"
            + (
                ""
                if dp is None
                else f" (record set {DP_RECORD_SET}; README.md lists the files it covers)"
            )
            + "."
        ),
        "distribution": dist,
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "classes",
                "name": "classes",
                "description": "The classes: id (position in data/distilled.npz classes) and name.",
                "key": {"@id": "classes/id"},
                "field": class_fields,
                "data": class_data,
            },
            {
                "@type": "cr:RecordSet",
                "@id": "png",
                "name": "png",
                "description": "One record per PNG file: its path and content.",
                "field": png_fields,
            },
            {
                "@type": "cr:RecordSet",
                "@id": "images",
                "name": "images",
                "description": "One record per released image: index, file, image, class and one soft-label "
                "field per class (soft_label_<class id>, in the order of data/distilled.npz).",
                "key": {"@id": "images/index"},
                "field": fields,
            },
        ]
        + ([dp_record_set(dp)] if dp is not None else []),
    }


def _bib(s: str) -> str:
    """A BibTeX-safe title: braces and backslashes dropped."""
    return "".join(ch for ch in s if ch not in "{}\\")
