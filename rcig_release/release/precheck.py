"""Fail fast: would ``release`` refuse this run's images? The memorisation check, seconds, no audit.

``release`` runs the memorisation check on the images it is about to publish and refuses (exit 3,
``--override`` cannot pass it) when it flags one. Nothing in that check reads the audit, so it
can run as soon as ``distill`` has written the images: ``distill`` and ``evaluate`` end with it,
``rcig-release check RUN`` runs it on demand and ``audit`` runs it before its shadows (an audit of
a set the check refuses can never lead to a release). It reads the run's files as ``release``
does (``release.inputs``) and the private splits (fingerprint-checked), and runs what
``release`` runs before it writes a bundle through ``memorisation_of``, the one place that names
it: the init set recomputed from the run's configuration (``initset.py``; an edited one is exit
2) and the memorisation check (``memorisation.py``: nearest-record tests on every image, the
within-class init test when images started from records).

What it prints is counts, levels and p-values only: no pixel values, no training indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release.config import DEFAULT_INIT
from rcig_release.errors import InputError, PolicyFailure
from rcig_release.release.safety import PrivateLoader, check_safety, load_private_splits


class WouldBeRefused(PolicyFailure):
    """The memorisation check flags the set: ``release`` would refuse it (exit 3)."""


def memorisation_of(
    images: np.ndarray,
    splits: Any,
    init_indices: np.ndarray | None,
    run_json: Mapping,
    n_classes: int,
) -> Any:
    """What ``release`` runs before it writes a bundle, in the same order and with the same
    functions: the recorded init set checked against the one the run's configuration draws
    (``initset.verified_init_indices``: an edited set is an ``InputError``, exit 2; aggregate and
    noise inits have no init record), then the memorisation check (``safety.check_safety``) of
    ``images`` (pixel space, as published) against the private splits (``.x_train``, ``.x_test``,
    ``.y_train``). The one call of them outside ``release``: a new version of either is picked
    up here. Returns ``safety.SafetyResult``."""
    from rcig_release.release.initset import verified_init_indices

    y_train = getattr(splits, "y_train", None)
    y_train = None if y_train is None else np.asarray(y_train, np.int64)
    init = verified_init_indices(
        run_json, init_indices, splits.x_train, y_train, n_classes, len(images)
    )
    return check_safety(images, splits.x_train, splits.x_test, init, train_labels=y_train)


def smallest_p(result: Any) -> float | None:
    """The smallest p-value of the check's tests: each image's nearest-record p-value and, when
    the images have init records, the release-level init test's (None when there is none)."""
    mem = result.memorisation
    ps = [float(im.p_nearest) for im in mem.images]
    if mem.init is not None:
        ps.append(float(mem.init.p))
    return min(ps) if ps else None


def smallest_p_nearest(result: Any) -> float | None:
    """The smallest of the images' nearest-record p-values (None without images)."""
    ps = [float(im.p_nearest) for im in result.memorisation.images]
    return min(ps) if ps else None


def init_test_p(result: Any) -> float | None:
    """The release-level init test's p-value (None: no image started from a record)."""
    init = result.memorisation.init
    return None if init is None else float(init.p)


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


@dataclasses.dataclass(frozen=True)
class Precheck:
    init_mode: str
    n_images: int
    passed: bool
    summary: str  # the check's own one-line description (counts, level)
    smallest_p: float | None
    result: Any  # safety.SafetyResult

    @property
    def remedy(self) -> str | None:
        """What to do instead, when the release would be refused."""
        if self.passed:
            return None
        mem = self.result.memorisation
        if not mem.resolvable:
            return (
                "the run's held-out and training splits are too small for the check to reach its "
                "level; no set distilled from this data can be released"
            )
        if self.init_mode == "real":
            return (
                "--init real starts each image from one training record; re-distil with "
                f"--init {DEFAULT_INIT} (the default: each image the mean of many records) or "
                "--init noise"
            )
        return (
            f"an image distilled from --init {self.init_mode} ended near a training record; "
            "re-distil with --init noise, fewer --steps or another --seed"
        )

    def lines(self) -> list[str]:
        """What the CLI prints: the outcome, the check's counts and the remedy."""
        p = _fmt_p(self.smallest_p)
        head = (
            "memorisation check: passed, release would not refuse these images"
            if self.passed
            else "memorisation check: FAILED, release would refuse these images "
            "(--override cannot pass it)"
        )
        out = [head, f"  {self.summary}; smallest p {p}"]
        if self.remedy:
            out.append(f"  remedy: {self.remedy}")
        return out

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "would_be_refused": not self.passed,
            "init_mode": self.init_mode,
            "n_images": self.n_images,
            "summary": self.summary,
            "smallest_p": self.smallest_p,
            "smallest_p_nearest": smallest_p_nearest(self.result),
            "init_test_p": init_test_p(self.result),
            "remedy": self.remedy,
            "flagged": self.result.flagged,
        }


def precheck_arrays(
    images: np.ndarray,
    splits: Any,
    init_indices: np.ndarray | None,
    run_json: Mapping,
    n_classes: int,
) -> Precheck:
    """``memorisation_of`` wrapped with the outcome, the smallest p-value and the remedy."""
    res = memorisation_of(images, splits, init_indices, run_json, n_classes)
    init_mode = init_mode_of(run_json)
    return Precheck(
        init_mode=init_mode,
        n_images=int(len(images)),
        passed=bool(res.passed),
        summary=res.memorisation.describe(),
        smallest_p=smallest_p(res),
        result=res,
    )


def init_mode_of(run_json: Mapping) -> str:
    init = run_json.get("init")
    mode = init.get("mode") if isinstance(init, Mapping) else None
    if mode is None and isinstance(run_json.get("config"), Mapping):
        mode = run_json["config"].get("init")
    return str(mode) if mode is not None else "unknown"


def check_run(
    run_dir: str | Path, *, data: str | None = None, loader: PrivateLoader | None = None
) -> Precheck:
    """Reads RUN/distilled.npz and RUN/run.json as ``release`` does, reloads the private splits
    (the fingerprint must match) and runs the memorisation check. Raises ``InputError`` (exit 2)
    for a missing or malformed run or data."""
    from rcig_release.release.inputs import (
        init_indices_of,
        json_object,
        load_npz,
        read_nofollow,
        validate_arrays,
    )

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"run directory not found: {run}")
    arrays = load_npz(
        read_nofollow(run / "distilled.npz", "RUN/distilled.npz"), "RUN/distilled.npz"
    )
    images, _labels, _classes = validate_arrays(arrays, "RUN/distilled.npz")
    run_json = json_object(read_nofollow(run / "run.json", "RUN/run.json"), "RUN/run.json")
    init = init_indices_of(arrays, run_json, len(images))
    splits = load_private_splits(run_json, data=data, loader=loader)
    return precheck_arrays(images, splits, init, run_json, len(_classes))


def require_releasable(pre: Precheck) -> None:
    """Raises ``WouldBeRefused`` (exit 3) naming the counts and the remedy."""
    if not pre.passed:
        raise WouldBeRefused(
            f"{pre.summary}; smallest p {_fmt_p(pre.smallest_p)}: release would refuse this set "
            f"(--override cannot pass it); remedy: {pre.remedy}"
        )
