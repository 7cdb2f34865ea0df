"""The audit of a DP run: a pre-registered one-run test of the proven (ε, δ) on the game's scores.

A DP run's run.json states (ε, δ) proven by the accountant (``rcig_release.release.dp``). If the
pipeline is (ε, δ)-DP, a one-run ε lower bound (Steinke, Nasr & Jagielski 2023, through
jax-privacy's ``CanaryScoreAuditor.epsilon_one_run``) computed **at the run's δ** exceeds ε with
probability at most its level. (At a smaller δ′ a correct mechanism can legitimately need a
larger ε, so the game's own bounds at δ′ = 1e-8 are not compared.)

Why a check of its own, not the game's bounds recomputed at δ. The one-run test's p-value is
β + 2·m·δ·a, with m the canaries, β the binomial tail of the guesses and a ≈ 1/(r·(1 − p_ε))
for r guesses at precision p_ε = e^ε/(1 + e^ε): so the δ term is about 2·(m/r)·(1 + e^ε)·δ and
must stay below the level of the test. The game's bounds are at α / (attacks × groups × folds)
and Bonferroni over a top-k grid of about log₂ m rules (down to k of a few dozen, m/r in the
hundreds): at δ = 1e-5 that left almost nothing to show (0.36 for a perfect attack over 8,000
canaries). This check fixes its family before any score is seen: the attacks the audit ran, the
groups ``all`` and ``init`` (when present; a DP run has no init records), both folds, and in
each (attack, group, fold) bound only the two rules ``RULE_FRACTIONS`` ("guess IN for the
canaries scoring at or above the k-th largest of the m scores", k = ⌈m/2⌉ and ⌈m/8⌉), each at
α / (family × 2). With r ≥ m/8 guesses the δ term stays near 16·(1 + e^ε)·δ, so a perfect attack
shows ε ≈ 2.4 over 8,000 canaries at δ = 1e-5 (4.9 at 1e-6) with the default six attacks, and
2.6 over 400 canaries: at ε = 1 the check can fire. ``largest_showable_epsilon`` is that
perfect-attack value at the audit's own sizes.

A bound above the proven ε is a ``dp-violation``: with probability ≥ 1 − α the shadow pipelines
are not (ε, δ)-DP, so the mechanism or its accounting has a bug, or an assumption of the proof
is broken (e.g. the shadows did not run the accounted mechanism); it is never a privacy
measurement. The canaries are (target pipeline, record) pairs of one fold, with independent fair
coins, scored without reading the fold's coins (game.py), as the theorem needs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from jax_privacy.auditing import CanaryScoreAuditor, Explicit

from rcig_release.audits import game
from rcig_release.release.dp import (
    VERDICT_CONSISTENT,
    VERDICT_VIOLATION,
    VIOLATION_MEANING,
    validate_dp,
    violates,
)

EPSILON_GROUPS = ("all", "init")
# The pre-registered guess rules of every bound: k = ⌈m / f⌉ top-scoring canaries, f in here.
RULE_FRACTIONS = (2, 8)
METHOD = (
    "one-run (Steinke, Nasr, Jagielski 2023), jax-privacy CanaryScoreAuditor.epsilon_one_run "
    "at the run's δ; per (attack, group, fold): top-k rules k = ⌈m/2⌉, ⌈m/8⌉ fixed in advance, "
    "Bonferroni over rules × the family"
)


def rule_sizes(m: int) -> list[int]:
    """The guess counts of the pre-registered rules for m canaries (a function of m only)."""
    return [max(1, -(-m // f)) for f in RULE_FRACTIONS]


def preregistered_bound(s_in, s_out, *, delta: float, level: float) -> float:
    """The one-run ε lower bound at ``delta`` of the pre-registered rules, each at
    ``level / len(RULE_FRACTIONS)``: with probability ≥ 1 − ``level`` over the coins, an
    (ε′, δ)-DP mechanism gives at most ε′. 0.0 when no rule rejects anything."""
    s_in, s_out = np.asarray(s_in, np.float64), np.asarray(s_out, np.float64)
    pooled = np.sort(np.concatenate([s_in, s_out]))[::-1]
    auditor = CanaryScoreAuditor(s_in, s_out)
    per_rule = level / len(RULE_FRACTIONS)
    best = 0.0
    for t in sorted({float(pooled[k - 1]) for k in rule_sizes(pooled.size)}):
        eps = auditor.epsilon_one_run(per_rule, delta, threshold_strategy=Explicit(t))
        best = max(best, float(eps))
    return best


@functools.lru_cache(maxsize=256)
def showable(n_in: int, n_out: int, delta: float, level: float) -> float:
    """The largest value ``preregistered_bound`` can take with these sizes: a perfect attack
    whose IN scores tie above every OUT score (each rule with k ≤ n_in then guesses exactly the
    n_in INs, all correct; more correct guesses only raise the bound)."""
    return preregistered_bound(np.ones(n_in), np.zeros(n_out), delta=delta, level=level)


def empirical_epsilon(
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    delta: float,
    alpha: float,
    epsilon_groups: tuple[str, ...] = EPSILON_GROUPS,
) -> dict[str, Any]:
    """The pre-registered check's largest ε lower bound at ``delta`` (joint confidence 1 − α).

    ``scores[attack]`` and ``keep`` are [pipelines, records] (game.play's); the family is the
    attacks × the groups of ``epsilon_groups`` present × the folds, as the game's, each bound at
    α / family over the rules ``RULE_FRACTIONS``. Returns ``epsilon_lower_bound`` (the maximum),
    ``largest_showable_epsilon`` (the largest ``showable`` over the family: what a perfect
    attack could show at these sizes and this δ; below the proven ε means a violation of that
    size could not be seen), ``attained_by`` (attack, group, fold of the maximum, None when it
    is 0), ``family_size``, ``alpha_per_bound``, ``rules``, ``method``, ``confidence``, ``delta``.
    """
    eps_groups = [g for g in groups if g in epsilon_groups]
    family = max(1, len(scores) * len(eps_groups) * game.N_FOLDS)
    level = alpha / family
    best, cap, where = 0.0, 0.0, None
    for name, s in scores.items():
        s = np.asarray(s, np.float64)
        for g in eps_groups:
            mask = np.asarray(groups[g], bool)
            for f, (tg, _) in enumerate(game.folds(s.shape[0])):
                sub, lab = s[tg][:, mask], np.asarray(keep[tg][:, mask], bool)
                s_in, s_out = sub[lab], sub[~lab]
                if not (s_in.size and s_out.size):
                    continue
                e = preregistered_bound(s_in, s_out, delta=delta, level=level)
                cap = max(cap, showable(s_in.size, s_out.size, float(delta), float(level)))
                if e > best:
                    best, where = e, {"attack": name, "group": g, "fold": f}
    return {
        "epsilon_lower_bound": float(best),
        "largest_showable_epsilon": float(cap),
        "attained_by": where,
        "family_size": int(family),
        "alpha_per_bound": float(level),
        "rules": [f"top ⌈m/{f}⌉" for f in RULE_FRACTIONS],
        "method": METHOD,
        "confidence": 1.0 - float(alpha),
        "delta": float(delta),
    }


def dp_section(
    run_dp: Mapping,
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    alpha: float,
) -> dict[str, Any]:
    """audit.json's ``dp``: the run's proven (ε, δ) beside the game's empirical lower bound at that
    δ, and the verdict ``consistent`` or ``dp-violation``."""
    dp = validate_dp(run_dp)
    emp = empirical_epsilon(scores, keep, groups, delta=float(dp["delta"]), alpha=alpha)
    lb, proven = emp["epsilon_lower_bound"], float(dp["epsilon"])
    bad = violates(lb, proven)
    return {
        "proven_epsilon": proven,
        "delta": float(dp["delta"]),
        "empirical_epsilon_lower_bound": lb,
        "confidence": emp["confidence"],
        "consistent": not bad,
        "verdict": VERDICT_VIOLATION if bad else VERDICT_CONSISTENT,
        "largest_showable_epsilon": emp["largest_showable_epsilon"],
        "attained_by": emp["attained_by"],
        "family_size": emp["family_size"],
        "alpha_per_bound": emp["alpha_per_bound"],
        "rules": emp["rules"],
        "method": emp["method"],
        "pipeline": "release (the game's shadow pipelines, which re-run the run's configuration)",
        "comparison": (
            "one-run ε lower bounds of pre-registered top-k rules on the game's scores, at the "
            "run's δ (a bound at a smaller δ may legitimately exceed an ε proven at the run's δ)"
        ),
        "meaning": (
            "the empirical lower bound exceeds the accountant's proven ε: " + VIOLATION_MEANING
        )
        if bad
        else (
            "the empirical lower bound does not exceed the proven ε, as it must not for a correct "
            "mechanism; it does not show that the proven ε is tight"
        ),
    }
