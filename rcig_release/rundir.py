"""The run directory: the contract between distill and evaluate/audit/release (docs/design.md).

Every file is written atomically (temporary name, then ``os.replace``). Nothing here stores
private training images: ``distilled.npz`` holds the distilled set; ``run.json`` holds the data
source's name and a fingerprint, never data.
"""

from __future__ import annotations

import dataclasses
import io
import json
import platform
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release import __version__, checkpoint
from rcig_release.config import DistillConfig
from rcig_release.errors import InputError
from rcig_release.npzfile import NpzUnreadable, read_npz

DISTILLED = "distilled.npz"
RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
PREVIEW = "preview.png"
CHECKPOINTS = "checkpoints"
EVAL_JSON = "eval.json"  # the latest evaluation
EVAL_HISTORY = (
    "evals.jsonl"  # every evaluation, one line each, so a new one loses no earlier result
)


@dataclasses.dataclass(frozen=True)
class Run:
    path: Path
    config: DistillConfig
    run_json: dict
    images: np.ndarray  # [N,H,W,C] pixel space [0,1]
    images_model: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    init_indices: np.ndarray
    preprocessor: Any  # rcig_release.data.Preprocessor
    log_temp: float

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def prepare_out(out: Path, *, resume: bool, force: bool) -> None:
    """Refuses to touch a non-empty ``out`` unless resuming; ``--force`` moves it aside (never
    deletes it) to ``<out>.bak<k>``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if resume:
        if not checkpoint.exists(out / CHECKPOINTS):
            raise InputError(f"--resume: no checkpoint in {out / CHECKPOINTS}")
        return
    if non_empty:
        if not force:
            raise InputError(
                f"--out {out} exists and is not empty; use --resume to continue it "
                "or --force to start over (the old directory is kept as a backup)"
            )
        k = 1
        while out.with_name(f"{out.name}.bak{k}").exists():
            k += 1
        out.rename(out.with_name(f"{out.name}.bak{k}"))
    out.mkdir(parents=True, exist_ok=True)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds may hit allow_pickle
    return buf.getvalue()


def distilled_arrays(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Iterable[str],
    images_model: np.ndarray,
    log_temp: float,
    init_indices: np.ndarray,
    prep_arrays: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The arrays of ``distilled.npz`` (``release --replay`` rebuilds them the same way)."""
    return {
        "images": np.clip(images, 0.0, 1.0).astype(np.float32),
        "labels": labels.astype(np.float32),
        "classes": np.asarray(list(classes), dtype=str),
        "images_model": images_model.astype(np.float32),
        "log_temp": np.asarray(log_temp, np.float32),
        "init_indices": init_indices.astype(np.int64),
        **prep_arrays,
    }


def write_distilled(out: Path, **parts: Any) -> None:
    """Writes ``distilled.npz`` from the keyword arguments of ``distilled_arrays``."""
    checkpoint.atomic_write_bytes(out / DISTILLED, _npz_bytes(distilled_arrays(**parts)))


write_json = checkpoint.write_json  # atomic, sorted keys, NaN/inf as null


def environment() -> dict[str, Any]:
    import flax
    import jax
    import optax

    dev = jax.devices()
    return {
        "versions": {
            "rcig_release": __version__,
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": {"platform": dev[0].platform, "kind": dev[0].device_kind, "count": len(dev)},
    }


class MetricsLog:
    """``metrics.jsonl``, one object per logged step. On resume, lines after the checkpoint's
    step are dropped so the file ends as an uninterrupted run's would."""

    def __init__(self, path: Path, *, keep_up_to: int | None = None):
        self.path = path
        if keep_up_to is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():
            kept = [
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= keep_up_to
            ]
            checkpoint.atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        append_jsonl(self.path, metrics)


def append_jsonl(path: Path, obj: Any) -> None:
    """Appends one JSON line (a new file is started; nothing earlier in it is rewritten)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(checkpoint.json_text(obj, indent=None) + "\n")


def checkpoint_step(out: Path) -> int | None:
    meta = out / CHECKPOINTS / checkpoint.META
    if not meta.is_file():
        return None
    return int(json.loads(meta.read_text(encoding="utf-8"))["step"])


def write_preview(path: Path, images: np.ndarray, classes: list[str], ipc: int) -> None:
    """The distilled images, one row per class (at most 10 columns shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = len(classes)
    cols = min(ipc, 10)
    fig, axes = plt.subplots(c, cols, figsize=(cols * 0.9 + 0.8, c * 0.9), squeeze=False)
    for i in range(c):
        for j in range(cols):
            ax = axes[i, j]
            img = images[i * ipc + j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                # a class name is text, never matplotlib mathtext (an unbalanced "$..$" crashes)
                ax.set_ylabel(
                    classes[i].replace("$", r"\$"), rotation=0, ha="right", va="center", fontsize=8
                )
    fig.tight_layout(pad=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    checkpoint.atomic_write_bytes(path, buf.getvalue())


def load_run(path: str | Path) -> Run:
    """Reads a run directory; InputError naming the file if anything is missing or corrupt."""
    from rcig_release.data import Preprocessor

    p = Path(path)
    if not p.is_dir():
        raise InputError(f"run directory not found: {p}")
    for name in (DISTILLED, RUN_JSON):
        if not (p / name).is_file():
            raise InputError(f"{p / name} is missing (is {p} a finished distillation run?)")
    from rcig_release.safeio import loads_json, read_file

    run_json = loads_json(read_file(p / RUN_JSON, str(p / RUN_JSON)), str(p / RUN_JSON))
    try:
        cfg = DistillConfig(**run_json["config"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{p / RUN_JSON} is unreadable: {type(e).__name__}") from None
    try:
        arrays = read_npz(p / DISTILLED, str(p / DISTILLED))  # headers checked against the cap
    except NpzUnreadable:
        raise InputError(f"{p / DISTILLED} is unreadable: not a plain-array .npz") from None
    try:
        prep = Preprocessor.from_arrays(arrays)
        return Run(
            path=p,
            config=cfg,
            run_json=run_json,
            images=arrays["images"],
            images_model=arrays["images_model"],
            labels=arrays["labels"],
            classes=tuple(str(c) for c in arrays["classes"]),
            init_indices=arrays["init_indices"],
            preprocessor=prep,
            log_temp=float(arrays["log_temp"]),
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{p / DISTILLED} is unreadable: {type(e).__name__}") from None
