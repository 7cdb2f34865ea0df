"""The bookkeeping rules of RCIG around the meta-gradient, each against a hand-computed
expectation: the EMA of the distilled set (debiasing, and that the EMA is what ``distill``
exports), the pool reset at 100 steps, the online learning-rate rule (inner rate only, ×0.9 /
×1.05 at multiples of 50 steps) and the end point of the initial learning-rate search (0.84 × the
first failing rate, as the authors' loop)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcig_release.config import DistillConfig, resolve
from rcig_release.distill import distill
from rcig_release.rcig import tune
from rcig_release.rcig.state import init_state, make_setup
from rcig_release.rcig.step import make_step

SHAPE = (8, 8, 1)
C = 3


def setup_for(**kw):
    kw = {
        "ipc": 1,
        "width": 2,
        "depth": 1,
        "pool_size": 2,
        "pool_max_steps": 2,
        "real_batch": 16,
        "tune_lr": False,
        **kw,
    }
    cfg = DistillConfig(**kw)
    return make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)


def data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    y = np.arange(n) % C
    return x, y


def start(setup, seed=0):
    x, y = data(seed=seed)
    y0 = (np.eye(C, dtype=np.float32) - 1 / C)[np.arange(C)]
    return init_state(setup, x[:C], y0, jax.random.PRNGKey(seed)), jnp.asarray(x), jnp.asarray(y)


# --- EMA ------------------------------------------------------------------------------------


def test_ema_is_the_debiased_average_of_the_iterates():
    """After n updates with decay β: ema = Σ_i (1−β) β^(n−i) ψ_i / (1 − β^n) (the authors'
    bias-corrected EMA, decay 0.99); after one update it is ψ_1 itself."""
    setup = setup_for()
    state, x, y = start(setup)
    step = make_step(setup)
    beta = setup.cfg.ema_decay
    iterates = []
    for n in range(1, 5):
        state, _ = step(state, x, y)
        iterates.append(jax.device_get(state.psi))
        w = np.array([(1 - beta) * beta ** (n - i) for i in range(1, n + 1)]) / (1 - beta**n)
        for k in ("x", "y", "log_temp"):
            expected = sum(
                wi * np.asarray(p[k], np.float64) for wi, p in zip(w, iterates, strict=True)
            )
            np.testing.assert_allclose(np.asarray(state.psi_ema[k]), expected, rtol=1e-5, atol=1e-6)
        if n == 1:
            np.testing.assert_allclose(
                np.asarray(state.psi_ema["x"]), iterates[0]["x"], rtol=1e-5, atol=1e-6
            )
    # the average is not the last iterate (the test would see an exported ψ instead of the EMA)
    assert not np.allclose(np.asarray(state.psi_ema["x"]), iterates[-1]["x"], rtol=1e-4, atol=1e-6)


def test_distill_exports_the_ema_set():
    x, y = data()
    cfg = DistillConfig(
        ipc=1,
        width=2,
        depth=1,
        pool_size=2,
        pool_max_steps=2,
        real_batch=16,
        tune_lr=False,
        steps=4,
    )
    last = {}
    res = distill(cfg, x, y, C, on_state=lambda t, s: last.update(state=s))
    state = last["state"]
    np.testing.assert_array_equal(res.images_model, np.asarray(state.psi_ema["x"]))
    np.testing.assert_array_equal(res.labels, np.asarray(state.psi_ema["y"]))
    assert res.log_temp == pytest.approx(float(state.psi_ema["log_temp"]))
    assert not np.allclose(res.images_model, np.asarray(state.psi["x"]), rtol=1e-4, atol=1e-6)


# --- pool -----------------------------------------------------------------------------------


def _count_leaves(opt_state):
    return [a for a in jax.tree.leaves(opt_state) if jnp.issubdtype(a.dtype, jnp.integer)]


@pytest.mark.parametrize("before", [97, 98, 99])
def test_pool_model_is_reset_once_it_has_trained_100_steps(before):
    """A visit trains m ∈ {1, 2} steps (pool_max_steps = 2); the model is re-initialised (fresh
    parameters, fresh Adam state, count 0) when its count reaches 100: never from 97, always from
    99, from 98 only when m = 2."""
    setup = setup_for()
    state, x, y = start(setup)
    state = state.replace(pool_steps=jnp.full((2,), before, jnp.int32))
    old = jax.device_get(state)
    new, metrics = make_step(setup)(state, x, y)
    k, m = int(metrics["pool_model"]), int(metrics["pool_steps"])
    assert m in (1, 2)
    reset = before + m >= 100
    assert reset == {97: False, 98: m == 2, 99: True}[before]
    assert int(new.pool_steps[k]) == (0 if reset else before + m)
    assert int(new.pool_steps[1 - k]) == before  # the other model is untouched
    for a, b in zip(
        jax.tree.leaves(new.pool_params), jax.tree.leaves(old.pool_params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a)[1 - k], np.asarray(b)[1 - k])
    params_k = jax.tree.map(lambda p: np.asarray(p)[k], new.pool_params)
    counts = [int(np.asarray(c)[k]) for c in _count_leaves(new.pool_opt)]
    old_counts = [int(np.asarray(c)[k]) for c in _count_leaves(old.pool_opt)]
    if reset:
        # a fresh init from the step's reset key (fold_in(key, step) split four ways, the last)
        k_reset = jax.random.split(jax.random.fold_in(state.key, state.step), 4)[3]
        fresh = setup.init_params(k_reset)
        for a, b in zip(jax.tree.leaves(params_k), jax.tree.leaves(fresh), strict=True):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)
        assert counts and all(c == 0 for c in counts)
    else:
        assert all(c == o + m for c, o in zip(counts, old_counts, strict=True))
        moved = [
            not np.array_equal(a, np.asarray(b)[k])
            for a, b in zip(
                jax.tree.leaves(params_k), jax.tree.leaves(old.pool_params), strict=True
            )
        ]
        assert any(moved)


# --- online learning-rate rule --------------------------------------------------------------


@pytest.mark.parametrize(
    "step,stats,factor",
    [
        (49, [35, 0, 45, 0], 1.05),  # step 50: ≥ 70 % monotone inner runs → ×1.05
        (49, [0, 15, 0, 45], 0.9),  # step 50: ≥ 29 % failed inner runs → ×0.9
        (99, [36, 16, 45, 0], 0.9),  # failing is checked first
        (48, [35, 0, 45, 0], 1.0),  # step 49: not a multiple of 50, nothing changes
        (49, [10, 5, 45, 0], 1.0),  # step 50, neither threshold reached
    ],
)
def test_online_rule_moves_only_the_inner_rate(step, stats, factor):
    """The HVP statistics are chosen so that, if the rule were applied to the HVP rate too, it
    would move as well; it must keep its tuned value (the authors' algorithms.py:L179/L184)."""
    setup = setup_for()
    state, x, y = start(setup)
    inner, hvp = np.float32(2e-3), np.float32(7e-2)
    state = state.replace(
        step=jnp.int32(step),
        inner_lr=jnp.float32(inner),
        hvp_lr=jnp.float32(hvp),
        lr_stats=jnp.asarray(stats, jnp.float32),
    )
    new, metrics = make_step(setup)(state, x, y)
    # this step adds at most one run to each count: the thresholds above hold either way
    np.testing.assert_allclose(float(new.inner_lr), float(inner * np.float32(factor)), rtol=1e-6)
    assert float(new.hvp_lr) == float(hvp)
    if (step + 1) % 50 == 0:
        assert np.all(np.asarray(new.lr_stats) == 0)  # a new window starts
    else:
        added = np.asarray(new.lr_stats) - np.asarray(stats, np.float32)
        assert set(np.unique(added)).issubset({0.0, 1.0})  # this step's run shapes added


# --- initial search --------------------------------------------------------------------------


@pytest.mark.parametrize("first_failing_power", [0, 1, 5, 17])
def test_search_ends_at_084_times_the_first_failing_rate(first_failing_power):
    """A fake trial that is monotone up to a known rate: the authors' loop multiplies by 1.2
    after every trial (the failing one included), then by 0.7."""
    lr0 = 1e-5
    threshold = lr0 * 1.2 ** (first_failing_power - 0.5)  # between two trial rates
    tried = []

    def run(lr):
        tried.append(lr)
        return [3.0, 2.0, 1.0] if lr < threshold else [3.0, 3.5, 1.0]

    lr, trials = tune._search(run, lr0, 100)
    first_failing = lr0 * 1.2**first_failing_power
    assert trials == first_failing_power + 1 == len(tried)
    assert tried[-1] == pytest.approx(first_failing, rel=1e-12)
    assert lr == pytest.approx(0.84 * first_failing, rel=1e-12)


def test_search_stops_at_the_trial_cap():
    lr, trials = tune._search(lambda lr: [3.0, 2.0, 1.0], 1.0, 4)
    assert trials == 4 and lr == pytest.approx(1.2**4)
