"""Training K networks side by side: the evaluation protocol (rcig-algorithm §1.13).

The protocol of the authors' ``eval.py``, without its step-count bug:

* Adam, peak lr 1e-4; linear warm-up 0 → lr over 500 steps, then cosine decay to lr·0.01 over
  the remaining steps (:func:`lr_schedule`);
* U = 1000 steps for a set of ≤ 10 images (counted before flipped copies), else 2000
  (:func:`default_steps`). The authors' "no augmentation" loop runs 2.5·U steps (the last 1.5·U
  at the final lr); we run exactly U in both modes;
* MSE on the (learned, float) labels, ½Σ(out − y)²/(N·C), no weight decay; ``loss="ce"`` gives
  softmax cross-entropy on integer labels (the audit's real-data models);
* the full set as the batch when N ≤ ``batch`` (256), otherwise ``batch`` images drawn without
  replacement each step.

Engineering: every model gets its own key (``jax.random.split(key, n_models)``, or the per-model
keys given), from which its init and its per-step minibatch/augmentation keys
(``fold_in(train_key, step)``) derive, so a model's result does not depend on how many models train
beside it. All models train in one ``jax.jit`` call: ``jax.vmap`` over models around a
``lax.scan`` over steps (split into chunks only when a progress callback asks for it; chunking
does not change the result). The data are jit arguments, never closed-over constants (a
closed-over array becomes a compile-time constant that XLA constant-folds, baselines.md).
Compiled functions are cached per static configuration, so repeated calls (the audit's shadow
models) compile once.
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

from rcig_release.augment import augment as _augment
from rcig_release.config import depth_for_size
from rcig_release.errors import InputError
from rcig_release.models import ARCHS, make_model

Params = Any
LOSSES = ("mse", "ce")


# Steps unrolled per scan iteration: on XLA:CPU a convolution inside a loop body runs several
# times slower than in straight-line code (docs/benchmarks.md), so a few steps are unrolled.
SCAN_UNROLL: int | None = None  # None: 10 on CPU, 1 (a plain scan) on accelerators


def _unroll() -> int:
    if SCAN_UNROLL is not None:
        return SCAN_UNROLL
    return 10 if jax.default_backend() == "cpu" else 1


def lr_schedule(lr: float, warmup: int, steps: int) -> optax.Schedule:
    """Linear warm-up 0 → ``lr`` over ``warmup`` steps, then cosine to ``lr``·0.01 at ``steps``.

    If ``steps <= warmup`` the warm-up is shortened to ``steps // 2`` (half warm-up, half decay,
    the ratio of the paper's 10-image schedule, 500 of 1000), so a short run still reaches ``lr``
    and still decays. After ``steps`` the value stays at ``lr``·0.01.

    Example:
      >>> s = lr_schedule(1e-4, 500, 2000); float(s(500)), round(float(s(2000)), 8)
      (0.0001, 1e-06)
    """
    if steps < 1:
        raise InputError(f"steps must be at least 1 for a schedule (got {steps})")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0 (got {warmup})")
    if steps <= warmup:
        warmup = steps // 2
    decay = optax.cosine_decay_schedule(lr, decay_steps=steps - warmup, alpha=0.01)
    if warmup == 0:
        return decay
    ramp = optax.linear_schedule(0.0, lr, transition_steps=warmup)
    return optax.join_schedules([ramp, decay], boundaries=[warmup])


def default_steps(n_images: int) -> int:
    """The paper's U: 1000 steps for a set of at most 10 images, else 2000. ``n_images`` counts
    the distilled images before any flipped copies are added (the authors' eval.py picks U before
    it concatenates the flips); callers that flip pass the unflipped count."""
    return 1000 if n_images <= 10 else 2000


def _resolve_depth(arch: str, depth: int | None, image_shape: tuple[int, ...]) -> int | None:
    if arch != "convnet":
        return None
    return depth if depth is not None else depth_for_size(max(image_shape[0], image_shape[1]))


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Everything that changes the compiled program."""

    arch: str
    num_classes: int
    width: int
    depth: int | None
    softplus_temp: float
    image_shape: tuple[int, int, int]
    n: int  # examples per model (padded size when weights are given)
    lr: float
    warmup: int
    steps: int
    batch: int
    augment: bool
    loss: str
    per_model: bool
    weighted: bool
    side_by_side: str  # "vmap" or "map"


@functools.lru_cache(maxsize=32)
def _build_init(
    arch: str,
    num_classes: int,
    width: int,
    depth: int | None,
    softplus_temp: float,
    image_shape: tuple[int, int, int],
) -> Callable:
    """Jitted ``keys [M] -> stacked params`` for one architecture and image shape."""
    model = make_model(
        arch, num_classes, width=width, depth=depth or 3, softplus_temp=softplus_temp
    )
    x0 = np.zeros((1, *image_shape), np.float32)
    return jax.jit(jax.vmap(lambda key: model.init(key, jnp.asarray(x0))))


@functools.lru_cache(maxsize=32)
def _build_run(spec: _Spec) -> tuple[Callable, Callable]:
    """Jitted ``params -> opt_state`` and
    ``(params, opt_state, keys, step_ids, x, y, w) -> (params, opt_state, losses)``."""
    model = make_model(
        spec.arch,
        spec.num_classes,
        width=spec.width,
        depth=spec.depth or 3,
        softplus_temp=spec.softplus_temp,
    )
    tx = _optimizer(spec)

    def loss_fn(params, xb, yb, wb):
        out, _ = model.apply(params, xb)
        if spec.loss == "mse":
            per = 0.5 * jnp.sum((out - yb) ** 2, axis=-1) / spec.num_classes
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(out, yb)
        return jnp.sum(per * wb) / jnp.maximum(jnp.sum(wb), 1e-12)

    def step_one(params, opt_state, key, x, y, w):
        k_batch, k_aug = jax.random.split(key)
        if spec.n <= spec.batch:
            xb, yb, wb = x, y, w
        else:
            p = w / jnp.sum(w) if spec.weighted else None
            idx = jax.random.choice(k_batch, spec.n, (spec.batch,), replace=False, p=p)
            xb, yb, wb = x[idx], y[idx], w[idx]
        if spec.augment:
            xb = _augment(k_aug, xb)
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb, wb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def train_one(params, opt_state, key, step_ids, x, y, w):
        def body(carry, i):
            p, o = carry
            p, o, loss = step_one(p, o, jax.random.fold_in(key, i), x, y, w)
            return (p, o), loss

        (params, opt_state), losses = jax.lax.scan(
            body, (params, opt_state), step_ids, unroll=_unroll()
        )
        return params, opt_state, losses

    d = 0 if spec.per_model else None
    if spec.side_by_side == "vmap":
        run = jax.vmap(train_one, in_axes=(0, 0, 0, None, d, d, d))
    else:  # one model after another inside the same jit: no grouped convolutions

        def run(params, opt_state, keys, step_ids, x, y, w):
            def one(args):
                p, o, k, xm, ym, wm = args
                return train_one(p, o, k, step_ids, xm, ym, wm)

            if spec.per_model:
                return jax.lax.map(one, (params, opt_state, keys, x, y, w))
            return jax.lax.map(lambda a: one((*a, x, y, w)), (params, opt_state, keys))

    return jax.jit(jax.vmap(tx.init)), jax.jit(run)


def _optimizer(spec: _Spec) -> optax.GradientTransformation:
    return optax.adam(lr_schedule(spec.lr, spec.warmup, spec.steps))


def _rng_context():
    """Non-partitionable Threefry while tracing and running our functions.

    On XLA:CPU the partitionable Threefry (JAX's default) compiles several times slower (a
    depth-3 ConvNet's init: 30 s against 6 s on the 2-core machine). We have one device, so
    partitioning buys nothing. Random values are still a pure function of the key; they differ
    from what the same key gives under the default setting.
    """
    return jax.threefry_partitionable(False)


def _is_typed_key(key: Any) -> bool:
    return hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def model_keys(key: jax.Array, n_models: int) -> jax.Array:
    """One key per model: ``split(key, n_models)``, or ``key`` itself if it already holds
    ``n_models`` keys (a leading axis). Passing ``keys[m:m+1]`` with ``n_models=1`` reproduces
    model m of a batched run exactly."""
    key = key if _is_typed_key(key) else jnp.asarray(key)
    batch_ndim = key.ndim - (0 if _is_typed_key(key) else 1)
    if batch_ndim == 0:
        return jax.random.split(key, n_models)
    if batch_ndim == 1 and key.shape[0] == n_models:
        return key
    raise InputError(f"key must be one PRNG key or {n_models} keys (got shape {key.shape})")


def _prepare_labels(y: np.ndarray, loss: str, num_classes: int, lead: int) -> np.ndarray:
    """MSE: float [.., N, C] (integer labels become one-hot − 1/C, the paper's label init);
    CE: integer [.., N]."""
    y = np.asarray(y)
    if loss == "ce":
        if y.ndim != lead or not np.issubdtype(y.dtype, np.integer):
            raise InputError("loss 'ce' needs integer labels, one per image")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"labels must lie in 0..{num_classes - 1}")
        return y.astype(np.int32)
    if np.issubdtype(y.dtype, np.integer) and y.ndim == lead:
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"labels must lie in 0..{num_classes - 1}")
        return (np.eye(num_classes, dtype=np.float32)[y] - 1.0 / num_classes).astype(np.float32)
    if y.ndim != lead + 1 or y.shape[-1] != num_classes:
        raise InputError(f"loss 'mse' needs labels of shape [N, {num_classes}] or integer labels")
    return y.astype(np.float32)


def train_models(
    arch: str,
    x: Any,
    y: Any,
    *,
    num_classes: int,
    n_models: int,
    key: jax.Array,
    steps: int,
    lr: float = 1e-4,
    warmup: int = 500,
    batch: int = 256,
    augment: bool = False,
    width: int = 128,
    depth: int | None = None,
    loss: str = "mse",
    per_model_data: bool = False,
    softplus_temp: float = 0.0,
    weights: Any = None,
    progress: Callable[[int, float], None] | None = None,
    chunk: int = 100,
    side_by_side: str = "auto",
) -> Params:
    """Trains ``n_models`` fresh networks side by side (vmap over models, scan over steps).

    Args:
      arch: ``convnet``, ``mlp``, ``resnet18``, ``vgg11`` or ``alexnet``.
      x: float [N,H,W,C] (model space), or [M,N,H,W,C] with ``per_model_data``.
      y: ``loss="mse"``: float [N,C] targets (learned labels; integer [N] labels are turned into
        one-hot − 1/C); ``loss="ce"``: integer [N]. With ``per_model_data`` a leading M axis.
      num_classes: C.
      n_models: M, the number of networks.
      key: one PRNG key (split into M), or M keys (see :func:`model_keys`).
      steps: optimiser steps per model (0 returns the initial parameters).
      lr, warmup: peak Adam lr and warm-up steps of :func:`lr_schedule`.
      batch: full batch when N ≤ batch, else ``batch`` images per step, without replacement.
      augment: apply :func:`rcig_release.augment.augment` to every batch (fresh key every step).
      width, depth: network size (depth only for the ConvNet; None: from the image size).
      loss: ``"mse"`` (the paper's) or ``"ce"``.
      per_model_data: model m trains on ``x[m], y[m]`` (shadow models on different sets).
      softplus_temp: ConvNet activation (0: ReLU, as the evaluation).
      weights: optional example weights [N] (or [M,N] with ``per_model_data``), ≥ 0. A 0/1 mask
        lets sets of different sizes share one padded batch: the loss is Σw·ℓ/Σw and minibatches
        are drawn only from examples with w > 0 (proportionally to w).
      progress: called as ``progress(steps_done, mean_loss)`` after each chunk of ``chunk`` steps.
      chunk: steps per jitted call when ``progress`` is given (otherwise one call does them all).
      side_by_side: ``"vmap"`` (one batched program, the fast choice on an accelerator),
        ``"loop"`` (the same compiled one-model program called for each model in turn; the
        fast choice on XLA:CPU, where a vmapped convolution becomes a grouped convolution that
        runs several times slower than the models one after another, docs/benchmarks.md),
        ``"map"`` (``lax.map`` over models inside one jit) or ``"auto"`` (default: ``"loop"``
        on CPU except for images of at most 16×16 pixels, else ``"vmap"``). Model m's result
        does not depend on the choice (same keys, same steps; equal up to float reassociation).

    Returns:
      Flax params with a leading axis of size M.

    Raises:
      InputError: unknown arch or loss, shapes that do not match, labels out of range.
    """
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if n_models < 1 or steps < 0 or batch < 1 or width < 1:
        raise InputError("n_models, batch and width must be positive and steps >= 0")
    x = np.asarray(x, dtype=np.float32)
    lead = 2 if per_model_data else 1
    if x.ndim != lead + 3:
        raise InputError(
            f"images must have shape {'[M,N,H,W,C]' if per_model_data else '[N,H,W,C]'}"
            f" (got {x.ndim} dimensions)"
        )
    if per_model_data and x.shape[0] != n_models:
        raise InputError(f"per_model_data needs {n_models} sets (got {x.shape[0]})")
    n = x.shape[lead - 1]
    if n < 1:
        raise InputError("the training set is empty")
    y = _prepare_labels(y, loss, num_classes, lead)
    if y.shape[:lead] != x.shape[:lead]:
        raise InputError("images and labels have different counts")
    if weights is None:
        w = np.ones(x.shape[:lead], np.float32)
    else:
        w = np.asarray(weights, dtype=np.float32)
        if w.shape != x.shape[:lead] or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError("weights must be finite, >= 0 and one per image")
        if np.any(w.sum(axis=-1) <= 0):
            raise InputError("every model needs at least one example with positive weight")
    image_shape = (int(x.shape[lead]), int(x.shape[lead + 1]), int(x.shape[lead + 2]))
    side_by_side = resolve_side_by_side(side_by_side, image_shape)
    spec = _Spec(
        arch=arch,
        num_classes=num_classes,
        width=width,
        depth=_resolve_depth(arch, depth, image_shape),
        softplus_temp=float(softplus_temp),
        image_shape=image_shape,
        n=n,
        lr=float(lr),
        warmup=int(warmup),
        steps=max(int(steps), 1),
        batch=int(batch),
        augment=bool(augment),
        loss=loss,
        per_model=per_model_data,
        weighted=weights is not None,
        side_by_side="map" if side_by_side == "map" else "vmap",
    )
    init = _build_init(arch, num_classes, width, spec.depth, spec.softplus_temp, image_shape)
    opt_init, run = _build_run(spec)
    size = steps if progress is None else max(1, min(chunk, steps))
    if _unroll() > 1:  # straight-line chunks (XLA:CPU: convolutions in loop bodies are slow)
        size = min(size, _unroll())
    with _rng_context():
        keys = model_keys(key, n_models)
        pairs = jax.vmap(jax.random.split)(keys)
        params = init(pairs[:, 0])
        if steps == 0:
            return params
        opt_state = opt_init(params)
        train_keys = pairs[:, 1]
        groups = model_groups(n_models, side_by_side)
        states = [(take_models(params, g), take_models(opt_state, g)) for g in groups]
        # data on the device once, not re-sent with every chunk and model
        xd, yd, wd = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)
        inputs = [
            (train_keys[g], *((xd[g], yd[g], wd[g]) if per_model_data else (xd, yd, wd)))
            for g in groups
        ]
        done = 0
        while done < steps:
            c = min(size, steps - done)
            ids = jnp.arange(done, done + c, dtype=jnp.int32)
            last = []
            for i, (keys_g, *data) in enumerate(inputs):
                p, o, losses = run(*states[i], keys_g, ids, *data)
                states[i] = (p, o)
                last.append(losses[:, -1])
            done += c
            if progress is not None:
                progress(done, float(jnp.mean(jnp.concatenate(last))))
    return _concat([st[0] for st in states])


# XLA:CPU, "auto": one call per network above this many pixels per image, vmap at or below it.
# Measured (benchmarks/bench_train_vmap.py, docs/benchmarks.md): at 28×28 a loop over 5 ConvNets
# beat vmap 2.4× (a vmapped convolution is a slow grouped one); at 8×8 (digits) vmap beat the loop
# 1.36× on 10 images (per-call overhead dominates such small convolutions).
CPU_VMAP_MAX_PIXELS = 16 * 16


def resolve_side_by_side(side_by_side: str, image_shape: tuple[int, ...] | None = None) -> str:
    """``"auto"`` → ``"vmap"`` off CPU; on XLA:CPU ``"loop"``, or ``"vmap"`` for images of at
    most :data:`CPU_VMAP_MAX_PIXELS` pixels (``image_shape`` = (H, W, ...)). Checks the name."""
    if side_by_side not in ("auto", "vmap", "loop", "map"):
        raise InputError(f"side_by_side must be auto, vmap, loop or map (got {side_by_side!r})")
    if side_by_side == "auto":
        if jax.default_backend() != "cpu":
            return "vmap"
        small = image_shape is not None and image_shape[0] * image_shape[1] <= CPU_VMAP_MAX_PIXELS
        return "vmap" if small else "loop"
    return side_by_side


def model_groups(
    n_models: int, side_by_side: str, image_shape: tuple[int, ...] | None = None
) -> list[slice]:
    """The model slices run per call: one per model for ``"loop"`` (the batched program at
    M = 1), else one slice of all M."""
    if resolve_side_by_side(side_by_side, image_shape) == "loop":
        return [slice(m, m + 1) for m in range(n_models)]
    return [slice(0, n_models)]


def take_models(tree: Any, g: slice) -> Any:
    """The models ``g`` of stacked params (leading axis M)."""
    return jax.tree.map(lambda a: a[g], tree)


def _concat(trees: list[Any]) -> Any:
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


@functools.lru_cache(maxsize=32)
def _build_predict(
    arch: str, num_classes: int, width: int, depth: int | None, softplus_temp: float
) -> Callable:
    model = make_model(
        arch, num_classes, width=width, depth=depth or 3, softplus_temp=softplus_temp
    )
    return jax.jit(jax.vmap(lambda p, xb: model.apply(p, xb)[0], in_axes=(0, None)))


def predict(
    arch: str,
    params: Params,
    x: Any,
    *,
    num_classes: int,
    width: int,
    depth: int | None = None,
    batch: int = 1000,
    softplus_temp: float = 0.0,
    side_by_side: str = "auto",
) -> np.ndarray:
    """Logits of every model on every image.

    Args:
      params: stacked params from :func:`train_models` (leading axis M).
      x: float [N,H,W,C]; evaluated in chunks of ``batch`` (the last chunk padded, so one compile).

    Returns:
      float32 [M,N,C].
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"images must have shape [N,H,W,C] (got {x.ndim} dimensions)")
    fn = _build_predict(
        arch, num_classes, width, _resolve_depth(arch, depth, x.shape[1:]), float(softplus_temp)
    )
    n, m = x.shape[0], jax.tree.leaves(params)[0].shape[0]
    size = max(1, min(batch, n))
    groups = model_groups(m, side_by_side, x.shape[1:])
    outs = []
    for start in range(0, n, size):
        xb = x[start : start + size]
        pad = size - xb.shape[0]
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *x.shape[1:]), np.float32)])
        outs.append(
            np.concatenate([np.asarray(fn(take_models(params, g), xb)) for g in groups])[
                :, : size - pad
            ]
        )
    return np.concatenate(outs, axis=1)


def accuracy(logits: Any, y: Any) -> np.ndarray:
    """Per-model argmax accuracy: logits [M,N,C], integer labels [N] (or [M,N]) → float [M]."""
    logits = np.asarray(logits)
    y = np.asarray(y)
    return np.mean(np.argmax(logits, axis=-1) == y, axis=-1)


def evaluate_arrays(
    x_support: Any,
    y_support: Any,
    x_test: Any,
    y_test: Any,
    *,
    arch: str,
    num_classes: int,
    n_models: int,
    seed: int,
    steps: int | None = None,
    lr: float = 1e-4,
    warmup: int = 500,
    batch: int = 256,
    augment: bool = False,
    width: int = 128,
    depth: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Trains ``n_models`` networks on the support set and tests them (the evaluate protocol).

    Args:
      x_support: float [N,H,W,C] (model space); y_support: float [N,C] learned labels (or int [N]).
      x_test, y_test: float [T,H,W,C] (model space), int [T].
      steps: None → :func:`default_steps` (N). N counts ``x_support`` as given: a caller that
        added flipped copies passes ``steps=default_steps(unflipped count)`` (evaluate does).
      seed: ``jax.random.key(seed)`` is split into one key per model.

    Returns:
      ``{"arch", "models", "width", "depth", "steps", "accuracy_mean", "accuracy_std",
      "accuracies", "augment"}``; std is ``np.std`` (population), as the authors' code.
    """
    x_support = np.asarray(x_support, dtype=np.float32)
    n_steps = default_steps(len(x_support)) if steps is None else int(steps)
    params = train_models(
        arch,
        x_support,
        y_support,
        num_classes=num_classes,
        n_models=n_models,
        key=jax.random.key(seed),
        steps=n_steps,
        lr=lr,
        warmup=warmup,
        batch=batch,
        augment=augment,
        width=width,
        depth=depth,
        loss="mse",
        progress=progress,
    )
    logits = predict(arch, params, x_test, num_classes=num_classes, width=width, depth=depth)
    accs = accuracy(logits, np.asarray(y_test))
    return {
        "arch": arch,
        "models": int(n_models),
        "width": int(width),
        "depth": _resolve_depth(arch, depth, x_support.shape[1:]),
        "steps": n_steps,
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "accuracies": [float(a) for a in accs],
        "augment": bool(augment),
    }
