"""Scores in, descriptive metrics out: ROC AUC, TPR at a fixed FPR with intervals, advantage.

Convention everywhere in ``rcig_release.audits``: **a higher score means "more likely a member"**;
``labels`` is boolean (True = member). NumPy only; sklearn.metrics for the ROC, scipy.stats for
the Clopper–Pearson (beta) intervals.

Notes on what the numbers mean:
- ``tpr_at_fpr``: the threshold is the lowest one whose empirical FPR is ≤ the target (sklearn's
  ROC points); its TPR gets an exact two-sided 95 % Clopper–Pearson interval. Below ``1/fpr``
  non-members the FPR cannot be resolved and the value is ``None`` with a reason.
- No ε here: the audit's ε lower bounds are computed on its game with jax-privacy
  (``epsilon.py``), where membership was randomised; a fixed split supports no ε claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

FPR_TARGETS = (0.001, 0.01)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {y.size})")
    if not np.all(np.isfinite(s)):
        # +inf/-inf are legitimate extreme scores; NaN is not.
        if np.any(np.isnan(s)):
            raise ValueError("scores contain NaN")
        finite = s[np.isfinite(s)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        s = np.where(s == np.inf, hi + 1.0, np.where(s == -np.inf, lo - 1.0, s))
    return s, y


def clopper_pearson(
    k: np.ndarray | int, n: np.ndarray | int, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided (1−α) interval for a binomial proportion k/n (vectorised)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with every distinct threshold kept (sklearn.metrics.roc_curve)."""
    s, y = _check(scores, labels)
    return skm.roc_curve(y, s, drop_intermediate=False)


def auc_with_ci(
    scores: np.ndarray, labels: np.ndarray, alpha: float = 0.05
) -> tuple[float, tuple[float, float]]:
    """ROC AUC (sklearn) and a normal interval from the Hanley–McNeil (1982) standard error."""
    s, y = _check(scores, labels)
    a = float(skm.roc_auc_score(y, s))
    n1, n0 = int(y.sum()), int((~y).sum())
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(max(var, 0.0))
    # At AUC 0 or 1 the formula gives zero width; widen to the interval of one rank swap.
    half = max(half, 1.0 / (n1 * n0))
    return a, (max(0.0, a - half), min(1.0, a + half))


def tpr_at_fpr(
    scores: np.ndarray, labels: np.ndarray, fpr_target: float, alpha: float = 0.05
) -> dict[str, Any]:
    """TPR at the largest empirical FPR ≤ ``fpr_target``, with a Clopper–Pearson interval.

    Returns ``{"tpr", "ci": [lo, hi], "fpr": achieved, "threshold", "reason"}``; all ``None``
    except ``reason`` when the FPR cannot be resolved. The interval is conditional on the chosen
    threshold (which is itself estimated from the non-members).
    """
    s, y = _check(scores, labels)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n0 < int(np.ceil(1.0 / fpr_target - 1e-9)):
        return {
            "tpr": None,
            "ci": None,
            "fpr": None,
            "threshold": None,
            "reason": f"needs >= {int(np.ceil(1 / fpr_target))} non-members, has {n0}",
        }
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    ok = np.nonzero(fpr <= fpr_target + 1e-12)[0]
    i = ok[np.argmax(tpr[ok])]
    k = int(round(tpr[i] * n1))
    lo, hi = clopper_pearson(k, n1, alpha)
    return {
        "tpr": float(tpr[i]),
        "ci": [float(lo), float(hi)],
        "fpr": float(fpr[i]),
        "threshold": float(thr[i]),
        "reason": None,
    }


def advantage(scores: np.ndarray, labels: np.ndarray) -> float:
    """Membership advantage max_t (TPR − FPR) (Yeom et al. 2018, Def. 4)."""
    fpr, tpr, _ = roc(scores, labels)
    return float(np.max(tpr - fpr))


def attack_metrics(
    scores: np.ndarray, labels: np.ndarray, *, fprs: tuple[float, ...] = FPR_TARGETS
) -> dict[str, Any]:
    """Every metric for one attack on one set of records (JSON-ready)."""
    s, y = _check(scores, labels)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return {
            "n_members": n1,
            "n_nonmembers": n0,
            "auc": None,
            "auc_ci": None,
            "tpr_at_fpr": {str(f): None for f in fprs},
            "tpr_at_fpr_ci": {str(f): None for f in fprs},
            "tpr_at_fpr_reason": {str(f): "needs members and non-members" for f in fprs},
            "advantage": None,
        }
    a, ci = auc_with_ci(s, y)
    out: dict[str, Any] = {
        "n_members": n1,
        "n_nonmembers": n0,
        "auc": a,
        "auc_ci": list(ci),
        "tpr_at_fpr": {},
        "tpr_at_fpr_ci": {},
        "tpr_at_fpr_reason": {},
    }
    for f in fprs:
        r = tpr_at_fpr(s, y, f)
        out["tpr_at_fpr"][str(f)] = r["tpr"]
        out["tpr_at_fpr_ci"][str(f)] = r["ci"]
        out["tpr_at_fpr_reason"][str(f)] = r["reason"]
    out["advantage"] = advantage(s, y)
    return out


def group_metrics(
    scores: np.ndarray, labels: np.ndarray, groups: Mapping[str, np.ndarray], **kw: Any
) -> dict[str, dict[str, Any]]:
    """Metrics per risk group. A group is a boolean mask over the records; its members are scored
    against the non-members inside the mask, or against all non-members when the mask holds none
    (e.g. the init-image group, which contains only members). ``nonmembers`` says which."""
    s, y = _check(scores, labels)
    out = {}
    for name, mask in groups.items():
        m = np.asarray(mask, dtype=bool)
        neg = m & ~y
        which = "group"
        if not neg.any():
            neg, which = ~y, "all"
        sel = (m & y) | neg
        res = attack_metrics(s[sel], y[sel], **kw)
        res["nonmembers"] = which
        out[name] = res
    return out


def calibrated_tpr(
    scores: np.ndarray,
    member: np.ndarray,
    calibration: np.ndarray,
    fpr_target: float,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """TPR and FPR at a threshold chosen on an independent calibration set.

    ``calibration`` marks non-members used only to place the threshold (the highest score that at
    most ⌊fpr·n_cal⌋ calibration scores exceed); the TPR is measured on the members and the FPR on
    the other non-members, each with a two-sided Clopper–Pearson interval. Because the threshold
    does not depend on the evaluated scores, both intervals are unconditional.
    """
    s, y = _check(scores, member)
    cal = np.asarray(calibration, bool) & ~y
    ev = ~y & ~cal
    n_cal = int(cal.sum())
    if n_cal < int(np.ceil(1.0 / fpr_target - 1e-9)) or not y.any() or not ev.any():
        return {
            "tpr": None,
            "tpr_ci": None,
            "fpr": None,
            "fpr_ci": None,
            "threshold": None,
            "reason": f"needs >= {int(np.ceil(1 / fpr_target))} calibration non-members, "
            f"has {n_cal}",
        }
    j = int(np.floor(fpr_target * n_cal + 1e-9))
    thr = float(np.sort(s[cal])[::-1][j])
    tp, n1 = int(np.sum(s[y] > thr)), int(y.sum())
    fp, n0 = int(np.sum(s[ev] > thr)), int(ev.sum())
    t_lo, t_hi = clopper_pearson(tp, n1, alpha)
    f_lo, f_hi = clopper_pearson(fp, n0, alpha)
    return {
        "tpr": tp / n1,
        "tpr_ci": [float(t_lo), float(t_hi)],
        "fpr": fp / n0,
        "fpr_ci": [float(f_lo), float(f_hi)],
        "threshold": thr,
        "reason": None,
    }


def release_metrics(
    scores: np.ndarray,
    member: np.ndarray,
    calibration: np.ndarray,
    groups: Mapping[str, np.ndarray] | None = None,
    fprs: tuple[float, ...] = FPR_TARGETS,
) -> dict[str, Any]:
    """One attack on the custodian's own release (fixed members and non-members): AUC against the
    evaluation non-members, TPR/FPR at thresholds set on the calibration non-members, advantage.
    Descriptive only: membership here was not randomised, so no ε is derived from it."""
    s, y = _check(scores, member)
    cal = np.asarray(calibration, bool) & ~y
    ev_sel = ~cal
    out: dict[str, Any] = {
        "n_members": int(y.sum()),
        "n_nonmembers": int((~y & ~cal).sum()),
        "n_calibration": int(cal.sum()),
    }
    if y.any() and (~y & ~cal).any():
        a, ci = auc_with_ci(s[ev_sel], y[ev_sel])
        out.update(auc=a, auc_ci=list(ci), advantage=advantage(s[ev_sel], y[ev_sel]))
    else:
        out.update(auc=None, auc_ci=None, advantage=None)
    out["tpr_at_fpr"], out["tpr_at_fpr_ci"], out["fpr_achieved"], out["tpr_at_fpr_reason"] = (
        {},
        {},
        {},
        {},
    )
    for f in fprs:
        r = calibrated_tpr(s, y, cal, f)
        out["tpr_at_fpr"][str(f)] = r["tpr"]
        out["tpr_at_fpr_ci"][str(f)] = r["tpr_ci"]
        out["fpr_achieved"][str(f)] = (
            None if r["fpr"] is None else {"fpr": r["fpr"], "ci": r["fpr_ci"]}
        )
        out["tpr_at_fpr_reason"][str(f)] = r["reason"]
    if groups:
        out["groups"] = {}
        for name, mask in groups.items():
            m = np.asarray(mask, bool)
            neg = m & ~y
            which = "group"
            if not (neg & ~cal).any():
                neg, which = ~y, "all"
            sel = (m & y) | neg
            g = release_metrics(s[sel], y[sel], cal[sel], None, fprs)
            g["nonmembers"] = which
            out["groups"][name] = g
    return out
