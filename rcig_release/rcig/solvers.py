"""The inner solve and the Hessian-inverse-vector product (rcig-algorithm §1.3, §1.5).

As the authors: plain Adam from zero for a fixed number of steps, the learning rate a traced
scalar (so tuning it never recompiles). ``unroll=True`` when the
loop body runs the network: on XLA:CPU a convolution inside a loop body runs several times slower
than in straight-line code. ``exact_*`` solve the same convex quadratic in closed form
through the support Jacobian (Woodbury on the nC×nC system); tests use them to check the
meta-gradient against finite differences, and ``inner_solver="exact"`` exposes them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def adam_minimize(
    loss_fn: Callable[..., jax.Array],
    x0: jax.Array,
    lr: jax.Array,
    steps: int,
    unroll: bool = False,
    xs: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``steps`` Adam steps on ``loss_fn`` from ``x0``; returns (x, losses[steps + 1]).

    ``losses[i]`` is the loss before step i; the last entry is the loss at the returned x.
    ``xs`` [steps, …]: step i differentiates ``loss_fn(x, xs[i])`` (the memory path's subset
    key) and the last entry is ``loss_fn(x, None)``; without it ``loss_fn(x)`` throughout.
    """
    opt = optax.adam(lr)

    def body(carry, xs_i):
        x, state = carry
        loss, g = (
            jax.value_and_grad(loss_fn)(x) if xs is None else jax.value_and_grad(loss_fn)(x, xs_i)
        )
        upd, state = opt.update(g, state, x)
        return (optax.apply_updates(x, upd), state), loss

    (x, _), losses = jax.lax.scan(body, (x0, opt.init(x0)), xs, length=steps, unroll=unroll)
    last = loss_fn(x) if xs is None else loss_fn(x, None)
    return x, jnp.concatenate([losses, last[None]])


def adam_hvp_solve(
    hvp: Callable[..., jax.Array],
    g: jax.Array,
    lr: jax.Array,
    steps: int,
    unroll: bool = False,
    xs: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Approximately solve H v = g by Adam on q(v) = ½vᵀHv − gᵀv from v = 0 (gradient Hv − g).

    Returns (v, residuals[steps + 1]) with residual vᵀ(Hv − 2g) = 2q(v), as the authors log it.
    ``xs`` [steps + 1, …]: step i uses ``hvp(v, xs[i])`` (the memory path's subset key), the last
    residual ``hvp(v, xs[-1])``.
    """
    opt = optax.adam(lr)
    v0 = jnp.zeros_like(g)

    def h(v, xs_i):
        return hvp(v) if xs is None else hvp(v, xs_i)

    def body(carry, xs_i):
        v, state = carry
        hv = h(v, xs_i)
        res = jnp.vdot(v, hv - 2.0 * g)
        upd, state = opt.update(hv - g, state, v)
        return (optax.apply_updates(v, upd), state), res

    steps_xs = None if xs is None else xs[:steps]
    (v, _), res = jax.lax.scan(body, (v0, opt.init(v0)), steps_xs, length=steps, unroll=unroll)
    last = jnp.vdot(v, h(v, None if xs is None else xs[steps]) - 2.0 * g)
    return v, jnp.concatenate([res, last[None]])


def _system(jac: jax.Array, k_ss: jax.Array, lam: float) -> jax.Array:
    """M = J Jᵀ + (K + λI) ⊗ I_C, the nC×nC matrix shared by both closed forms."""
    n, c, p = jac.shape
    jf = jac.reshape(n * c, p)
    a = k_ss + lam * jnp.eye(n, dtype=k_ss.dtype)
    return jf @ jf.T + jnp.kron(a, jnp.eye(c, dtype=a.dtype))


def exact_inner(jac: jax.Array, k_ss: jax.Array, y_s: jax.Array, lam: float) -> jax.Array:
    """argmin_d λ/(2nC)[tr(rᵀ(K+λI)⁻¹r) + ‖d‖²], r = Y − Jd:  d* = Jᵀ M⁻¹ vec(Y)."""
    n, c, p = jac.shape
    u = jnp.linalg.solve(_system(jac, k_ss, lam), y_s.reshape(n * c))
    return jac.reshape(n * c, p).T @ u


def exact_hvp_solve(jac: jax.Array, k_ss: jax.Array, lam: float, g: jax.Array) -> jax.Array:
    """H⁻¹g for H = λ/(nC)·[Jᵀ((K+λI)⁻¹⊗I)J + I], by Woodbury: (nC/λ)(g − Jᵀ M⁻¹ J g)."""
    n, c, p = jac.shape
    jf = jac.reshape(n * c, p)
    u = jnp.linalg.solve(_system(jac, k_ss, lam), jf @ g)
    return (n * c / lam) * (g - jf.T @ u)


def run_shape(losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(monotone, failed) for a sequence of losses (§1.9): strictly decreasing at every step;
    final loss above the initial one."""
    monotone = jnp.all(jnp.diff(losses) < 0)
    failed = losses[-1] > losses[0]
    return monotone, failed
