"""ε lower bound of an audit whose memberships are independent fair coins (pure functions).

Game. Each of the ``m = n_in + n_out`` canaries (here a (pipeline, record) pair) was put into
the mechanism's input by its own independent fair coin; the attack gave every canary a score,
higher = more likely IN. ``in_scores`` are the scores of the canaries whose coin said IN,
``out_scores`` the others.

Claim of :func:`epsilon_lower_bound`. With probability at least ``1 - alpha`` over the audit's
coins, the mechanism is **not** (ε', δ)-DP for any ε' < the returned value, with respect to
adding or removing one canary (one record in one pipeline). The probability is over the coins
only: nothing is assumed about the scores' distribution, but the scores must be a function of
the mechanism's outputs and of information independent of the audited coins. A score that
uses other audited canaries' coins (a leave-one-out LiRA calibrated on the other audited
pipelines' keep rows) is outside the theorem, and on a null mechanism such scores gave ε > 0
more often than α (docs/benchmarks.md); calibrate on reference pipelines whose coins are not
audited.

``method="one_run"`` (default): Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1)
training run", as implemented by jax-privacy's ``CanaryScoreAuditor.epsilon_one_run``: guess IN
for the canaries scoring at or above a threshold; under (ε, δ)-DP the number of correct guesses
among r guesses is (up to a δ term of size 2·m·δ) dominated by Binomial(r, e^ε/(1+e^ε)), so a
one-sided binomial test at each threshold gives an ε it rejects.

``method="clopper_pearson"``: jax-privacy's ``epsilon_clopper_pearson`` (Jagielski et al.
2020): ε = ln((TPR_lo − δ)/FPR_hi) from one-sided Clopper–Pearson limits. Its binomial model
treats every canary as an independent trial, which holds when each canary has its own
independent mechanism run; with many canaries per run it is not covered by a theorem.
Kept for comparison; the audit reports ``one_run``.

Thresholds (a deliberate departure from the library's default). The library's default
``Bonferroni()`` divides α by the number of thresholds on the ROC curve's hull, a number
computed *from the labelled scores*; that is not a pre-specified family, and under a null
mechanism (scores independent of membership, m = 1000, α = 0.05) it reported ε > 0 in 5.9 %
of 4000 audits, this module in 2.1 % (docs/benchmarks.md). Here the family is fixed by m alone before looking at the
scores: rule k (k = m/2, m/4, … on a pre-set grid, :func:`top_k_grid`) guesses IN for every
canary scoring at or above the k-th largest of all m scores (labels unused, so each rule is a
post-processing of the output). Each rule is tested with the library's
``threshold_strategy=Explicit(t_k)`` at level ``alpha / len(grid)``: a genuine Bonferroni
correction. Rules whose threshold coincides (ties) are evaluated once but still counted.
Speed: rules are visited in decreasing order of a closed-form ceiling of their bound (the
Clopper–Pearson limit of the precision, i.e. the one-run test without its δ term) and the
search stops once no ceiling exceeds the best bound found, so usually one or two rules go
through the library's root search; the result equals evaluating every rule (up to the
library's root tolerance, 1e-6).
"""

from __future__ import annotations

import functools
import math
import numbers
from importlib import metadata

import numpy as np
import scipy.stats
from jax_privacy.auditing import CanaryScoreAuditor, Explicit

METHODS = ("one_run", "clopper_pearson")

#: ``saturated`` tolerance: a bound within this fraction of ``perfect_ranking_epsilon`` (or
#: within this absolute amount when that is < 1) counts as saturated. The library's root
#: search stops at xtol = 1e-6, so equal inputs agree far closer than this.
SATURATION_TOL = 1e-3

_METHOD_NAMES = {
    "one_run": (
        "one-run (Steinke, Nasr, Jagielski 2023), jax-privacy {v} "
        "CanaryScoreAuditor.epsilon_one_run with Explicit thresholds, "
        "Bonferroni over {g} pre-set top-k rules"
    ),
    "clopper_pearson": (
        "Clopper-Pearson (Jagielski et al. 2020), jax-privacy {v} "
        "CanaryScoreAuditor.epsilon_clopper_pearson with Explicit thresholds, "
        "Bonferroni over {g} pre-set top-k rules"
    ),
}


def jax_privacy_version() -> str:
    return metadata.version("jax-privacy")


def top_k_grid(m: int, alpha: float) -> np.ndarray:
    """Pre-set rule sizes: k = ceil(m / 2^j), j = 1, 2, …, keeping k ≥ k_min.

    k_min = ceil(log2(J / alpha)) with J the number of such k ≥ 1: a rule making k < k_min
    guesses, all correct, has a binomial tail 2^(−k) > alpha / J even at ε = 0, so it could
    not reject anything and would only dilute the correction. The grid depends on m and alpha
    only (never on the scores or labels), so ``len(top_k_grid(m, alpha))`` is an honest
    Bonferroni count. Sorted increasing, unique; never empty (at worst ``[ceil(m / 2)]``).
    One rule per doubling of k: against 2 and 4 per doubling it lost up to 0.36 where the best
    rule is small and gained up to 1.9 where the δ term limits the bound (docs/benchmarks.md).
    """
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    n_halvings = max(1, math.ceil(math.log2(m)))
    ks = np.unique(-(-m // (2 ** np.arange(1, n_halvings + 1, dtype=np.int64))))
    k_min = math.ceil(math.log2(ks.size / alpha))
    kept = ks[ks >= k_min]
    return kept if kept.size else ks[-1:]


def _check_scores(name: str, scores) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def _check_params(delta: float, alpha: float, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, v in (("alpha", alpha), ("delta", delta)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 < v < 1.0:
            raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")


def epsilon_lower_bound(
    in_scores, out_scores, *, delta: float, alpha: float, method: str = "one_run"
) -> float:
    """ε such that, with probability ≥ 1 − alpha over the coins, the mechanism is not (ε', δ)-DP
    for any ε' < ε (add/remove one canary). 0.0 when nothing is rejected.

    The maximum over the pre-set top-k rules of the library's bound at one threshold, each at
    level ``alpha / len(top_k_grid(m, alpha))``, m = number of scores (module docstring).
    """
    _check_params(delta, alpha, method)
    delta, alpha = float(delta), float(alpha)
    s_in = _check_scores("in_scores", in_scores)
    s_out = _check_scores("out_scores", out_scores)
    m = s_in.size + s_out.size
    grid = top_k_grid(m, alpha)
    level = alpha / grid.size
    if method == "clopper_pearson" and not level < 0.5:
        raise ValueError(f"clopper_pearson needs alpha / {grid.size} < 0.5, got alpha={alpha}")

    pooled_desc = np.sort(np.concatenate([s_in, s_out]))[::-1]
    thresholds = np.unique(pooled_desc[grid - 1])  # ties: one evaluation, still counted
    in_sorted, out_sorted = np.sort(s_in), np.sort(s_out)
    tp = s_in.size - np.searchsorted(in_sorted, thresholds, side="left")  # in  >= t
    fp = s_out.size - np.searchsorted(out_sorted, thresholds, side="left")  # out >= t

    if method == "one_run":
        # Upper bound per rule, closed form: without the δ term the one-run test at level ℓ
        # rejects ε exactly when P[Binomial(r, e^ε/(1+e^ε)) ≥ c] ≤ ℓ, i.e. when e^ε/(1+e^ε) is
        # below the one-sided Clopper–Pearson lower limit q_lo = Beta⁻¹(ℓ; c, r − c + 1). The δ
        # term only adds to the p-value, so the library's bound at that rule is ≤ logit(q_lo).
        q_lo = np.where(tp > 0, scipy.stats.beta.ppf(level, np.maximum(tp, 1), fp + 1), 0.0)
        with np.errstate(divide="ignore"):
            ceiling = np.log(q_lo) - np.log1p(-q_lo)  # q_lo < 1 since level > 0
    else:
        # ln((TPR_lo − δ)/FPR_hi) ≤ ln(TPR/FPR): Clopper–Pearson limits bracket the raw rates.
        tpr, fpr = tp / s_in.size, fp / s_out.size
        with np.errstate(divide="ignore", invalid="ignore"):
            ceiling = np.where(tpr > delta, np.log(tpr) - np.log(fpr), -np.inf)

    auditor = CanaryScoreAuditor(s_in, s_out)
    best = 0.0
    for i in np.argsort(-ceiling, kind="stable"):
        if not ceiling[i] > best:  # this rule cannot raise the maximum; neither can the rest
            break
        strategy = Explicit(float(thresholds[i]))
        if method == "one_run":
            eps = auditor.epsilon_one_run(level, delta, threshold_strategy=strategy)
        else:
            eps = auditor.epsilon_clopper_pearson(level, delta, threshold_strategy=strategy)
        best = max(best, float(eps))
    return best


def _check_counts(n_in, n_out) -> None:
    for name, n in (("n_in", n_in), ("n_out", n_out)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")


def max_epsilon(
    n_in: int, n_out: int, *, delta: float, alpha: float, method: str = "one_run"
) -> float:
    """The largest value :func:`epsilon_lower_bound` can return with ``n_in`` IN and ``n_out``
    OUT scores: its value for a perfect attack whose IN scores tie (every IN above every OUT),
    which makes every rule with k ≤ n_in guess exactly the n_in INs. A property of the sample
    sizes, δ and alpha, not a measurement.
    """
    _check_counts(n_in, n_out)
    _check_params(delta, alpha, method)
    return _perfect_bound(int(n_in), int(n_out), float(delta), float(alpha), method, tied=True)


def perfect_ranking_epsilon(
    n_in: int, n_out: int, *, delta: float, alpha: float, method: str = "one_run"
) -> float:
    """The bound of a perfect attack with distinct scores (every IN above every OUT, no ties).

    Its guesses come from the pre-set rules, so its best rule makes the largest grid k ≤ n_in
    guesses rather than n_in: it can lie below :func:`max_epsilon` (by up to one halving of
    the guesses when n_in < m/2). No attack with distinct scores gets more at these sizes: each
    rule then makes exactly k guesses, and the library's bound at a rule grows with its correct
    guesses (checked numerically), which a perfect ranking maximises at every rule at once.
    """
    _check_counts(n_in, n_out)
    _check_params(delta, alpha, method)
    return _perfect_bound(int(n_in), int(n_out), float(delta), float(alpha), method, tied=False)


@functools.lru_cache(maxsize=256)
def _perfect_bound(
    n_in: int, n_out: int, delta: float, alpha: float, method: str, tied: bool
) -> float:
    """Bound of a perfect attack; cached: it depends on the sizes and levels only, and a report
    asks for it once per (attack, group) at the same few sizes."""
    if tied:
        i, o = np.ones(n_in), np.zeros(n_out)
    else:
        i, o = np.arange(n_in, dtype=np.float64) + n_out, np.arange(n_out, dtype=np.float64)
    return epsilon_lower_bound(i, o, delta=delta, alpha=alpha, method=method)


def epsilon_report(
    in_scores, out_scores, *, delta: float, alpha: float, family_size: int, method: str = "one_run"
) -> dict:
    """JSON-ready ε lower bound of one (attack, group) among ``family_size`` reported together.

    The bound is computed at ``alpha_per_test = alpha / family_size``, so that all
    ``family_size`` bounds of the family hold jointly (Bonferroni) with probability ≥
    ``confidence = 1 − alpha``; in particular their maximum does. ``max_epsilon`` is the bound a
    perfect attack could get at the same sizes and level (with tied IN scores),
    ``perfect_ranking_epsilon`` what a perfect ranking with distinct scores gets; ``saturated``
    says the bound reached the latter (within ``SATURATION_TOL``): the number of canaries, not
    the attack, limited it.
    """
    if (
        isinstance(family_size, bool)
        or not isinstance(family_size, (int, np.integer))
        or family_size < 1
    ):
        raise ValueError(f"family_size must be a positive integer, got {family_size!r}")
    _check_params(delta, alpha, method)
    s_in = _check_scores("in_scores", in_scores)
    s_out = _check_scores("out_scores", out_scores)
    level = alpha / int(family_size)
    eps = epsilon_lower_bound(s_in, s_out, delta=delta, alpha=level, method=method)
    cap = max_epsilon(s_in.size, s_out.size, delta=delta, alpha=level, method=method)
    ranking = perfect_ranking_epsilon(
        s_in.size, s_out.size, delta=delta, alpha=level, method=method
    )
    n_rules = int(top_k_grid(s_in.size + s_out.size, level).size)
    return {
        "epsilon_lower_bound": eps,
        "max_epsilon": cap,
        "perfect_ranking_epsilon": ranking,
        "saturated": bool(eps >= ranking - SATURATION_TOL * max(1.0, ranking)),
        "method": _METHOD_NAMES[method].format(v=jax_privacy_version(), g=n_rules),
        "delta": float(delta),
        "confidence": 1.0 - float(alpha),
        "alpha_per_test": level,
        "family_size": int(family_size),
        "n_in": int(s_in.size),
        "n_out": int(s_out.size),
    }
