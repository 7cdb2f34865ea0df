"""The kernel-ridge final layer and the two losses of RCIG (rcig-algorithm §1.2-§1.4).

With support features Φ_S, tangent outputs o_S and labels Y_S:

    K = Φ_S Φ_Sᵀ,   α = (K + λI)⁻¹ (Y_S − o_S),   ŷ(x) = o(x) + φ0(x)ᵀ Φ_Sᵀ α.

All functions are pure and work on plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def linear_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
    """Plain linear kernel on raw flattened features (no normalisation), as the authors."""
    return a @ b.T


def ridge_coefficients(k_ss: jax.Array, y_s: jax.Array, o_s: jax.Array, lam: float) -> jax.Array:
    """α = (K_SS + λI)⁻¹ (Y_S − o_S), shape [n, C]."""
    n = k_ss.shape[0]
    return jnp.linalg.solve(k_ss + lam * jnp.eye(n, dtype=k_ss.dtype), y_s - o_s)


def inner_loss(
    o_s: jax.Array,
    k_ss: jax.Array,
    y_s: jax.Array,
    lam: float,
    tangent_sq_norm: jax.Array,
    solve: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """L_in = [½‖Y − ŷ_S‖² + ½λ(tr(αᵀKα) + ‖Δθ‖²)] / (n·C)  (§1.3; convex in Δθ).

    Equals λ/(2nC)·[tr(rᵀ(K+λI)⁻¹r) + ‖Δθ‖²] with r = Y − o (a test checks this identity); the
    authors' expanded form is kept so the logged values match theirs. ``solve(r)``: (K+λI)⁻¹r
    from a factorisation made once (the memory path's Cholesky factor); default a fresh solve.
    """
    n, c = y_s.shape
    alpha = ridge_coefficients(k_ss, y_s, o_s, lam) if solve is None else solve(y_s - o_s)
    y_hat = o_s + k_ss @ alpha
    fit = 0.5 * jnp.sum((y_s - y_hat) ** 2)
    reg = 0.5 * lam * (jnp.sum(alpha * (k_ss @ alpha)) + tangent_sq_norm)
    return (fit + reg) / (n * c)


def predict(
    o_t: jax.Array, k_ts: jax.Array, k_ss: jax.Array, y_s: jax.Array, o_s: jax.Array, lam: float
) -> jax.Array:
    """ŷ_T = o_T + K_TS (K_SS + λI)⁻¹ (Y_S − o_S)."""
    return o_t + k_ts @ ridge_coefficients(k_ss, y_s, o_s, lam)


def label_margin(y_s: jax.Array) -> jax.Array:
    """mean_j min(top1(Y_j) − top2(Y_j), 1/(2C)): the authors' label-margin term (§1.4)."""
    c = y_s.shape[1]
    top2 = jax.lax.top_k(y_s, 2)[0]
    return jnp.mean(jnp.minimum(top2[:, 0] - top2[:, 1], 1.0 / (2 * c)))


def outer_loss(
    y_hat_t: jax.Array, labels_t: jax.Array, log_temp: jax.Array, y_s: jax.Array
) -> jax.Array:
    """L_out = mean CE(softmax(exp(logτ)·ŷ_T), onehot) − label margin (§1.4). ``labels_t`` int."""
    logits = jnp.exp(log_temp) * y_hat_t
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.mean(jnp.take_along_axis(logp, labels_t[:, None], axis=-1))
    return ce - label_margin(y_s)
