"""The memorisation check: is a released image a copy of a private training record?

Pure functions of the images about to be published and the run's data (never of ``audit.json``);
``release`` runs it and refuses (even with ``--override``) when it does not pass. The maths, its
assumptions and its measured behaviour: docs/release.md, "The memorisation check".

Released images are taken *as published* (their 8-bit PNG values / 255, ``publish_pixels``).
Two families of tests share the family-wise error rate ``alpha`` (weighted Bonferroni):

* **Nearest-record tests** (every image; ``alpha_nearest = alpha`` without init records, else
  ``(1 - init_share) alpha``, split evenly over the images: level ``alpha_nearest / n``). Three
  statistics per image (``nearstats.py``): the gap ratio up to flips and shifts, the same in a
  PCA projection that discounts additive noise (lowpass), and the two-record blend statistic. Their
  null is measured on pseudo-releases that memorise nothing, through the same code: held-out
  images against the training split, then (when more are needed) training records against the
  training split with that record replaced by a held-out image (leave-one-out, so every pool has
  |T| records). Each statistic is ranked among the null values; an image's evidence is the sorted
  tuple of its ranks (the smallest first, compared lexicographically), and its p-value is its
  rank among the null pseudo-releases' tuples: ``p = (1 + #{null tuple <= image tuple}) / (N + 1)``
  (valid, slightly conservative: a null value's ranks are counted without the released image).
* **Init test** (release level, when images started from training records; ``alpha_init =
  init_share x alpha``): a conditional randomisation test of whether the released images depend
  on which records of each class were drawn as init (``inittest.py``).

The check passes when it can reach its levels (``resolvable``), no image's nearest-record
p-value is <= the level and the init test's p-value is > ``alpha_init``. Outputs hold distances,
statistics, p-values and counts; training indices only in ``to_json(include_indices=True)`` (the
run directory, never a bundle); never pixel values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from rcig_release.errors import InputError
from rcig_release.release import inittest, nearstats
from rcig_release.release.nearstats import STATISTICS, NearConfig

ALPHA = 0.05  # family-wise error rate of the check
INIT_SHARE = 0.2  # share of ALPHA spent on the init test when there is one
RESOLUTION = 5  # the null holds >= RESOLUTION / level pseudo-releases (when the data allow)
NEAR_COPY_PERCENTILE = 1.0  # information only: nearer to T than 99 % of held-out images are
NULL_QUANTILES = (0.0, 0.001, 0.01, 0.05, 0.5)
SEED = 0  # chooses the pseudo-releases, their companions and the init test's redraws
BLAS_THREADS = 1  # the check's many small matrix products: more threads were up to 500x slower
# on the shared 2-core VM (docs/benchmarks.md)


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    alpha: float = ALPHA
    init_share: float = INIT_SHARE
    resolution: int = RESOLUTION
    init_draws: int = inittest.DRAWS
    seed: int = SEED
    near: NearConfig = NearConfig()

    def validate(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 < self.init_share < 1.0:
            raise InputError(f"init_share must be in (0, 1), got {self.init_share}")
        if self.resolution < 1 or self.init_draws < 1:
            raise InputError("resolution and init_draws must be at least 1")
        self.near.validate()

    def alphas(self, has_init: bool) -> tuple[float, float | None]:
        """(alpha of the nearest-record family, alpha of the init test or None)."""
        if not has_init:
            return self.alpha, None
        return self.alpha * (1.0 - self.init_share), self.alpha * self.init_share


def publish_pixels(images: np.ndarray) -> np.ndarray:
    """float64 [N, ...]: the values an 8-bit PNG of ``images`` holds, divided by 255."""
    px = np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0)
    return px / 255.0


def null_size(level: float, n_heldout: int, n_train: int, resolution: int = RESOLUTION) -> int:
    """Pseudo-releases for a per-image ``level``: ``ceil(resolution / level)``, at most |H| + |T|."""
    return int(min(n_heldout + n_train, math.ceil(resolution / level)))


@dataclasses.dataclass(frozen=True)
class PseudoReleases:
    """The null's pseudo-releases in their fixed order (prefix-stable: a smaller null is a prefix):
    held-out images first (a seeded permutation), then training records (a seeded permutation),
    each with the held-out image that replaces it in its pool."""

    heldout: np.ndarray  # indices into H
    train: np.ndarray  # indices into T
    companions: np.ndarray  # for each training pseudo-release, an index into H

    @classmethod
    def order(cls, n_heldout: int, n_train: int, seed: int = SEED) -> PseudoReleases:
        rng = np.random.default_rng(seed)
        return cls(
            heldout=rng.permutation(n_heldout),
            train=rng.permutation(n_train),
            companions=rng.integers(0, n_heldout, size=n_train),
        )


@dataclasses.dataclass(frozen=True)
class NullStats:
    """The statistics of the first ``n`` pseudo-releases (held-out ones first)."""

    values: dict[str, np.ndarray]  # statistic -> [n] in pseudo-release order
    n_heldout: int
    n_train: int
    heldout_nearest: np.ndarray  # d1 of the held-out pseudo-releases

    @property
    def size(self) -> int:
        return self.n_heldout + self.n_train

    def prefix(self, n: int) -> NullStats:
        nh = min(n, self.n_heldout)
        return NullStats(
            values={k: v[:n] for k, v in self.values.items()},
            n_heldout=nh,
            n_train=min(n, self.size) - nh,
            heldout_nearest=self.heldout_nearest[:nh],
        )


def measure_null(
    ref: nearstats.Reference, train: np.ndarray, heldout: np.ndarray, n: int, seed: int = SEED
) -> NullStats:
    """The statistics of ``n`` pseudo-releases (published first, like the release)."""
    order = PseudoReleases.order(len(heldout), len(train), seed)
    nh = min(n, len(heldout))
    nt = min(n - nh, len(train))
    h = nearstats.query_stats(ref, publish_pixels(heldout[order.heldout[:nh]]))
    parts = [h]
    if nt > 0:
        pick = order.train[:nt]
        parts.append(
            nearstats.query_stats(ref, publish_pixels(train[pick]), pick, order.companions[:nt])
        )
    return NullStats(
        values={k: np.concatenate([p.stat(k) for p in parts]) for k in STATISTICS},
        n_heldout=nh,
        n_train=nt,
        heldout_nearest=h.d1,
    )


@dataclasses.dataclass(frozen=True)
class RankNull:
    """A null ready for ranking: each statistic sorted, and the sorted tuple keys of the null
    pseudo-releases (their own ranks, counted among the null)."""

    sorted_values: dict[str, np.ndarray]
    keys: np.ndarray  # sorted int64

    @property
    def size(self) -> int:
        return len(self.keys)

    @classmethod
    def build(cls, null: NullStats) -> RankNull:
        srt = {k: np.sort(v) for k, v in null.values.items()}
        counts = np.stack(
            [np.searchsorted(srt[k], null.values[k], side="right") for k in STATISTICS], 1
        )
        return cls(sorted_values=srt, keys=np.sort(_keys(counts, null.size)))

    def counts(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        """[Q, 3] ranks of query statistics: ``1 + #{null <= s}``."""
        return np.stack(
            [
                1 + np.searchsorted(self.sorted_values[k], stats[k], side="right")
                for k in STATISTICS
            ],
            1,
        )

    def pvalues(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        keys = _keys(self.counts(stats), self.size)
        return (1.0 + np.searchsorted(self.keys, keys, side="right")) / (self.size + 1.0)

    def flag_below(self, level: float) -> dict[str, float | None]:
        """Per statistic, the value below which it flags an image when the other two statistics
        rank at the null's median (their typical value for an image that copies nothing);
        None when no value of it can."""
        out: dict[str, float | None] = {}
        n = self.size
        mid = (n + 2) // 2
        best = None
        for c in range(1, mid + 1):  # ranks that flag form a prefix 1..best
            key = _keys(np.array([[c, mid, mid]]), n)[0]
            if (1.0 + np.searchsorted(self.keys, key, side="right")) / (n + 1.0) <= level:
                best = c
            else:
                break
        for k in STATISTICS:
            if best is None:
                out[k] = None
            else:  # rank 1 + #{null <= s} <= best  <=>  s < sorted[best - 1]
                out[k] = float(self.sorted_values[k][best - 1])
        return out


def _keys(counts: np.ndarray, n: int) -> np.ndarray:
    """Sorted-tuple keys of rank triples (counts <= n + 1), compared lexicographically."""
    c = np.sort(counts, axis=1).astype(np.int64)
    base = n + 2
    return (c[:, 0] * base + c[:, 1]) * base + c[:, 2]


def _opt(x, kind=float):
    return None if x is None else kind(x)


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """The check's figures for one released image (``index`` into the release)."""

    index: int
    nearest_record: int  # training index of the nearest record (run directory only; -1 unknown)
    nearest_transform: str  # how the image aligns to it (run directory only)
    d_nearest: float  # RMS distance to the nearest record up to the transforms
    d_second: float  # ... to the second nearest distinct record
    stats: dict[str, float]  # gap, lowpass, blend
    p_stats: dict[str, float]  # each statistic's own rank p-value (information)
    p_nearest: float  # the nearest-record tests' combined p-value (decides)
    d_flag_nearest: float | None  # d_nearest below this flags by the gap (others typical)
    init_record: int | None  # training index the image started from (run directory only)
    init_rank: int | None  # its rank by distance among the records of its class (1 = nearest)
    init_class_size: int | None
    level: float  # the nearest-record tests' per-image level
    init_flagged: bool  # the release-level init test rejected and this image carries it
    exact_copy: bool  # 8-bit equal to a training record (information)
    near_copy: bool  # d_nearest <= the near-copy threshold (information)

    @property
    def p_init(self) -> float | None:
        """``init_rank / class size`` (information; the init decision is release-level)."""
        if self.init_rank is None or not self.init_class_size:
            return None
        return self.init_rank / self.init_class_size

    @property
    def flagged_by(self) -> tuple[str, ...]:
        out = ["nearest"] if self.p_nearest <= self.level else []
        return tuple(out + (["init"] if self.init_flagged else []))

    @property
    def flagged(self) -> bool:
        return bool(self.flagged_by)

    def to_json(self, *, include_indices: bool = False) -> dict:
        out: dict[str, Any] = {
            "index": self.index,
            "d_nearest_train": self.d_nearest,
            "d_second_train": self.d_second,
            **{k: self.stats[k] for k in STATISTICS},
            **{f"p_{k}": self.p_stats[k] for k in STATISTICS},
            "p_nearest": self.p_nearest,
            "d_flag_nearest": self.d_flag_nearest,
            "init_rank": self.init_rank,
            "init_class_size": self.init_class_size,
            "p_init": self.p_init,
            "init_flagged": self.init_flagged,
            "flagged": self.flagged,
            "flagged_by": list(self.flagged_by),
            "exact_copy": self.exact_copy,
            "near_copy": self.near_copy,
        }
        if include_indices:
            out["nearest_train_index"] = self.nearest_record
            out["nearest_transform"] = self.nearest_transform
            out["init_train_index"] = self.init_record
        return out

    @classmethod
    def from_json(cls, d: dict, level: float) -> ImageCheck:
        """The bundle's copy back (training indices are not in it: -1 / None)."""
        return cls(
            index=int(d["index"]),
            nearest_record=-1,
            nearest_transform="",
            d_nearest=float(d["d_nearest_train"]),
            d_second=float(d["d_second_train"]),
            stats={k: float(d[k]) for k in STATISTICS},
            p_stats={k: float(d[f"p_{k}"]) for k in STATISTICS},
            p_nearest=float(d["p_nearest"]),
            d_flag_nearest=_opt(d["d_flag_nearest"]),
            init_record=None,
            init_rank=_opt(d["init_rank"], int),
            init_class_size=_opt(d["init_class_size"], int),
            level=level,
            init_flagged=bool(d["init_flagged"]),
            exact_copy=bool(d["exact_copy"]),
            near_copy=bool(d["near_copy"]),
        )


@dataclasses.dataclass(frozen=True)
class InitSummary:
    """The release-level init test as recorded."""

    p: float
    alpha: float
    fisher: float
    tippett: float
    reference: int  # init sets in the reference (the observed one included)
    exact: bool  # every possible init set (else Monte Carlo redraws)
    images: int  # images with an init record

    @property
    def rejected(self) -> bool:
        return self.p <= self.alpha

    @property
    def resolvable(self) -> bool:
        return 1.0 / self.reference <= self.alpha

    def to_json(self) -> dict:
        return {
            "method": "conditional randomisation test: init sets redrawn within each class as "
            "the pipeline draws them, the released images held fixed; statistics Fisher's "
            "sum of log(rank / class size) and the minimum rank / class size, combined by "
            "their ranks in the reference",
            "p": self.p,
            "alpha": self.alpha,
            "fisher": self.fisher,
            "tippett": self.tippett,
            "reference": self.reference,
            "exact": self.exact,
            "images": self.images,
            "rejected": self.rejected,
        }

    @classmethod
    def from_json(cls, d: dict) -> InitSummary:
        return cls(
            p=float(d["p"]),
            alpha=float(d["alpha"]),
            fisher=float(d["fisher"]),
            tippett=float(d["tippett"]),
            reference=int(d["reference"]),
            exact=bool(d["exact"]),
            images=int(d["images"]),
        )


@dataclasses.dataclass(frozen=True)
class MemorisationResult:
    alpha: float  # family-wise
    alpha_nearest: float  # the nearest-record tests' share
    level: float  # alpha_nearest / n_images: an image is flagged when p_nearest <= level
    n_train: int
    n_heldout: int
    null_heldout: int  # pseudo-releases that are held-out images
    null_train: int  # ... that are training records with leave-one-out pools
    null_quantiles: dict[str, dict[float, float]]  # statistic -> quantile -> value
    flag_below: dict[str, float | None]  # statistic -> below this it flags (others typical)
    init: InitSummary | None
    near_copy_threshold: float
    config: dict  # the NearConfig and the regime, for the coverage statement
    images: tuple[ImageCheck, ...]

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_tests(self) -> int:
        """Tests in the family: one nearest-record test per image, and the init test."""
        return self.n_images + (1 if self.init is not None else 0)

    @property
    def has_init(self) -> bool:
        return self.init is not None

    @property
    def alpha_init(self) -> float | None:
        return None if self.init is None else self.init.alpha

    def levels_consistent(self) -> bool:
        """The recorded levels follow from alpha (what ``verify`` checks)."""
        a_init = 0.0 if self.init is None else self.init.alpha
        return (
            abs(self.alpha_nearest + a_init - self.alpha) <= 1e-12
            and abs(self.level - self.alpha_nearest / max(1, self.n_images)) <= 1e-12
        )

    @property
    def resolvable(self) -> bool:
        """Whether every test can reach its level at all (else the check cannot flag)."""
        ok = 1.0 / (self.null_heldout + self.null_train + 1) <= self.level
        return ok and (self.init is None or self.init.resolvable)

    @property
    def init_rejected(self) -> bool:
        return self.init is not None and self.init.rejected

    @property
    def flagged(self) -> int:
        return sum(im.flagged for im in self.images)

    def flagged_by(self, test: str) -> int:
        return sum(test in im.flagged_by for im in self.images)

    @property
    def exact_copies(self) -> int:
        return sum(im.exact_copy for im in self.images)

    @property
    def near_copies(self) -> int:
        return sum(im.near_copy for im in self.images)

    @property
    def passed(self) -> bool:
        return self.resolvable and self.flagged_by("nearest") == 0 and not self.init_rejected

    def describe(self) -> str:
        """One line: the outcome, by test, and the levels."""
        n = self.n_images
        if not self.resolvable:
            return (
                f"memorisation check cannot reach its level alpha/m = {self.alpha_nearest:.3g}/{n} "
                f"with {self.n_heldout} held-out and {self.n_train} training images"
                + (
                    f" (init test: {self.init.reference} reference init sets)"
                    if self.init is not None
                    else ""
                )
            )
        init = ""
        if self.init is not None:
            init = (
                f"; init test p = {self.init.p:.3g} "
                f"({'<=' if self.init.rejected else '>'} {self.init.alpha:.3g}: the images "
                f"{'depend' if self.init.rejected else 'show no dependence'} on which records "
                "were drawn as init)"
            )
        return (
            f"memorisation check: {self.flagged} of {n} released image(s) flagged "
            f"(nearest-record tests {self.flagged_by('nearest')} at level "
            f"{self.alpha_nearest:.3g}/{n} = {self.level:.3g}{init})"
        )

    def coverage(self) -> str:
        """What the check covers and what it does not: one paragraph a reviewer can check,
        generated from this check's configuration, null and levels."""
        cfg = self.config
        s = int(cfg["max_shift"])
        moves = ["a training record"]
        if cfg["flips"]:
            moves.append("its horizontal flip")
        if s > 0:
            moves.append(f"its shifts by up to {s} pixel{'s' if s > 1 else ''} in each direction")

        def thr(k: str) -> str:
            v = self.flag_below.get(k)
            return "cannot flag alone with this null" if v is None else f"flags below {v:.3g}"

        init = (
            (
                "; and when the released images depend on which training records of each class "
                "were drawn as their init images (within-class randomisation test at level "
                f"{self.init.alpha:.3g}; this release: p = {self.init.p:.3g})"
            )
            if self.init is not None
            else "; no init test (no image started from a training record)"
        )
        return (
            f"What the memorisation check covers: at family-wise level {self.alpha:g} it refuses a "
            "release when a published image is closer than images that memorise nothing are to "
            f"{', '.join(moves[:-1]) + ' or ' + moves[-1] if len(moves) > 1 else moves[0]} (RMS "
            f"pixel distance over the overlap, relative to the second-nearest record: {thr('gap')}); "
            f"to a record in a {cfg['pca_dims_used']}-dimensional PCA projection, which discounts "
            f"added pixel noise, brightness and contrast ({thr('lowpass')}); or to a blend "
            f"a*t_i + b*t_j of two records in the same alignment (residual ratio: {thr('blend')}); "
            f"each statistic judged against {self.null_heldout + self.null_train} pseudo-releases "
            f"that memorise nothing, over all {self.n_train} training records "
            f"({cfg['regime']}; a threshold holds when the other two statistics are typical)"
            f"{init}. Not covered: blends of three or more records, other transforms (rotations, "
            "scaling, larger shifts or crops, colour changes beyond brightness and contrast), "
            "copies of part of a record, copies under noise or blending strong enough that they "
            "are no closer to their record than natural images are to theirs (measured rates: "
            "docs/benchmarks.md), records outside the run's training split, and membership "
            "inference (the audit's game)."
        )

    def to_json(self, *, include_indices: bool = False) -> dict:
        return {
            "method": "rank tests against measured nulls (nearest-record family) and a "
            "within-class randomisation test (init), weighted Bonferroni (docs/release.md)",
            "distance": "RMS pixel difference in [0, 1], released images as their 8-bit PNG values",
            "alpha": self.alpha,
            "alpha_nearest": self.alpha_nearest,
            "n_tests": self.n_tests,
            "level": self.level,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "nearest_null": {
                "statistics": list(STATISTICS),
                "pseudo_releases_heldout": self.null_heldout,
                "pseudo_releases_train_leave_one_out": self.null_train,
                "quantiles": {
                    k: {str(q): v for q, v in qs.items()} for k, qs in self.null_quantiles.items()
                },
                "flag_below": dict(self.flag_below),
            },
            "init_test": None if self.init is None else self.init.to_json(),
            "config": dict(self.config),
            "resolvable": self.resolvable,
            "flagged": self.flagged,
            "flagged_nearest": self.flagged_by("nearest"),
            "flagged_init": self.flagged_by("init"),
            "exact_copies": self.exact_copies,
            "near_copies": self.near_copies,
            "near_copy_threshold": self.near_copy_threshold,
            "near_copy_rule": f"nearest training distance <= percentile {NEAR_COPY_PERCENTILE:g} of the "
            "held-out pseudo-releases' nearest training distances (information only)",
            "passed": self.passed,
            "coverage": self.coverage(),
            "images": [im.to_json(include_indices=include_indices) for im in self.images],
        }

    @classmethod
    def from_json(cls, d: dict) -> MemorisationResult:
        """The bundle's copy back, so ``verify`` can rebuild the card and re-derive the outcome
        from the recorded p-values (it cannot recompute them: that needs the private data)."""
        level = float(d["level"])
        null = d["nearest_null"]
        init = None if d["init_test"] is None else InitSummary.from_json(d["init_test"])
        return cls(
            alpha=float(d["alpha"]),
            alpha_nearest=float(d["alpha_nearest"]),
            level=level,
            n_train=int(d["n_train"]),
            n_heldout=int(d["n_heldout"]),
            null_heldout=int(null["pseudo_releases_heldout"]),
            null_train=int(null["pseudo_releases_train_leave_one_out"]),
            null_quantiles={
                k: {float(q): float(v) for q, v in qs.items()}
                for k, qs in null["quantiles"].items()
            },
            flag_below={k: _opt(v) for k, v in null["flag_below"].items()},
            init=init,
            near_copy_threshold=float(d["near_copy_threshold"]),
            config=dict(d["config"]),
            images=tuple(ImageCheck.from_json(im, level) for im in d["images"]),
        )


def eight_bit_rows(train: np.ndarray) -> frozenset[bytes]:
    """The training records as 8-bit pixel rows (for the exact-copy count)."""
    px = np.round(np.clip(np.asarray(train).reshape(len(train), -1), 0.0, 1.0) * 255.0)
    return frozenset(row.tobytes() for row in px.astype(np.uint8))


def _exact_copy_flags(released_pub: np.ndarray, seen: frozenset[bytes]) -> np.ndarray:
    px = np.round(released_pub.reshape(len(released_pub), -1) * 255.0).astype(np.uint8)
    return np.array([row.tobytes() in seen for row in px], bool)


def _check_inputs(
    released: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    init_indices: np.ndarray | None,
    train_labels: np.ndarray | None,
) -> np.ndarray:
    shape = tuple(released.shape[1:])
    if released.ndim != 4 or len(released) == 0:
        raise InputError(f"released images must be [N,H,W,C] with N > 0, got {released.shape}")
    for name, x in (("training", train), ("held-out", heldout)):
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise InputError(
                f"private {name} images have shape {tuple(x.shape[1:])}, released images "
                f"{shape}: not the data this run was distilled from"
            )
    if len(train) < 3 or len(heldout) < 1:
        raise InputError(
            f"the memorisation check needs at least 3 training and 1 held-out image, "
            f"the run's data has {len(train)} and {len(heldout)}"
        )
    n = len(released)
    init = (
        np.full(n, -1, np.int64)
        if init_indices is None
        else np.asarray(init_indices).astype(np.int64)
    )
    if init.shape != (n,):
        raise InputError(
            f"init_indices must hold one entry per released image ({n}), got shape {init.shape}"
        )
    if (init >= len(train)).any() or (init < -1).any():
        raise InputError(f"init_indices out of range of the training split ({len(train)} images)")
    used = init[init >= 0]
    if len(np.unique(used)) != len(used):
        raise InputError("init_indices name a training record twice: not an init set")
    if len(used) and (train_labels is None or np.shape(train_labels) != (len(train),)):
        raise InputError("the init test needs the training split's labels (one per record)")
    return init


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The check's reference (training pool) and null, reusable across releases of one run's data
    (benchmarks); the null is measured for the largest size asked for."""

    ref: nearstats.Reference
    null: NullStats
    config: CheckConfig
    n_train: int
    n_heldout: int
    train_rows: frozenset[bytes] = frozenset()  # 8-bit training rows (exact-copy count)


def prepare(
    train: np.ndarray,
    heldout: np.ndarray,
    level: float,
    config: CheckConfig | None = None,
) -> Prepared:
    """The reference and the null for a per-image ``level`` (the null is prefix-stable, so a
    ``Prepared`` serves every level at least this large)."""
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        return _prepare(train, heldout, level, config)


def _prepare(
    train: np.ndarray, heldout: np.ndarray, level: float, config: CheckConfig | None
) -> Prepared:
    config = config or CheckConfig()
    config.validate()
    train, heldout = np.asarray(train), np.asarray(heldout)
    ref = nearstats.prepare(train, heldout, config.near)
    n = null_size(level, len(heldout), len(train), config.resolution)
    return Prepared(
        ref=ref,
        null=measure_null(ref, train, heldout, n, config.seed),
        config=config,
        n_train=len(train),
        n_heldout=len(heldout),
        train_rows=eight_bit_rows(train),
    )


def run_check(
    prep: Prepared,
    released: np.ndarray,
    train: np.ndarray,
    init_indices: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> MemorisationResult:
    """The check of ``released`` against a prepared reference and null (``prepare``)."""
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        return _run_check(prep, released, train, init_indices, train_labels)


def _run_check(
    prep: Prepared,
    released: np.ndarray,
    train: np.ndarray,
    init_indices: np.ndarray | None,
    train_labels: np.ndarray | None,
) -> MemorisationResult:
    cfg = prep.config
    released = np.asarray(released)
    init = _check_inputs(
        released, np.asarray(train), np.zeros((1, *released.shape[1:])), init_indices, train_labels
    )
    n = len(released)
    has_init = bool((init >= 0).any())
    a_near, a_init = cfg.alphas(has_init)
    level = a_near / n
    want = null_size(level, prep.n_heldout, prep.n_train, cfg.resolution)
    if want > prep.null.size and prep.null.size < prep.n_heldout + prep.n_train:
        raise ValueError(f"the prepared null holds {prep.null.size} pseudo-releases, {want} needed")
    null = prep.null.prefix(want)
    ranked = RankNull.build(null)
    pub = publish_pixels(released)
    st = nearstats.query_stats(prep.ref, pub)
    stats = {k: st.stat(k) for k in STATISTICS}
    p_near = ranked.pvalues(stats)
    counts = ranked.counts(stats)
    p_each = counts / (ranked.size + 1.0)
    flag_below = ranked.flag_below(level)
    gap_flag = flag_below["gap"]
    near_thr = (
        float(np.percentile(null.heldout_nearest, NEAR_COPY_PERCENTILE))
        if len(null.heldout_nearest)
        else 0.0
    )
    exact = _exact_copy_flags(pub, prep.train_rows or eight_bit_rows(train))
    it = None
    summary = None
    if has_init:
        assert a_init is not None and train_labels is not None
        it = inittest.init_test(
            pub.reshape(n, -1),
            np.asarray(train).reshape(len(train), -1),
            np.asarray(train_labels),
            init,
            draws=cfg.init_draws,
            seed=cfg.seed,
        )
        assert it is not None
        summary = InitSummary(
            p=it.p,
            alpha=a_init,
            fisher=it.fisher,
            tippett=it.tippett,
            reference=it.reference,
            exact=it.exact,
            images=int(it.tested.sum()),
        )
    carriers = _init_carriers(it, summary)
    images = []
    for i in range(n):
        tested = it is not None and bool(it.tested[i])
        images.append(
            ImageCheck(
                index=i,
                nearest_record=int(st.nearest[i]),
                nearest_transform=prep.ref.describe_variant(int(st.transform[i])),
                d_nearest=float(st.d1[i]),
                d_second=float(st.d2[i]),
                stats={k: float(stats[k][i]) for k in STATISTICS},
                p_stats={k: float(p_each[i, j]) for j, k in enumerate(STATISTICS)},
                p_nearest=float(p_near[i]),
                d_flag_nearest=None if gap_flag is None else float(gap_flag * st.d2[i]),
                init_record=int(init[i]) if init[i] >= 0 else None,
                init_rank=int(it.ranks[i]) if tested and it is not None else None,
                init_class_size=int(it.class_sizes[i]) if tested and it is not None else None,
                level=level,
                init_flagged=i in carriers,
                exact_copy=bool(exact[i]),
                near_copy=bool(st.d1[i] <= near_thr),
            )
        )
    rc = prep.ref
    return MemorisationResult(
        alpha=cfg.alpha,
        alpha_nearest=a_near,
        level=level,
        n_train=prep.n_train,
        n_heldout=prep.n_heldout,
        null_heldout=null.n_heldout,
        null_train=null.n_train,
        null_quantiles={
            k: {q: float(np.quantile(null.values[k], q)) for q in NULL_QUANTILES}
            for k in STATISTICS
        },
        flag_below=flag_below,
        init=summary,
        near_copy_threshold=near_thr,
        config={
            **cfg.near.to_json(),
            "pca_dims_used": int(rc.basis.shape[0]),
            "transforms": len(rc.variants),
            "regime": "every record under every transform"
            if rc.exhaustive
            else "records chosen by Fourier-magnitude and PCA prefilters",
            "resolution": cfg.resolution,
            "init_share": cfg.init_share,
            "init_draws": cfg.init_draws,
            "seed": cfg.seed,
        },
        images=tuple(images),
    )


def _init_carriers(it: inittest.InitTest | None, summary: InitSummary | None) -> set[int]:
    """When the init test rejects: the images whose own ``rank / class size`` is <= alpha_init
    (at least the smallest one), reported as carrying the evidence."""
    if it is None or summary is None or not summary.rejected:
        return set()
    u = it.p_image
    idx = np.flatnonzero(it.tested & (u <= summary.alpha))
    if not len(idx):
        idx = np.array([int(np.nanargmin(u))])
    return {int(i) for i in idx}


def memorisation_check(
    released: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    init_indices: np.ndarray | None = None,
    *,
    train_labels: np.ndarray | None = None,
    config: CheckConfig | None = None,
) -> MemorisationResult:
    """Runs both test families on every released image (module docstring).

    Args:
      released: float [N,H,W,C] in [0, 1], the images about to be published.
      train: the private training split, same image shape.
      heldout: the run's held-out split, same image shape.
      init_indices: int [N], the training record each image started from, -1 for none.
      train_labels: int [|T|], the training split's labels (needed with init records).
      config: levels, null size, transforms (``CheckConfig``; defaults are the release's).
    """
    config = config or CheckConfig()
    config.validate()
    released, train, heldout = np.asarray(released), np.asarray(train), np.asarray(heldout)
    init = _check_inputs(released, train, heldout, init_indices, train_labels)
    a_near, _ = config.alphas(bool((init >= 0).any()))
    prep = prepare(train, heldout, a_near / len(released), config)
    return run_check(prep, released, train, init, train_labels)
