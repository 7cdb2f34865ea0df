"""`release`: evaluate the policy, run the safety check, write the bundle atomically.

The bundle is written into a temporary directory next to ``out`` and renamed into place only when
complete, so a failed or interrupted release leaves nothing behind, and an existing ``out`` is never
touched. Layout, binding and verification: docs/release.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import rcig_release
from rcig_release import limits
from rcig_release.errors import InputError, PolicyFailure
from rcig_release.pathchecks import license_id
from rcig_release.release import coverage, figures, recompute, signing
from rcig_release.release import dp as dpmod
from rcig_release.release import fingerprint as fpmod
from rcig_release.release import replay as replaymod
from rcig_release.release.decision import Decision, evaluate_policy
from rcig_release.release.derived import (
    CROISSANT,
    HISTOGRAMS,
    MANIFEST,
    POLICY_FILE,
    ROC,
    SIGNATURE,
    class_dir_names,
    coverage_of,
    croissant_bytes,
    dp_verdict,
    json_bytes,
    labels_csv,
    metadata_jsonl,
    outcome_of,
    sanitize,
)
from rcig_release.release.documents import (
    Summary,
    dataset_card,
    report_html,
    soft_label_rows,
)
from rcig_release.release.escape import check_class_names, check_text
from rcig_release.release.hashing import bytes_sha256
from rcig_release.release.initset import verified_init_indices
from rcig_release.release.inputs import ReleaseInputs, load_release_inputs
from rcig_release.release.policy import Policy, parse_policy, resolve_policy
from rcig_release.release.redact import find_leaks, redact
from rcig_release.release.safety import (
    PrivateLoader,
    SafetyResult,
    check_safety,
    load_private_splits,
    to_uint8,
)


class ReleaseRefused(PolicyFailure):
    """A policy failure carrying the decision (and safety result) so the CLI can render it."""

    def __init__(
        self, message: str, decision: Decision | None = None, safety: SafetyResult | None = None
    ):
        super().__init__(message)
        self.decision = decision
        self.safety = safety


class DpViolationRefused(ReleaseRefused):
    """The audit of a DP run found an empirical ε lower bound above the proven ε (exit 4, like the
    audit): a bug or a broken assumption; no policy and no --override releases it."""

    exit_code = 4


def run_dp(run_json: dict, where: str = "run.json dp") -> dict | None:
    """The run's DP statement, validated and its ε recomputed by the accountant; None without DP.
    A malformed statement or an ε the accountant does not give is an ``InputError``."""
    if run_json.get("dp") is None:
        return None
    dp = dpmod.validate_dp(run_json["dp"], where)
    wrong = dpmod.check_epsilon(dp, where)
    if wrong:
        raise InputError(wrong)
    return dp


def layout_for(run_json: Mapping, include_private_stats: bool) -> str:
    """``coverage.WITHHELD`` for a DP run unless the custodian asks for the statistics; a run
    without DP makes no DP claim and keeps them (``coverage.INCLUDED``)."""
    if run_json.get("dp") is None or include_private_stats:
        return coverage.INCLUDED
    return coverage.WITHHELD


def public_data(run_json: Mapping, key: bytes) -> dict:
    """run.json's ``data`` as a bundle states it: the source's path reduced to a base name and the
    unsalted fingerprint replaced by its keyed form (``fingerprint.record``)."""
    data = dict(got) if isinstance(got := run_json.get("data"), dict) else {}
    if "source" in data:
        data["source"] = _source_label(data["source"])
    fp = data.pop("fingerprint", None)
    if fp is not None:
        data.update(fpmod.record(fp, key))
    return data


def public_audit(audit: Mapping, key: bytes) -> dict:
    """The audit as a bundle carries it: redacted, no unsalted data fingerprint (the keyed one
    instead) and no digest of run.json (which holds the unsalted fingerprint)."""
    a = sanitize(redact(audit))
    a.pop("run_json_sha256", None)
    data = a.get("data")
    if isinstance(data, dict) and "source_fingerprint" in data:
        fp = data.pop("source_fingerprint")
        if isinstance(fp, str):
            data.update(fpmod.record(fp, key))
    return a


@dataclasses.dataclass(frozen=True)
class ReleaseResult:
    out: Path
    decision: Decision
    safety: SafetyResult
    override: str | None
    files: tuple[str, ...]
    private_stats: str = coverage.INCLUDED  # coverage.WITHHELD: a DP bundle without them
    fingerprint_key: Path | None = None  # the key file the keyed fingerprint was made with
    key_created: bool = False  # the default key file did not exist and was created
    binding: replaymod.BindingResult | None = None  # --replay's result


def png_bytes(image: np.ndarray) -> bytes:
    px = to_uint8(image)
    img = Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px)  # uint8: "L" or "RGB"
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # Pillow writes no timestamp or path chunks
    return buf.getvalue()


def npz_bytes(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=images.astype(np.float32),
        labels=labels.astype(np.float32),
        classes=np.array(classes, dtype=str),
    )
    return buf.getvalue()


def _source_label(source: Any) -> str | None:
    if not isinstance(source, str):
        return None
    if "/" in source or "\\" in source or source.startswith("~"):
        base = re.split(r"[\\/]", source.rstrip("/\\"))[-1]
        return f"{base} (path withheld)" if base else "(path withheld)"
    return source


def provenance(
    inp: ReleaseInputs, policy: Policy, key: bytes, private_stats: str = coverage.INCLUDED
) -> dict:
    run = inp.run_json
    cfg = got if isinstance(got := run.get("config"), dict) else {}
    data = public_data(run, key)
    audit_cfg = got if isinstance(got := inp.audit.get("config"), dict) else {}
    return {
        "tool": {"name": "rcig-release", "version": rcig_release.__version__},
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "run_sha256": inp.run_sha256,
        "content_sha256": inp.content_sha256,
        "config": cfg,
        "seeds": {
            "distill": cfg.get("seed"),
            "split": data.get("split_seed"),
            "evaluate": inp.eval_json.get("seed"),
            "audit": audit_cfg.get("seed"),
        },
        "data": data,
        "init": run.get("init"),
        "versions": run.get("versions"),
        "device": run.get("device"),
        # accuracies on the private test split: withheld with the other private statistics
        "evaluation": None
        if private_stats == coverage.WITHHELD
        else {k: v for k, v in inp.eval_json.items() if k != "accuracies"}
        | {"accuracies": inp.eval_json.get("accuracies")},
        "audit": {"config": audit_cfg, "n_shadows": inp.audit.get("n_shadows")},
        "dp": dpmod.guarantee(run["dp"]) if isinstance(run.get("dp"), dict) else None,
        "policy": {
            "name": policy.name,
            "file": policy.source_name,
            "sha256": policy.sha256,
            "modified_shipped_policy": policy.modified,
            "demonstration": policy.demonstration,
        },
    }


# verdict.json's plain statement of a demonstration policy's bundle (``[policy] demonstration``)
DEMONSTRATION = (
    "a demonstration at reduced audit sizes, not a privacy audit: only large leaks could have been "
    "detected; audit with the default policy's sizes (--shadows 16) before publishing"
)


def verdict_json(
    decision: Decision,
    safety: SafetyResult,
    policy: Policy,
    override: str | None,
    inp: ReleaseInputs,
    binding: replaymod.BindingResult | None = None,
) -> dict:
    verdict = "pass" if decision.passed else ("overridden" if override else "fail")
    return {
        "verdict": verdict,
        "policy": {
            "name": policy.name,
            "file": policy.source_name,
            "sha256": policy.sha256,
            "modified_shipped_policy": policy.modified,
            "demonstration": policy.demonstration,
        },
        "override": {"reason": override} if override else None,
        "rules": [r.to_json() for r in decision.rules],
        "failed": [r.name for r in decision.failed],
        "safety": safety.to_json(),
        "run_sha256": inp.run_sha256,
        "content_sha256": inp.content_sha256,
        "dp": dp_verdict(inp.run_json, inp.audit),
        "replay": None if binding is None else binding.to_json(),
        "private_stats": coverage.INCLUDED,
        "demonstration": DEMONSTRATION if policy.demonstration else None,
    }


def verdict_withheld(
    decision: Decision,
    policy: Policy,
    override: str | None,
    inp: ReleaseInputs,
    binding: replaymod.BindingResult | None = None,
) -> dict:
    """verdict.json of a DP bundle that withholds its private statistics: the outcome (and the
    failed rules' names on an override), that the memorisation check passed, the guarantee; no
    rule value, p-value, distance or audit bound (docs/release.md)."""
    return {
        "verdict": "pass" if decision.passed else "overridden",
        "policy": {
            "name": policy.name,
            "file": policy.source_name,
            "sha256": policy.sha256,
            "modified_shipped_policy": policy.modified,
            "demonstration": policy.demonstration,
        },
        "override": {"reason": override} if override else None,
        "failed": [r.name for r in decision.failed],
        "safety": {"passed": True, "memorisation": coverage.WITHHELD},
        "run_sha256": inp.run_sha256,
        "content_sha256": inp.content_sha256,
        "dp": dp_verdict(inp.run_json, {}),
        "replay": None if binding is None else binding.to_json(),
        "private_stats": coverage.WITHHELD,
        "demonstration": DEMONSTRATION if policy.demonstration else None,
    }


def figure_files(inp: ReleaseInputs, audit: Mapping) -> dict[str, bytes]:
    """``report/roc.png`` and ``report/histograms.png``, drawn from the game's scores (the bundle's
    ``report/game_scores.npz``): the ROC per attack with its AUC, and the IN/OUT score histograms.
    Without game scores only the fallback ROC (the release split, titled as not the game)."""
    game = (inp.game_files or {}).get(recompute.BUNDLE_SCORES)
    if game is None:
        return {ROC: figures.roc_png(audit, inp.scores)}
    scores, keep = recompute.load_game_scores(game)
    return {
        ROC: figures.game_roc_png(scores, keep),
        HISTOGRAMS: figures.histograms_png(scores, keep),
    }


def build_files(
    inp: ReleaseInputs,
    decision: Decision,
    safety: SafetyResult,
    policy: Policy,
    *,
    name: str,
    license_spdx: str | None,
    override: str | None,
    key: bytes,
    policy_bytes: bytes | None = None,
    private_stats: str = coverage.INCLUDED,
    binding: replaymod.BindingResult | None = None,
) -> dict[str, bytes]:
    """Every bundle file as bytes, keyed by its relative path (POSIX separators).

    ``policy_bytes`` (the policy file as read) is bundled as ``policy/policy.toml`` so that
    ``verify`` can recompute the verdict. ``key``: the custodian's fingerprint key (the bundle
    holds the keyed fingerprint, never the unsalted one). ``private_stats``: ``coverage.WITHHELD``
    leaves out every file under ``report/`` and every statistic of the private data (a DP run's
    default). The card and the report are built last, when every other file name is known: their
    coverage table lists the bundle's files.
    """
    withheld = private_stats == coverage.WITHHELD
    images, labels, classes = inp.images, inp.labels, inp.classes
    image_class = labels.argmax(1)
    dirs = class_dir_names(classes)
    files: dict[str, bytes] = {}
    image_files = []
    for i in range(len(images)):
        rel = f"data/images/{dirs[image_class[i]]}/{i}.png"
        files[rel] = png_bytes(images[i])
        image_files.append(rel)
    files["data/distilled.npz"] = npz_bytes(images, labels, classes)
    files["data/labels.csv"] = labels_csv(labels, classes, image_files, image_class)
    files["data/metadata.jsonl"] = metadata_jsonl(labels, image_files, image_class)
    files.update(inp.game_files or {})  # the game's raw scores: verify recomputes it from them

    audit = {} if withheld else public_audit(inp.audit, key)
    if not withheld:
        files["report/audit.json"] = json_bytes(audit)
        files.update(figure_files(inp, audit))
    if withheld:
        verdict = sanitize(redact(verdict_withheld(decision, policy, override, inp, binding)))
    else:
        verdict = sanitize(redact(verdict_json(decision, safety, policy, override, inp, binding)))
    verdict["override"] = (
        {"reason": override} if override else None
    )  # what the user typed, never rewritten
    files["policy/verdict.json"] = json_bytes(verdict)
    if policy_bytes is not None:
        files[POLICY_FILE] = policy_bytes
    prov = sanitize(redact(provenance(inp, policy, key, private_stats)))
    # what verify rebuilds the card with: what the user typed, never rewritten (as the override)
    prov["release"] = {"name": name, "license": license_spdx, "private_stats": private_stats}
    files["provenance.json"] = json_bytes(prov)
    if withheld:  # whatever else a file under report/ would hold: a private statistic
        files = {p: b for p, b in files.items() if not coverage.is_private_stat(p)}

    later = {"README.md", CROISSANT, MANIFEST} | (set() if withheld else {"report/report.html"})
    summary = Summary(
        name=name,
        license_spdx=license_spdx,
        n_images=int(len(images)),
        classes=classes,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        per_class=tuple(int((image_class == c).sum()) for c in range(len(classes))),
        run_json=sanitize(redact({**inp.run_json, "data": public_data(inp.run_json, key)})),
        eval_json={} if withheld else sanitize(redact(inp.eval_json)),
        audit=audit,
        decision=None if withheld else decision,
        safety=None if withheld else safety,
        override=override,
        content_sha256=inp.content_sha256,
        class_dirs=dirs,
        private_stats=private_stats,
        coverage=coverage_of(set(files) | later, prov),
        outcome=outcome_of(verdict) if withheld else None,
        image_labels=soft_label_rows(labels),
    )
    if not withheld:
        files["report/report.html"] = report_html(
            summary,
            roc=files[ROC],
            histograms=files.get(HISTOGRAMS),
            grid=figures.grid_png(images, classes, image_class),
            copy_plot=figures.copy_check_png(audit.get("copy_check") or {}),
        ).encode("utf-8")
    files["README.md"] = dataset_card(summary).encode("utf-8")
    files[CROISSANT] = croissant_bytes(
        files,
        name=name,
        license_spdx=license_spdx,
        classes=classes,
        n_images=int(len(images)),
        policy_name=policy.name,
        verdict=summary.verdict,
        dp=prov.get("dp"),
        private_stats=private_stats,
        date_published=_dt.datetime.now(_dt.UTC).date().isoformat(),
        demonstration=policy.demonstration,
    )
    files[MANIFEST] = "".join(f"{bytes_sha256(files[p])}  {p}\n" for p in sorted(files)).encode(
        "utf-8"
    )

    for path in sorted(files):
        if path.endswith((".png", ".npz")):
            continue
        leaks = find_leaks(files[path].decode("utf-8"))
        if leaks:
            raise InputError(
                f"refusing to write {path}: it would contain {leaks[0]}, which identifies "
                "this machine (docs/release.md, 'What identifies the machine')"
            )
    return files


def write_atomic(out: Path, files: dict[str, bytes]) -> None:
    """Writes ``files`` into a temporary sibling directory of ``out``, then renames it to ``out``."""
    if os.path.lexists(out):
        raise InputError(f"output already exists, refusing to overwrite: {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
            )
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.chmod(tmp, 0o755)
        if os.path.lexists(out):
            raise InputError(f"output already exists, refusing to overwrite: {out.name}")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_policy(path: str | Path) -> tuple[bytes, Policy]:
    """The policy file's bytes (bundled as they are) and the policy parsed from them; ``path`` may
    also name a shipped policy (``policy.resolve_policy``)."""
    path = resolve_policy(path)
    try:
        limits.check_file_bytes(path.stat().st_size, f"policy file {path.name}")  # before reading
        text = path.read_bytes()
    except OSError:
        raise InputError(f"policy file not readable: {path.name}") from None
    return text, parse_policy(text, path.name)


def self_check(files: dict[str, bytes]) -> None:
    """Refuses to write a bundle that ``verify`` would reject (a bug, or inputs it cannot carry)."""
    from rcig_release.release.verify import verify_files  # verify imports this module

    problems = verify_files(files)
    if problems:
        raise InputError(f"refusing to write the bundle: it would not verify ({problems[0]})")


def release(
    run_dir: str | Path,
    policy_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    license_spdx: str | None = None,
    override: str | None = None,
    data: str | None = None,
    load_private: PrivateLoader | None = None,
    sign: str | Path | None = None,
    fingerprint_key: str | Path | None = None,
    include_private_stats: bool = False,
    replay: bool = False,
) -> ReleaseResult:
    """Releases RUN behind the policy; raises ``ReleaseRefused`` (exit 3) and writes nothing on failure.

    Args:
      run_dir: the run directory (distilled.npz, run.json, eval.json, audit/audit.json).
      policy_path: the policy TOML file, or a shipped policy's name (default, strict, dp, demo).
      out: the bundle directory to create; must not exist.
      name: the dataset's pretty name (default: the bundle directory's name).
      license_spdx: an SPDX licence id for the card (default: unspecified).
      override: a reason; release even when policy rules fail (never bypasses the safety check).
      data: overrides run.json's data source for reloading the private splits.
      load_private: ``(source, split_seed) -> Dataset``; injectable for tests.
      sign: an OpenSSH private key; signs the manifest into ``manifest-sha256.txt.sig``.
      fingerprint_key: the key file of the keyed data fingerprint (default:
        ``fingerprint.default_key_path()``, created with 32 random bytes and mode 0600 when
        absent); never inside the bundle.
      include_private_stats: a DP run's bundle also holds the audit, the memorisation check's
        statistics and the accuracies (its card lists them as not covered); no effect without DP.
      replay: re-derive RUN/distilled.npz from the recorded pipeline before releasing
        (``replay.check``: a replay, or a DP run's checkpoint chain); required by a policy with
        ``[release] require_replay = true``.
    """
    out = Path(out)
    if os.path.lexists(out):
        raise InputError(f"output already exists, refusing to overwrite: {out.name}")
    license_id(license_spdx)  # fullmatch: not "MIT\n"
    if override is not None:
        override = " ".join(check_text(override, "--override").split())
        if not override:
            raise InputError("--override needs a non-empty reason")
    what = "--name" if name is not None else "the --out directory name (the default --name)"
    name = " ".join(check_text(name or out.name, what).split()) or "rcig-release bundle"

    if sign is not None:  # fail fast (exit 2) before any work
        signing.ssh_keygen()
        signing.read_key(sign, "signing key")
    key_path = Path(fingerprint_key) if fingerprint_key is not None else fpmod.default_key_path()
    if key_path.resolve().is_relative_to(out.resolve()):
        raise InputError("the fingerprint key must be kept outside the bundle directory")
    policy_bytes, policy = read_policy(policy_path)
    if policy.require_replay and not replay:
        raise InputError(
            f"policy {policy.label!r} requires --replay (release.require_replay): the released "
            "bytes must be re-derived from the audited pipeline (docs/release.md, 'Binding the "
            "bytes to the pipeline')"
        )
    # an explicit key must exist (a mistyped path must not silently make a new key)
    key, key_created = fpmod.read_key(key_path, create=fingerprint_key is None)
    inp = load_release_inputs(run_dir)
    check_class_names(inp.classes, "RUN/distilled.npz")  # the rules distill applied
    # A DP run's statement must be what the accountant gives, and its audit must not contradict it:
    # a dp-violation is refused before the policy is read, so no --override can release it.
    # The gate reads no statistic from audit.json: each is recomputed from the audit's raw files
    # (recompute.py) and a differing audit.json is refused (exit 2). A DP run's section first,
    # from the score files alone, so a dp-violation is refused before the private data are read.
    raw = recompute.read_audit_dir(Path(run_dir) / "audit")
    recompute.check_config(inp.audit, raw)
    dp_statement = run_dp(inp.run_json)
    for step in ("recorded", "recomputed"):
        problem, violation = dpmod.audit_consistency(dp_statement, inp.audit)
        if violation:
            raise DpViolationRefused(
                f"{violation}; no bundle written (--override does not bypass this)"
            )
        if problem:
            raise InputError(problem)
        if step == "recorded":
            inp = recompute.with_dp(inp, raw, dp_statement)
    private = load_private_splits(inp.run_json, data=data, loader=load_private)
    init = verified_init_indices(  # the recorded init set must be the one the config draws
        inp.run_json,
        inp.init_indices,
        private.x_train,
        private.y_train,
        len(inp.classes),
        len(inp.images),
    )
    inp = recompute.with_game(inp, raw, private)
    decision = evaluate_policy(inp.run_json, inp.eval_json, inp.audit, policy)
    if not decision.passed and override is None:
        n = len(decision.failed)
        raise ReleaseRefused(
            f"policy {policy.label!r}: {n} of {len(decision.rules)} rules failed; no bundle written "
            "(--override REASON releases anyway)",
            decision,
        )

    binding = None
    if replay:  # the bytes must be what the recorded pipeline produces (exit 2 if not)
        assert inp.npz_arrays is not None
        binding = replaymod.check(Path(run_dir), inp.run_json, inp.npz_arrays, data=data)

    # The memorisation check: from the run's data and the images about to be published, never from
    # audit.json; neither --override nor any policy key bypasses it.
    safety = check_safety(
        inp.images,
        private.x_train,
        private.x_test,
        init,
        train_labels=private.y_train,
        allowed=policy.allow_near_copies_in_bundle,
    )
    del private
    if not safety.passed:
        raise ReleaseRefused(
            f"safety check: {safety.memorisation.describe()}; no bundle written "
            "(--override does not bypass this)",
            decision,
            safety,
        )

    files = build_files(
        inp,
        decision,
        safety,
        policy,
        name=name,
        license_spdx=license_spdx,
        override=override,
        key=key,
        policy_bytes=policy_bytes,
        private_stats=layout_for(inp.run_json, include_private_stats),
        binding=binding,
    )
    self_check(files)
    if sign is not None:
        files[SIGNATURE] = signing.sign_manifest(files[MANIFEST], sign)
    write_atomic(out, files)
    return ReleaseResult(
        out=out,
        decision=decision,
        safety=safety,
        override=override,
        files=tuple(sorted(files)),
        private_stats=layout_for(inp.run_json, include_private_stats),
        fingerprint_key=key_path,
        key_created=key_created,
        binding=binding,
    )
