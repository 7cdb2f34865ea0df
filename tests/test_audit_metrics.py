"""Audit metrics against hand-computed tables and closed forms."""

import numpy as np
import pytest
from scipy import stats

from rcig_release.audits import metrics


def test_hand_table():
    # scores 4 3 2 1, members 4 and 2: pairs (4>3, 4>1, 2>1, 2<3) -> AUC 3/4
    s = np.array([4.0, 3.0, 2.0, 1.0])
    y = np.array([1, 0, 1, 0], bool)
    a, (lo, hi) = metrics.auc_with_ci(s, y)
    assert a == pytest.approx(0.75)
    assert lo <= 0.75 <= hi
    # thresholds: >=4 (tpr .5, fpr 0), >=3 (.5, .5), >=2 (1, .5), >=1 (1, 1)
    assert metrics.advantage(s, y) == pytest.approx(0.5)


def test_tpr_at_fpr_unresolvable_says_why():
    s = np.arange(20.0)
    y = np.arange(20) % 2 == 0
    r = metrics.tpr_at_fpr(s, y, 0.01)
    assert r["tpr"] is None and "100" in r["reason"]
    m = metrics.attack_metrics(s, y)
    assert m["tpr_at_fpr"]["0.001"] is None and m["tpr_at_fpr"]["0.01"] is None
    assert m["tpr_at_fpr_reason"]["0.01"]


def test_tpr_at_fpr_counts_exactly():
    # 100 non-members 0..99; members: 5 above every non-member, 3 between 98 and 99, 92 below all
    neg = np.arange(100.0)
    pos = np.concatenate([np.full(5, 1000.0), np.full(3, 98.5), np.full(92, -1.0)])
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(100, bool), np.zeros(100, bool)])
    r = metrics.tpr_at_fpr(s, y, 0.01)
    # FPR 1/100 (only non-member 99 above the threshold 98.5) admits 8 members
    assert r["tpr"] == pytest.approx(0.08) and r["fpr"] == pytest.approx(0.01)
    lo, hi = r["ci"]
    assert lo == pytest.approx(stats.beta.ppf(0.025, 8, 93))
    assert hi == pytest.approx(stats.beta.ppf(0.975, 9, 92))
    assert metrics.tpr_at_fpr(s, y, 0.001)["tpr"] is None


@pytest.mark.parametrize("delta_mu", [0.0, 0.5, 1.5])
def test_gaussian_scores_known_auc_and_tpr(delta_mu):
    rng = np.random.default_rng(1)
    n = 20000
    s = np.concatenate([rng.normal(delta_mu, 1, n), rng.normal(0, 1, n)])
    y = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    m = metrics.attack_metrics(s, y)
    true_auc = stats.norm.cdf(delta_mu / np.sqrt(2))
    lo, hi = m["auc_ci"]
    assert lo <= true_auc <= hi and hi - lo < 0.02
    for f in (0.001, 0.01):
        # the interval is for the TPR at the chosen threshold t: 1 - Phi(t - delta_mu)
        r = metrics.tpr_at_fpr(s, y, f)
        true_tpr = 1 - stats.norm.cdf(r["threshold"] - delta_mu)
        lo, hi = m["tpr_at_fpr_ci"][str(f)]
        assert lo <= true_tpr <= hi
        assert r["fpr"] <= f


def test_groups_fall_back_to_all_nonmembers():
    s = np.array([5.0, 4, 3, 2, 1, 0])
    y = np.array([1, 1, 0, 1, 0, 0], bool)
    groups = {"init": np.array([1, 1, 0, 0, 0, 0], bool), "all": np.ones(6, bool)}
    g = metrics.group_metrics(s, y, groups)
    assert g["init"]["nonmembers"] == "all" and g["init"]["auc"] == pytest.approx(1.0)
    assert g["all"]["auc"] == pytest.approx(8 / 9)
