"""The init set a release claims, checked against the one its recorded configuration draws.

The memorisation check's init test needs to know which training record each released image
started from. Those indices are written by ``distill`` into ``RUN/distilled.npz``
(``init_indices``) and ``run.json`` (``init.indices``); a custodian could blank or edit them. At
release they are recomputed: ``distill.initial_set`` is deterministic in the run's
``DistillConfig`` (its ``seed``, ``ipc`` and ``init`` mode) and the private labels, so the recorded
indices must equal what it returns (real init: the drawn records; noise or other modes: -1).
Any difference, or a real-init run whose indices are -1, is an ``InputError`` (exit 2) naming
the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rcig_release.errors import InputError


def run_config(run_json: Mapping) -> Any:
    """The run's ``DistillConfig`` from run.json ``config`` (InputError when it is not one)."""
    from rcig_release.config import DistillConfig  # lazy: config pulls no JAX, but keep it light

    cfg = run_json.get("config")
    if not isinstance(cfg, Mapping):
        raise InputError("run.json: config missing; cannot recompute the init set")
    try:
        return DistillConfig(**cfg)
    except TypeError as e:
        raise InputError(f"run.json: config is not a distillation config ({e})") from None


def recompute_init_indices(
    run_json: Mapping, x_train: np.ndarray, y_train: np.ndarray, num_classes: int
) -> np.ndarray:
    """The init indices ``distill`` drew for this run (``distill.initial_set``)."""
    from rcig_release.distill import initial_set  # lazy: imports JAX

    cfg = run_config(run_json)
    for key in ("seed", "ipc"):
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"run.json: config.{key} must be an integer")
    if not isinstance(cfg.init, str):
        raise InputError("run.json: config.init must be a string")
    y = np.asarray(y_train, np.int64)
    counts = np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes)
    if cfg.ipc < 1 or (counts < cfg.ipc).any():
        raise InputError(
            f"run.json: config.ipc = {cfg.ipc} does not fit the private data's classes"
        )
    try:
        _, _, idx = initial_set(
            cfg, np.broadcast_to(x_train[:1], (len(y), *x_train.shape[1:])), y, num_classes
        )
    except ValueError as e:
        raise InputError(f"run.json: config does not reproduce an init set ({e})") from None
    return np.asarray(idx, np.int64)


def verified_init_indices(
    run_json: Mapping,
    recorded: np.ndarray | None,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    num_classes: int,
    n_images: int,
) -> np.ndarray:
    """``recorded`` (RUN/distilled.npz ``init_indices``, already checked against run.json
    ``init.indices``) when it equals the recomputed init set; else an InputError naming the field."""
    if y_train is None:
        raise InputError("the run's data has no training labels: the init set cannot be checked")
    cfg = run_config(run_json)
    expected = recompute_init_indices(run_json, x_train, y_train, num_classes)
    if len(expected) != n_images:
        raise InputError(
            f"run.json: config (ipc {cfg.ipc} x {num_classes} classes) gives {len(expected)} init "
            f"images, RUN/distilled.npz has {n_images} images"
        )
    got = np.full(n_images, -1, np.int64) if recorded is None else np.asarray(recorded, np.int64)
    init = run_json.get("init")
    mode = init.get("mode") if isinstance(init, Mapping) else None
    if mode is not None and mode != cfg.init:
        raise InputError(
            f"run.json: init.mode is {mode!r} but config.init is {cfg.init!r}: not the run's record"
        )
    if cfg.init == "real" and (got < 0).any():
        raise InputError(
            "RUN/distilled.npz: init_indices hold -1 for a real-init run (config.init = 'real'): "
            "the init records were removed"
        )
    if got.shape != expected.shape or not np.array_equal(got, expected):
        k = int(np.flatnonzero(got != expected)[0]) if got.shape == expected.shape else 0
        raise InputError(
            "RUN/distilled.npz: init_indices (and run.json init.indices) differ from the init set "
            f"that run.json config (init {cfg.init!r}, seed {cfg.seed}, ipc {cfg.ipc}) draws from "
            f"the private data (first difference at image {k})"
        )
    return got
