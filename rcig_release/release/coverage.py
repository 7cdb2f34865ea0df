"""What a DP release's (ε, δ) statement covers, file by file (docs/release.md, "What the guarantee
covers").

A differentially private mechanism's guarantee covers its output and everything computed from that
output and public facts (post-processing). A bundle can hold more than that: the release decision
(a function of the private data: the audit and the memorisation check ran on it), the audit's
statistics, the memorisation check's distances and p-values, accuracies measured on the private
test split, and the keyed data fingerprint. None of those is covered.

Layouts of a DP bundle (``provenance.json`` ``release.private_stats``):

- ``"withheld"`` (the default): the bundle holds the mechanism's output, what derives only from it
  and public facts, the keyed fingerprint and the release decision; every file under ``report/``
  (the audit, its raw score files, figures and report) and every statistic of the private data stay
  in the run directory.
- ``"included"`` (``release --include-private-stats``): as a bundle without DP, with every file.

A bundle without DP makes no DP claim; it is always ``"included"``.

``rows`` classifies every bundle path (``yes``: covered; ``no``: not covered; ``partly``: which
parts are and which are not). A path it does not know is ``no``: a file added to bundles later is
never silently claimed as covered. The card's DP sentence is generated from these rows
(``sentence``), and ``verify`` rebuilds the card, so the table always lists the bundle's files.
"""

from __future__ import annotations

from collections.abc import Iterable

WITHHELD = "withheld"
INCLUDED = "included"
PRIVATE_DIR = "report/"  # every file under it is audit material: a statistic of the private data
IMAGES = "data/images/"

_OUTPUT = "the mechanism's output (images and soft labels), only post-processed"
_DECISION = (
    "the release decision (pass, or overridden with the failed rules' names) and that the "
    "memorisation check passed: both were computed on the private data"
)


def is_private_stat(path: str) -> bool:
    """Files that hold statistics of the private data (withheld from a DP bundle by default)."""
    return path.startswith(PRIVATE_DIR)


def _row(path: str, included: bool) -> tuple[str, str, str]:
    """(status, covered part, not covered part) of one bundle file."""
    if path.startswith(IMAGES) and path.endswith(".png"):
        return "yes", _OUTPUT, ""
    fixed: dict[str, tuple[str, str, str]] = {
        "data/distilled.npz": ("yes", _OUTPUT, ""),
        "data/labels.csv": ("yes", _OUTPUT, ""),
        "data/metadata.jsonl": ("yes", _OUTPUT, ""),
        "policy/policy.toml": (
            "yes",
            "the custodian's policy file: public, as long as it was chosen without looking at "
            "the private data",
            "",
        ),
        "provenance.json": (
            "partly",
            "the configuration and seeds, the DP statement, software versions and device, the "
            "data's sizes and class names (treated as public, docs/dp.md), the audit's "
            "configuration, and the digests of the released arrays",
            "data.fingerprint_hmac: a keyed hash of the private data (it reveals nothing without "
            "the custodian's key; whoever holds the key can test candidate data sets against it)"
            + ("; evaluation: accuracies measured on the private test split" if included else ""),
        ),
        "policy/verdict.json": (
            "no",
            "",
            _DECISION
            + (
                "; every rule's value (audit statistics), the memorisation check's per-image "
                "distances and p-values, and the audit's empirical ε lower bound"
                if included
                else ""
            ),
        ),
        "README.md": (
            "partly",
            "everything it states about the files marked yes",
            "the release decision"
            + (
                ", the audit's figures, the copy and memorisation checks' figures and the "
                "accuracies on the private test split"
                if included
                else ""
            ),
        ),
        "croissant.json": (
            "partly",
            "the metadata and checksums of the files",
            "the release decision named in its description",
        ),
        "manifest-sha256.txt": (
            "partly",
            "the checksums of the files marked yes",
            "the checksums of the other files (nothing those files do not already publish)",
        ),
        "report/audit.json": (
            "no",
            "",
            "the audit: attack statistics and p-values over private records, ε lower bounds, "
            "copy-check distances to private images, accuracies on the private test split",
        ),
        "report/roc.png": (
            "no",
            "",
            "the membership game's ROC curves over private audit records",
        ),
        "report/histograms.png": (
            "no",
            "",
            "the membership game's score distributions over private audit records",
        ),
        "report/report.html": (
            "no",
            "",
            "the report: the audit's figures, the copy check, the rules' values and utility",
        ),
    }
    if path in fixed:
        return fixed[path]
    if is_private_stat(path):
        return "no", "", "audit material: raw scores or statistics over private records"
    return "no", "", "not classified by this version of rcig-release, so not claimed as covered"


def rows(paths: Iterable[str], *, included: bool) -> list[tuple[str, str, str, str]]:
    """(file, covered?, what is covered, what is not) for every bundle path, the PNGs as one row."""
    paths = sorted(set(paths))
    pngs = [p for p in paths if p.startswith(IMAGES) and p.endswith(".png")]
    out: list[tuple[str, str, str, str]] = []
    if pngs:
        out.append((f"{IMAGES}<class>/<i>.png ({len(pngs)} files)", *_row(pngs[0], included)))
    out += [(p, *_row(p, included)) for p in paths if p not in pngs]
    return out


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def sentence(table: list[tuple[str, str, str, str]], eps: str, delta: str) -> str:
    """The card's DP sentence, generated from the coverage table (Markdown; file names as code)."""

    def files(status: str) -> list[str]:
        return [f"`{f.replace('`', '')}`" for f, s, _, _ in table if s == status]

    yes, partly, no = files("yes"), files("partly"), files("no")
    text = (
        f"The (ε = {eps}, δ = {delta}) differential-privacy guarantee below covers "
        f"{_join(yes) or 'no file'}"
        + (f", and the covered parts of {_join(partly)}" if partly else "")
        + ": the mechanism's output and what derives only from it and public facts, so anything "
        "computed from them alone is (ε, δ)-differentially private too."
    )
    if no or partly:
        text += (
            " It does **not** cover "
            + _join(no + ([f"the other parts of {_join(partly)}"] if partly else []))
            + ": they are functions of the private data computed outside the mechanism, listed "
            "file by file in the table below."
        )
    return text
