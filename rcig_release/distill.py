"""Distillation as a library call: config and arrays in, distilled set out (rcig-algorithm §1).

The audit calls ``distill`` many times on different subsets of the training split, so it takes
plain arrays (already preprocessed into model space) and returns plain arrays; the run directory,
the progress bar and the logs are the caller's business (``rundir.py``, ``cli/``), reached through
the optional ``checkpoint_dir`` and ``on_log``/``progress`` callbacks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rcig_release import checkpoint, initsets
from rcig_release.config import DistillConfig, resolve, to_dict, with_data_defaults
from rcig_release.data import check_ipc
from rcig_release.errors import InputError, RcigReleaseError
from rcig_release.rcig import dpdistill
from rcig_release.rcig.dp import DPStep
from rcig_release.rcig.dp import record as dp_record
from rcig_release.rcig.state import init_state, make_setup
from rcig_release.rcig.step import make_step
from rcig_release.rcig.tune import tune_learning_rates


@dataclasses.dataclass(frozen=True)
class DistillResult:
    images_model: np.ndarray  # float32 [N,H,W,C], model space, the EMA set
    labels: np.ndarray  # float32 [N,C], learned labels (EMA)
    log_temp: float
    init_indices: np.ndarray  # int64 [N] into the arrays given; -1 for noise
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # tuning, timings, last metrics


class Interrupted(RcigReleaseError):
    """Ctrl-C during distillation; the state was checkpointed first."""

    exit_code = 130


def initial_set(
    cfg: DistillConfig,
    x_model: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    forced: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The starting set, class by class, and the training index each image starts from (−1: none).
    Labels are one-hot − 1/C (rcig-algorithm §1.8). By ``cfg.init``:

    * ``real`` (the paper's): ipc random real images per class, their indices recorded;
    * ``noise``: 0.3·N(0,1);
    * ``mean`` / ``centroids`` (``initsets.py``): each image the mean of at least
      ``cfg.init_min_records`` training records of its class (the class mean; the means of ipc
      k-means clusters), plus ``cfg.init_noise``·N(0,1); indices −1 (no single record);
    * ``dp-mean``: zeros of the images' shape; the start is made from the DP release itself,
      which exists only inside ``dpdistill.run`` (``statmatch.dp_mean_init``).

    Deterministic given ``(cfg, x_model, y)``: ``release`` recomputes it to check the recorded
    indices. ``forced`` (real init only): indices into ``x_model`` that must be init images, at
    most ipc per class; each class's remaining slots are drawn at random from its other images, as
    without it. The audit uses it so that an audited init record that is IN for a shadow pipeline
    is one of that pipeline's init images, as it was in the release."""
    rng = np.random.default_rng(cfg.seed)
    classes = np.repeat(np.arange(num_classes), cfg.ipc)
    labels = (np.eye(num_classes, dtype=np.float32) - 1.0 / num_classes)[classes]
    none = np.full(len(classes), -1, np.int64)
    if cfg.init == "dp-mean":
        return np.zeros((len(classes), *x_model.shape[1:]), np.float32), labels, none
    if cfg.init in initsets.AGGREGATE_MODES:
        y = np.asarray(y)
        for c in range(num_classes):
            if (n_c := int((y == c).sum())) < cfg.init_min_records:
                raise InputError(
                    f"--init {cfg.init}: class {c} has {n_c} training images, fewer than "
                    f"init_min_records = {cfg.init_min_records}; use --init noise"
                )
        if cfg.init == "mean":
            x = initsets.class_means(x_model, y, num_classes, cfg.ipc)
        else:
            x = initsets.class_centroids(
                x_model, y, num_classes, cfg.ipc, cfg.init_min_records, cfg.seed
            )
        if cfg.init_noise > 0:
            x = x + cfg.init_noise * rng.standard_normal(x.shape, dtype=np.float32)
        return x.astype(np.float32), labels, none
    want = np.zeros(0, np.int64) if forced is None else np.unique(np.asarray(forced, np.int64))
    parts = []
    for c in range(num_classes):
        pool = np.flatnonzero(y == c)
        fixed = want[np.isin(want, pool)]
        if len(fixed) > cfg.ipc:
            raise ValueError(f"{len(fixed)} forced init images for class {c}, ipc is {cfg.ipc}")
        rest = (
            rng.choice(np.setdiff1d(pool, fixed), cfg.ipc - len(fixed), replace=False)
            if forced is not None
            else rng.choice(pool, cfg.ipc, replace=False)
        )
        parts.append(np.concatenate([fixed, rest]))
    idx = np.concatenate(parts).astype(np.int64)
    if cfg.init == "real":
        return x_model[idx].astype(np.float32), labels, idx
    noise = 0.3 * rng.standard_normal((len(classes), *x_model.shape[1:]), dtype=np.float32)
    return noise, labels, none


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def distill(
    cfg: DistillConfig,
    x_model: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    on_state: Callable[[int, Any], None] | None = None,
    init_forced: np.ndarray | None = None,
    phase: Callable[[str], None] | None = None,
    mesh: Any = None,
) -> DistillResult:
    """Runs RCIG for ``cfg.steps`` outer iterations and returns the EMA distilled set.

    ``x_model``: float32 [N,H,W,C] preprocessed training images; ``y``: int labels in 0..C−1.
    With ``checkpoint_dir`` the state is checkpointed every ``cfg.checkpoint_every`` steps, at the
    end and on Ctrl-C; ``resume=True`` continues from it (bit-identical to an uninterrupted run,
    except a DP run, whose batches and noise come from fresh OS entropy at every step: docs/dp.md).
    ``phase(name)`` names each setup phase as it starts ("setting up the model", "loading the
    checkpoint", "learning-rate search", "compiling the step"); ``progress`` then counts steps.

    ``mesh`` (default: every device of every process, ``parallel.data_mesh``): the real batch is
    sharded over its devices, everything else replicated. With several processes every process
    calls ``distill`` with the same arguments; process 0 alone reads and writes
    ``checkpoint_dir`` and the others receive the checkpoint from it (docs/design.md).
    """
    from rcig_release import parallel

    enter = phase or (lambda _name: None)
    y = np.asarray(y, np.int64)
    cfg = with_data_defaults(cfg, len(y))
    assert cfg.steps is not None  # with_data_defaults fills it
    check_ipc(y, cfg.ipc, num_classes)
    x_init, y_init, init_idx = initial_set(cfg, x_model, y, num_classes, init_forced)
    features = cfg.dp and cfg.dp_mechanism == "features"
    # --init dp-mean starts from the release itself: even 0 steps make the release
    if cfg.steps == 0 and not (features and cfg.init == "dp-mean"):
        info0: dict[str, Any] = {"steps": 0}
        if features:  # the record of the configured mechanism (an upper bound: nothing released)
            info0["dp"] = dpdistill.dp_record(cfg, len(y), x_model.shape[1:], num_classes)
        elif cfg.dp:  # noise only: ε = 0, but the record says how the run was configured
            info0["dp"] = dp_record(cfg, len(y))
        return DistillResult(x_init, y_init, 0.0, init_idx, info0)
    if features:  # DP feature means (rcig/dpdistill.py): one release, then post-processing
        t_start = time.perf_counter()
        try:
            x_out, finfo = dpdistill.run(
                cfg,
                x_model,
                y,
                num_classes,
                x_init,
                checkpoint_dir=checkpoint_dir,
                resume=resume,
                on_log=on_log,
                progress=progress,
                on_state=on_state,
                enter=enter,
            )
        except KeyboardInterrupt:
            raise Interrupted("interrupted; checkpoint written, continue with --resume") from None
        finfo["first_step_seconds"] = None
        finfo["distill_seconds"] = time.perf_counter() - t_start
        return DistillResult(x_out, y_init, 0.0, init_idx, finfo)

    enter("setting up the model")
    res = resolve(cfg, tuple(x_model.shape[1:]), num_classes)
    setup = make_setup(cfg, res, tuple(x_model.shape[1:]))
    mesh = parallel.data_mesh() if mesh is None else mesh
    rep = parallel.replicated(mesh)
    state = init_state(setup, x_init, y_init, jax.random.PRNGKey(cfg.seed))
    x_dev = parallel.put(np.asarray(x_model, np.float32), rep)
    y_dev = parallel.put(np.asarray(y, np.int32), rep)
    meta_cfg = to_dict(cfg)
    info: dict[str, Any] = {
        "materialized_jacobian": setup.materialize_jacobian,
        "tangent_params": setup.tangents.size,
        "devices": int(mesh.devices.size),
        "processes": int(jax.process_count()),
    }

    def load_checkpoint() -> dict[str, Any] | None:  # process 0 only: None when there is none
        if not (resume and checkpoint_dir is not None and checkpoint.exists(checkpoint_dir)):
            return None
        loaded, meta = checkpoint.load(checkpoint_dir, state)
        # a field added since the checkpoint was written counts as its default
        saved = {**to_dict(DistillConfig()), **meta.get("config", {})}
        if saved != meta_cfg:
            changed = sorted(k for k in meta_cfg if saved.get(k) != meta_cfg[k])
            raise InputError(
                "--resume with a different configuration than the checkpoint "
                f"(differs in: {', '.join(changed) or 'config'})"
            )
        held["state"] = loaded
        return {"tuning": meta.get("tuning", {})}

    held: dict[str, Any] = {}
    if resume and checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
        enter("loading the checkpoint")  # (process 0 reads it; the others wait for it)
    loaded_meta = parallel.on_primary(load_checkpoint)
    if loaded_meta is not None:
        # process 0's checkpoint to every process (the others may not see its filesystem)
        state = parallel.broadcast(held.get("state", jax.device_get(state)))
        info["tuning"] = loaded_meta["tuning"]
        info["resumed_from"] = int(state.step)
    state = parallel.put(state, rep)
    if loaded_meta is None:
        t0 = time.perf_counter()
        if cfg.tune_lr:
            enter("learning-rate search")
            state, tuning = tune_learning_rates(setup, state, x_dev, y_dev)
        else:
            tuning = {"skipped": "tune_lr = false"}
        info["tuning"] = {**tuning, "seconds": time.perf_counter() - t0}

    def save() -> None:
        if checkpoint_dir is not None and parallel.is_primary():
            checkpoint.save(
                checkpoint_dir,
                state,
                {"step": int(state.step), "config": meta_cfg, "tuning": info["tuning"]},
            )

    if cfg.dp:  # DP-RCIG (rcig/dp.py): secret Poisson batches, clipped sums, secret noise
        dp_step = DPStep(setup, cfg, len(y), mesh=mesh)
        step_fn = lambda s, x, yy, t: dp_step(s, x, yy)  # noqa: E731
        info["dp"] = dp_record(cfg, len(y))
    else:
        plain = make_step(setup, mesh)
        step_fn = lambda s, x, yy, t: plain(s, x, yy)  # noqa: E731
    if int(state.step) < cfg.steps:
        enter("compiling the step")  # the first call compiles; progress() follows it
    t_start, first = time.perf_counter(), None
    last: dict[str, float] = {}
    t = int(state.step)  # counted on the host: no device sync per step except to log
    try:
        while t < cfg.steps:
            state, metrics = step_fn(state, x_dev, y_dev, t)
            t += 1
            if first is None:
                jax.block_until_ready(state)
                first = time.perf_counter() - t_start
            if t % cfg.log_every == 0 or t == cfg.steps:
                last = {"step": t, **_scalars(metrics), "seconds": time.perf_counter() - t_start}
                if on_log:
                    on_log(t, last)
            if progress:
                progress(t, cfg.steps, last)
            if on_state:
                on_state(t, state)
            if checkpoint_dir is not None and t % cfg.checkpoint_every == 0 and t < cfg.steps:
                save()
    except KeyboardInterrupt:
        save()
        raise Interrupted(
            f"interrupted at step {t}; checkpoint written, continue with --resume"
        ) from None
    save()
    info.update(
        {"first_step_seconds": first, "loop_seconds": time.perf_counter() - t_start, "final": last}
    )
    ema = jax.device_get(state.psi_ema)
    return DistillResult(
        np.asarray(ema["x"], np.float32),
        np.asarray(ema["y"], np.float32),
        float(ema["log_temp"]),
        init_idx,
        info,
    )
