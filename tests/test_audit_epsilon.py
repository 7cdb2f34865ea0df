"""ε lower bound (audits/epsilon.py) against mechanisms whose ε is known exactly.

Every simulated canary gets an independent fair coin (IN or OUT), as in the audit's game; the
bound's guarantee is over these coins, so it is checked by repeating the audit with fresh coins.
"""

import itertools
import json
import math

import dp_accounting
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from jax_privacy.auditing import CanaryScoreAuditor, Explicit

from rcig_release.audits import epsilon as E

ALPHA = 0.05
DELTA = 1e-5
REPS = 200


def _coins(rng, m):
    return rng.random(m) < 0.5


def randomised_response(rng, m, eps):
    """Score = the membership bit, flipped with probability 1/(1+e^ε): exactly ε-DP per canary."""
    keep = _coins(rng, m)
    truthful = rng.random(m) < math.exp(eps) / (1.0 + math.exp(eps))
    s = np.where(truthful, keep, ~keep).astype(float)
    return s[keep], s[~keep]


def gaussian(rng, m, mu):
    """Score = membership·μ + N(0, 1): the Gaussian mechanism with sensitivity μ, σ = 1."""
    keep = _coins(rng, m)
    s = keep * mu + rng.standard_normal(m)
    return s[keep], s[~keep]


def null(rng, m):
    keep = _coins(rng, m)
    s = rng.standard_normal(m)
    return s[keep], s[~keep]


def gaussian_true_epsilon(mu, delta):
    """ε(δ) of the Gaussian mechanism, solved from the analytic curve (Balle & Wang 2018):
    δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ)."""
    phi = scipy.stats.norm.cdf

    def gap(eps):
        return phi(mu / 2 - eps / mu) - math.exp(eps) * phi(-mu / 2 - eps / mu) - delta

    return scipy.optimize.brentq(gap, 0.0, 100.0, xtol=1e-12)


def allowed_violations(reps, alpha, p_false_alarm=1e-3):
    """Largest violation count still consistent with a rate ≤ alpha (one-sided binomial test)."""
    return int(scipy.stats.binom.isf(p_false_alarm, reps, alpha))


def count_violations(draw, true_eps, seed, estimator=None, reps=REPS):
    rng = np.random.default_rng(seed)
    est = estimator or (lambda i, o: E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA))
    return sum(est(*draw(rng)) > true_eps + 1e-9 for _ in range(reps))


# --- validity: bound ≤ true ε in ≥ 1 − alpha of the audits ------------------------------------


@pytest.mark.parametrize("eps", [1.0, 2.0, 4.0])
def test_valid_on_randomised_response(eps):
    v = count_violations(lambda rng: randomised_response(rng, 1000, eps), eps, seed=int(eps))
    assert v <= allowed_violations(REPS, ALPHA), v


@pytest.mark.parametrize("mu", [0.5, 1.0])
def test_valid_on_gaussian_mechanism(mu):
    true_eps = dp_accounting.get_epsilon_gaussian(1.0 / mu, DELTA)
    # dp_accounting's value and the analytic curve agree, so the reference ε is not one
    # library's word.
    assert true_eps == pytest.approx(gaussian_true_epsilon(mu, DELTA), rel=1e-3)
    v = count_violations(lambda rng: gaussian(rng, 1000, mu), true_eps, seed=10 + int(10 * mu))
    assert v <= allowed_violations(REPS, ALPHA), v


def test_null_mechanism_gives_zero():
    # Scores independent of membership: the mechanism is (0, 0)-DP, so any ε > 0 is false.
    v = count_violations(lambda rng: null(rng, 1000), 0.0, seed=7)
    assert v <= allowed_violations(REPS, ALPHA), v


def test_validity_check_catches_an_overclaiming_estimator():
    # The same harness fails a point estimate (ln TPR/FPR at the best threshold, no
    # confidence): the validity tests above can fail.
    def point_estimate(i, o):
        return float(CanaryScoreAuditor(i, o).epsilon_raw_counts(min_count=1))

    v = count_violations(
        lambda rng: randomised_response(rng, 1000, 2.0),
        2.0,
        seed=3,
        estimator=point_estimate,
        reps=100,
    )
    assert v > allowed_violations(100, ALPHA)


def test_clopper_pearson_valid_on_randomised_response():
    def cp(i, o):
        return E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA, method="clopper_pearson")

    v = count_violations(
        lambda rng: randomised_response(rng, 1000, 2.0), 2.0, seed=4, estimator=cp, reps=100
    )
    assert v <= allowed_violations(100, ALPHA), v


# --- power: close to the truth when the signal is strong ----------------------------------------


@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_near_truth_with_many_canaries(eps):
    # 20,000 canaries, ~10,000 guesses at the best rule: the precision's standard error is
    # ≈ 0.003, i.e. ≈ 0.03 in ε; at level 0.05/11 (z ≈ 2.6) and with the δ term the bound sits
    # ≈ 0.05–0.08 below ε (measured 0.94–0.99·ε over 5 seeds), so 0.9·ε leaves room.
    rng = np.random.default_rng(100 + int(eps))
    lb = E.epsilon_lower_bound(*randomised_response(rng, 20_000, eps), delta=DELTA, alpha=ALPHA)
    assert 0.9 * eps < lb <= eps


# --- max_epsilon ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_in,n_out", [(5, 7), (50, 50), (480, 520), (520, 480)])
def test_max_epsilon_is_the_perfect_attack(n_in, n_out):
    # Another perfect configuration than max_epsilon's own 1/0 scores: tied INs above
    # distinct OUTs.
    perfect = E.epsilon_lower_bound(
        np.full(n_in, 5.0), np.arange(n_out) - n_out, delta=DELTA, alpha=ALPHA
    )
    cap = E.max_epsilon(n_in, n_out, delta=DELTA, alpha=ALPHA)
    assert cap == pytest.approx(perfect, abs=1e-6)
    # A perfect ranking with distinct scores reaches at most the cap: its best rule guesses
    # the largest pre-set k ≤ n_in (480 < m/2: k = 250 of the 480 INs, a visibly lower bound).
    ranking = E.perfect_ranking_epsilon(n_in, n_out, delta=DELTA, alpha=ALPHA)
    assert ranking <= cap + 1e-9
    if n_in == 480:
        assert ranking < cap - 0.3


def test_max_epsilon_grows_with_sample_size():
    # With δ small against 1/m. (The one-run δ term is 2·m·δ: at δ = 1e-5 the cap levels off,
    # docs/audit.md.)
    caps = [E.max_epsilon(n, n, delta=1e-10, alpha=ALPHA) for n in (10, 50, 500, 5000)]
    assert all(b > a for a, b in itertools.pairwise(caps)), caps


def test_max_epsilon_bounds_every_configuration():
    # Every (IN above, OUT above) count pair at n_in = n_out = 12, plus random score sets.
    n_in, n_out = 12, 12
    cap = E.max_epsilon(n_in, n_out, delta=DELTA, alpha=ALPHA)
    assert cap > 0
    for c in range(n_in + 1):
        for f in range(n_out + 1):
            i = np.r_[np.ones(c), np.zeros(n_in - c)]
            o = np.r_[np.ones(f), np.zeros(n_out - f)]
            assert E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA) <= cap + 1e-9
    rng = np.random.default_rng(5)
    n_in, n_out = 300, 300
    cap = E.max_epsilon(n_in, n_out, delta=DELTA, alpha=ALPHA)
    for mu in (0.0, 1.0, 3.0, 10.0):
        for _ in range(5):
            i = mu + rng.standard_normal(n_in)
            o = rng.standard_normal(n_out)
            assert E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA) <= cap + 1e-9


# --- implementation properties -----------------------------------------------------------------


def test_threshold_grid_is_fixed_by_m_and_alpha():
    # m = 1000: k = ceil(1000/2^j) = 500, 250, 125, 63, 32, 16, 8, 4, 2, 1 (J = 10);
    # k_min = ceil(log2(10 / 0.05)) = 8, since 2^-k > 0.05/10 for k < 8.
    assert E.top_k_grid(1000, 0.05).tolist() == [8, 16, 32, 63, 125, 250, 500]
    # alpha = 0.05/30: k_min = ceil(log2(10·600)) = 13.
    assert E.top_k_grid(1000, 0.05 / 30).tolist() == [16, 32, 63, 125, 250, 500]
    assert E.top_k_grid(1, 0.05).tolist() == [1]
    assert E.top_k_grid(10, 0.05).tolist() == [5]  # no k ≥ k_min: the largest rule is kept


def test_pruned_search_equals_every_rule():
    # The fast search returns the maximum over all pre-set rules, each through the library.
    rng = np.random.default_rng(6)
    for mu, m in ((0.5, 400), (1.5, 1000), (4.0, 300)):
        i, o = gaussian(rng, m, mu)
        grid = E.top_k_grid(m, ALPHA)
        pooled = np.sort(np.r_[i, o])[::-1]
        aud = CanaryScoreAuditor(i, o)
        full = max(
            aud.epsilon_one_run(
                ALPHA / grid.size, DELTA, threshold_strategy=Explicit(float(pooled[k - 1]))
            )
            for k in grid
        )
        assert E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA) == pytest.approx(
            max(full, 0.0), abs=1e-9
        )


def test_report_family_correction_and_keys():
    rng = np.random.default_rng(8)
    i, o = gaussian(rng, 2000, 2.0)
    rep = E.epsilon_report(i, o, delta=DELTA, alpha=ALPHA, family_size=20)
    json.dumps(rep)
    assert set(rep) == {
        "epsilon_lower_bound",
        "max_epsilon",
        "perfect_ranking_epsilon",
        "saturated",
        "method",
        "delta",
        "confidence",
        "alpha_per_test",
        "family_size",
        "n_in",
        "n_out",
    }
    assert rep["alpha_per_test"] == pytest.approx(ALPHA / 20)
    assert rep["epsilon_lower_bound"] == E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA / 20)
    assert rep["max_epsilon"] == E.max_epsilon(i.size, o.size, delta=DELTA, alpha=ALPHA / 20)
    assert 0 < rep["epsilon_lower_bound"] < E.epsilon_lower_bound(i, o, delta=DELTA, alpha=ALPHA)
    assert rep["saturated"] is False
    assert rep["confidence"] == pytest.approx(0.95)
    assert (rep["n_in"], rep["n_out"]) == (i.size, o.size)
    assert "jax-privacy 2.0" in rep["method"] and "one-run" in rep["method"]


def test_report_saturated():
    perfect = E.epsilon_report(
        np.full(40, 3.0), np.zeros(60), delta=DELTA, alpha=ALPHA, family_size=2
    )
    assert perfect["saturated"] and perfect["epsilon_lower_bound"] == perfect["max_epsilon"] > 0
    # A perfect ranking with distinct scores is saturated too, although with n_in < m/2 its
    # bound stays below max_epsilon (test above).
    ranked = E.epsilon_report(
        np.arange(400) + 600.0, np.arange(600.0), delta=DELTA, alpha=ALPHA, family_size=2
    )
    assert ranked["saturated"] and ranked["epsilon_lower_bound"] < ranked["max_epsilon"] - 0.1
    # One OUT above every IN and one IN below every OUT: not saturated.
    near = E.epsilon_report(
        np.r_[np.arange(399) + 600.0, -1.0],
        np.r_[np.arange(599.0), 1e4],
        delta=DELTA,
        alpha=ALPHA,
        family_size=2,
    )
    assert not near["saturated"]
    # Too few canaries to reject anything: the cap is 0, so any result is saturated.
    tiny = E.epsilon_report([1.0, 2.0], [0.0], delta=DELTA, alpha=ALPHA, family_size=1)
    assert tiny["max_epsilon"] == 0.0 and tiny["saturated"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_scores=[], out_scores=[0.0]), "in_scores is empty"),
        (dict(in_scores=[1.0], out_scores=[]), "out_scores is empty"),
        (dict(in_scores=[1.0, np.nan], out_scores=[0.0]), "non-finite"),
        (dict(in_scores=[1.0], out_scores=[np.inf]), "non-finite"),
        (dict(in_scores=[[1.0]], out_scores=[0.0]), "one-dimensional"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=1.0), "alpha"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(method="gdp"), "method"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(delta=True), "delta"),
    ],
)
def test_input_validation(kwargs, match):
    args = dict(in_scores=[1.0, 2.0], out_scores=[0.0, 0.5], delta=DELTA, alpha=ALPHA)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        E.epsilon_lower_bound(args.pop("in_scores"), args.pop("out_scores"), **args)


def test_numpy_scalars_accepted():
    a = E.epsilon_lower_bound(
        np.r_[1.0, 2.0], np.r_[0.0], delta=np.float32(1e-5), alpha=np.float64(0.05)
    )
    assert a == E.epsilon_lower_bound([1.0, 2.0], [0.0], delta=1e-5, alpha=0.05)


def test_input_validation_counts():
    with pytest.raises(ValueError, match="n_in"):
        E.max_epsilon(0, 5, delta=DELTA, alpha=ALPHA)
    with pytest.raises(ValueError, match="n_out"):
        E.max_epsilon(5, 2.5, delta=DELTA, alpha=ALPHA)
    with pytest.raises(ValueError, match="n_in"):
        E.perfect_ranking_epsilon(True, 5, delta=DELTA, alpha=ALPHA)
    with pytest.raises(ValueError, match="family_size"):
        E.epsilon_report([1.0], [0.0], delta=DELTA, alpha=ALPHA, family_size=0)
