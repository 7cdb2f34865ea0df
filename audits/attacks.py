"""Statistics (and the keep matrix) in, membership scores out. **Higher score = more likely member.**

Shapes: ``N`` audit records, ``K`` shadow pipelines, ``A`` query augmentations (1, or 2 with the
mirror image). A target statistic is ``[A, N]`` (or ``[N]``), already averaged over the target
networks; shadow statistics are ``[K, A, N]`` (or ``[K, N]``), each shadow averaged over its own
downstream networks in the same way; ``keep`` is boolean ``[K, N]`` (True: record in shadow k's
private data).

References: Yeom et al. 2018 (loss); Shokri et al. 2017 (shadow classifier); Carlini et al. 2022
(LiRA, Alg. 1 and Eq. 4); Zarifzadeh et al. 2024 (RMIA, offline variant).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from rcig_release.audits import signals
from rcig_release.audits.stats import auc

GLOBAL_VARIANCE_BELOW = 64  # LiRA Fig. 9: per-example variances need many shadows
_VAR_FLOOR = 1e-8


def _as_akn(
    target: np.ndarray, shadow: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    s = np.asarray(shadow, dtype=np.float64)
    if t.ndim == 1:
        t = t[None]
    if s.ndim == 2:
        s = s[:, None]
    k = np.asarray(keep, dtype=bool)
    if s.shape[1:] != t.shape or k.shape != (s.shape[0], s.shape[2]):
        raise ValueError(f"shape mismatch: target {t.shape}, shadow {s.shape}, keep {k.shape}")
    return t, s, k


def loss_attack(target_loss: np.ndarray) -> np.ndarray:
    """Yeom et al.: score = −loss (averaged over any leading axes, e.g. augmentations)."""
    loss = np.asarray(target_loss, dtype=np.float64)
    return -loss.reshape(-1, loss.shape[-1]).mean(axis=0)


def _moments(s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean [A,N] (NaN where the side is empty), unbiased variance averaged over A [N] (NaN with
    fewer than 2 shadows), and count [N] over the masked shadows."""
    m = mask[:, None, :].astype(np.float64)
    cnt = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (s * m).sum(axis=0) / cnt
        dev = ((s - np.nan_to_num(mean)[None]) ** 2 * m).sum(axis=0) / (cnt - 1)
    dev = np.where(cnt >= 2, dev.mean(axis=0), np.nan)
    return mean, dev, cnt


def _fill_means(mu_in: np.ndarray, mu_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """With independent coins a record can be IN (or OUT) for no reference shadow. Its missing mean
    is the other side's mean shifted by the average IN−OUT gap of the records that have both (so the
    score stays defined and monotone); with no such record at all, the gap is 0."""
    both = np.isfinite(mu_in) & np.isfinite(mu_out)
    gap = (
        np.nanmean(np.where(both, mu_in - mu_out, np.nan), axis=1, keepdims=True)
        if both.any()
        else np.zeros((mu_in.shape[0], 1))
    )
    gap = np.nan_to_num(gap)
    mu_in2 = np.where(np.isfinite(mu_in), mu_in, mu_out + gap)
    mu_out2 = np.where(np.isfinite(mu_out), mu_out, mu_in - gap)
    if not (np.all(np.isfinite(mu_in2)) and np.all(np.isfinite(mu_out2))):
        raise ValueError("a record has no reference shadow at all")
    return mu_in2, mu_out2


def _pooled_sd(s: np.ndarray, keep: np.ndarray, var_in: np.ndarray, var_out: np.ndarray) -> float:
    """One standard deviation shared by IN and OUT (LiRA's fixed-variance form for few shadows):
    the mean of every per-record, per-side variance that has at least 2 shadows; with none (e.g. 2
    reference shadows) the spread of each side's values around its per-record mean."""
    v = np.concatenate([var_in[np.isfinite(var_in)], var_out[np.isfinite(var_out)]])
    if v.size:
        return float(np.sqrt(max(float(v.mean()), _VAR_FLOOR)))
    vals = np.moveaxis(s, 1, -1)  # [K, N, A]
    return float(np.sqrt(max(float(np.var(vals)), _VAR_FLOOR)))


def lira_online(
    target: np.ndarray, shadow: np.ndarray, keep: np.ndarray, *, global_variance: bool | None = None
) -> np.ndarray:
    """LiRA online: Σ_a log N(x_a; μ_in,a, σ_in²) − log N(x_a; μ_out,a, σ_out²) (a spherical
    Gaussian over the A queries), μ per record and query from the IN/OUT reference shadows.

    Variances: per record and side when ``global_variance`` is False (default from 64 shadows on),
    else ONE variance shared by IN and OUT (Carlini et al.'s fixed-variance form), so the score is
    (μ_in − μ_out)·(x − (μ_in + μ_out)/2)/σ² summed over queries: monotone in the observation. (Two
    separate global variances make it non-monotone: with σ_in < σ_out an extreme IN observation
    scores as OUT.)
    """
    t, s, k = _as_akn(target, shadow, keep)
    use_global = s.shape[0] < GLOBAL_VARIANCE_BELOW if global_variance is None else global_variance
    mu_in, var_in, _ = _moments(s, k)
    mu_out, var_out, _ = _moments(s, ~k)
    mu_in, mu_out = _fill_means(mu_in, mu_out)
    if use_global:
        sd = _pooled_sd(s, k, var_in, var_out)
        return (((t - mu_out) ** 2 - (t - mu_in) ** 2) / (2.0 * sd * sd)).sum(axis=0)
    fallback = _pooled_sd(s, k, var_in, var_out) ** 2
    sd_in = np.sqrt(np.maximum(np.where(np.isfinite(var_in), var_in, fallback), _VAR_FLOOR))
    sd_out = np.sqrt(np.maximum(np.where(np.isfinite(var_out), var_out, fallback), _VAR_FLOOR))
    ll = stats.norm.logpdf(t, mu_in, sd_in[None]) - stats.norm.logpdf(t, mu_out, sd_out[None])
    return ll.sum(axis=0)


def lira_offline(
    target: np.ndarray, shadow: np.ndarray, keep: np.ndarray, *, global_variance: bool | None = None
) -> np.ndarray:
    """LiRA offline (Eq. 4, one-sided): z = (x̄ − μ_out)/σ_out with μ_out, σ_out fitted on the OUT
    shadows and x̄ the statistic averaged over the A queries (for shadows too). Pr[Z < x̄] = Φ(z)
    is monotone in z, so z itself is returned: identical ranking, no saturation of Φ near 1.
    σ_out is one global value below 64 shadows; a record with no OUT shadow gets μ_out from its IN
    shadows shifted by the average gap (see ``_fill_means``)."""
    t, s, k = _as_akn(target, shadow, keep)
    use_global = s.shape[0] < GLOBAL_VARIANCE_BELOW if global_variance is None else global_variance
    tm, sm = t.mean(axis=0, keepdims=True), s.mean(axis=1, keepdims=True)
    mu_in, var_in, _ = _moments(sm, k)
    mu_out, var_out, _ = _moments(sm, ~k)
    _, mu_out = _fill_means(mu_in, mu_out)
    ok = np.isfinite(var_out)
    if use_global or not ok.all():
        g = float(var_out[ok].mean()) if ok.any() else _pooled_sd(sm, k, var_in, var_out) ** 2
        var = np.where(ok & (not use_global), var_out, g)
    else:
        var = var_out
    return (tm[0] - mu_out[0]) / np.sqrt(np.maximum(var, _VAR_FLOOR))


def _p_out(ref: np.ndarray, keep: np.ndarray, a: float) -> np.ndarray:
    """Mean true-label probability over the OUT references; where a record has none, back-solve
    OUT from IN as the RMIA code does: (p_in + a − 1)/a (mean of all references when a = 0)."""
    out = ~keep
    cnt = out.sum(axis=0)
    mean_out = np.where(cnt > 0, (ref * out).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    if a > 0:
        back = np.clip((ref.mean(axis=0) + a - 1) / a, 0.0, 1.0)
    else:
        back = ref.mean(axis=0)
    return np.where(cnt > 0, mean_out, back)


def rmia_offline(
    target_p: np.ndarray,
    ref_p: np.ndarray,
    keep: np.ndarray,
    target_pz: np.ndarray,
    ref_pz: np.ndarray,
    *,
    a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA offline: score(x) = Pr_z[ (P(x|θ)/P(x)) / (P(z|θ)/P(z)) ≥ γ ] over population z.

    P(·|θ): the target's true-label softmax probability (``[N]``, ``[Z]``); P(x) =
    ½[(1+a)·P_OUT(x) + (1−a)] with P_OUT the mean over OUT references (``ref_p`` ``[K,N]``;
    the population ``ref_pz`` ``[K,Z]`` is OUT for every reference).
    """
    tp = np.asarray(target_p, dtype=np.float64)
    rp = np.asarray(ref_p, dtype=np.float64)
    tz = np.asarray(target_pz, dtype=np.float64)
    rz = np.asarray(ref_pz, dtype=np.float64)
    px = 0.5 * ((1 + a) * _p_out(rp, np.asarray(keep, bool), a) + (1 - a))
    pz = 0.5 * ((1 + a) * rz.mean(axis=0) + (1 - a))
    ratio_x = tp / px
    ratio_z = np.sort(tz / pz)
    # count of z with ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma
    return np.searchsorted(ratio_z, ratio_x / gamma, side="right") / ratio_z.size


def tune_rmia_a(
    ref_p: np.ndarray,
    keep: np.ndarray,
    ref_pz: np.ndarray,
    *,
    grid: Sequence[float] = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2)),
    max_pseudo_targets: int = 4,
) -> float:
    """Chooses RMIA's offline ``a`` by attacking shadows with the other shadows as references and
    keeping the best mean AUC (the ml_privacy_meter recipe). Needs ≥ 2 shadows."""
    rp, k, rz = np.asarray(ref_p), np.asarray(keep, bool), np.asarray(ref_pz)
    n = rp.shape[0]
    if n < 2:
        return 0.3
    best, best_auc = 0.3, -1.0
    for a in grid:
        aucs = []
        for j in range(min(n, max_pseudo_targets)):
            others = np.arange(n) != j
            if k[j].all() or (~k[j]).all():
                continue
            sc = rmia_offline(rp[j], rp[others], k[others], rz[j], rz[others], a=float(a))
            aucs.append(auc(k[j], sc))
        if aucs and np.mean(aucs) > best_auc:
            best, best_auc = float(a), float(np.mean(aucs))
    return best


def shadow_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Shokri attack features for one pipeline from its networks' logits ``[M, A, N, C]``:
    φ per query, loss, the sorted softmax vector, and the one-hot label (a per-class model in
    one classifier). Returns ``[N, A + 1 + 2C]``."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 3:
        z = z[None]
    phi = signals.logit_confidence(z, labels).mean(axis=0)  # [A, N]
    loss = signals.cross_entropy(z, labels).mean(axis=(0, 1))  # [N]
    sp = signals.sorted_probs(z).mean(axis=(0, 1))  # [N, C]
    onehot = np.eye(z.shape[-1])[np.asarray(labels, dtype=np.int64)]
    return np.concatenate([phi.T, loss[:, None], sp, onehot], axis=1)


def fit_shadow_classifier(
    shadow_feats: np.ndarray, keep: np.ndarray, *, seed: int = 0
) -> HistGradientBoostingClassifier:
    """Shokri et al.'s attack model: a classifier (sklearn HistGradientBoosting) trained on every
    reference shadow's features ``[K, N, F]`` labelled in/out by ``keep`` ``[K, N]``."""
    f = np.asarray(shadow_feats, dtype=np.float64)
    k = np.asarray(keep, dtype=bool)
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    # One OpenMP thread: the rows are few (K·N) and on a shared CPU spinning threads cost 5x.
    with threadpool_limits(limits=1):
        clf.fit(f.reshape(-1, f.shape[-1]), k.reshape(-1))
    return clf


def shadow_scores(clf: HistGradientBoostingClassifier, target_feats: np.ndarray) -> np.ndarray:
    """P(in) of the fitted attack model on a target's features ``[N, F]``."""
    with threadpool_limits(limits=1):
        return clf.predict_proba(np.asarray(target_feats, dtype=np.float64))[:, 1]


def shadow_attack(
    shadow_feats: np.ndarray, keep: np.ndarray, target_feats: np.ndarray, *, seed: int = 0
) -> np.ndarray:
    """Shokri et al.: fit on the shadows (``fit_shadow_classifier``), apply to the target's
    features ``[N, F]``; returns P(in)."""
    return shadow_scores(fit_shadow_classifier(shadow_feats, keep, seed=seed), target_feats)


def nearest_attack(distances: np.ndarray) -> np.ndarray:
    """Release-direct: score = −(distance of a record to its nearest released image); with
    several feature spaces or networks (leading axes) the distances are averaged."""
    d = np.asarray(distances, dtype=np.float64)
    return -d.reshape(-1, d.shape[-1]).mean(axis=0)
