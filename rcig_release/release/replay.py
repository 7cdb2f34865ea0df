"""``release --replay``: are the bytes about to be released the ones the recorded pipeline produces?

The audit certifies a pipeline (run.json's configuration, run on the private data); the release
publishes ``RUN/distilled.npz``. The audit records the sha256 of both files, so an edit after the
audit is refused (``inputs.load_release_inputs``), but that does not show that the npz came out of
that pipeline in the first place. ``--replay`` does (docs/release.md, "Binding the bytes to the
pipeline"):

- **Replay** (a run without DP, and a DP run of 0 steps, which touches no private randomness):
  reload the private data (fingerprint-checked), run ``distill`` again with run.json's
  configuration and seed, rebuild ``distilled.npz``'s arrays exactly as the pipeline writes them
  (``rundir.distilled_arrays``), and require every array to be bit-identical: same names, dtypes,
  shapes and bytes. XLA's floating point is reproducible on one JAX version and device kind, not
  across them, and hundreds of outer steps of a bilevel optimisation amplify any difference, so
  no tolerance would separate such a difference from an edit: replay on another JAX version or
  device kind than run.json records is refused (exit 2) with what differs; run it where the run
  was made.
- **Checkpoint chain** (a DP run of at least one step): its noise is secret and never recorded, so
  it cannot be re-run. The run's last checkpoint must pass ``checkpoint.verify_chain`` (the state
  file has the sha256 its meta records; the meta's chain of earlier states ends with it), be at
  run.json's step count with run.json's configuration, and its EMA images and labels, mapped to
  pixels with the fixed DP preprocessing, must be ``distilled.npz``'s arrays bit for bit (a DP
  feature-means run, ``--dp-mechanism features``: its images after the last step, with the fixed
  labels one-hot − 1/C and temperature 1 that run never changes). This
  binds the released bytes to the state the run's distillation saved last; it cannot show that
  the state came from the mechanism (a custodian who forges a consistent state file is not
  caught: only the secret noise could show that, and it is not kept).

Every mismatch is an ``InputError`` (exit 2) naming the array or the check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release.errors import InputError

REPLAY = "replay"
CHAIN = "checkpoint-chain"


@dataclasses.dataclass(frozen=True)
class BindingResult:
    method: str  # REPLAY or CHAIN
    compared: tuple[str, ...]  # the arrays of RUN/distilled.npz found identical
    jax: str | None = None  # where a replay ran
    device: str | None = None

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "compared": list(self.compared),
            "identical": True,
            "jax": self.jax,
            "device": self.device,
        }


def method_for(run_json: Mapping) -> str:
    """The check ``--replay`` runs on this run: the chain for a DP run with steps or one that
    starts from its own release (``--init dp-mean``: the secret noise is in the images from the
    start), else replay."""
    cfg = run_json.get("config") if isinstance(run_json.get("config"), Mapping) else {}
    steps = cfg.get("steps") if isinstance(cfg, Mapping) else None
    from_release = isinstance(cfg, Mapping) and cfg.get("init") == "dp-mean"
    return CHAIN if run_json.get("dp") is not None and (steps != 0 or from_release) else REPLAY


def _config(run_json: Mapping) -> Any:
    from rcig_release.config import DistillConfig

    try:
        return DistillConfig(**run_json["config"])
    except (KeyError, TypeError):
        raise InputError(
            "--replay: run.json's config is not a distillation configuration"
        ) from None


def compare(have: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], how: str) -> None:
    """Every array of ``want`` in ``have`` with the same dtype, shape and bytes, and no other."""
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    if extra or missing:
        raise InputError(
            f"--replay: RUN/distilled.npz holds other arrays than {how} produces "
            f"({'extra ' + ', '.join(extra) if extra else ''}"
            f"{'; ' if extra and missing else ''}{'missing ' + ', '.join(missing) if missing else ''})"
        )
    for name in sorted(want):
        a, b = np.asarray(have[name]), np.asarray(want[name])
        if a.dtype != b.dtype or a.shape != b.shape:
            raise InputError(
                f"--replay: RUN/distilled.npz {name} is {a.dtype} {a.shape}, {how} gives "
                f"{b.dtype} {b.shape}"
            )
        if a.tobytes() != b.tobytes():
            diff = ""
            if a.dtype.kind == "f":
                diff = f", max |difference| {float(np.max(np.abs(a.astype(np.float64) - b))):.3g}"
            raise InputError(
                f"--replay: RUN/distilled.npz {name} is not what {how} produces{diff}: "
                "the released bytes did not come from the audited pipeline"
            )


def _environment_matches(run_json: Mapping) -> tuple[str, str]:
    import jax

    versions = run_json.get("versions") if isinstance(run_json.get("versions"), Mapping) else {}
    device = run_json.get("device") if isinstance(run_json.get("device"), Mapping) else {}
    d = jax.devices()[0]
    here = f"JAX {jax.__version__} on {d.platform} ({d.device_kind})"
    there = (
        f"JAX {versions.get('jax') if versions else None} on "
        f"{device.get('platform') if device else None} "
        f"({device.get('kind') if device else None})"
    )
    if (
        versions.get("jax") != jax.__version__  # type: ignore[union-attr]
        or device.get("platform") != d.platform  # type: ignore[union-attr]
        or device.get("kind") != d.device_kind  # type: ignore[union-attr]
    ):
        raise InputError(
            f"--replay: the run was made with {there}, this is {here}; a replay is only "
            "bit-identical on the same JAX version and device kind (docs/release.md, 'Binding "
            "the bytes to the pipeline'): run release --replay there"
        )
    return str(jax.__version__), str(d.device_kind)


def _dataset(run_json: Mapping, data: str | None, loader: Any) -> Any:
    info = run_json.get("data") if isinstance(run_json.get("data"), Mapping) else None
    if not isinstance(info, Mapping) or not isinstance(info.get("fingerprint"), str):
        raise InputError("run.json: data.fingerprint missing; --replay cannot check the data")
    source = data if data is not None else info.get("source")
    if not isinstance(source, str) or not source:
        raise InputError("run.json: data.source missing; pass --data")
    seed = info.get("split_seed")
    seed = 0 if seed is None else seed
    if loader is None:
        from rcig_release.data import load_dataset

        ds = load_dataset(source, seed=int(seed))
    else:
        ds = loader(source, int(seed))
    if getattr(ds, "fingerprint", None) != info["fingerprint"]:
        raise InputError(
            "the private data's fingerprint differs from run.json's: not the data this run was "
            "distilled from"
        )
    return ds


def replay(
    run_json: Mapping,
    arrays: Mapping[str, np.ndarray],
    *,
    data: str | None = None,
    loader: Any = None,
) -> BindingResult:
    """Re-runs the distillation run.json records and compares it with ``arrays`` (RUN/distilled.npz)."""
    from rcig_release import rundir
    from rcig_release.config import resolve
    from rcig_release.data import preprocessor_for
    from rcig_release.distill import distill

    jax_version, device = _environment_matches(run_json)
    cfg = _config(run_json)
    ds = _dataset(run_json, data, loader)
    res = resolve(cfg, ds.image_shape, ds.num_classes)
    prep = preprocessor_for(ds.x_train, cfg, zca=res.zca)
    x_model = prep.transform(ds.x_train).astype(np.float32)
    result = distill(cfg, x_model, ds.y_train, ds.num_classes)
    want = rundir.distilled_arrays(
        images=np.clip(prep.inverse(result.images_model), 0.0, 1.0),
        labels=result.labels,
        classes=ds.classes,
        images_model=result.images_model,
        log_temp=result.log_temp,
        init_indices=result.init_indices,
        prep_arrays=prep.to_arrays(),
    )
    compare(arrays, want, "a replay of run.json's configuration, seed and data")
    return BindingResult(REPLAY, tuple(sorted(want)), jax_version, device)


def check_chain(
    run_dir: Path, run_json: Mapping, arrays: Mapping[str, np.ndarray]
) -> BindingResult:
    """A DP run: the last checkpoint's chain, and its EMA state mapped to pixels, against ``arrays``."""
    from flax import serialization

    from rcig_release import checkpoint, rundir
    from rcig_release.data.preprocess import fixed_preprocessor

    cfg = _config(run_json)
    meta, data = checkpoint.verify_chain(Path(run_dir) / rundir.CHECKPOINTS)
    if meta.get("config") != run_json.get("config"):
        raise InputError(
            "--replay: the run's last checkpoint was made with another configuration than run.json's"
        )
    if meta.get("step") != cfg.steps:
        raise InputError(
            f"--replay: the run's last checkpoint is at step {meta.get('step')}, run.json's "
            f"configuration runs {cfg.steps} steps"
        )
    classes = arrays.get("classes")
    try:
        state = serialization.msgpack_restore(data)
        step = int(np.asarray(state["step"]))
        if cfg.dp_mechanism == "features":  # rcig/dpdistill.py: the images after the last step
            images_model = np.asarray(state["x"], np.float32)
            labels = _fixed_labels(0 if classes is None else len(classes), cfg.ipc)
            log_temp = 0.0  # DistillResult of a features run: labels and temperature fixed
        else:
            ema = state["psi_ema"]
            images_model = np.asarray(ema["x"], np.float32)
            labels = np.asarray(ema["y"], np.float32)
            log_temp = float(np.asarray(ema["log_temp"]))
    except (KeyError, TypeError, ValueError):
        raise InputError(
            "--replay: the run's last checkpoint state is not a distillation state"
        ) from None
    if step != cfg.steps:
        raise InputError(f"--replay: the checkpoint's state is at step {step}, not {cfg.steps}")
    if images_model.ndim != 4:
        raise InputError("--replay: the checkpoint's EMA images are not [N,H,W,C]")
    prep = fixed_preprocessor(images_model.shape[-1])
    want = rundir.distilled_arrays(
        images=np.clip(prep.inverse(images_model), 0.0, 1.0),
        labels=labels,
        classes=[] if classes is None else [str(c) for c in np.asarray(classes)],
        images_model=images_model,
        log_temp=log_temp,
        init_indices=np.full(len(images_model), -1, np.int64),  # DP: no record starts an image
        prep_arrays=prep.to_arrays(),
    )
    compare(arrays, want, "the run's last checkpoint (mapped to pixels)")
    return BindingResult(CHAIN, tuple(sorted(want)))


def _fixed_labels(num_classes: int, ipc: int) -> np.ndarray:
    """The labels of a DP-feature-means run: one-hot − 1/C class by class, never optimised
    (``distill.initial_set``)."""
    eye = np.eye(num_classes, dtype=np.float32) - 1.0 / max(num_classes, 1)
    return eye[np.repeat(np.arange(num_classes), ipc)]


def check(
    run_dir: Path,
    run_json: Mapping,
    arrays: Mapping[str, np.ndarray],
    *,
    data: str | None = None,
    loader: Any = None,
) -> BindingResult:
    """``release --replay``: the checkpoint chain for a DP run with steps, a replay otherwise."""
    if method_for(run_json) == CHAIN:
        return check_chain(run_dir, run_json, arrays)
    return replay(run_json, arrays, data=data, loader=loader)
