"""Tests of "the attack is at chance" on the audit game's guesses, and their power.

In one fold of the game (docs/audit.md) every guess is a (target pipeline, record) pair whose
membership was drawn by an independent fair coin, and whose score does not depend on that coin
unless the pipeline leaks it. So under H0 ("no leak") the labels are exchangeable given the scores:
conditionally on the scores and on the number of IN guesses, the IN set is a uniformly random
subset. Both tests below are exact (or asymptotically exact) under exactly that, and nothing else.

- ``auc_test``: one-sided Mann–Whitney U test (scipy), i.e. H0: AUC = 0.5 against AUC > 0.5.
- ``tpr_test``: TPR at a target FPR. The threshold is the (j+1)-th highest OUT score with
  j = ⌊fpr·n_out⌋ (empirical FPR ≤ fpr); the statistic is k, the number of IN guesses strictly
  above it. Under H0, k is the number of INs drawn before the (j+1)-th OUT when the guesses are
  read in a uniformly random order: negative hypergeometric (scipy ``nhypergeom``), so the p-value
  is exact (ties are counted against the attack, which only makes it conservative).

Power (used by the gate to decide whether a rule is decidable at the audit's sizes):
``auc_power`` (normal approximation with the Hanley–McNeil variance under the alternative) and
``tpr_power`` (k ~ Binomial(n_in, tpr) at the threshold, exact critical value under H0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def _split(in_scores: Any, out_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(in_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(out_scores, dtype=np.float64).reshape(-1)
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores contain NaN")
    return a, b


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC (ties count one half) from ranks: the Mann–Whitney U over n_in·n_out. The same
    value as sklearn's ``roc_auc_score`` without its input validation (used in inner loops)."""
    y = np.asarray(labels, bool).reshape(-1)
    r = stats.rankdata(np.asarray(scores, np.float64).reshape(-1))
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auc_test(in_scores: Any, out_scores: Any) -> dict[str, Any]:
    """AUC (ties count one half) and the one-sided Mann–Whitney p-value of H0: AUC = 0.5."""
    a, b = _split(in_scores, out_scores)
    if a.size == 0 or b.size == 0:
        return {"auc": None, "p_value": None, "n_in": int(a.size), "n_out": int(b.size)}
    res = stats.mannwhitneyu(a, b, alternative="greater", method="asymptotic")
    return {
        "auc": float(res.statistic) / (a.size * b.size),
        "p_value": float(res.pvalue),
        "n_in": int(a.size),
        "n_out": int(b.size),
    }


def resolvable(n_out: int, fpr: float) -> bool:
    """A TPR at ``fpr`` needs at least 1/fpr OUT guesses (else no threshold has FPR ≤ fpr > 0)."""
    return n_out >= math.ceil(1.0 / fpr - 1e-9)


def tpr_test(in_scores: Any, out_scores: Any, fpr: float) -> dict[str, Any]:
    """TPR at empirical FPR ≤ ``fpr`` and the exact p-value of H0 (labels exchangeable)."""
    a, b = _split(in_scores, out_scores)
    n_in, n_out = int(a.size), int(b.size)
    base = {"n_in": n_in, "n_out": n_out, "fpr_target": fpr}
    if n_in == 0 or not resolvable(n_out, fpr):
        return {
            **base,
            "tpr": None,
            "fpr": None,
            "k": None,
            "p_value": None,
            "reason": f"needs >= {math.ceil(1 / fpr)} OUT guesses and one IN, has {n_out}",
        }
    j = int(math.floor(fpr * n_out + 1e-9))
    thr = np.sort(b)[::-1][j]  # the (j+1)-th highest OUT score: at most j OUT scores above it
    k = int(np.sum(a > thr))
    fp = int(np.sum(b > thr))
    p = float(stats.nhypergeom(n_in + n_out, n_in, j + 1).sf(k - 1)) if k > 0 else 1.0
    return {
        **base,
        "tpr": k / n_in,
        "fpr": fp / n_out,
        "k": k,
        "p_value": min(1.0, p),
        "reason": None,
    }


def tpr_critical(n_in: int, n_out: int, fpr: float, alpha: float) -> int | None:
    """Smallest k whose H0 p-value P(K ≥ k) is ≤ alpha (None when no k ≤ n_in reaches it)."""
    j = int(math.floor(fpr * n_out + 1e-9))
    d = stats.nhypergeom(n_in + n_out, n_in, j + 1)
    k = int(d.isf(alpha)) + 1  # isf: the smallest x with P(K > x) <= alpha
    while k > 1 and d.sf(k - 2) <= alpha:  # guard the discrete boundary both ways
        k -= 1
    while k <= n_in and d.sf(k - 1) > alpha:
        k += 1
    return k if k <= n_in else None


def tpr_power(n_in: int, n_out: int, fpr: float, tpr: float, alpha: float) -> float:
    """Probability that ``tpr_test`` rejects at level ``alpha`` when the attack's TPR at that FPR
    is ``tpr`` (k ~ Binomial(n_in, tpr)). 0 when the FPR is not resolvable."""
    if n_in == 0 or not resolvable(n_out, fpr):
        return 0.0
    kc = tpr_critical(n_in, n_out, fpr, alpha)
    return 0.0 if kc is None else float(stats.binom.sf(kc - 1, n_in, tpr))


def auc_power(n_in: int, n_out: int, auc: float, alpha: float) -> float:
    """Probability that the one-sided Mann–Whitney test rejects at level ``alpha`` when the true
    AUC is ``auc`` (normal approximation; Hanley–McNeil variance under the alternative)."""
    if n_in == 0 or n_out == 0:
        return 0.0
    se0 = math.sqrt((n_in + n_out + 1) / (12.0 * n_in * n_out))
    crit = 0.5 + stats.norm.isf(alpha) * se0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var1 = (auc * (1 - auc) + (n_in - 1) * (q1 - auc * auc) + (n_out - 1) * (q2 - auc * auc)) / (
        n_in * n_out
    )
    se1 = math.sqrt(max(var1, 1e-12))
    return float(stats.norm.sf((crit - auc) / se1))
