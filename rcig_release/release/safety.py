"""The release safety check: the memorisation check (``memorisation.py``), recomputed at release
time from the run's data and the images about to be published, with the init set checked against
the one the run's configuration draws (``initset.py``).

It never reads ``audit.json``: editing the audit cannot change its outcome. It is separate from the
policy (it needs the private splits, which the policy evaluation never sees), and neither
``--override`` nor any policy key bypasses it. The exact-copy count (8-bit equality) and the
near-copy count (nearest training record closer than the 1st percentile of held-out images') are
reported as information. ``copies.allow_near_copies_in_bundle`` is recorded with the result and
switches nothing off (docs/release.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from rcig_release.errors import InputError
from rcig_release.release.memorisation import CheckConfig, MemorisationResult, memorisation_check

METRIC = "rms_pixel"


@dataclasses.dataclass(frozen=True)
class SafetyResult:
    memorisation: MemorisationResult
    allowed: (
        bool  # the policy's copies.allow_near_copies_in_bundle (recorded; switches nothing off)
    )

    metric = METRIC

    @property
    def n_images(self) -> int:
        return self.memorisation.n_images

    @property
    def exact_copies(
        self,
    ) -> int:  # released images equal (as 8-bit PNG pixels) to a training image
        return self.memorisation.exact_copies

    @property
    def within_threshold(self) -> int:  # near copies (information)
        return self.memorisation.near_copies

    @property
    def threshold(self) -> float:
        return self.memorisation.near_copy_threshold

    @property
    def flagged(self) -> int:
        return self.memorisation.flagged

    @property
    def clean(self) -> bool:
        return self.passed and self.exact_copies == 0 and self.within_threshold == 0

    @property
    def passed(self) -> bool:
        return self.memorisation.passed

    def describe(self) -> str:
        """One line for the card, the report and error messages (no training indices)."""
        return (
            f"{self.memorisation.describe()}; information: {self.exact_copies} exact copies, "
            f"{self.within_threshold} near copies (nearest training distance <= {self.threshold:.4f})"
        )

    def coverage(self) -> str:
        """What a pass covers and what it does not (one paragraph, from the configuration)."""
        return self.memorisation.coverage()

    def to_json(self) -> dict:
        """The bundle's copy: counts, p-values and distances only (no training indices)."""
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "n_images": self.n_images,
            "exact_copies": self.exact_copies,
            "within_threshold": self.within_threshold,
            "allowed_by_policy": self.allowed,
            "memorisation": self.memorisation.to_json(include_indices=False),
            "passed": self.passed,
        }


def nearest_distances(images: np.ndarray, private: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """RMS distance from each image to its nearest private image, float64 [N]."""
    a = np.asarray(images, np.float64).reshape(len(images), -1)
    a_sq = (a * a).sum(1)
    best = np.full(len(a), np.inf)
    for start in range(0, len(private), chunk):
        b = np.asarray(private[start : start + chunk], np.float64).reshape(-1, a.shape[1])
        d2 = a_sq[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        best = np.minimum(best, d2.min(1))
    return np.sqrt(np.maximum(best, 0.0)) / np.sqrt(a.shape[1])


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The 8-bit pixels a PNG of ``images`` holds (the same rounding as the bundle writer)."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_safety(
    images: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    init_indices: np.ndarray | None = None,
    *,
    train_labels: np.ndarray | None = None,
    allowed: bool = False,
    config: CheckConfig | None = None,
) -> SafetyResult:
    """The memorisation check of ``images`` (as published) against the run's splits
    (``train_labels``: needed when images have init records)."""
    return SafetyResult(
        memorisation=memorisation_check(
            images, train, heldout, init_indices, train_labels=train_labels, config=config
        ),
        allowed=allowed,
    )


PrivateLoader = Callable[
    [str, int], Any
]  # (source, split_seed) -> object with x_train, fingerprint


def default_loader(source: str, seed: int) -> Any:
    from rcig_release.data import load_dataset  # lazy: data sources may pull large modules

    return load_dataset(source, seed=seed)


@dataclasses.dataclass(frozen=True)
class PrivateSplits:
    x_train: np.ndarray  # float32 [N,H,W,C] in [0, 1]
    x_test: np.ndarray  # the held-out split, same layout
    # their labels (int64 [N]): the init test and the init set need them, and the classes of the
    # audit's game records (release/recompute.py); None when the loader gives none
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None


def load_private_splits(
    run_json: dict, *, data: str | None = None, loader: PrivateLoader | None = None
) -> PrivateSplits:
    """Reloads the run's private training and held-out splits; checks the fingerprint against run.json."""
    info = run_json.get("data")
    if not isinstance(info, dict) or not isinstance(info.get("fingerprint"), str):
        raise InputError(
            "run.json: data.fingerprint missing; cannot check the release against the private data"
        )
    source = data if data is not None else info.get("source")
    if not isinstance(source, str) or not source:
        raise InputError("run.json: data.source missing; pass --data")
    seed = info.get("split_seed")
    if seed is None:  # a source with its own fixed split (e.g. an npz with x_test) records none
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError("run.json: data.split_seed must be an integer or null")
    dataset = (loader or default_loader)(source, seed)
    if getattr(dataset, "fingerprint", None) != info["fingerprint"]:
        raise InputError(
            "the private data's fingerprint differs from run.json's: not the data this run was distilled from"
        )
    x_test = getattr(dataset, "x_test", None)
    if x_test is None or len(x_test) == 0:
        raise InputError("the run's data has no held-out split: the memorisation check needs one")
    y_train, y_test = getattr(dataset, "y_train", None), getattr(dataset, "y_test", None)
    return PrivateSplits(
        x_train=np.asarray(dataset.x_train, dtype=np.float32),
        x_test=np.asarray(x_test, dtype=np.float32),
        y_train=None if y_train is None else np.asarray(y_train, dtype=np.int64),
        y_test=None if y_test is None else np.asarray(y_test, dtype=np.int64),
    )


def load_private_train(
    run_json: dict, *, data: str | None = None, loader: PrivateLoader | None = None
) -> np.ndarray:
    """The run's private training split (``load_private_splits``)."""
    return load_private_splits(run_json, data=data, loader=loader).x_train
