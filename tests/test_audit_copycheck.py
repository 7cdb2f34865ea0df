"""Copy check: nearest neighbours, SSIM, the near-copy rule, and a planted leak."""

import numpy as np

from rcig_release.audits import attacks, copycheck, metrics


def _data(seed=0, n=300, h=8):
    rng = np.random.default_rng(seed)
    protos = rng.random((4, h, h, 1))
    x = np.clip(protos[rng.integers(0, 4, n)] + rng.normal(0, 0.15, (n, h, h, 1)), 0, 1)
    return x.astype(np.float32)


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    q, p = rng.random((7, 3, 3, 2)), rng.random((50, 3, 3, 2))
    d, i = copycheck.nearest(q, p, k=3, chunk=4)
    full = np.sqrt(((q.reshape(7, 1, -1) - p.reshape(1, 50, -1)) ** 2).mean(-1))
    np.testing.assert_array_equal(i, np.argsort(full, axis=1)[:, :3])
    np.testing.assert_allclose(d, np.sort(full, axis=1)[:, :3], atol=1e-6)
    d2, i2 = copycheck.nearest(p[:5], p, exclude_self=True)
    assert not np.any(i2[:, 0] == np.arange(5))


def test_ssim_identity_and_bounds():
    x = _data(n=6)
    np.testing.assert_allclose(copycheck.ssim(x, x), 1.0, atol=1e-9)
    s = copycheck.ssim(x, 1 - x)
    assert np.all(s < 0.5) and np.all(s >= -1)
    # a constant shift lowers only the luminance term
    assert np.all(copycheck.ssim(x, np.clip(x + 0.05, 0, 1)) > 0.8)


def test_planted_leak_released_equals_init_images():
    x = _data()
    x_train, x_test = x[:200], x[200:]
    rng = np.random.default_rng(1)
    init = rng.choice(200, 8, replace=False)
    released = x_train[init] + 1e-7  # the --steps 0 --init real release, through a float round trip
    cc = copycheck.copy_check(released, x_train, x_test, init_indices=init)
    assert cc["near_copies"] == 8 and cc["threshold"] > 0
    assert all(cc["per_image"]["near_copy"])
    assert cc["per_image"]["nearest_train_index"] == init.tolist()
    assert max(cc["per_image"]["init_l2"]) < 1e-5 and cc["init_within_threshold"] == 8
    assert min(cc["per_image"]["ssim_train"]) > 0.999
    # the release-direct attack finds every init record at the lowest FPR
    member = np.arange(200) < 100
    pool = np.concatenate([init, np.setdiff1d(np.arange(100), init)[:92]])
    records = np.concatenate([x_train[pool], x_test[:100]])
    d, _ = copycheck.nearest(records, released)
    sc = attacks.nearest_attack(d[:, 0])
    is_init = np.arange(200) < 8
    g = metrics.group_metrics(sc, member, {"init": is_init})["init"]
    assert g["tpr_at_fpr"]["0.01"] == 1.0


def test_fresh_images_are_not_flagged():
    x = _data()
    x_train, x_test = x[:200], x[200:]
    fresh = np.random.default_rng(5).random((6, 8, 8, 1)).astype(np.float32)
    cc = copycheck.copy_check(fresh, x_train, x_test)
    assert cc["near_copies"] == 0
    assert "percentile" in cc["rule"]
    assert set(cc["per_image"]) >= {"nearest_train_l2", "nearest_holdout_l2", "ratio", "ssim_train"}
