"""``distill_run``: data source → splits → preprocessing → distill → run directory.

The one place that ties the library pieces into the run directory the audit and release read.
The CLI calls it; so can a notebook. Nothing is written before every input has been checked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release import rundir
from rcig_release.config import (
    DistillConfig,
    dp_delta_warning,
    resolve,
    to_dict,
    with_data_defaults,
)
from rcig_release.data import check_ipc
from rcig_release.data.preprocess import FIXED_DESCRIPTION
from rcig_release.distill import DistillResult, distill
from rcig_release.errors import InputError
from rcig_release.initsets import AGGREGATE_MODES
from rcig_release.rcig.dp import randomness


def default_out(data: str, ipc: int) -> Path:
    name = Path(data).stem if data not in ("digits", "mnist", "fashion-mnist", "cifar10") else data
    return Path("runs") / f"{name}-ipc{ipc}"


def resume_config(out: Path) -> tuple[DistillConfig, str]:
    """The configuration and data source a run was started with (from its ``run.json``)."""
    import json

    p = out / rundir.RUN_JSON
    if not p.is_file():
        raise InputError(f"--resume: {p} is missing")
    try:
        rj = json.loads(p.read_text(encoding="utf-8"))
        return DistillConfig(**rj["config"]), rj["data"]["source"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"--resume: {p} is unreadable ({type(e).__name__})") from None


def init_record(cfg: DistillConfig, indices: np.ndarray) -> dict[str, Any]:
    """run.json's ``init``: the mode, the indices (−1: no single record) and, for the aggregate
    modes, how many records each image averages at least and the noise added."""
    out: dict[str, Any] = {
        "mode": cfg.init,
        "indices": indices.tolist(),
        "indices_refer_to": "the training split of data.source (data.split_seed)",
    }
    if cfg.init in AGGREGATE_MODES:
        out["aggregate"] = {
            "of": "class mean" if cfg.init == "mean" else f"{cfg.ipc} k-means clusters per class",
            "min_records": cfg.init_min_records,
            "noise_std": cfg.init_noise,
            "space": "model space (after the preprocessing)",
        }
    if cfg.init == "dp-mean":
        out["from_release"] = {
            "of": "the class mean images estimated from the DP feature-means release (its pixel "
            "block): post-processing, covered by the release's (epsilon, delta)",
            "noise_std": cfg.init_noise,
            "space": "model space (after the preprocessing)",
        }
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def distill_run(
    out: Path,
    data: str,
    cfg: DistillConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    status: Callable[[str], None] | None = None,
    phase: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs one distillation into ``out`` and returns the final ``run.json`` content.

    ``phase(name)`` is called as each setup phase starts ("loading data", "preprocessing", then
    distill's own), before ``progress`` reports steps. ``warn`` gets one-line warnings (a DP
    δ ≥ 1/N); by default they go to stderr.

    Several processes (``parallel.initialize``): every process calls this with the same
    arguments and loads the data itself; process 0 alone checks and writes ``out`` (its refusals
    reach every process as the same error), the others write nothing."""
    from rcig_release import parallel
    from rcig_release.config import check_image_side
    from rcig_release.data import load_dataset, preprocessor_for
    from rcig_release.data.paths import check_out_apart
    from rcig_release.data.preprocess import check_zca_size
    from rcig_release.release.escape import check_dataset

    say = status or (lambda _msg: None)
    t0 = time.perf_counter()
    check_out_apart(data, out)
    enter = phase or (lambda _name: None)
    enter("loading data")
    ds = load_dataset(data, seed=0)
    cfg = with_data_defaults(cfg, ds.n_train)
    check_ipc(ds, cfg.ipc)  # names the short class
    check_dataset(ds, data)  # class names, >= 2 classes: what release would refuse, refused now
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    check_image_side(ds.image_shape, "convnet", res.depth, data)
    if res.zca and cfg.dp_epsilon is None:
        check_zca_size(ds.image_shape)  # before the out directory and any allocation
    primary = parallel.is_primary()
    parallel.on_primary(lambda: rundir.prepare_out(out, resume=resume, force=force))
    if primary and (msg := dp_delta_warning(cfg, ds.n_train)) is not None:
        (warn or _stderr)(msg)

    enter("preprocessing")
    prep = preprocessor_for(ds.x_train, cfg, zca=res.zca)
    x_model = prep.transform(ds.x_train).astype(np.float32)
    t_data = time.perf_counter() - t0
    env = rundir.environment()
    run_json: dict[str, Any] = {
        "status": "running",
        "config": to_dict(cfg),
        "resolved": {
            "depth": res.depth,
            "lambda": res.l2,
            "softplus_temp": res.softplus_temp,
            "zca": res.zca,
            "use_flip": res.use_flip,
            "n_support": res.n_support,
        },
        "data": {
            "source": data,
            "fingerprint": ds.fingerprint,
            "split_seed": ds.split_seed,
            "n_train": int(ds.n_train),
            "n_test": int(ds.n_test),
            "image_shape": list(ds.image_shape),
            "classes": list(ds.classes),
        },
        "seed": cfg.seed,
        "randomness": randomness(cfg),
        **env,
    }
    if not resume and primary:
        rundir.write_json(out / rundir.RUN_JSON, run_json)
    keep = rundir.checkpoint_step(out) if resume and primary else None
    log = rundir.MetricsLog(out / rundir.METRICS, keep_up_to=keep) if primary else None
    say(
        f"distilling {cfg.ipc * ds.num_classes} images from {ds.n_train} training images "
        f"({data}, {'resuming at step ' + str(keep) if resume else 'new run'})"
    )
    t1 = time.perf_counter()
    result: DistillResult = distill(
        cfg,
        x_model,
        ds.y_train,
        ds.num_classes,
        checkpoint_dir=out / rundir.CHECKPOINTS,
        resume=resume,
        on_log=log,
        progress=progress,
        phase=phase,
    )
    t_distill = time.perf_counter() - t1

    images = np.clip(prep.inverse(result.images_model), 0.0, 1.0)
    run_json = _finished(run_json, cfg, result, t_data, t_distill)
    if not primary:
        return run_json
    rundir.write_distilled(
        out,
        images=images,
        labels=result.labels,
        classes=ds.classes,
        images_model=result.images_model,
        log_temp=result.log_temp,
        init_indices=result.init_indices,
        prep_arrays=prep.to_arrays(),
    )
    rundir.write_preview(out / rundir.PREVIEW, images, list(ds.classes), cfg.ipc)
    rundir.write_json(out / rundir.RUN_JSON, run_json)
    return run_json


def _finished(
    run_json: dict[str, Any],
    cfg: DistillConfig,
    result: DistillResult,
    t_data: float,
    t_distill: float,
) -> dict[str, Any]:
    """``run.json`` of the finished run."""
    run_json = dict(run_json)
    run_json.update(
        {
            "status": "done",
            "init": init_record(cfg, result.init_indices),
            "timings": {
                "data_seconds": t_data,
                "distill_seconds": t_distill,
                "tuning_seconds": result.info.get("tuning", {}).get("seconds"),
                "first_step_seconds": result.info.get("first_step_seconds"),
                "loop_seconds": result.info.get("loop_seconds"),
                "release_seconds": result.info.get("release_seconds"),  # DP feature means
            },
            "tuning": result.info.get("tuning", {}),
            "engine": {
                k: result.info[k]
                for k in ("materialized_jacobian", "tangent_params", "devices", "processes")
                if k in result.info
            },
            "metrics": result.info.get("final", {}),
            "log_temp": result.log_temp,
        }
    )
    if "dp" in result.info:  # DP runs only; an ordinary run.json has no "dp" key
        run_json["dp"] = {**result.info["dp"], "preprocessing": FIXED_DESCRIPTION}
    if "resumed_from" in result.info:
        run_json["resumed_from"] = result.info["resumed_from"]
    return run_json
