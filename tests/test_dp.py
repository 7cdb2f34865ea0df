"""DP-RCIG (docs/dp.md): the mechanism against the ordinary meta-gradient, the clipping and
masking bounds the privacy proof rests on, Poisson sampling and chunking, the accountant against
dp_accounting run directly, the refusals, and a tiny DP run end to end with resume. The tests
that each fail on a deliberately broken copy of the step are in test_dp_mechanism.py."""

import json
from pathlib import Path

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from jax import enable_x64
from scipy.stats import binom
from test_distill_cli import TINY_TOML, invoke, make_npz
from test_rcig_math import SHAPE, C, _real_batch, tiny_setup, tiny_state, to64

from rcig_release.config import DistillConfig, make_distill_config
from rcig_release.config import dp_delta_warning as config_warning
from rcig_release.data import preprocessor_for
from rcig_release.distill import Interrupted, distill
from rcig_release.errors import InputError
from rcig_release.rcig import accounting, dp
from rcig_release.rcig.step import meta_gradient
from rcig_release.release.dp import DP_KEYS

LEAVES = ("x", "y", "log_temp")


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(tree[k])) for k in sorted(tree)])


@pytest.mark.parametrize(
    "solver,shape", [("exact", (8, 8, 3)), ("adam", SHAPE)], ids=["exact-colour-flips", "adam-grey"]
)
def test_dp_meta_gradient_without_clip_and_noise_is_the_ordinary_one(solver, shape):
    with enable_x64():
        setup = tiny_setup(shape, inner_solver=solver, clip_implicit=False)
        state = tiny_state(setup)
        theta0 = to64(jax.tree.map(lambda p: p[0], state.pool_params))
        psi = to64(state.psi)
        psi = {**psi, "log_temp": jnp.float64(0.3)}  # a non-trivial temperature
        x_t, labels_t = _real_batch(shape)
        lr_in, lr_h = jnp.float64(1e-2), jnp.float64(1e-2)
        ref, aux = jax.jit(lambda t, p: meta_gradient(setup, t, p, x_t, labels_t, lr_in, lr_h))(
            theta0, psi
        )
        mask = jnp.ones(len(labels_t), bool)
        got, daux = jax.jit(
            lambda t, p: dp.dp_meta_gradient(
                setup,
                t,
                p,
                x_t,
                labels_t,
                mask,
                lr_in,
                lr_h,
                clip=jnp.inf,
                normaliser=float(len(labels_t)),
            )
        )(theta0, psi)
        for part in ("direct", "implicit"):
            assert float(np.linalg.norm(_flat(aux[part]))) > 1e-8  # both terms are present
            for k in LEAVES:
                np.testing.assert_allclose(
                    daux[part][k], aux[part][k], rtol=1e-7, atol=1e-12, err_msg=f"{part} {k}"
                )
        for k in LEAVES:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(
            daux["hvp_residuals"], aux["hvp_residuals"], rtol=1e-7, atol=1e-14
        )


def _per_example(setup, seed=0, n=12, big=None):
    """z_i for a tiny batch; ``big``: index of an example made to have a huge gradient (its
    image scaled by 1e3, so ‖φ_i‖ and ∂ℓ_i/∂W are huge)."""
    state = tiny_state(setup, seed)
    theta0 = jax.tree.map(lambda p: p[0], state.pool_params)
    d = jnp.asarray(
        np.random.default_rng(seed).standard_normal(setup.tangents.size) * 1e-2, jnp.float32
    )
    x, labels = _real_batch(setup.image_shape, seed=seed + 1, n=n)
    x = jnp.asarray(x, jnp.float32)
    w = dp.head_weights(setup, theta0, d, state.psi)
    if big is not None:  # a huge image with its worst label: ∂ℓ/∂W ≈ φ_i (p − e_label) is huge
        x = x.at[big].multiply(1e3)
        losses = [
            dp.example_loss(setup, theta0, w, d, state.psi["log_temp"], x[big], c) for c in range(C)
        ]
        labels = labels.at[big].set(int(np.argmax(losses)))
    z = jax.jit(
        lambda x, lab: dp.per_example_gradients(setup, theta0, w, d, state.psi["log_temp"], x, lab)
    )(x, labels)
    return z


def _norm(tree):
    return float(
        np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree.leaves(tree)))
    )


def test_clipping_bounds_each_example_and_the_sensitivity_of_the_sum():
    setup = tiny_setup()
    n, big = 12, 5
    z = _per_example(setup, n=n, big=big)
    norms = np.asarray(dp.example_norms(z))
    clip = float(np.median(norms)) / 2  # clipping is active for most examples
    assert norms[big] > 1e3 * clip
    one = np.arange(n) == big
    clip_and_sum = jax.jit(dp.clip_and_sum)
    alone = clip_and_sum(z, jnp.asarray(one), clip)
    assert _norm(alone) <= clip * (1 + 1e-5) and _norm(alone) > 0.99 * clip
    full = clip_and_sum(z, jnp.ones(n, bool), clip)
    for i in range(n):
        without = clip_and_sum(z, jnp.asarray(np.arange(n) != i), clip)
        diff = jax.tree.map(jnp.subtract, full, without)
        assert _norm(diff) <= clip * (1 + 1e-5), i
    # without clipping the engineered example alone moves the sum by far more than C
    assert _norm(clip_and_sum(z, jnp.asarray(one), jnp.inf)) > 1e3 * clip


def test_padding_contributes_exactly_zero():
    setup = tiny_setup()
    z = _per_example(setup, n=10)
    n_real = 6
    mask = jnp.asarray(np.arange(10) < n_real)
    nothing = dp.clip_and_sum(z, jnp.zeros(10, bool), 1.0)  # every row masked: exactly 0
    assert all(not np.any(np.asarray(a)) for a in jax.tree.leaves(nothing))
    base = dp.clip_and_sum(z, mask, 1.0)
    # whatever the padding rows hold (NaN, huge), the sum is bit-identical
    for fill in (np.nan, 1e30):
        junk = jax.tree.map(lambda a, fill=fill: a.at[n_real:].set(fill), z)
        got = dp.clip_and_sum(junk, mask, 1.0)
        for k in base:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(base[k]))
    # and equal to the sum over the real rows alone
    real = dp.clip_and_sum(jax.tree.map(lambda a: a[:n_real], z), jnp.ones(n_real, bool), 1.0)
    for k in base:
        np.testing.assert_allclose(base[k], real[k], rtol=1e-6, atol=1e-7)


def test_poisson_batches_have_rate_q_and_b_max_is_the_smallest_safe_size():
    n, q, steps = 50, 0.1, 2000
    counts = np.zeros(n)
    rng = np.random.default_rng(7)
    for _ in range(steps):
        counts[dp.poisson_batch(n, q, rng)] += 1
    total = n * steps
    assert abs(counts.sum() - q * total) < 5 * np.sqrt(total * q * (1 - q))
    # every example at its own rate (loose per-example bound, 6 sd)
    assert np.all(np.abs(counts - q * steps) < 6 * np.sqrt(steps * q * (1 - q)))
    for n, q in ((60000, 128 / 60000), (36, 16 / 36), (1000, 0.5)):
        b = dp.max_batch_size(n, q)
        assert binom.sf(b, n, q) <= 1e-12 < binom.sf(b - 1, n, q)
    assert dp.max_batch_size(10, 1.0) == 10


def test_chunks_cover_the_batch_without_truncation():
    idx = np.array([3, 8, 9, 20, 21, 22, 30, 31])
    parts = dp.chunks(idx, 3)
    assert len(parts) == 3 and all(len(i) == 3 and len(m) == 3 for i, m in parts)
    np.testing.assert_array_equal(np.concatenate([i[m] for i, m in parts]), idx)
    ((i0, m0),) = dp.chunks(np.zeros(0, np.int64), 4)  # an empty batch: one all-padding chunk
    assert not m0.any()


def _dp_cfg(**kw):
    kw = {
        "ipc": 2,
        "width": 2,
        "depth": 1,
        "pool_size": 2,
        "pool_max_steps": 2,
        "real_batch": 16,
        "steps": 3,
        "init": "noise",
        "dp_epsilon": 8.0,
        "dp_noise_multiplier": 2.0,
        "dp_sampling_rate": 0.4,
        "dp_delta": 1e-5,
        "tune_lr": False,
        "inner_lr": 1e-3,
        "hvp_lr": 1e-3,
        "log_every": 1,
        "checkpoint_every": 2,
        **kw,
    }
    return DistillConfig(**kw)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), np.arange(n) % C


def test_oversized_batch_is_summed_in_chunks_to_the_same_sum():
    from rcig_release.config import resolve
    from rcig_release.rcig.state import make_setup

    cfg = _dp_cfg()
    setup = make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)
    state = tiny_state(setup)
    x, y = _data()
    x, y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    whole = dp.DPStep(setup, cfg, len(y))
    tiny = dp.DPStep(setup, cfg, len(y), b_max=4)
    idx = np.flatnonzero(np.random.default_rng(0).random(len(y)) < 0.4)
    assert len(idx) > 8 and whole.b_max >= len(idx)
    prep = whole.prepare(state)
    a = whole.clipped_sum(state, prep, x, y, idx)
    b = tiny.clipped_sum(state, prep, x, y, idx)
    assert whole.chunks_run == 1 and tiny.chunks_run == -(-len(idx) // 4)
    for k in a:
        assert a[k].dtype == np.float64
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    # a whole step runs (secret batch and noise) and returns finite images
    new, metrics = whole(state, x, y)
    assert np.all(np.isfinite(np.asarray(new.psi["x"]))) and "outer_loss" not in metrics


def test_accountant_matches_dp_accounting_and_is_monotone():
    eps, delta, q, steps = 2.0, 1e-5, 0.02, 10
    sigma = accounting.calibrate_noise(eps, delta, q, steps)
    direct = dp_accounting.calibrate_dp_mechanism(
        lambda: PLDAccountant(value_discretization_interval=1e-3),
        lambda s: dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(s)), steps
        ),
        eps,
        delta,
        tol=1e-4,
    )
    assert sigma == pytest.approx(direct, abs=2e-4)
    got = accounting.epsilon_for(sigma, delta, q, steps)
    assert got <= eps and got > eps - 0.02
    assert accounting.epsilon_for(sigma, delta, q, 2 * steps) > got
    assert accounting.epsilon_for(sigma, delta, 2 * q, steps) > got
    assert accounting.epsilon_for(2 * sigma, delta, q, steps) < got
    assert accounting.accountant_version() == "0.6.0"


@pytest.mark.parametrize(
    "overrides,word",
    [
        (dict(init="real"), "--init real"),
        (dict(zca=True), "--zca"),
        (dict(dp_epsilon=0.0), "--dp-epsilon"),
        (dict(dp_delta=1.0), "--dp-delta"),
        (dict(dp_clip=0.0), "--dp-clip"),
        (dict(dp_sampling_rate=1.5), "--dp-sampling-rate"),
    ],
)
def test_dp_refuses_private_preprocessing_real_init_and_bad_values(overrides, word):
    with pytest.raises(InputError, match=word):
        make_distill_config("cpu", None, **{"dp_epsilon": 1.0, **overrides})


def test_dp_defaults_noise_init_and_fixed_preprocessing_and_library_refusal():
    assert make_distill_config("cpu", None, dp_epsilon=1.0).init == "noise"
    with pytest.raises(InputError, match="needs --dp-epsilon"):
        make_distill_config("cpu", None, dp_delta=1e-6)
    x, y = _data()
    prep = preprocessor_for(x * 7 + 3, DistillConfig(dp_epsilon=1.0), zca=False)
    np.testing.assert_array_equal(prep.mean, [0.5]) and np.testing.assert_array_equal(
        prep.std, [0.5]
    )
    for mode in ("real", "centroids"):  # the library refuses too (centroids: the default)
        with pytest.raises(InputError, match=f"init {mode} reads private images"):
            distill(DistillConfig(dp_epsilon=1.0, steps=1, init=mode), x, y, C)
    with pytest.raises(InputError, match="reads private images"):
        distill(DistillConfig(dp_epsilon=1.0, steps=1), x, y, C)


@pytest.mark.parametrize(
    "args",
    [
        ["--dp-epsilon", "1", "--init", "real"],
        ["--dp-epsilon", "1", "--zca"],
        ["--dp-epsilon", "-1"],
        ["--dp-epsilon", "1", "--dp-delta", "2"],
        ["--dp-epsilon", "1", "--dp-clip", "0"],
        ["--dp-epsilon", "1", "--dp-sampling-rate", "0"],
    ],
)
def test_cli_dp_refusals_are_one_line_exit_2(tmp_path, args):
    r = invoke("distill", "--data", "digits", "--out", tmp_path / "run", "--quiet", *args)
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_dp_resume_continues_the_same_run_with_fresh_randomness(tmp_path):
    """A DP run's batches and noise come from fresh OS entropy, so a resumed run is not
    bit-identical to an uninterrupted one (docs/dp.md). What holds: the same configuration and
    accounting, the checkpointed step count, a finished run, and no secret in the checkpoint."""
    cfg = _dp_cfg()
    x, y = _data()
    full = distill(cfg, x, y, C)
    assert full.info["dp"]["epsilon"] <= 8.0 and full.info["dp"]["steps"] == 3

    def stop(t, _state):
        if t == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        distill(cfg, x, y, C, checkpoint_dir=tmp_path / "ck", on_state=stop)
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    # no secret in the checkpoint's meta: only public bookkeeping and hashes of the state chain
    assert set(meta) == {
        "step",
        "config",
        "tuning",
        "state_sha256",
        "state_file",
        "chain",
        "previous_state_sha256",
    }
    assert meta["step"] == 2
    steps = []
    resumed = distill(
        cfg,
        x,
        y,
        C,
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        on_log=lambda t, m: steps.append(t),
    )
    assert resumed.info["resumed_from"] == 2 and steps == [3]  # one step left, then done
    assert resumed.info["dp"] == full.info["dp"]  # the same mechanism and accounting
    assert np.all(np.isfinite(resumed.images_model))
    assert not np.array_equal(resumed.images_model, full.images_model)  # fresh noise
    with pytest.raises(InputError, match="different configuration"):  # other DP settings: refused
        distill(
            cfg.replace(dp_noise_multiplier=3.0),
            x,
            y,
            C,
            checkpoint_dir=tmp_path / "ck",
            resume=True,
        )


def test_cli_dp_run_writes_the_dp_object(tmp_path):
    data = make_npz(tmp_path / "tiny.npz")
    (tmp_path / "tiny.toml").write_text(TINY_TOML + "tune_lr = false\ndp_noise_multiplier = 2.0\n")
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
        3,
        "--ipc",
        2,
        "--quiet",
        "--dp-epsilon",
        8,
        "--dp-clip",
        0.5,
    )
    assert r.exit_code == 0, r.output
    rj = json.loads((run / "run.json").read_text())
    d = rj["dp"]
    assert set(d) == set(DP_KEYS)  # exactly what audit, release and verify read
    assert d["epsilon"] <= d["target_epsilon"] == 8.0 and d["noise_multiplier"] == 2.0
    assert d["clip_norm"] == 0.5 and d["steps"] == 3 and d["delta"] == 1e-6  # the default
    assert d["sampling_rate"] == pytest.approx(16 / 36)
    assert d["expected_batch_size"] == pytest.approx(16.0)
    assert d["epsilon"] == pytest.approx(accounting.epsilon_for(2.0, 1e-6, 16 / 36, 3))
    # which randomness is public (the seed) and which is secret (never recorded)
    rnd = rj["randomness"]
    assert rnd["public"]["seed"] == rj["seed"] == 0
    assert "the real batches" not in rnd["public"]["drives"]
    assert rnd["secret"]["drives"] == ["the Poisson batch memberships", "the Gaussian noise"]
    assert rnd["secret"]["recorded"].startswith("not recorded")
    assert "warning" not in r.output  # δ = 1e-6 < 1/36
    assert rj["init"]["mode"] == "noise" and rj["resolved"]["zca"] is False
    assert "outer_loss" not in rj["metrics"]  # a statistic of the private batch
    with np.load(run / "distilled.npz") as z:
        np.testing.assert_array_equal(z["prep_mean"], [0.5])
        np.testing.assert_array_equal(z["prep_std"], [0.5])


def test_delta_not_below_one_over_n_is_warned_about_in_one_line(tmp_path):
    data = make_npz(tmp_path / "tiny.npz")
    (tmp_path / "tiny.toml").write_text(TINY_TOML + "tune_lr = false\ndp_noise_multiplier = 2.0\n")
    r = invoke(
        "distill",
        "--data",
        data,
        "--out",
        tmp_path / "run",
        "--config",
        tmp_path / "tiny.toml",
        "--steps",
        0,
        "--ipc",
        2,
        "--quiet",
        "--dp-epsilon",
        8,
        "--dp-delta",
        0.05,
    )
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "warning" in ln]
    assert len(lines) == 1 and "--dp-delta 0.05 is not below 1/N" in lines[0], r.output
    assert config_warning(DistillConfig(dp_epsilon=1.0, dp_delta=1e-6), 60000) is None
    assert config_warning(DistillConfig(dp_epsilon=1.0, dp_delta=1e-5), 100000) is not None
    assert config_warning(DistillConfig(), 10**9) is None  # not a DP run


def test_release_never_copies_a_dp_runs_checkpoints(tmp_path):
    """DP checkpoints are private run-directory files (docs/dp.md): the bundle holds none of their
    files or bytes."""
    from rcig_release.release.bundle import release
    from release_fixtures import dp_statement, fake_run, loader_for, private_data

    data = private_data()
    run = fake_run(tmp_path / "run", data=data, dp=dp_statement())
    sentinel = b"CHECKPOINT-SENTINEL-7f3a"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "state-0123456789abcdef.msgpack").write_bytes(sentinel)
    (run / "checkpoints" / "meta.json").write_text(
        json.dumps({"step": 1, "note": sentinel.decode()})
    )
    out = tmp_path / "bundle"
    policy = Path(__file__).resolve().parents[1] / "policies" / "dp.toml"
    release(run, policy, out, load_private=loader_for(data), name="DP toy")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not any("checkpoint" in str(p.relative_to(out)) for p in files)
    assert not any(sentinel in p.read_bytes() for p in files)
