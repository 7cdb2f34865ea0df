"""The audit's game: its tests are valid under "no leak" and detect planted leaks; LiRA's shared
variance keeps extreme IN records IN; the folds never score a guess with its own fold's coins."""

import numpy as np
import pytest
from scipy import stats as sps

from rcig_release.audits import attacks as A
from rcig_release.audits import game, stats


def _null_rate(test, reps=1500, n_in=60, n_out=140, level=0.05, seed=0):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        s = rng.standard_normal(n_in + n_out)
        lab = rng.permutation(np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)])
        p = test(s[lab], s[~lab])
        hits += p is not None and p <= level
    return hits / reps


def _binom_upper(rate_claim, reps):
    """A count above this happens with probability < 0.001 when the true rate is rate_claim."""
    return sps.binom.isf(0.001, reps, rate_claim) / reps


def test_auc_test_is_valid_under_the_null():
    rate = _null_rate(lambda a, b: stats.auc_test(a, b)["p_value"])
    assert rate <= _binom_upper(0.05, 1500)


def test_tpr_test_is_valid_under_the_null_and_nearly_exact():
    rate = _null_rate(lambda a, b: stats.tpr_test(a, b, 0.05)["p_value"], level=0.05)
    assert rate <= _binom_upper(0.05, 1500)
    assert rate >= 0.02  # exact, not vacuous (a discrete test sits a little below its level)


def test_tpr_test_counts_and_threshold():
    out = np.arange(100.0)  # j = floor(0.01 * 100) = 1: threshold is the 2nd highest OUT (98)
    r = stats.tpr_test(np.array([99.5, 98.5, 98.0, 3.0]), out, 0.01)
    assert r["k"] == 2 and r["tpr"] == 0.5 and r["fpr"] == 0.01
    assert stats.tpr_test([1.0], np.arange(50.0), 0.01)["p_value"] is None  # unresolvable


# The power formulas are tested end to end in tests/test_audit_power.py (the earlier test here
# placed the IN scores relative to the realised threshold, so it could not see the threshold vary).


def test_lira_shared_variance_ranks_an_extreme_in_record_above_every_out():
    rng = np.random.default_rng(3)
    K, N = 8, 50
    keep = np.zeros((K, N), bool)
    keep[:4] = True
    # OUT observations widely spread, IN observations tight and higher: sigma_in < sigma_out
    shadow = np.where(
        keep, 2.0 + 0.1 * rng.standard_normal((K, N)), 0.0 + 1.0 * rng.standard_normal((K, N))
    )
    target = rng.standard_normal(N)  # OUT-like records
    target[0] = 6.0  # an extreme IN record (a memorised init image: far beyond the IN mean)
    s = A.lira_online(target, shadow, keep, global_variance=True)
    assert s[0] > s[1:].max()
    # the separate-variance form it replaces would score it as OUT
    mu_in, mu_out = shadow[:4].mean(0), shadow[4:].mean(0)
    sep = sps.norm.logpdf(target, mu_in, shadow[:4].std()) - sps.norm.logpdf(
        target, mu_out, shadow[4:].std()
    )
    assert sep[0] < np.median(sep[1:])


def test_lira_handles_records_without_in_or_out_references():
    rng = np.random.default_rng(4)
    keep = rng.random((4, 30)) < 0.5
    keep[:, 0], keep[:, 1] = True, False
    shadow = rng.standard_normal((4, 30)) + keep
    s_on = A.lira_online(rng.standard_normal(30), shadow, keep, global_variance=True)
    s_off = A.lira_offline(rng.standard_normal(30), shadow, keep, global_variance=True)
    assert np.isfinite(s_on).all() and np.isfinite(s_off).all()


def test_folds_never_use_a_targets_own_fold():
    for tg, rf in game.folds(16):
        assert len(set(tg) & set(rf)) == 0 and len(tg) == len(rf) == 8
    with pytest.raises(ValueError):
        game.folds(3)


def _fake_game(K, N, rng, leak=0.0, n_leak=0):
    """Logits of K pipelines (M=2 networks, A=1 query, C=3) on N records + 50 population images;
    records [0, n_leak) get +leak on their true-class logit in pipelines that hold them."""
    M, Q, C = 2, N + 50, 3
    y = rng.integers(0, C, Q)
    keep = rng.random((K, N)) < 0.5
    base = rng.standard_normal((1, 1, 1, Q, C))
    z = base + 0.5 * rng.standard_normal((K, M, 1, Q, C))
    bump = np.zeros((K, Q))
    bump[:, :n_leak] = leak * keep[:, :n_leak]
    z[:, :, 0, np.arange(Q), y] += bump[:, None, :]
    near = {"pixel": rng.random((K, N)) + 1.0, "feature": rng.random((K, M, N)) + 1.0}
    near["pixel"][:, :n_leak] -= keep[:, :n_leak] * (leak > 0)  # IN leak records: closer
    return z, near, keep, y


NAMES = ("loss", "lira_online", "lira_offline", "rmia", "nearest")


def test_game_p_values_are_valid_when_nothing_leaks():
    rng = np.random.default_rng(5)
    reps, rej = 100, 0
    for _ in range(reps):
        z, near, keep, y = _fake_game(8, 60, rng)
        sc, _ = game.play(NAMES, z, near, keep, y, 60)
        ps = [
            game.group_statistics(s, keep, np.ones(60, bool), delta=1e-5, alpha_eps=None)[
                "p_value"
            ]["auc"]
            for s in sc.values()
        ]
        rej += min(ps) <= 0.05 / len(ps)  # Bonferroni over the attacks: family-wise 5 %
    assert rej / reps <= _binom_upper(0.05, reps)


def test_game_detects_a_planted_leak():
    rng = np.random.default_rng(6)
    z, near, keep, y = _fake_game(8, 200, rng, leak=4.0, n_leak=20)
    sc, info = game.play(NAMES, z, near, keep, y, 200)
    assert sc["lira_online"].shape == (8, 200) and len(info["folds"]) == 2
    g = np.zeros(200, bool)
    g[:20] = True
    for name in ("lira_online", "nearest"):
        st = game.group_statistics(sc[name], keep, g, delta=1e-5, alpha_eps=None)
        assert st["p_value"]["auc"] < 1e-4 and st["auc"] > 0.9


def test_init_aware_initial_set_keeps_forced_records_and_draws_the_rest():
    from rcig_release.audits.shadows import forced_positions
    from rcig_release.config import DistillConfig
    from rcig_release.distill import initial_set

    y = np.repeat(np.arange(3), 10)
    x = np.arange(30, dtype=np.float32).reshape(30, 1, 1, 1)
    cfg = DistillConfig(ipc=2, init="real", seed=1)
    _, _, idx = initial_set(cfg, x, y, 3, forced=np.array([3, 25]))
    assert {3, 25} <= set(idx.tolist()) and len(set(idx.tolist())) == 6
    assert np.array_equal(y[idx], np.repeat(np.arange(3), 2))
    # without forced records the draw is the pipeline's own (unchanged runs stay reproducible)
    _, _, plain = initial_set(cfg, x, y, 3)
    _, _, plain2 = initial_set(cfg, x, y, 3, forced=None)
    assert np.array_equal(plain, plain2)
    with pytest.raises(ValueError, match="forced init images"):
        initial_set(cfg, x, y, 3, forced=np.array([0, 1, 2]))
    # a shadow holding training indices [2, 5, 9, 40]: audited init record 9 sits at position 2
    assert forced_positions(np.array([2, 5, 9, 40]), np.array([9, 7])).tolist() == [2]
    assert forced_positions(np.array([2, 5]), None) is None
