"""Copy check of released images against the private training split and the held-out split.

Distances are **normalised pixel L2**: ‖a − b‖₂ / √D for images in [0, 1] (D pixels × channels),
i.e. the root-mean-square pixel difference. SSIM (Wang et al. 2004; 7×7 uniform window, C1 =
(0.01)², C2 = (0.03)², data range 1, averaged over channels) is computed between each released image
and its ``ssim_candidates`` nearest records by L2, and the maximum is reported (an exhaustive SSIM
search over a large private set would cost too much for little gain).

**Near-copy rule** (data-derived): a released image is a near copy when its L2 distance to the
nearest private training record is ≤ the 1st percentile of nearest-neighbour distances among real
training images (each sampled training image to its nearest *other* training image). I.e. it sits
closer to a private record than 99 % of real images sit to their own nearest neighbour.
Outputs never contain pixel values: indices into the splits and distances only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

THRESHOLD_PERCENTILE = 1.0
_C1, _C2 = 0.01**2, 0.03**2


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(x.shape[0], -1)


def nearest(
    queries: np.ndarray,
    pool: np.ndarray,
    *,
    k: int = 1,
    exclude_self: bool = False,
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest ``pool`` rows of every query by normalised L2. Returns (dist [Q,k], idx [Q,k]).
    With ``exclude_self`` queries are the pool's first rows and a row never matches itself."""
    q, p = _flat(queries), _flat(pool)
    dim = q.shape[1]
    pn = (p.astype(np.float64) ** 2).sum(axis=1)
    k = min(k, p.shape[0] - (1 if exclude_self else 0))
    dists, idxs = [], []
    for s in range(0, q.shape[0], chunk):
        qc = q[s : s + chunk].astype(np.float64)
        d2 = (qc**2).sum(axis=1)[:, None] + pn[None, :] - 2.0 * qc @ p.T.astype(np.float64)
        if exclude_self:
            d2[np.arange(qc.shape[0]), np.arange(s, s + qc.shape[0])] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(pd, axis=1)
        idxs.append(np.take_along_axis(part, order, axis=1))
        dists.append(np.take_along_axis(pd, order, axis=1))
    d = np.sqrt(np.maximum(np.concatenate(dists), 0.0) / dim)
    return d, np.concatenate(idxs)


def ssim(a: np.ndarray, b: np.ndarray, *, win: int = 7) -> np.ndarray:
    """Mean SSIM of image pairs a[i], b[i] (``[P,H,W,C]`` in [0,1]) → ``[P]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w = min(win, a.shape[1], a.shape[2])
    size = (1, w, w, 1)
    mu_a, mu_b = uniform_filter(a, size), uniform_filter(b, size)
    cov_n = w * w / (w * w - 1.0)  # unbiased local (co)variances
    va = (uniform_filter(a * a, size) - mu_a**2) * cov_n
    vb = (uniform_filter(b * b, size) - mu_b**2) * cov_n
    cab = (uniform_filter(a * b, size) - mu_a * mu_b) * cov_n
    s = ((2 * mu_a * mu_b + _C1) * (2 * cab + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (va + vb + _C2))
    h = (w - 1) // 2  # drop the borders the filter padded, as skimage does
    s = s[:, h : s.shape[1] - h, h : s.shape[2] - h, :]
    return s.reshape(s.shape[0], -1).mean(axis=1)


def near_copy_threshold(
    x_train: np.ndarray,
    *,
    sample: int = 2000,
    seed: int = 0,
    percentile: float = THRESHOLD_PERCENTILE,
) -> float:
    """The 1st percentile of real training images' distances to their nearest other one."""
    x = _flat(x_train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])
    sel = np.concatenate([order[:sample], order[sample:]])  # sampled rows first
    d, _ = nearest(x[sel[:sample]], x[sel], exclude_self=True)
    return float(np.percentile(d[:, 0], percentile))


def _max_ssim(released: np.ndarray, pool: np.ndarray, idx: np.ndarray) -> np.ndarray:
    r = np.repeat(np.asarray(released), idx.shape[1], axis=0)
    s = ssim(r, np.asarray(pool)[idx.reshape(-1)])
    return s.reshape(idx.shape).max(axis=1)


def copy_check(
    released: np.ndarray,
    x_train: np.ndarray,
    x_test: np.ndarray,
    *,
    init_indices: np.ndarray | None = None,
    ssim_candidates: int = 8,
    threshold: float | None = None,
    percentile: float = THRESHOLD_PERCENTILE,
    seed: int = 0,
) -> dict[str, Any]:
    """Per released image: nearest train / held-out record (index, L2, best SSIM among the
    ``ssim_candidates`` L2-nearest), ratio d_train/d_holdout, near-copy flag, and — where
    ``init_indices[i] >= 0`` — the distance to the training image it was initialised from."""
    rel = np.asarray(released, dtype=np.float32)
    if threshold is None:
        threshold = near_copy_threshold(x_train, seed=seed, percentile=percentile)
    dt, it = nearest(rel, x_train, k=ssim_candidates)
    dh, ih = nearest(rel, x_test, k=ssim_candidates)
    d_tr, d_ho = dt[:, 0], dh[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d_ho > 0, d_tr / d_ho, np.where(d_tr > 0, np.inf, 1.0))
    flag = d_tr <= threshold
    per_image: dict[str, Any] = {
        "nearest_train_index": it[:, 0].tolist(),
        "nearest_train_l2": d_tr.tolist(),
        "nearest_holdout_index": ih[:, 0].tolist(),
        "nearest_holdout_l2": d_ho.tolist(),
        "ratio": ratio.tolist(),
        "near_copy": flag.tolist(),
        "ssim_train": _max_ssim(rel, x_train, it).tolist(),
        "ssim_holdout": _max_ssim(rel, x_test, ih).tolist(),
    }
    out: dict[str, Any] = {
        "rule": f"near copy iff L2 to nearest private training record <= percentile "
        f"{percentile:g} of training images' nearest-neighbour L2",
        "distance": "normalised pixel L2 (RMS difference, images in [0,1])",
        "threshold": float(threshold),
        "near_copies": int(flag.sum()),
        "n_released": int(len(rel)),
        "closer_to_train_fraction": float(np.mean(d_tr < d_ho)),
        "median_ratio": float(np.median(ratio)),
        "max_ssim_train": float(np.max(per_image["ssim_train"])),
        "per_image": per_image,
    }
    if init_indices is not None:
        ii = np.asarray(init_indices, dtype=np.int64)
        has = ii >= 0
        d_init = np.full(len(rel), np.nan)
        if has.any():
            diff = _flat(rel[has]) - _flat(np.asarray(x_train)[ii[has]])
            d_init[has] = np.sqrt((diff.astype(np.float64) ** 2).mean(axis=1))
        per_image["init_l2"] = [None if np.isnan(v) else float(v) for v in d_init]
        out["init_within_threshold"] = int(np.sum(d_init[has] <= threshold))
        out["median_init_l2"] = float(np.median(d_init[has])) if has.any() else None
    return out
