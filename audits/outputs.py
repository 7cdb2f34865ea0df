"""Writing the audit's files atomically: JSON, score arrays, the log-log ROC, score histograms,
and (only on request, outside the run directory) the private gallery."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rcig_release.checkpoint import atomic_write_bytes, write_json  # noqa: F401  (re-exported)
from rcig_release.errors import InputError


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds may hit allow_pickle
    atomic_write_bytes(path, buf.getvalue())


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int) -> tuple[Any, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.reshape(-1)[n:]:
        ax.set_visible(False)
    return fig, axes.reshape(-1)


STYLES = {"release": "-", "naive": "--", "full_data": ":"}


def plot_roc(
    path: Path, scores: Mapping[str, Mapping[str, np.ndarray]], member: np.ndarray
) -> None:
    """Log-log ROC, one panel per attack; ``scores[pipeline][attack]``, pipelines drawn as
    release (solid), naive release (dashed), full-data model (dotted)."""
    from sklearn.metrics import roc_curve

    attacks = list(scores["release"])
    fig, axes = _grid(len(attacks))
    floor = 1.0 / max(2, int((~member).sum()))
    for ax, name in zip(axes, attacks, strict=False):  # the grid may have spare panels
        for pipe, by_attack in scores.items():
            if name not in by_attack:
                continue
            fpr, tpr, _ = roc_curve(member, by_attack[name])
            ax.plot(
                np.maximum(fpr, floor / 2),
                np.maximum(tpr, floor / 2),
                STYLES.get(pipe, "-"),
                label=pipe,
            )
        ax.plot([floor / 2, 1], [floor / 2, 1], color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor / 2, 1)
        ax.set_ylim(floor / 2, 1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("FPR", fontsize=8)
        ax.set_ylabel("TPR", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))


def plot_histograms(path: Path, scores: Mapping[str, np.ndarray], member: np.ndarray) -> None:
    fig, axes = _grid(len(scores))
    for ax, (name, s) in zip(axes, scores.items(), strict=False):  # the grid may have spare panels
        s = np.asarray(s, dtype=np.float64)
        s = np.clip(s, *np.percentile(s[np.isfinite(s)], [0.5, 99.5]))
        bins = np.histogram_bin_edges(s, bins=30)
        ax.hist(s[member], bins=bins, alpha=0.6, label="members")
        ax.hist(s[~member], bins=bins, alpha=0.6, label="non-members")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))


def check_gallery(gallery: Path, run_dir: Path) -> Path:
    """The resolved gallery path; InputError if inside the run directory or not empty."""
    g, r = Path(gallery).expanduser().resolve(), Path(run_dir).resolve()
    if g == r or r in g.parents:
        raise InputError("--private-gallery must be outside the run directory")
    if g.exists() and (not g.is_dir() or any(g.iterdir())):
        raise InputError(f"--private-gallery {gallery} exists and is not empty")
    return g


def write_private_gallery(
    gallery: Path,
    run_dir: Path,
    released: np.ndarray,
    x_train: np.ndarray,
    per_image: Mapping[str, Any],
    top: int = 16,
) -> int:
    """The ``top`` released images closest to a private training record, each beside that record.
    Refuses a directory inside the run directory or one that already has files."""
    g = check_gallery(gallery, run_dir)
    from PIL import Image

    d = np.asarray(per_image["nearest_train_l2"])
    idx = np.asarray(per_image["nearest_train_index"])
    order = np.argsort(d)[:top]
    g.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=g.parent, prefix=".gallery."))
    try:
        for rank, i in enumerate(order):
            pair = np.concatenate([released[i], x_train[idx[i]]], axis=1)
            arr = (np.clip(pair, 0, 1) * 255).round().astype(np.uint8)
            img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            img.resize((img.width * 4, img.height * 4), Image.Resampling.NEAREST).save(
                tmp / f"{rank:03d}_released{i}_train{idx[i]}.png"
            )
        if g.exists():
            g.rmdir()
        os.replace(tmp, g)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(order)
