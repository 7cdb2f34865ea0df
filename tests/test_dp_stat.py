"""DP feature means (``--dp-mechanism features``, docs/dp.md): the sensitivity bound through the
real feature code with adversarial records, the noise scale, the accounting against
dp-accounting run directly and against the analytic Gaussian mechanism, secret noise (same-seed
runs differ), resume without a second release, refusals, and a tiny run end to end through
run.json and release/dp.py. Each mechanism check is also run on a broken copy that must fail it."""

import json
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from scipy import stats
from test_distill_cli import TINY_TOML, invoke, make_npz

from rcig_release.config import DistillConfig, make_distill_config, with_data_defaults
from rcig_release.distill import Interrupted, distill
from rcig_release.errors import InputError
from rcig_release.rcig import dpdistill, dpstat, statmatch
from rcig_release.release import dp as release_dp

SHAPE = (8, 8, 1)
C = 3
CLIP = 1.0


def _settings(k=3, clip=CLIP, count_weight=0.1, seed=0, pixels=True):
    return dpstat.StatSettings(
        networks=k,
        width=2,
        depth=1,
        clip=clip,
        count_weight=count_weight,
        seed=seed,
        pixels=pixels,
    )


def _records(n=24, seed=0):
    """Ordinary images in model space plus adversarial ones: huge, NaN, +inf, all zero."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, *SHAPE)).astype(np.float32)
    y = np.arange(n) % C
    x[0] *= 1e30  # huge (features overflow to inf)
    x[1, 0, 0, 0] = np.nan
    x[2, 3, 3, 0] = np.inf
    x[3] = 0.0  # all zero (the networks' features may be 0: biases start at 0)
    x[4] *= 1e4
    return x, y


def _broken_contributions(blocks, clip, count_weight, bounds=None):
    """The mechanism without normalisation and clipping: raw blocks plus the count."""
    f = [
        np.nan_to_num(np.asarray(b, np.float64), nan=0.0, posinf=1e300, neginf=-1e300)
        for b in blocks
    ]
    return np.concatenate([*f, np.full((len(f[0]), 1), count_weight)], 1) * clip


def _max_change(stat_fn, x, y, trials):
    full = stat_fn(x, y)
    worst = 0.0
    for i in trials:
        keep = np.arange(len(y)) != i
        worst = max(worst, float(np.linalg.norm(full - stat_fn(x[keep], y[keep]))))
    return worst


def test_removing_any_record_moves_the_statistic_by_at_most_c_through_the_real_code(
    monkeypatch,
):
    s = _settings()
    x, y = _records()

    def stat(xx, yy):
        return dpdistill.statistic(s, xx, yy, C, chunk=7)

    trials = [0, 1, 2, 3, 4, *np.random.default_rng(1).choice(np.arange(5, 24), 6, replace=False)]
    worst = _max_change(stat, x, y, trials)
    assert worst <= CLIP * (1 + 1e-12)
    assert worst > 0.5 * CLIP  # ordinary records do contribute (not a vacuous bound)
    assert np.isfinite(stat(x, y)).all()
    # the same check on a copy without normalisation and clipping fails
    monkeypatch.setattr(dpstat, "contributions", _broken_contributions)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not _max_change(stat, x, y, trials) <= CLIP * (1 + 1e-12)


def test_contributions_bound_each_record_and_zero_what_is_not_finite():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(6, 4, 5)) * np.array([1, 1e-30, 1e30, 1, 1, 1])[:, None, None]
    f[3, 1, 2] = np.nan
    f[4, 0] = 0.0
    f[5, 2, 0] = -np.inf
    blocks = [f[:, k] for k in range(4)] + [rng.normal(size=(6, 7))]  # 4 of 5, then 7 wide
    u = dpstat.contributions(blocks, 2.5, 0.2)
    assert u.shape == (6, 4 * 5 + 7 + 1) and u.dtype == np.float64
    assert np.all(np.linalg.norm(u, axis=1) <= 2.5 * (1 + 1e-12))
    np.testing.assert_allclose(u[:, -1], 2.5 * 0.2)  # the count coordinate, always
    np.testing.assert_allclose(np.linalg.norm(u[0]), 2.5, rtol=1e-12)  # every block unit
    nets = u[:, :20].reshape(6, 4, 5)
    assert np.all(nets[3, 1] == 0) and np.all(nets[4, 0] == 0) and np.all(nets[5, 2] == 0)
    a = math.sqrt(1 - 0.2**2)
    np.testing.assert_allclose(np.linalg.norm(nets[3, 0]), 2.5 * a / math.sqrt(5), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(u[:, 20:27], axis=1), 2.5 * a / math.sqrt(5))
    # a bounded block keeps its intensity below the bound and is clipped to norm 1 above it
    g = np.array([[0.3, 0.4], [3.0, 4.0], [np.nan, 1.0]])
    v = dpstat.contributions([g], 1.0, 0.2, bounds=[2.0])[:, :2] / a
    np.testing.assert_allclose(v, [[0.15, 0.2], [0.6, 0.8], [0.0, 0.0]])
    # labels outside the class range add nothing
    sums = dpstat.class_sums(u, np.array([0, 1, 2, 7, -1, 1]), 3)
    np.testing.assert_allclose(sums.sum(0), u[[0, 1, 2, 5]].sum(0))


def test_release_noise_has_std_sigma_c_without_truncation_and_a_no_noise_copy_fails():
    sigma, clip = 3.7, 0.8
    stat = np.zeros((4, 50_000))

    def check(noisy):
        z = (noisy - stat).ravel() / (sigma * clip)
        # std within 1 % (its standard error at n = 200,000 is 0.16 %) and Gaussian by KS
        return abs(z.std() - 1.0) < 0.01 and stats.kstest(z, "norm").pvalue > 1e-4

    noisy = dpstat.release(stat, sigma, clip)
    assert noisy.dtype == np.float64 and check(noisy)
    assert not check(stat.copy())  # a copy without noise fails the same check
    assert not check(stat + 0.5 * sigma * clip * np.random.default_rng(0).normal(size=stat.shape))
    # float64 normals reach past the ±5.4σ support of 23-bit erfinv samplers (the sampler on a
    # fixed generator: with secret draws, 4M samples stay below 5σ about one time in ten)
    big = dpstat.release(np.zeros(4_000_000), 1.0, 1.0, np.random.default_rng(2))
    assert np.abs(big).max() > 5.4
    # the noise is secret: two releases of the same statistic differ
    assert not np.array_equal(dpstat.release(stat, sigma, clip), noisy)


def _direct_epsilon(sigma, delta):
    acc = PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3
    )
    return acc.compose(dp_event.GaussianDpEvent(sigma)).get_epsilon(delta)


def _analytic_delta(sigma, eps):
    """δ(ε) of the Gaussian mechanism with sensitivity 1 and noise σ (Balle & Wang 2018)."""
    return stats.norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * stats.norm.cdf(
        -1 / (2 * sigma) - eps * sigma
    )


@pytest.mark.parametrize("eps,delta", [(1.0, 1e-5), (1.0, 1e-6), (10.0, 1e-5)])
def test_sigma_is_calibrated_by_one_gaussian_release(eps, delta):
    sigma = dpstat.calibrate_noise(eps, delta)
    got = dpstat.epsilon_for(sigma, delta)
    assert got == _direct_epsilon(sigma, delta) and got <= eps
    assert dpstat.epsilon_for(sigma * 0.99, delta) > eps  # not needlessly large
    # the analytic Gaussian mechanism agrees: at the calibrated σ its δ at ε is ≤ the target
    # (the PLD accountant is pessimistic) and not far below it
    d = _analytic_delta(sigma, eps)
    assert d <= delta and d > delta / 3
    # a broken accountant (sampling at 1 % counted, though every record is used) is caught
    wrong = _direct_epsilon(sigma, delta)
    assert (
        PLDAccountant(
            dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-3
        )
        .compose(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(sigma)))
        .get_epsilon(delta)
        < 0.5 * wrong
    )


def test_estimate_recovers_means_and_counts_without_noise():
    s = _settings(k=2, pixels=False)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 2, 6))
    y = np.arange(30) % C
    u = dpstat.contributions([f[:, 0], f[:, 1]], s.clip, s.count_weight)
    means, counts = dpstat.estimate(dpstat.class_sums(u, y, C), [6, 6], s)
    np.testing.assert_allclose(counts, [10, 10, 10])
    unit = f / np.linalg.norm(f, axis=2, keepdims=True) / np.sqrt(2)
    for k in range(2):
        for c in range(C):
            np.testing.assert_allclose(means[k][c], unit[y == c, k].mean(0), rtol=1e-10)


def _tiny_cfg(**kw):
    base = dict(
        ipc=2,
        steps=6,
        width=2,
        depth=1,
        init="noise",
        dp_epsilon=1.0,
        dp_mechanism="features",
        dp_networks=3,
        proto_lr=0.05,
        checkpoint_every=2,
        log_every=1,
    )
    return DistillConfig(**{**base, **kw})


def _tiny_data(n_per=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 0.3, (C * n_per, *SHAPE)).astype(np.float32)
    y = np.repeat(np.arange(C), n_per)
    for c in range(C):
        x[y == c, 2 * c + 1, :] += 1.2
    return x, y


def _noise_std_ok(release_fn, s, x, y, sigma, reps=5):
    """The check of the released noise through the real mechanism: (release − noise-free
    statistic)/(σC) over ``reps`` releases of the same data has standard deviation 1 within 6 %
    (6 standard errors at ~2,400 coordinates) and passes a KS test against N(0, 1)."""
    stat = dpdistill.statistic(s, x, y, C)
    z = np.concatenate(
        [((release_fn(s, x, y, C, sigma) - stat) / (sigma * s.clip)).ravel() for _ in range(reps)]
    )
    return abs(z.std() - 1.0) < 0.06 and stats.kstest(z, "norm").pvalue > 1e-4


def test_the_real_release_has_noise_std_sigma_c_and_a_broken_copy_fails(monkeypatch):
    s = _settings()
    x, y = _tiny_data()
    assert _noise_std_ok(dpdistill.private_release, s, x, y, 3.7)
    # broken copies of the release step, run through the same check: no noise, half the noise
    monkeypatch.setattr(dpstat.dp, "noised", lambda stat, std, rng: np.asarray(stat, np.float64))
    assert not _noise_std_ok(dpdistill.private_release, s, x, y, 3.7)
    monkeypatch.setattr(
        dpstat.dp,
        "noised",
        lambda stat, std, rng: stat + 0.5 * std * rng.standard_normal(np.shape(stat)),
    )
    assert not _noise_std_ok(dpdistill.private_release, s, x, y, 3.7)


def _same_seed_runs_differ(x, y, cfg):
    """Two runs with one --seed (the attacker's known-seed replay of the same data) must not give
    the same images."""
    a, b = distill(cfg, x, y, C), distill(cfg, x, y, C)
    np.testing.assert_array_equal(a.labels, b.labels)
    return not np.array_equal(a.images_model, b.images_model)


def test_same_seed_runs_differ_and_a_seeded_noise_copy_fails(monkeypatch):
    x, y = _tiny_data()
    cfg = _tiny_cfg()
    assert _same_seed_runs_differ(x, y, cfg)  # the noise is not the seed's
    # broken copy: the release's generator derived from the public seed, as before issue 20
    monkeypatch.setattr(
        dpstat.dp, "secret_rng", lambda: np.random.Generator(np.random.PCG64(cfg.seed))
    )
    assert not _same_seed_runs_differ(x, y, cfg)
    # ... and then a replay of D∖{i} with the known seed tells whether i was in: the distinguisher
    keep = np.arange(len(y)) != 5
    full, minus = distill(cfg, x, y, C), distill(cfg, x[keep], y[keep], C)
    assert np.array_equal(full.images_model, distill(cfg, x, y, C).images_model)
    assert not np.array_equal(full.images_model, minus.images_model)


def test_same_seed_runs_differ_and_public_parts_do_not():
    x, y = _tiny_data()
    cfg = _tiny_cfg()
    a, b = distill(cfg, x, y, C), distill(cfg, x, y, C)
    assert not np.array_equal(a.images_model, b.images_model)  # the noise is not the seed's
    np.testing.assert_array_equal(a.labels, b.labels)
    # the public parts are the seed's: the same networks, the same network choice
    s = _settings()
    f1 = dpdistill.feature_function(s, SHAPE, C)(x[:4])
    f2 = dpdistill.feature_function(s, SHAPE, C)(x[:4])
    for b1, b2 in zip(f1, f2, strict=True):
        np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(
        statmatch.network_choice(0, 5, 3, 2), statmatch.network_choice(0, 5, 3, 2)
    )
    assert a.info["dp"]["epsilon"] <= 1.0 and a.info["dp"]["dp_mechanism"] == "features"


def test_the_release_is_made_once_and_resume_reuses_it(tmp_path, monkeypatch):
    x, y = _tiny_data()
    cfg = _tiny_cfg()
    calls = []
    real = dpdistill.private_release

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(dpdistill, "private_release", counting)

    def stop(t, _x):
        if t == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        distill(cfg, x, y, C, checkpoint_dir=tmp_path / "ck", on_state=stop)
    assert len(calls) == 1
    resumed = distill(cfg, x, y, C, checkpoint_dir=tmp_path / "ck", resume=True)
    assert len(calls) == 1 and resumed.info["resumed_from"] == 3  # no second release
    assert np.isfinite(resumed.images_model).all()
    # resuming with another configuration is refused
    with pytest.raises(InputError, match="different configuration"):
        distill(cfg.replace(dp_networks=2), x, y, C, checkpoint_dir=tmp_path / "ck", resume=True)


def test_fit_lowers_the_match_loss_to_exact_targets():
    s = _settings(k=2)
    x, y = _tiny_data(n_per=2)
    blocks = dpdistill.feature_function(s, SHAPE, C)(x)
    sizes = dpdistill.block_sizes(s, SHAPE, C)
    assert [b.shape[1] for b in blocks] == sizes == [32, 32, 64]
    means, _ = dpstat.estimate(
        dpstat.class_sums(dpstat.contributions(blocks, 1.0, 0.1, s.bounds(SHAPE)), y, C), sizes, s
    )
    targets, ptgt = np.stack(means[:2], 1), means[2]
    apply, params = dpstat.feature_networks(s, SHAPE, C)
    m = statmatch.MatchSettings(steps=40, lr=0.05, per_step=2, ipc=2)
    x0 = 0.3 * np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    tgt, pt = jnp.asarray(targets, jnp.float32), jnp.asarray(ptgt, jnp.float32)

    def loss(xx):
        return float(
            statmatch.match_loss(apply, stacked, jnp.arange(2), jnp.asarray(xx), tgt, pt, C, 2)
        )

    assert loss(x) < 1e-10  # the set the targets came from matches them exactly
    _, _, last = statmatch.fit(apply, params, targets, x0, m, seed=0, pixel_target=ptgt)
    assert last < 0.5 * loss(x0)

    # augment: the loss is taken on the augmented images. The identity gives the same images as
    # no augmentation; one that cuts the gradient (stop_gradient) leaves nothing to move
    plain, _, _ = statmatch.fit(apply, params, targets, x0, m, seed=0, pixel_target=ptgt)
    same, _, _ = statmatch.fit(
        apply, params, targets, x0, m, seed=0, pixel_target=ptgt, augment=lambda _k, z: z
    )
    np.testing.assert_allclose(same, plain, atol=1e-6)
    blank, _, _ = statmatch.fit(
        apply,
        params,
        targets,
        x0,
        m,
        seed=0,
        pixel_target=ptgt,
        augment=lambda _k, z: jax.lax.stop_gradient(z),
    )
    np.testing.assert_array_equal(blank, x0)


@pytest.mark.parametrize(
    "overrides,word",
    [
        (dict(dp_mechanism="other"), "--dp-mechanism"),
        (dict(dp_mechanism="features", dp_sampling_rate=0.1), "--dp-sampling-rate"),
        (dict(dp_mechanism="features", dp_networks=0), "dp_networks"),
        (dict(dp_mechanism="features", dp_count_weight=1.0), "dp_count_weight"),
    ],
)
def test_refusals(overrides, word):
    with pytest.raises(InputError, match=word):
        make_distill_config("cpu", None, **{"dp_epsilon": 1.0, **overrides})


def test_mechanism_without_epsilon_is_refused_on_the_cli(tmp_path):
    r = invoke(
        "distill",
        "--data",
        "digits",
        "--out",
        tmp_path / "r",
        "--quiet",
        "--dp-mechanism",
        "features",
    )
    assert r.exit_code == 2 and "needs --dp-epsilon" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_calibrated_sigma_and_too_small_sigma():
    cfg = with_data_defaults(_tiny_cfg(dp_delta=1e-6), 100)
    assert cfg.dp_noise_multiplier == dpstat.calibrate_noise(1.0, 1e-6)
    assert cfg.dp_sampling_rate is None
    with pytest.raises(InputError, match="too small"):
        with_data_defaults(_tiny_cfg(dp_noise_multiplier=1.0), 100)


def test_cli_run_writes_a_record_that_release_and_verify_recompute(tmp_path):
    data = make_npz(tmp_path / "tiny.npz")
    (tmp_path / "tiny.toml").write_text(TINY_TOML + "dp_networks = 3\n")
    run = tmp_path / "run"
    r = invoke(
        "distill",
        "--data",
        data,
        "--out",
        run,
        "--config",
        tmp_path / "tiny.toml",
        "--steps",
        4,
        "--ipc",
        2,
        "--quiet",
        "--dp-epsilon",
        1,
        "--dp-delta",
        1e-6,
        "--dp-mechanism",
        "features",
    )
    assert r.exit_code == 0, r.output
    rj = json.loads((run / "run.json").read_text())
    assert rj["init"]["mode"] == rj["config"]["init"] == "dp-mean"  # the features default
    assert rj["init"]["from_release"]["noise_std"] == 0.3
    dp = release_dp.validate_dp(rj["dp"])
    assert release_dp.check_epsilon(dp) is None
    assert dp["epsilon"] == _direct_epsilon(dp["noise_multiplier"], 1e-6) <= 1.0
    assert dp["dp_mechanism"] == "features" and dp["sampling"] == "none" and dp["steps"] == 1
    assert dp["released_shape"] == [3, 3 * 32 + 64 + 1]  # 3 nets (F = 2·4·4), pixels, count
    assert dp["expected_batch_size"] == rj["data"]["n_train"] == dp["max_batch_size"]
    assert "features" in release_dp.statement(dp) or "feature" in release_dp.statement(dp)
    assert set(release_dp.guarantee(dp)) == set(dp)
    # a lowered ε is caught; a DP-RCIG reading of the same keys is refused
    assert "not what the accountant gives" in release_dp.check_epsilon({**dp, "epsilon": 0.5})
    with pytest.raises(InputError, match="sampling"):
        release_dp.validate_dp({**dp, "sampling": "poisson"})
    with pytest.raises(InputError, match="unknown key"):
        release_dp.validate_dp({k: v for k, v in dp.items() if k != "dp_mechanism"})
    with pytest.raises(InputError, match="sampling_rate 1"):
        release_dp.validate_dp({**dp, "steps": 2})
    # run.json says which randomness is public and which is secret, and records no secret
    rnd = rj["randomness"]
    assert rnd["public"]["seed"] == rj["config"]["seed"]
    assert rnd["secret"]["drives"] == ["the Gaussian noise of the one release"]
    assert "OS entropy" in rnd["secret"]["source"] and "float64" in rnd["secret"]["noise_sampler"]
    assert not any("Poisson" in d for d in rnd["secret"]["drives"] + rnd["public"]["drives"])
    # release --replay's checkpoint chain binds distilled.npz to the run's last state
    from rcig_release.release import replay

    assert replay.method_for(rj) == replay.CHAIN
    arrays = dict(np.load(run / "distilled.npz"))
    bound = replay.check(run, rj, arrays)
    assert bound.method == replay.CHAIN and "images" in bound.compared
    edited = {**arrays, "images_model": arrays["images_model"] + np.float32(1e-3)}
    with pytest.raises(InputError, match="images_model"):
        replay.check(run, rj, edited)
    wrong_labels = {**arrays, "labels": arrays["labels"][::-1].copy()}
    with pytest.raises(InputError, match="labels"):
        replay.check(run, rj, wrong_labels)
    r = invoke("evaluate", run, "--models", 1, "--steps", 20, "--json")
    assert r.exit_code == 0, r.output


# ---- --init dp-mean: the release's own class means (post-processing) ------------------------


def test_release_mean_images_are_the_class_means_without_noise():
    """Closed form against numpy: from the noise-free statistic the pixel block gives back each
    class's mean image exactly (valid images: the block's clip is a no-op)."""
    s = _settings(k=2)
    x, y = _tiny_data()
    x = np.clip(x, -1, 1)
    sizes = dpdistill.block_sizes(s, SHAPE, C)
    means, _ = dpstat.estimate(dpdistill.statistic(s, x, y, C), sizes, s)
    got = statmatch.release_mean_images(means[-1], s.blocks, SHAPE, ipc=2)
    want = np.repeat(np.stack([x[y == c].mean(0) for c in range(C)]), 2, axis=0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _dp_mean_start(monkeypatch, x, y, release, init_fn=None):
    """The images a dp-mean run starts from (steps = 0), with the private release replaced by
    ``release`` (so two data sets can share one release)."""
    monkeypatch.setattr(dpdistill, "private_release", lambda *a, **k: release)
    if init_fn is not None:
        monkeypatch.setattr(statmatch, "dp_mean_init", init_fn)
    cfg = _tiny_cfg(init="dp-mean", init_noise=0.3, steps=0)
    return distill(cfg, x, y, C).images_model


def test_dp_mean_start_reads_only_the_release_and_a_private_mean_copy_fails(monkeypatch):
    s = _settings()
    x, y = _tiny_data()
    x2, _ = _tiny_data(seed=1)  # other private images, same labels
    release = dpstat.release(dpdistill.statistic(s, x, y, C), 3.7, 1.0, np.random.default_rng(5))
    a = _dp_mean_start(monkeypatch, x, y, release)
    b = _dp_mean_start(monkeypatch, x2, y, release)
    np.testing.assert_array_equal(a, b)  # the same release: the same start, whatever D holds
    sizes = dpdistill.block_sizes(s, SHAPE, C)
    means, _ = dpstat.estimate(release, sizes, s)
    want = statmatch.dp_mean_init(means[-1], s.blocks, SHAPE, 2, 0.3, seed=0)
    np.testing.assert_array_equal(a, want)
    assert not np.array_equal(a[0], a[1])  # the noise parts a class's images
    # broken copy: the start taken from the private images' class means (outside the budget)
    real_init = statmatch.dp_mean_init

    def private_means(pm, j, shape, ipc, noise, seed, _x=[x, x2]):  # noqa: B006
        data = _x.pop(0)
        return real_init(pm, j, shape, ipc, noise, seed) + np.repeat(
            np.stack([data[y == c].mean(0) for c in range(C)]), ipc, axis=0
        )

    a = _dp_mean_start(monkeypatch, x, y, release, private_means)
    b = _dp_mean_start(monkeypatch, x2, y, release, private_means)
    assert not np.array_equal(a, b)


def test_dp_mean_is_the_features_default_and_refused_elsewhere():
    cfg = make_distill_config("cpu", None, dp_epsilon=1.0, dp_mechanism="features")
    assert cfg.init == "dp-mean" and cfg.init_noise == 0.3
    assert make_distill_config("cpu", None, dp_epsilon=1.0).init == "noise"  # DP-RCIG
    off = make_distill_config("cpu", None, dp_epsilon=1.0, dp_mechanism="features", dp_pixels=False)
    assert off.init == "noise"
    for kw in (
        dict(init="dp-mean"),
        dict(init="dp-mean", dp_epsilon=1.0),
        dict(init="dp-mean", dp_epsilon=1.0, dp_mechanism="features", dp_pixels=False),
    ):
        with pytest.raises(InputError, match="dp-mean"):
            make_distill_config("cpu", None, **kw)
    with pytest.raises(InputError, match="init_noise"):
        make_distill_config(
            "cpu", None, ipc=2, init="dp-mean", init_noise=0.0, dp_epsilon=1.0,
            dp_mechanism="features",
        )  # fmt: skip
