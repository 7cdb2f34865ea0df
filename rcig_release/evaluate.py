"""``evaluate``: train fresh networks on a run's distilled set and test them (rcig-algorithm §1.13).

The networks see exactly what a downstream user gets: the EMA distilled images (model space, with
W-flipped copies when the run used flips, as the authors' eval.py) and the learned labels, trained
with MSE. They are tested on the run's own test split, preprocessed with the run's preprocessor.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from rcig_release import rundir
from rcig_release.config import EvalConfig, resolve
from rcig_release.errors import InputError


def load_run_data(run: rundir.Run, data: str | None = None):
    """Reloads the run's data source (or ``data``) and refuses a different dataset."""
    from rcig_release.data import load_dataset

    info = run.run_json.get("data", {})
    source = data or info.get("source")
    if not source:
        raise InputError(f"{run.path / rundir.RUN_JSON} does not name its data source; pass --data")
    ds = load_dataset(source, seed=int(info.get("split_seed") or 0))
    if info.get("fingerprint") and ds.fingerprint != info["fingerprint"]:
        raise InputError(
            f"data {source!r} is not the data this run was distilled from (fingerprint differs)"
        )
    return ds


def support_arrays(run: rundir.Run) -> tuple[np.ndarray, np.ndarray]:
    """The training set evaluation uses: distilled images (+ flips if the run used them)."""
    res = resolve(run.config, tuple(run.images_model.shape[1:]), run.num_classes)
    x, y = run.images_model, run.labels
    if res.use_flip:
        x = np.concatenate([x, x[:, :, ::-1, :]])
        y = np.concatenate([y, y])
    return x, y


def default_eval_steps(run: rundir.Run) -> int:
    """The protocol's U from the distilled image count before the flipped copies are added,
    as the authors' eval.py (1000 for a 10-image set even when flips double it to 20)."""
    from rcig_release.train import default_steps

    return default_steps(len(run.images_model))


def _check_side(image_shape: tuple[int, ...], arch: str, depth: int | None) -> None:
    """The images against the network before anything is built (exit 2 naming the minimum)."""
    from rcig_release.config import check_image_side, depth_for_size

    d = depth if depth is not None else depth_for_size(max(image_shape[0], image_shape[1]))
    check_image_side(image_shape, arch, d, "RUN/distilled.npz")


def evaluate_run(
    run_dir: Any,
    cfg: EvalConfig,
    *,
    data: str | None = None,
    write: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Trains ``cfg.models`` networks side by side and writes ``RUN/eval.json``; ``progress``:
    called as ``progress(steps_done, steps, mean_loss)`` while they train.

    ``eval.json`` holds the latest result; every result is also appended to ``RUN/evals.jsonl``,
    so evaluating again (another width, architecture or seed) loses no earlier figure.
    """
    from rcig_release.train import evaluate_arrays

    run = rundir.load_run(run_dir)
    _check_side(run.images.shape[1:], cfg.arch, run.config.depth)  # before data and networks
    ds = load_run_data(run, data)
    x_test = run.preprocessor.transform(ds.x_test).astype(np.float32)
    x_s, y_s = support_arrays(run)
    width = cfg.width or run.config.width
    n_steps = cfg.steps if cfg.steps is not None else default_eval_steps(run)
    result = evaluate_arrays(
        x_s,
        y_s,
        x_test,
        ds.y_test,
        arch=cfg.arch,
        num_classes=run.num_classes,
        n_models=cfg.models,
        seed=cfg.seed,
        steps=n_steps,
        lr=cfg.lr,
        warmup=cfg.warmup,
        batch=cfg.batch,
        augment=cfg.augment,
        width=width,
        depth=run.config.depth,
        progress=None if progress is None else (lambda done, loss: progress(done, n_steps, loss)),
    )
    result = {
        **result,
        "config": dataclasses.asdict(cfg) | {"width": width},
        "n_test": int(len(ds.y_test)),
        "n_support": int(len(x_s)),
    }
    if write:
        latest, history = run.path / rundir.EVAL_JSON, run.path / rundir.EVAL_HISTORY
        if latest.is_file() and not history.is_file():  # written before the history existed
            rundir.append_jsonl(history, json.loads(latest.read_text(encoding="utf-8")))
        rundir.append_jsonl(history, result)
        rundir.write_json(latest, result)
    return result
