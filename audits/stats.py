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

- ``tpr_power``: the threshold is not fixed. It is the (j+1)-th highest of the n_out OUT scores,
  so its true FPR U = P(OUT score > threshold) is the (j+1)-th smallest of n_out uniforms:
  U ~ Beta(j+1, n_out − j), whatever the score distribution. Given U = u, each IN guess lies above
  the threshold with probability R(u), R the attack's ROC curve, independently, so
  k | u ~ Binomial(n_in, R(u)), and the power is E_U[P(Binomial(n_in, R(U)) ≥ k_crit)], k_crit the
  exact critical value of the negative hypergeometric null. Computed by integrating over U (midpoint
  rule on U's quantiles). The ROC model under the alternative (``roc``) is stated, because a TPR
  at one FPR does not fix R elsewhere:

  * ``"concave"`` (default, used by the gate): the least favourable *concave* ROC through the
    policy's point (fpr, tpr): the chords from (0, 0) to (fpr, tpr) and from (fpr, tpr) to (1, 1),
    i.e. R(u) = tpr·u/fpr below fpr. Every concave ROC through that point (every likelihood-ratio
    attack, the binormal ROC included) lies on or above it, so the power is a lower bound for
    them. (No bound holds over *all* ROCs: one with R(u) = 0 below fpr has power at most
    P(U ≥ fpr) ≈ ½ at any size.)
  * ``"binormal"``: the equal-variance binormal ROC through the point,
    R(u) = Φ(Φ⁻¹(tpr) − Φ⁻¹(fpr) + Φ⁻¹(u)) (Gaussian IN and OUT scores, as LiRA models them).

  The earlier formula took k ~ Binomial(n_in, tpr) at a fixed threshold (``tpr_power_fixed``,
  kept for comparison): it ignores that the threshold's FPR is often below fpr, and overstated
  the power (0.9993 against 0.75 simulated for TPR 0.02 at FPR 0.001 with 1,440 IN and 1,440 OUT
  guesses; tests/test_audit_power.py).
- ``auc_power``: normal approximation of the one-sided Mann–Whitney test with the Hanley–McNeil
  variance under the alternative; checked against end-to-end simulation (binormal scores, and a
  leak confined to a fraction of the IN guesses) in tests/test_audit_power.py.
"""

from __future__ import annotations

import functools
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


ROC_MODELS = ("concave", "binormal")
#: quantile nodes of the threshold's FPR in ``tpr_power`` (midpoint rule; the integrand is bounded
#: and smooth in the quantile, and 2,048 nodes agree with 16,384 to 1e-4 at the gate's sizes)
_NODES = 2048


def roc_curve_model(u: np.ndarray, fpr: float, tpr: float, roc: str = "concave") -> np.ndarray:
    """TPR at FPR ``u`` of the ROC model ``roc`` through (fpr, tpr) (module docstring)."""
    u = np.asarray(u, np.float64)
    if roc == "concave":
        below = tpr * u / fpr
        above = tpr + (1.0 - tpr) * (u - fpr) / (1.0 - fpr)
        return np.clip(np.where(u <= fpr, below, above), 0.0, 1.0)
    if roc == "binormal":
        shift = stats.norm.ppf(tpr) - stats.norm.ppf(fpr)
        return stats.norm.cdf(shift + stats.norm.ppf(np.clip(u, 1e-300, 1.0)))
    raise ValueError(f"roc must be one of {ROC_MODELS}, got {roc!r}")


@functools.lru_cache(maxsize=4096)
def tpr_power(
    n_in: int, n_out: int, fpr: float, tpr: float, alpha: float, roc: str = "concave"
) -> float:
    """Probability that ``tpr_test`` rejects at level ``alpha`` when the attack's ROC is the model
    ``roc`` through (fpr, tpr), integrated over the threshold's distribution (module docstring).
    0 when the FPR is not resolvable or no k ≤ n_in reaches the level."""
    if roc not in ROC_MODELS:
        raise ValueError(f"roc must be one of {ROC_MODELS}, got {roc!r}")
    if n_in == 0 or not resolvable(n_out, fpr):
        return 0.0
    kc = tpr_critical(n_in, n_out, fpr, alpha)
    if kc is None:
        return 0.0
    j = int(math.floor(fpr * n_out + 1e-9))
    q = (np.arange(_NODES) + 0.5) / _NODES
    u = stats.beta.ppf(q, j + 1, n_out - j)  # the threshold's true FPR, at its quantiles
    return float(np.mean(stats.binom.sf(kc - 1, n_in, roc_curve_model(u, fpr, tpr, roc))))


def tpr_power_fixed(n_in: int, n_out: int, fpr: float, tpr: float, alpha: float) -> float:
    """The earlier, overstated power: k ~ Binomial(n_in, tpr) as if the threshold's FPR were
    exactly ``fpr``. For comparison only (tests, benchmarks); the gate uses ``tpr_power``."""
    if n_in == 0 or not resolvable(n_out, fpr):
        return 0.0
    kc = tpr_critical(n_in, n_out, fpr, alpha)
    return 0.0 if kc is None else float(stats.binom.sf(kc - 1, n_in, tpr))


AUC_MODELS = ("both", "binormal", "fraction")


def _auc_critical_u(n_in: int, n_out: int, alpha: float) -> float:
    """The Mann–Whitney U at and above which ``auc_test`` rejects at ``alpha`` (scipy's
    asymptotic test: normal null with continuity correction, no ties)."""
    sd0 = math.sqrt(n_in * n_out * (n_in + n_out + 1) / 12.0)
    return n_in * n_out / 2.0 + 0.5 + float(stats.norm.isf(alpha)) * sd0


def _auc_power_binormal(n_in: int, n_out: int, auc: float, alpha: float) -> float:
    """Normal approximation with the Hanley–McNeil variance under the alternative (their
    exponential model; close to the binormal one)."""
    crit = _auc_critical_u(n_in, n_out, alpha) / (n_in * n_out)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var1 = (auc * (1 - auc) + (n_in - 1) * (q1 - auc * auc) + (n_out - 1) * (q2 - auc * auc)) / (
        n_in * n_out
    )
    return float(stats.norm.sf((crit - auc) / math.sqrt(max(var1, 1e-12))))


def _auc_power_fraction(n_in: int, n_out: int, auc: float, alpha: float) -> float:
    """A leak confined to a fraction π = 2(AUC − ½) of the IN guesses, which rank above every OUT
    guess; the others are exchangeable with the OUT guesses. Exact over the number L ~
    Binomial(n_in, π) of leaking guesses; given L, U = L·n_out + U′ with U′ the null Mann–Whitney
    statistic of the n_in − L others (normal, with continuity correction)."""
    pi = min(1.0, max(0.0, 2.0 * auc - 1.0))
    crit = _auc_critical_u(n_in, n_out, alpha)
    ell = np.arange(n_in + 1)
    rest = n_in - ell
    mean = rest * n_out / 2.0
    sd = np.sqrt(rest * n_out * (rest + n_out + 1) / 12.0)
    need = crit - ell * n_out  # U′ must reach this
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(sd > 0, stats.norm.sf((np.ceil(need - 1e-9) - 0.5 - mean) / sd), 0.0)
    tail = np.where(need <= 0, 1.0, tail)
    return float(np.sum(stats.binom.pmf(ell, n_in, pi) * tail))


def auc_power(n_in: int, n_out: int, auc: float, alpha: float, model: str = "both") -> float:
    """Probability that the one-sided Mann–Whitney test (``auc_test``) rejects at level ``alpha``
    when the true AUC is ``auc``. ``model``: ``"binormal"`` (normal approximation, Hanley–McNeil
    variance), ``"fraction"`` (the leak confined to a fraction of the IN guesses, computed
    exactly over that fraction's size), ``"both"`` (default, used by the gate): the smaller of the
    two. At small sizes the fraction model's power is the lower one (its U is skewed towards
    small values); both agree with end-to-end simulation (tests/test_audit_power.py)."""
    if model not in AUC_MODELS:
        raise ValueError(f"model must be one of {AUC_MODELS}, got {model!r}")
    if n_in == 0 or n_out == 0:
        return 0.0
    if model == "binormal":
        return _auc_power_binormal(n_in, n_out, auc, alpha)
    if model == "fraction":
        return _auc_power_fraction(n_in, n_out, auc, alpha)
    return min(
        _auc_power_binormal(n_in, n_out, auc, alpha), _auc_power_fraction(n_in, n_out, auc, alpha)
    )
