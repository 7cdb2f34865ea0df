"""One outer iteration of RCIG as a pure function; ``make_step`` jits it (rcig-algorithm §1.12).

k ~ pool;  θ0 = pool[k];  S = X (+ flipped X)
Δθ* ← inner solve of L_in (20 Adam steps from 0)
g_t, d ← ∇_{Δθ, ψ} L_out(Δθ*, ψ)                       (direct gradient)
v ← H⁻¹ g_t  (20 Adam steps on ½vᵀHv − gᵀv, H = ∇²_Δθ L_in)
i ← −∇_ψ ⟨v, ∇_Δθ L_in(Δθ*, ψ)⟩                          (implicit gradient)
ψ ← AdaBelief(ψ, d + clip(i, ‖d‖));  ψ_ema ← EMA(ψ)
pool[k] ← m ~ U{1..15} Adam steps of MSE on S;  reset at 100 steps
every 50 steps: adapt the inner learning rate (the HVP rate keeps its tuned value)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rcig_release import parallel
from rcig_release.rcig import krr, linearize, memory, solvers
from rcig_release.rcig.state import DistillState, Setup, init_pool_member


def support_set(setup: Setup, psi: dict) -> tuple[jax.Array, jax.Array]:
    """The support set: the distilled images, with W-flipped copies when ``use_flip`` (§1.6)."""
    x, y = psi["x"], psi["y"]
    if setup.res.use_flip:
        x = jnp.concatenate([x, x[:, :, ::-1, :]])
        y = jnp.concatenate([y, y])
    return x, y


class InnerProblem:
    """L_in(d) for one pool model and one support set, with o_S from J_S or from the jvp."""

    def __init__(
        self,
        setup: Setup,
        theta0: Any,
        x_s: jax.Array,
        y_s: jax.Array,
        k_ss: jax.Array | None = None,
        jac: jax.Array | None = None,
    ):
        self.setup, self.theta0, self.y_s, self.x_s = setup, theta0, y_s, x_s
        self.lam = setup.res.l2
        if k_ss is None:
            phi = linearize.features(setup.apply, theta0, x_s)
            k_ss = krr.linear_kernel(phi, phi)
        if jac is None and setup.materialize_jacobian:
            jac = linearize.support_jacobian(setup.apply, theta0, x_s)
        self.k_ss, self.jac = k_ss, jac

    def outputs(self, d: jax.Array) -> jax.Array:
        if self.jac is not None:
            return jnp.einsum("ncp,p->nc", self.jac, d)
        return linearize.linear_forward(
            self.setup.apply, self.theta0, self.setup.tangents, d, self.x_s
        )[1]

    def loss(self, d: jax.Array) -> jax.Array:
        return krr.inner_loss(self.outputs(d), self.k_ss, self.y_s, self.lam, jnp.vdot(d, d))

    def hvp(self, d: jax.Array) -> Callable[[jax.Array], jax.Array]:
        """v ↦ H v, forward-over-reverse (§1.5)."""
        return lambda v: jax.jvp(jax.grad(self.loss), (d,), (v,))[1]

    def solve(self, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        # the start follows the problem's dtype (float64 under enable_x64): a float32 start
        # would give the Adam scan a carry whose dtype changes after one step
        d0 = jnp.zeros((self.setup.tangents.size,), jnp.result_type(self.k_ss, self.y_s))
        if self.setup.exact:
            assert self.jac is not None  # the exact path materialises the Jacobian
            d = solvers.exact_inner(self.jac, self.k_ss, self.y_s, self.lam)
            return d, jnp.stack([self.loss(d0), self.loss(d)])
        return solvers.adam_minimize(
            self.loss, d0, lr, self.setup.cfg.n_inner_steps, unroll=self.jac is None
        )

    def inverse_hvp(self, d: jax.Array, g: jax.Array, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.setup.exact:
            assert self.jac is not None
            v = solvers.exact_hvp_solve(self.jac, self.k_ss, self.lam, g)
            return v, jnp.stack([jnp.zeros(()), jnp.vdot(v, self.hvp(d)(v) - 2 * g)])
        return solvers.adam_hvp_solve(
            self.hvp(d), g, lr, self.setup.cfg.n_hvp_steps, unroll=self.jac is None
        )

    @property
    def precomputed(self) -> tuple[Any, Any]:
        """What ``InnerProblem(..., k_ss=, jac=)`` takes back (tune.py reuses it per trial)."""
        return self.k_ss, self.jac

    def view(self, d: jax.Array, purpose: str, v: jax.Array | None = None) -> None:
        """The full path differentiates every support row (``SubsampledInner.view``)."""
        return None


class SupportView(NamedTuple):
    """The memory path's support rows for one gradient: the rows that carry gradients, and the
    gradient-free values of the others (φ0 at θ0, o at Δθ*, o along v for the implicit step)."""

    rows: memory.Rows | None
    phi: jax.Array
    o_d: jax.Array
    o_v: jax.Array | None


class SubsampledInner:
    """L_in on the memory path (rcig/memory.py): K_SS from features precomputed in chunks and
    factorised once; every Adam step of the inner solve and of the HVP solve differentiates a
    fresh random subset of ``setup.support_batch`` support rows, the others entering with their
    values. Same interface as ``InnerProblem`` (``jac`` is always None)."""

    jac = None

    def __init__(
        self,
        setup: Setup,
        theta0: Any,
        x_s: jax.Array,
        y_s: jax.Array,
        key: jax.Array,
        phi: jax.Array | None = None,
        chol: jax.Array | None = None,
    ):
        self.setup, self.theta0, self.y_s, self.x_s = setup, theta0, y_s, x_s
        self.lam = setup.res.l2
        self.keys = memory.keys(key)
        self.phi = memory.features(setup, theta0, x_s) if phi is None else phi
        self.k_ss = krr.linear_kernel(self.phi, self.phi)
        if chol is None:
            eye = jnp.eye(self.k_ss.shape[0], dtype=self.k_ss.dtype)
            chol = jnp.linalg.cholesky(self.k_ss + self.lam * eye)
        self.chol = chol
        self._at: tuple[Any, jax.Array] | None = None

    @property
    def precomputed(self) -> tuple[Any, Any]:
        return self.phi, self.chol

    def _rows(self, key: jax.Array | None, *deps: jax.Array) -> memory.Rows | None:
        """The key's subset, drawn once ``deps`` are computed (memory.after: a step's rows and
        their primal pass wait for the solver's iterate instead of being held from the start)."""
        n = self.x_s.shape[0]
        return None if key is None else memory.split(key, n, self.setup.support_batch, *deps)

    def _solve(self, r: jax.Array) -> jax.Array:
        return jax.scipy.linalg.cho_solve((self.chol, True), r)

    def _loss_of(self, o: jax.Array, d: jax.Array) -> jax.Array:
        return krr.inner_loss(o, self.k_ss, self.y_s, self.lam, jnp.vdot(d, d), solve=self._solve)

    def outputs_at(self, d: jax.Array) -> jax.Array:
        """o(S) = J_S·d for every row, in chunks, gradient-free (computed once per ``d``)."""
        if self._at is None or self._at[0] is not d:
            self._at = (d, memory.outputs(self.setup, self.theta0, d, self.x_s))
        return self._at[1]

    def _outputs(self, d: jax.Array, rows: memory.Rows | None, rest: jax.Array | None) -> jax.Array:
        """o(S) with gradients through ``rows.grad``; the others from ``rest`` ([n, C]) or,
        when None, computed now at ``d`` in chunks without gradients."""
        s = self.setup
        if rows is None:
            return linearize.linear_forward(s.apply, self.theta0, s.tangents, d, self.x_s)[1]
        o_b = linearize.linear_forward(s.apply, self.theta0, s.tangents, d, self.x_s[rows.grad])[1]
        if rest is None:
            o_rest = memory.outputs(s, self.theta0, d, self.x_s[rows.rest])
        else:
            o_rest = rest[rows.rest]
        return memory.join(rows, o_b, o_rest)

    def loss(self, d: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """L_in(d) over every row. ``key``: its gradient flows through that key's random subset
        of rows only; None: the value alone (computed in chunks, no gradient)."""
        if key is None:
            return self._loss_of(jax.lax.stop_gradient(self.outputs_at(d)), d)
        return self._loss_of(self._outputs(d, self._rows(key, d), None), d)

    def hvp(self, d: jax.Array, *deps: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """(v, key) ↦ H_B v: forward-over-reverse through the key's subset B, the other rows
        held at their values at d (the authors' ``pre_s``). The subsets wait for v and
        ``deps`` (the HVP solve's first v is a constant zero; its g is passed)."""
        o_d = self.outputs_at(d)

        def hv(v: jax.Array, key: jax.Array) -> jax.Array:
            rows = self._rows(key, v, *deps)

            def loss(dd: jax.Array) -> jax.Array:
                return self._loss_of(self._outputs(dd, rows, o_d), dd)

            return jax.jvp(jax.grad(loss), (d,), (v,))[1]

        return hv

    def solve(self, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        d0 = jnp.zeros((self.setup.tangents.size,), jnp.result_type(self.k_ss, self.y_s))
        steps = self.setup.cfg.n_inner_steps
        keys = jax.random.split(self.keys["inner"], steps)
        return solvers.adam_minimize(self.loss, d0, lr, steps, unroll=True, xs=keys)

    def inverse_hvp(self, d: jax.Array, g: jax.Array, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        steps = self.setup.cfg.n_hvp_steps
        keys = jax.random.split(self.keys["hvp"], steps + 1)
        return solvers.adam_hvp_solve(self.hvp(d, g), g, lr, steps, unroll=True, xs=keys)

    def view(self, d: jax.Array, purpose: str, v: jax.Array | None = None) -> SupportView:
        """The rows of the direct ("direct") or implicit ("implicit", along ``v``) gradient."""
        o_v = None if v is None else memory.outputs(self.setup, self.theta0, v, self.x_s)
        rows = self._rows(self.keys[purpose], d if v is None else v)
        return SupportView(rows, self.phi, self.outputs_at(d), o_v)


def make_inner(
    setup: Setup,
    theta0: Any,
    x_s: jax.Array,
    y_s: jax.Array,
    key: jax.Array | None = None,
    precomputed: tuple[Any, Any] | None = None,
) -> InnerProblem | SubsampledInner:
    """The inner problem of this setup's path; ``precomputed``: a previous one's
    ``.precomputed`` for the same θ0 and support set."""
    a, b = precomputed if precomputed is not None else (None, None)
    if setup.memory_path:
        k = jax.random.PRNGKey(0) if key is None else key
        return SubsampledInner(setup, theta0, x_s, y_s, k, phi=a, chol=b)
    return InnerProblem(setup, theta0, x_s, y_s, k_ss=a, jac=b)


def _support_forward(
    setup: Setup, theta0: Any, vec: jax.Array, x_s: jax.Array, view: SupportView | None, o_rest: Any
) -> tuple[jax.Array, jax.Array]:
    if view is None:
        return linearize.linear_forward(setup.apply, theta0, setup.tangents, vec, x_s)
    return memory.support_forward(setup, theta0, vec, x_s, view.rows, view.phi, o_rest)


def outer_loss(
    setup: Setup, theta0: Any, d: jax.Array, psi: dict, x_t: jax.Array, labels_t: jax.Array
) -> jax.Array:
    """L_out(Δθ, ψ) on a real batch (§1.4); ψ enters through Φ_S, o_S, Y_S and τ."""
    x_s, y_s = support_set(setup, psi)

    def fwd(x):
        return linearize.linear_forward(setup.apply, theta0, setup.tangents, d, x)

    phi_s, o_s = fwd(x_s)
    phi_t, o_t = fwd(x_t)
    y_hat = krr.predict(
        o_t,
        krr.linear_kernel(phi_t, phi_s),
        krr.linear_kernel(phi_s, phi_s),
        y_s,
        o_s,
        setup.res.l2,
    )
    return krr.outer_loss(y_hat, labels_t, psi["log_temp"], psi["y"])


def outer_gradients(
    setup: Setup,
    theta0: Any,
    d: jax.Array,
    psi: dict,
    x_t: jax.Array,
    labels_t: jax.Array,
    view: SupportView | None = None,
) -> tuple[jax.Array, jax.Array, dict]:
    """(L_out, g_t = ∂L_out/∂Δθ, direct = ∂L_out/∂ψ) at fixed Δθ, the same values as
    ``jax.value_and_grad(outer_loss, argnums=(0, 1))`` but cheaper on the real batch.

    On the real batch o_T = J_T Δθ is linear in Δθ and φ_T does not depend on ψ, so one
    ``jax.linearize`` of the network at θ0 gives φ_T and o_T, and ∂L/∂Δθ through o_T is the
    transposed linear map applied to ∂L/∂o_T: one ordinary backward pass instead of
    differentiating through a jvp. The support set (a few images) keeps the plain autodiff path;
    ``view`` (the memory path): its gradients flow through the view's subset of rows only.
    """
    p0 = jax.lax.stop_gradient(theta0)
    vec0 = linearize.trainable_vector(p0)

    def net_t(vec):
        return setup.apply(linearize.with_trainable(p0, vec), x_t)

    (_, phi_t), f_jvp = jax.linearize(net_t, vec0)
    o_t = f_jvp(d)[0]

    def loss(dd, o_t, p):
        x_s, y_s = support_set(setup, p)
        o_rest = None if view is None else view.o_d
        phi_s, o_s = _support_forward(setup, theta0, dd, x_s, view, o_rest)
        y_hat = krr.predict(
            o_t,
            krr.linear_kernel(phi_t, phi_s),
            krr.linear_kernel(phi_s, phi_s),
            y_s,
            o_s,
            setup.res.l2,
        )
        return krr.outer_loss(y_hat, labels_t, p["log_temp"], p["y"])

    value, (g_s, u_t, direct) = jax.value_and_grad(loss, argnums=(0, 1, 2))(d, o_t, psi)
    (g_t,) = jax.linear_transpose(f_jvp, vec0)((u_t, jnp.zeros_like(phi_t)))
    return value, g_s + g_t, direct


def implicit_objective(
    setup: Setup,
    theta0: Any,
    d: jax.Array,
    v: jax.Array,
    psi: dict,
    view: SupportView | None = None,
) -> jax.Array:
    """−⟨v, ∇_Δθ L_in(Δθ*, ψ)⟩ as a function of ψ: its ψ-gradient is the implicit gradient.

    o_S is linear in Δθ, so the directional derivative is a jvp of the small quadratic in
    (o_S, ‖Δθ‖²) along (J v, 2⟨Δθ, v⟩); no second pass through the network is needed.
    ``view`` (the memory path): the ψ-gradient flows through the view's subset of rows only.
    """
    x_s, y_s = support_set(setup, psi)
    phi, o_d = _support_forward(setup, theta0, d, x_s, view, None if view is None else view.o_d)
    o_v = _support_forward(setup, theta0, v, x_s, view, None if view is None else view.o_v)[1]
    k_ss = krr.linear_kernel(phi, phi)

    def q(o, s):
        return krr.inner_loss(o, k_ss, y_s, setup.res.l2, s)

    return -jax.jvp(q, (o_d, jnp.vdot(d, d)), (o_v, 2.0 * jnp.vdot(d, v)))[1]


def inner_solution(
    setup: Setup, theta0: Any, psi: dict, inner_lr: jax.Array, key: jax.Array | None = None
) -> tuple[InnerProblem | SubsampledInner, jax.Array, jax.Array]:
    """(the inner problem, Δθ* (no gradient), inner losses) on the support set alone. ``key``:
    the memory path's subsets (``step_keys``' "support")."""
    x_s, y_s = support_set(setup, psi)
    inner = make_inner(setup, theta0, x_s, y_s, key)
    d, inner_losses = inner.solve(inner_lr)
    return inner, jax.lax.stop_gradient(d), inner_losses


def finish_meta_gradient(
    setup: Setup,
    theta0: Any,
    psi: dict,
    inner: InnerProblem | SubsampledInner,
    d: jax.Array,
    g_t: jax.Array,
    direct: dict,
    hvp_lr: jax.Array,
) -> tuple[dict, dict]:
    """direct + clipped implicit gradient from g_t = ∂L_out/∂Δθ and the direct ψ-gradient;
    reads no real data (shared by the ordinary and the DP step, dp.py)."""
    v, residuals = inner.inverse_hvp(d, g_t, hvp_lr)
    v = jax.lax.stop_gradient(v)
    view = inner.view(d, "implicit", v)
    implicit = jax.grad(lambda p: implicit_objective(setup, theta0, d, v, p, view))(psi)
    if setup.cfg.clip_implicit:
        implicit = jax.tree.map(_clip_to, implicit, direct)
    implicit = jax.tree.map(jnp.nan_to_num, implicit)
    grad = jax.tree.map(jnp.add, direct, implicit)
    return grad, {"hvp_residuals": residuals, "direct": direct, "implicit": implicit}


def meta_gradient(
    setup: Setup,
    theta0: Any,
    psi: dict,
    x_t: jax.Array,
    labels_t: jax.Array,
    inner_lr: jax.Array,
    hvp_lr: jax.Array,
    key: jax.Array | None = None,
) -> tuple[dict, dict]:
    """Direct + (clipped) implicit gradient of L_out(Δθ*(ψ), ψ) with respect to ψ (§1.5).
    ``key``: the memory path's subsets (unused on the full path)."""
    inner, d, inner_losses = inner_solution(setup, theta0, psi, inner_lr, key)
    view = inner.view(d, "direct")
    loss, g_t, direct = outer_gradients(setup, theta0, d, psi, x_t, labels_t, view)
    grad, aux = finish_meta_gradient(setup, theta0, psi, inner, d, g_t, direct, hvp_lr)
    return grad, {"outer_loss": loss, "inner_losses": inner_losses, **aux}


def _clip_to(i: jax.Array, d: jax.Array) -> jax.Array:
    """i/‖i‖ · min(‖d‖, ‖i‖), per leaf (§1.5 step 4)."""
    ni, nd = jnp.linalg.norm(i), jnp.linalg.norm(d)
    return jnp.where(ni > 0, i * (jnp.minimum(ni, nd) / jnp.where(ni > 0, ni, 1.0)), i)


def _train_pool_member(
    setup: Setup,
    params: Any,
    opt_state: Any,
    psi: dict,
    n_steps: jax.Array,
    key: jax.Array | None = None,
) -> tuple[Any, Any]:
    """``n_steps`` (traced, ≤ pool_max_steps) Adam steps of ½‖f(S;θ) − Y_S‖²/(nC) on the
    ordinary network (§1.7). On the memory path each step takes a random subset of
    ``setup.support_batch`` support rows (from ``key``) instead of all n.

    Written as pool_max_steps unrolled steps whose updates are masked after ``n_steps``: on
    XLA:CPU a convolution inside a loop or conditional body runs several times slower than in
    straight-line code (docs/benchmarks.md), which costs more than the masked steps.
    """
    x_s, y_s = support_set(setup, jax.lax.stop_gradient(psi))
    opt = setup.pool_optimizer()
    n, b = x_s.shape[0], setup.support_batch

    def loss(p, i):
        xb, yb = x_s, y_s
        if setup.memory_path and b < n:
            assert key is not None
            rows = jax.random.choice(jax.random.fold_in(key, i), n, (b,), replace=False)
            rows = memory.after(rows, jax.tree.leaves(p)[0])  # gathered when step i runs
            xb, yb = x_s[rows], y_s[rows]
        out = setup.apply(p, xb)[0]
        return 0.5 * jnp.sum((out - yb) ** 2) / yb.size

    carry = (params, opt_state)
    for i in range(setup.cfg.pool_max_steps):
        p, s = carry
        upd, s_new = opt.update(jax.grad(loss)(p, i), s, p)
        new = (optax.apply_updates(p, upd), s_new)
        carry = jax.tree.map(functools.partial(jnp.where, i < n_steps), new, carry)
    return carry


def _adapt(lr: jax.Array, monotone: jax.Array, failed: jax.Array, every: int) -> jax.Array:
    """§1.9 online rule: ×0.9 if ≥29 % of runs failed, else ×1.05 if ≥70 % were monotone."""
    return jnp.where(
        failed / every >= 0.29, lr * 0.9, jnp.where(monotone / every >= 0.7, lr * 1.05, lr)
    )


def step_keys(state: DistillState) -> dict[str, jax.Array]:
    """This step's named keys: pool model, real batch (unused by DP: secret, rcig/dp.py), pool
    steps, pool reset, and the memory path's support subsets (public: they pick distilled
    rows, never real ones)."""
    key = jax.random.fold_in(state.key, state.step)
    keys = dict(zip(("pool", "batch", "m", "reset"), jax.random.split(key, 4), strict=True))
    return {**keys, "support": jax.random.fold_in(key, 4)}


def pick_pool_model(setup: Setup, state: DistillState) -> tuple[jax.Array, Any]:
    """(k, θ0 = pool[k]) for this step."""
    k = jax.random.randint(step_keys(state)["pool"], (), 0, setup.cfg.pool_size)
    return k, jax.tree.map(lambda p: p[k], state.pool_params)


def apply_update(
    setup: Setup, state: DistillState, k: jax.Array, theta0: Any, grad: dict, aux: dict
) -> tuple[DistillState, dict]:
    """AdaBelief on ψ, EMA, pool training and re-initialisation, inner-lr adaptation: all
    functions of the meta-gradient and the support set (shared with the DP step)."""
    cfg = setup.cfg
    keys = step_keys(state)
    tx = setup.psi_optimizer()
    updates, opt_state = tx.update(grad, state.opt_state, state.psi)
    psi = optax.apply_updates(state.psi, updates)
    psi_ema, ema_state = setup.ema().update(psi, state.ema_state)

    # pool: train the visited model on the updated support set, re-initialise when it is old
    m = jax.random.randint(keys["m"], (), 1, cfg.pool_max_steps + 1)
    pool_opt_k = jax.tree.map(lambda s: s[k], state.pool_opt)
    pool_key = memory.keys(keys["support"])["pool"]
    params_k, opt_k = _train_pool_member(setup, theta0, pool_opt_k, psi, m, pool_key)
    steps_k = state.pool_steps[k] + m
    fresh_params, fresh_opt = init_pool_member(setup, keys["reset"])
    reset = steps_k >= cfg.pool_reset
    params_k = jax.tree.map(lambda a, b: jnp.where(reset, a, b), fresh_params, params_k)
    opt_k = jax.tree.map(lambda a, b: jnp.where(reset, a, b), fresh_opt, opt_k)
    steps_k = jnp.where(reset, 0, steps_k)
    pool_params = jax.tree.map(lambda s, v: s.at[k].set(v), state.pool_params, params_k)
    pool_opt = jax.tree.map(lambda s, v: s.at[k].set(v), state.pool_opt, opt_k)
    pool_steps = state.pool_steps.at[k].set(steps_k)

    # online learning-rate adaptation (skipped for the exact solver, which has none). As the
    # authors (§1.9): only the inner rate moves; the HVP run shapes are counted (logged in
    # lr_stats) but the HVP rate keeps its tuned value for the whole run.
    in_mono, in_fail = solvers.run_shape(aux["inner_losses"])
    h_mono, h_fail = solvers.run_shape(aux["hvp_residuals"])
    stats = state.lr_stats + jnp.stack([in_mono, in_fail, h_mono, h_fail]).astype(jnp.float32)
    step = state.step + 1
    adapt = jnp.logical_and(step % cfg.adapt_lr_every == 0, not setup.exact)
    inner_lr = jnp.where(
        adapt, _adapt(state.inner_lr, stats[0], stats[1], cfg.adapt_lr_every), state.inner_lr
    )
    stats = jnp.where(step % cfg.adapt_lr_every == 0, jnp.zeros_like(stats), stats)

    new_state = state.replace(  # type: ignore[attr-defined]  # flax.struct adds replace
        step=step,
        psi=psi,
        opt_state=opt_state,
        psi_ema=psi_ema,
        ema_state=ema_state,
        pool_params=pool_params,
        pool_opt=pool_opt,
        pool_steps=pool_steps,
        inner_lr=inner_lr,
        lr_stats=stats,
    )
    metrics = {
        "inner_loss": aux["inner_losses"][-1],
        "inner_loss_start": aux["inner_losses"][0],
        "hvp_residual": aux["hvp_residuals"][-1],
        "inner_lr": state.inner_lr,
        "hvp_lr": state.hvp_lr,
        "temperature": jnp.exp(psi["log_temp"]),
        "pool_model": k,
        "pool_steps": m,
        "direct_norm": optax.tree.norm(aux["direct"]),
        "implicit_norm": optax.tree.norm(aux["implicit"]),
    }
    if "outer_loss" in aux:  # the DP step has none: it is a statistic of the private batch
        metrics["outer_loss"] = aux["outer_loss"]
    return new_state, metrics


def outer_step(
    setup: Setup,
    state: DistillState,
    x_train: jax.Array,
    y_train: jax.Array,
    batch_sharding: Any = None,
) -> tuple[DistillState, dict]:
    """One full RCIG iteration. ``x_train`` [N,H,W,C] model space, ``y_train`` int [N].

    ``batch_sharding`` (a ``NamedSharding`` splitting the leading axis over a mesh's devices):
    the real batch is laid out that way, so each device runs the real-batch half of the outer
    gradient on its share and XLA sums the shares; everything else stays replicated."""
    k, theta0 = pick_pool_model(setup, state)
    assert setup.cfg.real_batch is not None  # with_data_defaults fills it before the setup
    n_real = min(setup.cfg.real_batch, x_train.shape[0])
    idx = jax.random.choice(step_keys(state)["batch"], x_train.shape[0], (n_real,), replace=False)
    x_t, y_t = x_train[idx], y_train[idx]
    if batch_sharding is not None:
        x_t, y_t = jax.lax.with_sharding_constraint((x_t, y_t), batch_sharding)
    grad, aux = meta_gradient(
        setup,
        theta0,
        state.psi,
        x_t,
        y_t,
        state.inner_lr,
        state.hvp_lr,
        key=step_keys(state)["support"],
    )
    return apply_update(setup, state, k, theta0, grad, aux)


def make_step(
    setup: Setup, mesh: Any = None
) -> Callable[[DistillState, jax.Array, jax.Array], tuple[DistillState, dict]]:
    """The jitted outer step over ``mesh`` (default: every device, ``parallel.data_mesh``):
    state and data replicated, the real batch sharded along the mesh's data axis, the new state
    and the metrics replicated. Data are arguments (never closed-over constants). One per
    (setup, mesh): a mesh over the same devices is the same mesh."""
    return _make_step(setup, parallel.data_mesh() if mesh is None else mesh)


@functools.lru_cache(maxsize=8)
def _make_step(
    setup: Setup, mesh: Any
) -> Callable[[DistillState, jax.Array, jax.Array], tuple[DistillState, dict]]:
    rep = parallel.replicated(mesh)
    batch = parallel.batch_sharded(mesh)
    return parallel.PlacedJit(
        lambda s, x, y: outer_step(setup, s, x, y, batch), (rep, rep, rep), rep
    )
