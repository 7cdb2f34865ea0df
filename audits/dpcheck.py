"""The audit of a DP run: its game's empirical ε lower bound against the accountant's proven ε.

A DP run's run.json states (ε, δ) proven by the accountant (``rcig_release.release.dp``). The game's
ε lower bound (``epsilon.py``) says, with probability ≥ 1 − α over the audit's coins, that the
pipeline is **not** (ε′, δ′)-DP for any ε′ below it, at the δ′ it was computed at. If the pipeline
is (ε, δ)-DP, the bound at δ′ = δ exceeds ε with probability ≤ α. So the comparison is made at the
run's δ, never at the game's own δ (1e-8 by default): a mechanism that is (ε, δ)-DP is (ε, δ′)-DP
for every δ′ ≥ δ but can need a larger ε at δ′ < δ, so a bound computed at 1e-8 may legitimately
exceed an ε proven at 1e-5.

The bounds are recomputed here at the run's δ over the same family as the game's (attacks ×
{all, init} × 2 folds, each at α/family), so their maximum holds at confidence 1 − α jointly. A
maximum above the proven ε is a ``dp-violation``: with probability ≥ 1 − α the shadow pipelines
are not (ε, δ)-DP, so the mechanism or its accounting has a bug, or an assumption of the proof is
broken (e.g. the shadows did not run the accounted mechanism); it is never a privacy measurement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rcig_release.audits import epsilon, game
from rcig_release.release.dp import (
    VERDICT_CONSISTENT,
    VERDICT_VIOLATION,
    VIOLATION_MEANING,
    validate_dp,
    violates,
)

EPSILON_GROUPS = ("all", "init")


def empirical_epsilon(
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    delta: float,
    alpha: float,
    epsilon_groups: tuple[str, ...] = EPSILON_GROUPS,
) -> dict[str, Any]:
    """The game's largest ε lower bound at ``delta`` (joint confidence 1 − ``alpha``).

    Same family and per-bound level as ``game.statistics`` (so at the game's δ it returns the
    largest ``epsilon_lower_bound`` the game reports). Returns ``epsilon_lower_bound`` (the
    maximum), ``largest_showable_epsilon`` (the largest ``max_epsilon`` over the family: what a
    perfect attack could show at these sizes and this δ; 0 means the check cannot fire),
    ``attained_by`` (attack, group, fold of the maximum, None when it is 0), ``family_size``,
    ``alpha_per_bound``, ``confidence``, ``delta``.
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
                e = epsilon.epsilon_lower_bound(s_in, s_out, delta=delta, alpha=level)
                cap = max(cap, epsilon.max_epsilon(s_in.size, s_out.size, delta=delta, alpha=level))
                if e > best:
                    best, where = e, {"attack": name, "group": g, "fold": f}
    return {
        "epsilon_lower_bound": float(best),
        "largest_showable_epsilon": float(cap),
        "attained_by": where,
        "family_size": int(family),
        "alpha_per_bound": float(level),
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
        "pipeline": "release (the game's shadow pipelines, which re-run the run's configuration)",
        "comparison": (
            "the game's ε lower bounds recomputed at the run's δ (a bound at a smaller δ "
            "may legitimately exceed an ε proven at the run's δ)"
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
