"""Do the bundle's statements follow from its evidence? The verdict, the card and the report, rebuilt.

``verify`` does not trust ``policy/verdict.json``, ``README.md`` or ``report/report.html``: it
recomputes the decision with ``decision.evaluate_policy`` from the bundled policy
(``policy/policy.toml``), the bundled audit (``report/audit.json``) and what the gate reads of the
run and its evaluation (held in ``provenance.json``), then rebuilds the card and the report with the
same ``documents`` functions the writer used and compares them with the bundled files. A verdict
whose rules, values or outcome differ from the recomputed ones, or a card or report stating any
other number, is a problem line.

The report's embedded figures are compared separately: the ROC must be ``report/roc.png`` and the
score histograms ``report/histograms.png``, byte for byte (both are taken as given, like the
manifest-bound files they are: matplotlib's bytes vary between versions, so they are not redrawn;
the numbers they show are the bundled game's, which is recomputed); the image grid must have the
pixels of the grid rebuilt from ``data/distilled.npz``; the copy-check plot (matplotlib, whose
bytes vary between versions) is only required to be a PNG; the numbers it draws are in the
report's table, which is compared.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

import rcig_release
from rcig_release.errors import InputError
from rcig_release.release import coverage, figures
from rcig_release.release.auditview import copy_rows
from rcig_release.release.decision import Decision, evaluate_policy
from rcig_release.release.derived import (
    CROISSANT,
    HISTOGRAMS,
    POLICY_FILE,
    ROC,
    SIGNATURE,
    class_dir_names,
    coverage_of,
    croissant_bytes,
    dp_verdict,
    json_bytes,
    sanitize,
)
from rcig_release.release.documents import (
    Outcome,
    Summary,
    dataset_card,
    report_html,
    soft_label_rows,
)
from rcig_release.release.hashing import bytes_sha256
from rcig_release.release.inputs import validate_audit
from rcig_release.release.memorisation import MemorisationResult
from rcig_release.release.policy import Policy, parse_policy
from rcig_release.release.redact import redact
from rcig_release.release.safety import SafetyResult
from rcig_release.safeio import loads_json

VERDICT = "policy/verdict.json"
# The parts of run.json the verdict and the card may read, as provenance.json carries them.
RUN_KEYS = ("config", "init", "data", "versions", "device", "dp")
_DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"')
_MASK = 'src="data:image/png;base64,…"'
_GRID, _COPY_PLOT = b"<grid>", b"<copy-plot>"


def decision_inputs(prov: Mapping) -> tuple[dict, dict]:
    """The ``run_json`` and ``eval_json`` that ``evaluate_policy`` and the card are given at verify time."""
    run = {k: prov[k] for k in RUN_KEYS if k in prov}
    evaluation = prov.get("evaluation")
    return run, dict(evaluation) if isinstance(evaluation, Mapping) else {}


def _as_json(obj: Any) -> Any:
    """``obj`` as the bundle writes it (redacted, non-finite numbers null) and reads it back."""
    return json.loads(json_bytes(sanitize(redact(obj))))


def _short(x: Any) -> str:
    s = json.dumps(x, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def load_policy_file(
    files: Mapping[str, bytes], verdict: Mapping, prov: Mapping, problems: list[str]
) -> Policy | None:
    """The bundled policy, after checking it is the file the verdict and the provenance name."""
    if POLICY_FILE not in files:
        return None
    data = files[POLICY_FILE]
    digest = bytes_sha256(data)
    named = got if isinstance(got := verdict.get("policy"), Mapping) else {}
    for path, doc in ((VERDICT, named), ("provenance.json", prov.get("policy"))):
        if not isinstance(doc, Mapping) or doc.get("sha256") != digest:
            problems.append(f"{POLICY_FILE}: sha256 differs from the policy sha256 {path} records")
    try:
        policy = parse_policy(data, str(named.get("file") or "policy.toml"))
    except InputError as e:
        problems.append(f"{POLICY_FILE}: {e}")
        return None
    if bool(named.get("demonstration", False)) != policy.demonstration:
        problems.append(
            f"{VERDICT}: policy demonstration is {_short(named.get('demonstration'))}, the "
            f"bundled policy's is {policy.demonstration!r}"
        )
    if named.get("name") != policy.name:
        problems.append(
            f"{VERDICT}: policy name {_short(named.get('name'))} is not the bundled policy's "
            f"{_short(policy.name)}"
        )
    return policy


def recompute(
    audit: Mapping, prov: Mapping, policy: Policy, problems: list[str]
) -> Decision | None:
    try:
        validate_audit(audit)
    except InputError as e:
        problems.append(f"report/audit.json: {e}")
        return None
    run, evaluation = decision_inputs(prov)
    try:
        return evaluate_policy(run, evaluation, audit, policy)
    except Exception as e:  # noqa: BLE001 - a forged audit must not crash verify
        problems.append(
            f"{VERDICT}: the decision cannot be recomputed from the bundle ({type(e).__name__})"
        )
        return None


def check_verdict(verdict: Mapping, decision: Decision, problems: list[str]) -> str | None:
    """Compares the recorded verdict with the recomputed decision; returns the override reason."""
    expected = _as_json([r.to_json() for r in decision.rules])
    recorded = verdict.get("rules")
    if not isinstance(recorded, list) or not all(
        isinstance(r, Mapping) and "name" in r for r in recorded
    ):
        problems.append(f"{VERDICT}: rules is not a list of rules")
        recorded = []
    want = {r["name"]: r for r in expected}
    have = {str(r["name"]): r for r in recorded}
    for name in want:
        if name not in have:
            problems.append(
                f"{VERDICT}: rule {name} is missing (the bundled policy applied to the audit has it)"
            )
            continue
        for field in sorted(set(want[name]) | set(have[name])):
            if want[name].get(field) != have[name].get(field):
                problems.append(
                    f"{VERDICT}: rule {name}: {field} is {_short(have[name].get(field))}, "
                    f"recomputed {_short(want[name].get(field))}"
                )
    for name in have:
        if name not in want:
            problems.append(
                f"{VERDICT}: rule {name} is not a rule of the bundled policy applied to the audit"
            )
    if len(have) != len(recorded):
        problems.append(f"{VERDICT}: rules names a rule more than once")
    elif [r["name"] for r in recorded] != list(want) and set(have) == set(want):
        problems.append(f"{VERDICT}: rules are not in the order the policy evaluates them")

    failed = [r["name"] for r in expected if not r["passed"]]
    if verdict.get("failed") != failed:
        problems.append(
            f"{VERDICT}: failed lists {_count(verdict.get('failed'))} rule(s), "
            f"recomputed {len(failed)}: {_short(failed)}"
        )

    override = verdict.get("override")
    reason = override.get("reason") if isinstance(override, Mapping) else None
    if override is not None and not (isinstance(reason, str) and reason.strip()):
        problems.append(f"{VERDICT}: override is recorded without a reason")
        reason = None
    outcome = "pass" if decision.passed else ("overridden" if reason else "fail")
    if verdict.get("verdict") != outcome:
        problems.append(
            f"{VERDICT}: verdict is {_short(verdict.get('verdict'))}, recomputed {outcome!r}"
        )
    if outcome == "fail":
        problems.append(
            f"{VERDICT}: {len(failed)} rule(s) fail and no override is recorded; "
            "no bundle should exist"
        )
    return reason


def _count(x: Any) -> str:
    return str(len(x)) if isinstance(x, list) else "no list of"


def check_safety(
    verdict: Mapping, audit: Mapping, policy: Policy, n_images: int, problems: list[str]
) -> SafetyResult | None:
    """The recorded memorisation check. It needs the private data, so it is checked for
    consistency only: its outcome must follow from its own recorded p-values and level, it must
    cover every released image, and it must have passed (a failed check writes no bundle)."""
    s: Any = verdict.get("safety")  # JSON, checked below
    try:
        result = SafetyResult(
            memorisation=MemorisationResult.from_json(s["memorisation"]),
            allowed=bool(s["allowed_by_policy"]),
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        problems.append(f"{VERDICT}: safety is missing or malformed")
        return None
    m = s["memorisation"]
    if result.n_images != n_images or s.get("n_images") != n_images:
        problems.append(
            f"{VERDICT}: safety covers {result.n_images} images, data/distilled.npz has {n_images}"
        )
    if result.allowed != policy.allow_near_copies_in_bundle:
        problems.append(f"{VERDICT}: safety.allowed_by_policy differs from the bundled policy")
    if not result.memorisation.levels_consistent():
        problems.append(f"{VERDICT}: safety level is not alpha / tests")
    if (
        m.get("flagged") != result.flagged
        or m.get("passed") is not result.passed
        or s.get("passed") is not result.passed
    ):
        problems.append(f"{VERDICT}: safety.passed does not follow from its p-values")
    elif not result.passed:
        problems.append(f"{VERDICT}: the safety check failed; no bundle should exist")
    return result


def layout(prov: Mapping) -> str:
    """``provenance.json`` ``release.private_stats`` (bundles from before it: ``included``)."""
    rel = prov.get("release") if isinstance(prov.get("release"), Mapping) else {}
    return (
        coverage.WITHHELD
        if (rel or {}).get("private_stats") == coverage.WITHHELD
        else coverage.INCLUDED
    )


def check_layout(
    files: Mapping[str, bytes], prov: Mapping, verdict: Mapping, problems: list[str]
) -> None:
    """A bundle that says it withholds the private statistics holds none, and only a DP bundle
    withholds them; the verdict names the same layout."""
    rel = prov.get("release") if isinstance(prov.get("release"), Mapping) else {}
    stated = (rel or {}).get("private_stats", coverage.INCLUDED)
    if stated not in (coverage.INCLUDED, coverage.WITHHELD):
        problems.append(f"provenance.json: release.private_stats is {_short(stated)}")
    here = layout(prov)
    if verdict and verdict.get("private_stats", coverage.INCLUDED) != here:
        problems.append(
            f"{VERDICT}: private_stats is {_short(verdict.get('private_stats'))}, provenance.json "
            f"says {here!r}"
        )
    if here != coverage.WITHHELD:
        return
    if prov.get("dp") is None:
        problems.append(
            "provenance.json: release.private_stats is 'withheld' but the release states no DP "
            "guarantee (a bundle without DP keeps its statistics)"
        )
    for path in sorted(files):
        if coverage.is_private_stat(path):
            problems.append(
                f"{path}: a statistic of the private data in a bundle whose provenance.json says "
                "they are withheld"
            )
    if prov.get("evaluation") is not None:
        problems.append(
            "provenance.json: evaluation (accuracies on the private test split) in a bundle that "
            "withholds the private statistics"
        )


def check_withheld_verdict(verdict: Mapping, problems: list[str]) -> str | None:
    """A withheld verdict (nothing to recompute it from): its outcome, failed rule names and
    override agree with each other, the memorisation check passed, and no rule value, p-value or
    distance is in it. Returns the override reason."""
    for key in ("rules", "n_rules"):
        if key in verdict:
            problems.append(
                f"{VERDICT}: {key} holds audit statistics in a bundle that withholds them"
            )
    override = verdict.get("override")
    reason = override.get("reason") if isinstance(override, Mapping) else None
    if override is not None and not (isinstance(reason, str) and reason.strip()):
        problems.append(f"{VERDICT}: override is recorded without a reason")
        reason = None
    failed = verdict.get("failed")
    if not isinstance(failed, list) or not all(isinstance(f, str) for f in failed):
        problems.append(f"{VERDICT}: failed is not a list of rule names")
        failed = []
    outcome = verdict.get("verdict")
    if outcome == "pass" and failed:
        problems.append(
            f"{VERDICT}: verdict is 'pass' but {len(failed)} rule(s) are listed as failed"
        )
    elif outcome == "overridden" and not (failed and reason):
        problems.append(f"{VERDICT}: verdict is 'overridden' without failed rules and a reason")
    elif outcome not in ("pass", "overridden"):
        problems.append(f"{VERDICT}: verdict is {_short(outcome)}; no such bundle should exist")
    if verdict.get("safety") != {"passed": True, "memorisation": coverage.WITHHELD}:
        problems.append(
            f"{VERDICT}: safety must state that the memorisation check passed, and nothing else, "
            "in a bundle that withholds the private statistics"
        )
    return reason


def check_replay(verdict: Mapping, policy: Policy, prov: Mapping, problems: list[str]) -> None:
    """The verdict's ``replay`` record: well formed, the check the run calls for (the checkpoint
    chain for a DP run with steps, a replay otherwise), and present when the bundled policy
    requires it (``[release] require_replay``)."""
    from rcig_release.release import replay as replaymod

    rec = verdict.get("replay")
    if rec is None:
        if policy.require_replay:
            problems.append(
                f"{VERDICT}: the bundled policy requires --replay (release.require_replay) but "
                "no replay is recorded"
            )
        return
    want = replaymod.method_for({"config": prov.get("config"), "dp": prov.get("dp")})
    if (
        not isinstance(rec, Mapping)
        or rec.get("identical") is not True
        or not isinstance(rec.get("compared"), list)
        or "images" not in rec["compared"]
    ):
        problems.append(f"{VERDICT}: replay is malformed or not identical")
    elif rec.get("method") != want:
        problems.append(
            f"{VERDICT}: replay method is {_short(rec.get('method'))}, this run calls for {want!r}"
        )


def summary(
    files: Mapping[str, bytes],
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    audit: Mapping,
    prov: Mapping,
    decision: Decision | None,
    safety: SafetyResult | None,
    override: str | None,
    content_sha256: str,
    outcome: Outcome | None = None,
) -> Summary | None:
    """The ``Summary`` the writer built, from the bundle's own files (None without provenance.release)."""
    rel = prov.get("release")
    if not isinstance(rel, Mapping) or not isinstance(rel.get("name"), str):
        return None
    image_class = labels.argmax(1)
    run, evaluation = decision_inputs(prov)
    return Summary(
        name=rel["name"],
        license_spdx=rel.get("license") if isinstance(rel.get("license"), str) else None,
        n_images=int(len(images)),
        classes=classes,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        per_class=tuple(int((image_class == c).sum()) for c in range(len(classes))),
        run_json=run,
        eval_json=evaluation,
        audit=audit,
        decision=decision,
        safety=safety,
        override=override,
        content_sha256=content_sha256,
        class_dirs=class_dir_names(classes),
        private_stats=layout(prov),
        coverage=coverage_of(set(files) - {SIGNATURE}, prov),
        outcome=outcome,
        image_labels=soft_label_rows(labels),
    )


def _first_difference(path: str, have: str, want: str, why: str, note: str) -> str:
    a, b = have.splitlines(), want.splitlines()
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    line = a[n] if n < len(a) else "(end of file)"
    if len(line) > 80:  # show where the line first differs (report lines are long)
        other = b[n] if n < len(b) else ""
        at = next(
            (i for i, (x, y) in enumerate(zip(line, other, strict=False)) if x != y),
            min(len(line), len(other)),
        )
        start = max(0, min(at - 30, len(line) - 80))
        line = (
            ("..." if start else "")
            + line[start : start + 80]
            + ("..." if start + 80 < len(line) else "")
        )
    return f"{path}: line {n + 1} differs from the {why} rebuilt from the bundle ({line.strip()!r}){note}"


def check_documents(
    files: Mapping[str, bytes],
    s: Summary,
    images: np.ndarray,
    labels: np.ndarray,
    tool_version: Any,
    problems: list[str],
) -> None:
    """README.md and report/report.html against the ones rebuilt from ``s``."""
    note = (
        ""
        if tool_version == rcig_release.__version__
        else f"; written by rcig-release {tool_version}, checked with {rcig_release.__version__}"
    )
    if "README.md" in files:
        have = files["README.md"].decode("utf-8", "replace")
        want = dataset_card(s)
        if have != want:
            problems.append(_first_difference("README.md", have, want, "card", note))
    if "report/report.html" in files and ROC in files:
        _check_report(files, s, images, labels, note, problems)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def check_croissant(
    files: Mapping[str, bytes], s: Summary, policy_name: str, prov: Mapping, problems: list[str]
) -> None:
    """croissant.json rebuilt with the writer's ``derived.croissant_bytes`` from the other files,
    the summary, the policy's name and the DP statement, and compared byte for byte (its
    ``datePublished`` is the one input taken from the file itself: a date, nothing else)."""
    from rcig_release.release.layout import check_rebuilt

    if CROISSANT not in files:
        return
    try:
        meta = loads_json(files[CROISSANT], CROISSANT)
        date = meta.get("datePublished")
    except (InputError, AttributeError):
        return  # verify's croissant check names an unreadable file
    if not isinstance(date, str) or not _DATE.fullmatch(date):
        problems.append(f"{CROISSANT}: datePublished is not a date (YYYY-MM-DD)")
        return
    dp = prov.get("dp") if isinstance(prov.get("dp"), dict) else None
    want = croissant_bytes(
        files,
        name=s.name,
        license_spdx=s.license_spdx,
        classes=s.classes,
        n_images=s.n_images,
        policy_name=policy_name,
        verdict=s.verdict,
        dp=_as_json(dp) if dp is not None else None,
        private_stats=s.private_stats,
        date_published=date,
        demonstration=s.demonstration,
    )
    check_rebuilt(dict(files), CROISSANT, want, "the bundle", problems)


def _check_report(
    files: Mapping[str, bytes],
    s: Summary,
    images: np.ndarray,
    labels: np.ndarray,
    note: str,
    problems: list[str],
) -> None:
    path = "report/report.html"
    have = files[path].decode("utf-8", "replace")
    has_copy_plot = any(
        r["nearest_train"] is not None and r["nearest_test"] is not None
        for r in copy_rows(s.audit.get("copy_check") or {})
    )
    want = report_html(
        s,
        roc=files[ROC],
        grid=_GRID,
        copy_plot=_COPY_PLOT if has_copy_plot else None,
        histograms=files.get(HISTOGRAMS),
    )
    if _DATA_URI.sub(_MASK, have) != _DATA_URI.sub(_MASK, want):
        problems.append(
            _first_difference(
                path, _DATA_URI.sub(_MASK, have), _DATA_URI.sub(_MASK, want), "report", note
            )
        )
        return
    for embedded, expected in zip(_DATA_URI.findall(have), _DATA_URI.findall(want), strict=True):
        try:
            png = base64.b64decode(embedded, validate=True)
        except (binascii.Error, ValueError):
            png = b""
        expected = base64.b64decode(expected)
        if expected == _GRID:
            grid = figures.grid_png(images, s.classes, labels.argmax(1))
            if not _same_pixels(png, grid):
                problems.append(
                    f"{path}: the image grid does not show the images of data/distilled.npz"
                )
        elif expected == _COPY_PLOT:
            if not _is_png(png):
                problems.append(f"{path}: the copy-check plot is not a PNG")
        elif png != expected:
            which = (
                f"the ROC figure is not {ROC}"
                if expected == files[ROC]
                else f"the score histograms are not {HISTOGRAMS}"
            )
            problems.append(f"{path}: {which}")


def _decode(png: bytes, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """RGB pixels of a PNG (None if it is not one, or its header states another ``size``)."""
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
            if im.format != "PNG" or (size is not None and im.size != size):
                return None
            return np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 - any decoding failure
        return None


def _is_png(png: bytes) -> bool:
    """A PNG under the pixel cap (RCIG_RELEASE_MAX_PIXELS, from its header) that decodes."""
    from rcig_release import limits

    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
            w, h = im.size
            if w * h > limits.max_pixels():
                return False
            im.load()
            return True
    except Exception:  # noqa: BLE001 - any decoding failure
        return False


def _same_pixels(a: bytes, b: bytes) -> bool:
    pb = _decode(b)  # rebuilt here: its size is the one a may have
    pa = None if pb is None else _decode(a, (pb.shape[1], pb.shape[0]))
    return pa is not None and pb is not None and pa.shape == pb.shape and np.array_equal(pa, pb)


def check_dp(
    files: Mapping[str, bytes],
    prov: Mapping,
    verdict: Mapping,
    audit: Mapping | None,
    problems: list[str],
) -> None:
    """The DP statement: provenance.json's ``dp`` is well formed and its ε is the accountant's for
    its σ, q, steps and δ (recomputed); the audit compared that (ε, δ) and did not contradict it;
    the verdict and croissant.json state the same guarantee. (The card and the report are rebuilt
    from provenance.json's ``dp`` by ``check_documents``.)"""
    from rcig_release.release import dp as dpmod
    from rcig_release.release.croissant import DP_RECORD_SET, dp_record_set

    dp = prov.get("dp")
    if dp is not None:
        try:
            dp = dpmod.validate_dp(dp, "provenance.json dp")
        except InputError as e:
            problems.append(str(e))
            return
        wrong = dpmod.check_epsilon(dp, "provenance.json dp")
        if wrong:
            problems.append(wrong)
    if audit is not None:
        problem, violation = dpmod.audit_consistency(dp, audit)
        if problem:
            problems.append(f"report/audit.json: {problem}")
        if violation:
            problems.append(f"report/audit.json: {violation}; no bundle should exist")
    want = _as_json(dp_verdict({"dp": dp}, audit or {}))
    if "dp" not in verdict or verdict.get("dp") != want:
        problems.append(
            f"{VERDICT}: dp is {_short(verdict.get('dp'))}, the bundle's statement and "
            f"audit give {_short(want)}"
        )
    if CROISSANT in files:
        try:
            meta = loads_json(files[CROISSANT], CROISSANT)
            sets = [
                r
                for r in meta.get("recordSet", [])
                if isinstance(r, Mapping) and r.get("@id") == DP_RECORD_SET
            ]
        except (InputError, AttributeError, TypeError):
            return  # verify's croissant check names an unreadable file
        expected = [_as_json(dp_record_set(dp))] if dp is not None else []
        if sets != expected:
            problems.append(
                f"{CROISSANT}: the {DP_RECORD_SET} record set does not state the "
                "guarantee in provenance.json"
            )
