"""Preprocessing as in RCIG/FRePo: per-channel standardisation, then optional ZCA whitening.

Maths (docs/data.md; rcig-algorithm.md §1.8). For pixel-space images ``x`` ``[N,H,W,C]``:

    s = (x - mean_c) / std_c                         per channel, mean/std over the training split
    z = (flatten(s) - m) @ W                         if ZCA is on, W symmetric [D, D], D = H·W·C,
                                                     m [D] the per-pixel mean of flatten(s) over
                                                     the training split (the authors' ZCA mean)

    Cov = centred covariance of flatten(s) over the training split   (float64)
    Cov = U diag(λ) Uᵀ                               eigendecomposition
    r   = zca_reg · tr(Cov) / D                      FRePo's regulariser, added to every eigenvalue
    W   = U diag((λ + r)^-1/2) Uᵀ

so the whitened training data has covariance ``W Cov W = U diag(λ / (λ + r)) Uᵀ`` (the
"regularised identity"). The inverse is exact: ``W⁻¹ = V diag(1/μ) Vᵀ`` from the
eigendecomposition ``W = V diag(μ) Vᵀ`` of the stored matrix, in float64, then
``x = (z @ W⁻¹ + m) · std_c + mean_c``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from rcig_release import limits
from rcig_release.errors import InputError

ARRAY_KEYS = ("prep_mean", "prep_std", "prep_zca")  # required
ZCA_MEAN_KEY = (
    "prep_zca_mean"  # written since the per-pixel ZCA mean is subtracted (see from_arrays)
)
_COV_CHUNK = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessor:
    """A fitted preprocessing: ``transform`` to model space and its exact ``inverse``.

    Attributes:
        mean: float32 ``[C]`` per-channel mean of the training split (pixel space).
        std: float32 ``[C]`` per-channel standard deviation (1 where a channel is constant).
        zca: float32 ``[D, D]`` symmetric whitening matrix (D = H·W·C) or ``None``.
        zca_mean: float32 ``[D]`` per-pixel mean of the standardised training images, subtracted
            before whitening (``None`` with ZCA: zeros, i.e. no subtraction; ignored without ZCA).
    """

    mean: np.ndarray
    std: np.ndarray
    zca: np.ndarray | None = None
    zca_mean: np.ndarray | None = None
    _unzca: np.ndarray | None = dataclasses.field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise InputError("preprocessing: mean and std must be non-empty and the same length")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise InputError("preprocessing: mean/std must be finite and std positive")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.zca is None:
            object.__setattr__(self, "zca_mean", None)
            return
        zca = np.asarray(self.zca, dtype=np.float32)
        if zca.ndim != 2 or zca.shape[0] != zca.shape[1] or zca.shape[0] % mean.size:
            raise InputError(
                f"preprocessing: ZCA matrix must be square with a side divisible by "
                f"the channel count (got shape {zca.shape})"
            )
        if not np.isfinite(zca).all():
            raise InputError("preprocessing: ZCA matrix is not finite")
        w = zca.astype(np.float64)
        evals, evecs = np.linalg.eigh((w + w.T) / 2.0)
        if evals.min() <= 0:
            raise InputError("preprocessing: ZCA matrix is not positive definite")
        zmean = (
            np.zeros(zca.shape[0], np.float32)
            if self.zca_mean is None
            else np.asarray(self.zca_mean, dtype=np.float32).reshape(-1)
        )
        if zmean.shape != (zca.shape[0],) or not np.isfinite(zmean).all():
            raise InputError(
                f"preprocessing: ZCA mean must be {zca.shape[0]} finite values "
                f"(got shape {zmean.shape})"
            )
        object.__setattr__(self, "zca", zca)
        object.__setattr__(self, "zca_mean", zmean)
        object.__setattr__(self, "_unzca", (evecs / evals) @ evecs.T)

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise InputError(
                f"preprocessing expects images [N,H,W,{self.channels}] (got shape {tuple(x.shape)})"
            )
        if self.zca is not None and int(np.prod(x.shape[1:])) != self.zca.shape[0]:
            raise InputError(
                f"preprocessing: images of shape {tuple(x.shape[1:])} do not match "
                f"the ZCA size {self.zca.shape[0]}"
            )
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Pixel space ``[N,H,W,C]`` → model space (float32, same shape)."""
        x = self._check(x)
        s = (x.astype(np.float32) - self.mean) / self.std
        if self.zca is not None:
            s = ((s.reshape(s.shape[0], -1) - self.zca_mean) @ self.zca).reshape(s.shape)
        return s.astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Model space → pixel space (float32), the exact inverse of ``transform`` (no clipping)."""
        z = self._check(z)
        s = z.astype(np.float64)
        if self._unzca is not None:
            assert self.zca_mean is not None  # set with _unzca in __post_init__
            s = (
                s.reshape(s.shape[0], -1) @ self._unzca + self.zca_mean.astype(np.float64)
            ).reshape(z.shape)
        return (s * self.std.astype(np.float64) + self.mean.astype(np.float64)).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``prep_mean``, ``prep_std``, ``prep_zca``, ``prep_zca_mean`` for ``distilled.npz``
        (zca 0×0 and zca mean of length 0 when ZCA is off)."""
        zca = self.zca if self.zca is not None else np.zeros((0, 0), dtype=np.float32)
        zmean = self.zca_mean if self.zca_mean is not None else np.zeros((0,), dtype=np.float32)
        return {
            "prep_mean": self.mean.copy(),
            "prep_std": self.std.copy(),
            "prep_zca": np.array(zca, dtype=np.float32),
            ZCA_MEAN_KEY: np.array(zmean, dtype=np.float32),
        }

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> Preprocessor:
        """Inverse of ``to_arrays``; ``InputError`` if a key is missing or an array is malformed.

        Arrays written before the ZCA mean was subtracted have no ``prep_zca_mean``: they load
        with a zero mean, which is exactly the transform such a run was distilled with, so its
        model space, evaluation and pixel-space export stay consistent.
        """
        missing = [k for k in ARRAY_KEYS if k not in d]
        if missing:
            raise InputError(f"preprocessing arrays missing: {', '.join(missing)}")
        zca = np.asarray(d["prep_zca"])
        zmean = np.asarray(d[ZCA_MEAN_KEY]) if ZCA_MEAN_KEY in d else None
        return cls(
            mean=np.asarray(d["prep_mean"]),
            std=np.asarray(d["prep_std"]),
            zca=None if zca.size == 0 else zca,
            zca_mean=None if zmean is None or zmean.size == 0 else zmean,
        )


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = x.shape[-1]
    flat = x.reshape(-1, c).astype(np.float64)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


def _covariance(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel mean [D], centred covariance [D, D] (divisor N)) of the standardised, flattened
    images, float64.

    Accumulated in chunks so a large split is never held in float64 at once.
    """
    n = x.shape[0]
    d = int(np.prod(x.shape[1:]))
    total = np.zeros(d, dtype=np.float64)
    gram = np.zeros((d, d), dtype=np.float64)
    for i in range(0, n, _COV_CHUNK):
        block = ((x[i : i + _COV_CHUNK].astype(np.float64) - mean) / std).reshape(-1, d)
        total += block.sum(axis=0)
        gram += block.T @ block
    mu = total / n
    return mu, gram / n - np.outer(mu, mu)


def zca_matrix(cov: np.ndarray, zca_reg: float) -> np.ndarray:
    """FRePo's regularised ZCA: ``U diag((λ + zca_reg·tr(Cov)/D)^-1/2) Uᵀ`` (float64)."""
    d = cov.shape[0]
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2.0)
    evals = np.clip(evals, 0.0, None)
    reg = zca_reg * np.trace(cov) / d
    if not reg > 0:
        raise InputError("cannot fit ZCA: the training images have no variance (or zca_reg <= 0)")
    return (evecs * (evals + reg) ** -0.5) @ evecs.T


ZCA_COPIES = 5  # float64 D×D arrays alive at once: the Gram, eigh's vectors and work, W, W⁻¹


def zca_bytes(image_shape: tuple[int, ...]) -> int:
    """Memory the ZCA fit needs for images of ``image_shape`` (H, W, C): ``ZCA_COPIES`` float64
    D×D matrices, D = H·W·C."""
    d = math.prod(int(x) for x in image_shape)
    return ZCA_COPIES * d * d * 8


def check_zca_size(image_shape: tuple[int, ...]) -> None:
    """``InputError`` before anything is allocated when the ZCA of these images would need more
    than ``RCIG_RELEASE_MAX_BYTES`` (128×128 colour: D = 49,152, about 90 GiB)."""
    n, cap = zca_bytes(image_shape), limits.max_bytes()
    if n > cap:
        d = math.prod(int(x) for x in image_shape)
        shape = "x".join(str(int(x)) for x in image_shape)
        raise InputError(
            f"ZCA whitening of {shape} images needs {d:,}x{d:,} float64 matrices (about "
            f"{limits.fmt_bytes(n)}), more than the cap of {limits.fmt_bytes(cap)}: use "
            f"--no-zca, or raise {limits.MAX_BYTES_ENV}"
        )


def fit_preprocessor(x_train: np.ndarray, *, zca: bool, zca_reg: float = 0.1) -> Preprocessor:
    """Fits standardisation (and ZCA when ``zca``) on the training split.

    Args:
        x_train: float32 ``[N,H,W,C]`` pixel-space training images.
        zca: whether to whiten (the paper: on for colour data, off for grey).
        zca_reg: FRePo/RCIG regulariser strength (0.1).

    Returns:
        A ``Preprocessor``; ``transform(x_train)`` has per-channel mean 0 and std 1 (without ZCA).

    Example:
        >>> x = np.random.default_rng(0).random((50, 4, 4, 1), dtype=np.float32)
        >>> p = fit_preprocessor(x, zca=True)
        >>> bool(np.allclose(p.inverse(p.transform(x)), x, atol=1e-4))
        True
    """
    x = np.asarray(x_train)
    if x.ndim != 4 or x.shape[0] < 2:
        raise InputError(
            f"fit_preprocessor needs at least 2 images [N,H,W,C] (got shape {tuple(x.shape)})"
        )
    if zca:
        check_zca_size(x.shape[1:])  # before the statistics, before any D×D allocation
    mean, std = _channel_stats(x)
    if not zca:
        return Preprocessor(mean=mean, std=std)
    zca_mean, cov = _covariance(x, mean, std)
    w = zca_matrix(cov, zca_reg)
    return Preprocessor(
        mean=mean, std=std, zca=w.astype(np.float32), zca_mean=zca_mean.astype(np.float32)
    )


# DP runs (docs/dp.md): standardisation with fixed constants, not fitted on the private images,
# so preprocessing costs no privacy budget. Pixels in [0, 1] map to [-1, 1], the range a
# standardised image mostly occupies; the constants are a choice made without looking at data.
FIXED_MEAN, FIXED_STD = 0.5, 0.5
FIXED_DESCRIPTION = (
    f"fixed per-channel standardisation (mean {FIXED_MEAN}, std {FIXED_STD} "
    "on the 0..1 pixel scale), not fitted; no ZCA"
)


def fixed_preprocessor(channels: int) -> Preprocessor:
    """The data-independent standardisation of DP runs: ``(x − 0.5) / 0.5`` per channel."""
    return Preprocessor(
        mean=np.full(channels, FIXED_MEAN, np.float32), std=np.full(channels, FIXED_STD, np.float32)
    )


def preprocessor_for(x_train: np.ndarray, cfg, *, zca: bool) -> Preprocessor:
    """The preprocessing a run with ``cfg`` (a ``DistillConfig``) uses on ``x_train``: fixed for
    DP runs (``cfg.dp_epsilon`` set; ZCA is refused there), else fitted (``fit_preprocessor``).
    The pipeline and the audit's shadows both call this, so shadows preprocess as the release."""
    if getattr(cfg, "dp_epsilon", None) is not None:
        if zca:
            raise InputError("ZCA is fitted on the private images: not available with DP")
        return fixed_preprocessor(np.asarray(x_train).shape[-1])
    return fit_preprocessor(x_train, zca=zca, zca_reg=cfg.zca_reg)
