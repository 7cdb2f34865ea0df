"""The RCIG maths against independent references: Taylor expansion, sklearn ridge, dense linear
algebra, finite differences and autodiff through an exact inner solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64
from sklearn.linear_model import Ridge

from rcig_release.config import DistillConfig, resolve
from rcig_release.rcig import krr, linearize, solvers
from rcig_release.rcig.state import init_state, make_setup
from rcig_release.rcig.step import InnerProblem, make_step, meta_gradient, outer_loss, support_set

SHAPE = (8, 8, 1)
C = 3


def tiny_setup(**kw):
    cfg = DistillConfig(ipc=2, width=2, depth=1, pool_size=2, pool_max_steps=2, real_batch=16,
                        **kw)
    return make_setup(cfg, resolve(cfg, SHAPE, C), SHAPE)


def tiny_state(setup, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((setup.cfg.ipc * C, *SHAPE)).astype(np.float32)
    y = (np.eye(C, dtype=np.float32) - 1 / C)[np.repeat(np.arange(C), setup.cfg.ipc)]
    return init_state(setup, x, y, jax.random.PRNGKey(seed))


def to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def test_linearisation_is_the_first_order_taylor_term():
    with enable_x64():
        setup = tiny_setup()
        state = tiny_state(setup)
        theta0 = to64(jax.tree.map(lambda p: p[0], state.pool_params))
        x = to64(state.psi["x"])
        d = jnp.asarray(np.random.default_rng(1).standard_normal(setup.tangents.size))
        apply = jax.jit(setup.apply)
        _, o = jax.jit(lambda t, d, x: linearize.linear_forward(setup.apply, t, setup.tangents,
                                                                 d, x))(theta0, d, x)
        f0 = apply(theta0, x)[0]
        errs = []
        for eps in (1e-2, 1e-3):
            shifted = jax.tree.map(jnp.add, theta0, jax.tree.map(lambda t: eps * t,
                                                                  setup.tangents.to_tree(d)))
            errs.append(float(jnp.abs(apply(shifted, x)[0] - f0 - eps * o).max()))
        assert errs[1] < errs[0] / 50  # remainder is O(eps²)
        # the Dense kernel tangent is frozen: o ignores it; J·d equals the jvp
        jac = jax.jit(lambda t, x: linearize.support_jacobian(setup.apply, t, x))(theta0, x)
        np.testing.assert_allclose(jnp.einsum("ncp,p->nc", jac, d), o, rtol=1e-10, atol=1e-12)


def test_krr_head_matches_sklearn_ridge_and_loss_identity():
    rng = np.random.default_rng(0)
    n, t, f, lam = 6, 9, 5, 0.3
    phi_s, phi_t = rng.standard_normal((n, f)), rng.standard_normal((t, f))
    y_s, o_s, o_t = rng.standard_normal((n, C)), rng.standard_normal((n, C)), rng.standard_normal((t, C))
    with enable_x64():
        k_ss, k_ts = phi_s @ phi_s.T, phi_t @ phi_s.T
        got = krr.predict(jnp.asarray(o_t), jnp.asarray(k_ts), jnp.asarray(k_ss),
                          jnp.asarray(y_s), jnp.asarray(o_s), lam)
        ridge = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(phi_s, y_s - o_s)
        np.testing.assert_allclose(got, o_t + ridge.predict(phi_t), rtol=1e-9)
        # inner loss = λ/(2nC)[tr(rᵀ(K+λI)⁻¹r) + ‖d‖²] (the closed form the exact solver uses)
        r = y_s - o_s
        closed = lam / (2 * n * C) * (np.trace(r.T @ np.linalg.solve(k_ss + lam * np.eye(n), r)) + 2.5)
        got = krr.inner_loss(jnp.asarray(o_s), jnp.asarray(k_ss), jnp.asarray(y_s), lam, 2.5)
        np.testing.assert_allclose(got, closed, rtol=1e-10)
        # ridge weights norm: tr(αᵀKα) = ‖W*‖²
        alpha = krr.ridge_coefficients(jnp.asarray(k_ss), jnp.asarray(y_s), jnp.asarray(o_s), lam)
        np.testing.assert_allclose(jnp.sum(alpha * (k_ss @ alpha)), np.sum(ridge.coef_ ** 2), rtol=1e-8)


def test_outer_loss_is_tempered_cross_entropy_minus_margin():
    y_hat = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
    labels = jnp.array([0, 2])
    y_s = jnp.array([[1.0, 0.0, 0.9], [0.0, 0.0, 0.0]])
    tau = 1.7
    logits = tau * np.asarray(y_hat)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -(logp[0, 0] + logp[1, 2]) / 2
    margin = (min(0.1, 1 / 6) + 0.0) / 2
    np.testing.assert_allclose(krr.outer_loss(y_hat, labels, jnp.log(tau), y_s), ce - margin,
                               rtol=1e-6)


def _inner(setup, state):
    theta0 = to64(jax.tree.map(lambda p: p[0], state.pool_params))
    psi = to64(state.psi)
    x_s, y_s = support_set(setup, psi)
    return theta0, psi, InnerProblem(setup, theta0, x_s, y_s)


def test_exact_solves_match_dense_linear_algebra_and_adam_converges():
    with enable_x64():
        setup = tiny_setup(inner_solver="exact")
        theta0, psi, inner = _inner(setup, tiny_state(setup))
        d_star = jax.jit(solvers.exact_inner, static_argnums=3)(inner.jac, inner.k_ss,
                                                                 inner.y_s, inner.lam)
        assert float(jnp.abs(jax.grad(inner.loss)(d_star)).max()) < 1e-10
        h = jax.hessian(inner.loss)(d_star)
        g = jnp.asarray(np.random.default_rng(2).standard_normal(d_star.shape))
        np.testing.assert_allclose(solvers.exact_hvp_solve(inner.jac, inner.k_ss, inner.lam, g),
                                   np.linalg.solve(np.asarray(h), np.asarray(g)), rtol=1e-6)
        np.testing.assert_allclose(inner.hvp(d_star)(g), h @ g, rtol=1e-8)
        # the authors' Adam inner solve approaches the same minimum
        d_adam, losses = jax.jit(lambda d0: solvers.adam_minimize(inner.loss, d0, 1e-2, 2000))(
            jnp.zeros_like(d_star))
        assert float(losses[-1]) <= float(inner.loss(d_star)) * (1 + 1e-3)
        assert bool(solvers.run_shape(losses[:20])[0])


def test_meta_gradient_matches_finite_differences_and_unrolled_autodiff():
    with enable_x64():
        setup = tiny_setup(inner_solver="exact", clip_implicit=False)
        state = tiny_state(setup)
        theta0, psi, _ = _inner(setup, state)
        rng = np.random.default_rng(3)
        x_t = jnp.asarray(rng.standard_normal((16, *SHAPE)))
        labels_t = jnp.asarray(rng.integers(0, C, 16))

        vec0 = linearize.trainable_vector(theta0)
        f_one = lambda vec, xi: setup.apply(linearize.with_trainable(theta0, vec), xi[None])[0][0]

        def total(p):  # L_out(Δθ*(ψ), ψ), Δθ* the exact minimiser, differentiable in ψ throughout
            x_s, y_s = support_set(setup, p)
            jac = jax.vmap(jax.jacrev(f_one), in_axes=(None, 0))(vec0, x_s)
            phi = setup.apply(theta0, x_s)[1]
            d = solvers.exact_inner(jac, phi @ phi.T, y_s, setup.res.l2)
            return outer_loss(setup, theta0, d, p, x_t, labels_t)

        total = jax.jit(total)
        grad, aux = jax.jit(lambda t, p: meta_gradient(setup, t, p, x_t, labels_t, 0.0, 0.0))(
            theta0, psi)
        assert float(optax_norm(aux["implicit"])) > 1e-6  # the implicit term is not negligible
        for _ in range(3):
            v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), psi)
            eps = 1e-5
            plus = jax.tree.map(lambda a, b: a + eps * b, psi, v)
            minus = jax.tree.map(lambda a, b: a - eps * b, psi, v)
            fd = (total(plus) - total(minus)) / (2 * eps)
            ours = sum(jnp.vdot(grad[k], v[k]) for k in psi)
            np.testing.assert_allclose(ours, fd, rtol=1e-5, atol=1e-9)
        # and autodiff through the exact solve (the implicit function differentiated directly)
        auto = jax.jit(jax.grad(total))(psi)
        for k in psi:
            np.testing.assert_allclose(grad[k], auto[k], rtol=1e-6, atol=1e-10)
        # the direct part alone is not the total (the test would catch a dropped implicit term)
        assert not np.allclose(aux["direct"]["x"], auto["x"], rtol=1e-3, atol=1e-8)


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(a ** 2) for a in jax.tree.leaves(tree)))


def test_implicit_gradient_is_clipped_per_leaf_to_the_direct_norm():
    setup = tiny_setup()
    state = tiny_state(setup)
    theta0 = jax.tree.map(lambda p: p[0], state.pool_params)
    rng = np.random.default_rng(4)
    x_t = jnp.asarray(rng.standard_normal((16, *SHAPE)), jnp.float32)
    labels_t = jnp.asarray(rng.integers(0, C, 16))
    _, aux = jax.jit(lambda t, p: meta_gradient(setup, t, p, x_t, labels_t, jnp.float32(1e-2),
                                                jnp.float32(1.0)))(theta0, state.psi)
    for k in ("x", "y"):
        assert float(jnp.linalg.norm(aux["implicit"][k])) <= float(
            jnp.linalg.norm(aux["direct"][k])) * (1 + 1e-5)
    assert float(jnp.linalg.norm(aux["implicit"]["log_temp"])) == 0.0  # L_in has no τ


def test_runs_that_differ_in_seed_or_length_share_one_compiled_step():
    """The audit distils once per shadow with another seed: no re-trace, no re-compile."""
    a, b = tiny_setup(seed=1, steps=7), tiny_setup(seed=2, steps=30, init="noise")
    assert a is b
    assert make_step(a) is make_step(b)
    assert tiny_setup(seed=1, proto_lr=0.5) is not a  # a step hyperparameter does change it


def test_one_compilation_for_many_steps_and_state_advances():
    setup = tiny_setup()
    state = tiny_state(setup)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((40, *SHAPE)), jnp.float32)
    y = jnp.asarray(rng.integers(0, C, 40))
    step = make_step(setup)
    x0 = np.asarray(state.psi["x"])
    for _ in range(4):
        state, metrics = step(state, x, y)
    assert step._cache_size() == 1
    assert int(state.step) == 4
    assert not np.allclose(np.asarray(state.psi["x"]), x0)
    assert int(state.pool_steps.sum()) > 0
    assert np.isfinite(float(metrics["outer_loss"]))
