"""Post-processing of the DP feature-means release: optimise the synthetic images to match it.

Given the released per-class means μ̂_c,k of the scaled unit features f_k(x)/(‖f_k(x)‖√J)
(``dpstat.estimate``; J = K networks, plus one when the image itself is a block), the images X
(labels fixed, one-hot − 1/C) minimise

    L(X) = Σ_k Σ_c ‖ mean_{j: class c} f_k(X_j)/(‖f_k(X_j)‖√J) − μ̂_c,k ‖²  (+ the pixel block's)

by Adam, with a random subset of ``per_step`` networks per step (an unbiased estimate of the
network part up to the factor K/per_step) and the pixel block every step, from the public seed. The function reads the release and public
networks only: it is post-processing, whatever it does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PER_STEP = 2  # networks per optimisation step
LR = 1e-2  # Adam on the images (model space, pixels in [-1, 1]); not RCIG's proto_lr
MATCH_SALT = 0x3A7C  # the network choice: a generator from (seed, MATCH_SALT)


@dataclasses.dataclass(frozen=True)
class MatchSettings:
    steps: int
    lr: float  # Adam on the images (model space)
    per_step: int
    ipc: int


def unit_blocks(feats: jax.Array, k_total: int) -> jax.Array:
    """f/(‖f‖√K) per row, 0 for a zero row (the release's scaling of one network's block)."""
    n = jnp.linalg.norm(feats, axis=1, keepdims=True)
    safe = jnp.where(n > 0, n, 1.0)
    return jnp.where(n > 0, feats / safe, 0.0) / np.sqrt(k_total)


def match_loss(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    idx: jax.Array,
    x: jax.Array,
    targets: jax.Array,
    pixel_target: jax.Array | None,
    num_classes: int,
    ipc: int,
) -> jax.Array:
    """Σ over the chosen networks ``idx`` of Σ_c ‖class mean − target‖², times K/len(idx), plus
    the pixel block's term when ``pixel_target`` is given. ``params``: the K networks stacked on
    a leading axis; ``targets`` [classes, K, F]; ``pixel_target`` [classes, H·W·C]; ``x`` ordered
    class by class (``ipc`` per class). Blocks are scaled by 1/√J, J = K (+ 1 with pixels)."""
    k_total = targets.shape[1]
    j_total = k_total + (0 if pixel_target is None else 1)
    total = jnp.float32(0.0)
    for j in range(idx.shape[0]):
        p = jax.tree.map(lambda leaf, i=idx[j]: leaf[i], params)
        u = unit_blocks(apply(p, x), j_total)
        means = u.reshape(num_classes, ipc, -1).mean(axis=1)
        total = total + jnp.sum((means - targets[:, idx[j]]) ** 2)
    total = total * (k_total / idx.shape[0])
    if pixel_target is not None:  # the release's pixel block: x/√(H·W·C), clipped to norm 1
        flat = x.reshape(x.shape[0], -1) / np.sqrt(pixel_target.shape[1])
        norms = jnp.linalg.norm(flat, axis=1, keepdims=True)
        u = flat * jnp.minimum(1.0, 1.0 / jnp.maximum(norms, 1e-30)) / np.sqrt(j_total)
        means = u.reshape(num_classes, ipc, -1).mean(axis=1)
        total = total + jnp.sum((means - pixel_target) ** 2)
    return total


AUG_SALT = 0x4A06  # ``fit(augment=...)``: the step's augmentation key, fold_in(key(seed), salt)


@functools.lru_cache(maxsize=8)
def _jitted_step(
    apply: Callable, num_classes: int, ipc: int, lr: float, augment: Callable | None = None
):
    opt = optax.adam(lr)

    @jax.jit
    def step(x, opt_state, params, idx, targets, pixel_target, key):
        def loss_of(xx):
            z = xx if augment is None else augment(key, xx)
            return match_loss(apply, params, idx, z, targets, pixel_target, num_classes, ipc)

        loss, g = jax.value_and_grad(loss_of)(x)
        updates, opt_state = opt.update(g, opt_state, x)
        return optax.apply_updates(x, updates), opt_state, loss

    return opt, step


def initial_opt_state(x: Any, s: MatchSettings) -> Any:
    return optax.adam(s.lr).init(jnp.asarray(x, jnp.float32))


INIT_SALT = 0x1D17  # dp-mean's noise: a generator from (seed, INIT_SALT)


def release_mean_images(
    pixel_means: np.ndarray, j_total: int, image_shape: tuple[int, ...], ipc: int
) -> np.ndarray:
    """The class mean images the release estimates, ``ipc`` copies per class, class by class
    [classes·ipc, H, W, C]: the pixel block's means μ̂_c (of x/√D/√J, ``dpstat.estimate``) times
    √D·√J. Exact for valid images (model-space values in [−1, 1], so the block's clip is a
    no-op); the noise of the release passes through, scaled."""
    d = int(np.prod(image_shape))
    m = np.asarray(pixel_means, np.float64) * np.sqrt(d) * np.sqrt(j_total)
    imgs = m.reshape(len(m), *image_shape).astype(np.float32)
    return np.repeat(imgs, ipc, axis=0)


def dp_mean_init(
    pixel_means: np.ndarray,
    j_total: int,
    image_shape: tuple[int, ...],
    ipc: int,
    noise: float,
    seed: int,
) -> np.ndarray:
    """``--init dp-mean``: :func:`release_mean_images` + ``noise``·N(0, 1) from the public seed
    (parts a class's images). Reads the release only: post-processing."""
    x = release_mean_images(pixel_means, j_total, image_shape, ipc)
    rng = np.random.default_rng([int(seed), INIT_SALT])
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32)


def network_choice(seed: int, steps: int, k_total: int, per_step: int) -> np.ndarray:
    """[steps, per_step] network indices, distinct within a step, from the public seed."""
    rng = np.random.default_rng([int(seed), MATCH_SALT])
    m = min(per_step, k_total)
    if steps <= 0:
        return np.zeros((0, m), np.int32)
    return (
        np.stack([rng.choice(k_total, m, replace=False) for _ in range(steps)])
        .astype(np.int32)
        .reshape(steps, m)
    )


def fit(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: list[Any],
    targets: np.ndarray,
    x_init: np.ndarray,
    s: MatchSettings,
    seed: int,
    *,
    pixel_target: np.ndarray | None = None,
    start: int = 0,
    opt_state: Any = None,
    on_step: Callable[[int, Any, Any, float], None] | None = None,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[np.ndarray, Any, float]:
    """Adam on the images from ``x_init`` (step ``start`` with ``opt_state`` on resume) for
    ``s.steps`` steps in all. ``on_step(t, x, opt_state, loss)`` after each step (t = steps
    done). ``augment(key, x)``: the loss is taken on augmented images, a fresh key per step from
    the public seed (``AUG_SALT``); None (the product's): on the images themselves. Returns
    (images, optimiser state, last loss)."""
    num_classes, k_total = targets.shape[0], targets.shape[1]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    opt, step = _jitted_step(apply, num_classes, s.ipc, float(s.lr), augment)
    aug_key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), AUG_SALT)
    x = jnp.asarray(x_init, jnp.float32)
    state = opt.init(x) if opt_state is None else opt_state
    tgt = jnp.asarray(targets, jnp.float32)
    ptgt = None if pixel_target is None else jnp.asarray(pixel_target, jnp.float32)
    choice = network_choice(seed, s.steps, k_total, s.per_step)
    loss = float("nan")
    for t in range(start, s.steps):
        key = aug_key if augment is None else jax.random.fold_in(aug_key, t)  # no op unused
        x, state, lv = step(x, state, stacked, jnp.asarray(choice[t]), tgt, ptgt, key)
        loss = float(lv)
        if on_step is not None:
            on_step(t + 1, x, state, loss)
    return np.asarray(x, np.float32), state, loss
