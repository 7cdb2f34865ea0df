"""The memory path for large support sets (rcig/memory.py, rcig-algorithm §1.10) against the
full path: with the whole set as the subsample the same meta-gradient (float64, 1e-9); with a
smaller subsample the same values, and gradients that are exactly those flowing through the
subset's rows (against a materialised Jacobian), which differ from the full ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from rcig_release.config import DistillConfig, resolve
from rcig_release.distill import distill
from rcig_release.errors import InputError
from rcig_release.rcig import krr, linearize, memory
from rcig_release.rcig.state import init_state, make_setup
from rcig_release.rcig.step import (
    InnerProblem,
    SubsampledInner,
    implicit_objective,
    meta_gradient,
    outer_gradients,
    support_set,
)

SHAPE = (8, 8, 3)  # colour: the support set is doubled by W-flips, n = 2·ipc·C = 12
C = 3


def setup_for(**kw):
    kw = {
        "ipc": 2,
        "init": "real",  # tiny classes: fewer records than the default centroids need
        "width": 2,
        "depth": 1,
        "pool_size": 2,
        "pool_max_steps": 2,
        "real_batch": 16,
        "forward_batch": 5,  # chunks of 5, 5, 2: the chunked forwards are exercised
        **kw,
    }
    cfg = DistillConfig(**kw)
    return make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)


def to64(tree):
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def problem(setup, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((setup.cfg.ipc * C, *SHAPE)).astype(np.float32)
    y = (np.eye(C, dtype=np.float32) - 1 / C)[np.repeat(np.arange(C), setup.cfg.ipc)]
    state = init_state(setup, x, y, jax.random.PRNGKey(seed))
    theta0 = to64(jax.tree.map(lambda p: p[1], state.pool_params))
    x_t = jnp.asarray(rng.standard_normal((10, *SHAPE)), jnp.float64)
    labels_t = jnp.asarray(rng.integers(0, C, 10))
    return theta0, to64(state.psi), x_t, labels_t


def test_default_switches_to_the_memory_path_where_the_jacobian_does_not_fit():
    """Default: the memory path where the Jacobian does not fit and the n = 12 support rows
    exceed ``support_batch``; with every row in the subset (nothing to subsample) the jvp
    path."""
    assert not setup_for().memory_path and setup_for().materialize_jacobian
    auto = setup_for(jacobian_mb=0.0, support_batch=4)
    assert auto.memory_path and not auto.materialize_jacobian
    whole = setup_for(jacobian_mb=0.0, support_batch=12)  # nothing to subsample: the jvp path
    assert not whole.memory_path and not whole.materialize_jacobian
    assert not setup_for(support_batch=4).memory_path  # the Jacobian fits: it is materialised
    off = setup_for(jacobian_mb=0.0, memory_path=False)
    assert not off.memory_path and not off.materialize_jacobian  # the full jvp path
    forced = setup_for(memory_path=True)
    assert forced.memory_path and not forced.materialize_jacobian
    assert not setup_for(jacobian_mb=0.0, support_batch=4, inner_solver="exact").memory_path
    dp = setup_for(
        jacobian_mb=0.0, support_batch=4, dp_epsilon=1.0, dp_noise_multiplier=1.0, init="noise"
    )
    assert not dp.memory_path  # not available for DP: the full jvp path
    assert setup_for(support_batch=100, memory_path=True).support_batch == 12


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"memory_path": True, "inner_solver": "exact"}, "exact"),
        ({"memory_path": True, "dp_epsilon": 1.0, "init": "noise"}, "DP"),
        ({"support_batch": 0}, "positive"),
    ],
)
def test_refused_combinations_are_input_errors(kw, word):
    from rcig_release.config import make_distill_config

    with pytest.raises(InputError, match=word):
        make_distill_config("cpu", None, **kw)


def test_whole_set_as_subsample_gives_the_full_paths_meta_gradient():
    """support_batch ≥ n: every row carries gradients, so the memory path (chunked features,
    Cholesky-factorised K, chunked gradient-free outputs for the values) must give the full jvp
    path's Δθ*, losses and meta-gradient; float64, relative 1e-9."""
    with enable_x64():
        full = setup_for(jacobian_mb=0.0, memory_path=False)
        mem = setup_for(jacobian_mb=0.0, memory_path=True, support_batch=100)
        theta0, psi, x_t, labels_t = problem(full)
        lr_in, lr_h = jnp.float64(3e-2), jnp.float64(1.0)
        g_full, a_full = meta_gradient(full, theta0, psi, x_t, labels_t, lr_in, lr_h)
        g_mem, a_mem = meta_gradient(
            mem, theta0, psi, x_t, labels_t, lr_in, lr_h, key=jax.random.PRNGKey(3)
        )
        for k in ("x", "y", "log_temp"):
            np.testing.assert_allclose(g_mem[k], g_full[k], rtol=1e-9, atol=1e-12, err_msg=k)
        for k in ("inner_losses", "hvp_residuals", "outer_loss"):
            np.testing.assert_allclose(a_mem[k], a_full[k], rtol=1e-9, atol=1e-14, err_msg=k)
        assert float(jnp.linalg.norm(g_full["x"])) > 0


def _subset_problem(b=4):
    setup = setup_for(memory_path=True, support_batch=b)
    theta0, psi, x_t, labels_t = problem(setup)
    x_s, y_s = support_set(setup, psi)
    key = jax.random.PRNGKey(7)
    inner = SubsampledInner(setup, theta0, x_s, y_s, key)
    jac = linearize.support_jacobian(setup.apply, theta0, x_s)  # [n, C, P]
    return setup, theta0, psi, x_t, labels_t, x_s, y_s, inner, jac


def test_subsampled_inner_values_are_exact_and_gradients_flow_through_the_subset_only():
    """With b = 4 of n = 12 rows: the inner loss value is the full one; its gradient is
    J_Bᵀ ∂L/∂o_B + ∂L/∂d|reg (the other rows' outputs held), and the HVP is
    J_Bᵀ [∇²_o L]_BB J_B v + (λ/nC) v, computed here from the materialised Jacobian."""
    with enable_x64():
        setup, theta0, psi, x_t, labels_t, x_s, y_s, inner, jac = _subset_problem()
        n, c, p = jac.shape
        rng = np.random.default_rng(1)
        d = jnp.asarray(rng.standard_normal(p) * 0.1)
        v = jnp.asarray(rng.standard_normal(p))
        full = InnerProblem(setup, theta0, x_s, y_s, jac=jac)
        key = jax.random.PRNGKey(11)
        rows = memory.split(key, n, 4)
        assert rows is not None and len(rows.grad) == 4
        np.testing.assert_allclose(inner.loss(d, key), full.loss(d), rtol=1e-10)
        np.testing.assert_allclose(inner.loss(d), full.loss(d), rtol=1e-10)

        lam = setup.res.l2

        def f(o):  # L_in as a function of the outputs, at this d's ‖d‖²
            return krr.inner_loss(o, full.k_ss, y_s, lam, jnp.vdot(d, d))

        o = jnp.einsum("ncp,p->nc", jac, d)
        u = jax.grad(f)(o)  # [n, C]
        mask = jnp.zeros(n, bool).at[rows.grad].set(True)
        expect = jnp.einsum("ncp,nc->p", jac, jnp.where(mask[:, None], u, 0.0))
        expect = expect + lam * d / (n * c)
        got = jax.grad(inner.loss)(d, key)
        np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-13)
        whole = jax.grad(full.loss)(d)  # not vacuous: the subset's gradient is another one
        assert float(jnp.linalg.norm(got - whole)) > 0.3 * float(jnp.linalg.norm(whole))

        a = jax.hessian(f)(o).reshape(n * c, n * c)
        jb = jnp.where(mask[:, None, None], jac, 0.0).reshape(n * c, p)
        expect_hv = jb.T @ (a @ (jb @ v)) + lam * v / (n * c)
        np.testing.assert_allclose(inner.hvp(d)(v, key), expect_hv, rtol=1e-9, atol=1e-13)


def test_direct_and_implicit_gradients_skip_images_outside_the_subset():
    """An image whose two support rows (it and its flip) are both outside the subset gets no
    direct and no implicit image gradient; one inside gets a non-zero one. With the subset the
    whole set, both equal the full path's."""
    with enable_x64():
        setup, theta0, psi, x_t, labels_t, x_s, y_s, inner, _ = _subset_problem()
        n = x_s.shape[0]
        d, _ = inner.solve(jnp.float64(3e-2))
        view = inner.view(d, "direct")
        _, _, direct = outer_gradients(setup, theta0, d, psi, x_t, labels_t, view)
        v = jnp.ones_like(d) * 1e-2
        iview = inner.view(d, "implicit", v)
        implicit = jax.grad(lambda p: implicit_objective(setup, theta0, d, v, p, iview))(psi)
        for g, vw in ((direct["x"], view), (implicit["x"], iview)):
            held = np.zeros(n, bool)
            held[np.asarray(vw.rows.grad)] = True
            per_image = held[: n // 2] | held[n // 2 :]  # image i is rows i and i + n/2 (flip)
            norms = np.linalg.norm(np.asarray(g).reshape(n // 2, -1), axis=1)
            assert np.all(norms[~per_image] == 0.0) and np.all(norms[per_image] > 0)
        assert np.all(np.asarray(direct["y"]) != 0)  # labels are not subsampled

        whole = SubsampledInner(
            setup_for(memory_path=True, support_batch=100), theta0, x_s, y_s, jax.random.PRNGKey(0)
        )
        full_setup = setup_for(jacobian_mb=0.0, memory_path=False)
        _, _, ref = outer_gradients(full_setup, theta0, d, psi, x_t, labels_t)
        _, _, got = outer_gradients(
            whole.setup, theta0, d, psi, x_t, labels_t, whole.view(d, "direct")
        )
        np.testing.assert_allclose(got["x"], ref["x"], rtol=1e-9, atol=1e-13)


def test_memory_path_distils_and_is_a_function_of_the_seed():
    """A few steps with b = 4 of 12 rows (subsets in the inner, HVP, direct, implicit and pool
    steps) end finite, move the set, and repeat exactly for the same seed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, *SHAPE)).astype(np.float32)
    y = np.arange(30) % C
    cfg = DistillConfig(
        ipc=2,
        init="real",  # tiny classes: fewer records than the default centroids need
        width=2,
        depth=1,
        pool_size=2,
        pool_max_steps=2,
        real_batch=8,
        steps=3,
        memory_path=True,
        support_batch=4,
        forward_batch=5,
        tune_max_trials=4,
    )
    a = distill(cfg, x, y, C)
    b = distill(cfg, x, y, C)
    assert a.info["materialized_jacobian"] is False
    assert np.all(np.isfinite(a.images_model)) and np.all(np.isfinite(a.labels))
    np.testing.assert_array_equal(a.images_model, b.images_model)
    init = x[a.init_indices]
    assert np.abs(a.images_model - init).max() > 1e-4


def _compiled_temp_bytes(monkeypatch, steps, what, tie=True):
    """XLA's temporary buffers of the memory path's inner solve ("solve") or HVP solve ("hvp")
    with ``steps`` unrolled Adam steps, compiled only. ``tie=False``: ``memory.after`` replaced
    by the identity, the code before the fix (issue #23)."""
    if not tie:
        monkeypatch.setattr(memory, "after", lambda a, *xs: a)
    setup = setup_for(
        ipc=4, memory_path=True, support_batch=8, n_inner_steps=steps, n_hvp_steps=steps
    )
    theta0, psi, _, _ = problem(setup)
    theta0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), theta0)
    psi = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), psi)

    def run(psi, g):
        x_s, y_s = support_set(setup, psi)
        inner = SubsampledInner(setup, theta0, x_s, y_s, jax.random.PRNGKey(1))
        if what == "solve":
            return inner.solve(jnp.float32(1e-3))
        return inner.inverse_hvp(jnp.zeros_like(g), g, jnp.float32(1e-3))

    g = jnp.zeros(setup.tangents.size, jnp.float32)
    compiled = jax.jit(run).lower(psi, g).compile()
    monkeypatch.undo()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("what", ["solve", "hvp"])
def test_unrolled_steps_do_not_hold_their_subsets_forward_passes(monkeypatch, what):
    """The memory path's buffers must not grow with the number of unrolled Adam steps: each
    step's subset and its primal pass at θ0 wait for the step's iterate (memory.after). Before
    the fix XLA:CPU scheduled every step's primal pass at the start and held it (CIFAR-10 at
    50 ipc: 17.1 GB of buffers against 3.5 GB for the jvp path, docs/benchmarks.md). The check
    fails on that code (the tie removed). Unit: one layer's activations of the subset,
    b·H·W·width float32 (4 KB here); after the fix a step adds about 1 KB (its losses, keys
    and indices), before it 17 KB (HVP) to 67 KB (inner solve)."""
    setup = setup_for(ipc=4, memory_path=True, support_batch=8)
    layer = setup.support_batch * SHAPE[0] * SHAPE[1] * setup.cfg.width * 4
    per_step = (
        _compiled_temp_bytes(monkeypatch, 6, what) - _compiled_temp_bytes(monkeypatch, 2, what)
    ) / 4
    assert per_step < 0.5 * layer, (per_step, layer)
    old = (
        _compiled_temp_bytes(monkeypatch, 6, what, tie=False)
        - _compiled_temp_bytes(monkeypatch, 2, what, tie=False)
    ) / 4
    assert old > 2 * layer, (old, layer)
