"""Aggregate initialisations (``--init mean`` / ``--init centroids``): what each image averages,
the at-least-k guarantee, determinism, −1 indices, DP refusal, and shadows that aggregate their
own private set."""

import numpy as np
import pytest

from rcig_release import initsets
from rcig_release.config import DistillConfig, make_distill_config
from rcig_release.distill import initial_set
from rcig_release.errors import InputError

C = 3


def blobs(n_per_class=40, seed=0, shape=(4, 4, 1)):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    rng.shuffle(y)
    x = rng.standard_normal((len(y), *shape)).astype(np.float32) + y[:, None, None, None]
    return x, y


def test_mean_is_each_class_mean_with_no_record_index():
    x, y = blobs()
    cfg = DistillConfig(init="mean", ipc=1)
    xs, labels, idx = initial_set(cfg, x, y, C)
    want = np.stack([x[y == c].astype(np.float64).mean(0) for c in range(C)])
    np.testing.assert_allclose(xs, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(idx, [-1, -1, -1])
    np.testing.assert_allclose(labels, np.eye(C) - 1 / C)


def test_centroids_at_one_ipc_are_the_class_means_and_deterministic():
    x, y = blobs()
    a = initial_set(DistillConfig(init="centroids", ipc=1), x, y, C)
    b = initial_set(DistillConfig(init="mean", ipc=1), x, y, C)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    cfg = DistillConfig(init="centroids", ipc=3, init_min_records=5, seed=4)
    first, second = initial_set(cfg, x, y, C), initial_set(cfg, x, y, C)
    for u, v in zip(first, second, strict=True):
        np.testing.assert_array_equal(u, v)
    assert (first[2] == -1).all() and first[0].shape == (9, 4, 4, 1)


def test_centroids_are_means_of_their_clusters_of_at_least_k_records():
    x, y = blobs(n_per_class=60)
    cfg = DistillConfig(init="centroids", ipc=4, init_min_records=8, seed=1)
    xs, labels, _ = initial_set(cfg, x, y, C)
    for c in range(C):
        xc = x[y == c].astype(np.float64)
        lab = initsets.balanced_kmeans(xc, 4, 8, cfg.seed + 7919 * c)
        assert np.bincount(lab, minlength=4).min() >= 8
        for j in range(4):
            np.testing.assert_allclose(xs[4 * c + j], xc[lab == j].mean(0), atol=1e-5)
        assert (labels[4 * c : 4 * c + 4].argmax(1) == c).all()


def _sizes_ok(labels, k, min_records):
    return np.bincount(labels, minlength=k).min() >= min_records


def test_the_repair_enforces_the_minimum_where_plain_kmeans_does_not():
    """Two far outliers make k-means give them clusters of 1 and 2; the repair moves records in.
    The same check on plain k-means (the broken variant: no repair) fails."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((40, 2)), [[60.0, 60.0]], [[-60.0, 60.0]] * 2])
    plain = KMeans(n_clusters=3, n_init=initsets.N_INIT, random_state=0).fit(x).labels_
    assert not _sizes_ok(plain, 3, 10)  # the check catches the broken variant
    fixed = initsets.balanced_kmeans(x, 3, 10, 0)
    assert _sizes_ok(fixed, 3, 10) and len(fixed) == len(x)


def test_too_few_records_is_one_clear_input_error():
    x, y = blobs(n_per_class=12)
    with pytest.raises(InputError, match="class 0 has 12 training images"):
        initial_set(DistillConfig(init="centroids", ipc=2, init_min_records=10), x, y, C)
    with pytest.raises(InputError, match="init_min_records = 20"):
        initial_set(DistillConfig(init="mean", init_min_records=20), x, y, C)


def test_noise_blend_and_config_rules():
    x, y = blobs()
    base = initial_set(DistillConfig(init="mean"), x, y, C)[0]
    blend = initial_set(DistillConfig(init="mean", init_noise=0.1, seed=2), x, y, C)[0]
    assert 0.05 < float(np.std(blend - base)) < 0.15
    with pytest.raises(InputError, match="identical"):
        make_distill_config("cpu", None, init="mean", ipc=2)
    make_distill_config("cpu", None, init="mean", ipc=2, init_noise=0.1)
    with pytest.raises(InputError, match="--init must be one of"):
        make_distill_config("cpu", None, init="medoids")
    with pytest.raises(InputError, match="init_min_records"):
        make_distill_config("cpu", None, init_min_records=1)


@pytest.mark.parametrize("mode", ["mean", "centroids"])
def test_dp_refuses_aggregate_inits(mode):
    with pytest.raises(InputError, match=f"--init {mode} reads private images"):
        make_distill_config("cpu", None, dp_epsilon=1.0, init=mode)
    assert make_distill_config("cpu", None, dp_epsilon=1.0).init == "noise"


def test_an_aggregate_shadow_averages_its_own_private_set():
    """The audit's release pipeline (shadows.run_pipeline) with --init mean and --steps 0: each
    shadow's images are the class means of *its* set, in its own preprocessing."""
    from rcig_release.audits import shadows

    x, y = blobs(n_per_class=30, shape=(4, 4, 1))
    x = (x - x.min()) / (x.max() - x.min())
    cfg = DistillConfig(init="mean", steps=0)
    outs = []
    for keep in (np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 3 != 0):
        xm, _, prep = shadows.run_pipeline("release", cfg, x[keep], y[keep], C, seed=1, zca=False)
        pix = prep.inverse(xm)
        want = np.stack([x[keep][y[keep] == c].mean(0) for c in range(C)])
        np.testing.assert_allclose(pix, want, atol=1e-5)
        outs.append(pix)
    assert not np.allclose(outs[0], outs[1])


def test_the_default_policy_allows_the_aggregate_inits_and_strict_does_not():
    from pathlib import Path

    from rcig_release.release.policy import load_policy

    root = Path(__file__).resolve().parents[1] / "policies"
    assert {"mean", "centroids"} <= set(load_policy(root / "default.toml").allowed_init_modes)
    # strict and dp: nothing that reads private images outside a DP release
    assert load_policy(root / "strict.toml").allowed_init_modes == ("noise", "dp-mean")
    assert load_policy(root / "dp.toml").allowed_init_modes == ("noise", "dp-mean")


def test_resume_reads_a_checkpoint_written_before_the_init_fields_existed(tmp_path):
    import json

    from rcig_release.distill import distill

    x, y = blobs(n_per_class=12)
    cfg = DistillConfig(
        ipc=1,
        width=2,
        depth=1,
        pool_size=2,
        pool_max_steps=2,
        real_batch=16,
        tune_lr=False,
        steps=2,
        checkpoint_every=1,
        init="noise",
    )
    distill(cfg, x, y, C, checkpoint_dir=tmp_path)
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("init_min_records", "init_noise"):
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    res = distill(cfg, x, y, C, checkpoint_dir=tmp_path, resume=True)
    assert res.info["resumed_from"] == 2
    with pytest.raises(InputError, match="differs in: init_min_records"):
        distill(cfg.replace(init_min_records=5), x, y, C, checkpoint_dir=tmp_path, resume=True)


def _agg_run_json(mode="centroids", ipc=1, k=10, **init):
    return {
        "config": {"init": mode, "ipc": ipc, "init_min_records": k, "seed": 0},
        "init": {"mode": mode, "indices": [-1] * (ipc * C), **init},
    }


@pytest.mark.parametrize("mode", ["mean", "centroids"])
def test_release_accepts_minus_one_only_for_an_aggregate_claim_that_fits_the_data(mode):
    """release/initset.py: an aggregate run's indices are -1 by design; a record index, an edited
    k, or a k the private data cannot give are exit 2 naming the field."""
    from rcig_release.release.initset import verified_init_indices

    x, y = blobs(n_per_class=40)
    none = np.full(C, -1, np.int64)
    rj = _agg_run_json(mode, aggregate={"min_records": 10})
    assert verified_init_indices(rj, none, x, y, C, C).tolist() == [-1] * C
    one = none.copy()
    one[1] = int(np.flatnonzero(y == 1)[0])  # the broken claim: image 1 started from a record
    with pytest.raises(InputError, match="name training records for an aggregate-init run"):
        verified_init_indices(rj, one, x, y, C, C)
    with pytest.raises(InputError, match="init.aggregate.min_records is 20"):
        verified_init_indices(_agg_run_json(mode, aggregate={"min_records": 20}), none, x, y, C, C)
    with pytest.raises(InputError, match="init_min_records must be an integer >= 2"):
        verified_init_indices(_agg_run_json(mode, k=1), none, x, y, C, C)
    with pytest.raises(InputError, match="needs 50 training records per class"):
        verified_init_indices(_agg_run_json(mode, k=50), none, x, y, C, C)


def test_release_keeps_refusing_minus_one_for_real_and_unknown_modes():
    from rcig_release.release.initset import verified_init_indices

    x, y = blobs(n_per_class=40)
    none = np.full(C, -1, np.int64)
    real = {"config": {"init": "real", "ipc": 1, "seed": 0}, "init": {"mode": "real"}}
    with pytest.raises(InputError, match="hold -1 for a real-init run"):
        verified_init_indices(real, none, x, y, C, C)
    odd = {"config": {"init": "medoids", "ipc": 1, "seed": 0}}
    with pytest.raises(InputError, match="config.init must be one of"):
        verified_init_indices(odd, none, x, y, C, C)
    # the recorded mode must be the config's
    bad = _agg_run_json("centroids")
    bad["init"]["mode"] = "noise"
    with pytest.raises(InputError, match="init.mode is 'noise' but config.init is 'centroids'"):
        verified_init_indices(bad, none, x, y, C, C)


def test_the_gate_gives_an_aggregate_run_no_init_group():
    """release/recompute.py: records flagged as init records are refused unless the mode is real;
    an aggregate run recomputes n_init_records 0 and no init-aware shadows."""
    from rcig_release.release import recompute as rc

    keep = np.zeros((2, 4), bool)
    keep[0, :2] = keep[1, 2:] = True
    flags = np.array([True, False, False, False])
    gi = rc.GameInputs({}, keep, None, flags, C, 1e-5, 0.05, 0)
    for mode in ("mean", "centroids", "noise"):
        assert "only a real initialisation" in (rc.init_group_problem(gi, mode) or "")
    assert rc.init_group_problem(gi, "real") is None
    gi0 = rc.GameInputs({}, keep, None, np.zeros(4, bool), C, 1e-5, 0.05, 0)
    assert rc.init_group_problem(gi0, "centroids") is None
    got = rc.recompute(gi0, init_mode="centroids", parts=())
    assert got["init"] == {"n_init_records": 0, "init_aware_shadows": False}
