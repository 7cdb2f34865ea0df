"""The release safety check: no released image equals, or is within the audit's copy-check
threshold of, a private training image.

This is separate from the policy (it needs the private training images, which the policy
evaluation never sees) and ``--override`` does not bypass it; only a policy that sets
``copies.allow_near_copies_in_bundle = true`` lets such a bundle be written.

Distance: ``rms_pixel`` (the default, and what the audit's ``copy_check.threshold`` is expected to
be measured in; docs/release.md) is ``sqrt(mean((a - b)**2))`` over all H*W*C values in pixel space
[0, 1]. ``l2_pixel`` is the plain Euclidean norm of the same difference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from rcig_release.errors import InputError

METRICS = ("rms_pixel", "l2_pixel")


@dataclasses.dataclass(frozen=True)
class SafetyResult:
    metric: str
    threshold: float
    n_images: int
    exact_copies: int  # released images equal (as 8-bit PNG pixels) to a private training image
    within_threshold: int  # released images whose nearest private image is <= threshold away
    allowed: bool  # the policy allows near copies into the bundle

    @property
    def clean(self) -> bool:
        return self.exact_copies == 0 and self.within_threshold == 0

    @property
    def passed(self) -> bool:
        return self.clean or self.allowed

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "n_images": self.n_images,
            "exact_copies": self.exact_copies,
            "within_threshold": self.within_threshold,
            "allowed_by_policy": self.allowed,
            "passed": self.passed,
        }


def nearest_distances(images: np.ndarray, private: np.ndarray, *, metric: str = "rms_pixel",
                      chunk: int = 4096) -> np.ndarray:
    """Distance from each image to its nearest private image, float64 [N]."""
    if metric not in METRICS:
        raise InputError(f"unknown copy-check metric {metric!r} (known: {', '.join(METRICS)})")
    a = np.asarray(images, np.float64).reshape(len(images), -1)
    a_sq = (a * a).sum(1)
    best = np.full(len(a), np.inf)
    for start in range(0, len(private), chunk):
        b = np.asarray(private[start:start + chunk], np.float64).reshape(-1, a.shape[1])
        d2 = a_sq[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        best = np.minimum(best, d2.min(1))
    d = np.sqrt(np.maximum(best, 0.0))
    return d / np.sqrt(a.shape[1]) if metric == "rms_pixel" else d


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The 8-bit pixels a PNG of ``images`` holds (the same rounding as the bundle writer)."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def exact_copies(images: np.ndarray, private: np.ndarray) -> int:
    """How many images are, as 8-bit pixels, identical to some private image."""
    seen = {p.tobytes() for p in to_uint8(private)}
    return sum(img.tobytes() in seen for img in to_uint8(images))


def check_safety(images: np.ndarray, private: np.ndarray, *, threshold: float,
                 metric: str = "rms_pixel", allowed: bool = False) -> SafetyResult:
    """Counts exact and near copies of private images among ``images``; shapes must agree."""
    if private.ndim != 4 or private.shape[1:] != images.shape[1:]:
        raise InputError(
            f"private training images have shape {tuple(private.shape[1:])}, released images "
            f"{tuple(images.shape[1:])}: not the data this run was distilled from"
        )
    d = nearest_distances(images, private, metric=metric)
    return SafetyResult(
        metric=metric,
        threshold=float(threshold),
        n_images=int(len(images)),
        exact_copies=exact_copies(images, private),
        within_threshold=int((d <= threshold).sum()),
        allowed=allowed,
    )


PrivateLoader = Callable[[str, int], Any]  # (source, split_seed) -> object with x_train, fingerprint


def default_loader(source: str, seed: int) -> Any:
    from rcig_release.data import load_dataset  # lazy: data sources may pull large modules

    return load_dataset(source, seed=seed)


def load_private_train(run_json: dict, *, data: str | None = None,
                       loader: PrivateLoader | None = None) -> np.ndarray:
    """Reloads the run's private training split and checks its fingerprint against run.json."""
    info = run_json.get("data")
    if not isinstance(info, dict) or not isinstance(info.get("fingerprint"), str):
        raise InputError("run.json: data.fingerprint missing; cannot check the release against the private data")
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
        raise InputError("the private data's fingerprint differs from run.json's: not the data this run was distilled from")
    return np.asarray(dataset.x_train, dtype=np.float32)
