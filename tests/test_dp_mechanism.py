"""DP-RCIG's guarantee, tested so that breaking the mechanism fails a named test (docs/dp.md).

Each test runs a check through the product's DP step (``rcig.dp.DPStep`` and its parts, or
``distill``) and through a deliberately broken copy of the step written here, and asserts that the
check passes on the product and fails on the copy:

* sensitivity: ‖sum(D) − sum(D∖{i})‖ ≤ C for random i and adversarial records (huge values,
  NaN, an all-zero image), through the real jitted chunk function; broken: no clipping, and
  clipping without zeroing non-finite rows;
* noise: the released noised mean's noise has standard deviation σC/(qN) (chi-square interval)
  and is Gaussian (Kolmogorov–Smirnov); broken: no noise, σ without C, uniform noise;
* sampling: the realised batch sizes follow Binomial(N, q) (chi-square goodness of fit); broken:
  fixed-size batches;
* secrecy: two runs with the same seed differ, and a replay with the recorded seed on D or on
  D∖{i} does not reproduce the release; broken: batches and noise drawn from the seed.

The statistical checks draw from the product's secret OS entropy, so they are not seeded; each is
at level 1e-6 (a false failure about once in a million runs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from test_rcig_math import SHAPE, C, tiny_state

from rcig_release.config import DistillConfig, resolve
from rcig_release.distill import distill
from rcig_release.rcig import dp
from rcig_release.rcig.state import make_setup

LEVEL = 1e-6  # of every statistical check here
N = 24  # training records of the sensitivity and noise tests
HUGE, NAN, ZERO, LOUD = 0, 1, 2, 3  # the adversarial records


def _cfg(**kw) -> DistillConfig:
    kw = {
        "ipc": 2,
        "width": 2,
        "depth": 1,
        "pool_size": 2,
        "pool_max_steps": 2,
        "real_batch": 8,
        "steps": 3,
        "init": "noise",
        "dp_epsilon": 8.0,
        "dp_noise_multiplier": 2.0,
        "dp_sampling_rate": 0.3,
        "dp_delta": 1e-6,
        "dp_clip": 0.5,
        "tune_lr": False,
        "inner_lr": 1e-3,
        "hvp_lr": 1e-3,
        "log_every": 1,
        "checkpoint_every": 100,
        **kw,
    }
    return DistillConfig(**kw)


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in tree.values())))


@pytest.fixture(scope="module")
def world():
    """A tiny DP step, its state's prepared parts, and N records of which four are adversarial:
    an image scaled by 1e30, a NaN image, an all-zero image, and an image scaled by 1e3 with the
    label of its largest loss (a huge but finite gradient)."""
    cfg = _cfg()
    setup = make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)
    state = tiny_state(setup)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, *SHAPE)).astype(np.float32)
    y = np.arange(N) % C
    x[HUGE] *= 1e30
    x[NAN] = np.nan
    x[ZERO] = 0.0
    x[LOUD] *= 1e3
    step = dp.DPStep(setup, cfg, N)
    prep = step.prepare(state)
    k, d, w = prep[:3]
    theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
    losses = [
        float(dp.example_loss(setup, theta0, w, d, state.psi["log_temp"], jnp.asarray(x[LOUD]), c))
        for c in range(C)
    ]
    y[LOUD] = int(np.argmax(losses))
    return dict(
        cfg=cfg, setup=setup, state=state, step=step, prep=prep, x=jnp.asarray(x), y=jnp.asarray(y)
    )


# ---- sensitivity ----------------------------------------------------------------------------


def _sensitivity_holds(step: dp.DPStep, w: dict, records) -> bool:
    """‖sum(D) − sum(D∖{i})‖ ≤ C (and finite) for every i in ``records``, through
    ``step.clipped_sum`` (the chunked, jitted per-example clip and sum)."""
    everyone = np.arange(N)
    full = step.clipped_sum(w["state"], w["prep"], w["x"], w["y"], everyone)
    for i in records:
        without = step.clipped_sum(w["state"], w["prep"], w["x"], w["y"], everyone[everyone != i])
        diff = _norm({k: full[k] - without[k] for k in full})
        if not (math.isfinite(diff) and diff <= step.clip * (1 + 1e-4)):
            return False
    return True


def _broken_chunk(setup, clip_rows):
    """A copy of the step's jitted ``chunk`` whose clip-and-sum is ``clip_rows``."""

    @jax.jit
    def chunk(state, k, d, w, x_train, y_train, idx, mask, clip):
        theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
        z = dp.per_example_gradients(
            setup, theta0, w, d, state.psi["log_temp"], x_train[idx], y_train[idx]
        )
        return clip_rows(z, mask, clip), jnp.int32(0)

    return chunk


def _without_clipping(z, mask, clip):
    """The product's clip-and-sum with the clip removed (non-finite rows still zeroed)."""
    return dp.clip_and_sum(z, mask, jnp.inf)


def _clip_without_zeroing(z, mask, clip):
    """Clipping as it was before non-finite rows were zeroed: a NaN norm fails ``norms > 0``,
    so the row passes with scale 1."""
    norms = jnp.sqrt(sum(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in z.values()))
    scale = jnp.where(norms > 0, jnp.minimum(1.0, clip / jnp.where(norms > 0, norms, 1.0)), 1.0)
    return jax.tree.map(
        lambda a: jnp.sum(
            jnp.where(
                mask.reshape((-1,) + (1,) * (a.ndim - 1)),
                a * scale.reshape((-1,) + (1,) * (a.ndim - 1)),
                0.0,
            ),
            0,
        ),
        z,
    )


def test_one_record_moves_the_clipped_sum_by_at_most_c(world):
    w = world
    step = w["step"]
    picks = np.random.default_rng(1).choice(np.arange(4, N), 4, replace=False)
    records = [HUGE, NAN, ZERO, LOUD, *picks.tolist()]
    before = step.nonfinite_rows
    assert _sensitivity_holds(step, w, records)
    assert step.nonfinite_rows > before  # the NaN (and overflowing) rows were zeroed and counted
    # the loud record's gradient is far beyond C: clipping is what bounds it
    alone = step.clipped_sum(w["state"], w["prep"], w["x"], w["y"], np.array([LOUD]))
    assert _norm(alone) == pytest.approx(step.clip, rel=1e-4)
    # each broken copy fails the same check: no clipping on the loud record, no zeroing of
    # non-finite rows on every record (the NaN row makes both sums NaN)
    for broken in (_without_clipping, _clip_without_zeroing):
        copy = dp.DPStep(w["setup"], w["cfg"], N)
        copy._chunk = _broken_chunk(w["setup"], broken)
        assert not _sensitivity_holds(copy, w, records), broken.__name__
    copy = dp.DPStep(w["setup"], w["cfg"], N)
    copy._chunk = _broken_chunk(w["setup"], _without_clipping)
    assert _sensitivity_holds(copy, w, [NAN]) and not _sensitivity_holds(copy, w, [LOUD])


# ---- the noise ------------------------------------------------------------------------------


def _noise_is_right(noised_mean, sums: dict, sigma: float, clip: float, qn: float) -> bool:
    """Over 200 draws of the released mean at fixed sums: the noise (release − sums/qN) has
    standard deviation σC/(qN) (two-sided chi-square interval, level LEVEL/2, its mean known to
    be 0) and is Gaussian (Kolmogorov–Smirnov on 20,000 standardised values, level LEVEL/2)."""
    target = sigma * clip / qn
    centre = {k: np.asarray(v, np.float64) / qn for k, v in sums.items()}
    noise = np.concatenate(
        [
            np.concatenate(
                [(np.asarray(m[k], np.float64) - centre[k]).ravel() for k in sorted(centre)]
            )
            for m in (noised_mean(sums) for _ in range(200))
        ]
    )
    n = noise.size
    stat = float(np.sum(noise**2) / target**2)
    lo, hi = scipy.stats.chi2.ppf([LEVEL / 4, 1 - LEVEL / 4], n)
    ks = scipy.stats.kstest(noise[:20000] / target, "norm").pvalue
    return bool(lo <= stat <= hi and ks > LEVEL / 2)


def test_released_mean_has_noise_sigma_c_over_qn(world):
    w = world
    step = w["step"]
    sums = step.clipped_sum(w["state"], w["prep"], w["x"], w["y"], np.arange(4, N))
    args = (sums, step.sigma, step.clip, step.normaliser)
    assert step.clip != 1.0  # so that forgetting C changes the scale
    assert _noise_is_right(step.noised_mean, *args)
    a, b = step.noised_mean(sums), step.noised_mean(sums)
    assert all(v.dtype == np.float32 for v in a.values())
    assert not np.array_equal(a["w"], b["w"])  # fresh randomness at every draw

    def no_noise(s):
        return {
            k: (np.asarray(v, np.float64) / step.normaliser).astype(np.float32)
            for k, v in s.items()
        }

    def sigma_without_c(s):
        return dp.add_noise(s, step.sigma, step.normaliser, dp.secret_rng())

    def uniform(s):  # the right variance, the wrong shape
        r = dp.secret_rng()
        half = math.sqrt(3.0) * step.sigma * step.clip
        return {
            k: (
                (np.asarray(v, np.float64) + r.uniform(-half, half, np.shape(v))) / step.normaliser
            ).astype(np.float32)
            for k, v in sorted(s.items())
        }

    for broken in (no_noise, sigma_without_c, uniform):
        assert not _noise_is_right(broken, *args), broken.__name__


def test_noise_sampler_is_float64_ziggurat_and_its_truncation_is_negligible():
    sums = {"a": np.zeros(1000, np.float32)}
    got = dp.add_noise(sums, 1.0, 1.0, np.random.default_rng(5))["a"]
    want = np.random.default_rng(5).standard_normal(1000, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(got, want)  # numpy's float64 sampler, cast after the sum
    assert dp.NOISE_SUPPORT == pytest.approx(12.2258, abs=1e-4)
    # far beyond any run: 1e9 noised coordinates, 1e6 steps, ε = 10: ≪ δ = 1e-6
    assert dp.sampler_residual(10**9, 10**6, 10.0) < 1e-12
    assert dp.sampler_residual(10**9, 10**6, 10.0) > 0.0


# ---- Poisson sampling -----------------------------------------------------------------------


def _sizes_are_binomial(sample, n: int, q: float, draws: int = 3000) -> bool:
    """Chi-square goodness of fit of ``draws`` batch sizes against Binomial(n, q), level LEVEL:
    one bin per size s with draws·P(s) ≥ 5 (lo ≤ s ≤ hi), the tails merged into the end bins."""
    sizes = np.array([len(sample()) for _ in range(draws)])
    support = np.arange(n + 1)
    big = support[scipy.stats.binom.pmf(support, n, q) * draws >= 5]
    lo, hi = int(big[0]), int(big[-1])
    mid = np.arange(lo + 1, hi)
    expected = np.concatenate(
        [
            [scipy.stats.binom.cdf(lo, n, q)],
            scipy.stats.binom.pmf(mid, n, q),
            [scipy.stats.binom.sf(hi - 1, n, q)],
        ]
    )
    observed = np.concatenate(
        [[np.sum(sizes <= lo)], [np.sum(sizes == s) for s in mid], [np.sum(sizes >= hi)]]
    )
    return bool(scipy.stats.chisquare(observed, expected * draws).pvalue > LEVEL)


def test_batch_sizes_follow_binomial_n_q():
    cfg = _cfg(dp_sampling_rate=0.05)
    setup = make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)
    n = 1000
    step = dp.DPStep(setup, cfg, n)
    assert _sizes_are_binomial(step.sample_batch, n, 0.05)
    batches = [step.sample_batch() for _ in range(2)]
    assert not np.array_equal(*batches)  # fresh randomness
    fixed = int(round(0.05 * n))
    rng = np.random.default_rng(0)
    assert not _sizes_are_binomial(lambda: rng.choice(n, fixed, replace=False), n, 0.05)


# ---- secrecy: the same seed does not reproduce a release ------------------------------------


def _data(n=30):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), np.arange(n) % C


def _replay_fails(run) -> bool:
    """The attack of issue #20: re-run the recorded seed on D and on D∖{i}; a release that either
    replay reproduces is distinguished perfectly (ε = ∞). Also: the same seed twice differs."""
    x, y = _data()
    release = run(x, y)
    replay = run(x, y)
    out = np.arange(len(y)) != 7
    replay_minus = run(x[out], y[out])
    return not (
        np.array_equal(replay, release) or np.array_equal(replay_minus, release)
    ) and np.all(np.isfinite(release))


def test_the_recorded_seed_does_not_reproduce_a_dp_release(monkeypatch):
    cfg = _cfg()

    def run(x, y):
        return distill(cfg, x, y, C).images_model

    assert _replay_fails(run)

    # the broken copy: the step's randomness drawn from the public seed (as before issue #20),
    # a fresh seeded stream per run
    def run_seeded(x, y):
        draws = iter(range(10**6))
        monkeypatch.setattr(
            dp, "secret_rng", lambda: np.random.default_rng([cfg.seed, next(draws)])
        )
        try:
            return distill(cfg, x, y, C).images_model
        finally:
            monkeypatch.undo()

    assert not _replay_fails(run_seeded)
