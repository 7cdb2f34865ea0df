"""The memorisation check: does a released image memorise a private training record?

Pure functions of the images about to be published and the run's data (never of ``audit.json``);
``release`` runs it and refuses (even with ``--override``) when any image is flagged. The maths,
its assumptions and its measured behaviour: docs/release.md, "The memorisation check".

Distance: RMS pixel difference in [0, 1] (``sqrt(mean((a - b)**2))`` over H*W*C) between a released
image *as published* (its 8-bit PNG values / 255) and a record as stored in the data set.

Two tests, each an exact rank test against a *measured* null distribution:

* **nearest-record test** (every image). The statistic is the gap ratio
  ``g(r) = d1(r, T) / d2(r, T)``: distance to the nearest training record over distance to the
  second nearest (0 when ``d1 = 0``). Its null distribution is measured on pseudo-releases that
  memorise nothing: every held-out image ``h`` (published the same way) against ``T``, plus, when
  the held-out split alone cannot resolve the test's level, training records ``t`` against
  ``T \\ {t}`` completed with one random held-out image (so every pool holds exactly ``|T|``
  independent records). ``p = (1 + #{null <= g(r)}) / (n_null + 1)``.
* **init test** (images that started from a training record ``x_i``, ``init_indices[i] >= 0``).
  ``p = (1 + #{y : d(r_i, y) <= d(r_i, x_i)}) / (n_ref + 1)`` over the reference records ``y``: every
  held-out image and every other training record (``n_ref = |H| + |T| - 1``).

An image is flagged when the smaller of its p-values is <= ``alpha / m`` (Bonferroni over the
``m`` tests run on all released images). Outputs hold distances, p-values and counts; training
indices only in ``to_json(include_indices=True)`` (for the run directory, never a bundle); never
pixel values.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rcig_release.errors import InputError

ALPHA = 0.05  # family-wise error rate of the check over all released images
NEAR_COPY_PERCENTILE = 1.0  # information only: nearer to T than 99 % of held-out images are
RESOLUTION_FACTOR = 10  # the null is made big enough that its smallest p is <= level / 10
NULL_QUANTILES = (0.0, 0.001, 0.01, 0.05, 0.5)
SEED = 0  # which training records serve as extra pseudo-releases (and their pool completions)
_CHUNK = 256


def publish_pixels(images: np.ndarray) -> np.ndarray:
    """float64 [N, D]: the values an 8-bit PNG of ``images`` holds, divided by 255."""
    px = np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0)
    return px.reshape(len(px), -1) / 255.0


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1)


def rms_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """[len(a), len(b)] RMS distances between the rows of two float64 [., D] arrays
    (``b_sq``: the rows' squared norms of ``b``, when already known)."""
    if b_sq is None:
        b_sq = np.einsum("ij,ij->i", b, b)
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0) / a.shape[1])


def nearest_two(
    queries: np.ndarray, pool: np.ndarray, *, exclude: np.ndarray | None = None, chunk: int = _CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest ``pool`` distance of every query, and the nearest's index.

    ``exclude[q]`` (optional) is a pool index query ``q`` may not match (leave-one-out)."""
    d1 = np.empty(len(queries))
    d2 = np.empty(len(queries))
    i1 = np.empty(len(queries), np.int64)
    pool_sq = np.einsum("ij,ij->i", pool, pool)
    for s in range(0, len(queries), chunk):
        d = rms_distances(queries[s : s + chunk], pool, pool_sq)
        if exclude is not None:
            d[np.arange(len(d)), exclude[s : s + chunk]] = np.inf
        two = np.argpartition(d, 1, axis=1)[:, :2]
        dd = np.take_along_axis(d, two, axis=1)
        order = np.argsort(dd, axis=1, kind="stable")
        d1[s : s + chunk] = np.take_along_axis(dd, order[:, :1], axis=1)[:, 0]
        d2[s : s + chunk] = np.take_along_axis(dd, order[:, 1:], axis=1)[:, 0]
        i1[s : s + chunk] = np.take_along_axis(two, order[:, :1], axis=1)[:, 0]
    return d1, d2, i1


def gap_ratio(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """``d1 / d2``, and 0 where ``d1 == 0`` (an exact match is the most extreme value)."""
    d1, d2 = np.asarray(d1, np.float64), np.asarray(d2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d1 <= 0.0, 0.0, d1 / np.where(d2 > 0.0, d2, 1.0))


def rank_pvalues(stat: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Exact rank p-values ``(1 + #{null <= s}) / (len(null) + 1)`` (small s is extreme)."""
    srt = np.sort(np.asarray(null, np.float64))
    return (1.0 + np.searchsorted(srt, np.asarray(stat, np.float64), side="right")) / (
        len(srt) + 1.0
    )


def max_count(level: float, n_null: int) -> int:
    """The largest count ``c = #{null <= s}`` with ``(1 + c) / (n_null + 1) <= level`` (-1: none)."""
    return int(math.floor(level * (n_null + 1) - 1.0 + 1e-9))


def flag_threshold(null_sorted: np.ndarray, level: float) -> float | None:
    """The value v with ``p(s) <= level  <=>  s < v`` for a rank test against ``null_sorted``;
    ``None`` when no statistic can reach ``level`` (the test cannot resolve it)."""
    c = max_count(level, len(null_sorted))
    if c < 0:
        return None
    return float(null_sorted[c]) if c < len(null_sorted) else math.inf


def n_extra_pseudo_releases(
    n_tests: int, n_heldout: int, n_train: int, alpha: float = ALPHA
) -> int:
    """How many training records to add to the held-out pseudo-releases so that the smallest
    attainable p-value is at most ``level / RESOLUTION_FACTOR`` (capped at ``n_train``)."""
    need = math.ceil(RESOLUTION_FACTOR * n_tests / alpha) - 1
    return int(min(n_train, max(0, need - n_heldout)))


@dataclasses.dataclass(frozen=True)
class GapNull:
    values: np.ndarray  # g of every pseudo-release, sorted
    n_heldout: int  # pseudo-releases that are held-out images
    n_train: int  # pseudo-releases that are training records (leave-one-out pools)
    heldout_nearest: np.ndarray  # d1(h, T) of the held-out pseudo-releases


def gap_null(train: np.ndarray, heldout: np.ndarray, n_extra: int, *, seed: int = SEED) -> GapNull:
    """The measured null distribution of the gap ratio (module docstring). ``train`` and
    ``heldout`` are float64 [., D] records as stored; pseudo-releases are published first."""
    d1, d2, _ = nearest_two(publish_pixels(heldout), train)
    values = [gap_ratio(d1, d2)]
    if n_extra > 0:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(train), size=n_extra, replace=False))
        companion = heldout[rng.integers(0, len(heldout), size=n_extra)]
        q = publish_pixels(train[pick])
        e1, e2, _ = nearest_two(q, train, exclude=pick)
        dc = np.sqrt(((q - companion) ** 2).mean(1))  # the record that completes the pool to |T|
        first = np.minimum(e1, dc)
        second = np.where(dc < e1, e1, np.minimum(e2, dc))
        values.append(gap_ratio(first, second))
    return GapNull(
        values=np.sort(np.concatenate(values)),
        n_heldout=len(heldout),
        n_train=n_extra,
        heldout_nearest=d1,
    )


def _opt(x, kind=float):
    return None if x is None else kind(x)


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """The check's figures for one released image (``index`` into the release)."""

    index: int
    nearest_record: int  # training index of the nearest record (run directory only)
    d_nearest: float
    d_second: float
    gap: float
    p_nearest: float
    d_flag_nearest: float | None  # d_nearest below this (gap threshold x d_second) would flag
    init_record: int | None  # training index the image started from (run directory only)
    d_init: float | None
    p_init: float | None
    d_flag_init: float | None  # d_init below this would flag
    init_closer_heldout: int | None  # held-out images at least as close as the init record
    init_closer_train: int | None  # other training records at least as close
    level: float
    exact_copy: bool  # 8-bit equal to a training record
    near_copy: bool  # d_nearest <= the near-copy threshold (information)

    @property
    def p(self) -> float:
        return min(x for x in (self.p_nearest, self.p_init) if x is not None)

    @property
    def flagged_by(self) -> tuple[str, ...]:
        tests = [("nearest", self.p_nearest), ("init", self.p_init)]
        return tuple(name for name, p in tests if p is not None and p <= self.level)

    @property
    def flagged(self) -> bool:
        return bool(self.flagged_by)

    def to_json(self, *, include_indices: bool = False) -> dict:
        out = {
            "index": self.index,
            "d_nearest_train": self.d_nearest,
            "d_second_train": self.d_second,
            "gap": self.gap,
            "p_nearest": self.p_nearest,
            "d_flag_nearest": self.d_flag_nearest,
            "d_init": self.d_init,
            "p_init": self.p_init,
            "d_flag_init": self.d_flag_init,
            "init_closer_heldout": self.init_closer_heldout,
            "init_closer_train": self.init_closer_train,
            "p": self.p,
            "flagged": self.flagged,
            "flagged_by": list(self.flagged_by),
            "exact_copy": self.exact_copy,
            "near_copy": self.near_copy,
        }
        if include_indices:
            out["nearest_train_index"] = self.nearest_record
            out["init_train_index"] = self.init_record
        return out

    @classmethod
    def from_json(cls, d: dict, level: float) -> ImageCheck:
        """The bundle's copy back (training indices are not in it: -1 / None)."""
        return cls(
            index=int(d["index"]),
            nearest_record=-1,
            d_nearest=float(d["d_nearest_train"]),
            d_second=float(d["d_second_train"]),
            gap=float(d["gap"]),
            p_nearest=float(d["p_nearest"]),
            d_flag_nearest=_opt(d["d_flag_nearest"]),
            init_record=None,
            d_init=_opt(d["d_init"]),
            p_init=_opt(d["p_init"]),
            d_flag_init=_opt(d["d_flag_init"]),
            init_closer_heldout=_opt(d["init_closer_heldout"], int),
            init_closer_train=_opt(d["init_closer_train"], int),
            level=level,
            exact_copy=bool(d["exact_copy"]),
            near_copy=bool(d["near_copy"]),
        )


@dataclasses.dataclass(frozen=True)
class MemorisationResult:
    alpha: float
    n_tests: int
    level: float  # alpha / n_tests: an image is flagged when a p-value is <= level
    n_train: int
    n_heldout: int
    null_heldout: int  # pseudo-releases of the nearest-record null that are held-out images
    null_train: int  # ... that are training records with leave-one-out pools
    null_quantiles: dict  # quantile -> gap ratio
    gap_flag: float | None  # a gap below this flags (None: the test cannot reach the level)
    init_reference: int  # records an init distance is ranked among (|H| + |T| - 1)
    near_copy_threshold: float  # NEAR_COPY_PERCENTILE of held-out images' nearest-training distance
    images: tuple[ImageCheck, ...]

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def has_init(self) -> bool:
        return any(im.p_init is not None for im in self.images)

    @property
    def resolvable(self) -> bool:
        """Whether every test run can reach the level at all (else the check cannot flag)."""
        ok = 1.0 / (self.null_heldout + self.null_train + 1) <= self.level
        if self.has_init:
            ok = ok and 1.0 / (self.init_reference + 1) <= self.level
        return ok

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
        return self.resolvable and self.flagged == 0

    def describe(self) -> str:
        """One line: the outcome, by test, and the level."""
        tests = "nearest-record test" + (" and init test" if self.has_init else "")
        if not self.resolvable:
            return (
                f"memorisation check cannot reach its level alpha/m = {self.alpha:g}/{self.n_tests} "
                f"with {self.n_heldout} held-out and {self.n_train} training images ({tests})"
            )
        return (
            f"memorisation check: {self.flagged} of {self.n_images} released image(s) flagged "
            f"(nearest-record test {self.flagged_by('nearest')}"
            + (f", init test {self.flagged_by('init')}" if self.has_init else "")
            + f"; Bonferroni level alpha/m = {self.alpha:g}/{self.n_tests} = {self.level:.3g})"
        )

    def to_json(self, *, include_indices: bool = False) -> dict:
        return {
            "method": "rank tests against measured nulls, Bonferroni over all tests (docs/release.md)",
            "distance": "RMS pixel difference in [0, 1], released images as their 8-bit PNG values",
            "alpha": self.alpha,
            "n_tests": self.n_tests,
            "level": self.level,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "nearest_null": {
                "statistic": "d1/d2 over the training split",
                "pseudo_releases_heldout": self.null_heldout,
                "pseudo_releases_train_leave_one_out": self.null_train,
                "quantiles": {str(q): v for q, v in self.null_quantiles.items()},
                "flag_below": self.gap_flag,
            },
            "init_reference_records": self.init_reference if self.has_init else None,
            "resolvable": self.resolvable,
            "flagged": self.flagged,
            "flagged_nearest": self.flagged_by("nearest"),
            "flagged_init": self.flagged_by("init"),
            "exact_copies": self.exact_copies,
            "near_copies": self.near_copies,
            "near_copy_threshold": self.near_copy_threshold,
            "near_copy_rule": f"nearest training distance <= percentile {NEAR_COPY_PERCENTILE:g} of the "
            "held-out images' nearest training distances (information only)",
            "passed": self.passed,
            "images": [im.to_json(include_indices=include_indices) for im in self.images],
        }

    @classmethod
    def from_json(cls, d: dict) -> MemorisationResult:
        """The bundle's copy back, so ``verify`` can rebuild the card and re-derive the outcome
        from the recorded p-values (it cannot recompute them: that needs the private data)."""
        level = float(d["level"])
        null = d["nearest_null"]
        imgs = tuple(ImageCheck.from_json(im, level) for im in d["images"])
        has_init = any(im.p_init is not None for im in imgs)
        return cls(
            alpha=float(d["alpha"]),
            n_tests=int(d["n_tests"]),
            level=level,
            n_train=int(d["n_train"]),
            n_heldout=int(d["n_heldout"]),
            null_heldout=int(null["pseudo_releases_heldout"]),
            null_train=int(null["pseudo_releases_train_leave_one_out"]),
            null_quantiles={float(q): v for q, v in null["quantiles"].items()},
            gap_flag=_opt(null["flag_below"]),
            init_reference=int(d["init_reference_records"]) if has_init else 0,
            near_copy_threshold=float(d["near_copy_threshold"]),
            images=imgs,
        )


def _exact_copy_flags(released_pub: np.ndarray, train: np.ndarray) -> np.ndarray:
    seen = {row.tobytes() for row in np.round(np.clip(train, 0.0, 1.0) * 255.0).astype(np.uint8)}
    px = np.round(released_pub * 255.0).astype(np.uint8)
    return np.array([row.tobytes() in seen for row in px], bool)


def memorisation_check(
    released: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray,
    init_indices: np.ndarray | None = None,
    *,
    alpha: float = ALPHA,
    seed: int = SEED,
) -> MemorisationResult:
    """Runs both tests on every released image (module docstring).

    Args:
      released: float [N,H,W,C] in [0, 1], the images about to be published.
      train: the private training split, same image shape.
      heldout: the run's held-out split, same image shape.
      init_indices: int [N], the training record each image started from, -1 for none.
      alpha: family-wise error rate over all tests.
      seed: chooses the training records used as extra pseudo-releases.
    """
    released, train, heldout = np.asarray(released), np.asarray(train), np.asarray(heldout)
    shape = tuple(released.shape[1:])
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
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
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

    r = publish_pixels(released)
    t = _flat(train)
    h = _flat(heldout)
    has_init = init >= 0
    n_tests = n + int(has_init.sum())
    level = alpha / n_tests

    null = gap_null(t, h, n_extra_pseudo_releases(n_tests, len(h), len(t), alpha), seed=seed)
    gap_flag = flag_threshold(null.values, level)
    init_reference = len(h) + len(t) - 1
    c_init = max_count(level, init_reference)

    d1, d2, i1 = nearest_two(r, t)
    g = gap_ratio(d1, d2)
    p_near = rank_pvalues(g, null.values)
    near_thr = float(np.percentile(null.heldout_nearest, NEAR_COPY_PERCENTILE))
    exact = _exact_copy_flags(r, t)

    t_sq, h_sq = np.einsum("ij,ij->i", t, t), np.einsum("ij,ij->i", h, h)
    images = []
    for i in range(n):
        d_init = p_init = d_flag_init = closer_h = closer_t = None
        if has_init[i]:
            j = int(init[i])
            dt = rms_distances(r[i : i + 1], t, t_sq)[0]
            dh = rms_distances(r[i : i + 1], h, h_sq)[0]
            d_init = float(dt[j])
            ref = np.concatenate([dh, np.delete(dt, j)])
            closer_h = int((dh <= d_init).sum())
            closer_t = int((np.delete(dt, j) <= d_init).sum())
            p_init = (1.0 + closer_h + closer_t) / (init_reference + 1.0)
            if c_init >= 0:
                d_flag_init = (
                    float(np.partition(ref, c_init)[c_init]) if c_init < len(ref) else math.inf
                )
        images.append(
            ImageCheck(
                index=i,
                nearest_record=int(i1[i]),
                d_nearest=float(d1[i]),
                d_second=float(d2[i]),
                gap=float(g[i]),
                p_nearest=float(p_near[i]),
                d_flag_nearest=None if gap_flag is None else float(gap_flag * d2[i]),
                init_record=int(init[i]) if has_init[i] else None,
                d_init=d_init,
                p_init=p_init,
                d_flag_init=d_flag_init,
                init_closer_heldout=closer_h,
                init_closer_train=closer_t,
                level=level,
                exact_copy=bool(exact[i]),
                near_copy=bool(d1[i] <= near_thr),
            )
        )
    return MemorisationResult(
        alpha=alpha,
        n_tests=n_tests,
        level=level,
        n_train=len(t),
        n_heldout=len(h),
        null_heldout=null.n_heldout,
        null_train=null.n_train,
        null_quantiles={q: float(np.quantile(null.values, q)) for q in NULL_QUANTILES},
        gap_flag=gap_flag,
        init_reference=init_reference,
        near_copy_threshold=near_thr,
        images=tuple(images),
    )
