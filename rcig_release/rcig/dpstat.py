"""DP feature means: a one-shot private statistic from which the set is optimised freely
(``--dp-mechanism features``; docs/dp.md, "DP feature means").

The mechanism reads the private training images exactly once. K random ConvNets (the evaluation
family, weights from the public seed) map each image x_i to K penultimate feature vectors; each
is scaled to unit norm and the record's contribution is

    u_i = C · ( a·f_1(x_i)/(‖f_1(x_i)‖√K), …, a·f_K(x_i)/(‖f_K(x_i)‖√K), b ),   a² + b² = 1,

clipped jointly to norm C once more (a float safety net: ‖u_i‖ ≤ C whatever the record), with
non-finite or all-zero feature blocks set to 0. The released statistic is one matrix, a row per
class:

    S[c] = Σ_{i: y_i = c} u_i + N(0, σ²C² I),     S ∈ R^{classes × (K·F + 1)}.

Adding or removing one image changes one row of the noise-free sum by u_i, so the L2 sensitivity
of the whole matrix is ≤ C and one Gaussian release with noise multiplier σ is (ε, δ)-DP with
ε from the PLD accountant for ``GaussianDpEvent(σ)`` (no sampling, no composition). The last
coordinate of each row is b·C times the class count plus noise, so the class counts and means
are estimated from the release itself (``estimate``); nothing else reads private data. Optimising
the synthetic images to match those means (``rcig/statmatch.py``) is post-processing.

The noise is DP-RCIG's sampler (``dp.noised``: float64 ``standard_normal``) on a generator seeded
with 256 fresh bits of OS entropy (``dp.secret_rng``), never written anywhere and not settable
from the command line; ``--seed`` drives only the public networks, the images' initialisation and
the optimisation (``randomness``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
from dp_accounting import dp_event

from rcig_release.config import DistillConfig
from rcig_release.rcig import accounting, dp

NAME = "features"  # DistillConfig.dp_mechanism / --dp-mechanism / run.json dp.dp_mechanism
MECHANISM = (
    "DP feature means: per-class sums of unit-normalised penultimate features of {k} random "
    "ConvNets (width {w}, weights from the public seed){pixels} and a class-count coordinate, "
    "each image's contribution clipped to the clip norm, released once with Gaussian noise; "
    "the images are then optimised to match the released means (post-processing)"
)
PIXELS_TEXT = ", of the image itself (divided by √(H·W·C), clipped to norm 1)"
SAMPLING = "none"  # every record is used exactly once, in one release
CHUNK = 500  # images per feature batch (memory: CHUNK · K · F float64 on the host)
NET_SALT = 0x5EED  # the feature networks' keys: fold_in(PRNGKey(seed), NET_SALT + k)


@dataclasses.dataclass(frozen=True)
class StatSettings:
    """What fixes the released statistic (from ``DistillConfig``; all public)."""

    networks: int  # K
    width: int  # ConvNet width (the run's, so the evaluation family)
    depth: int
    clip: float  # C: the norm bound of one image's contribution
    count_weight: float  # b: the count coordinate's share of the norm (a = √(1 − b²))
    seed: int  # the networks' weights derive from it
    pixels: bool  # one more block: the image itself (its direction in model space)

    @property
    def blocks(self) -> int:
        """J, the blocks of one record: the K networks, then the pixels."""
        return self.networks + (1 if self.pixels else 0)

    def bounds(self, image_shape: tuple[int, ...]) -> list[float | None]:
        """Per block: None (unit-normalised) for the networks; √(H·W·C) for the pixel block, the
        norm of an image whose every model-space value is ±1 (the fixed preprocessing maps
        pixels to [−1, 1]), so a valid image's block has norm ≤ 1 and keeps its intensity."""
        pixels: list[float | None] = [float(np.sqrt(np.prod(image_shape)))] if self.pixels else []
        return [None] * self.networks + pixels


def settings_for(cfg: DistillConfig, depth: int) -> StatSettings:
    return StatSettings(
        networks=int(cfg.dp_networks),
        width=int(cfg.width),
        depth=int(depth),
        clip=float(cfg.dp_clip),
        count_weight=float(cfg.dp_count_weight),
        seed=int(cfg.seed),
        pixels=bool(cfg.dp_pixels),
    )


# ---- accounting: one Gaussian release -------------------------------------------------------


def event(noise_multiplier: float) -> dp_event.DpEvent:
    return dp_event.GaussianDpEvent(noise_multiplier)


@functools.lru_cache(maxsize=64)
def epsilon_for(noise_multiplier: float, delta: float) -> float:
    """ε at ``delta`` of one Gaussian release of sensitivity C with noise σC (the PLD accountant
    of rcig/accounting.py, same discretisation)."""
    return float(accounting.make_accountant().compose(event(noise_multiplier)).get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def calibrate_noise(epsilon: float, delta: float) -> float:
    """The smallest σ (within ``accounting.TOLERANCE``) whose single release is (ε, δ)-DP."""
    return float(
        dp_accounting.calibrate_dp_mechanism(
            accounting.make_accountant, event, epsilon, delta, tol=accounting.TOLERANCE
        )
    )


# ---- the feature networks (public) ------------------------------------------------------------


def feature_networks(
    s: StatSettings, image_shape: tuple[int, int, int], num_classes: int
) -> tuple[Callable[[Any, jax.Array], jax.Array], list[Any]]:
    """(apply(params, x) → features [B, F], the K networks' params), from the public seed. The
    evaluation's ConvNet (ReLU) at the run's width and depth."""
    from rcig_release.models import ConvNet

    net = ConvNet(num_classes=num_classes, width=s.width, depth=s.depth, softplus_temp=0.0)
    x0 = jnp.zeros((1, *image_shape), jnp.float32)
    base = jax.random.PRNGKey(s.seed)
    params = [net.init(jax.random.fold_in(base, NET_SALT + k), x0) for k in range(s.networks)]

    def apply(p: Any, x: jax.Array) -> jax.Array:
        out: Any = net.apply(p, x)
        return out[1]

    return apply, params


# ---- the mechanism (host, float64) ------------------------------------------------------------


def contributions(
    blocks: Sequence[np.ndarray],
    clip: float,
    count_weight: float,
    bounds: Sequence[float | None] | None = None,
) -> np.ndarray:
    """u_i for a batch: ``blocks`` J arrays [B, F_j] (any values, NaN and inf included) →
    [B, ΣF_j + 1] float64 with ‖u_i‖ ≤ ``clip`` for every row.

    Block j is scaled to norm a/√J (a = √(1 − b²)) when ``bounds[j]`` is None (unit
    normalisation: the networks' features), else divided by the public bound ``bounds[j]`` and
    clipped to norm 1 before the same a/√J (the pixel block: its intensity is kept). A block with
    a non-finite entry or norm 0 becomes 0; the last coordinate is b; the row is multiplied by C
    and clipped jointly to C (a no-op up to rounding, kept so the bound never rests on the
    arithmetic above).
    """
    j = len(blocks)
    bounds = [None] * j if bounds is None else list(bounds)
    a = np.sqrt(1.0 - count_weight**2)
    parts = []
    for block, bound in zip(blocks, bounds, strict=True):
        f = np.asarray(block, np.float64)
        f = f.reshape(f.shape[0], -1)
        finite = np.isfinite(f).all(axis=1, keepdims=True)
        f = np.where(finite, f, 0.0)
        if bound is not None:
            f = f / float(bound)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(f, axis=1, keepdims=True)
        ok = finite & (norms > 0) & np.isfinite(norms)
        safe = np.where(ok, norms, 1.0)
        scale = 1.0 / safe if bound is None else np.minimum(1.0, 1.0 / safe)
        parts.append(np.where(ok, f * scale, 0.0) * (a / np.sqrt(j)))
    b = parts[0].shape[0]
    u = np.concatenate([*parts, np.full((b, 1), count_weight)], axis=1) * clip
    total = np.linalg.norm(u, axis=1, keepdims=True)
    return u * np.minimum(1.0, clip / np.maximum(total, np.finfo(np.float64).tiny))


def class_sums(u: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Σ_{i: y_i = c} u_i, [classes, D] float64. Labels outside 0..classes−1 contribute 0."""
    labels = np.asarray(labels, np.int64)
    onehot = (labels[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
    return onehot.T @ u


def statistic(
    blocks_fn: Callable[[np.ndarray], Sequence[np.ndarray]],
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    clip: float,
    count_weight: float,
    bounds: Sequence[float | None] | None = None,
    chunk: int = CHUNK,
) -> np.ndarray:
    """The noise-free statistic Σ_i e_{y_i} u_iᵀ over every record, [classes, ΣF_j + 1] float64.
    ``blocks_fn(x_chunk)`` → the J blocks [B, F_j]. Private: only ``release`` may see it."""
    total = None
    for s in range(0, len(labels), chunk):
        u = contributions(blocks_fn(x[s : s + chunk]), clip, count_weight, bounds)
        part = class_sums(u, labels[s : s + chunk], num_classes)
        total = part if total is None else total + part
    assert total is not None, "no training images"
    return total


def release(
    stat: np.ndarray, noise_multiplier: float, clip: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """stat + N(0, (σC)² I) in float64: DP-RCIG's sampler (``dp.noised``: numpy's float64
    ziggurat, support |z| < 12.23, ``dp.NOISE_SUPPORT``) on a generator seeded with 256 fresh
    bits of OS entropy (``dp.secret_rng``). ``rng`` is for tests only; a run never passes it."""
    return dp.noised(stat, noise_multiplier * clip, rng if rng is not None else dp.secret_rng())


def sampler_residual(cfg: DistillConfig, released_size: int) -> float:
    """What the sampler's truncation adds to δ for the one release of ``released_size``
    coordinates (``dp.sampler_residual`` with one step): below 1e-27 at any size here."""
    assert cfg.dp_epsilon is not None
    return dp.sampler_residual(released_size, 1, float(cfg.dp_epsilon))


def randomness(cfg: DistillConfig) -> dict[str, Any]:
    """run.json's ``randomness`` of a DP-feature-means run: the seed drives the public choices;
    the release's noise comes from OS entropy and is recorded nowhere."""
    return {
        "public": {
            "seed": cfg.seed,
            "drives": [
                "the feature networks' weights (fold_in(PRNGKey(seed), 0x5EED + k))",
                (
                    "the noise added to the release's class mean images (--init dp-mean)"
                    if cfg.init == "dp-mean"
                    else "the noise initialisation of the distilled images"
                ),
                "the feature networks chosen at each optimisation step",
            ],
        },
        "secret": {
            "source": "OS entropy: 256 fresh bits from Python's secrets.randbits for the release",
            "drives": ["the Gaussian noise of the one release"],
            "noise_sampler": dp.NOISE_SAMPLER,
            "recorded": "not recorded (not in run.json, metrics, logs or checkpoints)",
        },
    }


# ---- post-processing of the release --------------------------------------------------------


def estimate(
    noisy: np.ndarray, sizes: Sequence[int], s: StatSettings, min_count: float = 1.0
) -> tuple[list[np.ndarray], np.ndarray]:
    """(per block j the class means [classes, F_j] of the scaled unit blocks f/(‖f‖√J), counts
    [classes]) from the release alone: n̂_c = S[c, −1]/(bC) (at least ``min_count``), means =
    S[c, :−1]/(aC·n̂_c) split at the block ``sizes``."""
    a = np.sqrt(1.0 - s.count_weight**2)
    counts = np.maximum(noisy[:, -1] / (s.count_weight * s.clip), min_count)
    means = noisy[:, :-1] / (a * s.clip * counts[:, None])
    assert means.shape[1] == sum(sizes), "block sizes do not match the release"
    return np.split(means, np.cumsum(sizes)[:-1], axis=1), counts


def record(
    cfg: DistillConfig, n_train: int, released_cols: int, num_classes: int
) -> dict[str, Any]:
    """The run.json ``dp`` object of a DP-feature-means run (without "preprocessing", which the
    pipeline adds). The DP-RCIG keys keep their meaning for a single full-data release: sampling
    "none", rate 1, one step, batch = every training image."""
    assert cfg.dp_noise_multiplier is not None and cfg.dp_delta is not None
    assert cfg.dp_epsilon is not None
    k = int(cfg.dp_networks)
    return {
        "epsilon": epsilon_for(float(cfg.dp_noise_multiplier), float(cfg.dp_delta)),
        "target_epsilon": float(cfg.dp_epsilon),
        "delta": float(cfg.dp_delta),
        "noise_multiplier": float(cfg.dp_noise_multiplier),
        "clip_norm": float(cfg.dp_clip),
        "sampling_rate": 1.0,
        "steps": 1,
        "expected_batch_size": float(n_train),
        "max_batch_size": int(n_train),
        "sampling": SAMPLING,
        "neighbouring": accounting.GUARANTEE["neighbouring"],
        "unit": accounting.GUARANTEE["unit"],
        "mechanism": MECHANISM.format(
            k=k, w=int(cfg.width), pixels=PIXELS_TEXT if cfg.dp_pixels else ""
        ),
        "accountant": accounting.ACCOUNTANT,
        "accountant_version": accounting.accountant_version(),
        "dp_mechanism": NAME,
        "networks": k,
        "count_weight": float(cfg.dp_count_weight),
        "released_shape": [int(num_classes), int(released_cols)],
    }
