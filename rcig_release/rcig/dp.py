"""DP-RCIG: the outer step with per-example clipping and Gaussian noise (docs/dp.md).

Private examples reach ψ only through the outer loss on the real batch. With the head's weights
in feature space W = Φ_Sᵀα (F×C, α = (K_SS + λI)⁻¹(Y_S − o_S)), example i's loss is

    ℓ_i = CE(exp(logτ)·(o_i + φ_iᵀW), label_i),    o_i = J_i Δθ,  φ_i = φ0(x_i),

and L_out = (1/B) Σ_i ℓ_i − margin(ψ_y) (krr.outer_loss with ŷ_i = o_i + K_iS α = o_i + φ_iᵀW).
Treating (W, Δθ, logτ) as independent inputs, the per-example gradient

    z_i = (∂ℓ_i/∂W [F×C],  J_iᵀ ∂ℓ_i/∂o_i [P],  ∂ℓ_i/∂logτ)

is zeroed if any entry is non-finite, clipped jointly to norm C, summed over the Poisson-sampled
examples (padding masked to 0), noised with N(0, σ²C²I) in float64 on the host and divided by
the expected batch size qN. Everything after reads no private data (post-processing): the VJP
of W(ψ, Δθ) maps the noised ∂L/∂W to the direct ψ-gradient and the support side of
g = ∂L/∂Δθ, the noised real-side Δθ and logτ gradients are added, the label margin (ψ_y only)
is added noise-free, then H⁻¹g, the implicit gradient, the clip, AdaBelief, EMA and the pool
exactly as in the ordinary step (step.py).

The jitted step is three functions, so a Poisson batch larger than the compiled size B_max is
summed in several chunks before the noise: ``prepare`` (pool model, inner solve, W), ``chunk``
(the clipped masked sum of B_max examples), ``finish`` (post-processing and update, given the
noised mean). Between them the host adds the chunks' sums and the noise (``add_noise``).

Secret randomness: the Poisson memberships and the Gaussian noise, the only random choices that
touch private data, come from generators seeded afresh at every draw with 256 bits of OS entropy
(``secret_rng``), which are never stored or logged and do not depend on the seed. The seed
(``state.key``) drives only public choices (initialisations, pool model, pool training).
"""

from __future__ import annotations

import functools
import math
import secrets
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rcig_release import parallel
from rcig_release.config import DistillConfig
from rcig_release.rcig import krr, linearize
from rcig_release.rcig.state import DistillState, Setup
from rcig_release.rcig.step import (
    InnerProblem,
    apply_update,
    finish_meta_gradient,
    inner_solution,
    pick_pool_model,
    support_set,
)

MECHANISM = (
    "DP-RCIG: per-example clipped (∂ℓ/∂W, ∂ℓ/∂Δθ, ∂ℓ/∂logτ), Gaussian noise, post-processing"
)
TAIL = 1e-12  # B_max: the smallest size with P(Binomial(N, q) > B_max) ≤ TAIL
# numpy's float64 ziggurat (random_standard_normal) starts its tail at r and draws x = r + ξ,
# ξ = −log(1 − U)/r, accepted when −2·log(1 − V) > ξ²; U and V lie on the 2⁻⁵³ grid, so
# −log(1 − V) ≤ 53·ln 2 and every draw has |x| < r + √(106·ln 2) ≈ 12.23 (docs/dp.md, "Noise").
ZIGGURAT_R = 3.6541528853610088
NOISE_SUPPORT = ZIGGURAT_R + math.sqrt(2 * 53 * math.log(2))
NOISE_SAMPLER = (
    "numpy Generator.standard_normal in float64 (ziggurat with exponential-rejection tail, "
    "support |z| < 12.23), on PCG64 seeded with 256 bits from secrets.randbits per draw"
)


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
    """‖z_i‖ over all three parts jointly, [B]. Each row is scaled by its largest entry first,
    so a huge but finite row does not overflow to inf."""
    leaves = [a.reshape(a.shape[0], -1) for a in jax.tree.leaves(z)]
    big = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(a), axis=1) for a in leaves])
    unit = jnp.where(big > 0, big, 1.0)
    sq = sum(jnp.sum((a / unit[:, None]) ** 2, axis=1) for a in leaves)
    return unit * jnp.sqrt(sq)


def finite_rows(z: dict) -> jax.Array:
    """[B] bool: every entry of example i's gradient (all three parts) is finite."""
    leaves = [a.reshape(a.shape[0], -1) for a in jax.tree.leaves(z)]
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a), axis=1) for a in leaves])


def clip_and_sum(z: dict, mask: jax.Array, clip: jax.Array | float) -> dict:
    """Σ_i mask_i · z̃_i · min(1, C/‖z̃_i‖), with z̃_i = z_i if all its entries are finite, else 0.

    So every example adds a vector of norm ≤ C whatever its gradient holds (NaN, inf, huge
    values): the sensitivity bound of the sum. A row whose norm overflows to inf is scaled by
    C/inf = 0. Masked (padding) rows contribute exactly 0; ``clip`` may be inf (no clipping)."""
    ok = finite_rows(z)

    def zeroed(a):
        return jnp.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, jnp.zeros_like(a))

    z = jax.tree.map(zeroed, z)
    norms = example_norms(z)
    scale = jnp.where(norms > clip, clip / jnp.where(norms > 0, norms, 1.0), 1.0)

    def masked_sum(a):
        m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
        s = scale.reshape(m.shape).astype(a.dtype)
        return jnp.sum(jnp.where(m, a * s, jnp.zeros_like(a)), axis=0)

    return jax.tree.map(masked_sum, z)


def nonfinite_count(z: dict, mask: jax.Array) -> jax.Array:
    """How many unmasked rows ``clip_and_sum`` zeroes as non-finite: a statistic of the private
    batch, not covered by the guarantee, so never logged (docs/dp.md)."""
    return jnp.sum(jnp.logical_and(mask, jnp.logical_not(finite_rows(z))))


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
) -> tuple[dict, jax.Array]:
    """(the pre-noise sums of one chunk of (padded) examples, its count of non-finite rows)."""
    z = per_example_gradients(setup, theta0, w, d, log_temp, x, labels)
    return clip_and_sum(z, mask, clip), nonfinite_count(z, mask)


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
    normaliser: float,
) -> tuple[dict, dict]:
    """The DP meta-gradient of one batch in one function, without the noise (tests; the step runs
    the same pieces in three jitted parts with the host's noise between them). With clip = inf
    and normaliser = the batch size it equals ``step.meta_gradient``."""
    inner, d, inner_losses = inner_solution(setup, theta0, psi, inner_lr)
    w = head_weights(setup, theta0, d, psi)
    sums, _ = clipped_sums(setup, theta0, d, w, psi["log_temp"], x_t, labels_t, mask, clip)
    g, direct = post_process(setup, theta0, d, psi, {k: v / normaliser for k, v in sums.items()})
    grad, aux = finish_meta_gradient(setup, theta0, psi, inner, d, g, direct, hvp_lr)
    return grad, {"inner_losses": inner_losses, **aux}


# ---- the noise on the host ----------------------------------------------------------------


def secret_rng() -> np.random.Generator:
    """A generator seeded with 256 fresh bits of OS entropy (``secrets``): nothing in the run,
    its seed included, determines them, and nothing records them. One per draw."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(secrets.randbits(256))))


def add_noise(
    sums: dict, noise_std: float, normaliser: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """(sums + N(0, noise_std²I)) / normaliser in float64, then cast to float32 (post-processing).
    noise_std = σC, normaliser = qN (fixed). Parts in sorted key order."""
    out = {}
    for k in sorted(sums):
        out[k] = (noised(sums[k], noise_std, rng) / normaliser).astype(np.float32)
    return out


def noised(s: Any, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """s + N(0, noise_std²I) in float64: the one Gaussian sampler of every DP release here
    (DP-RCIG's steps through ``add_noise``, DP feature means' single release, rcig/dpstat.py)."""
    s = np.asarray(s, np.float64)
    return s + noise_std * rng.standard_normal(s.shape, dtype=np.float64)


def sampler_residual(dim: int, steps: int, epsilon: float) -> float:
    """What the noise sampler's truncation adds to δ: (1 + e^ε)·τ, τ = dim·steps·P(|Z| ≥ 12.23).

    Every draw lies within ±``NOISE_SUPPORT``; the ideal Gaussian's mass outside is 2.3e-34 per
    coordinate, so the run's output is within total variation τ of the ideal mechanism's, and
    (ε, δ)-DP of the ideal one gives (ε, δ + (1 + e^ε)τ) for the sampled one (docs/dp.md)."""
    from scipy.stats import norm

    tail = 2.0 * float(norm.sf(NOISE_SUPPORT))
    return (1.0 + math.exp(min(float(epsilon), 700.0))) * float(dim) * float(steps) * tail


# ---- Poisson sampling on the host ---------------------------------------------------------


def max_batch_size(n: int, q: float, tail: float = TAIL) -> int:
    """B_max: the smallest b with P(Binomial(n, q) > b) ≤ ``tail`` (at least 1)."""
    from scipy.stats import binom

    if q >= 1.0:
        return max(1, int(n))
    return max(1, int(binom.isf(tail, n, q)))


def poisson_batch(n: int, q: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of one batch: each of the n examples independently with probability q (the step
    passes a fresh ``secret_rng()``). ``rng.random`` lies on the 2⁻⁵³ grid, so each example's
    realised rate is in [q, q + 2⁻⁵³)."""
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
def _jitted(setup: Setup, mesh: Any):
    """The three parts, jitted over ``mesh``: everything replicated except a chunk's examples
    (indices and mask), which are split over the mesh's devices. Each device clips and sums its
    own examples and the partial sums are added (``shard_map`` + ``psum``), written out rather
    than left to sharding propagation: on jax 0.10.2 both the propagated version and
    ``shard_map`` with its default ``check_vma=True`` returned wrong per-example Δθ-gradients
    (the vmapped gradient through the network's jvp) on two devices; ``check_vma=False`` gives
    the one-device values (tests/test_parallel.py; docs/design.md)."""
    from jax.sharding import PartitionSpec

    rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    one, split = PartitionSpec(), PartitionSpec(parallel.AXIS)

    def local_sums(theta0, d, w, log_temp, x_train, y_train, idx, mask, clip):
        sums, bad = clipped_sums(
            setup, theta0, d, w, log_temp, x_train[idx], y_train[idx], mask, clip
        )
        return jax.lax.psum((sums, bad), parallel.AXIS)

    sharded_sums = jax.shard_map(
        local_sums,
        mesh=mesh,
        in_specs=(one,) * 6 + (split, split, one),
        out_specs=one,
        check_vma=False,
    )

    def prepare(state: DistillState):
        k, theta0 = pick_pool_model(setup, state)
        inner, d, inner_losses = inner_solution(setup, theta0, state.psi, state.inner_lr)
        return k, d, head_weights(setup, theta0, d, state.psi), inner.k_ss, inner.jac, inner_losses

    def chunk(state: DistillState, k, d, w, x_train, y_train, idx, mask, clip):
        theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
        return sharded_sums(theta0, d, w, state.psi["log_temp"], x_train, y_train, idx, mask, clip)

    def finish(state: DistillState, k, d, k_ss, jac, inner_losses, mean):
        theta0 = jax.tree.map(lambda p: p[k], state.pool_params)
        g, direct = post_process(setup, theta0, d, state.psi, mean)
        x_s, y_s = support_set(setup, state.psi)
        inner = InnerProblem(setup, theta0, x_s, y_s, k_ss=k_ss, jac=jac)
        grad, aux = finish_meta_gradient(
            setup, theta0, state.psi, inner, d, g, direct, state.hvp_lr
        )
        return apply_update(setup, state, k, theta0, grad, {"inner_losses": inner_losses, **aux})

    return (
        parallel.PlacedJit(prepare, (rep,), rep),
        parallel.PlacedJit(chunk, (rep,) * 6 + (batch, batch, rep), rep),
        parallel.PlacedJit(finish, (rep,) * 7, rep),
    )


class DPStep:
    """One DP-RCIG outer step: ``step(state, x_train, y_train)`` → (state, metrics).

    Every call draws its Poisson batch and its noise from fresh OS entropy (``secret_rng``): two
    calls on the same state differ, and nothing recorded reproduces either. The parts are
    methods (``sample_batch``, ``clipped_sum``, ``noised_mean``) so that tests run each alone.
    ``cfg`` is the run's configuration with the DP defaults filled (``with_data_defaults``);
    ``b_max`` overrides B_max (tests force chunking with a tiny one). ``nonfinite_rows`` counts
    the examples zeroed as non-finite so far: a function of the private data that the guarantee
    does not cover, so it stays in memory (never logged).

    Several devices or processes (``mesh``, default every device): each chunk's examples are
    split over the devices and their clipped sums added by XLA. The secret draws are made by
    process 0 alone and broadcast (``parallel.broadcast``), so every process applies the same
    batch and the same noise; the other processes never draw (docs/dp.md, "Several devices
    and hosts")."""

    def __init__(
        self,
        setup: Setup,
        cfg: DistillConfig,
        n_train: int,
        b_max: int | None = None,
        mesh: Any = None,
    ):
        if cfg.dp_noise_multiplier is None or cfg.dp_sampling_rate is None:
            raise ValueError("DPStep needs the DP defaults filled (config.with_data_defaults)")
        self.setup, self.n = setup, int(n_train)
        self.q, self.sigma, self.clip = (
            float(cfg.dp_sampling_rate),
            float(cfg.dp_noise_multiplier),
            float(cfg.dp_clip),
        )
        self.mesh = parallel.data_mesh() if mesh is None else mesh
        # a chunk splits evenly over the devices (padding rows are masked out)
        n_dev = int(self.mesh.devices.size)
        self.b_max = -(-(b_max or max_batch_size(self.n, self.q)) // n_dev) * n_dev
        self.normaliser = self.q * self.n
        self.chunks_run = 0  # chunks summed so far (tests and benchmarks)
        self.nonfinite_rows = 0  # private: never logged (docs/dp.md)
        self._prepare, self._chunk, self._finish = _jitted(setup, self.mesh)

    def sample_batch(self) -> np.ndarray:
        """This step's Poisson batch (indices into the training set), from fresh OS entropy,
        drawn by process 0 and broadcast to the others as a membership mask."""
        member = np.zeros(self.n, np.bool_)
        if parallel.is_primary():
            member[poisson_batch(self.n, self.q, secret_rng())] = True
        return np.flatnonzero(parallel.broadcast(member))

    def prepare(self, state: DistillState) -> tuple:
        """(k, Δθ*, W, K_SS, J_S, inner losses) of this state: reads no private data."""
        return self._prepare(state)

    def clipped_sum(
        self,
        state: DistillState,
        prep: tuple,
        x_train: jax.Array,
        y_train: jax.Array,
        idx: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Σ over the batch ``idx`` of the clipped per-example gradients, in float64 on the host:
        ⌈|idx| / B_max⌉ calls of the jitted ``chunk`` (never truncated)."""
        k, d, w = prep[:3]
        clip = np.float32(self.clip)
        total: dict[str, np.ndarray] | None = None
        for cidx, mask in chunks(np.asarray(idx), self.b_max):
            part, bad = self._chunk(state, k, d, w, x_train, y_train, cidx, mask, clip)
            part64 = {key: np.asarray(v, np.float64) for key, v in jax.device_get(part).items()}
            total = part64 if total is None else {key: total[key] + part64[key] for key in total}
            self.nonfinite_rows += int(bad)
            self.chunks_run += 1
        assert total is not None  # chunks() yields at least one chunk
        return total

    def noised_mean(self, sums: dict) -> dict[str, np.ndarray]:
        """(sums + N(0, σ²C²I)) / qN: float64 noise from fresh OS entropy, then float32; drawn
        by process 0 and broadcast (the sums are the same on every process)."""
        if parallel.is_primary():
            mean = add_noise(sums, self.sigma * self.clip, self.normaliser, secret_rng())
        else:
            mean = {k: np.zeros(np.shape(v), np.float32) for k, v in sorted(sums.items())}
        return parallel.broadcast(mean)

    def __call__(
        self, state: DistillState, x_train: jax.Array, y_train: jax.Array
    ) -> tuple[DistillState, dict]:
        prep = self.prepare(state)
        sums = self.clipped_sum(state, prep, x_train, y_train, self.sample_batch())
        mean = self.noised_mean(sums)
        k, d, _, k_ss, jac, inner_losses = prep
        return self._finish(state, k, d, k_ss, jac, inner_losses, mean)


def randomness(cfg: DistillConfig) -> dict[str, Any]:
    """run.json's ``randomness``: what the seed drives (public), and for a DP run what comes from
    OS entropy (secret, recorded nowhere). DP feature means: ``dpstat.randomness``."""
    if cfg.dp and cfg.dp_mechanism == "features":
        from rcig_release.rcig import dpstat

        return dpstat.randomness(cfg)
    init = (
        "the noise initialisation of the distilled images"
        if cfg.init == "noise"
        else "the choice of the real initial images"
    )
    public = [
        init,
        "the pool models' initialisations and re-initialisations",
        "the pool model chosen at each step and its number of training steps",
    ]
    if not cfg.dp:
        return {
            "public": {"seed": cfg.seed, "drives": [*public, "the real batches"]},
            "secret": None,
        }
    return {
        "public": {"seed": cfg.seed, "drives": public},
        "secret": {
            "source": "OS entropy: 256 fresh bits from Python's secrets.randbits per draw",
            "drives": ["the Poisson batch memberships", "the Gaussian noise"],
            "noise_sampler": NOISE_SAMPLER,
            "recorded": "not recorded (not in run.json, metrics, logs or checkpoints)",
        },
    }


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
