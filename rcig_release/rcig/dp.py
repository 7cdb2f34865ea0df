"""DP-RCIG: the outer step with per-example clipping and Gaussian noise (docs/dp.md).

Private examples reach ψ only through the outer loss on the real batch. With the head's weights
in feature space W = Φ_Sᵀα (F×C, α = (K_SS + λI)⁻¹(Y_S − o_S)), example i's loss is

    ℓ_i = CE(exp(logτ)·(o_i + φ_iᵀW), label_i),    o_i = J_i Δθ,  φ_i = φ0(x_i),

and L_out = (1/B) Σ_i ℓ_i − margin(ψ_y) (krr.outer_loss with ŷ_i = o_i + K_iS α = o_i + φ_iᵀW).
Treating (W, Δθ, logτ) as independent inputs, the per-example gradient

    z_i = (∂ℓ_i/∂W [F×C],  J_iᵀ ∂ℓ_i/∂o_i [P],  ∂ℓ_i/∂logτ)

is clipped jointly to norm C, summed over the Poisson-sampled examples (padding masked to 0),
noised with N(0, σ²C²I) and divided by the expected batch size qN. Everything after reads no
private data (post-processing): the VJP of W(ψ, Δθ) maps the noised ∂L/∂W to the direct
ψ-gradient and the support side of g = ∂L/∂Δθ, the noised real-side Δθ and logτ gradients are
added, the label margin (ψ_y only) is added noise-free, then H⁻¹g, the implicit gradient, the
clip, AdaBelief, EMA and the pool exactly as in the ordinary step (step.py).

The jitted step is three functions, so a Poisson batch larger than the compiled size B_max is
summed in several chunks before the noise: ``prepare`` (pool model, inner solve, W),
``chunk`` (the clipped masked sum of B_max examples), ``finish`` (noise, post-processing,
update). Batches are drawn on the host (``poisson_batch``) from the run's seed and the step
number, so a resumed run draws the same batches.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rcig_release.config import DistillConfig
from rcig_release.rcig import krr, linearize
from rcig_release.rcig.state import DistillState, Setup
from rcig_release.rcig.step import (
    InnerProblem,
    apply_update,
    finish_meta_gradient,
    inner_solution,
    pick_pool_model,
    step_keys,
    support_set,
)

MECHANISM = (
    "DP-RCIG: per-example clipped (∂ℓ/∂W, ∂ℓ/∂Δθ, ∂ℓ/∂logτ), Gaussian noise, post-processing"
)
TAIL = 1e-12  # B_max: the smallest size with P(Binomial(N, q) > B_max) ≤ TAIL
_SALT = 0x0D9  # separates the batch stream from other uses of the seed


# ---- the mechanism (pure functions) -------------------------------------------------------


def head_weights(setup: Setup, theta0: Any, d: jax.Array, psi: dict) -> jax.Array:
    """W = Φ_Sᵀ (K_SS + λI)⁻¹ (Y_S − o_S), [F, C]: the kernel-ridge head in feature space."""
    x_s, y_s = support_set(setup, psi)
    phi_s, o_s = linearize.linear_forward(setup.apply, theta0, setup.tangents, d, x_s)
    alpha = krr.ridge_coefficients(krr.linear_kernel(phi_s, phi_s), y_s, o_s, setup.res.l2)
    return phi_s.T @ alpha


def example_loss(
    setup: Setup,
    theta0: Any,
    w: jax.Array,
    d: jax.Array,
    log_temp: jax.Array,
    x: jax.Array,
    label: jax.Array,
) -> jax.Array:
    """ℓ_i = CE(exp(logτ)·(J_i Δθ + φ_iᵀW), label) for one image ``x`` [H,W,C]."""
    phi, o = linearize.linear_forward(setup.apply, theta0, setup.tangents, d, x[None])
    logits = jnp.exp(log_temp) * (o[0] + phi[0] @ w)
    return -jax.nn.log_softmax(logits)[label]


def per_example_gradients(
    setup: Setup,
    theta0: Any,
    w: jax.Array,
    d: jax.Array,
    log_temp: jax.Array,
    x: jax.Array,
    labels: jax.Array,
) -> dict:
    """z_i for every image: {"w": [B,F,C], "d": [B,P], "log_temp": [B]}."""
    grad = jax.grad(
        lambda w, d, t, xi, li: example_loss(setup, theta0, w, d, t, xi, li), argnums=(0, 1, 2)
    )
    gw, gd, gt = jax.vmap(grad, in_axes=(None, None, None, 0, 0))(w, d, log_temp, x, labels)
    return {"w": gw, "d": gd, "log_temp": gt}


def example_norms(z: dict) -> jax.Array:
    """‖z_i‖ over all three parts jointly, [B]."""
    sq = sum(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in jax.tree.leaves(z))
    return jnp.sqrt(sq)


def clip_and_sum(z: dict, mask: jax.Array, clip: jax.Array | float) -> dict:
    """Σ_i mask_i · z_i · min(1, C/‖z_i‖). Masked (padding) rows contribute exactly 0, whatever
    they hold; ``clip`` may be inf (no clipping)."""
    norms = example_norms(z)
    safe = jnp.where(norms > 0, norms, 1.0)
    scale = jnp.where(norms > 0, jnp.minimum(1.0, clip / safe), 1.0)

    def masked_sum(a):
        m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
        s = scale.reshape(m.shape).astype(a.dtype)
        return jnp.sum(jnp.where(m, a * s, jnp.zeros_like(a)), axis=0)

    return jax.tree.map(masked_sum, z)


def clipped_sums(
    setup: Setup,
    theta0: Any,
    d: jax.Array,
    w: jax.Array,
    log_temp: jax.Array,
    x: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    clip: jax.Array | float,
) -> dict:
    """The pre-noise sums of one chunk of (padded) examples."""
    return clip_and_sum(per_example_gradients(setup, theta0, w, d, log_temp, x, labels), mask, clip)


def noisy_mean(
    sums: dict, key: jax.Array, noise_std: jax.Array | float, normaliser: jax.Array | float
) -> dict:
    """(sums + N(0, noise_std²I)) / normaliser; noise_std = σC, normaliser = qN (fixed)."""
    keys = dict(zip(sorted(sums), jax.random.split(key, len(sums)), strict=True))
    return {
        k: (v + noise_std * jax.random.normal(keys[k], v.shape, v.dtype)) / normaliser
        for k, v in sums.items()
    }


def post_process(
    setup: Setup, theta0: Any, d: jax.Array, psi: dict, mean: dict
) -> tuple[jax.Array, dict]:
    """(g = ∂L/∂Δθ, direct ψ-gradient) from the noised mean gradients: reads no real data."""
    _, vjp = jax.vjp(lambda p, dd: head_weights(setup, theta0, dd, p), psi, d)
    direct, g_support = vjp(mean["w"].astype(jnp.result_type(d)))
    margin = jax.grad(lambda y: -krr.label_margin(y))(psi["y"])
    direct = {
        **direct,
        "y": direct["y"] + margin,
        "log_temp": direct["log_temp"] + mean["log_temp"],
    }
    return g_support + mean["d"], direct


def dp_meta_gradient(
    setup: Setup,
    theta0: Any,
    psi: dict,
    x_t: jax.Array,
    labels_t: jax.Array,
    mask: jax.Array,
    inner_lr: jax.Array,
    hvp_lr: jax.Array,
    *,
    clip: float,
    noise_std: float,
    normaliser: float,
    key: jax.Array,
) -> tuple[dict, dict]:
    """The DP meta-gradient on one batch in one function (tests; the step runs the same pieces
    in three jitted parts). With clip = inf, noise_std = 0 and normaliser = the batch size it
    equals ``step.meta_gradient``."""
    inner, d, inner_losses = inner_solution(setup, theta0, psi, inner_lr)
    w = head_weights(setup, theta0, d, psi)
    sums = clipped_sums(setup, theta0, d, w, psi["log_temp"], x_t, labels_t, mask, clip)
    g, direct = post_process(setup, theta0, d, psi, noisy_mean(sums, key, noise_std, normaliser))
    grad, aux = finish_meta_gradient(setup, theta0, psi, inner, d, g, direct, hvp_lr)
    return grad, {"inner_losses": inner_losses, **aux}


# ---- Poisson sampling on the host ---------------------------------------------------------


def max_batch_size(n: int, q: float, tail: float = TAIL) -> int:
    """B_max: the smallest b with P(Binomial(n, q) > b) ≤ ``tail`` (at least 1)."""
    from scipy.stats import binom

    if q >= 1.0:
        return max(1, int(n))
    return max(1, int(binom.isf(tail, n, q)))


def poisson_batch(seed: int, step: int, n: int, q: float) -> np.ndarray:
    """Indices of step ``step``'s batch: each of the n examples independently with probability q,
    from a generator seeded by (seed, step), so a resumed run draws the same batches."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, _SALT])))
    return np.flatnonzero(rng.random(n) < q)


def chunks(idx: np.ndarray, b_max: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batch as (indices int32 [b_max], mask bool [b_max]) chunks padded with index 0 and
    mask False: ⌈|batch| / b_max⌉ of them (at least one), never truncated."""
    out = []
    for s in range(0, max(len(idx), 1), b_max):
        part = idx[s : s + b_max]
        pad = np.zeros(b_max, np.int32)
        pad[: len(part)] = part
        out.append((pad, np.arange(b_max) < len(part)))
    return out


# ---- the step -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _jitted(setup: Setup):
    @jax.jit
    def prepare(state: DistillState):
        k, theta0 = pick_pool_model(setup, state)
        inner, d, inner_losses = inner_solution(setup, theta0, state.psi, state.inner_lr)
        return k, d, head_weights(setup, theta0, d, state.psi), inner.k_ss, inner.jac, inner_losses

    @jax.jit
    def chunk(state: DistillState, k, d, w, x_train, y_train, idx, mask, clip):
        theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
        return clipped_sums(
            setup, theta0, d, w, state.psi["log_temp"], x_train[idx], y_train[idx], mask, clip
        )

    @jax.jit
    def finish(state: DistillState, k, d, k_ss, jac, inner_losses, sums, noise_std, normaliser):
        theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
        mean = noisy_mean(sums, step_keys(state)["batch"], noise_std, normaliser)
        g, direct = post_process(setup, theta0, d, state.psi, mean)
        x_s, y_s = support_set(setup, state.psi)
        inner = InnerProblem(setup, theta0, x_s, y_s, k_ss=k_ss, jac=jac)
        grad, aux = finish_meta_gradient(
            setup, theta0, state.psi, inner, d, g, direct, state.hvp_lr
        )
        return apply_update(setup, state, k, theta0, grad, {"inner_losses": inner_losses, **aux})

    return prepare, chunk, finish


class DPStep:
    """One DP-RCIG outer step: ``step(state, x_train, y_train, t)`` → (state, metrics), with
    ``t`` the number of steps done (the host's count; it seeds the Poisson batch).

    ``cfg`` is the run's configuration with the DP defaults filled (``with_data_defaults``);
    ``b_max`` overrides B_max (tests force chunking with a tiny one)."""

    def __init__(self, setup: Setup, cfg: DistillConfig, n_train: int, b_max: int | None = None):
        if cfg.dp_noise_multiplier is None or cfg.dp_sampling_rate is None:
            raise ValueError("DPStep needs the DP defaults filled (config.with_data_defaults)")
        self.setup, self.seed, self.n = setup, int(cfg.seed), int(n_train)
        self.q, self.sigma, self.clip = (
            float(cfg.dp_sampling_rate),
            float(cfg.dp_noise_multiplier),
            float(cfg.dp_clip),
        )
        self.b_max = b_max or max_batch_size(self.n, self.q)
        self.normaliser = self.q * self.n
        self.chunks_run = 0  # chunks summed so far (tests and benchmarks)
        self._prepare, self._chunk, self._finish = _jitted(setup)

    def __call__(
        self, state: DistillState, x_train: jax.Array, y_train: jax.Array, t: int
    ) -> tuple[DistillState, dict]:
        k, d, w, k_ss, jac, inner_losses = self._prepare(state)
        sums = None
        clip = jnp.float32(self.clip)
        for idx, mask in chunks(poisson_batch(self.seed, t, self.n, self.q), self.b_max):
            part = self._chunk(state, k, d, w, x_train, y_train, idx, mask, clip)
            sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
            self.chunks_run += 1
        return self._finish(
            state,
            k,
            d,
            k_ss,
            jac,
            inner_losses,
            sums,
            jnp.float32(self.sigma * self.clip),
            jnp.float32(self.normaliser),
        )


def record(cfg: DistillConfig, n_train: int) -> dict[str, Any]:
    """The run.json ``dp`` object (without "preprocessing", which the pipeline knows): ε
    recomputed by the accountant for the run's σ and step count."""
    from rcig_release.rcig import accounting

    assert cfg.dp_sampling_rate is not None and cfg.steps is not None  # with_data_defaults
    assert cfg.dp_noise_multiplier is not None and cfg.dp_delta is not None
    assert cfg.dp_epsilon is not None
    q, steps = float(cfg.dp_sampling_rate), int(cfg.steps)
    return {
        "epsilon": accounting.epsilon_for(cfg.dp_noise_multiplier, cfg.dp_delta, q, steps),
        "target_epsilon": float(cfg.dp_epsilon),
        "delta": float(cfg.dp_delta),
        "noise_multiplier": float(cfg.dp_noise_multiplier),
        "clip_norm": float(cfg.dp_clip),
        "sampling_rate": q,
        "steps": steps,
        "expected_batch_size": q * n_train,
        "max_batch_size": max_batch_size(n_train, q),
        "mechanism": MECHANISM,
        **accounting.GUARANTEE,
        "accountant_version": accounting.accountant_version(),
    }
