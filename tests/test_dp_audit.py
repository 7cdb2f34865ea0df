"""DP-RCIG's noised sum audited by the audit's own ε lower bound (issue #13).

Canaries with a gradient-amplifying design: each canary's per-example gradient is 10·C along its
own coordinate of the head-weight gradient (clipped to exactly C, the worst case for the sum: no
other example moves that coordinate). Each canary is IN by a fair coin, the product's
``clip_and_sum`` and ``noisy_mean`` release one noised sum with σ calibrated by the product's
accountant to (ε, δ) for one step at q = 1, and a canary's score is its coordinate of the
release. That one release is (ε, δ)-DP with respect to each canary, so the audit's bound
(audits/epsilon.py, at the same δ) must stay below ε as often as its confidence says, and at a
large ε, where the noise is negligible, it must reach what the audit can show at this size.
"""

import jax
import numpy as np
import pytest
import scipy.stats

from rcig_release.audits import epsilon as E
from rcig_release.rcig import accounting, dp

DELTA = 1e-5
ALPHA = 0.05
M = 1000  # canaries per release
C = 1.0


def _release(seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = rng.random(M) < 0.5
    z = {"w": 10.0 * C * np.eye(M, dtype=np.float32)[:, :, None]}  # [B, F = M, C_out = 1]
    sums = dp.clip_and_sum(z, keep, C)
    noised = dp.noisy_mean(sums, jax.random.PRNGKey(seed), sigma * C, 1.0)
    scores = np.asarray(noised["w"][:, 0], np.float64)
    return scores[keep], scores[~keep]


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
