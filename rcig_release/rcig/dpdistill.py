"""The DP-feature-means run: one release (``dpstat``), then optimisation (``statmatch``).

``distill`` dispatches here when ``cfg.dp_mechanism == "features"``. The private images are read
once, by ``dpstat.statistic``, whose output goes straight into ``dpstat.release``; the noisy
release is all that is kept (in memory, and in the checkpoint so that ``--resume`` continues
from it instead of releasing again, which would spend the budget twice). The noise-free statistic
is never stored. Everything after the release is post-processing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rcig_release import checkpoint
from rcig_release.config import DistillConfig, resolve, to_dict
from rcig_release.errors import InputError
from rcig_release.rcig import dpstat, statmatch


def block_sizes(
    s: dpstat.StatSettings, image_shape: tuple[int, int, int], classes: int
) -> list[int]:
    """F_j of the J released blocks (from shapes alone): K × the networks' penultimate width,
    then H·W·C for the pixel block."""
    from rcig_release.models import ConvNet

    net = ConvNet(num_classes=classes, width=s.width, depth=s.depth, softplus_temp=0.0)
    x0 = jnp.zeros((1, *image_shape), jnp.float32)
    out = jax.eval_shape(lambda: net.apply(net.init(jax.random.PRNGKey(0), x0), x0)[1])
    pixels = [int(np.prod(image_shape))] if s.pixels else []
    return [int(out.shape[1])] * s.networks + pixels


def settings(cfg: DistillConfig, image_shape: tuple[int, int, int], classes: int):
    res = resolve(cfg, image_shape, classes)
    s = dpstat.settings_for(cfg, res.depth)
    assert cfg.steps is not None  # with_data_defaults
    m = statmatch.MatchSettings(
        steps=int(cfg.steps), lr=statmatch.LR, per_step=statmatch.PER_STEP, ipc=cfg.ipc
    )
    return s, m


def dp_record(cfg: DistillConfig, n_train: int, image_shape: tuple[int, ...], classes: int):
    shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    s, _ = settings(cfg, shape, classes)
    return dpstat.record(cfg, n_train, sum(block_sizes(s, shape, classes)) + 1, classes)


def feature_function(
    s: dpstat.StatSettings, image_shape: tuple[int, int, int], num_classes: int
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """x [B, H, W, C] (model space) → the J released blocks: the K networks' penultimate
    features [B, F] (float32), then (``s.pixels``) the images flattened [B, H·W·C]; whatever
    the input (NaN or inf pass through to ``dpstat.contributions``)."""
    apply, params = dpstat.feature_networks(s, image_shape, num_classes)
    feats = jax.jit(apply)  # one network per call: a vmapped conv is slow on XLA:CPU

    def feature_fn(xb: np.ndarray) -> list[np.ndarray]:
        xd = jnp.asarray(xb, jnp.float32)
        out = [np.asarray(feats(p, xd)) for p in params]
        if s.pixels:
            out.append(np.asarray(xb, np.float32).reshape(len(xb), -1))
        return out

    return feature_fn


def statistic(
    s: dpstat.StatSettings, x_model: np.ndarray, y: np.ndarray, num_classes: int, chunk: int = 0
) -> np.ndarray:
    """The noise-free statistic over every training image (private: only
    ``private_release`` calls it in a run; the tests check its sensitivity)."""
    shape = (int(x_model.shape[1]), int(x_model.shape[2]), int(x_model.shape[3]))
    return dpstat.statistic(
        feature_function(s, shape, num_classes),
        x_model,
        y,
        num_classes,
        s.clip,
        s.count_weight,
        s.bounds(shape),
        chunk=chunk or dpstat.CHUNK,
    )


def private_release(
    s: dpstat.StatSettings,
    x_model: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    noise_multiplier: float,
) -> np.ndarray:
    """THE mechanism: the statistic over every training image, released once with secret noise.
    The noise-free statistic exists only inside this call."""
    return dpstat.release(statistic(s, x_model, y, num_classes), noise_multiplier, s.clip)


def run(
    cfg: DistillConfig,
    x_model: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    x_init: np.ndarray,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    on_state: Callable[[int, Any], None] | None = None,
    enter: Callable[[str], None] = lambda _name: None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(images [N, H, W, C] model space, info) of a DP-feature-means run. ``on_state(t, x)``
    gets the images after each step. On Ctrl-C the latest state is checkpointed (with the
    release) and KeyboardInterrupt propagates. ``x_init`` is the start unless ``cfg.init`` is
    "dp-mean" (``distill.initial_set`` then gives zeros): the start is the release's class mean
    images plus ``cfg.init_noise`` noise, made here, the one place the release exists."""
    assert cfg.steps is not None and cfg.dp_noise_multiplier is not None
    shape = tuple(int(v) for v in x_model.shape[1:])
    s, m = settings(cfg, shape, num_classes)  # type: ignore[arg-type]
    meta_cfg = to_dict(cfg)
    sizes = block_sizes(s, shape, num_classes)  # type: ignore[arg-type]
    template = {
        "release": np.zeros((num_classes, sum(sizes) + 1), np.float64),
        "x": np.zeros_like(x_init, np.float32),
        "step": np.zeros((), np.int64),
    }
    info: dict[str, Any] = {"dp": dpstat.record(cfg, len(y), sum(sizes) + 1, num_classes)}
    opt_state = None
    start = 0
    if resume and checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
        enter("loading the checkpoint")
        saved, meta = checkpoint.load(checkpoint_dir, {**template, "opt": None})
        if meta.get("config") != meta_cfg:
            raise InputError("--resume with a different configuration than the checkpoint")
        noisy, x_cur, start = saved["release"], saved["x"], int(saved["step"])
        opt_state = _restore_opt(saved["opt"], x_cur, cfg)
        info["resumed_from"] = start
        info["release_seconds"] = meta.get("release_seconds")
    else:
        enter("private release (features of every training image)")
        t0 = time.perf_counter()
        noisy = private_release(s, x_model, y, num_classes, float(cfg.dp_noise_multiplier))
        info["release_seconds"] = time.perf_counter() - t0
        x_cur = np.asarray(x_init, np.float32)
    means, counts = dpstat.estimate(noisy, sizes, s)
    targets = np.stack(means[: s.networks], axis=1)  # [classes, K, F]
    pixel_target = means[s.networks] if s.pixels else None
    if cfg.init == "dp-mean" and "resumed_from" not in info:
        assert pixel_target is not None  # validate_distill_config: dp-mean needs dp_pixels
        x_cur = statmatch.dp_mean_init(
            pixel_target, s.blocks, shape, cfg.ipc, float(cfg.init_noise), cfg.seed
        )
    apply, params = dpstat.feature_networks(s, shape, num_classes)  # type: ignore[arg-type]

    def save(t: int, x: Any, opt: Any) -> None:
        if checkpoint_dir is None:
            return
        state = {"release": noisy, "x": np.asarray(x), "step": np.asarray(t, np.int64), "opt": opt}
        checkpoint.save(
            checkpoint_dir,
            state,
            {"step": t, "config": meta_cfg, "release_seconds": info["release_seconds"]},
        )

    last: dict[str, float] = {}
    t_start = time.perf_counter()
    latest: list[Any] = [start, x_cur, opt_state]

    def on_step(t: int, x: Any, opt: Any, loss: float) -> None:
        nonlocal last
        latest[:] = [t, x, opt]
        if t % cfg.log_every == 0 or t == m.steps:
            last = {"step": t, "match_loss": loss, "seconds": time.perf_counter() - t_start}
            if on_log:
                on_log(t, last)
        if progress:
            progress(t, m.steps, last)
        if on_state:
            on_state(t, x)
        if t % cfg.checkpoint_every == 0 and t < m.steps:
            save(t, x, opt)

    enter("optimising the images (post-processing)")
    try:
        x_out, opt_final, _ = statmatch.fit(
            apply,
            params,
            targets,
            x_cur,
            m,
            cfg.seed,
            pixel_target=pixel_target,
            start=start,
            opt_state=opt_state,
            on_step=on_step,
        )
    except KeyboardInterrupt:
        if latest[2] is not None:  # at least one step done: the state to continue from
            save(*latest)
        elif checkpoint_dir is not None:  # no step yet: keep the release itself
            save(start, x_cur, statmatch.initial_opt_state(x_cur, m))
        raise
    save(m.steps, x_out, opt_final)
    info.update(
        {
            "loop_seconds": time.perf_counter() - t_start,
            "final": last,
            "released_counts": [float(c) for c in counts],  # post-processing of the release
            "tuning": {"skipped": "DP feature means: no learning-rate search"},
        }
    )
    return x_out, info


def _restore_opt(saved: Any, x: np.ndarray, cfg: DistillConfig) -> Any:
    """The Adam state from its checkpointed pytree (flax restores plain containers)."""
    from flax import serialization

    template = statmatch.initial_opt_state(x, statmatch.MatchSettings(0, statmatch.LR, 1, 1))
    return serialization.from_state_dict(template, saved)
