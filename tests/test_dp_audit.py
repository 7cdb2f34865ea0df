"""DP-RCIG's noised sum audited by the audit's own ε lower bounds (issues #13 and #20).

Canaries with a gradient-amplifying design: each canary's per-example gradient is 10·C along its
own coordinate of the head-weight gradient (clipped to exactly C, the worst case for the sum: no
other example moves that coordinate). Each canary is IN by a fair coin, the product's
``clip_and_sum`` and ``add_noise`` release one noised sum with σ calibrated by the product's
accountant to (ε, δ) for one step at q = 1, and a canary's score is its coordinate of the
release. That one release is (ε, δ)-DP with respect to each canary, so the audit's bounds (at
the same δ) must stay below ε as often as their confidence says, at a large ε, where the noise
is negligible, the game's bound must reach what it can show at this size, and the audit's DP
check (audits/dpcheck.py) must flag the mechanism with σ divided by 10 as a violation of ε = 1
while passing the correct one. The noise here is seeded (``add_noise`` takes the generator) so
that the tests are reproducible; the product draws it from OS entropy.
"""

import numpy as np
import pytest
import scipy.stats

from rcig_release.audits import dpcheck
from rcig_release.audits import epsilon as E
from rcig_release.rcig import accounting, dp
from rcig_release.release.dp import violates

DELTA = 1e-5
ALPHA = 0.05
M = 1000  # canaries per release
C = 1.0


Z = {"w": 10.0 * C * np.eye(M, dtype=np.float32)[:, :, None]}  # [B, F = M, C_out = 1]


def _scores(keep: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """One release of the product's clipped, noised sum; each canary's coordinate of it."""
    sums = dp.clip_and_sum(Z, keep, C)
    noised = dp.add_noise(sums, sigma * C, 1.0, rng)
    return np.asarray(noised["w"][:, 0], np.float64)


def _release(seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = rng.random(M) < 0.5
    scores = _scores(keep, sigma, rng)
    return scores[keep], scores[~keep]


def _canary_game(seed: int, sigma: float, pipelines: int = 16, attacks: int = 6):
    """The audit's game on canaries at the default audit's sizes: ``pipelines`` independent
    releases (each its own coins and noise: 8 targets per fold, so m = 8,000 canaries per fold),
    six attacks as the audit runs by default (one scores a canary by its coordinate of the
    release, the other five are blind), one group. Returns (scores [pipelines, M] per attack,
    keep [pipelines, M], groups)."""
    rng = np.random.default_rng(seed)
    keep = rng.random((pipelines, M)) < 0.5
    scores = {"coordinate": np.stack([_scores(keep[k], sigma, rng) for k in range(pipelines)])}
    for a in range(attacks - 1):
        scores[f"blind_{a}"] = rng.standard_normal((pipelines, M))
    return scores, keep, {"all": np.ones(M, bool)}


def test_clipped_canary_moves_only_its_own_coordinate_by_c():
    sums = dp.clip_and_sum(
        {"w": 10.0 * np.eye(4, dtype=np.float32)[:, :, None]},
        np.array([True, False, True, False]),
        C,
    )
    np.testing.assert_allclose(np.asarray(sums["w"][:, 0]), [C, 0, C, 0], rtol=1e-6)


def test_lower_bound_stays_below_epsilon_1():
    eps = 1.0
    sigma = accounting.calibrate_noise(eps, DELTA, 1.0, 1)
    reps = 20
    above = sum(
        E.epsilon_lower_bound(*_release(s, sigma), delta=DELTA, alpha=ALPHA) > eps
        for s in range(reps)
    )
    # each audit exceeds ε with probability ≤ α; more than the binomial's 99.9 % quantile fails
    assert above <= scipy.stats.binom.ppf(0.999, reps, ALPHA)
    assert above == 0  # in practice the bound is far below ε at this size


@pytest.mark.parametrize("eps", [8.0, 50.0])
def test_lower_bound_approaches_what_the_audit_can_show(eps):
    sigma = accounting.calibrate_noise(eps, DELTA, 1.0, 1)
    s_in, s_out = _release(0, sigma)
    lb = E.epsilon_lower_bound(s_in, s_out, delta=DELTA, alpha=ALPHA)
    ceiling = E.perfect_ranking_epsilon(len(s_in), len(s_out), delta=DELTA, alpha=ALPHA)
    assert lb <= eps
    if eps == 50.0:  # negligible noise: the attack ranks every canary, the bound is the ceiling
        assert lb == pytest.approx(ceiling, rel=1e-6)
    else:  # a real leak the audit finds, below the proven ε
        assert 1.0 < lb < eps


@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_dp_check_flags_sigma_over_10_and_passes_the_correct_mechanism(delta):
    """At ε = 1 and the default audit's sizes the DP check can show more than 1 at the run's δ,
    passes the correct mechanism in every replicate (each would fail with probability ≤ 0.01)
    and flags σ/10 in every one."""
    eps = 1.0
    sigma = accounting.calibrate_noise(eps, delta, 1.0, 1)
    reps = 3
    correct = [
        dpcheck.empirical_epsilon(*_canary_game(s, sigma), delta=delta, alpha=0.01)
        for s in range(reps)
    ]
    weak = [
        dpcheck.empirical_epsilon(*_canary_game(s, sigma / 10), delta=delta, alpha=0.01)
        for s in range(reps)
    ]
    assert all(r["family_size"] == 12 for r in correct + weak)  # 6 attacks × 2 folds
    assert all(r["largest_showable_epsilon"] > 1.5 for r in correct + weak)
    assert not any(violates(r["epsilon_lower_bound"], eps) for r in correct)
    assert all(violates(r["epsilon_lower_bound"], eps) for r in weak)
    assert all(r["attained_by"]["attack"] == "coordinate" for r in weak)
    if delta == 1e-5:
        # the game's grid of rules recomputed at the run's δ (the check before issue #20) could
        # show at most 0.36 here: σ/10 would have passed as consistent
        assert E.max_epsilon(4000, 4000, delta=delta, alpha=0.01 / 12) < 0.5
